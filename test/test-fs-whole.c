/* uvp_fs_read_file and uvp_fs_write_file (whole files through several
 * libuv requests each) against real files, and two hundred requests of
 * every kind at once. */
#include <sys/mman.h>

#include "fs-helpers.h"

/* ---- read_file, write_file ----------------------------------------------- */

static void test_read_file(void **state) {
  fixture_t *f = *state;
  enum { SIZE = 100007 }; /* not a multiple of any buffer size */
  char *data = malloc(SIZE);
  assert_non_null(data);
  fill_pattern(data, SIZE, 2);
  put("big", data, SIZE);
  put("empty", "", 0);
  int fds = count_fds();

  uvp_promise_t *p;
  int rc = uvp_fs_read_file(f->ctx, at("big"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_int_equal(b->len, SIZE);
  assert_memory_equal(b->base, data, SIZE);
  assert_int_equal(b->base[b->len], '\0');
  uvp_promise_release(p);

  rc = uvp_fs_read_file(f->ctx, at("big"), SIZE, &p); /* exactly the max */
  b = value_of(f, rc, p);
  assert_int_equal(b->len, SIZE);
  assert_memory_equal(b->base, data, SIZE);
  uvp_promise_release(p);
  expect(f, uvp_fs_read_file(f->ctx, at("big"), SIZE - 1, &p), &p, UV_EFBIG);

  rc = uvp_fs_read_file(f->ctx, at("empty"), 0, &p);
  b = value_of(f, rc, p);
  assert_int_equal(b->len, 0);
  assert_int_equal(b->base[0], '\0');
  uvp_promise_release(p);

  expect(f, uvp_fs_read_file(f->ctx, at("missing"), 0, &p), &p, UV_ENOENT);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_read_file(f->ctx, at("dir"), 0, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_read_file(f->ctx, at("big/x"), 0, &p), &p,
         UV_ENOTDIR_THROUGH_FILE);

  /* procfs reports size 0: the file ends where a read returns 0, and the
   * limit is enforced while reading. */
  size_t vlen;
  char *version = get("/proc/version", &vlen);
  assert_true(vlen > 8);
  rc = uvp_fs_read_file(f->ctx, "/proc/version", 0, &p);
  b = value_of(f, rc, p);
  assert_int_equal(b->len, vlen);
  assert_memory_equal(b->base, version, vlen);
  uvp_promise_release(p);
  free(version);
  expect(f, uvp_fs_read_file(f->ctx, "/proc/version", 8, &p), &p, UV_EFBIG);
  /* The largest limit there is: no file is over it, and one that grows
   * its buffer past the first 4096 bytes (smaps: a kilobyte or so per
   * mapping) reads whole. */
  rc = uvp_fs_read_file(f->ctx, "/proc/self/smaps", SIZE_MAX, &p);
  b = value_of(f, rc, p);
  assert_true(b->len > 4096);
  assert_int_equal(strlen(b->base), b->len);
  uvp_promise_release(p);

  /* Every path above closed what it opened. */
  assert_int_equal(count_fds(), fds);
  free(data);
}

static void test_write_file(void **state) {
  fixture_t *f = *state;
  enum { SIZE = 1 << 20 };
  char *data = malloc(SIZE);
  assert_non_null(data);
  fill_pattern(data, SIZE, 3);
  int fds = count_fds();

  uvp_promise_t *p;
  int rc = uvp_fs_write_file(f->ctx, at("big"), data, SIZE, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), SIZE);
  uvp_promise_release(p);
  struct stat st;
  assert_int_equal(stat(at("big"), &st), 0);
  assert_int_equal(st.st_mode & 07777, MODE_SHOWN(0644)); /* umask 022 */
  size_t len;
  char *disk = get(at("big"), &len);
  assert_int_equal(len, SIZE);
  assert_memory_equal(disk, data, SIZE);
  free(disk);

  /* Truncates what was there. */
  rc = uvp_fs_write_file(f->ctx, at("big"), "short", 5, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 5);
  uvp_promise_release(p);
  disk = get(at("big"), &len);
  assert_int_equal(len, 5);
  assert_memory_equal(disk, "short", 5);
  free(disk);

  rc = uvp_fs_write_file(f->ctx, at("none"), NULL, 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 0);
  uvp_promise_release(p);
  assert_int_equal(stat(at("none"), &st), 0);
  assert_int_equal(st.st_size, 0);

  expect(f, uvp_fs_write_file(f->ctx, at("missing/x"), "a", 1, &p), &p,
         UV_ENOENT);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_write_file(f->ctx, at("dir"), "a", 1, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_write_file(f->ctx, at("big/x"), "a", 1, &p), &p,
         UV_ENOTDIR_THROUGH_FILE);
  assert_int_equal(count_fds(), fds);

  /* Round trip through both wrappers. */
  rc = uvp_fs_write_file(f->ctx, at("again"), data, 4096 + 3, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 4096 + 3);
  uvp_promise_release(p);
  rc = uvp_fs_read_file(f->ctx, at("again"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_int_equal(b->len, 4096 + 3);
  assert_memory_equal(b->base, data, 4096 + 3);
  uvp_promise_release(p);
  free(data);
}

/* A FIFO is read until its writer has gone and written into, as uvp.h
 * says: both wrappers move bytes at the descriptor's position, where
 * pread and pwrite would fail with ESPIPE. */
static void test_fifo(void **state) {
  fixture_t *f = *state;
  SKIP_ON_WINDOWS(NO_FIFOS);
  assert_int_equal(mkfifo(at("fifo"), 0600), 0);
  int fds = count_fds();
  int mine = open(at("fifo"), O_RDWR); /* uvp's open need not wait */
  assert_true(mine >= 0);
  assert_int_equal(write(mine, "through a pipe", 14), 14);
  uvp_promise_t *p;
  assert_int_equal(uvp_fs_read_file(f->ctx, at("fifo"), 0, &p), 0);
  while (count_fds() != fds + 2) { /* uvp's end is open: ours may go */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  assert_int_equal(close(mine), 0);
  const uvp_buf_t *b = value_of(f, 0, p);
  assert_int_equal(b->len, 14);
  assert_string_equal(b->base, "through a pipe");
  uvp_promise_release(p);

  mine = open(at("fifo"), O_RDWR);
  assert_true(mine >= 0);
  int rc = uvp_fs_write_file(f->ctx, at("fifo"), "the other way", 13, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 13);
  uvp_promise_release(p);
  char got[16];
  assert_int_equal(read(mine, got, sizeof(got)), 13);
  assert_memory_equal(got, "the other way", 13);
  assert_int_equal(close(mine), 0);
  assert_int_equal(count_fds(), fds);
}

/* Two hundred requests of every kind at once, all checked. */
static void test_many_requests_at_once(void **state) {
  fixture_t *f = *state;
  enum { N = 50 };
  char rel[32], content[32];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    snprintf(content, sizeof(content), "file number %d", i);
    put(rel, content, strlen(content));
  }
  uvp_promise_t *st[N], *rf[N], *sd[N], *rp[N];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    assert_int_equal(uvp_fs_stat(f->ctx, at(rel), &st[i]), 0);
    assert_int_equal(uvp_fs_read_file(f->ctx, at(rel), 0, &rf[i]), 0);
    assert_int_equal(uvp_fs_scandir(f->ctx, tmp, &sd[i]), 0);
    assert_int_equal(uvp_fs_realpath(f->ctx, at(rel), &rp[i]), 0);
  }
  run_loop(f);
  char want[PATH_MAX];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "f%02d", i);
    snprintf(content, sizeof(content), "file number %d", i);
    const uv_stat_t *s = uvp_promise_value(st[i]);
    assert_non_null(s);
    assert_int_equal(s->st_size, strlen(content));
    const uvp_buf_t *b = uvp_promise_value(rf[i]);
    assert_non_null(b);
    assert_string_equal(b->base, content);
    const uvp_dirents_t *d = uvp_promise_value(sd[i]);
    assert_non_null(d);
    assert_int_equal(d->count, N);
    assert_non_null(realpath(at(rel), want));
    assert_string_equal(uvp_promise_value(rp[i]), want);
    uvp_promise_release(st[i]);
    uvp_promise_release(rf[i]);
    uvp_promise_release(sd[i]);
    uvp_promise_release(rp[i]);
  }
}

/* More than one libuv buffer holds (4 GiB and a byte) goes out in several
 * requests: a rest cut to its low 32 bits would be 0 after the first byte,
 * and the write would never advance.  /dev/null takes every byte without
 * reading it, here from a mapping no page of which is ever touched. */
static void test_write_file_over_4_gib(void **state) {
  fixture_t *f = *state;
#if defined(T_TSAN)
  SKIP_BECAUSE("TSan's write() marks all 4 GiB read: 8 GB of shadow, 20 s");
#endif
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("under valgrind, whose memcheck checks all 4 GiB write() "
                 "is given: 4-7 s");
#if SIZE_MAX <= UINT32_MAX
  (void)f;
  SKIP_BECAUSE("a 32-bit size_t cannot say 4 GiB, nor map it");
#else
  size_t len = ((size_t)1 << 32) + 1;
  void *m = mmap(NULL, len, PROT_READ,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(m != MAP_FAILED);
  uvp_promise_t *p;
  assert_int_equal(uvp_fs_write_file(f->ctx, "/dev/null", m, len, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(UVP_INT(uvp_promise_value(p)), (int64_t)len);
  uvp_promise_release(p);
  assert_int_equal(munmap(m, len), 0);
#endif
}

/* A file of exactly 4 GiB is read by several requests: its first, cut to
 * the low 32 bits of its length, would ask for 0 bytes, and the read of 0
 * would look like end of file (an empty value, not an error).  The file
 * is sparse, bar a mark at each end; reading it fills 4 GiB of memory. */
static void test_read_file_of_4_gib(void **state) {
  fixture_t *f = *state;
#if defined(T_TSAN)
  SKIP_BECAUSE("TSan's read() marks all 4 GiB written: 8 GB of shadow");
#endif
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("under valgrind, whose memcheck marks all 4 GiB read() "
                 "fills");
#if SIZE_MAX <= UINT32_MAX
  (void)f;
  SKIP_BECAUSE("a 32-bit size_t cannot say 4 GiB, nor hold it in memory");
#else
  size_t len = (size_t)1 << 32;
  int fd = open(at("sparse"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, "head", 4, 0), 4);
  assert_int_equal(pwrite(fd, "tail", 4, (off_t)(len - 4)), 4);
  assert_int_equal(close(fd), 0);
  uvp_promise_t *p;
  int rc = uvp_fs_read_file(f->ctx, at("sparse"), 0, &p);
  const uvp_buf_t *b = value_of(f, rc, p);
  assert_true(b->len == len);
  assert_memory_equal(b->base, "head", 4);
  assert_memory_equal(b->base + len / 2, "\0\0\0\0", 4);
  assert_memory_equal(b->base + len - 4, "tail", 4);
  assert_int_equal(b->base[len], '\0');
  uvp_promise_release(p);
  assert_int_equal(unlink(at("sparse")), 0);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FS_TEST(test_read_file),
      FS_TEST(test_write_file),
      FS_TEST(test_fifo),
      FS_TEST(test_many_requests_at_once),
      FS_TEST(test_write_file_over_4_gib),
      FS_TEST(test_read_file_of_4_gib),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

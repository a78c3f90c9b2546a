/* uvp's fs wrappers, one call at a time against real files: open, write,
 * read, fstat, close, stat, lstat, mkdir, rename, rmdir, unlink, scandir
 * and realpath, with typed results checked through plain POSIX calls and
 * the errors each call naturally produces; argument errors. */
#include "fs-helpers.h"

/* ---- open, write, read, fstat, close ------------------------------------- */

static void test_open_write_read_fstat_close(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  int rc =
      uvp_fs_open(f->ctx, at("a.txt"), O_RDWR | O_CREAT | O_EXCL, 0600, &p);
  uv_file fd = (uv_file)UVP_INT(value_of(f, rc, p));
  uvp_promise_release(p);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0); /* a real descriptor of that file */
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_int_equal(st.st_size, 0);

  static const char msg[] = "promises over libuv\n";
  rc = uvp_fs_write(f->ctx, fd, msg, sizeof(msg) - 1, 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), sizeof(msg) - 1);
  uvp_promise_release(p);
  rc = uvp_fs_write(f->ctx, fd, "LIBUV", 5, 14, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 5);
  uvp_promise_release(p);

  rc = uvp_fs_fstat(f->ctx, fd, &p);
  const uv_stat_t *s = value_of(f, rc, p);
  assert_int_equal(s->st_size, sizeof(msg) - 1);
  assert_true(S_ISREG(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0600);
  assert_int_equal(s->st_ino, st.st_ino);
  uvp_promise_release(p);

  char buf[64];
  memset(buf, 0, sizeof(buf));
  rc = uvp_fs_read(f->ctx, fd, buf, sizeof(buf), 0, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), sizeof(msg) - 1);
  uvp_promise_release(p);
  assert_memory_equal(buf, "promises over LIBUV\n", sizeof(msg) - 1);
  rc = uvp_fs_read(f->ctx, fd, buf, sizeof(buf), sizeof(msg) - 1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 0); /* end of file */
  uvp_promise_release(p);
  /* Offset -1 reads at the file position, still 0 after pread/pwrite. */
  memset(buf, 0, sizeof(buf));
  rc = uvp_fs_read(f->ctx, fd, buf, 8, -1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 8);
  uvp_promise_release(p);
  assert_memory_equal(buf, "promises", 8);
  rc = uvp_fs_read(f->ctx, fd, buf, 6, -1, &p);
  assert_int_equal(UVP_INT(value_of(f, rc, p)), 6);
  uvp_promise_release(p);
  assert_memory_equal(buf, " over ", 6);

  rc = uvp_fs_close(f->ctx, fd, &p);
  assert_null(value_of(f, rc, p));
  uvp_promise_release(p);
  errno = 0;
  assert_int_equal(fcntl(fd, F_GETFD), -1);
  assert_int_equal(errno, EBADF);

  size_t len;
  char *disk = get(at("a.txt"), &len);
  assert_int_equal(len, sizeof(msg) - 1);
  assert_memory_equal(disk, "promises over LIBUV\n", len);
  free(disk);
}

static void test_open_read_write_errors(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  put("file", "x", 1);
  assert_int_equal(mkdir(at("dir"), 0755), 0);
  expect(f, uvp_fs_open(f->ctx, at("missing"), O_RDONLY, 0, &p), &p, UV_ENOENT);
  expect(f,
         uvp_fs_open(f->ctx, at("file"), O_RDWR | O_CREAT | O_EXCL, 0644, &p),
         &p, UV_EEXIST);
  expect(f, uvp_fs_open(f->ctx, at("dir"), O_WRONLY, 0, &p), &p, UV_EISDIR);
  expect(f, uvp_fs_open(f->ctx, at("file/x"), O_RDONLY, 0, &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_close(f->ctx, -1, &p), &p, UV_EBADF);

  /* A read on a write-only descriptor and a write on a read-only one. */
  int wfd = open(at("file"), O_WRONLY);
  int rfd = open(at("file"), O_RDONLY);
  assert_true(wfd >= 0 && rfd >= 0);
  char buf[4];
  expect(f, uvp_fs_read(f->ctx, wfd, buf, sizeof(buf), 0, &p), &p, UV_EBADF);
  expect(f, uvp_fs_write(f->ctx, rfd, "y", 1, 0, &p), &p, UV_EBADF);
  expect(f, uvp_fs_fstat(f->ctx, -1, &p), &p, UV_EBADF);
  close(wfd);
  close(rfd);
  /* Nothing was written by the failed calls. */
  size_t len;
  char *disk = get(at("file"), &len);
  assert_int_equal(len, 1);
  assert_int_equal(disk[0], 'x');
  free(disk);
}

/* ---- stat, lstat --------------------------------------------------------- */

static void test_stat_lstat(void **state) {
  fixture_t *f = *state;
  char data[1000];
  fill_pattern(data, sizeof(data), 1);
  put("data", data, sizeof(data));
  assert_int_equal(chmod(at("data"), 0640), 0);
  assert_int_equal(symlink("data", at("link")), 0);
  assert_int_equal(mkdir(at("sub"), 0700), 0);
  struct stat real;
  assert_int_equal(stat(at("data"), &real), 0);

  /* Several at once, one loop run. */
  uvp_promise_t *ps, *pl, *pll, *pd;
  assert_int_equal(uvp_fs_stat(f->ctx, at("data"), &ps), 0);
  assert_int_equal(uvp_fs_stat(f->ctx, at("link"), &pl), 0);
  assert_int_equal(uvp_fs_lstat(f->ctx, at("link"), &pll), 0);
  assert_int_equal(uvp_fs_lstat(f->ctx, at("sub"), &pd), 0);
  run_loop(f);

  const uv_stat_t *s = uvp_promise_value(ps);
  assert_non_null(s);
  assert_int_equal(s->st_size, sizeof(data));
  assert_true(S_ISREG(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0640);
  assert_int_equal(s->st_ino, real.st_ino);
  assert_int_equal(s->st_dev, real.st_dev);
  assert_int_equal(s->st_nlink, 1);
  assert_int_equal(s->st_uid, getuid());
  assert_int_equal(s->st_mtim.tv_sec, real.st_mtime); /* POSIX's name */

  s = uvp_promise_value(pl); /* stat follows the link */
  assert_non_null(s);
  assert_int_equal(s->st_ino, real.st_ino);
  assert_int_equal(s->st_size, sizeof(data));

  s = uvp_promise_value(pll); /* lstat does not */
  assert_non_null(s);
  assert_true(S_ISLNK(s->st_mode));
  assert_int_equal(s->st_size, strlen("data"));
  assert_int_not_equal(s->st_ino, real.st_ino);

  s = uvp_promise_value(pd);
  assert_non_null(s);
  assert_true(S_ISDIR(s->st_mode));
  assert_int_equal(s->st_mode & 07777, 0700);
  uvp_promise_release(ps);
  uvp_promise_release(pl);
  uvp_promise_release(pll);
  uvp_promise_release(pd);

  uvp_promise_t *p;
  expect(f, uvp_fs_stat(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_lstat(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_stat(f->ctx, at("data/x"), &p), &p, UV_ENOTDIR);
  assert_int_equal(symlink("nowhere", at("dangling")), 0);
  expect(f, uvp_fs_stat(f->ctx, at("dangling"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_lstat(f->ctx, at("dangling"), &p), &p, 0);
}

/* ---- mkdir, rename, rmdir, unlink ---------------------------------------- */

static void test_mkdir_rename_rmdir_unlink(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  struct stat st;

  int rc = uvp_fs_mkdir(f->ctx, at("d"), 0750, &p);
  assert_null(value_of(f, rc, p));
  uvp_promise_release(p);
  assert_int_equal(stat(at("d"), &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0750);
  expect(f, uvp_fs_mkdir(f->ctx, at("d"), 0750, &p), &p, UV_EEXIST);
  expect(f, uvp_fs_mkdir(f->ctx, at("nope/d"), 0750, &p), &p, UV_ENOENT);
  put("f", "xyz", 3);
  expect(f, uvp_fs_mkdir(f->ctx, at("f/d"), 0750, &p), &p, UV_ENOTDIR);

  assert_int_equal(stat(at("f"), &st), 0);
  ino_t ino = st.st_ino;
  expect(f, uvp_fs_rename(f->ctx, at("f"), at("d/g"), &p), &p, 0);
  assert_false(exists("f"));
  assert_int_equal(stat(at("d/g"), &st), 0);
  assert_int_equal(st.st_ino, ino); /* moved, not copied */
  size_t len;
  char *disk = get(at("d/g"), &len);
  assert_int_equal(len, 3);
  assert_memory_equal(disk, "xyz", 3);
  free(disk);
  expect(f, uvp_fs_rename(f->ctx, at("f"), at("h"), &p), &p, UV_ENOENT);
  put("h", "h", 1);
  expect(f, uvp_fs_rename(f->ctx, at("h"), at("d"), &p), &p, UV_EISDIR);
  assert_true(exists("h"));

  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, UV_ENOTEMPTY);
  expect(f, uvp_fs_rmdir(f->ctx, at("d/g"), &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_unlink(f->ctx, at("d"), &p), &p, UV_EISDIR);
  assert_true(exists("d/g"));
  expect(f, uvp_fs_unlink(f->ctx, at("d/g"), &p), &p, 0);
  assert_false(exists("d/g"));
  expect(f, uvp_fs_unlink(f->ctx, at("d/g"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, 0);
  assert_false(exists("d"));
  expect(f, uvp_fs_rmdir(f->ctx, at("d"), &p), &p, UV_ENOENT);
}

/* ---- scandir ------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(((const uv_dirent_t *)a)->name, ((const uv_dirent_t *)b)->name);
}

static void test_scandir(void **state) {
  fixture_t *f = *state;
  put("a", "abc", 3);
  put("b", "", 0);
  assert_int_equal(mkdir(at("c"), 0755), 0);
  put("c/inner", "i", 1);
  assert_int_equal(symlink("a", at("d")), 0);
  assert_int_equal(mkfifo(at("e"), 0600), 0);
  assert_int_equal(mkdir(at("empty"), 0755), 0);

  uvp_promise_t *p;
  int rc = uvp_fs_scandir(f->ctx, tmp, &p);
  const uvp_dirents_t *d = value_of(f, rc, p);
  assert_int_equal(d->count, 6); /* no "." or ".." */
  uv_dirent_t sorted[6];
  memcpy(sorted, d->items, sizeof(sorted));
  qsort(sorted, 6, sizeof(sorted[0]), by_name);
  static const char *names[] = {"a", "b", "c", "d", "e", "empty"};
  static const uv_dirent_type_t types[] = {UV_DIRENT_FILE, UV_DIRENT_FILE,
                                           UV_DIRENT_DIR,  UV_DIRENT_LINK,
                                           UV_DIRENT_FIFO, UV_DIRENT_DIR};
  for (int i = 0; i < 6; i++) {
    assert_string_equal(sorted[i].name, names[i]);
    assert_int_equal(sorted[i].type, types[i]);
  }
  uvp_promise_release(p);

  rc = uvp_fs_scandir(f->ctx, at("c"), &p);
  d = value_of(f, rc, p);
  assert_int_equal(d->count, 1);
  assert_string_equal(d->items[0].name, "inner");
  assert_int_equal(d->items[0].type, UV_DIRENT_FILE);
  uvp_promise_release(p);

  rc = uvp_fs_scandir(f->ctx, at("empty"), &p);
  d = value_of(f, rc, p);
  assert_int_equal(d->count, 0);
  uvp_promise_release(p);

  expect(f, uvp_fs_scandir(f->ctx, at("a"), &p), &p, UV_ENOTDIR);
  expect(f, uvp_fs_scandir(f->ctx, at("missing"), &p), &p, UV_ENOENT);
}

/* Enough entries to outgrow the wrapper's first array many times over. */
static void test_scandir_many(void **state) {
  fixture_t *f = *state;
  enum { N = 300 };
  assert_int_equal(mkdir(at("many"), 0755), 0);
  char rel[64];
  for (int i = 0; i < N; i++) {
    snprintf(rel, sizeof(rel), "many/entry-%03d", i);
    put(rel, rel, strlen(rel));
  }
  uvp_promise_t *p;
  int rc = uvp_fs_scandir(f->ctx, at("many"), &p);
  const uvp_dirents_t *d = value_of(f, rc, p);
  assert_int_equal(d->count, N);
  bool seen[N] = {false};
  for (size_t i = 0; i < d->count; i++) {
    int k = -1;
    assert_int_equal(sscanf(d->items[i].name, "entry-%d", &k), 1);
    assert_true(k >= 0 && k < N);
    assert_false(seen[k]);
    seen[k] = true;
    assert_int_equal(d->items[i].type, UV_DIRENT_FILE);
  }
  uvp_promise_release(p);
}

/* ---- realpath ------------------------------------------------------------ */

static void test_realpath(void **state) {
  fixture_t *f = *state;
  assert_int_equal(mkdir(at("x"), 0755), 0);
  assert_int_equal(mkdir(at("x/y"), 0755), 0);
  put("x/y/f", "f", 1);
  assert_int_equal(symlink("x/y", at("ly")), 0);  /* to a directory */
  assert_int_equal(symlink("ly/f", at("lf")), 0); /* through another link */
  assert_int_equal(symlink("l2", at("l1")), 0);
  assert_int_equal(symlink("l1", at("l2")), 0);
  assert_int_equal(symlink("gone", at("dangling")), 0);
  char want[PATH_MAX];
  assert_non_null(realpath(at("x/y/f"), want));
  /* Through no link ("ly" alone could be in the random directory name). */
  size_t n = strlen(want);
  assert_true(n > 6 && strcmp(want + n - 6, "/x/y/f") == 0);

  uvp_promise_t *p;
  int rc = uvp_fs_realpath(f->ctx, at("lf"), &p);
  assert_string_equal(value_of(f, rc, p), want);
  uvp_promise_release(p);
  rc = uvp_fs_realpath(f->ctx, at("x/./y/../y//f"), &p);
  assert_string_equal(value_of(f, rc, p), want);
  uvp_promise_release(p);

  expect(f, uvp_fs_realpath(f->ctx, at("missing"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_realpath(f->ctx, at("dangling"), &p), &p, UV_ENOENT);
  expect(f, uvp_fs_realpath(f->ctx, at("l1"), &p), &p, UV_ELOOP);
  expect(f, uvp_fs_realpath(f->ctx, at("x/y/f/z"), &p), &p, UV_ENOTDIR);
}

/* ---- argument errors ----------------------------------------------------- */

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_fs_stat(NULL, tmp, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_stat(f->ctx, tmp, NULL), UV_EINVAL);
  assert_int_equal(uvp_fs_read_file(f->ctx, NULL, 0, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_write_file(f->ctx, at("x"), NULL, 3, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_write_file(f->ctx, NULL, "x", 1, &p), UV_EINVAL);
  /* A NULL path, refused before libuv sees it. */
  assert_int_equal(uvp_fs_open(f->ctx, NULL, O_RDONLY, 0, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_stat(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_lstat(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_unlink(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_mkdir(f->ctx, NULL, 0755, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_rmdir(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_rename(f->ctx, NULL, at("y"), &p), UV_EINVAL);
  assert_int_equal(uvp_fs_rename(f->ctx, at("x"), NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_scandir(f->ctx, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_realpath(f->ctx, NULL, &p), UV_EINVAL);
  /* A NULL buffer with a length, on a file with bytes to read (a length
   * beyond a libuv buffer: test_length_beyond_a_buffer). */
  char one[1];
  int fd = open(at("x"), O_RDWR | O_CREAT, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "abc", 3), 3);
  assert_int_equal(uvp_fs_read(f->ctx, fd, NULL, 3, 0, &p), UV_EINVAL);
  assert_int_equal(uvp_fs_write(f->ctx, fd, NULL, 3, 0, &p), UV_EINVAL);
  assert_null(p);
  /* Nothing was started; the same calls done right still work. */
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  assert_int_equal(uvp_fs_read(f->ctx, fd, one, 1, 2, &p), 0);
  assert_int_equal(UVP_INT(value_of(f, 0, p)), 1);
  assert_int_equal(one[0], 'c');
  uvp_promise_release(p);
  p = NULL;
  assert_int_equal(close(fd), 0);
  assert_int_equal(unlink(at("x")), 0);
  assert_false(exists("x"));

  /* Only uvp settles a wrapper's promise. */
  assert_int_equal(uvp_fs_stat(f->ctx, tmp, &p), 0);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), UVP_ESETTLED);
  assert_int_equal(uvp_promise_reject(p, UV_EIO, NULL, NULL), UVP_ESETTLED);
  const uv_stat_t *s = value_of(f, 0, p);
  assert_true(S_ISDIR(s->st_mode));
  uvp_promise_release(p);
  p = NULL;

  assert_false(exists("x"));

  /* After uvp_ctx_close: every call refused, nothing started. */
  char buf[4] = "abc";
  uvp_ctx_t *ctx = close_ctx(f);
  int rc[] = {
      uvp_fs_open(ctx, at("x"), O_WRONLY | O_CREAT, 0644, &p),
      uvp_fs_close(ctx, -1, &p),
      uvp_fs_read(ctx, -1, buf, sizeof(buf), 0, &p),
      uvp_fs_write(ctx, -1, buf, sizeof(buf), 0, &p),
      uvp_fs_stat(ctx, tmp, &p),
      uvp_fs_lstat(ctx, tmp, &p),
      uvp_fs_fstat(ctx, -1, &p),
      uvp_fs_unlink(ctx, at("x"), &p),
      uvp_fs_mkdir(ctx, at("x"), 0755, &p),
      uvp_fs_rmdir(ctx, at("x"), &p),
      uvp_fs_rename(ctx, at("x"), at("y"), &p),
      uvp_fs_scandir(ctx, tmp, &p),
      uvp_fs_realpath(ctx, tmp, &p),
      uvp_fs_read_file(ctx, at("x"), 0, &p),
      uvp_fs_write_file(ctx, at("x"), buf, sizeof(buf), &p),
  };
  for (size_t i = 0; i < sizeof(rc) / sizeof(rc[0]); i++)
    if (rc[i] != UVP_ECLOSED)
      fail_msg("call %zu: %s", i, uvp_err_name(rc[i]));
  assert_null(p);
  run_loop(f);
  assert_false(exists("x"));
}

/* A length one libuv buffer cannot hold (it would be cut to its low 32
 * bits: here to 0, a read that reports end of file), on a file with bytes
 * to read: refused, nothing started. */
static void test_length_beyond_a_buffer(void **state) {
  fixture_t *f = *state;
#if SIZE_MAX <= UINT_MAX
  (void)f;
  SKIP_BECAUSE("a 32-bit size_t is never longer than a libuv buffer holds");
#else
  uvp_promise_t *p = NULL;
  char one[1];
  int fd = open(at("x"), O_RDWR | O_CREAT, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "abc", 3), 3);
  assert_int_equal(uvp_fs_read(f->ctx, fd, one, (size_t)UINT_MAX + 1, 0, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_fs_write(f->ctx, fd, one, (size_t)UINT_MAX + 1, 0, &p),
                   UV_EINVAL);
  assert_null(p);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  /* The same calls with a length that fits still work. */
  assert_int_equal(uvp_fs_read(f->ctx, fd, one, 1, 2, &p), 0);
  assert_int_equal(UVP_INT(value_of(f, 0, p)), 1);
  assert_int_equal(one[0], 'c');
  uvp_promise_release(p);
  assert_int_equal(close(fd), 0);
  assert_int_equal(unlink(at("x")), 0);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FS_TEST(test_open_write_read_fstat_close),
      FS_TEST(test_open_read_write_errors),
      FS_TEST(test_stat_lstat),
      FS_TEST(test_mkdir_rename_rmdir_unlink),
      FS_TEST(test_scandir),
      FS_TEST(test_scandir_many),
      FS_TEST(test_realpath),
      FS_TEST(test_bad_input),
      FS_TEST(test_length_beyond_a_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

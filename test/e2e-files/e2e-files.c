/* uvp-files end to end: build a real tree in a mkdtemp directory (nested
 * directories, an empty file, a 1 MiB file, names that test byte-order
 * sorting, symbolic links to a file and to a directory, a FIFO, an
 * unreadable file and an unreadable directory), run the program as a child
 * process and compare every line of its output with what this test
 * computes itself: the CRC with its own bit-by-bit code, cross-checked
 * against the system's cksum(1) when there is one.
 *
 * The unreadable entries are unreadable for real: as root (which bypasses
 * permission bits) the program runs as nobody (uid/gid 65534, no
 * supplementary groups); a test that cannot drop privileges is skipped.
 *
 * Usage (from meson): e2e-files UVP_FILES [VALGRIND] */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../skip.h"

static const char *prog;     /* uvp-files */
static const char *valgrind; /* NULL: not installed */

enum { CHILD_SKIP = 77, EXEC_FAILED = 126 };
/* Why run() skips a run as nobody (CHILD_SKIP). */
#define NOBODY_CANNOT                                                          \
  "no unreadable file here: the child could not become nobody (65534), or "    \
  "a capability overrides the mode bits"

/* ---- the tree and what the output must be ------------------------------- */

typedef struct expect_s {
  char path[PATH_MAX];
  const char *error; /* NULL, or the name uvp-files must print */
  uint32_t crc;
  size_t size;
} expect_t;

typedef struct tree_s {
  char tmp[64]; /* mkdtemp: holds the tree and the program's output */
  char top[96]; /* the directory given to uvp-files */
  expect_t want[64];
  size_t nwant;
  size_t skipped; /* links and special files the program must skip */
} tree_t;

static tree_t tree;

/* POSIX cksum, bit by bit (the program uses a table): CRC-32 with
 * polynomial 0x04C11DB7, MSB first, over the data and then its length in
 * as few bytes as it takes, least significant first; complemented. */
static uint32_t crc_byte(uint32_t crc, unsigned char b) {
  crc ^= (uint32_t)b << 24;
  for (int k = 0; k < 8; k++)
    crc = (crc & 0x80000000u) != 0 ? (crc << 1) ^ 0x04C11DB7u : crc << 1;
  return crc;
}

static uint32_t posix_cksum(const unsigned char *p, size_t n) {
  uint32_t crc = 0;
  for (size_t i = 0; i < n; i++)
    crc = crc_byte(crc, p[i]);
  for (size_t len = n; len != 0; len >>= 8)
    crc = crc_byte(crc, (unsigned char)(len & 0xff));
  return ~crc;
}

static const char *in_top(const char *rel) {
  static char ring[4][PATH_MAX];
  static unsigned next;
  char *s = ring[next++ % 4];
  snprintf(s, PATH_MAX, "%s/%s", tree.top, rel);
  return s;
}

static expect_t *expect_path(const char *rel) {
  assert_true(tree.nwant < sizeof(tree.want) / sizeof(tree.want[0]));
  expect_t *e = &tree.want[tree.nwant++];
  memset(e, 0, sizeof(*e));
  snprintf(e->path, sizeof(e->path), "%s", in_top(rel));
  return e;
}

static void add_file(const char *rel, const void *data, size_t len) {
  int fd = open(in_top(rel), O_WRONLY | O_CREAT | O_EXCL, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
  expect_t *e = expect_path(rel);
  e->crc = posix_cksum(data, len);
  e->size = len;
}

static void add_dir(const char *rel) {
  assert_int_equal(mkdir(in_top(rel), 0755), 0);
}

static void add_skipped_symlink(const char *target, const char *rel) {
  assert_int_equal(symlink(target, in_top(rel)), 0);
  tree.skipped++;
}

/* An xorshift stream: content with no structure a bug could hide in. */
static void fill_random(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (unsigned char)(x >> 24);
  }
}

/* The readable part of the tree. */
static void build_tree(void) {
  memset(&tree, 0, sizeof(tree));
  snprintf(tree.tmp, sizeof(tree.tmp), "/tmp/uvp-e2e-files-XXXXXX");
  assert_non_null(mkdtemp(tree.tmp));
  assert_int_equal(chmod(tree.tmp, 0755), 0); /* nobody must get in */
  snprintf(tree.top, sizeof(tree.top), "%s/top", tree.tmp);
  assert_int_equal(mkdir(tree.top, 0755), 0);

  enum { MIB = 1 << 20 };
  unsigned char *big = malloc(MIB);
  assert_non_null(big);
  fill_random(big, MIB, 1);
  add_file("hello.txt", "hello, world\n", 13);
  add_file("empty", "", 0);
  add_file("name with spaces.txt", "spaces", 6);
  add_dir("nested");
  add_file("nested/big.bin", big, MIB);
  add_dir("nested/deeper");
  add_dir("nested/deeper/deepest");
  add_file("nested/deeper/deepest/small.bin", big + 12345, 4099);
  add_dir("nested/deeper/empty-dir");
  /* Byte order of whole paths: "b-c" < "b/z" < "b0" ('-' < '/' < '0'). */
  add_dir("b");
  add_file("b/z", "z", 1);
  add_file("b-c", "b-c", 3);
  add_file("b0", "b0", 2);
  /* Not followed, not listed. */
  add_skipped_symlink("nested/big.bin", "link-to-file");
  add_skipped_symlink("nested", "link-to-dir");
  add_skipped_symlink("nowhere", "dangling");
  assert_int_equal(mkfifo(in_top("fifo"), 0644), 0); /* reading would hang */
  tree.skipped++;
  free(big);
}

/* What only root could read: a file and a directory (with a file inside
 * that must not appear). */
static void add_unreadable(void) {
  add_file("secret", "top secret", 10);
  assert_int_equal(chmod(in_top("secret"), 0), 0);
  tree.want[tree.nwant - 1].error = "EACCES";
  add_dir("locked");
  add_file("locked/inside", "inside", 6);
  tree.nwant--; /* inside is never seen */
  assert_int_equal(chmod(in_top("locked"), 0), 0);
  expect_path("locked")->error = "EACCES";
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)flag;
  (void)ftw;
  if (S_ISDIR(st->st_mode))
    chmod(path, 0755);
  return remove(path);
}

static int chmod_dirs(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw) {
  (void)ftw;
  if (flag == FTW_D || flag == FTW_DNR || S_ISDIR(st->st_mode))
    chmod(path, 0755);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (tree.tmp[0] != '\0') {
    nftw(tree.tmp, chmod_dirs, 16, FTW_PHYS); /* so the walk can descend */
    assert_int_equal(nftw(tree.tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
  }
  memset(&tree, 0, sizeof(tree));
  return 0;
}

static int by_path(const void *a, const void *b) {
  return strcmp(((const expect_t *)a)->path, ((const expect_t *)b)->path);
}

/* The exact stdout uvp-files must print. */
static char *expected_output(void) {
  qsort(tree.want, tree.nwant, sizeof(expect_t), by_path);
  size_t cap = 1 + tree.nwant * (PATH_MAX + 64), n = 0;
  char *s = malloc(cap);
  assert_non_null(s);
  s[0] = '\0';
  for (size_t i = 0; i < tree.nwant; i++) {
    const expect_t *e = &tree.want[i];
    if (e->error != NULL)
      n +=
          (size_t)snprintf(s + n, cap - n, "ERROR %s  %s\n", e->error, e->path);
    else
      n += (size_t)snprintf(s + n, cap - n, "%u  %s  %zu\n", (unsigned)e->crc,
                            e->path, e->size);
  }
  return s;
}

/* ---- running a program -------------------------------------------------- */

typedef struct result_s {
  int status; /* exit status, or -1 if killed */
  char *out;
  char *err;
} result_t;

static char *slurp_fd(int fd) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
  for (;;) {
    if (n + 1 >= cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    ssize_t r = read(fd, buf + n, cap - n - 1);
    assert_true(r >= 0);
    if (r == 0)
      break;
    n += (size_t)r;
  }
  buf[n] = '\0';
  close(fd);
  return buf;
}

static int scratch_file(const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", tree.tmp, name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  return fd;
}

/* The program as nobody can run it: a copy in the scratch directory.  The
 * build tree may sit where nobody cannot reach (a clone in /root, mode
 * 0700), and the copy leaves the tree under test untouched. */
static const char *prog_for_nobody(void) {
  static char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/uvp-files", tree.tmp);
  int in = open(prog, O_RDONLY);
  assert_true(in >= 0);
  int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
  assert_true(out >= 0);
  char buf[65536];
  ssize_t n;
  while ((n = read(in, buf, sizeof(buf))) > 0)
    assert_int_equal(write(out, buf, (size_t)n), n);
  assert_int_equal(n, 0);
  close(in);
  assert_int_equal(close(out), 0);
  return path;
}

/* Run argv with stdout and stderr captured, as nobody if asked (and if we
 * are root), killed after 60 s.  Returns false if privileges could not be
 * dropped (the caller skips). */
static bool run(result_t *r, bool as_nobody, char *const argv[]) {
  int out = scratch_file("stdout"), err = scratch_file("stderr");
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (as_nobody && geteuid() == 0 &&
        (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
      _exit(CHILD_SKIP);
    if (as_nobody && access(in_top("secret"), R_OK) == 0)
      _exit(CHILD_SKIP); /* a capability still overrides the mode bits */
    dup2(out, 1);
    dup2(err, 2);
    execv(argv[0], argv);
    _exit(EXEC_FAILED);
  }
  int status = 0;
  struct timespec nap = {0, 5 * 1000 * 1000};
  int waited = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (++waited == 60 * 200) {
      kill(pid, SIGKILL);
      assert_int_equal(waitpid(pid, &status, 0), pid);
      break;
    }
    nanosleep(&nap, NULL);
  }
  r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r->out = slurp_fd(out);
  r->err = slurp_fd(err);
  assert_int_not_equal(r->status, EXEC_FAILED);
  if (r->status == -1)
    fail_msg("%s killed (signal %d) or timed out", argv[0],
             WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return r->status != CHILD_SKIP;
}

static void result_free(result_t *r) {
  free(r->out);
  free(r->err);
}

static void assert_output(const result_t *r, const char *want) {
  if (strcmp(r->out, want) != 0) {
    print_error("--- expected\n%s--- got\n%s--- stderr\n%s", want, r->out,
                r->err);
    fail();
  }
}

/* Our CRCs against the system's cksum(1), so that the program and this
 * test cannot share a mistake. */
static void cross_check_with_cksum(void) {
  char *argv[64];
  int argc = 0;
  argv[argc++] = (char *)"/usr/bin/cksum";
  if (access(argv[0], X_OK) != 0) {
    print_message("cksum(1) not installed: CRCs not cross-checked\n");
    return;
  }
  for (size_t i = 0; i < tree.nwant; i++)
    if (tree.want[i].error == NULL)
      argv[argc++] = tree.want[i].path;
  argv[argc] = NULL;
  result_t r;
  assert_true(run(&r, false, argv));
  assert_int_equal(r.status, 0);
  char *line = r.out;
  for (size_t i = 0; i < tree.nwant; i++) {
    if (tree.want[i].error != NULL)
      continue;
    unsigned long crc, size;
    assert_int_equal(sscanf(line, "%lu %lu", &crc, &size), 2);
    assert_int_equal(crc, tree.want[i].crc);
    assert_int_equal(size, tree.want[i].size);
    line = strchr(line, '\n');
    assert_non_null(line);
    line++;
  }
  result_free(&r);
}

/* ---- the tests ---------------------------------------------------------- */

/* Every file read: exit 0, one exact line per file in byte order, links,
 * the FIFO and empty directories absent, the summary on stderr. */
static void test_readable_tree(void **state) {
  (void)state;
  build_tree();
  char *want = expected_output();
  cross_check_with_cksum();

  result_t r;
  char *argv[] = {(char *)prog, tree.top, NULL};
  assert_true(run(&r, false, argv));
  assert_output(&r, want);
  assert_int_equal(r.status, 0);
  size_t bytes = 0;
  for (size_t i = 0; i < tree.nwant; i++)
    bytes += tree.want[i].size;
  char summary[128];
  snprintf(summary, sizeof(summary), "%zu read (%zu bytes), 0 failed, %zu ",
           tree.nwant, bytes, tree.skipped);
  assert_non_null(strstr(r.err, summary));
  result_free(&r);

  /* The order does not depend on the concurrency, nor the paths on a
   * trailing slash. */
  char top_slash[128];
  snprintf(top_slash, sizeof(top_slash), "%s//", tree.top);
  char *one[] = {(char *)prog, (char *)"-j", (char *)"1", top_slash, NULL};
  assert_true(run(&r, false, one));
  assert_output(&r, want);
  assert_int_equal(r.status, 0);
  result_free(&r);
  char *many[] = {(char *)prog, (char *)"-j", (char *)"64", tree.top, NULL};
  assert_true(run(&r, false, many));
  assert_output(&r, want);
  assert_int_equal(r.status, 0);
  result_free(&r);
  free(want);
}

/* An unreadable file and directory: ERROR lines in their place, every other
 * line intact, exit 1. */
static void test_unreadable_entries(void **state) {
  (void)state;
  build_tree();
  add_unreadable();
  char *want = expected_output();

  result_t r;
  char *argv[] = {(char *)prog_for_nobody(), (char *)"-j", (char *)"3",
                  tree.top, NULL};
  if (!run(&r, true, argv)) {
    result_free(&r);
    free(want);
    SKIP_BECAUSE(NOBODY_CANNOT);
  }
  assert_output(&r, want);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.err, ", 2 failed, "));
  result_free(&r);
  free(want);
}

/* The same run under valgrind: no error, no leak, same output. */
static void test_valgrind_clean(void **state) {
  (void)state;
  if (valgrind == NULL)
    SKIP_BECAUSE("no valgrind given: not installed, or a clang or sanitizer "
                 "build (test/e2e-files/meson.build)");
  build_tree();
  add_unreadable();
  char *want = expected_output();
  result_t r;
  char *argv[] = {(char *)valgrind,
                  (char *)"--quiet",
                  (char *)"--error-exitcode=99",
                  (char *)"--leak-check=full",
                  (char *)"--show-leak-kinds=definite,indirect,possible",
                  (char *)"--errors-for-leak-kinds=definite,indirect,possible",
                  (char *)prog_for_nobody(),
                  tree.top,
                  NULL};
  if (!run(&r, true, argv)) {
    result_free(&r);
    free(want);
    SKIP_BECAUSE(NOBODY_CANNOT);
  }
  assert_output(&r, want);
  if (r.status != 1)
    fail_msg("valgrind: exit %d\n%s", r.status, r.err);
  result_free(&r);
  free(want);
}

static void test_missing_or_not_a_directory(void **state) {
  (void)state;
  build_tree();
  result_t r;
  char missing[128], want[256];
  snprintf(missing, sizeof(missing), "%s/missing", tree.top);
  char *argv[] = {(char *)prog, missing, NULL};
  assert_true(run(&r, false, argv));
  snprintf(want, sizeof(want), "ERROR ENOENT  %s\n", missing);
  assert_output(&r, want);
  assert_int_equal(r.status, 1);
  result_free(&r);

  char *file[] = {(char *)prog, (char *)in_top("hello.txt"), NULL};
  assert_true(run(&r, false, file));
  snprintf(want, sizeof(want), "ERROR ENOTDIR  %s\n", in_top("hello.txt"));
  assert_output(&r, want);
  assert_int_equal(r.status, 1);
  result_free(&r);

  /* An empty directory: nothing to report, nothing failed. */
  char *empty[] = {(char *)prog, (char *)in_top("nested/deeper/empty-dir"),
                   NULL};
  assert_true(run(&r, false, empty));
  assert_output(&r, "");
  assert_int_equal(r.status, 0);
  result_free(&r);
}

/* A usage error: exit 2, nothing on stdout, exactly `line` on stderr. */
static void expect_usage_error(char *const argv[], const char *line) {
  result_t r;
  assert_true(run(&r, false, argv));
  assert_int_equal(r.status, 2);
  assert_string_equal(r.out, "");
  assert_string_equal(r.err, line);
  result_free(&r);
}

#define HINT " (uvp-files --help lists the options)\n"

static void test_usage(void **state) {
  (void)state;
  build_tree(); /* for the scratch files */
  char *none[] = {(char *)prog, NULL};
  expect_usage_error(none, "uvp-files: no DIR given" HINT);
  char *two[] = {(char *)prog, tree.top, (char *)"again", NULL};
  expect_usage_error(two,
                     "uvp-files: one DIR only: 'again' is one too many" HINT);
  const char *bad_j = "uvp-files: -j wants a number from 1 to 4096\n";
  char *j0[] = {(char *)prog, (char *)"-j", (char *)"0", tree.top, NULL};
  expect_usage_error(j0, bad_j);
  char *jabc[] = {(char *)prog, (char *)"-j", (char *)"abc", tree.top, NULL};
  expect_usage_error(jabc, bad_j);
  char *jneg[] = {(char *)prog, (char *)"-j", (char *)"-3", tree.top, NULL};
  expect_usage_error(jneg, bad_j);
  char *jmissing[] = {(char *)prog, tree.top, (char *)"-j", NULL};
  expect_usage_error(jmissing, "uvp-files: option '-j' needs an argument" HINT);
  char *x[] = {(char *)prog, (char *)"-x", tree.top, NULL};
  expect_usage_error(x, "uvp-files: unknown option '-x'" HINT);
  char *bogus[] = {(char *)prog, (char *)"--bogus", tree.top, NULL};
  expect_usage_error(bogus, "uvp-files: unknown option '--bogus'" HINT);
  char *help_arg[] = {(char *)prog, (char *)"--help=yes", NULL};
  expect_usage_error(help_arg,
                     "uvp-files: option '--help' takes no argument" HINT);
  /* The usage on stdout, exit 0, however it is asked for. */
  const char *helps[] = {"-h", "--help"};
  for (size_t i = 0; i < 2; i++) {
    char *help[] = {(char *)prog, (char *)helps[i], NULL};
    result_t r;
    assert_true(run(&r, false, help));
    assert_int_equal(r.status, 0);
    assert_int_equal(strncmp(r.out, "usage: uvp-files", 16), 0);
    assert_non_null(strstr(r.out, "--version"));
    assert_string_equal(r.err, "");
    result_free(&r);
  }
  /* "uvp-files X.Y.Z", exit 0. */
  char *version[] = {(char *)prog, (char *)"--version", NULL};
  result_t r;
  assert_true(run(&r, false, version));
  assert_int_equal(r.status, 0);
  unsigned a, b, c;
  int end = 0;
  assert_int_equal(sscanf(r.out, "uvp-files %u.%u.%u\n%n", &a, &b, &c, &end),
                   3);
  assert_int_equal((size_t)end, strlen(r.out));
  assert_string_equal(r.err, "");
  result_free(&r);
}

/* The summary's counts in the singular: one file of one byte, one link. */
static void test_summary_singular(void **state) {
  (void)state;
  build_tree();
  add_dir("single");
  int fd = open(in_top("single/one"), O_WRONLY | O_CREAT | O_EXCL, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "x", 1), 1);
  assert_int_equal(close(fd), 0);
  assert_int_equal(symlink("one", in_top("single/link")), 0);
  char *argv[] = {(char *)prog, (char *)in_top("single"), NULL};
  result_t r;
  assert_true(run(&r, false, argv));
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.err, "uvp-files: 1 read (1 byte), 0 failed, 1 link "
                                "or special file skipped; "));
  result_free(&r);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: e2e-files UVP_FILES [VALGRIND]\n");
    return 2;
  }
  static char prog_buf[PATH_MAX], vg_buf[PATH_MAX];
  if (realpath(argv[1], prog_buf) == NULL)
    return 2;
  prog = prog_buf;
  if (argc > 2 && realpath(argv[2], vg_buf) != NULL)
    valgrind = vg_buf;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_readable_tree, teardown),
      cmocka_unit_test_teardown(test_unreadable_entries, teardown),
      cmocka_unit_test_teardown(test_valgrind_clean, teardown),
      cmocka_unit_test_teardown(test_missing_or_not_a_directory, teardown),
      cmocka_unit_test_teardown(test_usage, teardown),
      cmocka_unit_test_teardown(test_summary_singular, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* UV_EACCES from uvp's fs wrappers, for real: a child process that really
 * lacks the permission (see below) runs every kind of request against a
 * tree with unreadable, unsearchable and read-only parts. */
#include <grp.h>
#include <sys/wait.h>

#include "emulator.h"
#include "fs-helpers.h"

/* ---- UV_EACCES, for real ------------------------------------------------- */

/* Root bypasses permission bits, so the checks run in a child process that
 * drops to nobody (uid/gid 65534, no supplementary groups) with its own loop
 * and context, and reports through its exit status: 0 all passed, k the
 * k-th check failed, 77 the environment cannot produce EACCES (skip).  The
 * child is this program started afresh (fork + exec with --eacces-child
 * DIR) rather than a bare fork: it inherits no loop, pool or test-runner
 * state, and under valgrind its exit status is its own. */
enum { CHILD_SKIP = 77 };

static char self[PATH_MAX]; /* this program, to start it as the child */

typedef struct access_check_s {
  int kind;
  const char *rel;
  int want;
} access_check_t;

enum {
  A_OPEN,
  A_READ_FILE,
  A_WRITE_FILE,
  A_STAT,
  A_SCANDIR,
  A_REALPATH,
  A_MKDIR,
  A_UNLINK,
  A_RENAME,
  A_READLINK,
  A_COPYFILE, /* to rel + ".copy" */
  A_CHMOD,
  A_RMDIR
};

static const access_check_t access_checks[] = {
    {A_OPEN, "secret", UV_EACCES}, /* mode 000 */
    {A_READ_FILE, "secret", UV_EACCES},
    {A_WRITE_FILE, "secret", UV_EACCES},
    {A_STAT, "secret", 0},            /* needs search permission only */
    {A_SCANDIR, "locked", UV_EACCES}, /* directory mode 000 */
    {A_STAT, "locked/inside", UV_EACCES},
    {A_READ_FILE, "locked/inside", UV_EACCES},
    {A_REALPATH, "locked/inside", UV_EACCES},
    {A_MKDIR, "ro/new", UV_EACCES}, /* directory mode 0555 */
    {A_WRITE_FILE, "ro/new", UV_EACCES},
    {A_UNLINK, "ro/keep", UV_EACCES},
    {A_RENAME, "ro/keep", UV_EACCES},
    {A_READLINK, "locked/inside", UV_EACCES},
    {A_COPYFILE, "secret", UV_EACCES},  /* the source unreadable */
    {A_COPYFILE, "ro/keep", UV_EACCES}, /* the copy not creatable */
    {A_CHMOD, "ro/keep", UV_EPERM},     /* not the owner */
    {A_RMDIR, "ro/sub", UV_EACCES},
    {A_READ_FILE, "ro/keep", 0}, /* control: the tree is reachable */
    {A_SCANDIR, "ro", 0},
};

static int start_access_check(uvp_ctx_t *ctx, const access_check_t *c,
                              uvp_promise_t **p) {
  const char *path = at(c->rel);
  switch (c->kind) {
  case A_OPEN:
    return uvp_fs_open(ctx, path, O_RDONLY, 0, p);
  case A_READ_FILE:
    return uvp_fs_read_file(ctx, path, 0, p);
  case A_WRITE_FILE:
    return uvp_fs_write_file(ctx, path, "w", 1, p);
  case A_STAT:
    return uvp_fs_stat(ctx, path, p);
  case A_SCANDIR:
    return uvp_fs_scandir(ctx, path, p);
  case A_REALPATH:
    return uvp_fs_realpath(ctx, path, p);
  case A_MKDIR:
    return uvp_fs_mkdir(ctx, path, 0755, p);
  case A_UNLINK:
    return uvp_fs_unlink(ctx, path, p);
  case A_RENAME:
    return uvp_fs_rename(ctx, path, at("ro/moved"), p);
  case A_READLINK:
    return uvp_fs_readlink(ctx, path, p);
  case A_COPYFILE: {
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s.copy", path);
    return uvp_fs_copyfile(ctx, path, copy, 0, p);
  }
  case A_CHMOD:
    return uvp_fs_chmod(ctx, path, 0777, p);
  default:
    return uvp_fs_rmdir(ctx, path, p);
  }
}

static int access_child(const char *dir) {
  snprintf(tmp, sizeof(tmp), "%s", dir);
  if (geteuid() == 0 &&
      (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
    return CHILD_SKIP; /* e.g. a user namespace without 65534 mapped */
  int fd = open(at("secret"), O_RDONLY);
  if (fd >= 0 || errno != EACCES)
    return CHILD_SKIP; /* a capability still overrides the mode bits */

  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 100;
  uvp_ctx_set_unhandled_cb(ctx, ignore_unhandled, NULL);
  int failed = 0;
  size_t n = sizeof(access_checks) / sizeof(access_checks[0]);
  for (size_t i = 0; i < n && failed == 0; i++) {
    uvp_promise_t *p;
    int rc = start_access_check(ctx, &access_checks[i], &p);
    if (rc != 0) {
      fprintf(stderr, "check %zu: start failed with %s\n", i + 1, name(rc));
      failed = (int)i + 1;
      break;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int got =
        uvp_promise_state(p) == UVP_PENDING ? 1 : uvp_promise_reason(p, NULL);
    if (got != access_checks[i].want) {
      fprintf(stderr, "check %zu (%s): expected %s, ", i + 1,
              access_checks[i].rel, name(access_checks[i].want));
      fprintf(stderr, "got %s\n", name(got));
      failed = (int)i + 1;
    }
    uvp_promise_release(p);
  }
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0 && failed == 0)
    failed = 101;
  return failed;
}

static void test_eacces_for_real(void **state) {
  (void)state;
  assert_int_equal(chmod(tmp, 0755), 0); /* mkdtemp made it 0700 */
  put("secret", "top secret", 10);
  assert_int_equal(chmod(at("secret"), 0), 0);
  assert_int_equal(mkdir(at("locked"), 0755), 0);
  put("locked/inside", "in", 2);
  assert_int_equal(chmod(at("locked"), 0), 0);
  assert_int_equal(mkdir(at("ro"), 0755), 0);
  put("ro/keep", "keep", 4);
  assert_int_equal(mkdir(at("ro/sub"), 0755), 0);
  assert_int_equal(chmod(at("ro"), 0555), 0);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    exec_self((char *const[]){self, "--eacces-child", tmp, NULL});
    _exit(126);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));

  /* Whatever the verdict, nothing changed on disk. */
  assert_true(exists("ro/keep"));
  assert_true(exists("ro/sub"));
  assert_false(exists("ro/new"));
  assert_false(exists("ro/moved"));
  assert_false(exists("secret.copy"));
  assert_false(exists("ro/keep.copy"));
  struct stat st;
  assert_int_equal(stat(at("ro/keep"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644); /* the chmod was refused */
  size_t len;
  char *disk = get(at("secret"), &len); /* root may read it */
  assert_int_equal(len, 10);
  assert_memory_equal(disk, "top secret", 10);
  free(disk);
  /* Let the teardown walk and remove the tree as any user. */
  assert_int_equal(chmod(at("locked"), 0755), 0);
  assert_int_equal(chmod(at("ro"), 0755), 0);

  if (WEXITSTATUS(status) == CHILD_SKIP)
    SKIP_BECAUSE("no EACCES here: the child could not become nobody "
                 "(65534), or a capability overrides the mode bits");
  if (WEXITSTATUS(status) != 0)
    fail_msg("child check %d failed (see stderr)", WEXITSTATUS(status));
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--eacces-child") == 0)
    return access_child(argv[2]);
  if (realpath(argv[0], self) == NULL)
    return 1;
  const struct CMUnitTest tests[] = {
      FS_TEST(test_eacces_for_real),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

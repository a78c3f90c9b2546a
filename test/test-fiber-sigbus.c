/* A fault in a fiber's guard page reported when it arrives as SIGBUS, as
 * macOS sends it for an access to a PROT_NONE page (Linux sends SIGSEGV:
 * test-fiber's overflow tests).  Linux sends SIGBUS for an access to a
 * file mapping past the file's end, so the child maps an empty file over
 * its fiber's guard page and touches it there: the fault arrives as SIGBUS
 * with its address in the guard page, and uvp's handler must name the
 * fiber's spawn site, then hand the signal on (the default action: death
 * by SIGBUS). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "helpers.h"
#include "proc-maps.h"

static struct sigaction startup_bus; /* before cmocka's, in main */
static int spawn_line;
static char file_path[64];

/* The guard page under the running fiber's stack: the first page below
 * this frame that faults (the stack is 16 KiB, its top staggered within
 * a few pages). */
static char *guard_below(void) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  char *p = (char *)((uintptr_t)__builtin_frame_address(0) & ~(page - 1));
  for (int i = 0; i < 16; i++, p -= page)
    if (proc_guarded(p))
      return p;
  return NULL;
}

static uvp_ret_t touch_guard(void *arg) {
  (void)arg;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *guard = guard_below();
  int fd = open(file_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (guard == NULL || fd < 0 ||
      mmap(guard, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
           0) != guard)
    _exit(4);
  *(volatile char *)guard = 1; /* past the empty file's end: SIGBUS */
  return uvp_ret_pass();
}

static void sigbus_child(int fd) {
  struct rlimit no_core = {0, 0};
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *fp;
  (void)setrlimit(RLIMIT_CORE, &no_core); /* an expected death */
  /* Not cmocka's handler: the one the process started with, as a program
   * has it, to which uvp's hands the fault on. */
  (void)sigaction(SIGBUS, &startup_bus, NULL);
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_ctx_set_fiber_stack(ctx, 16 * 1024) != 0)
    _exit(3);
  spawn_line = __LINE__ + 1;
  if (uvp_fiber_spawn(ctx, touch_guard, NULL, NULL, &fp) != 0)
    _exit(3);
  if (write(fd, &spawn_line, sizeof(spawn_line)) != (ssize_t)sizeof(spawn_line))
    _exit(3);
  uv_run(&loop, UV_RUN_DEFAULT);
  _exit(5); /* the fiber came back: no fault */
}

static void test_guard_fault_as_sigbus_reported(void **state) {
  static char err[65536];
  char want[512];
  int fd;
  (void)state;
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("under valgrind, which reports the fault its own way");
  /* qemu-user 7.2 translates the address of a SIGSEGV for the guest, not
   * always a SIGBUS's (BUS_ADRERR): for armhf, a 32-bit guest, it passes
   * the host's si_addr on, and the s390x guest does not get the fault's
   * address either (ppc64el's does).  The handler then cannot see that
   * the fault is in a guard page.  The test runs natively (x86-64, i386). */
  SKIP_UNDER_EMULATOR("the program does not always get a SIGBUS's address "
                      "(armhf, s390x)");
  if (access("/proc/self/maps", R_OK) != 0)
    SKIP_BECAUSE("no /proc/self/maps: the guard page cannot be found");
  char dir[] = "/tmp/uvp-sigbus-XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(file_path, sizeof(file_path), "%s/empty", dir);
  int status = test_in_child(sigbus_child, &fd, err, sizeof(err));
  if (read(fd, &spawn_line, sizeof(spawn_line)) != (ssize_t)sizeof(spawn_line))
    spawn_line = -1;
  close(fd);
  (void)unlink(file_path);
  assert_int_equal(rmdir(dir), 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) >= 3 && WEXITSTATUS(status) <= 5)
    fail_msg("child exited with %d (3: setup, 4: no guard page or mapping, "
             "5: no fault); its stderr:\n%s",
             WEXITSTATUS(status), err);
  snprintf(want, sizeof(want),
           "uvp: the fiber spawned at %s:%d ran off its stack of ", __FILE__,
           spawn_line);
  if (strstr(err, want) == NULL)
    fail_msg("no \"%s\" in the child's stderr (status %#x):\n%s", want,
             (unsigned)status, err);
#if !defined(T_ASAN) && !defined(T_TSAN)
  /* Handed on to the default action (a sanitizer's handler ends the
   * process its own way). */
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS)
    fail_msg("the child did not die of SIGBUS (status %#x); its stderr:\n%s",
             (unsigned)status, err);
#endif
}

int main(void) {
  (void)sigaction(SIGBUS, NULL, &startup_bus);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_guard_fault_as_sigbus_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The fiber switch with aarch64's BTI enforced and PAC in use
 * (-mbranch-protection=standard), run under qemu-user by .ci/aarch64.
 *
 * Freestanding, built without the C library: Debian 12's crt files and
 * libc are not BTI-marked, so a program linked with them runs with BTI
 * off, and one forced on (-z force-bti) dies in their start-up code.  This
 * one is all marked, so qemu maps it with BTI enforced: an indirect branch
 * to anything but a landing pad raises SIGILL, as the control run (any
 * argument) checks; and every C function signs and authenticates its
 * return address.  Checked: values passed both ways, a fiber started
 * through the trampoline (which calls its entry through a register),
 * returns through signed frames on a fiber's stack, fiber to fiber, exits.
 * Prints "ok" and exits 0, or names the failed check and exits 1. */
#include <stddef.h>
#include <stdint.h>

#include "../src/fiber-stack.h"
#include "../src/fiber-switch.h"

#if !defined(__aarch64__) || !defined(__ARM_FEATURE_BTI_DEFAULT) ||            \
    !defined(__ARM_FEATURE_PAC_DEFAULT) || defined(UVP__FIBER_UCONTEXT)
#error "for aarch64 with -mbranch-protection=standard and uvp's own switch"
#endif

static long sys3(long n, long a, long b, long c) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  __asm__ __volatile__("svc 0"
                       : "+r"(x0)
                       : "r"(x8), "r"(x1), "r"(x2)
                       : "memory");
  return x0;
}

static void say(const char *s) {
  size_t n = 0;
  while (s[n] != '\0')
    n++;
  (void)sys3(64 /* write */, 1, (long)s, (long)n);
}

__attribute__((noreturn)) static void leave(int code) {
  for (;;)
    (void)sys3(93 /* exit */, code, 0, 0);
}

/* What fiber-switch.c needs of the C library and of fiber-stack.c. */
void *memcpy(void *to, const void *from, size_t n);
void *memset(void *to, int c, size_t n);
void abort(void);
void *memcpy(void *to, const void *from, size_t n) {
  char *t = to;
  const char *f = from;
  while (n-- > 0)
    *t++ = *f++;
  return to;
}
void *memset(void *to, int c, size_t n) {
  char *t = to;
  while (n-- > 0)
    *t++ = (char)c;
  return to;
}
void abort(void) {
  say("abort\n");
  leave(134);
}
void uvp__stack_overrun(const uvp__stack_t *stack, const void *sp) {
  (void)stack;
  (void)sp;
  abort();
  leave(134);
}

static uvp__fiber_ctx_t main_ctx, fa, fb;
static char stack_a[65536] __attribute__((aligned(16)));
static char stack_b[65536] __attribute__((aligned(16)));
static int failed;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      say("FAIL: " #cond "\n");                                                \
      failed = 1;                                                              \
    }                                                                          \
  } while (0)

/* Frames that each sign their return address, suspended at the bottom. */
__attribute__((noinline)) static uintptr_t deep(uintptr_t n) {
  if (n == 0)
    return (uintptr_t)uvp__fiber_switch(&fa, &main_ctx, (void *)1);
  return deep(n - 1) + 1;
}

static void ping(void *arg, void *msg) {
  uintptr_t n = (uintptr_t)msg;
  (void)arg;
  while (n != 0)
    n = (uintptr_t)uvp__fiber_switch(&fa, &main_ctx, (void *)(n + 1));
  CHECK(deep(10) == 10 + 7);
  uvp__fiber_exit(&fa, &main_ctx, (void *)42);
}

static void to_b(void *arg, void *msg) {
  void *r = uvp__fiber_switch(&fa, &fb, (void *)((uintptr_t)msg * 2));
  (void)arg;
  uvp__fiber_exit(&fa, &main_ctx, (void *)((uintptr_t)r + 1));
}

static void b_entry(void *arg, void *msg) {
  (void)arg;
  uvp__fiber_exit(&fb, &fa, (void *)((uintptr_t)msg + 100));
}

/* No landing pad: BTI stops a branch here through a register. */
void no_pad(void);
__asm__(".text\n.globl no_pad\n.type no_pad,%function\nno_pad:\n  ret\n");
static void (*volatile control)(void) = no_pad;

static int run(long argc) {
  uvp__fiber_thread_init(&main_ctx);
  uvp__fiber_init(&fa, stack_a, sizeof(stack_a), ping, NULL);
  for (uintptr_t i = 1; i < 100000; i++)
    CHECK((uintptr_t)uvp__fiber_switch(&main_ctx, &fa, (void *)i) == i + 1);
  CHECK((uintptr_t)uvp__fiber_switch(&main_ctx, &fa, NULL) == 1);
  CHECK((uintptr_t)uvp__fiber_switch(&main_ctx, &fa, (void *)7) == 42);
  uvp__fiber_destroy(&fa);
  uvp__fiber_init(&fa, stack_a, sizeof(stack_a), to_b, NULL);
  uvp__fiber_init(&fb, stack_b, sizeof(stack_b), b_entry, NULL);
  CHECK((uintptr_t)uvp__fiber_switch(&main_ctx, &fa, (void *)7) == 115);
  uvp__fiber_destroy(&fa);
  uvp__fiber_destroy(&fb);
  if (argc > 1)
    control(); /* the control run: SIGILL here, or BTI is not on */
  say(failed ? "failed\n" : "ok\n");
  return failed;
}

__attribute__((noreturn)) void start_c(long argc);
__attribute__((noreturn)) void start_c(long argc) { leave(run(argc)); }
/* The kernel enters _start with argc at sp. */
__asm__(".text\n.globl _start\n.type _start,%function\n_start:\n"
        "  hint #34\n" /* bti c */
        "  ldr x0, [sp]\n"
        "  bl start_c\n");

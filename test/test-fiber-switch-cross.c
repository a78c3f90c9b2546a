/* The fiber switch of every machine uvp has one for, checked where no
 * libuv or cmocka of that machine is at hand: .ci/fiber-switches builds
 * this program with Debian's cross compilers (static, against their C
 * library only) and runs it under qemu-user, or natively for i386.  The
 * whole suite on those machines is another CI leg's; this one is the
 * switch's, in seconds.
 *
 * Checked: values passed both ways and fiber to fiber; every callee-saved
 * register the machine has clobbered on the fiber while the thread's
 * values stay live across the switch (test-fiber-switch.c's
 * test_callee_saved, and on ppc64 the vector registers and CR fields set
 * around a switch); the rounding direction per context, of a context
 * that keeps its own (uvp__fiber_keep_fp), and where the switch keeps
 * every context's, inherited at init and set before the first switch
 * (uvp__fiber_set_fp_control); a
 * suspended fiber's frames saved, overwritten and restored (the compact
 * mode's copy).  Then the cost of a switch pair, over 10^6 round trips
 * (under qemu a figure of the emulator, not of the machine).  Prints the
 * failed checks and "own: ok" or "ucontext: ok" with that figure; exits 1
 * on a failure. */
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/fiber-stack.h"
#include "../src/fiber-switch.h"

/* fiber-switch.c's one call into fiber-stack.c, never made here (no
 * stack is watched). */
void uvp__stack_overrun(const uvp__stack_t *stack, const void *sp) {
  (void)stack;
  (void)sp;
  abort();
}

static int fails;
#define CHECK(c)                                                               \
  do {                                                                         \
    if (!(c)) {                                                                \
      printf("FAIL %d: %s\n", __LINE__, #c);                                   \
      fails++;                                                                 \
    }                                                                          \
  } while (0)
#define NOINLINE __attribute__((noinline))

static uvp__fiber_ctx_t mainc, a, b;
static char sa[1 << 17] __attribute__((aligned(16))),
    sb[1 << 17] __attribute__((aligned(16)));

static void ping(void *arg, void *msg) {
  uintptr_t n = (uintptr_t)msg;
  (void)arg;
  while (n != 0)
    n = (uintptr_t)uvp__fiber_switch(&a, &mainc, (void *)(n + 1));
  uvp__fiber_exit(&a, &mainc, (void *)42);
}
static void to_b(void *arg, void *msg) {
  (void)arg;
  void *r = uvp__fiber_switch(&a, &b, (void *)((uintptr_t)msg * 2));
  uvp__fiber_exit(&a, &mainc, (void *)((uintptr_t)r + 1));
}
static void b_entry(void *arg, void *msg) {
  (void)arg;
  uvp__fiber_exit(&b, &a, (void *)((uintptr_t)msg + 100));
}

static void regs_entry(void *arg, void *msg) {
  (void)arg;
  while (msg != NULL) {
#if defined(__arm__)
    __asm__ __volatile__(
        "mov r4, #-1\n\tmov r5, #-1\n\tmov r6, #-1\n\tmov r7, #-1\n\t"
        "mov r8, #-1\n\tmov r9, #-1\n\tmov r10, #-1\n\t"
        "vmov.f64 d8, #-2.0\n\tvmov.f64 d9, #-2.0\n\t"
        "vmov.f64 d10, #-2.0\n\tvmov.f64 d11, #-2.0\n\t"
        "vmov.f64 d12, #-2.0\n\tvmov.f64 d13, #-2.0\n\t"
        "vmov.f64 d14, #-2.0\n\tvmov.f64 d15, #-2.0\n\t" ::
            : "r4", "r5", "r6", "r7", "r8", "r9", "r10", "d8", "d9", "d10",
              "d11", "d12", "d13", "d14", "d15");
#elif defined(__powerpc64__)
    __asm__ __volatile__(
        "li 14,-1\n\tli 15,-1\n\tli 16,-1\n\tli 17,-1\n\tli 18,-1\n\tli "
        "19,-1\n\tli 20,-1\n\t"
        "li 21,-1\n\tli 22,-1\n\tli 23,-1\n\tli 24,-1\n\tli 25,-1\n\tli "
        "26,-1\n\tli 27,-1\n\t"
        "li 28,-1\n\tli 29,-1\n\tli 30,-1\n\t"
        "fneg 14,14\n\tfneg 15,15\n\tfneg 16,16\n\tfneg 17,17\n\tfneg "
        "18,18\n\tfneg 19,19\n\t"
        "fneg 20,20\n\tfneg 21,21\n\tfneg 22,22\n\tfneg 23,23\n\tfneg "
        "24,24\n\tfneg 25,25\n\t"
        "fneg 26,26\n\tfneg 27,27\n\tfneg 28,28\n\tfneg 29,29\n\tfneg "
        "30,30\n\tfneg 31,31\n\t"
        "vspltisw 20,-1\n\tvspltisw 21,-1\n\tvspltisw 22,-1\n\tvspltisw "
        "23,-1\n\t"
        "vspltisw 24,-1\n\tvspltisw 25,-1\n\tvspltisw 26,-1\n\tvspltisw "
        "27,-1\n\t"
        "vspltisw 28,-1\n\tvspltisw 29,-1\n\tvspltisw 30,-1\n\tvspltisw "
        "31,-1\n\t"
        "creqv 8,8,8\n\tcreqv 12,12,12\n\tcreqv 16,16,16\n\tcrxor "
        "9,9,9\n\tcrxor 13,13,13\n\tcrxor 17,17,17\n\t" ::
            : "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22",
              "r23", "r24", "r25", "r26", "r27", "r28", "r29", "r30", "fr14",
              "fr15", "fr16", "fr17", "fr18", "fr19", "fr20", "fr21", "fr22",
              "fr23", "fr24", "fr25", "fr26", "fr27", "fr28", "fr29", "fr30",
              "fr31", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27",
              "v28", "v29", "v30", "v31", "cr2", "cr3", "cr4");
#elif defined(__s390x__)
    __asm__ __volatile__(
        "lghi %%r6,-1\n\tlghi %%r7,-1\n\tlghi %%r8,-1\n\tlghi %%r9,-1\n\tlghi "
        "%%r10,-1\n\t"
        "lghi %%r11,-1\n\tlghi %%r13,-1\n\t"
        "lzdr %%f8\n\tlzdr %%f9\n\tlzdr %%f10\n\tlzdr %%f11\n\tlzdr "
        "%%f12\n\tlzdr %%f13\n\tlzdr %%f14\n\tlzdr %%f15\n\t" ::
            : "r6", "r7", "r8", "r9", "r10", "r11", "r13", "f8", "f9", "f10",
              "f11", "f12", "f13", "f14", "f15");
#elif defined(__i386__)
    __asm__ __volatile__(
        "movl $-1, %%ebx\n\tmovl $-1, %%esi\n\tmovl $-1, %%edi\n\t" ::
            : "ebx", "esi", "edi");
#endif
    msg = uvp__fiber_switch(&a, &mainc, msg);
  }
  uvp__fiber_exit(&a, &mainc, NULL);
}

static NOINLINE double live_across(uint64_t seed, int sw) {
  uint64_t a1 = seed * 3, b1 = seed ^ 0x5555, c = seed + 7, d = seed * seed,
           e = seed >> 1, g = ~seed, h = seed * 11, k = seed ^ (seed << 7),
           m = seed + 99, n = seed * 13;
  double x = (double)seed * 0.5, y = (double)seed / 3.0, z = x * y, w = x + y,
         u = x - y, v = z / (w + 1.0), s = w * 1.25, t = u - 4.0;
  if (sw)
    CHECK(uvp__fiber_switch(&mainc, &a, (void *)1) == (void *)1);
  return (double)(a1 + b1 + c + d + e + g + h + k + m + n) + x + y + z + w + u +
         v + s + t + (double)(a1 * b1 ^ c * d ^ e * g ^ h * k ^ m * n);
}

#if defined(__powerpc64__)
/* v20-v31 and cr2-cr4 (callee-saved, and out of the compiler's use here)
 * keep their values across a switch to regs_entry, which clobbers them. */
static NOINLINE int ppc_kept(void) {
  unsigned long ok, cr;
  __asm__ __volatile__(
      "vspltisw 20,5\n\tvspltisw 21,5\n\tvspltisw 22,5\n\tvspltisw 23,5\n\t"
      "vspltisw 24,5\n\tvspltisw 25,5\n\tvspltisw 26,5\n\tvspltisw 27,5\n\t"
      "vspltisw 28,5\n\tvspltisw 29,5\n\tvspltisw 30,5\n\tvspltisw 31,5\n\t"
      "crset 9\n\tcrset 13\n\tcrset 17\n\t"
      "crclr 8\n\tcrclr 12\n\tcrclr 16\n\t" ::
          : "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28",
            "v29", "v30", "v31", "cr2", "cr3", "cr4");
  uvp__fiber_switch(&mainc, &a, (void *)1);
  __asm__ __volatile__("mfcr %1\n\tvspltisw 0,5\n\tli %0,1\n\t"
#define V(n) "vcmpequw. 1," #n ",0\n\tbc 4,24,1f\n\t"
                       V(20) V(21) V(22) V(23) V(24) V(25) V(26) V(27) V(28)
                           V(29) V(30) V(31) "b 2f\n1:\tli %0,0\n2:\n"
                       : "=&r"(ok), "=&r"(cr)::"v0", "v1", "cr6");
  unsigned long want =
      (1ul << (31 - 9)) | (1ul << (31 - 13)) | (1ul << (31 - 17));
  unsigned long bits =
      want | (1ul << (31 - 8)) | (1ul << (31 - 12)) | (1ul << (31 - 16));
#if defined(UVP__FIBER_UCONTEXT)
  /* glibc's swapcontext, under qemu-ppc64le at least, does not keep
   * v20-v31: only the CR fields are checked of the fallback. */
  ok = 1;
#endif
  return ok == 1 && (cr & bits) == want;
}
#endif

static volatile double one = 1.0, three = 3.0;
static NOINLINE double divide(void) { return one / three; }
static int seen[2];
static double third;
static void fp_entry(void *arg, void *msg) {
  (void)arg;
  (void)msg;
  seen[0] = fegetround();
  fesetround(FE_DOWNWARD);
  uvp__fiber_switch(&a, &mainc, NULL);
  seen[1] = fegetround();
  third = divide();
  fesetround(FE_TONEAREST);
  uvp__fiber_exit(&a, &mainc, NULL);
}

/* compact-style copy: locals survive save, clobber, restore */
static NOINLINE void copy_entry(void *arg, void *msg) {
  volatile unsigned char loc[3000];
  volatile unsigned char *self = loc;
  (void)arg;
  (void)msg;
  for (int i = 0; i < 3000; i++)
    loc[i] = (unsigned char)(i * 7);
  uvp__fiber_switch(&a, &mainc, NULL);
  int ok = self == loc;
  for (int i = 0; i < 3000; i++)
    ok &= loc[i] == (unsigned char)(i * 7);
  uvp__fiber_exit(&a, &mainc, (void *)(uintptr_t)(ok ? 77 : 1));
}

int main(void) {
  uvp__fiber_thread_init(&mainc);
  uvp__fiber_init(&a, sa, sizeof sa, ping, NULL);
  for (uintptr_t i = 1; i < 1000; i++)
    CHECK((uintptr_t)uvp__fiber_switch(&mainc, &a, (void *)i) == i + 1);
  CHECK((uintptr_t)uvp__fiber_switch(&mainc, &a, NULL) == 42);
  uvp__fiber_destroy(&a);

  uvp__fiber_init(&a, sa, sizeof sa, to_b, NULL);
  uvp__fiber_init(&b, sb, sizeof sb, b_entry, NULL);
  CHECK((uintptr_t)uvp__fiber_switch(&mainc, &a, (void *)7) == 115);
  uvp__fiber_destroy(&a);
  uvp__fiber_destroy(&b);

  uvp__fiber_init(&a, sa, sizeof sa, regs_entry, NULL);
  for (uint64_t seed = 1; seed < 50; seed++)
    CHECK(live_across(seed, 1) == live_across(seed, 0));
#if defined(__powerpc64__)
  for (int i = 0; i < 3; i++)
    CHECK(ppc_kept());
#endif
  CHECK(uvp__fiber_switch(&mainc, &a, NULL) == NULL);
  uvp__fiber_destroy(&a);

  fesetround(FE_DOWNWARD);
  double down = divide();
  fesetround(FE_UPWARD);
  double up = divide();
  CHECK(up > down);
  uvp__fiber_init(&a, sa, sizeof sa, fp_entry, NULL);
  uvp__fiber_keep_fp(&a);
  uvp__fiber_switch(&mainc, &a, NULL);
  CHECK(seen[0] == FE_UPWARD);
  CHECK(fegetround() == FE_UPWARD);
  CHECK(divide() == up);
  uvp__fiber_switch(&mainc, &a, NULL);
  CHECK(seen[1] == FE_DOWNWARD);
  CHECK(third == down);
  CHECK(fegetround() == FE_UPWARD);
  uvp__fiber_destroy(&a);
#if !defined(UVP__FIBER_SHARED_FP)
  /* set_fp_control: the fiber starts with a mode other than the running one */
  fesetround(FE_TOWARDZERO);
  uint64_t tz = uvp__fiber_fp_control();
  fesetround(FE_UPWARD);
  uvp__fiber_init(&a, sa, sizeof sa, fp_entry, NULL);
  uvp__fiber_set_fp_control(&a, tz);
  uvp__fiber_switch(&mainc, &a, NULL);
  CHECK(seen[0] == FE_TOWARDZERO);
  CHECK(fegetround() == FE_UPWARD);
  uvp__fiber_switch(&mainc, &a, NULL);
  uvp__fiber_destroy(&a);
#endif
  fesetround(FE_TONEAREST);

#if defined(UVP__FIBER_CAN_COPY)
  uvp__fiber_init(&a, sa, sizeof sa, copy_entry, NULL);
  uvp__fiber_switch(&mainc, &a, NULL);
  char *top = (char *)(((uintptr_t)sa + sizeof sa) & ~(uintptr_t)15);
  size_t live = uvp__fiber_live(&a, top);
  CHECK(live >= 3000 && live < 8000);
  void *buf = malloc(live);
  uvp__fiber_save(&a, top, buf);
  memset(top - live, 0xa5, live);
  uvp__fiber_restore(&a, top, buf);
  CHECK((uintptr_t)uvp__fiber_switch(&mainc, &a, NULL) == 77);
  free(buf);
  uvp__fiber_destroy(&a);
  printf("copy: %zu live bytes\n", live);
#endif
  uvp__fiber_init(&a, sa, sizeof sa, ping, NULL);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (uintptr_t i = 1; i < 1000001; i++)
    uvp__fiber_switch(&mainc, &a, (void *)i);
  clock_gettime(CLOCK_MONOTONIC, &t1);
#if defined(UVP__FIBER_UCONTEXT)
  const char *kind = "ucontext";
#else
  const char *kind = "own";
#endif
  printf("%s: %s; %.1f ns per pair\n", kind, fails ? "FAILED" : "ok",
         ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e6);
  return fails != 0;
}

/* Fiber contexts and the switch between them.  Private to src/ (and its
 * tests); see fiber-switch.c for why the switch is our own assembly.
 *
 * A context is an execution state that is not running: the thread's own
 * (uvp__fiber_thread_init) or a fiber's (uvp__fiber_init, on a stack the
 * caller provides, e.g. from fiber-stack.h).  uvp__fiber_switch saves the
 * running state into one context and resumes another; it makes no system
 * call and allocates nothing.  All contexts that switch to one another
 * belong to one thread: a fiber started on a thread must be resumed on it.
 *
 * The tools are told here, so that nothing above has to know: ASan about
 * each switch of stacks, TSan about each fiber (a switch orders the two
 * fibers' accesses, as a handover on one thread does), valgrind about each
 * fiber's stack (else memcheck takes a switch for a huge stack frame).
 * ASan is told whenever its runtime is in the process (fiber-asan.h): in
 * an ASan build of uvp, and in a release uvp linked into a program built
 * with ASan; it learns a fiber's stack from uvp__fiber_watch (a fiber not
 * watched is switched to as a stack of unknown bounds).  TSan only in a
 * TSan build of uvp.  Nothing of a context's layout depends on ASan, so
 * code built with it may share these structures with a uvp built
 * without. */
#ifndef UVP_FIBER_SWITCH_H
#define UVP_FIBER_SWITCH_H

#include <stddef.h>
#include <stdint.h>

#include "fiber-asan.h"

#if defined(__SANITIZE_THREAD__)
#define UVP__FIBER_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(UVP__FIBER_TSAN)
#define UVP__FIBER_TSAN 1
#endif
#endif

/* Our assembly is for ELF x86-64 (LP64, not x32), i386, aarch64, ARM
 * (EABI, ARMv5T and later), s390x and 64-bit PowerPC (ELFv2: ppc64el), with or
 * without -fcf-protection and -mbranch-protection (fiber-jump-*.h say what of
 * them they keep), Mach-O x86-64 and arm64 (macOS: the ELF routines' very
 * instructions, fiber-asm.h) and Windows x86-64 (fiber-jump-win64.h);
 * elsewhere glibc's ucontext stands in, also when forced, so that tests can
 * cover it. */
#if (!defined(__ELF__) && !defined(_WIN64) &&                                  \
     !(defined(__APPLE__) &&                                                   \
       (defined(__x86_64__) || defined(__aarch64__)))) ||                      \
    !((defined(__x86_64__) && !defined(__ILP32__)) || defined(__i386__) ||     \
      defined(__aarch64__) ||                                                  \
      (defined(__arm__) && defined(__ARM_EABI__) && __ARM_ARCH >= 5) ||        \
      defined(__s390x__) ||                                                    \
      (defined(__powerpc64__) && defined(_CALL_ELF) && _CALL_ELF == 2)) ||     \
    defined(UVP__FIBER_FORCE_UCONTEXT)
#define UVP__FIBER_UCONTEXT 1
#if defined(UVP_NO_UCONTEXT) /* meson.build: no swapcontext (musl) */
#error "no fiber switch of uvp's here, and no ucontext to fall back on"
#endif
#include <ucontext.h>
/* Where glibc's ucontext_t keeps the stack pointer is known (fiber-switch.c,
 * saved_sp): the compact mode's copies work with this switch too. */
#if defined(__GLIBC__) &&                                                      \
    (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__) ||       \
     defined(__arm__) || defined(__powerpc64__) || defined(__s390x__) ||       \
     defined(__mips__) || defined(__riscv))
#define UVP__FIBER_UCONTEXT_SP 1
#endif
#endif

/* On x86-64 (SysV: ELF and Mach-O) the switch keeps no floating-point
 * control state: every context on a thread shares the thread's (fibers.h,
 * "Floating-point modes"), and a context asks to keep its own with
 * uvp__fiber_keep_fp.  Elsewhere every context keeps its own, as the ABI
 * makes a callee keep it, and asking changes nothing. */
#if !defined(UVP__FIBER_UCONTEXT) && defined(__x86_64__) && !defined(_WIN64)
#define UVP__FIBER_SHARED_FP 1
#endif

/* A fiber's entry: `arg` as given to uvp__fiber_init, `msg` as passed by
 * the first switch to the fiber.  It must never return: it ends with
 * uvp__fiber_exit, switching away for the last time.  If it returns
 * anyway the process aborts (there is no frame to return to). */
typedef void (*uvp__fiber_entry_t)(void *arg, void *msg);

struct uvp__stack_s;

/* Every field is the layer's own. */
typedef struct uvp__fiber_ctx_s uvp__fiber_ctx_t;
struct uvp__fiber_ctx_s {
  void *sp;                 /* the saved stack pointer while suspended */
  uvp__fiber_entry_t entry; /* NULL: a thread's own context */
  void *arg;
  /* The canary under the fiber's stack (NULL: none, a guard page faults
   * instead), checked with the stack pointer as the fiber switches away
   * (uvp__fiber_watch). */
  const uint64_t *canary;
  struct uvp__stack_s *stack; /* NULL: not watched */
  unsigned valgrind_id;       /* the stack's registration */
  /* Not 0: a switch away from this context takes the slow path (a canary
   * to check, ASan to tell, floating-point modes of its own to keep), so
   * that the common one tests a byte. */
  uint8_t slow;
  uint8_t own_fp; /* uvp__fiber_keep_fp's */
#if defined(UVP__FIBER_UCONTEXT)
  ucontext_t uc;
  void *msg;   /* passed by the switch to this context */
  uint64_t fp; /* uvp__fiber_set_fp_control's, if fp_set */
  int fp_set;
#endif
#if defined(UVP__FIBER_TSAN)
  void *tsan_fiber;
  int tsan_owned; /* created here, destroyed by uvp__fiber_destroy */
#endif
};

/* The calling thread's own execution state, for the fibers to switch back
 * to.  No stack of its own is needed; uvp__fiber_destroy is optional. */
void uvp__fiber_thread_init(uvp__fiber_ctx_t *ctx);

/* A fiber that runs entry(arg, msg) on [stack_base, stack_base + size) at
 * the first uvp__fiber_switch to it.  The top of the stack must be 16-byte
 * aligned and size at least 256 bytes; the stack stays the caller's, in use
 * until uvp__fiber_destroy.  Where the switch keeps floating-point control
 * state per context (not UVP__FIBER_SHARED_FP), the fiber inherits the
 * caller's (rounding mode, exception masks, flush-to-zero), and from then
 * on each context keeps its own across switches, as the ABI makes callees
 * keep it across calls. */
void uvp__fiber_init(uvp__fiber_ctx_t *ctx, void *stack_base, size_t size,
                     uvp__fiber_entry_t entry, void *arg);

/* The fiber runs on `stack` (fiber-stack.h), as given to uvp__fiber_init:
 * if it is guarded by a canary, every uvp__fiber_switch and uvp__fiber_exit
 * away from the fiber first checks the canary and that the stack pointer
 * is inside the stack, and on a mismatch stops the process with
 * uvp__stack_overrun.  A stack with a guard page costs the switch one
 * load and a branch not taken. */
void uvp__fiber_watch(uvp__fiber_ctx_t *ctx, struct uvp__stack_s *stack);

/* Copying a suspended fiber's frames out of its stack and back (the
 * compact mode of fiber.c).  A fiber suspended by uvp__fiber_switch, whose
 * stack's top is `top` (as given to uvp__fiber_init, 16-byte aligned), has
 * live bytes only in [its saved stack pointer, top): uvp__fiber_live says
 * how many; uvp__fiber_save copies them to buf, uvp__fiber_restore puts
 * them back at the same addresses, after which the fiber may be resumed.
 * Pointers into those bytes stay valid only across a save and restore to
 * the same place, so a fiber's frames always go back where they were.
 * buf must hold uvp__fiber_saved_size(live) bytes.  Under ASan (fiber-asan.h)
 * that is a byte more per 8 of frames: save also keeps their shadow (the
 * redzones of the program's frames, whose bytes it copies without ASan
 * checking them), leaving the stack and its shadow as they were, and
 * restore puts both back, so that the frames' redzones hold across the
 * copy and nothing of the stack's last user's shadow stays.  With the
 * ucontext switch the saved stack pointer is read out of the ucontext_t,
 * where the C library's layout is known (UVP__FIBER_UCONTEXT_SP); elsewhere
 * frames cannot be copied: UVP__FIBER_CAN_COPY says whether the build can. */
#if !defined(UVP__FIBER_UCONTEXT) || defined(UVP__FIBER_UCONTEXT_SP)
#define UVP__FIBER_CAN_COPY 1
#endif
size_t uvp__fiber_live(const uvp__fiber_ctx_t *ctx, const char *top);
static inline size_t uvp__fiber_saved_size(size_t live) {
  return uvp__fiber_asan() ? live + live / 8 : live;
}
/* From now on ctx keeps floating-point control modes of its own: as it
 * switches away the thread gets back the modes it had when ctx was last
 * switched to, or when this was called (the shared ones, which every
 * context that does not keep its own runs with), and ctx gets its own back
 * when it is resumed.  A fiber not yet started starts with the modes of
 * whoever first switches to it.  Costs its switches the slow path.  Where
 * the switch keeps every context's modes (not UVP__FIBER_SHARED_FP) it
 * does nothing. */
void uvp__fiber_keep_fp(uvp__fiber_ctx_t *ctx);
#if !defined(UVP__FIBER_SHARED_FP)
/* The floating-point control state of the running context, as
 * uvp__fiber_init gives it to a fiber; and, between uvp__fiber_init and
 * the first switch to a fiber, the one it is to start with instead (a
 * fiber whose context is made later than its spawn). */
uint64_t uvp__fiber_fp_control(void);
void uvp__fiber_set_fp_control(uvp__fiber_ctx_t *ctx, uint64_t fp);
#endif
void uvp__fiber_save(const uvp__fiber_ctx_t *ctx, const char *top, void *buf);
void uvp__fiber_restore(const uvp__fiber_ctx_t *ctx, const char *top,
                        const void *buf);

/* Suspends the running context into `from` and resumes `to`, passing it
 * `msg`: the value its own uvp__fiber_switch returns, or a new fiber's
 * entry's second argument.  Returns when something switches back to
 * `from`, with the msg that switch passed.  `from` must be the running
 * context and `to` a suspended one (or a fiber not yet started). */
void *uvp__fiber_switch(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to,
                        void *msg);

/* The last switch of the running fiber `from`: as uvp__fiber_switch, but
 * `from` is never resumed.  Its stack may be reused once `to` runs; its
 * context is then for uvp__fiber_destroy only. */
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void uvp__fiber_exit(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to, void *msg);

/* Forgets a fiber that has exited or never started (the tools' records of
 * it).  Its stack is the caller's again. */
void uvp__fiber_destroy(uvp__fiber_ctx_t *ctx);

#endif

/* The context switch (see fiber-switch.h).
 *
 * Why our own assembly.  bench/fiber-switch on the 2-core AMD EPYC VM this
 * project is built on (release build, gcc 12; ns per switch pair, i.e.
 * into a fiber and back; median [min-max] of 7 runs of 10^7 round trips,
 * two invocations, when ours still kept the floating-point control):
 *   ours (uvp__fiber_switch)       8.6 [8.5-8.8]    9.0 [8.6-9.9]
 *   Boost.Context's fcontext       8.4 [8.3-8.6]    8.6 [8.3-11.4]
 *   glibc's swapcontext          300.1 [298-308]  315.9 [298-442]
 * fcontext was as fast, but taking it means linking a C++ library's static
 * archive into libuvp and hiding its symbols with -Wl,--exclude-libs, for
 * two routines of twenty instructions that we can also write to fit the C
 * side (a new fiber starts in C with its context in a register, and the
 * tools are told around the switch).  On x86-64 ours now keeps no
 * floating-point control, unless asked, and takes 4.2 ns a pair to
 * fcontext's 10.7 (internals 13.14).  swapcontext makes a rt_sigprocmask
 * system call per switch, which this VM's hypervisor makes expensive.
 * The same held for the other machines (i386, ARM, ppc64el, s390x): each
 * of ours is forty to a hundred instructions, fits the same C side (the
 * saved stack pointer in the context, which the compact mode copies from,
 * a fresh fiber's frame laid out here, the floating-point control compared
 * before it is written), saves what fcontext leaves out (ppc64's v20-v31,
 * which glibc's swapcontext under qemu loses too) and needs no build
 * dependency per architecture; test-fiber-switch-cross.c checks each under
 * qemu (.ci/fiber-switches).
 *
 * What a switch keeps is what the ABI makes a callee keep (each machine's
 * header says how), but on x86-64 the floating-point control:
 *   x86-64 SysV: rbx, rbp, r12-r15; the MXCSR's control bits and the x87
 *                control word (the rounding modes, exception masks, FTZ/DAZ)
 *                only for a context that asks (uvp__fiber_keep_fp), in
 *                switch_slow: reading the MXCSR was half of a switch pair
 *                (docs/internals/fibers-2.md 13.14);
 *   i386 SysV:   ebx, esi, edi, ebp, the x87 control word and (with SSE)
 *                the MXCSR's control bits;
 *   AAPCS64:     x19-x28, x29 (frame), x30 (link), d8-d15 and the FPCR;
 *   AAPCS (ARM): r4-r11, lr, and with VFP d8-d15 and the FPSCR's control;
 *   ppc64 ELFv2: r14-r31, f14-f31, v20-v31, cr2-cr4, r2, the FPSCR's control;
 *   s390x:       r6-r13, f8-f15, the FPC's control.
 * Everything else is caller-saved, and the compiler has already saved what
 * it needs of it around the call to uvp__fiber_jump.  The stack pointer
 * keeps the ABI's alignment at every call, fresh fibers included.
 *
 * Elsewhere (other architectures, or UVP__FIBER_FORCE_UCONTEXT for testing
 * it) the switch is glibc's swapcontext: correct, and slow (see
 * fiber-switch.h). */
#include "fiber-switch.h"
#include "fiber-stack.h"

#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(UVP__FIBER_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define UVP__FIBER_VALGRIND 1
#endif
#endif

#if defined(__GNUC__)
#if defined(_WIN32)
#define HIDDEN /* PE: what is not exported is hidden */
#else
#define HIDDEN __attribute__((visibility("hidden")))
#endif
#define NORETURN __attribute__((noreturn))
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold))
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define HIDDEN
#define NORETURN
#define NOINLINE
#define COLD
#define NO_ASAN
#endif

/* ---- the floating-point control modes ----------------------------------- */

/* The running context's, as one value: on x86 the MXCSR (low half) and the
 * x87 control word (high), on aarch64 the FPCR, on ARM with VFP the FPSCR,
 * on s390x the FPC, on ppc64 the FPSCR, elsewhere the rounding direction
 * alone. */
#if defined(__i386__)
/* 1 if the CPU has SSE (the MXCSR), 0 if not; found at the first ask.
 * UVP__FIBER_NO_SSE: as if not, so that tests can cover it. */
static int has_sse(void) {
#if defined(UVP__FIBER_NO_SSE)
  return 0;
#endif
  static int known; /* 0: not yet; 1: no; 2: yes */
  int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
  if (v == 0) {
    __builtin_cpu_init();
    v = __builtin_cpu_supports("sse") ? 2 : 1;
    __atomic_store_n(&known, v, __ATOMIC_RELAXED);
  }
  return v == 2;
}
#elif defined(__x86_64__)
static inline int has_sse(void) { return 1; }
#endif

#if defined(__x86_64__) || defined(__i386__)
static uint64_t fp_get(void) {
  uint32_t mxcsr = 0;
  uint16_t fcw;
  __asm__ __volatile__("fnstcw %0" : "=m"(fcw));
  if (has_sse())
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
  return mxcsr | (uint64_t)fcw << 32;
}
#if defined(UVP__FIBER_UCONTEXT) || defined(UVP__FIBER_SHARED_FP)
static void fp_put(uint64_t fp) {
  uint32_t mxcsr = (uint32_t)fp;
  uint16_t fcw = (uint16_t)(fp >> 32);
  __asm__ __volatile__("fldcw %0" ::"m"(fcw));
  if (has_sse())
    __asm__ __volatile__("ldmxcsr %0" ::"m"(mxcsr));
}
#endif
#elif defined(__aarch64__)
static uint64_t fp_get(void) {
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  return fpcr;
}
#if defined(UVP__FIBER_UCONTEXT)
static void fp_put(uint64_t fp) {
  __asm__ __volatile__("msr fpcr, %0" ::"r"(fp));
}
#endif
#elif defined(__s390x__)
static uint64_t fp_get(void) {
  uint32_t fpc;
  __asm__ __volatile__("efpc %0" : "=d"(fpc));
  return fpc;
}
#if defined(UVP__FIBER_UCONTEXT)
static void fp_put(uint64_t fp) {
  __asm__ __volatile__("sfpc %0" ::"d"((uint32_t)fp));
}
#endif
#elif defined(__powerpc64__)
static uint64_t fp_get(void) {
  double fpscr;
  uint64_t bits;
  __asm__ __volatile__("mffs %0" : "=f"(fpscr));
  memcpy(&bits, &fpscr, sizeof(bits));
  return bits;
}
#if defined(UVP__FIBER_UCONTEXT)
static void fp_put(uint64_t fp) {
  double fpscr;
  memcpy(&fpscr, &fp, sizeof(fpscr));
  __asm__ __volatile__("mtfsf 0x03, %0" ::"f"(fpscr));
}
#endif
#elif defined(__arm__) && defined(__ARM_FP)
static uint64_t fp_get(void) {
  uint32_t fpscr;
  __asm__ __volatile__("vmrs %0, fpscr" : "=r"(fpscr));
  return fpscr;
}
#if defined(UVP__FIBER_UCONTEXT)
static void fp_put(uint64_t fp) {
  __asm__ __volatile__("vmsr fpscr, %0" ::"r"((uint32_t)fp));
}
#endif
#else
static uint64_t fp_get(void) { return (uint64_t)(unsigned)fegetround(); }
#if defined(UVP__FIBER_UCONTEXT)
static void fp_put(uint64_t fp) { (void)fesetround((int)fp); }
#endif
#endif

#if defined(UVP__FIBER_SHARED_FP)
/* The thread's floating-point control modes while a context that keeps
 * its own runs (uvp__fiber_keep_fp): what the others get back. */
static _Thread_local uint64_t shared_fp;
#endif

/* ---- the machine's part ------------------------------------------------- */

#if !defined(UVP__FIBER_UCONTEXT)

/* Saves the callee-saved state on the running stack, stores the stack
 * pointer in *from_sp, loads to_sp, restores the state found there and
 * returns msg into that context. */
HIDDEN void *uvp__fiber_jump(void **from_sp, void *to_sp, void *msg);
#if defined(__i386__)
/* The same, for a CPU without SSE: no MXCSR (fiber-jump-x86.h). */
HIDDEN void *uvp__fiber_jump_x87(void **from_sp, void *to_sp, void *msg);
#endif
/* Where a new fiber's first jump returns to: it calls the function in the
 * first callee-saved register with the context in the second and the msg
 * as arguments (the frame is built by init_frame). */
HIDDEN void uvp__fiber_trampoline(void);

#if defined(_WIN64)
#include "fiber-jump-win64.h"
#elif defined(__x86_64__) || defined(__i386__)
#include "fiber-asm.h"
#include "fiber-jump-x86.h"
#elif defined(__aarch64__) || defined(__arm__)
#include "fiber-asm.h"
#include "fiber-jump-arm.h"
#elif defined(__s390x__)
#include "fiber-jump-s390x.h"
#elif defined(__powerpc64__)
#include "fiber-jump-ppc64.h"
#endif

#endif /* !UVP__FIBER_UCONTEXT */

/* ---- the tools ---------------------------------------------------------- */

/* ASan (fiber-asan.h), when its runtime is in the process: each switch is
 * announced with the bounds of the stack switched to, and the stack left
 * keeps its fake stack (where the program's frames live with
 * detect_stack_use_after_return) in a local of the switch's own frame on
 * that stack: nothing of it is in the context, whose layout so does not
 * depend on ASan.  A fiber's bounds are its watched stack's.  A thread's own
 * context is only ever switched to from fibers entered from it (a fiber
 * runs no loop): the bounds ASan reports as left when a fiber is entered
 * from a thread's context are the ones to give back when a fiber switches
 * to one. */
#if defined(UVP__FIBER_ASAN_RT)
static _Thread_local const void *asan_thread_bottom;
static _Thread_local size_t asan_thread_size;
static _Thread_local int asan_leaving_thread; /* the switch under way does */

static void asan_leave(const uvp__fiber_ctx_t *from, const uvp__fiber_ctx_t *to,
                       void **from_fake) {
  const void *bottom = NULL;
  size_t size = 0;
  if (to->entry == NULL) {
    bottom = asan_thread_bottom;
    size = asan_thread_size;
  } else if (to->stack != NULL) {
    bottom = to->stack->base;
    size = to->stack->size;
  }
  asan_leaving_thread = from->entry == NULL;
  __sanitizer_start_switch_fiber(from_fake, bottom, size);
}

static void asan_arrive(void *fake) {
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(fake, &bottom, &size);
  if (asan_leaving_thread) {
    asan_thread_bottom = bottom;
    asan_thread_size = size;
  }
}
#endif

/* TSan: just before the jump. */
static inline void tools_leave(uvp__fiber_ctx_t *to) {
#if defined(UVP__FIBER_TSAN)
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#else
  (void)to;
#endif
}

/* ---- contexts ----------------------------------------------------------- */

#if defined(UVP__FIBER_UCONTEXT)
/* makecontext passes only ints: the fiber being started is found here. */
static _Thread_local uvp__fiber_ctx_t *booting;

static inline void *jump(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to,
                         void *msg) {
  to->msg = msg;
  booting = to;
  (void)swapcontext(&from->uc, &to->uc);
  return from->msg;
}
#else
static inline void *jump(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to,
                         void *msg) {
#if defined(__i386__)
  if (!has_sse())
    return uvp__fiber_jump_x87(&from->sp, to->sp, msg);
  return uvp__fiber_jump(&from->sp, to->sp, msg);
#else
  return uvp__fiber_jump(&from->sp, to->sp, msg);
#endif
}
#endif

/* The entry never returns (it ends in uvp__fiber_exit), so the call is
 * the last thing here, which an optimizing build makes a tail call: the
 * entry's frame takes this one's place at the top of the fiber's stack,
 * and a compact fiber copies 48 bytes less each time it parks (internals
 * 13.9).  Should the entry return, it returns into the trampoline (or,
 * without the tail call, here and then into it), which traps. */
static void boot(uvp__fiber_ctx_t *ctx, void *msg) {
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    asan_arrive(NULL); /* a fresh fiber: no fake stack yet */
#endif
#if defined(UVP__FIBER_SHARED_FP)
  if (ctx->own_fp)
    shared_fp = fp_get(); /* it starts with them, and gives them back */
#endif
  ctx->entry(ctx->arg, msg);
}

#if defined(UVP__FIBER_UCONTEXT)
NORETURN static void boot_ucontext(void) {
  uvp__fiber_ctx_t *ctx = booting;
  if (ctx->fp_set)
    fp_put(ctx->fp);
  boot(ctx, ctx->msg);
  abort(); /* a return would end the thread (uc_link is NULL) */
}
#endif

static void tools_init(uvp__fiber_ctx_t *ctx) {
#if defined(UVP__FIBER_TSAN)
  ctx->tsan_fiber = __tsan_get_current_fiber();
  ctx->tsan_owned = 0;
#endif
  (void)ctx;
}

void uvp__fiber_thread_init(uvp__fiber_ctx_t *ctx) {
  ctx->sp = NULL;
  ctx->entry = NULL;
  ctx->arg = NULL;
  ctx->canary = NULL;
  ctx->stack = NULL;
  ctx->valgrind_id = 0;
  ctx->slow = (uint8_t)uvp__fiber_asan();
  ctx->own_fp = 0;
  tools_init(ctx);
}

/* Shadow stacks (CET's SHSTK, -fcf-protection=full or =return).  Our
 * switch does not switch them: a fiber's calls would push their return
 * addresses onto the thread's shadow stack, and the first return after a
 * switch would fault.  So this object is not marked as supporting them
 * (meson.build builds it with -fcf-protection=branch where the rest of the
 * library has =full), the linker leaves the mark off the library and off
 * every program that links it, and the C library does not turn them on
 * for such a program.  Where they are on all the same (forced, e.g.
 * GLIBC_TUNABLES=glibc.cpu.x86_shstk=on on Linux 6.6 or later and glibc
 * 2.39 or later), the process stops here, at its first fiber, with a
 * message that says why, not at some later return.  rdssp is a nop
 * (leaving 0) where they are off. */
#if defined(__CET__) && (defined(__x86_64__) || defined(__i386__)) &&          \
    !defined(UVP__FIBER_UCONTEXT)
static void shadow_stack_check(void) {
  uintptr_t ssp = 0;
#if defined(__x86_64__)
  __asm__ __volatile__("rdsspq %0" : "+r"(ssp));
#else
  __asm__ __volatile__("rdsspd %0" : "+r"(ssp));
#endif
  if (__builtin_expect(ssp != 0, 0)) {
    fputs("uvp: fibers cannot run with CET shadow stacks enforced (uvp's "
          "switch does not switch them); run without "
          "glibc.cpu.x86_shstk=on\n",
          stderr);
    abort();
  }
}
#else
static void shadow_stack_check(void) {}
#endif

void uvp__fiber_init(uvp__fiber_ctx_t *ctx, void *stack_base, size_t size,
                     uvp__fiber_entry_t entry, void *arg) {
  uintptr_t top = ((uintptr_t)stack_base + size) & ~(uintptr_t)15;
  shadow_stack_check();
  ctx->entry = entry;
  ctx->arg = arg;
  ctx->canary = NULL;
  ctx->stack = NULL;
  ctx->slow = (uint8_t)uvp__fiber_asan();
  ctx->own_fp = 0;
  tools_init(ctx);
#if defined(UVP__FIBER_TSAN)
  ctx->tsan_fiber = __tsan_create_fiber(0);
  ctx->tsan_owned = 1;
#endif
#if defined(UVP__FIBER_VALGRIND)
  ctx->valgrind_id = VALGRIND_STACK_REGISTER(stack_base, (char *)top);
#else
  ctx->valgrind_id = 0;
#endif
#if defined(UVP__FIBER_UCONTEXT)
  ctx->sp = NULL;
  ctx->fp_set = 0;
  (void)getcontext(&ctx->uc);
  ctx->uc.uc_stack.ss_sp = stack_base;
  ctx->uc.uc_stack.ss_size = top - (uintptr_t)stack_base;
  ctx->uc.uc_link = NULL;
  makecontext(&ctx->uc, boot_ucontext, 0);
#else
  {
    uintptr_t *frame = (uintptr_t *)top - FRAME_WORDS;
#if defined(UVP__FIBER_VALGRIND)
    /* A stack used before (a compact fiber's, see fiber.c): addressable. */
    (void)VALGRIND_MAKE_MEM_UNDEFINED(frame, FRAME_WORDS * sizeof(*frame));
#endif
    init_frame(ctx, frame, boot);
#if defined(_WIN64)
    /* The TIB's StackLimit and DeallocationStack (fiber-jump-win64.h): the
     * pool commits the whole stack, its guard page lies below it. */
    frame[10] = frame[11] = (uintptr_t)stack_base;
#endif
    ctx->sp = frame;
  }
#endif
}

void uvp__fiber_watch(uvp__fiber_ctx_t *ctx, uvp__stack_t *stack) {
  ctx->stack = stack;
  ctx->canary = stack->canary;
  if (ctx->canary != NULL)
    ctx->slow = 1;
}

/* A stack without a guard page: its canary intact and the stack pointer
 * above its base, or the process stops here. */
#if defined(__GNUC__)
__attribute__((noinline, cold))
#endif
static void
check_stack(const uvp__fiber_ctx_t *ctx) {
  const char *sp = __builtin_frame_address(0);
  if (!uvp__stack_canary_intact(ctx->canary) || sp < ctx->stack->base)
    uvp__stack_overrun(ctx->stack, sp);
}

/* The switch when `from` needs more than the jump (its slow byte): a
 * canary to check, ASan to tell, its own floating-point modes to keep.
 * What it must have back when it is resumed stays in this frame, on from's
 * stack, while from is suspended: ASan's fake stack and from's own modes.
 * Not cold: gcc 12 then moves the test into uvp__fiber_switch's cold part
 * with check_stack's call, and gives the switch a frame it sets up on
 * every call. */
static NOINLINE NO_ASAN void *switch_slow(uvp__fiber_ctx_t *from,
                                          uvp__fiber_ctx_t *to, void *msg) {
  if (from->canary != NULL)
    check_stack(from);
#if defined(UVP__FIBER_SHARED_FP)
  uint64_t own = 0;
  if (from->own_fp) {
    own = fp_get();
    fp_put(shared_fp);
  }
#endif
#if defined(UVP__FIBER_ASAN_RT)
  void *fake = NULL;
  int asan = uvp__fiber_asan();
  if (asan)
    asan_leave(from, to, &fake);
#endif
  tools_leave(to);
  msg = jump(from, to, msg);
#if defined(UVP__FIBER_ASAN_RT)
  if (asan)
    asan_arrive(fake);
#endif
#if defined(UVP__FIBER_SHARED_FP)
  if (from->own_fp) {
    shared_fp = fp_get(); /* as whoever switched here left them */
    fp_put(own);
  }
#endif
  return msg;
}

void *uvp__fiber_switch(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to,
                        void *msg) {
  if (__builtin_expect(from->slow, 0))
    return switch_slow(from, to, msg);
  tools_leave(to);
  return jump(from, to, msg);
}

void uvp__fiber_exit(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to, void *msg) {
  if (__builtin_expect(from->canary != NULL, 0))
    check_stack(from);
#if defined(UVP__FIBER_SHARED_FP)
  if (from->own_fp)
    fp_put(shared_fp);
#endif
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    asan_leave(from, to, NULL); /* NULL: ASan frees from's fake stack */
#endif
  tools_leave(to);
  (void)jump(from, to, msg);
  abort();
}

void uvp__fiber_keep_fp(uvp__fiber_ctx_t *ctx) {
#if defined(UVP__FIBER_SHARED_FP)
  if (!ctx->own_fp)
    shared_fp = fp_get(); /* the running fiber's, so far the thread's */
  ctx->own_fp = 1;
  ctx->slow = 1;
#else
  (void)ctx;
#endif
}

#if !defined(UVP__FIBER_SHARED_FP)
uint64_t uvp__fiber_fp_control(void) { return fp_get(); }

void uvp__fiber_set_fp_control(uvp__fiber_ctx_t *ctx, uint64_t fp) {
#if defined(UVP__FIBER_UCONTEXT)
  ctx->fp = fp; /* boot_ucontext's */
  ctx->fp_set = 1;
#else
  frame_set_fp(ctx->sp, fp); /* the frame init_frame laid out */
#endif
}
#endif

/* Where a suspended context's frames begin: with the ucontext switch, the
 * stack pointer swapcontext saved (on x86-64 and i386 the caller's, above
 * the return address, which setcontext pushes again as it resumes). */
static char *saved_sp(const uvp__fiber_ctx_t *ctx) {
#if !defined(UVP__FIBER_UCONTEXT)
  return ctx->sp;
#elif !defined(UVP__FIBER_UCONTEXT_SP)
  (void)ctx;
  abort(); /* uvp__fiber_live is for UVP__FIBER_CAN_COPY builds */
#else
  const mcontext_t *m = &ctx->uc.uc_mcontext;
#if defined(__x86_64__)
  return (char *)m->gregs[REG_RSP];
#elif defined(__i386__)
  return (char *)m->gregs[REG_ESP];
#elif defined(__aarch64__)
  return (char *)m->sp;
#elif defined(__arm__)
  return (char *)m->arm_sp;
#elif defined(__powerpc64__)
  return (char *)m->gp_regs[1];
#elif defined(__s390x__)
  return (char *)m->gregs[15];
#elif defined(__mips__)
  return (char *)m->gregs[29];
#else /* riscv */
  return (char *)m->__gregs[2];
#endif
#endif
}

size_t uvp__fiber_live(const uvp__fiber_ctx_t *ctx, const char *top) {
  return (size_t)(top - saved_sp(ctx));
}

/* Under ASan (uvp__fiber_asan): the shadow of the frames, a byte per 8 of
 * them, goes after them in the buffer.  It is read and written here
 * directly (ASan's mapping: shadow = (addr >> scale) + offset), by code
 * that ASan does not instrument, byte by byte in a loop the compiler
 * cannot turn into a call of memcpy (which ASan intercepts, and which
 * would check the shadow's own shadow).  The frames' bytes are copied
 * with memcpy once in bounds: ASan checks what memcpy is given, from uvp's
 * code too, and the redzones of the program's frames are out of bounds. */
#if defined(UVP__FIBER_ASAN_RT) && defined(UVP__FIBER_CAN_COPY)
/* The shadow of [sp, sp + len), or NULL if its granules are not 8 bytes or
 * the runtime does not say (then the frames are copied without it, and
 * left in bounds). */
static unsigned char *asan_shadow(const void *sp) {
  size_t scale, offset;
#if !defined(UVP__FIBER_ASAN)
  if (__asan_get_shadow_mapping == NULL) /* a runtime older than ours */
    return NULL;
#endif
  __asan_get_shadow_mapping(&scale, &offset);
  if (scale != 3)
    return NULL;
  return (unsigned char *)(((uintptr_t)sp >> 3) + offset);
}

static NO_ASAN void asan_copy_shadow(unsigned char *to,
                                     const unsigned char *from, size_t n) {
  for (size_t i = 0; i < n; i++) {
    to[i] = from[i];
    __asm__ __volatile__("" ::: "memory");
  }
}

static COLD NOINLINE void save_asan(const void *sp, size_t len,
                                    unsigned char *buf) {
  unsigned char *shadow = asan_shadow(sp);
  if (shadow != NULL)
    asan_copy_shadow(buf + len, shadow, len / 8);
  __asan_unpoison_memory_region(sp, len);
  memcpy(buf, sp, len);
  if (shadow != NULL)
    asan_copy_shadow(shadow, buf + len, len / 8);
}

static COLD NOINLINE void restore_asan(void *sp, size_t len,
                                       const unsigned char *buf) {
  unsigned char *shadow = asan_shadow(sp);
  __asan_unpoison_memory_region(sp, len);
  memcpy(sp, buf, len);
  if (shadow != NULL)
    asan_copy_shadow(shadow, buf + len, len / 8);
}
#endif

void uvp__fiber_save(const uvp__fiber_ctx_t *ctx, const char *top, void *buf) {
  size_t len = uvp__fiber_live(ctx, top);
#if defined(UVP__FIBER_ASAN_RT) && defined(UVP__FIBER_CAN_COPY)
  if (uvp__fiber_asan()) {
    save_asan(saved_sp(ctx), len, buf);
    return;
  }
#endif
  memcpy(buf, saved_sp(ctx), len);
}

void uvp__fiber_restore(const uvp__fiber_ctx_t *ctx, const char *top,
                        const void *buf) {
  size_t len = uvp__fiber_live(ctx, top);
#if defined(UVP__FIBER_VALGRIND)
  /* Another fiber's frames came and went here since: for memcheck, the
   * part below its stack pointer is no-access until written again.  glibc's
   * setcontext also writes just below the saved stack pointer as it resumes
   * (x86-64 pushes the return address there): 64 bytes more for it. */
#if defined(UVP__FIBER_UCONTEXT)
  (void)VALGRIND_MAKE_MEM_UNDEFINED(saved_sp(ctx) - 64, len + 64);
#else
  (void)VALGRIND_MAKE_MEM_UNDEFINED(saved_sp(ctx), len);
#endif
#endif
#if defined(UVP__FIBER_ASAN_RT) && defined(UVP__FIBER_CAN_COPY)
  if (uvp__fiber_asan()) {
    restore_asan(saved_sp(ctx), len, buf);
    return;
  }
#endif
  memcpy(saved_sp(ctx), buf, len);
}

void uvp__fiber_destroy(uvp__fiber_ctx_t *ctx) {
#if defined(UVP__FIBER_TSAN)
  if (ctx->tsan_owned)
    __tsan_destroy_fiber(ctx->tsan_fiber);
  ctx->tsan_owned = 0;
#endif
#if defined(UVP__FIBER_VALGRIND)
  if (ctx->entry != NULL)
    VALGRIND_STACK_DEREGISTER(ctx->valgrind_id);
#endif
  ctx->entry = NULL;
}

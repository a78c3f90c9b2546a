/* The context switch (see fiber-switch.h).
 *
 * Why our own assembly.  bench/fiber-switch on the 2-core AMD EPYC VM this
 * project is built on (release build, gcc 12; ns per switch pair, i.e.
 * into a fiber and back; median [min-max] of 7 runs of 10^7 round trips,
 * two invocations):
 *   ours (uvp__fiber_switch)       8.6 [8.5-8.8]    9.0 [8.6-9.9]
 *   Boost.Context's fcontext       8.4 [8.3-8.6]    8.6 [8.3-11.4]
 *   glibc's swapcontext          300.1 [298-308]  315.9 [298-442]
 * fcontext is as fast, but taking it means linking a C++ library's static
 * archive into libuvp and hiding its symbols with -Wl,--exclude-libs, for
 * two routines of twenty instructions that we can also write to fit the C
 * side (a new fiber starts in C with its context in a register, and the
 * tools are told around the switch).  swapcontext makes a rt_sigprocmask
 * system call per switch, which this VM's hypervisor makes expensive.
 *
 * What a switch keeps is what the ABI makes a callee keep:
 *   x86-64 SysV: rbx, rbp, r12-r15, the MXCSR's control bits and the x87
 *                control word (the rounding modes, exception masks, FTZ/DAZ);
 *   AAPCS64:     x19-x28, x29 (frame), x30 (link), d8-d15 and the FPCR.
 * Everything else is caller-saved, and the compiler has already saved what
 * it needs of it around the call to uvp__fiber_jump.  The stack pointer
 * stays 16-byte aligned at every call, fresh fibers included.
 *
 * Elsewhere (other architectures, -fcf-protection builds, or
 * UVP__FIBER_FORCE_UCONTEXT for testing it) the switch is glibc's
 * swapcontext: correct, and slow (see fiber-switch.h). */
#include "fiber-switch.h"
#include "fiber-stack.h"

#include <stdint.h>
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

/* ---- the machine's part ------------------------------------------------- */

#if !defined(UVP__FIBER_UCONTEXT)

/* Saves the callee-saved state on the running stack, stores the stack
 * pointer in *from_sp, loads to_sp, restores the state found there and
 * returns msg into that context. */
HIDDEN void *uvp__fiber_jump(void **from_sp, void *to_sp, void *msg);
/* Where a new fiber's first jump returns to: it calls the function in the
 * first callee-saved register with the context in the second and the msg
 * as arguments (the frame is built by init_frame). */
HIDDEN void uvp__fiber_trampoline(void);

#if defined(_WIN64)
#include "fiber-jump-win64.h"
#elif defined(__x86_64__)
/* The saved state, from the saved stack pointer up: MXCSR (4 bytes) and
 * x87 control word (2, then 2 of padding), r12, r13, r14, r15, rbx, rbp,
 * then the return address the call pushed.  The two control registers are
 * loaded only when the resumed context's differ from the running one's
 * (in practice never): ldmxcsr and fldcw stall the pipeline, and skipping
 * them took 2.2 ns (7 %) off an await in bench/fiber-pingpong.  Entry: rsp = 8
 * mod 16, so the saved rsp, 56 bytes below, is 16-aligned.  The return is a jmp
 * through a register, as Boost.Context's: a ret would be predicted from the
 * return stack, which holds the caller on the old stack, and mispredicted on
 * every switch (23 ns a pair against 9 on this VM's EPYC). */
__asm__(".pushsection .text\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,@function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  .cfi_startproc\n"
        "  leaq -0x38(%rsp), %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 0x4(%rsp)\n"
        "  movq %r12, 0x08(%rsp)\n"
        "  movq %r13, 0x10(%rsp)\n"
        "  movq %r14, 0x18(%rsp)\n"
        "  movq %r15, 0x20(%rsp)\n"
        "  movq %rbx, 0x28(%rsp)\n"
        "  movq %rbp, 0x30(%rsp)\n"
        "  movl (%rsp), %r9d\n"
        "  movzwl 0x4(%rsp), %r10d\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  movq 0x38(%rsp), %r8\n"
        "  cmpl (%rsp), %r9d\n"
        "  jne 2f\n"
        "1:\n"
        "  cmpw 0x4(%rsp), %r10w\n"
        "  jne 4f\n"
        "3:\n"
        "  movq 0x08(%rsp), %r12\n"
        "  movq 0x10(%rsp), %r13\n"
        "  movq 0x18(%rsp), %r14\n"
        "  movq 0x20(%rsp), %r15\n"
        "  movq 0x28(%rsp), %rbx\n"
        "  movq 0x30(%rsp), %rbp\n"
        "  leaq 0x40(%rsp), %rsp\n"
        "  movq %rdx, %rax\n"
        "  jmp *%r8\n"
        "2:\n"
        "  ldmxcsr (%rsp)\n"
        "  jmp 1b\n"
        "4:\n"
        "  fldcw 0x4(%rsp)\n"
        "  jmp 3b\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,@function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  .cfi_startproc\n"
        /* The bottom frame of the fiber: unwinders and debuggers stop here. */
        "  .cfi_undefined rip\n"
        "  movq %r12, %rdi\n"
        "  movq %rax, %rsi\n"
        "  callq *%rbx\n"
        "  ud2\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        ".popsection\n");

enum { FRAME_WORDS = 10 }; /* 7 saved, the return address, 2 of padding */

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  uint32_t mxcsr;
  uint16_t fcw;
  __asm__ __volatile__("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fcw));
  frame[0] = mxcsr | (uintptr_t)fcw << 32;
  frame[1] = (uintptr_t)ctx;          /* r12 */
  frame[2] = frame[3] = frame[4] = 0; /* r13, r14, r15 */
  frame[5] = (uintptr_t)boot;         /* rbx */
  frame[6] = 0;                       /* rbp: the end of the frame chain */
  frame[7] = (uintptr_t)uvp__fiber_trampoline;
  /* The trampoline starts with rsp at frame + 8, 16-aligned for its call. */
  frame[8] = frame[9] = 0;
}

#elif defined(__aarch64__)
/* The saved state, from the saved stack pointer up: x19-x28, x29, x30,
 * d8-d15, the FPCR, padding: 176 bytes, so sp stays 16-aligned.  Writing
 * the FPCR can be slow, and it rarely differs: only written if it does.
 * The return is a ret, unlike x86-64's jmp: with BTI enforced, a br may
 * only land on a landing pad, and a return address is none. */
__asm__(".pushsection .text\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,%function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  .cfi_startproc\n"
        "  sub sp, sp, #176\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mrs x9, fpcr\n"
        "  str x9, [sp, #160]\n"
        "  mov x10, sp\n"
        "  str x10, [x0]\n"
        "  mov sp, x1\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  ldr x10, [sp, #160]\n"
        "  cmp x9, x10\n"
        "  b.eq 1f\n"
        "  msr fpcr, x10\n"
        "1:\n"
        "  add sp, sp, #176\n"
        "  mov x0, x2\n"
        "  ret\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,%function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined x30\n"
        "  mov x1, x0\n"
        "  mov x0, x20\n"
        "  blr x19\n"
        "  brk #0\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        ".popsection\n");

enum { FRAME_WORDS = 24 }; /* 22 saved, 2 of room for the trampoline */

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  uint64_t fpcr;
  int i;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  for (i = 0; i < FRAME_WORDS; i++)
    frame[i] = 0; /* x21-x28, x29 (the end of the frame chain), d8-d15 */
  frame[0] = (uintptr_t)boot;                   /* x19 */
  frame[1] = (uintptr_t)ctx;                    /* x20 */
  frame[11] = (uintptr_t)uvp__fiber_trampoline; /* x30 */
  frame[20] = fpcr;
}
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
  return uvp__fiber_jump(&from->sp, to->sp, msg);
}
#endif

NORETURN static void boot(uvp__fiber_ctx_t *ctx, void *msg) {
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    asan_arrive(NULL); /* a fresh fiber: no fake stack yet */
#endif
  ctx->entry(ctx->arg, msg);
  abort();
}

#if defined(UVP__FIBER_UCONTEXT)
static void boot_ucontext(void) {
  uvp__fiber_ctx_t *ctx = booting;
  boot(ctx, ctx->msg);
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
  tools_init(ctx);
}

void uvp__fiber_init(uvp__fiber_ctx_t *ctx, void *stack_base, size_t size,
                     uvp__fiber_entry_t entry, void *arg) {
  uintptr_t top = ((uintptr_t)stack_base + size) & ~(uintptr_t)15;
  ctx->entry = entry;
  ctx->arg = arg;
  ctx->canary = NULL;
  ctx->stack = NULL;
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

void uvp__fiber_watch(uvp__fiber_ctx_t *ctx, const uvp__stack_t *stack) {
  ctx->stack = stack;
  ctx->canary = stack->canary;
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

#if defined(UVP__FIBER_ASAN_RT)
/* The switch with ASan told; `fake` stays in this frame, on from's stack,
 * while from is suspended.  Not cold: gcc 12 then moves the test into
 * uvp__fiber_switch's cold part with check_stack's call, and gives the
 * switch a frame it sets up on every call. */
static NOINLINE NO_ASAN void *switch_asan(uvp__fiber_ctx_t *from,
                                          uvp__fiber_ctx_t *to, void *msg) {
  void *fake = NULL;
  asan_leave(from, to, &fake);
  tools_leave(to);
  msg = jump(from, to, msg);
  asan_arrive(fake);
  return msg;
}
#endif

void *uvp__fiber_switch(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to,
                        void *msg) {
  if (__builtin_expect(from->canary != NULL, 0))
    check_stack(from);
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    return switch_asan(from, to, msg);
#endif
  tools_leave(to);
  return jump(from, to, msg);
}

void uvp__fiber_exit(uvp__fiber_ctx_t *from, uvp__fiber_ctx_t *to, void *msg) {
  if (__builtin_expect(from->canary != NULL, 0))
    check_stack(from);
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    asan_leave(from, to, NULL); /* NULL: ASan frees from's fake stack */
#endif
  tools_leave(to);
  (void)jump(from, to, msg);
  abort();
}

#if !defined(UVP__FIBER_UCONTEXT)
uint64_t uvp__fiber_fp_control(void) {
#if defined(__x86_64__)
  uint32_t mxcsr;
  uint16_t fcw;
  __asm__ __volatile__("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fcw));
  return mxcsr | (uint64_t)fcw << 32;
#else
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  return fpcr;
#endif
}

void uvp__fiber_set_fp_control(uvp__fiber_ctx_t *ctx, uint64_t fp) {
  uintptr_t *frame = ctx->sp; /* as init_frame laid it out */
#if defined(__x86_64__)
  frame[0] = (uintptr_t)fp;
#else
  frame[20] = (uintptr_t)fp;
#endif
}
#endif

size_t uvp__fiber_live(const uvp__fiber_ctx_t *ctx, const char *top) {
  return (size_t)(top - (const char *)ctx->sp);
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
    save_asan(ctx->sp, len, buf);
    return;
  }
#endif
  memcpy(buf, ctx->sp, len);
}

void uvp__fiber_restore(const uvp__fiber_ctx_t *ctx, const char *top,
                        const void *buf) {
  size_t len = uvp__fiber_live(ctx, top);
#if defined(UVP__FIBER_VALGRIND)
  /* Another fiber's frames came and went here since: for memcheck, the
   * part below its stack pointer is no-access until written again. */
  (void)VALGRIND_MAKE_MEM_UNDEFINED(ctx->sp, len);
#endif
#if defined(UVP__FIBER_ASAN_RT) && defined(UVP__FIBER_CAN_COPY)
  if (uvp__fiber_asan()) {
    restore_asan(ctx->sp, len, buf);
    return;
  }
#endif
  memcpy(ctx->sp, buf, len);
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

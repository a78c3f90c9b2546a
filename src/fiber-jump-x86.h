/* The switch's machine part for x86-64 (SysV, LP64) and i386 (SysV,
 * cdecl): a part of fiber-switch.c, included there once, where HIDDEN,
 * fp_get, has_sse and the two routines' prototypes are.  Each defines the
 * two routines, FRAME_WORDS (a fresh fiber's frame, in words below its
 * stack's 16-aligned top), init_frame and, where the frame keeps the
 * floating-point control (i386), frame_set_fp. */
#if defined(__x86_64__)
/* The saved state, from the saved stack pointer up: r12, r13, r14, r15,
 * rbx, rbp, then the return address the call pushed.  No floating-point
 * control state (UVP__FIBER_SHARED_FP): reading the MXCSR (stmxcsr) took
 * 4-6 ns a switch on this VM's EPYC, half of a switch pair, and
 * fiber-switch.c keeps the modes of the contexts that ask for it.  Entry:
 * rsp = 8 mod 16, and so the saved rsp too.  The return is a jmp through a
 * register, as Boost.Context's: a ret would be predicted from the return
 * stack, which holds the caller on the old stack, and mispredicted on
 * every switch (23 ns a pair against 9 on this VM's EPYC).  Its target is
 * loaded first, before the registers: pushes and pops, the target popped
 * last, made the pair 0.5 ns faster and an await in bench/fiber-pingpong
 * 4 % slower (internals 13.14). */
/* Under -fcf-protection (__CET__: bit 0 IBT, bit 1 SHSTK) the compiler marks
 * this object IBT in its .note.gnu.property, as every other one of the
 * library, and these routines keep the mark's promise: an endbr64 where
 * code may arrive by an indirect branch (the trampoline is jumped to), and
 * the jump back into a suspended context is a notrack jmp, as gcc's own
 * jump tables are, since a return address is no landing pad.  Shadow
 * stacks are not switched, so this object alone is built without SHSTK
 * (meson.build), which leaves the library unmarked for it: see
 * shadow_stack_check. */
#if defined(__CET__) && (__CET__ & 1)
#define ENDBR "  endbr64\n"
#define NOTRACK "notrack "
#else
#define ENDBR ""
#define NOTRACK ""
#endif
/* clang-format off */
__asm__(TEXT_BEGIN
        FN_BEGIN(uvp__fiber_jump)
        "  .cfi_startproc\n"
        ENDBR
        "  leaq -0x30(%rsp), %rsp\n"
        "  movq %r12, 0x00(%rsp)\n"
        "  movq %r13, 0x08(%rsp)\n"
        "  movq %r14, 0x10(%rsp)\n"
        "  movq %r15, 0x18(%rsp)\n"
        "  movq %rbx, 0x20(%rsp)\n"
        "  movq %rbp, 0x28(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq 0x30(%rsi), %r8\n"
        "  movq %rsi, %rsp\n"
        "  movq 0x00(%rsp), %r12\n"
        "  movq 0x08(%rsp), %r13\n"
        "  movq 0x10(%rsp), %r14\n"
        "  movq 0x18(%rsp), %r15\n"
        "  movq 0x20(%rsp), %rbx\n"
        "  movq 0x28(%rsp), %rbp\n"
        "  leaq 0x38(%rsp), %rsp\n"
        "  movq %rdx, %rax\n"
        "  " NOTRACK "jmp *%r8\n"
        "  .cfi_endproc\n"
        FN_END(uvp__fiber_jump)
        "\n"
        FN_BEGIN(uvp__fiber_trampoline)
        "  .cfi_startproc\n"
        /* The bottom frame of the fiber: unwinders and debuggers stop here. */
        "  .cfi_undefined rip\n"
        ENDBR
        "  movq %r12, %rdi\n"
        "  movq %rax, %rsi\n"
        "  callq *%rbx\n"
        "  ud2\n"
        "  .cfi_endproc\n"
        FN_END(uvp__fiber_trampoline)
        TEXT_END);
/* clang-format on */

/* 6 saved, the return address, 2 of padding: the trampoline starts with
 * rsp 16-aligned for its call, 16 bytes under the stack's top. */
enum { FRAME_WORDS = 9 };

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  frame[0] = (uintptr_t)ctx;          /* r12 */
  frame[1] = frame[2] = frame[3] = 0; /* r13, r14, r15 */
  frame[4] = (uintptr_t)boot;         /* rbx */
  frame[5] = 0;                       /* rbp: the end of the frame chain */
  frame[6] = (uintptr_t)uvp__fiber_trampoline;
  frame[7] = frame[8] = 0;
}

#else /* __i386__ */
/* i386 SysV (cdecl): the arguments on the stack, msg returned in eax; a
 * callee keeps ebx, esi, edi, ebp and the x87 control word, and the MXCSR's
 * control bits where the CPU has SSE.  Debian's i386 baseline (i686) does
 * not, so there are two jumps, uvp__fiber_jump with the MXCSR and
 * uvp__fiber_jump_x87 without, chosen at run time (has_sse) rather than
 * from how uvp was compiled: a program's own code built with -msse2 rounds
 * by the MXCSR.  Two entries, not a flag passed as a fourth argument: with
 * three, the C side's call is a tail call, and the return from the switch
 * is not mispredicted (a fourth made a pair 50 ns against 9 on x86-64).
 * The saved state, from the saved stack pointer up: MXCSR (4 bytes, unused
 * without SSE), x87 control word (2, then 2 of padding), edi, esi, ebx,
 * ebp, then the return address the call pushed.  As on x86-64: the
 * registers only loaded when they differ, the return a jmp through a
 * register, endbr32 under CET. */
#if defined(__CET__) && (__CET__ & 1)
#define ENDBR "  endbr32\n"
#define NOTRACK "notrack "
#else
#define ENDBR ""
#define NOTRACK ""
#endif
/* Both jumps' start: save what the callee keeps and the x87 control word,
 * which is left in di. */
#define SAVE                                                                   \
  "  movl 4(%esp), %eax\n"  /* from_sp */                                      \
  "  movl 8(%esp), %ecx\n"  /* to_sp */                                        \
  "  movl 12(%esp), %edx\n" /* msg */                                          \
  "  leal -0x18(%esp), %esp\n"                                                 \
  "  movl %edi, 0x08(%esp)\n"                                                  \
  "  movl %esi, 0x0c(%esp)\n"                                                  \
  "  movl %ebx, 0x10(%esp)\n"                                                  \
  "  movl %ebp, 0x14(%esp)\n"                                                  \
  "  fnstcw 0x4(%esp)\n"                                                       \
  "  movzwl 0x4(%esp), %edi\n"
/* clang-format off */
__asm__(".pushsection .text\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,@function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  .cfi_startproc\n"
        ENDBR
        SAVE
        "  stmxcsr (%esp)\n"
        "  movl (%esp), %esi\n"
        "  movl %esp, (%eax)\n"
        "  movl %ecx, %esp\n"
        "  cmpl (%esp), %esi\n"
        "  jne 2f\n"
        ".Luvp__fiber_jump_fcw:\n"
        "  cmpw 0x4(%esp), %di\n"
        "  jne 4f\n"
        "3:\n"
        "  movl 0x08(%esp), %edi\n"
        "  movl 0x0c(%esp), %esi\n"
        "  movl 0x10(%esp), %ebx\n"
        "  movl 0x14(%esp), %ebp\n"
        "  movl 0x18(%esp), %ecx\n"
        "  leal 0x1c(%esp), %esp\n"
        "  movl %edx, %eax\n"
        "  " NOTRACK "jmp *%ecx\n"
        "2:\n"
        "  ldmxcsr (%esp)\n"
        "  jmp .Luvp__fiber_jump_fcw\n"
        "4:\n"
        "  fldcw 0x4(%esp)\n"
        "  jmp 3b\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_jump_x87\n"
        ".hidden uvp__fiber_jump_x87\n"
        ".type uvp__fiber_jump_x87,@function\n"
        ".p2align 4\n"
        "uvp__fiber_jump_x87:\n"
        "  .cfi_startproc\n"
        ENDBR
        SAVE
        "  movl %esp, (%eax)\n"
        "  movl %ecx, %esp\n"
        "  jmp .Luvp__fiber_jump_fcw\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump_x87, .-uvp__fiber_jump_x87\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,@function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined eip\n"
        ENDBR
        "  pushl %eax\n" /* msg */
        "  pushl %esi\n" /* the context */
        "  calll *%ebx\n"
        "  ud2\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        ".popsection\n");
/* clang-format on */

/* 6 saved, the return address, 2 for the trampoline's arguments: it starts
 * with esp 8 below the (16-aligned) top, so that its call is 16-aligned. */
enum { FRAME_WORDS = 9 };

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[0] = (uint32_t)fp;         /* MXCSR */
  frame[1] = (uint32_t)(fp >> 32); /* x87 control word */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  frame_set_fp(frame, fp_get());
  frame[2] = 0;               /* edi */
  frame[3] = (uintptr_t)ctx;  /* esi */
  frame[4] = (uintptr_t)boot; /* ebx */
  frame[5] = 0;               /* ebp: the end of the frame chain */
  frame[6] = (uintptr_t)uvp__fiber_trampoline;
  frame[7] = frame[8] = 0;
}

#endif

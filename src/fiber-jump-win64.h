/* The switch's machine part for Windows x86-64 (the Microsoft x64 ABI):
 * a part of fiber-switch.c, included there in place of fiber-jump-x86.h,
 * with the same things: the two routines, FRAME_WORDS, init_frame and
 * frame_set_fp.
 *
 * Why our own switch and not the Fibers API (CreateFiberEx,
 * SwitchToFiber): a Windows fiber brings its own stack, reserved by the
 * system one allocation each (64 KiB granularity, a system call per fiber),
 * so the pool of fiber-stack.h, its warm stacks and its guards, and the
 * compact mode, which copies a fiber's frames out of a stack shared at one
 * address, would all be lost; and SwitchToFiber keeps more than a switch
 * between C functions needs.  What the ABI makes a callee keep is kept
 * here, as Boost.Context's jump_x86_64_ms_pe does: rbx, rbp, rdi, rsi,
 * r12-r15, xmm6-xmm15, the MXCSR's control bits and the x87 control word;
 * and the three fields of the thread's TIB that say where its stack is
 * (StackBase gs:0x08, StackLimit gs:0x10, DeallocationStack gs:0x1478),
 * which the system reads to grow a stack, to tell a stack overflow from
 * another fault and to unwind, so each fiber has its own.
 *
 * The saved state, from the saved stack pointer up: MXCSR (4 bytes) and
 * x87 control word (2, 2 of padding) as on SysV (uvp__fiber_set_fp_control
 * writes word 0), r12, r13, r14, r15, rdi, rsi, rbx, rbp, the three TIB
 * fields, xmm6-xmm15 (16-aligned at 0x60), 8 bytes of padding, then the
 * return address the call pushed.  Arguments come in rcx, rdx, r8. */
__asm__(".text\n"
        ".globl uvp__fiber_jump\n"
        ".def uvp__fiber_jump; .scl 2; .type 32; .endef\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  leaq -0x108(%rsp), %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 0x4(%rsp)\n"
        "  movq %r12, 0x08(%rsp)\n"
        "  movq %r13, 0x10(%rsp)\n"
        "  movq %r14, 0x18(%rsp)\n"
        "  movq %r15, 0x20(%rsp)\n"
        "  movq %rdi, 0x28(%rsp)\n"
        "  movq %rsi, 0x30(%rsp)\n"
        "  movq %rbx, 0x38(%rsp)\n"
        "  movq %rbp, 0x40(%rsp)\n"
        "  movq %gs:0x08, %r10\n"
        "  movq %r10, 0x48(%rsp)\n"
        "  movq %gs:0x10, %r10\n"
        "  movq %r10, 0x50(%rsp)\n"
        "  movq %gs:0x1478, %r10\n"
        "  movq %r10, 0x58(%rsp)\n"
        "  movaps %xmm6, 0x60(%rsp)\n"
        "  movaps %xmm7, 0x70(%rsp)\n"
        "  movaps %xmm8, 0x80(%rsp)\n"
        "  movaps %xmm9, 0x90(%rsp)\n"
        "  movaps %xmm10, 0xa0(%rsp)\n"
        "  movaps %xmm11, 0xb0(%rsp)\n"
        "  movaps %xmm12, 0xc0(%rsp)\n"
        "  movaps %xmm13, 0xd0(%rsp)\n"
        "  movaps %xmm14, 0xe0(%rsp)\n"
        "  movaps %xmm15, 0xf0(%rsp)\n"
        "  movq %rsp, (%rcx)\n"
        "  movq %rdx, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 0x4(%rsp)\n"
        "  movq 0x08(%rsp), %r12\n"
        "  movq 0x10(%rsp), %r13\n"
        "  movq 0x18(%rsp), %r14\n"
        "  movq 0x20(%rsp), %r15\n"
        "  movq 0x28(%rsp), %rdi\n"
        "  movq 0x30(%rsp), %rsi\n"
        "  movq 0x38(%rsp), %rbx\n"
        "  movq 0x40(%rsp), %rbp\n"
        "  movq 0x48(%rsp), %r10\n"
        "  movq %r10, %gs:0x08\n"
        "  movq 0x50(%rsp), %r10\n"
        "  movq %r10, %gs:0x10\n"
        "  movq 0x58(%rsp), %r10\n"
        "  movq %r10, %gs:0x1478\n"
        "  movaps 0x60(%rsp), %xmm6\n"
        "  movaps 0x70(%rsp), %xmm7\n"
        "  movaps 0x80(%rsp), %xmm8\n"
        "  movaps 0x90(%rsp), %xmm9\n"
        "  movaps 0xa0(%rsp), %xmm10\n"
        "  movaps 0xb0(%rsp), %xmm11\n"
        "  movaps 0xc0(%rsp), %xmm12\n"
        "  movaps 0xd0(%rsp), %xmm13\n"
        "  movaps 0xe0(%rsp), %xmm14\n"
        "  movaps 0xf0(%rsp), %xmm15\n"
        "  movq 0x108(%rsp), %r9\n"
        "  leaq 0x110(%rsp), %rsp\n"
        "  movq %r8, %rax\n"
        "  jmp *%r9\n"
        "\n"
        /* A new fiber's bottom frame: the function in rbx with the context
         * (r12) and the msg, and the 32 bytes of home space the ABI gives
         * every callee; rsp is 16-aligned here, so 8 mod 16 in the callee. */
        ".globl uvp__fiber_trampoline\n"
        ".def uvp__fiber_trampoline; .scl 2; .type 32; .endef\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  subq $0x20, %rsp\n"
        "  movq %r12, %rcx\n"
        "  movq %rax, %rdx\n"
        "  callq *%rbx\n"
        "  ud2\n");

/* 33 words saved and the return address: the trampoline starts 16-aligned
 * at the top. */
enum { FRAME_WORDS = 34 };

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[0] = fp; /* MXCSR, x87 control word */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  memset(frame, 0, FRAME_WORDS * sizeof(*frame)); /* rbp 0: the chain's end */
  frame_set_fp(frame, fp_get());
  frame[1] = (uintptr_t)ctx;  /* r12 */
  frame[7] = (uintptr_t)boot; /* rbx */
  /* The TIB's view of the fiber's stack: its top here, its base (words 10
   * and 11) set by uvp__fiber_init, which knows it. */
  frame[9] = (uintptr_t)(frame + FRAME_WORDS);
  frame[33] = (uintptr_t)uvp__fiber_trampoline;
}

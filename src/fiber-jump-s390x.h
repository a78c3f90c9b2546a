/* The switch's machine part for s390x (the z/Architecture ELF ABI): a part
 * of fiber-switch.c, included there once, where HIDDEN, fp_get and the two
 * routines' prototypes are.  It defines the two routines, FRAME_WORDS (a
 * fresh fiber's frame, in words below its stack's 16-aligned top),
 * init_frame and frame_set_fp.
 *
 * A callee keeps r6-r13, r15 (the stack pointer), f8-f15 and the FPC's
 * control bits (the IEEE exception masks and the rounding modes); r14
 * holds the return address.  Every caller leaves 160 bytes at its stack
 * pointer for its callee to save registers in: r6-r14 go there, at 48 as
 * the ABI lays it out, and f8-f15 and the FPC (4 bytes, then 4 of padding)
 * in 72 bytes below it.  The FPC is written only when its control bits
 * differ, and then only those. */
/* clang-format off */
__asm__(".pushsection .text\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,@function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  .cfi_startproc\n"
        "  stmg %r6, %r14, 48(%r15)\n"
        "  aghi %r15, -72\n"
        "  std %f8, 0(%r15)\n"
        "  std %f9, 8(%r15)\n"
        "  std %f10, 16(%r15)\n"
        "  std %f11, 24(%r15)\n"
        "  std %f12, 32(%r15)\n"
        "  std %f13, 40(%r15)\n"
        "  std %f14, 48(%r15)\n"
        "  std %f15, 56(%r15)\n"
        "  efpc %r0\n"
        "  st %r0, 64(%r15)\n"
        "  stg %r15, 0(%r2)\n"
        "  lgr %r15, %r3\n"
        "  ld %f8, 0(%r15)\n"
        "  ld %f9, 8(%r15)\n"
        "  ld %f10, 16(%r15)\n"
        "  ld %f11, 24(%r15)\n"
        "  ld %f12, 32(%r15)\n"
        "  ld %f13, 40(%r15)\n"
        "  ld %f14, 48(%r15)\n"
        "  ld %f15, 56(%r15)\n"
        "  l %r1, 64(%r15)\n"
        "  xr %r1, %r0\n"           /* which bits differ */
        "  nilf %r1, 0xf8000077\n" /* IEEE masks, DFP and BFP rounding */
        "  jne 2f\n"
        "1:\n"
        "  aghi %r15, 72\n"
        "  lmg %r6, %r14, 48(%r15)\n"
        "  lgr %r2, %r4\n"
        "  br %r14\n"
        "2:\n"
        "  xr %r0, %r1\n" /* ours, with the resumed one's control */
        "  sfpc %r0\n"
        "  j 1b\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,@function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined %r14\n"
        "  lgr %r3, %r2\n"
        "  lgr %r2, %r7\n"
        "  basr %r14, %r6\n"
        "  .word 0\n" /* an illegal instruction: boot never returns */
        "  .cfi_endproc\n"
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        ".popsection\n");
/* clang-format on */

/* f8-f15 and the FPC (9 words), then the 160 bytes of the trampoline's
 * save area (20 words), then one of room; the trampoline's stack pointer is
 * word 9. */
enum { FRAME_WORDS = 30 };

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[8] = (uintptr_t)(uint32_t)fp << 32; /* the FPC, first (big-endian) */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  int i;
  for (i = 0; i < FRAME_WORDS; i++)
    frame[i] = 0; /* f8-f15, the back chain's end, r8-r13 */
  frame_set_fp(frame, fp_get());
  frame[9 + 6] = (uintptr_t)boot;                   /* r6 */
  frame[9 + 7] = (uintptr_t)ctx;                    /* r7 */
  frame[9 + 14] = (uintptr_t)uvp__fiber_trampoline; /* r14 */
}

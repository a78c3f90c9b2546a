/* The switch's machine part for 64-bit PowerPC, little-endian (ELFv2,
 * ppc64el): a part of fiber-switch.c, included there once, where HIDDEN,
 * fp_get and the two routines' prototypes are.  It defines the two
 * routines, FRAME_WORDS (a fresh fiber's frame, in words below its stack's
 * 16-aligned top), init_frame and frame_set_fp.
 *
 * A callee keeps r14-r31, f14-f31, v20-v31, the CR fields 2-4, r1 (the
 * stack pointer), r2 (the TOC pointer: saved too, since a context resumed
 * comes back into this module's code with its own) and the FPSCR's control
 * bits (rounding, non-IEEE mode, exception enables: its low byte).  The
 * saved state is a frame of 528 bytes with its back chain, from the saved
 * stack pointer up: back chain, CR, LR, r2, FPSCR, padding (48 bytes),
 * v20-v31 (192), r14-r31 (144), f14-f31 (144).  The FPSCR is written only
 * when its control bits differ, and then only those (fields 6 and 7). */
/* clang-format off */
__asm__(".pushsection .text\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,@function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  .cfi_startproc\n"
        "  mflr 0\n"
        "  stdu 1, -528(1)\n"
        "  std 0, 16(1)\n"
        "  mfcr 0\n"
        "  std 0, 8(1)\n"
        "  std 2, 24(1)\n"
        "  mffs 0\n"
        "  stfd 0, 32(1)\n"
        "  li 6, 48\n"
        "  stvx 20, 1, 6\n"
        "  li 6, 64\n"
        "  stvx 21, 1, 6\n"
        "  li 6, 80\n"
        "  stvx 22, 1, 6\n"
        "  li 6, 96\n"
        "  stvx 23, 1, 6\n"
        "  li 6, 112\n"
        "  stvx 24, 1, 6\n"
        "  li 6, 128\n"
        "  stvx 25, 1, 6\n"
        "  li 6, 144\n"
        "  stvx 26, 1, 6\n"
        "  li 6, 160\n"
        "  stvx 27, 1, 6\n"
        "  li 6, 176\n"
        "  stvx 28, 1, 6\n"
        "  li 6, 192\n"
        "  stvx 29, 1, 6\n"
        "  li 6, 208\n"
        "  stvx 30, 1, 6\n"
        "  li 6, 224\n"
        "  stvx 31, 1, 6\n"
        "  std 14, 240(1)\n"
        "  std 15, 248(1)\n"
        "  std 16, 256(1)\n"
        "  std 17, 264(1)\n"
        "  std 18, 272(1)\n"
        "  std 19, 280(1)\n"
        "  std 20, 288(1)\n"
        "  std 21, 296(1)\n"
        "  std 22, 304(1)\n"
        "  std 23, 312(1)\n"
        "  std 24, 320(1)\n"
        "  std 25, 328(1)\n"
        "  std 26, 336(1)\n"
        "  std 27, 344(1)\n"
        "  std 28, 352(1)\n"
        "  std 29, 360(1)\n"
        "  std 30, 368(1)\n"
        "  std 31, 376(1)\n"
        "  stfd 14, 384(1)\n"
        "  stfd 15, 392(1)\n"
        "  stfd 16, 400(1)\n"
        "  stfd 17, 408(1)\n"
        "  stfd 18, 416(1)\n"
        "  stfd 19, 424(1)\n"
        "  stfd 20, 432(1)\n"
        "  stfd 21, 440(1)\n"
        "  stfd 22, 448(1)\n"
        "  stfd 23, 456(1)\n"
        "  stfd 24, 464(1)\n"
        "  stfd 25, 472(1)\n"
        "  stfd 26, 480(1)\n"
        "  stfd 27, 488(1)\n"
        "  stfd 28, 496(1)\n"
        "  stfd 29, 504(1)\n"
        "  stfd 30, 512(1)\n"
        "  stfd 31, 520(1)\n"
        "  ld 7, 32(1)\n" /* our FPSCR */
        "  std 1, 0(3)\n"
        "  mr 1, 4\n"
        "  li 6, 48\n"
        "  lvx 20, 1, 6\n"
        "  li 6, 64\n"
        "  lvx 21, 1, 6\n"
        "  li 6, 80\n"
        "  lvx 22, 1, 6\n"
        "  li 6, 96\n"
        "  lvx 23, 1, 6\n"
        "  li 6, 112\n"
        "  lvx 24, 1, 6\n"
        "  li 6, 128\n"
        "  lvx 25, 1, 6\n"
        "  li 6, 144\n"
        "  lvx 26, 1, 6\n"
        "  li 6, 160\n"
        "  lvx 27, 1, 6\n"
        "  li 6, 176\n"
        "  lvx 28, 1, 6\n"
        "  li 6, 192\n"
        "  lvx 29, 1, 6\n"
        "  li 6, 208\n"
        "  lvx 30, 1, 6\n"
        "  li 6, 224\n"
        "  lvx 31, 1, 6\n"
        "  ld 14, 240(1)\n"
        "  ld 15, 248(1)\n"
        "  ld 16, 256(1)\n"
        "  ld 17, 264(1)\n"
        "  ld 18, 272(1)\n"
        "  ld 19, 280(1)\n"
        "  ld 20, 288(1)\n"
        "  ld 21, 296(1)\n"
        "  ld 22, 304(1)\n"
        "  ld 23, 312(1)\n"
        "  ld 24, 320(1)\n"
        "  ld 25, 328(1)\n"
        "  ld 26, 336(1)\n"
        "  ld 27, 344(1)\n"
        "  ld 28, 352(1)\n"
        "  ld 29, 360(1)\n"
        "  ld 30, 368(1)\n"
        "  ld 31, 376(1)\n"
        "  lfd 14, 384(1)\n"
        "  lfd 15, 392(1)\n"
        "  lfd 16, 400(1)\n"
        "  lfd 17, 408(1)\n"
        "  lfd 18, 416(1)\n"
        "  lfd 19, 424(1)\n"
        "  lfd 20, 432(1)\n"
        "  lfd 21, 440(1)\n"
        "  lfd 22, 448(1)\n"
        "  lfd 23, 456(1)\n"
        "  lfd 24, 464(1)\n"
        "  lfd 25, 472(1)\n"
        "  lfd 26, 480(1)\n"
        "  lfd 27, 488(1)\n"
        "  lfd 28, 496(1)\n"
        "  lfd 29, 504(1)\n"
        "  lfd 30, 512(1)\n"
        "  lfd 31, 520(1)\n"
        "  ld 2, 24(1)\n"
        "  ld 0, 8(1)\n"
        "  mtcrf 0x38, 0\n" /* cr2, cr3, cr4 */
        "  ld 0, 16(1)\n"
        "  mtlr 0\n"
        "  ld 8, 32(1)\n"
        "  xor 8, 8, 7\n"
        "  andi. 8, 8, 0xff\n" /* which control bits differ */
        "  bne 2f\n"
        "1:\n"
        "  addi 1, 1, 528\n"
        "  mr 3, 5\n"
        "  blr\n"
        "2:\n"
        "  lfd 0, 32(1)\n"
        "  mtfsf 0x03, 0\n" /* fields 6 and 7: the control bits */
        "  b 1b\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,@function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  .cfi_startproc\n"
        "  .cfi_undefined 65\n" /* lr */
        "  mr 4, 3\n"
        "  mr 3, 15\n"
        "  mr 12, 14\n" /* a global entry point finds its TOC from r12 */
        "  mtctr 12\n"
        "  bctrl\n"
        "  trap\n"
        "  .cfi_endproc\n"
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        ".popsection\n");
/* clang-format on */

/* The saved frame (66 words), then 96 bytes for the trampoline: the frame
 * header its callee writes in (back chain, CR, LR, TOC) and a parameter
 * save area. */
enum { FRAME_WORDS = 78 };

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[4] = fp; /* FPSCR */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  uintptr_t toc;
  int i;
  __asm__("mr %0, 2" : "=r"(toc));
  for (i = 0; i < FRAME_WORDS; i++)
    frame[i] = 0; /* the back chains' end, CR, v20-v31, r16-r31, f14-f31 */
  frame[2] = (uintptr_t)uvp__fiber_trampoline; /* LR */
  frame[3] = toc;                              /* r2 */
  frame_set_fp(frame, fp_get());
  frame[30] = (uintptr_t)boot; /* r14 */
  frame[31] = (uintptr_t)ctx;  /* r15 */
}

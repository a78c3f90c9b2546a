/* The switch's machine part for aarch64 (AAPCS64) and 32-bit ARM (AAPCS,
 * armhf and armel): a part of fiber-switch.c, included there once, where
 * HIDDEN, fp_get and the two routines' prototypes are.  Each defines the two
 * routines, FRAME_WORDS (a fresh fiber's frame, in words below its stack's
 * 16-aligned top), init_frame and frame_set_fp. */
#if defined(__aarch64__)
/* The saved state, from the saved stack pointer up: x19-x28, x29, x30,
 * d8-d15, the FPCR, padding: 176 bytes, so sp stays 16-aligned.  Writing
 * the FPCR can be slow, and it rarely differs: only written if it does.
 * The return is a ret, unlike x86-64's jmp: with BTI enforced, a br may
 * only land on a landing pad, and a return address is none.
 * Under -mbranch-protection=standard the compiler marks this object BTI and
 * PAC in its .note.gnu.property.  BTI: both routines start with a landing
 * pad (bti c, as a hint: a nop before ARMv8.5), though nothing branches to
 * them indirectly (a bl calls the jump; a ret enters the trampoline).  PAC:
 * x30 arrives here as a bl leaves it, unsigned, and is kept and returned
 * through unsigned, as setjmp keeps it; the callers sign and authenticate
 * their own return addresses in their own frames, which a switch does not
 * touch.  Apple's arm64 ABI (macOS, Mach-O: the same instructions,
 * fiber-asm.h) reserves x18 for the platform: neither routine reads or
 * writes it (a fiber keeps the thread's).  x29 is kept as the frame
 * pointer Apple requires: saved and restored with x30, and 0 in a fresh
 * fiber, where the trampoline ends the chain. */
#if defined(__ARM_FEATURE_BTI_DEFAULT)
#define BTI_C "  hint #34\n" /* bti c */
#else
#define BTI_C ""
#endif
/* clang-format off */
__asm__(TEXT_BEGIN
        FN_BEGIN(uvp__fiber_jump)
        "  .cfi_startproc\n"
        BTI_C
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
        FN_END(uvp__fiber_jump)
        "\n"
        FN_BEGIN(uvp__fiber_trampoline)
        "  .cfi_startproc\n"
        "  .cfi_undefined x30\n"
        BTI_C
        "  mov x1, x0\n"
        "  mov x0, x20\n"
        "  blr x19\n"
        "  brk #0\n"
        "  .cfi_endproc\n"
        FN_END(uvp__fiber_trampoline)
        TEXT_END);
/* clang-format on */

enum { FRAME_WORDS = 24 }; /* 22 saved, 2 of room for the trampoline */

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[20] = fp; /* FPCR */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  int i;
  for (i = 0; i < FRAME_WORDS; i++)
    frame[i] = 0; /* x21-x28, x29 (the end of the frame chain), d8-d15 */
  frame[0] = (uintptr_t)boot;                   /* x19 */
  frame[1] = (uintptr_t)ctx;                    /* x20 */
  frame[11] = (uintptr_t)uvp__fiber_trampoline; /* x30 */
  frame_set_fp(frame, fp_get());
}
#else /* __arm__ */
/* AAPCS (ARMv5T and later, ARM or Thumb callers): a callee keeps r4-r11, sp
 * and, with a VFP unit (armhf; armel has none), d8-d15 and the FPSCR's
 * control bits (rounding, flush-to-zero, default NaN, trap enables).  The
 * saved state, from the saved stack pointer up: the FPSCR, 4 bytes of
 * padding, d8-d15, r4-r11, lr, 4 of padding: 112 bytes, so sp stays 8-aligned
 * as AAPCS wants it at calls.  The FPSCR is written only when its control
 * bits differ, and then only those, taking the resumed context's control
 * and the cumulative exception flags as they are (not kept per fiber, as on
 * the other machines).  The routines are ARM code, entered by blx from Thumb
 * callers and returning by bx, which goes back to either. */
#if defined(__ARM_FP)
#define VFP(x) x
#else
#define VFP(x) ""
#endif
#if defined(__thumb__)
#define BACK_TO_MODE ".thumb\n" /* the rest of the file, as compiled */
#else
#define BACK_TO_MODE ""
#endif
/* clang-format off */
__asm__(".pushsection .text\n"
        ".arm\n"
        ".globl uvp__fiber_jump\n"
        ".hidden uvp__fiber_jump\n"
        ".type uvp__fiber_jump,%function\n"
        ".p2align 4\n"
        "uvp__fiber_jump:\n"
        "  sub sp, sp, #112\n"
        "  add ip, sp, #72\n"
        "  stmia ip, {r4-r11, lr}\n"
        VFP("  vmrs r3, fpscr\n"
            "  str r3, [sp]\n"
            "  add ip, sp, #8\n"
            "  vstmia ip, {d8-d15}\n")
        "  str sp, [r0]\n"
        "  mov sp, r1\n"
        VFP("  add ip, sp, #8\n"
            "  vldmia ip, {d8-d15}\n"
            "  ldr r1, [sp]\n"
            "  eor r0, r1, r3\n"         /* which bits differ */
            "  and ip, r0, #0x07c00000\n" /* AHP, DN, FZ, RMode */
            "  and r0, r0, #0x9f00\n"     /* the trap enables */
            "  orrs ip, ip, r0\n"
            "  bne 2f\n")
        "1:\n"
        "  add ip, sp, #72\n"
        "  ldmia ip, {r4-r11, lr}\n"
        "  add sp, sp, #112\n"
        "  mov r0, r2\n"
        "  bx lr\n"
        VFP("2:\n"
            "  eor r3, r3, ip\n" /* ours, with the resumed one's control */
            "  vmsr fpscr, r3\n"
            "  b 1b\n")
        ".size uvp__fiber_jump, .-uvp__fiber_jump\n"
        "\n"
        ".globl uvp__fiber_trampoline\n"
        ".hidden uvp__fiber_trampoline\n"
        ".type uvp__fiber_trampoline,%function\n"
        ".p2align 4\n"
        "uvp__fiber_trampoline:\n"
        "  mov r1, r0\n"
        "  mov r0, r5\n"
        "  blx r4\n"
        "  .word 0xe7f000f0\n" /* udf: never returns */
        ".size uvp__fiber_trampoline, .-uvp__fiber_trampoline\n"
        BACK_TO_MODE
        ".popsection\n");
/* clang-format on */

/* 28 saved (with padding), 2 of room: the trampoline starts with sp 8 below
 * the top. */
enum { FRAME_WORDS = 30 };

static void frame_set_fp(uintptr_t *frame, uint64_t fp) {
  frame[0] = (uint32_t)fp; /* FPSCR (unused without VFP) */
}

static void init_frame(uvp__fiber_ctx_t *ctx, uintptr_t *frame,
                       void (*boot)(uvp__fiber_ctx_t *, void *)) {
  int i;
  for (i = 0; i < FRAME_WORDS; i++)
    frame[i] = 0; /* d8-d15, r6-r10, r11 (the end of the frame chain) */
  frame_set_fp(frame, fp_get());
  frame[18] = (uintptr_t)boot;                  /* r4 */
  frame[19] = (uintptr_t)ctx;                   /* r5 */
  frame[26] = (uintptr_t)uvp__fiber_trampoline; /* lr */
}
#endif

/* The directives around the fiber switch's routines, by object format: a
 * part of fiber-switch.c, for fiber-jump-x86.h (x86-64) and
 * fiber-jump-arm.h (aarch64).  The instructions between FN_BEGIN and
 * FN_END are one text for ELF and Mach-O, so what runs on Linux (natively,
 * or under qemu for aarch64) is what a Mac runs; .ci/switch-bytes
 * disassembles both objects and fails unless their bytes are the same.
 * Only the symbols differ: Mach-O prefixes C names with `_`, hides a
 * global with .private_extern (ELF: .hidden) and has neither .type nor
 * .size. */
#ifndef UVP_FIBER_ASM_H
#define UVP_FIBER_ASM_H

#if defined(__APPLE__)
#define TEXT_BEGIN ".pushsection __TEXT,__text,regular,pure_instructions\n"
#define FN_BEGIN(name)                                                         \
  ".globl _" #name "\n"                                                        \
  ".private_extern _" #name "\n"                                               \
  ".p2align 4\n"                                                               \
  "_" #name ":\n"
#define FN_END(name) ""
#else
#if defined(__x86_64__) || defined(__i386__)
#define FN_TYPE "@function"
#else
#define FN_TYPE "%function" /* ARM: @ begins a comment */
#endif
#define TEXT_BEGIN ".pushsection .text\n"
#define FN_BEGIN(name)                                                         \
  ".globl " #name "\n"                                                         \
  ".hidden " #name "\n"                                                        \
  ".type " #name "," FN_TYPE "\n"                                              \
  ".p2align 4\n" #name ":\n"
#define FN_END(name) ".size " #name ", .-" #name "\n"
#endif
#define TEXT_END ".popsection\n"

#endif

/* ASan and the fiber layer: whether AddressSanitizer's runtime is in the
 * process, and its calls.  Private to src/ (fiber-switch.c, fiber-stack.c,
 * fiber.c).
 *
 * ASan can be in a process that runs fibers in two ways:
 *  - uvp was built with it (-Db_sanitize=address): UVP__FIBER_ASAN, and
 *    uvp's own frames have redzones too;
 *  - the program was, and links a release uvp (uvp.h, Fibers, "Tools"):
 *    the runtime is there and the program's frames on fiber stacks poison
 *    their redzones in ASan's shadow, while uvp's code is not instrumented
 *    but its calls to memcpy and memset are still intercepted and checked.
 * Either way ASan must be told of every switch of stacks, a compact
 * fiber's frames must be copied with their shadow, and the pool poisons
 * idle stacks.  A release uvp finds the runtime by weak references to its
 * interface, which the dynamic linker (or the static linker, for libuvp.a)
 * binds to ASan's definitions when the program has them and leaves NULL
 * otherwise: uvp__fiber_asan() is then a load and a branch that is never
 * taken.  ASan's runtime (gcc's libasan, clang's compiler-rt) defines the
 * whole interface at once, so one symbol tells.  In an ASan build of uvp,
 * uvp__fiber_asan() is the constant 1 and the header's declarations are
 * the sanitizer's own.  Elsewhere (not ELF, not GNU C) it is 0. */
#ifndef UVP_FIBER_ASAN_H
#define UVP_FIBER_ASAN_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define UVP__FIBER_ASAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(UVP__FIBER_ASAN)
#define UVP__FIBER_ASAN 1
#endif
#endif

#if defined(UVP__FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define UVP__FIBER_ASAN_RT 1
static inline int uvp__fiber_asan(void) { return 1; }
#elif defined(__GNUC__) && defined(__ELF__)
#define UVP__FIBER_ASAN_RT 1
/* The prototypes of <sanitizer/asan_interface.h> and
 * <sanitizer/common_interface_defs.h>, weak. */
__attribute__((weak)) void
__asan_poison_memory_region(void const volatile *addr, size_t size);
__attribute__((weak)) void
__asan_unpoison_memory_region(void const volatile *addr, size_t size);
__attribute__((weak)) void __asan_get_shadow_mapping(size_t *shadow_scale,
                                                     size_t *shadow_offset);
__attribute__((weak)) void
__sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                               size_t size);
__attribute__((weak)) void
__sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                size_t *size_old);
static inline int uvp__fiber_asan(void) {
  return __builtin_expect(__asan_poison_memory_region != NULL, 0);
}
#else
static inline int uvp__fiber_asan(void) { return 0; }
#endif

/* [addr, addr + size) out of bounds for ASan (a use is reported as
 * use-after-poison), or back in bounds; nothing without ASan. */
static inline void uvp__fiber_poison(const void *addr, size_t size) {
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    __asan_poison_memory_region(addr, size);
#else
  (void)addr;
  (void)size;
#endif
}

static inline void uvp__fiber_unpoison(const void *addr, size_t size) {
#if defined(UVP__FIBER_ASAN_RT)
  if (uvp__fiber_asan())
    __asan_unpoison_memory_region(addr, size);
#else
  (void)addr;
  (void)size;
#endif
}

#endif

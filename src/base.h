/* Private to src/: what every file needs and nothing more (compiler
 * hints, the export macro, container-of, debug checks). */
#ifndef UVP_BASE_H
#define UVP_BASE_H

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uvp.h"

/* A pointer in a dump, trace or message: "0x" and its hex digits on every
 * system, as glibc's %p writes it (Windows' C runtime writes %p as 16
 * digits with no 0x; readers and tools match the 0x). */
#define UVP__PTR "0x%" PRIxPTR
#define UVP__PTRV(p) ((uintptr_t)(const void *)(p))

/* The format attribute of uvp's own printf-like functions: mingw-w64's C99
 * printf (__USE_MINGW_ANSI_STDIO) is gnu_printf to gcc, msvcrt's is
 * printf, and %zu is only the former's. */
#if defined(__MINGW_PRINTF_FORMAT)
#define UVP__PRINTF(f, a) __attribute__((format(__MINGW_PRINTF_FORMAT, f, a)))
#elif defined(__GNUC__)
#define UVP__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define UVP__PRINTF(f, a)
#endif

#if defined(__GNUC__)
#define UVP__LIKELY(x) __builtin_expect(!!(x), 1)
#define UVP__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define UVP__ALWAYS_INLINE inline __attribute__((always_inline))
#define UVP__NOINLINE __attribute__((noinline))
#define UVP__PREFETCH(addr) __builtin_prefetch(addr)
#define UVP__PREFETCH_W(addr) __builtin_prefetch((addr), 1)
#else
#define UVP__LIKELY(x) (x)
#define UVP__UNLIKELY(x) (x)
#define UVP__ALWAYS_INLINE inline
#define UVP__NOINLINE
#define UVP__PREFETCH(addr) ((void)(addr))
#define UVP__PREFETCH_W(addr) ((void)(addr))
#endif

/* A rule the code relies on but the types cannot state: checked in debug
 * builds (meson's default buildtype), compiled out with NDEBUG. */
#define UVP__CHECK(cond) assert(cond)

/* The object of type `type` whose member `member` is at `ptr`. */
#define UVP__CONTAINER_OF(ptr, type, member)                                   \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* uvp.h's "Handing over": a call given `ptr` with the function that frees
 * it owns it whatever it returns, so an error (rc < 0) frees it before
 * the call returns.  Returns rc. */
static inline int uvp__refuse(int rc, void *ptr, uvp_free_cb free_cb) {
  if (rc != 0 && free_cb != NULL)
    free_cb(ptr);
  return rc;
}

#endif

/* The clock uv_hrtime reads, in ns, without its wrapper's calls: the
 * recorder's and the stall detector's stamps are set against uv_hrtime's
 * (a trace's end and its wall-clock origin, the loop's own times), so on
 * every platform they are taken on the clock libuv reads there.  libuv
 * 1.44 reads CLOCK_MONOTONIC on Linux and the BSDs; mach_absolute_time on
 * macOS, which CLOCK_UPTIME_RAW is in nanoseconds (Apple's clock_gettime(3):
 * "identical to the result of mach_absolute_time() after the appropriate
 * mach_timebase conversion"); QueryPerformanceCounter on Windows, where
 * uv_hrtime itself is called.  A clock that cannot be read falls back on
 * uv_hrtime.  On Linux this is the code the two had before, to the
 * instruction. */
#ifndef UVP_MONO_H
#define UVP_MONO_H

#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "base.h"

static inline uint64_t uvp__mono_ns(void) {
#if defined(_WIN32)
  return uv_hrtime();
#else
#if defined(CLOCK_UPTIME_RAW) && defined(__APPLE__)
  const clockid_t id = CLOCK_UPTIME_RAW;
#else
  const clockid_t id = CLOCK_MONOTONIC;
#endif
  struct timespec t;
  if (UVP__UNLIKELY(clock_gettime(id, &t) != 0))
    return uv_hrtime();
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
#endif
}

#endif

/* UVP_BENCH_RECORD=BYTES turns the flight recorder on, with a ring of
 * BYTES and every kind of event, in the programs whose cost with it on
 * docs/internals/diagnostics.md gives ("The flight recorder"; bench/ab's rows
 * *-rec). */
#ifndef UVP_BENCH_RECORDER_PROBE_H
#define UVP_BENCH_RECORDER_PROBE_H

#include <stdlib.h>

#include "uvp.h"

/* 0, or the error of turning it on as asked. */
static inline int bench_recorder(uvp_ctx_t *ctx) {
  const char *bytes = getenv("UVP_BENCH_RECORD");
  if (bytes == NULL || *bytes == '\0')
    return 0;
  return uvp_ctx_set_recorder(ctx, strtoull(bytes, NULL, 10), 0);
}

#endif

/* Whether a context records async traces: bench/run-traces runs the same
 * programs with UVP_TRACES=1 and without, and checks from the programs'
 * traced=0|1 that each run was what it was meant to be. */
#ifndef UVP_BENCH_TRACE_PROBE_H
#define UVP_BENCH_TRACE_PROBE_H

#include "uvp.h"

/* 1 if a promise created now in ctx gets a trace, 0 if not, -1 on an
 * error.  Run it outside the clock. */
static inline int bench_traced(uvp_ctx_t *ctx) {
  uvp_promise_t *p;
  if (uvp_promise_new(ctx, &p) != 0)
    return -1;
  int traced = uvp_promise_trace(p, NULL, 0) > 0;
  uvp_promise_release(p);
  return traced;
}

#endif

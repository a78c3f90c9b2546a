/* What a request made under a W3C trace context costs uvp's core
 * (docs/internals/tracing.md, "Trace context"): what a binding does per
 * request, the scope's context read, a client span begun, its traceparent
 * formatted, the span ended.
 *
 *   tracectx N MODE   MODE 0: no trace context (what every request pays
 *                     when tracing is off: the read alone); 1: under one;
 *                     2: under one with the recorder recording spans.
 *
 * Count instructions with callgrind over two N and take the difference
 * per request (as bench/ab-instr does): the loop's start and end cancel.
 * Prints a checksum so that nothing is optimised away. */
#include <stdio.h>
#include <stdlib.h>
#include <uvp.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 100000;
  int mode = argc > 2 ? atoi(argv[2]) : 0;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (n < 0 || mode < 0 || mode > 2 || uv_loop_init(&loop) != 0 ||
      uvp_ctx_new(&loop, &ctx) != 0) {
    fprintf(stderr, "usage: tracectx N MODE(0-2)\n");
    return 2;
  }
  uvp_span_t root;
  if (mode >= 1 && (uvp_span_begin(ctx, &root, "root", UVP_SPAN_SERVER, NULL,
                                   UVP_SPAN_NEW_TRACE) != 0 ||
                    uvp_span_enter(ctx, &root) != 0))
    return 1;
  if (mode == 2 && uvp_ctx_set_recorder(ctx, 1 << 24, UVP_RECORD_SPANS) != 0)
    return 1;
  char tp[UVP_TRACEPARENT_LEN + 1];
  long sum = 0;
  for (long i = 0; i < n; i++) {
    uvp_tracectx_t tc;
    const char *ts;
    if (uvp_tracectx_get(ctx, &tc, &ts) != 0)
      continue;
    uvp_span_t s;
    if (uvp_span_begin(ctx, &s, "GET http://127.0.0.1/x", UVP_SPAN_CLIENT, NULL,
                       0) != 0 ||
        uvp_tracectx_format(&s.tc, tp) != 0)
      return 1;
    sum += tp[40];
    (void)uvp_span_end(ctx, &s, 0);
  }
  printf("%ld\n", sum);
  if (uvp_ctx_close(ctx) != 0 || uv_run(&loop, UV_RUN_DEFAULT) != 0 ||
      uv_loop_close(&loop) != 0)
    return 1;
  return 0;
}

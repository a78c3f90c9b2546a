/* uvp-gateway's trace context glue: see trace.h. */
#include <stdio.h>
#include <string.h>

#include "trace.h"

void gw_trace_begin(uvp_ctx_t *ctx, const httpd_req_t *req, int start,
                    gw_trace_t *t) {
  const char *tp;
  char ts[UVP_TRACESTATE_MAX + 1];
  uvp_tracectx_t in;
  t->on = 0;
  httpd_req_trace_headers(req, &tp, ts, sizeof(ts));
  int have = tp != NULL && uvp_tracectx_parse(tp, strlen(tp), &in) == 0;
  if (!have && !start)
    return;
  char name[160];
  snprintf(name, sizeof(name), "%s %.120s",
           req->error != 0 ? "BAD" : req->method, req->path);
  if (uvp_span_begin(ctx, &t->span, name, UVP_SPAN_SERVER, have ? &in : NULL,
                     have ? 0 : UVP_SPAN_NEW_TRACE) != 0)
    return;
  t->on = 1;
  /* The client's tracestate goes on only with its traceparent; an
   * invalid one is dropped (uvp_tracectx_set drops it too: checked here
   * to say so plainly). */
  const char *state =
      have && ts[0] != '\0' && uvp_tracestate_check(ts, strlen(ts)) == 0 ? ts
                                                                         : NULL;
  /* No memory for the scope: the request is served untraced below, its
   * span still timed. */
  (void)uvp_tracectx_set(ctx, &t->span.tc, state);
}

void gw_trace_end(uvp_ctx_t *ctx, gw_trace_t *t, int status) {
  if (t->on) {
    t->on = 0;
    (void)uvp_span_end(ctx, &t->span, status);
  }
}

void gw_trace_response(const uvp_ctx_t *ctx, char *buf, size_t cap) {
  uvp_tracectx_t tc;
  char tp[UVP_TRACEPARENT_LEN + 1];
  buf[0] = '\0';
  if (uvp_tracectx_get(ctx, &tc, NULL) == 0 &&
      uvp_tracectx_format(&tc, tp) == 0)
    snprintf(buf, cap, "traceresponse: %s\r\n", tp);
}

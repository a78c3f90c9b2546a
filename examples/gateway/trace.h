/* uvp-gateway's W3C Trace Context: each request served under
 * a SERVER span, child of the `traceparent` the client sent (or of none,
 * a new trace, with --trace-start), so that the fan-out's group, its
 * members and their backend requests (httpc's CLIENT spans, which send
 * `traceparent` on) are its children; and the `traceresponse` header
 * that names the span to the client. */
#ifndef GATEWAY_TRACE_H
#define GATEWAY_TRACE_H

#include <stddef.h>

#include "httpd.h"
#include "uvp.h"

typedef struct gw_trace_s {
  uvp_span_t span;
  int on; /* a span was begun, and not ended yet */
} gw_trace_t;

/* Begin req's SERVER span ("GET /path") into *t and make the current
 * scope run in it, with the client's tracestate if valid.  A traceparent
 * that is absent, sent twice or malformed is ignored (as the
 * specification says: never an error to the client): then, with
 * `start`, the span begins a new trace; without, nothing is done (t->on
 * 0).  A malformed tracestate is dropped alone. */
void gw_trace_begin(uvp_ctx_t *ctx, const httpd_req_t *req, int start,
                    gw_trace_t *t);

/* End the span, if one was begun (status: 0, or why the request ended
 * without an answer). */
void gw_trace_end(uvp_ctx_t *ctx, gw_trace_t *t, int status);

/* "traceresponse: 00-<trace-id>-<span-id>-<flags>\r\n" for the current
 * scope's context into buf, or "" where it has none; its flags the
 * span's: sampled and random-trace-id, the reserved bits zero.  cap:
 * GW_TRACERESPONSE_MAX.  `traceresponse` is the response header of Trace
 * Context Level 2 (its current draft, the Candidate Recommendation Draft
 * of 2024-03-28); the editor's draft of Level 3 has since replaced it
 * with a Server-Timing metric (`server-timing: trace;desc=00-...`), which
 * no published draft has yet: the gateway follows Level 2 until one
 * does. */
#define GW_TRACERESPONSE_MAX                                                   \
  (sizeof("traceresponse: \r\n") + UVP_TRACEPARENT_LEN)
void gw_trace_response(const uvp_ctx_t *ctx, char *buf, size_t cap);

#endif

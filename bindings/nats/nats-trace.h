/* The NATS binding's trace context (trace.c; not installed): W3C
 * traceparent and tracestate in a message's headers, and the spans of
 * those who send and receive it. */
#ifndef UVP_NATS_TRACE_H
#define UVP_NATS_TRACE_H

#include "uvp-nats.h"

/* A span of kind (CLIENT,
 * PRODUCER) child of the current scope's context, its traceparent (and
 * the scope's tracestate) set on m: *out, or NULL without a context
 * (nothing done).  UV_ENOMEM, or nats.c's code for the header (the span
 * ended then). */
int uvp_nats__trace_out(uvp_ctx_t *ctx, int kind, const char *subject,
                        natsMsg *m, uvp_span_t **out);
/* A span of kind (SERVER, CONSUMER) whose parent is m's traceparent, or
 * NULL (none, malformed, no memory: served untraced). */
uvp_span_t *uvp_nats__trace_in(uvp_ctx_t *ctx, int kind, const char *subject,
                               natsMsg *m);
/* The current scope runs in span (NULL: nothing), with m's tracestate if
 * it is valid. */
int uvp_nats__trace_enter(uvp_ctx_t *ctx, const uvp_span_t *span, natsMsg *m);
/* End *span with status and free it; NULL: nothing. */
void uvp_nats__trace_end(uvp_ctx_t *ctx, uvp_span_t **span, int status);
/* uvp_nats_request_opts_t flags of the binding's own (js.c): a request
 * that carries no trace context (JetStream's API), and one whose span is
 * a PRODUCER's (a JetStream publish). */
#define UVP_NATS__REQUEST_UNTRACED (1 << 29)
#define UVP_NATS__REQUEST_PRODUCER (1 << 30)

#endif

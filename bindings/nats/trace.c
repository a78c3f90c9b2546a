/* uvp-nats: W3C trace context in NATS headers (uvp-nats.h's "Trace
 * context" says what goes where).
 *
 * A message made under a trace context carries `traceparent` (its span's
 * own context: the receiver's parent) and the scope's `tracestate`; a
 * message received with a valid `traceparent` is served under a span
 * whose parent it names.  The spans are the caller's memory (uvp_span_t
 * holds no allocation), here one malloc per traced request or served
 * message, made only then: without a trace context a request costs one
 * uvp_tracectx_get (a NULL compare in the core), a served message one
 * header lookup in the table nats.c has already parsed for Uvp-Timeout-Ms.
 * A malformed header is as absent, never an error, as the W3C spec says. */
#include "nats-internal.h"

/* "request SUBJECT": the span's name (the recorder copies it; a track per
 * name, so a name per subject, not per message). */
static const char *span_name(char *buf, size_t cap, const char *verb,
                             const char *subject) {
  snprintf(buf, cap, "%s %s", verb, subject != NULL ? subject : "?");
  return buf;
}

static const char *verb_of(int kind) {
  switch (kind) {
  case UVP_SPAN_CLIENT:
    return "request";
  case UVP_SPAN_SERVER:
    return "serve";
  case UVP_SPAN_PRODUCER:
    return "publish";
  default:
    return "consume";
  }
}

int uvp_nats__trace_out(uvp_ctx_t *ctx, int kind, const char *subject,
                        natsMsg *m, uvp_span_t **out) {
  uvp_tracectx_t tc;
  const char *state = NULL;
  *out = NULL;
  if (uvp_tracectx_get(ctx, &tc, &state) != 0)
    return 0; /* no trace context: nothing added */
  uvp_span_t *span = malloc(sizeof(*span));
  if (span == NULL)
    return UV_ENOMEM;
  char name[160];
  int rc = uvp_span_begin(ctx, span,
                          span_name(name, sizeof(name), verb_of(kind), subject),
                          kind, &tc, 0);
  if (rc != 0) { /* a trace context that cannot be continued: none */
    free(span);
    return 0;
  }
  char tp[UVP_TRACEPARENT_LEN + 1];
  natsStatus s = NATS_OK;
  if (uvp_tracectx_format(&span->tc, tp) == 0)
    s = natsMsgHeader_Set(m, UVP_NATS_TRACEPARENT_HEADER, tp);
  if (s == NATS_OK && state != NULL && *state != '\0')
    s = natsMsgHeader_Set(m, UVP_NATS_TRACESTATE_HEADER, state);
  if (s != NATS_OK) {
    rc = uvp_nats_code(s);
    uvp_nats__trace_end(ctx, &span, rc);
    return rc;
  }
  *out = span;
  return 0;
}

/* m's traceparent, if it has exactly one and it is valid. */
static bool incoming(natsMsg *m, uvp_tracectx_t *tc) {
  const char **v = NULL;
  int n = 0;
  if (natsMsgHeader_Values(m, UVP_NATS_TRACEPARENT_HEADER, &v, &n) != NATS_OK)
    return false; /* none (the common case), or headers nats.c cannot read */
  bool ok =
      n == 1 && v[0] != NULL && uvp_tracectx_parse(v[0], strlen(v[0]), tc) == 0;
  free((void *)v);
  return ok;
}

uvp_span_t *uvp_nats__trace_in(uvp_ctx_t *ctx, int kind, const char *subject,
                               natsMsg *m) {
  uvp_tracectx_t tc;
  if (m == NULL || !incoming(m, &tc))
    return NULL;
  uvp_span_t *span = malloc(sizeof(*span));
  char name[160];
  if (span == NULL ||
      uvp_span_begin(ctx, span,
                     span_name(name, sizeof(name), verb_of(kind), subject),
                     kind, &tc, 0) != 0) {
    free(span);
    return NULL; /* served untraced: never an error to the peer */
  }
  return span;
}

/* m's tracestate: its values joined by commas (as an HTTP receiver would
 * read repeated headers), in buf; NULL if none or too long to keep. */
static const char *tracestate_of(natsMsg *m, char *buf, size_t cap) {
  const char **v = NULL;
  int n = 0;
  if (natsMsgHeader_Values(m, UVP_NATS_TRACESTATE_HEADER, &v, &n) != NATS_OK)
    return NULL;
  size_t len = 0;
  bool fits = true;
  for (int i = 0; fits && i < n; i++) {
    size_t k = v[i] != NULL ? strlen(v[i]) : 0;
    fits = len + k + (i > 0) < cap;
    if (fits && i > 0)
      buf[len++] = ',';
    if (fits && k > 0)
      memcpy(buf + len, v[i], k);
    len += fits ? k : 0;
  }
  free((void *)v);
  if (!fits || len == 0)
    return NULL;
  buf[len] = '\0';
  return uvp_tracestate_check(buf, len) == 0 ? buf : NULL;
}

int uvp_nats__trace_enter(uvp_ctx_t *ctx, const uvp_span_t *span, natsMsg *m) {
  if (span == NULL)
    return 0;
  char buf[UVP_TRACESTATE_MAX + 1];
  return uvp_tracectx_set(ctx, &span->tc, tracestate_of(m, buf, sizeof(buf)));
}

void uvp_nats__trace_end(uvp_ctx_t *ctx, uvp_span_t **span, int status) {
  if (*span == NULL)
    return;
  (void)uvp_span_end(ctx, *span, status);
  free(*span);
  *span = NULL;
}

/** @file
 * Distributed tracing: W3C Trace Context carried by scopes, and spans.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_TRACING
#define UVP_H_TRACING

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup tracing Trace context (W3C) and spans
 *
 * A trace context is what W3C Trace Context's `traceparent` header
 * carries between processes (https://www.w3.org/TR/trace-context/): the
 * id of the whole trace, the id of the span the work runs in (the
 * `parent-id` a request made from there sends) and the trace flags.  The
 * current scope carries one, as it carries slots and a deadline (see
 * "Scopes"): set in a handler or a fiber, it is seen by every handler
 * registered, fiber spawned and group member added from there, three
 * levels down or thirty, whichever thread settled what they waited for.
 * With none set (the default), nothing of this costs anything: the
 * bindings ask uvp_tracectx_get once a request and get UV_ENOENT.
 *
 * A span is one timed piece of work in a trace: a request sent (a
 * CLIENT span, whose own context goes out as the request's
 * `traceparent`), a request served (a SERVER span, child of the context
 * the request brought), or anything else worth a bar on a timeline.
 * uvp_span_begin and uvp_span_end time it and, with the flight recorder
 * on (uvp_ctx_set_recorder, UVP_RECORD_SPANS), record both ends with
 * their ids, which is what `uvp-trace merge` joins processes' recordings
 * by.  uvp exports to no collector: the recorder's file is the output.
 *
 * uvp-curl, uvp-nats and the tools send and read the headers themselves
 * (their headers say how); a program with a protocol of its own sends
 * uvp_tracectx_format's text and reads with uvp_tracectx_parse. */
/** @{ */

/** Length of a version-00 `traceparent`: "00-" 32 hex "-" 16 hex "-" 2
 * hex (uvp_tracectx_format writes it and a NUL). */
#define UVP_TRACEPARENT_LEN 55
/** The longest `tracestate` kept (bytes); a longer one is dropped.  The
 * W3C specification asks a platform to propagate at least 512. */
#define UVP_TRACESTATE_MAX 512
/** The `sampled` bit of trace flags. */
#define UVP_TRACE_SAMPLED 0x01
/** The `random-trace-id` bit of trace flags (Trace Context Level 2): at
 * least the trace id's right-most 7 bytes are random with a uniform
 * distribution.  A trace uvp begins has it set. */
#define UVP_TRACE_RANDOM 0x02

/** A trace context: the fields of a `traceparent`. */
typedef struct uvp_tracectx_s {
  uint8_t trace_id[16]; /**< the trace's; never all zero */
  /** The span the work runs in: the `parent-id` a request made under it
   * sends; never all zero. */
  uint8_t span_id[8];
  uint8_t flags; /**< trace flags (UVP_TRACE_SAMPLED) */
} uvp_tracectx_t;

/** Read a `traceparent` header's value: `len` bytes at traceparent (no
 * NUL needed), spaces and tabs around it ignored.  As the specification
 * says: version 00 is exactly 55 characters; a later version is read by
 * its first 55 if what follows starts with '-'; version ff, uppercase or
 * other non-hex digits, an all-zero trace-id or parent-id, a wrong
 * length or a misplaced '-' make it invalid.  Returns 0 (*out filled), or
 * UV_EINVAL (invalid, or NULL traceparent or out): the header is then to
 * be ignored, as if absent, never answered with an error. */
UVP_EXTERN int uvp_tracectx_parse(const char *traceparent, size_t len,
                                  uvp_tracectx_t *out);
/** Whether `len` bytes of a `tracestate` header's value are valid: at
 * most 32 list members of `key=value` separated by commas (empty members
 * and spaces and tabs around them allowed), keys and values as the
 * specification's current grammar has them (a key: a lowercase letter or
 * a digit, then up to 255 of lowercase letters, digits, `_ - * / @`, so
 * `foo@` and `t*242@v` are keys), at most UVP_TRACESTATE_MAX bytes.  A
 * key given twice does not make it invalid: the header is kept as it
 * came, duplicates included, which the specification allows.  0, or
 * UV_EINVAL: drop the tracestate (and keep the traceparent). */
UVP_EXTERN int uvp_tracestate_check(const char *tracestate, size_t len);
/** Write tc as a version-00 `traceparent` and a NUL into out
 * (UVP_TRACEPARENT_LEN + 1 bytes).  0, or UV_EINVAL (NULL argument, an
 * all-zero id). */
UVP_EXTERN int uvp_tracectx_format(const uvp_tracectx_t *tc, char *out);

/** The trace context of the current scope into *out (may be NULL: only
 * whether there is one), and its `tracestate` into *tracestate (may be
 * NULL; NULL when it has none): the string is the scope's, valid while
 * the running handler or the fiber's step runs (copy it to keep it).
 * Loop thread.  Returns 0, UV_ENOENT (no trace context: *out untouched,
 * *tracestate NULL), or UV_EINVAL (NULL ctx). */
UVP_EXTERN int uvp_tracectx_get(const uvp_ctx_t *ctx, uvp_tracectx_t *out,
                                const char **tracestate);
/** Make the current scope carry trace context tc (NULL: none) with
 * `tracestate` (NULL: none; copied; an invalid one is dropped, as
 * uvp_tracestate_check says, without an error), for the rest of the
 * running handler or callback, or of the fiber across its awaits, and
 * for everything registered, spawned or added from there, as
 * uvp_scope_set does: a new scope, so what captured the old one keeps
 * seeing it.  Loop thread.  Errors: UV_EINVAL (NULL ctx, an all-zero
 * id), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM (the scope stays as it
 * was). */
UVP_EXTERN int uvp_tracectx_set(uvp_ctx_t *ctx, const uvp_tracectx_t *tc,
                                const char *tracestate);

/** What a span is, as OpenTelemetry's SpanKind says. */
enum {
  UVP_SPAN_INTERNAL = 0, /**< work inside the process */
  UVP_SPAN_SERVER = 1,   /**< a request served */
  UVP_SPAN_CLIENT = 2,   /**< a request sent, until its reply */
  UVP_SPAN_PRODUCER = 3, /**< a message published, not waited for */
  UVP_SPAN_CONSUMER = 4  /**< a published message, processed */
};
/** uvp_span_begin's flags. */
enum {
  /** With no parent given and none in the current scope: begin a new
   * trace (a root span, sampled) rather than fail with UV_ENOENT. */
  UVP_SPAN_NEW_TRACE = 1
};

/** A span.  The caller owns it (a member of its request's structure, a
 * local of a fiber): uvp allocates nothing for it.  Read tc and
 * parent_id; the rest is uvp's. */
typedef struct uvp_span_s {
  /** The span's own context: its trace's id, a fresh span id, the
   * parent's flags.  A request the span stands for sends this as its
   * `traceparent`. */
  uvp_tracectx_t tc;
  uint8_t parent_id[8]; /**< the parent span's id; all zero: a root */
  uint64_t start_ns;    /**< uvp's: uv_hrtime() at its beginning */
  uintptr_t rec;        /**< uvp's: the recorder's key (0: not recorded) */
  int kind;             /**< uvp's: its UVP_SPAN_* */
  int ended;            /**< uvp's: uvp_span_end was called */
} uvp_span_t;

/** Begin span `name` (copied into the recorder; any lifetime, NULL: "")
 * of `kind` (UVP_SPAN_*) into *span, as a child of `parent` (NULL: the
 * current scope's trace context).  Its id comes from a generator seeded
 * once per thread from the system's randomness (uv_random).  A child
 * keeps its parent's UVP_TRACE_SAMPLED and UVP_TRACE_RANDOM (the other
 * flag bits are reserved: zero, as Trace Context Level 2 asks); a new
 * trace (UVP_SPAN_NEW_TRACE) has both, its trace id being random.  The current
 * scope is left as it was: uvp_span_enter makes what follows run in the
 * span.  The recorder, when on with UVP_RECORD_SPANS, records the
 * beginning (trace id, span id, parent id, kind, name).  Loop thread.
 * Returns 0, or UV_ENOENT (no parent given, none in the current scope,
 * and no UVP_SPAN_NEW_TRACE: *span untouched), UV_EINVAL (NULL ctx or
 * span, kind out of range, an all-zero id in parent, unknown flags),
 * UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_span_begin(uvp_ctx_t *ctx, uvp_span_t *span,
                              const char *name, int kind,
                              const uvp_tracectx_t *parent, unsigned int flags);
/** End span: the recorder records its end with `status` (0, or the
 * negative error code the work it stands for failed with).  A span is
 * ended once; ending it again does nothing and returns UV_EALREADY.
 * Loop thread.  Errors: UV_EINVAL (NULL ctx or span), UVP_ETHREAD;
 * after uvp_ctx_close it returns UVP_ECLOSED and records nothing. */
UVP_EXTERN int uvp_span_end(uvp_ctx_t *ctx, uvp_span_t *span, int status);
/** Make the current scope run in span: uvp_tracectx_set(ctx, &span->tc,
 * the current scope's tracestate), so that what is started from here is
 * its child (a served request's handler calls it first).  Errors: as
 * uvp_tracectx_set's. */
UVP_EXTERN int uvp_span_enter(uvp_ctx_t *ctx, const uvp_span_t *span);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_TRACING */

/* Private to src/: the one hook for a layer that watches the core's work
 * (and the trace context's spans),
 * the flight recorder (recorder.h), which sits above the core.  The core
 * tells it what happens through the table the recorder puts in the
 * context's head when it is first turned on (uvp__head(ctx)->watch_hook),
 * as the stall detector's marks are: the core names none of the
 * recorder's functions or types.  Told only while the head's
 * UVP__WATCH_REC bit is set, so that off, each place that tells costs the
 * test of that byte, as before. */
#ifndef UVP_WATCH_H
#define UVP_WATCH_H

#include "head.h"

/* What the core tells, with the arguments each passes (a, b, file, n of
 * the hook's heard: six, in registers). */
enum {
  /* Work started through the door: a = its record (work-door.h's
   * uvp__work_t), b = the scope that watches it (or NULL), file:n its
   * site.  WORK_END: a = the record, ended. */
  UVP__HEARD_WORK_START,
  UVP__HEARD_WORK_END,
  /* a = a pending promise just given a described cancel hook
   * (uvp__promise_described says what it is). */
  UVP__HEARD_DESCRIBED,
  /* a = a promise with a cancel hook, settling with code n (0:
   * fulfilled), its hook still in place. */
  UVP__HEARD_SETTLE,
  /* a = a promise cut with code n by cause b (cause.h), its hook still in
   * place. */
  UVP__HEARD_CUT,
  /* a = a cause (cause.h) whose cancellation begins. */
  UVP__HEARD_CAUSE,
  /* The loop applied another thread's message: a = its promise, n its op
   * (UVP__MSG_*), b its code (as an intptr_t). */
  UVP__HEARD_MAIL,
  /* The loop's turn: uvp's check callback, its idle callback (a drain),
   * the end of either. */
  UVP__HEARD_CHECK,
  UVP__HEARD_IDLE,
  UVP__HEARD_UVP_END,
  /* A span (tracectx.c) begins: a = the span, b = its name ("": none).
   * SPAN_END: a = the span, n its status. */
  UVP__HEARD_SPAN_BEGIN,
  UVP__HEARD_SPAN_END
};

/* The watcher's table. */
typedef struct uvp__watch_hook_s {
  void (*heard)(uvp_ctx_t *ctx, int what, const void *a, const void *b,
                const char *file, int n);
  /* Its prepare handle, for uvp_ctx_close (NULL: not open). */
  uv_handle_t *(*handle)(uvp_ctx_t *ctx);
} uvp__watch_hook_t;

/* Whether the recorder watches ctx now: the test every place makes first. */
static inline bool uvp__recording(const uvp_ctx_t *ctx) {
  return UVP__UNLIKELY(uvp__head(ctx)->watch & UVP__WATCH_REC);
}
/* Tell the recorder `what` (behind uvp__recording(ctx)). */
static inline void uvp__tell(uvp_ctx_t *ctx, int what, const void *a,
                             const void *b, int n) {
  uvp__head(ctx)->watch_hook->heard(ctx, what, a, b, NULL, n);
}
/* The same, with a site. */
static inline void uvp__tell_at(uvp_ctx_t *ctx, int what, const void *a,
                                const void *b, const char *file, int line) {
  uvp__head(ctx)->watch_hook->heard(ctx, what, a, b, file, line);
}

/* What pending p's described cancel hook says it waits for
 * (uvp_promise_set_cancel_described): true and its kind, describe and
 * arg, or false if p has none (settled, no hook, a hook of uvp's own).
 * For the recorder, which asks while p's hook can still say. */
bool uvp__promise_described(const uvp_promise_t *p, const char **kind,
                            uvp_describe_cb *describe, void **arg);

#endif

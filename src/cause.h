/* Private to src/: the causes of cancellations (uvp_cause_t, uvp.h).
 *
 * A cause is made once per cancellation that has one to tell (a deadline
 * passing, a group's cancel, a FAIL_FAST failure, a decided race with
 * UVP_CANCEL_LOSERS, uvp_promise_cancel_with): one allocation, counted,
 * shared by every promise it cuts.  Those that say nothing particular
 * (uvp_promise_cancel, uvp_ctx_close) are static and never counted, so a
 * plain cancel allocates nothing; so is a fallback of each kind, used when
 * there is no memory for the details.
 *
 * Where a cut promise keeps it: promise.h (UVP__F_CAUSE).  How it reaches
 * what a cancellation cuts: the context's `cause` (head.h) names
 * the cause of the cancellation running now; every promise rejected by a
 * cancellation while it is set takes it, so a cancel hook, a combinator or
 * a group cancelling more on the way is covered without being told. */
#ifndef UVP_CAUSE_H
#define UVP_CAUSE_H

#include "watch.h"

typedef struct uvp__cause_s {
  uvp_cause_t pub;       /* first: what uvp_promise_cause returns */
  uint32_t refs;         /* 0: static, never freed */
  uvp_free_cb data_free; /* pub.message's copy follows, when it has one */
} uvp__cause_t;

/* Static causes: uvp_promise_cancel's and uvp_ctx_close's. */
extern uvp__cause_t uvp__cause_program;
extern uvp__cause_t uvp__cause_closed;

/* A counted cause like `proto` (message copied, may be NULL), one
 * reference; with no memory, the static fallback of its kind (then
 * data_free(data) runs at once, if given: nothing could keep it). */
uvp__cause_t *uvp__cause_new(const uvp_cause_t *proto, uvp_free_cb data_free);

static inline uvp__cause_t *uvp__cause_ref(uvp__cause_t *c) {
  if (c->refs != 0)
    c->refs++;
  return c;
}
void uvp__cause_unref(uvp__cause_t *c);

/* Notes.  A promise uvp produces that settled because of something outside
 * the program (a peer closing its connection, a child exiting) may say so
 * to the cuts it decides: a race's losers (combinators.c) carry its note in
 * their cause's message.  The note is a record like a cause, kept where a
 * cause is (fn.cause, with UVP__F_CAUSE and UVP__F_NOTE: promise.h), so it
 * costs a settled promise no room; the value's notifier moves into it
 * (data_free with data the value), and runs as the promise is freed, as it
 * would have.  uvp_promise_cause never answers a note. */

/* Run a cancellation with cause c (not taken): what it cuts takes c. */
static inline uvp__cause_t *uvp__cause_enter(uvp_ctx_t *ctx, uvp__cause_t *c) {
  uvp__cause_t *outer = uvp__head(ctx)->cause;
  uvp__head(ctx)->cause = c;
  /* The recorder links what it cuts to its beginning here. */
  if (c != outer && c != NULL && uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_CAUSE, c, NULL, 0);
  return outer;
}
static inline void uvp__cause_leave(uvp_ctx_t *ctx, uvp__cause_t *outer) {
  uvp__head(ctx)->cause = outer;
}

#endif

/* Private to src/: the mailbox of a context as a layer above the core sees
 * it (inflight.c: a binding's record that ends on another thread), and as
 * the core declares it (context.h; the core's own posts and the reading of
 * the mail are there). */
#ifndef UVP_MAIL_H
#define UVP_MAIL_H

#include "sched.h"

/* A message in the context's mailbox, from another thread to the loop
 * thread.  The core's settles and releases are allocated by the post; a
 * layer's call (uvp__post_call) is one the layer keeps in its own memory,
 * so that posting it cannot fail. */
typedef struct uvp__msg_s {
  struct uvp__msg_s *next;
  uvp_promise_t *p;
  int op;
  int code;
  void *value;
  uvp_free_cb free_cb;
} uvp__msg_t;

/* Work that may end on another thread (a binding's record, inflight.c) is
 * in flight: its layer counts it and says when the count leaves 0
 * (`held` true) and comes back (false).  While it is held the mailbox
 * stays open after uvp_ctx_close (the context's async closes as the hold
 * goes), so that such an end can still be posted.  uvp__mail_keep, the
 * same for the part of that work that keeps uv_run() going: the async is
 * referenced meanwhile, as a libuv request in flight keeps the loop.  Loop
 * thread; called only as the counts cross 0, so a record pays the layer's
 * two additions. */
void uvp__mail_hold(uvp_ctx_t *ctx, bool held);
void uvp__mail_keep(uvp_ctx_t *ctx, bool kept);
/* From another thread, while a hold (above) is kept for the work it ends:
 * fn(arg) runs on the loop thread, in the mailbox's order (after what this
 * thread posted before), also after uvp_ctx_close.  m is the caller's
 * until fn runs; the mailbox writes it, fn may reuse it. */
void uvp__post_call(uvp_ctx_t *ctx, uvp__msg_t *m, uvp_free_cb fn, void *arg);

#endif

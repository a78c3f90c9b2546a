/* The door for bindings' work in flight (uvp_inflight_t, include/uvp/groups.h):
 * the public face of uvp's own door (work-door.h).  The record embeds a
 * uvp__work_t, whose class forwards a cut to the public class's cancel and
 * the task dump's question to its kind and describe; so the binding's work
 * is told to its scope's owner, deadline, the virtual clock and the
 * context's count exactly as an operation's is, and the dump finds it,
 * with its group, through the promise's record.
 *
 * The record keeps a reference to the promise from start to end, so the
 * end can tell whether it is still pending and take its hook back: a hook
 * left behind would call into a record its owner has freed. */
#include <stddef.h>
#include <stdio.h>

#include "work-door.h"

enum { W_IDLE = 0, W_STARTED = 1, W_ENDED = 2 };

_Static_assert(sizeof(((uvp_inflight_t *)0)->work_) >= sizeof(uvp__work_t),
               "uvp_inflight_t holds a record of work");
_Static_assert(_Alignof(uvp_inflight_t) >= _Alignof(uvp__work_t),
               "... aligned");

static uvp__work_t *work_of(uvp_inflight_t *w) {
  return (uvp__work_t *)(void *)w->work_;
}
static uvp_inflight_t *inflight_of(const uvp__work_t *work) {
  return (uvp_inflight_t *)(void *)((char *)(uintptr_t)work -
                                    offsetof(uvp_inflight_t, work_));
}

static void on_cancel(uvp__work_t *work, uvp_promise_t *p, int code) {
  uvp_inflight_t *w = inflight_of(work);
  (void)p;
  w->cls_->cancel(w, code);
}

static void on_describe(const uvp__work_t *work, uvp__what_t *what) {
  uvp_inflight_t *w = inflight_of(work);
  snprintf(what->kind, sizeof(what->kind), "%s", w->cls_->kind);
  what->owner = uvp__work_owner(work);
  if (w->cls_->describe == NULL)
    return;
  int n = w->cls_->describe(w, what->target, sizeof(what->target));
  if (n < 0)
    snprintf(what->target, sizeof(what->target), "(its description failed: %d)",
             n);
  else /* its length, whether or not it wrote a NUL */
    what->target[(size_t)n < sizeof(what->target) ? (size_t)n
                                                  : sizeof(what->target) - 1] =
        '\0';
}

/* By UVP_INFLIGHT_IDLE. */
static const uvp__work_class_t classes[2] = {
    {on_cancel, on_describe, "binding", 0},
    {on_cancel, on_describe, "binding", UVP__WORK_IDLE}};

static int check_start(uvp_ctx_t *ctx, const uvp_inflight_t *w,
                       const uvp_promise_t *p,
                       const uvp_inflight_class_t *cls) {
  if (w == NULL || p == NULL || cls == NULL || cls->kind == NULL ||
      cls->cancel == NULL || (cls->flags & ~UVP_INFLIGHT_IDLE) != 0 ||
      w->state_ == W_STARTED)
    return UV_EINVAL;
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (uvp__promise_ctx(p) != ctx)
    return UVP_EXCTX;
  if (!uvp__is_pending(p))
    return UVP_ESETTLED;
  if (p->flags & (UVP__F_CANCEL | UVP__F_OWNED | UVP__F_WAITING))
    return UV_EBUSY;
  return 0;
}

int uvp_inflight_start(uvp_ctx_t *ctx, uvp_inflight_t *w, uvp_promise_t *p,
                       const uvp_inflight_class_t *cls) {
  int rc = check_start(ctx, w, p, cls);
  if (rc != 0)
    return rc;
  w->cls_ = cls;
  rc = uvp__work_attach(ctx, work_of(w), p,
                        &classes[(cls->flags & UVP_INFLIGHT_IDLE) ? 1 : 0]);
  if (rc != 0)
    return rc;
  uvp__retain_local(p);
  w->state_ = W_STARTED;
  return 0;
}

void uvp_inflight_end(uvp_inflight_t *w) {
  if (w == NULL || w->state_ != W_STARTED)
    return;
  uvp__work_t *work = work_of(w);
  uvp_promise_t *p = work->p; /* our reference: its context lives */
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  w->state_ = W_ENDED;
  work->p = NULL;
  if (uvp__work_of(p) == work) /* pending, its hook ours */
    uvp__promise_hook_clear(p);
  bool in_loop = uvp__work_done_but_loop(ctx, work); /* may settle a join */
  uvp_promise_release(p);
  if (in_loop)
    uvp__loop_work_end(ctx); /* last: may free a closed context */
}

/* The door for bindings' work in flight (uvp_inflight_t, include/uvp/groups.h):
 * one record whose start and end do what uvp's own operations do around
 * their libuv requests (op.c): the scope's owner counts the work, the
 * scope's deadline watches the promise, the virtual clock keeps the loop's
 * pace, the context counts it as work in the loop, and the promise's cancel
 * hook is described for the task dump.
 *
 * The promise's hook is the class's cancel through a box (promise.c's
 * described hook); the record is the box's argument.  The record keeps a
 * reference to the promise from start to end, so the end can tell whether
 * it is still pending and take its hook back: a hook left behind would
 * call into a record its owner has freed. */
#include "promise.h"
#include "scope.h"

enum { W_IDLE = 0, W_STARTED = 1, W_ENDED = 2 };

static void on_cancel(uvp_promise_t *p, void *arg) {
  uvp_inflight_t *w = arg;
  w->cls_->cancel(w, p->state == UVP__S_REJECTED ? p->code : UV_ECANCELED);
}

static int on_describe(void *arg, char *buf, size_t cap) {
  uvp_inflight_t *w = arg;
  return w->cls_->describe(w, buf, cap);
}

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
  rc = uvp_promise_set_cancel_described(p, on_cancel, w, NULL, cls->kind,
                                        cls->describe != NULL ? on_describe
                                                              : NULL);
  if (rc == 0 && (rc = uvp__scope_watch(ctx, p)) != 0)
    (void)uvp_promise_set_cancel(p, NULL, NULL);
  if (rc != 0)
    return rc;
  w->ctx_ = ctx;
  w->p_ = uvp_promise_retain(p);
  w->owner_ = uvp__work_begin(ctx);
  uvp__hook_set_owner(p, w->owner_);
  w->state_ = W_STARTED;
  if (UVP__UNLIKELY(uvp__head(ctx)->vclock) &&
      !(cls->flags & UVP_INFLIGHT_IDLE))
    uvp__head(ctx)->real_work++;
  uvp__loop_work_begin(ctx);
  return 0;
}

void uvp_inflight_end(uvp_inflight_t *w) {
  if (w == NULL || w->state_ != W_STARTED)
    return;
  uvp_ctx_t *ctx = w->ctx_;
  uvp_promise_t *p = w->p_;
  w->state_ = W_ENDED;
  w->p_ = NULL;
  if (uvp__is_pending(p))
    (void)uvp_promise_set_cancel(p, NULL, NULL);
  if (UVP__UNLIKELY(uvp__head(ctx)->vclock) &&
      !(w->cls_->flags & UVP_INFLIGHT_IDLE))
    uvp__head(ctx)->real_work--;
  uvp__owner_t *o = w->owner_;
  w->owner_ = NULL;
  uvp__work_end(o); /* may settle a group's join */
  uvp_promise_release(p);
  uvp__loop_work_end(ctx); /* last: may free a closed context */
}

/* The promise core, second half: reactions.  Registering them, running
 * them from the run queue (handlers, finally, adoption, internal observers
 * and cells), and dropping those that will never run.  The invariants are
 * at the top of promise.c. */
#include "core.h"

static inline bool rk_finally(uvp__rkind_t k) {
  return k == UVP__RK_THEN_FINALLY || k == UVP__RK_ON_FINALLY;
}
/* Whether a user handler of kind k wants a fulfilment (ok) or rejection. */
static inline bool rk_wants(uvp__rkind_t k, bool ok) {
  unsigned mask;
  switch (k) {
  case UVP__RK_THEN_FULFILLED:
  case UVP__RK_ON_FULFILLED:
    mask = UVP_ON_FULFILLED;
    break;
  case UVP__RK_THEN_REJECTED:
  case UVP__RK_ON_REJECTED:
    mask = UVP_ON_REJECTED;
    break;
  case UVP__RK_FOLLOW:
    mask = 0;
    break;
  default:
    mask = UVP_ON_BOTH;
    break;
  }
  return (mask & (ok ? UVP_ON_FULFILLED : UVP_ON_REJECTED)) != 0;
}

typedef uvp__hbox_t hbox_t;

/* The marker: a box is always opened before its handler runs. */
uvp_ret_t uvp__boxed(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  UVP__CHECK(!"a boxed handler is opened before it runs");
  return uvp_ret_pass();
}

/* Put h's callback and argument in a box with arg_free and the current
 * scope.  False for want of a slot. */
static bool box_handler(uvp_ctx_t *ctx, uvp__handler_t *h,
                        uvp_free_cb arg_free) {
  hbox_t *b = uvp__pool_get(&ctx->reactions);
  if (b == NULL)
    return false;
  *b = (hbox_t){h->cb.then, h->arg, arg_free, uvp__scope_capture(ctx)};
  h->cb.then = uvp__boxed;
  h->arg = b;
  return true;
}

/* A handler running cb(arg) for target, boxed (box_handler) when `box`;
 * NULL for want of a slot. */
static inline uvp__handler_t *handler_new(uvp_ctx_t *ctx, uvp__rkind_t kind,
                                          void *target, uvp_then_cb cb,
                                          void *arg, uvp_free_cb arg_free,
                                          bool box) {
  uvp__handler_t *h = handler_alloc(ctx, kind, target, arg);
  if (UVP__UNLIKELY(h == NULL))
    return NULL;
  h->cb.then = cb;
  if (UVP__UNLIKELY(box) && !box_handler(ctx, h, arg_free)) {
    uvp__pool_put(&ctx->reactions, h);
    return NULL;
  }
  return h;
}

/* A taken handler's source (UVP_ON_TAKE) loses the handler's reference.
 * Never the last: whoever opens the handler holds another (the run
 * queue's, the sweep's, uvp__stop_waiting's).  Out of line, so that the
 * plain handler's path keeps its registers. */
static UVP__NOINLINE void let_go_held(uvp__rkind_t kind, uvp_promise_t *t) {
  uvp__unref(rk_derived(kind) ? t->link : t);
}

/* h's callback, argument, notifier and scope (the caller runs the
 * notifier and holds the scope's reference); a box goes back, and so does
 * a taken handler's reference to its source.  t is h's target. */
static inline hbox_t open_handler(uvp_ctx_t *ctx, const uvp__handler_t *h,
                                  uvp__rkind_t kind, uvp_promise_t *t) {
  if (UVP__LIKELY(h->cb.then != uvp__boxed))
    return (hbox_t){h->cb.then, h->arg, NULL, NULL};
  hbox_t *b = uvp__hbox_of(h), out = *b;
  uvp__pool_put(&ctx->reactions, b);
  if ((uintptr_t)h->arg & UVP__HBOX_HELD)
    let_go_held(kind, t);
  return out;
}

/* Drop a reaction that will never run.  A queued one also held its source. */
void uvp__drop_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r, bool queued) {
  uvp__rkind_t kind = uvp__rkind(r);
  if (kind == UVP__RK_CELL) {
    uvp__cell_t *cell = (uvp__cell_t *)(void *)r;
    uvp__cell_owner_t *o = uvp__rtarget(r);
    uvp_promise_t *src = cell->source; /* run may free the owner */
    o->ops->run(o, (size_t)(cell - o->cells), NULL);
    if (queued)
      uvp__unref(src);
    return;
  }
  uvp__handler_t *h = (uvp__handler_t *)(void *)r;
  uvp_promise_t *t = uvp__rtarget(r);
  uvp__notify_cb notify = h->cb.notify;
  hbox_t o = open_handler(ctx, h, kind, t);
  void *arg = o.arg;
  if (kind != UVP__RK_NOTIFY_EMBEDDED)
    uvp__pool_put(&ctx->reactions, h);
  if (o.arg_free != NULL)
    o.arg_free(arg); /* the handler will never run */
  uvp__scope_unref(o.scope);
  if (!rk_derived(kind)) {
    if (kind >= UVP__RK_NOTIFY)
      notify(arg, NULL);
    if (queued)
      uvp__unref(t);
    return;
  }
  if (queued)
    uvp__unref(t->link);
  if (t->state == UVP__S_PENDING && (t->flags & UVP__F_WAITING)) {
    /* What t followed is gone unsettled: like JavaScript, t stays pending
     * and already resolved forever (only cancel or teardown settle it).
     * `link` would dangle: it names the mark that says so instead. */
    t->flags = (uint8_t)((t->flags & ~UVP__F_WAITING) | UVP__F_OWNED);
    t->link = &uvp__source_lost;
  }
  uvp__unref(t);
}

void uvp__drop_reactions(uvp_ctx_t *ctx, uvp_promise_t *p) {
  uvp__reaction_t *r = p->reactions;
  p->reactions = NULL;
  p->flags &= (uint8_t)~UVP__F_MANY;
  while (r != NULL) {
    uvp__reaction_t *next = r->next;
    uvp__drop_reaction(ctx, r, false);
    r = next;
  }
}

bool uvp__sole_consumer(const uvp_promise_t *q, const void *who) {
  if (q->reactions == NULL)
    return false;
  /* A reaction without a derived promise targets q itself, never `who`. */
  for (const uvp__reaction_t *r = q->reactions; r != NULL; r = r->next)
    if (uvp__rtarget(r) != who)
      return false;
  return true;
}

bool uvp__only_observer(const uvp_promise_t *q, const void *arg) {
  const uvp__reaction_t *r = q->reactions;
  return r != NULL && r->next == NULL &&
         (uvp__rkind(r) == UVP__RK_NOTIFY ||
          uvp__rkind(r) == UVP__RK_NOTIFY_EMBEDDED) &&
         ((const uvp__handler_t *)(const void *)r)->arg == arg;
}

/* ---- reactions ----------------------------------------------------------- */

/* Inline in each entry point: then() is the call every chain makes.
 * `take`: the handler holds the caller's reference to p (UVP_ON_TAKE). */
static UVP__ALWAYS_INLINE int
add_reaction(uvp_promise_t *p, uvp__rkind_t kind, uvp_then_cb cb, void *arg,
             uvp_free_cb arg_free, uvp_promise_t **out, const char *file,
             int line, bool take) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  int rc = uvp__ctx_check(ctx);
  if (UVP__UNLIKELY(rc != 0))
    return rc;
  if (is_freed(p)) {
    uvp__misuse(p, "a handler's registration");
    return UV_EINVAL;
  }
  uvp_promise_t *d = NULL;
  uvp_promise_t *target = p;
  if (out != NULL) {
    d = promise_alloc(ctx, file, line);
    if (UVP__UNLIKELY(d == NULL))
      return UV_ENOMEM;
    d->refs = 2; /* the caller's and the reaction's */
    d->link = p;
    d->flags = UVP__F_WAITING;
    if (UVP__UNLIKELY(ctx->h.traces))
      d->trace = uvp__trace_intern(ctx, d->site, UVP__TK_THEN, p->trace);
    target = d;
  } else {
    kind += UVP__RK_ON_FULFILLED - UVP__RK_THEN_FULFILLED;
  }
  uvp__handler_t *h =
      handler_new(ctx, kind, target, cb, arg, arg_free,
                  take || arg_free != NULL || ctx->h.scope != NULL);
  if (UVP__UNLIKELY(h == NULL)) {
    if (d != NULL) {
      d->refs = 1;
      d->flags = 0;
      uvp__unref_open(d);
    }
    return UV_ENOMEM;
  }
  if (take) /* the caller's reference is the handler's now */
    h->arg = (void *)((uintptr_t)h->arg | UVP__HBOX_HELD);
  uvp__attach(p, &h->r);
  if (out != NULL)
    *out = d;
  return 0;
}

/* uvp_promise_on and _full off the path of a plain mask: finally's, a
 * taking one (UVP_ON_TAKE), a bad one.  A taking call owns p whatever it
 * returns; a negative mask is garbage, not a take (-1 has every bit). */
static UVP__NOINLINE int on_other(uvp_promise_t *p, int mask, uvp_then_cb cb,
                                  void *arg, uvp_free_cb arg_free,
                                  uvp_promise_t **out, const char *file,
                                  int line) {
  bool take = mask > 0 && (mask & UVP_ON_TAKE) != 0;
  int kind = mask & ~UVP_ON_TAKE;
  int rc = UV_EINVAL;
  /* The THEN kinds are the masks themselves (see reaction.h). */
  if (p != NULL && kind >= UVP_ON_FULFILLED && kind <= UVP_ON_FINALLY)
    rc = add_reaction(p, (uvp__rkind_t)kind, cb, arg, arg_free, out, file, line,
                      take);
  /* A freed p was reported by the registration; it has nothing to take. */
  if (take && rc != 0 && p != NULL && !is_freed(p))
    uvp_promise_release(p);
  return rc;
}

/* A handler's common case: a plain mask (the handler's kind), its source
 * pending, an open context without traces or a scope to capture, and the
 * slots and the derived promise's site at hand.  Nothing is committed
 * until all of that is known, so that where it answers false the general
 * way (add_reaction) starts over; and it makes no call, so that the entry
 * points need no stack frame (docs/internals/core.md has the figures). */
static UVP__ALWAYS_INLINE bool add_plain(uvp_promise_t *p, uvp__rkind_t kind,
                                         uvp_then_cb cb, void *arg,
                                         uvp_promise_t **out, const char *file,
                                         int line) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  /* A freed p is not pending: the general way reports it. */
  if (UVP__UNLIKELY(ctx == NULL || !ctx_plain(ctx) || ctx->h.scope != NULL ||
                    p->state != UVP__S_PENDING))
    return false;
  uvp_promise_t *target = p, *d = NULL;
  if (out != NULL) {
    const uvp__site_entry_t *site = uvp__site_first(&ctx->sites, file, line);
    if (UVP__UNLIKELY(site == NULL ||
                      (d = uvp__pool_try(&ctx->promises)) == NULL))
      return false;
    promise_init(ctx, d, site->id, 0);
    d->refs = 2; /* the caller's and the reaction's */
    d->link = p;
    d->flags = UVP__F_WAITING;
    target = d;
  } else {
    kind += UVP__RK_ON_FULFILLED - UVP__RK_THEN_FULFILLED;
  }
  uvp__handler_t *h = uvp__pool_try(&ctx->reactions);
  if (UVP__UNLIKELY(h == NULL)) {
    if (d != NULL) { /* never seen: its slot goes back as it came */
      ctx->pending--;
      uvp__pool_unget(&ctx->promises, d);
    }
    return false;
  }
  h->r.target = uvp__rtag(target, kind);
  h->cb.then = cb;
  h->arg = arg;
  p->flags |= UVP__F_HANDLED;
  push_reaction(p, &h->r);
  if (out != NULL)
    *out = d;
  return true;
}

/* The entry points' general way, each with its entry point's arguments,
 * so that the entry point goes there by a jump. */
static UVP__ALWAYS_INLINE int on_any(uvp_promise_t *p, int mask, uvp_then_cb cb,
                                     void *arg, uvp_free_cb arg_free,
                                     uvp_promise_t **out, const char *file,
                                     int line) {
  if (UVP__UNLIKELY(p == NULL || (unsigned)mask - 1u >= UVP_ON_BOTH))
    return on_other(p, mask, cb, arg, arg_free, out, file, line);
  return add_reaction(p, (uvp__rkind_t)mask, cb, arg, arg_free, out, file, line,
                      false);
}
static UVP__NOINLINE int on_full_general(uvp_promise_t *p, int mask,
                                         uvp_then_cb cb, void *arg,
                                         uvp_free_cb arg_free,
                                         uvp_promise_t **out, const char *file,
                                         int line) {
  return uvp__refuse(on_any(p, mask, cb, arg, arg_free, out, file, line), arg,
                     arg_free);
}
static UVP__NOINLINE int on_general(uvp_promise_t *p, int mask, uvp_then_cb cb,
                                    void *arg, uvp_promise_t **out,
                                    const char *file, int line) {
  return on_any(p, mask, cb, arg, NULL, out, file, line);
}

int uvp_promise_on_full_at(uvp_promise_t *p, int mask, uvp_then_cb cb,
                           void *arg, uvp_free_cb arg_free, uvp_promise_t **out,
                           const char *file, int line) {
  if (UVP__LIKELY(p != NULL && (unsigned)mask - 1u < UVP_ON_BOTH &&
                  arg_free == NULL &&
                  add_plain(p, (uvp__rkind_t)mask, cb, arg, out, file, line)))
    return 0;
  return on_full_general(p, mask, cb, arg, arg_free, out, file, line);
}

int uvp_promise_on_at(uvp_promise_t *p, int mask, uvp_then_cb cb, void *arg,
                      uvp_promise_t **out, const char *file, int line) {
  if (UVP__LIKELY(p != NULL && (unsigned)mask - 1u < UVP_ON_BOTH &&
                  add_plain(p, (uvp__rkind_t)mask, cb, arg, out, file, line)))
    return 0;
  return on_general(p, mask, cb, arg, out, file, line);
}

int uvp_promise_finally_full_at(uvp_promise_t *p, uvp_then_cb cb, void *arg,
                                uvp_free_cb arg_free, uvp_promise_t **out,
                                const char *file, int line) {
  if (p == NULL)
    return uvp__refuse(UV_EINVAL, arg, arg_free);
  return uvp__refuse(add_reaction(p, UVP__RK_THEN_FINALLY, cb, arg, arg_free,
                                  out, file, line, false),
                     arg, arg_free);
}

int uvp_promise_finally_at(uvp_promise_t *p, uvp_then_cb cb, void *arg,
                           uvp_promise_t **out, const char *file, int line) {
  return uvp_promise_finally_full_at(p, cb, arg, NULL, out, file, line);
}

/* d, waiting on its pending source for a handler or an adoption, was
 * cancelled: it stops waiting.  The reaction it waited through leaves the
 * source's list now and is dropped (the handler's notifier runs, the
 * reaction's reference on d goes), so the source has one consumer less:
 * cancelling its last consumer cancels it too (uvp_promise_cancel's rule,
 * which counts the reactions on the list), and a long-lived source keeps
 * no dead reaction per waiter cancelled. */

/* Take the reaction at *at off q's list. */
static void unlink_at(uvp_promise_t *q, uvp__reaction_t **at) {
  *at = (*at)->next;
  if (q->reactions == NULL || q->reactions->next == NULL)
    q->flags &= (uint8_t)~UVP__F_MANY;
}

void uvp__stop_waiting(uvp_promise_t *d) {
  uvp_promise_t *src = d->link;
  for (uvp__reaction_t **at = &src->reactions; *at != NULL; at = &(*at)->next) {
    uvp__reaction_t *r = *at;
    if (uvp__rtarget(r) != d || !rk_derived(uvp__rkind(r)))
      continue;
    unlink_at(src, at);
    /* A taken handler lets go of src as it is dropped: src, if that was
     * its last reference, goes once the drop is over. */
    uvp__retain_local(src);
    uvp__drop_reaction(uvp__promise_ctx(d), r, false);
    uvp__unref(src);
    return;
  }
}

/* ---- running a reaction -------------------------------------------------- */

/* Report a rejection nobody can observe any more.  The hook receives a
 * temporary promise valid only during the call, as documented. */
static void report_lost(uvp_promise_t *src, int code, void *payload,
                        bool passed) {
  uvp_promise_t tmp = *src;
  if (!passed) { /* a new rejection, not src's quiet one passed on */
    tmp.flags &= (uint8_t) ~(UVP__F_QUIET | UVP__F_CAUSE | UVP__F_FORWARD);
    tmp.fn.free_cb = NULL;
  } /* else src's cause, if any, is the rejection's (never freed here) */
  tmp.state = UVP__S_REJECTED;
  tmp.code = code;
  tmp.value = payload;
  tmp.refs = 1;
  uvp__report_unhandled(&tmp);
}

/* Throw away what a handler returned when no promise can take it.  A
 * rejection is reported if `report`, unless it is src's own and a handler
 * saw it (`seen`). */
static void discard(const uvp_ret_t *ret, uvp_promise_t *src, bool report,
                    bool seen) {
  switch (ret->kind_) {
  case UVP_RET_VALUE_:
    if (ret->free_ != NULL)
      ret->free_(ret->ptr_);
    break;
  case UVP_RET_REJECT_:
    if (report)
      report_lost(src, ret->code_ < 0 ? ret->code_ : UV_EINVAL, ret->ptr_,
                  false);
    if (ret->free_ != NULL)
      ret->free_(ret->ptr_);
    break;
  case UVP_RET_ADOPT_:
    if (ret->promise_ != NULL)
      uvp__unref(ret->promise_);
    break;
  case UVP_RET_PASS_:
    if (report && !seen && src->state == UVP__S_REJECTED)
      report_lost(src, src->code, src->value, true);
    break;
  default:
    break;
  }
}

/* A handler returned q, a movable producer's fresh promise (F_MOVABLE) that
 * nothing observes and nobody else holds: its references are the
 * producer's and the one the handler handed over.  Adopting q would cost a
 * reaction, a trip through the run queue and a forward when it settles, on
 * every step of a chain like stat -> open -> read -> close.  Instead d
 * takes q's place: the producer settles d itself, and cancelling d runs
 * its hook, as cancelling d would have cancelled q (its sole consumer).  q
 * is left with the handler's reference, which the caller drops. */
static bool take_over(uvp_promise_t *d, uvp_promise_t *q) {
  /* F_MOVABLE implies pending: settling clears it. */
  if (!(q->flags & UVP__F_MOVABLE) || q->refs != 2 || q->reactions != NULL ||
      !uvp__same_ctx(q, d) || (d->flags & UVP__F_CANCEL))
    return false;
  uvp_promise_t **slot = q->value; /* the producer's pointer to q */
  if (*slot != q)
    return false;
  *slot = d;
  d->value = slot;
  d->fn.cancel_cb = q->fn.cancel_cb;
  d->link = NULL;
  d->flags |= UVP__F_OWNED | UVP__F_CANCEL | UVP__F_MOVABLE;
  d->refs++; /* the producer's */
  q->flags &= (uint8_t) ~(UVP__F_CANCEL | UVP__F_MOVABLE);
  q->value = NULL;
  q->fn.cancel_cb = NULL;
  q->refs--;
  return true;
}

/* Whether d, a handler's derived promise, still waits for that handler
 * (cancelled or torn down since its reaction was queued, it does not). */
static inline bool waits_on_src(const uvp_promise_t *d,
                                const uvp_promise_t *src) {
  return d->state == UVP__S_PENDING && (d->flags & UVP__F_WAITING) &&
         d->link == src;
}

/* Settle d as the handler's result says.  By pointer: passed by value, the
 * result was copied with wide loads that its narrow stores could not
 * forward to, so each copy waited for those stores, and every older one
 * (a combinator's store into a cold result array), to reach the cache. */
static void apply(uvp_promise_t *d, uvp_promise_t *src, const uvp_ret_t *ret,
                  bool seen) {
  if (d == NULL) {
    discard(ret, src, true, seen);
    return;
  }
  if (!waits_on_src(d, src)) {
    discard(ret, src, false, seen);
    return;
  }
  d->flags &= (uint8_t)~UVP__F_WAITING;
  switch (ret->kind_) {
  case UVP_RET_VALUE_:
    fulfill(d, ret->ptr_, ret->free_);
    break;
  case UVP_RET_REJECT_:
    reject(d, ret->code_ < 0 ? ret->code_ : UV_EINVAL, ret->ptr_, ret->free_);
    break;
  case UVP_RET_ADOPT_:
    if (ret->promise_ == NULL) {
      reject(d, UV_EINVAL, NULL, NULL);
    } else {
      if (!take_over(d, ret->promise_))
        uvp__adopt(d, ret->promise_);
      uvp__unref(ret->promise_);
    }
    break;
  case UVP_RET_PASS_:
    uvp__forward(d, src);
    break;
  default:
    reject(d, UV_EINVAL, NULL, NULL);
    break;
  }
}

/* After finally's handler adopted a promise: settle like the original
 * outcome (arg) unless the adopted promise rejected. */
static uvp_ret_t finally_after(void *arg, const uvp_outcome_t *in) {
  uvp_promise_t *orig = arg;
  if (in->status != 0)
    return uvp_ret_pass();
  uvp__retain_local(orig); /* the adoption's: run by the drain, ctx open */
  return uvp_ret_adopt(orig);
}

/* finally_after's notifier: the reference on the original promise goes
 * whether finally_after runs or its reaction is dropped unrun. */
static void release_orig(void *orig) { uvp__unref(orig); }

/* finally's handler adopted pending q: d waits for q instead, then settles
 * like src unless q rejects.  Returns what apply() is to do now. */
static uvp_ret_t finally_wait(uvp_ctx_t *ctx, uvp_promise_t *src,
                              uvp_promise_t *d, uvp_promise_t *q,
                              bool *waiting) {
  if (uvp__waits_for(q, d)) { /* as uvp_ret_adopt's own cycle check */
    uvp__unref(q);
    return uvp_ret_reject(UVP_ECYCLE, NULL, NULL);
  }
  uvp__handler_t *h = handler_new(ctx, UVP__RK_THEN_BOTH, d, finally_after, src,
                                  release_orig, true);
  if (h == NULL) {
    uvp__unref(q);
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  }
  src->refs++; /* for finally_after, until its notifier */
  d->refs++;   /* for the new reaction */
  d->link = q; /* d keeps waiting, now on q */
  q->flags |= UVP__F_HANDLED;
  push_reaction(q, &h->r);
  uvp__unref(q);
  *waiting = true;
  return uvp_ret_pass();
}

/* Turn finally's handler result into the derived promise's outcome; sets
 * *waiting when d now waits for a promise the handler returned. */
static uvp_ret_t finally_ret(uvp_ctx_t *ctx, uvp_promise_t *src,
                             uvp_promise_t *d, uvp_ret_t ret, bool *waiting) {
  switch (ret.kind_) {
  case UVP_RET_REJECT_:
    return ret;
  case UVP_RET_ADOPT_:
    break;
  default:
    discard(&ret, src, false, true);
    return uvp_ret_pass();
  }
  uvp_promise_t *q = ret.promise_;
  if (q == NULL || uvp__promise_ctx(q) != ctx || q->state == UVP__S_REJECTED)
    return ret; /* apply() rejects or forwards the rejection */
  if (q->state == UVP__S_FULFILLED || d == NULL || d->state != UVP__S_PENDING) {
    uvp__unref(q);
    return uvp_ret_pass();
  }
  return finally_wait(ctx, src, d, q, waiting);
}

/* What a handler is told of settled src. */
static uvp_outcome_t outcome_of(uvp_promise_t *src) {
  bool ok = src->state == UVP__S_FULFILLED;
  uvp_outcome_t in = {ok ? 0 : src->code, src->value, src};
  return in;
}

static void run_cell(uvp_ctx_t *ctx, uvp__cell_t *cell) {
  uvp__cell_owner_t *o = uvp__rtarget(&cell->r);
  uvp_promise_t *src = cell->source; /* run may free the owner */
  uvp_outcome_t in = outcome_of(src);
  o->ops->run(o, (size_t)(cell - o->cells), &in);
  uvp__unref_in(ctx, src);
}

/* An observer inside uvp (a map, a timeout, a sequence): the short way
 * matters when a burst of them runs. */
static void run_notify(uvp_ctx_t *ctx, uvp__handler_t *h, uvp__rkind_t kind) {
  uvp_promise_t *src = uvp__rtarget(&h->r);
  uvp__notify_cb notify = h->cb.notify;
  void *arg = h->arg;
  if (kind == UVP__RK_NOTIFY)
    uvp__pool_put(&ctx->reactions, h);
  uvp_outcome_t in = outcome_of(src);
  notify(arg, &in);
  uvp__unref_in(ctx, src);
}

/* What every step of a chain runs: a program's then() handler with its
 * derived promise, for a fulfilment, a rejection or both (not finally),
 * unboxed (no destructor for its argument, no scope, not taking).  The
 * general runner below does the same with the tests for every other
 * kind; this one has a frame of its own, smaller than the general one's. */
static UVP__NOINLINE void run_then(uvp_ctx_t *ctx, uvp__handler_t *h,
                                   uvp__rkind_t kind) {
  uvp_promise_t *d = uvp__rtarget(&h->r), *src = d->link;
  uvp_then_cb cb = h->cb.then;
  void *arg = h->arg;
  uvp__pool_put(&ctx->reactions, h);
  _Static_assert((int)UVP__RK_THEN_FULFILLED == UVP_ON_FULFILLED &&
                     (int)UVP__RK_THEN_REJECTED == UVP_ON_REJECTED &&
                     (int)UVP__RK_THEN_BOTH == UVP_ON_BOTH,
                 "a plain then()'s kind is its UVP_ON_* mask");
  unsigned wants =
      src->state == UVP__S_FULFILLED ? UVP_ON_FULFILLED : UVP_ON_REJECTED;
  if (UVP__UNLIKELY(cb == NULL || !(kind & wants) || !waits_on_src(d, src))) {
    uvp_ret_t pass = uvp_ret_pass();
    apply(d, src, &pass, false);
  } else {
    uvp_outcome_t in = outcome_of(src);
    uvp__scope_t *was = uvp__scope_enter(ctx, NULL);
    uint16_t outer = uvp__trace_enter(ctx, d->trace);
    uvp_ret_t ret = cb(arg, &in);
    ctx->h.trace = outer;
    uvp__scope_leave(ctx, was);
    /* A value, d still waiting (the handler may have cancelled it). */
    if (UVP__LIKELY(ret.kind_ == UVP_RET_VALUE_ && waits_on_src(d, src))) {
      d->flags &= (uint8_t)~UVP__F_WAITING;
      fulfill_in(ctx, d, ret.ptr_, ret.free_);
    } else {
      apply(d, src, &ret, true);
    }
  }
  uvp__unref_in(ctx, src);
  uvp__unref_in(ctx, d);
}

static UVP__NOINLINE void run_general(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  uvp__rkind_t kind = uvp__rkind(r);
  if (kind == UVP__RK_CELL) {
    run_cell(ctx, (uvp__cell_t *)(void *)r);
    return;
  }
  uvp__handler_t *h = (uvp__handler_t *)(void *)r;
  if (kind >= UVP__RK_NOTIFY) {
    run_notify(ctx, h, kind);
    return;
  }
  uvp_promise_t *t = uvp__rtarget(r);
  hbox_t o = open_handler(ctx, h, kind, t);
  uvp_then_cb cb = o.cb;
  void *arg = o.arg;
  uvp_promise_t *src, *d;
  if (rk_derived(kind)) {
    d = t;
    src = d->link;
  } else {
    src = t;
    d = NULL;
  }
  uvp__pool_put(&ctx->reactions, h);
  /* A handler exists to settle its derived promise.  Once that promise was
   * cancelled (it "stops waiting"), running the handler would only start
   * work nobody can observe or cancel: the next step of a chain a timeout
   * has just given up on. */
  bool wanted = d == NULL || (d->state == UVP__S_PENDING &&
                              (d->flags & UVP__F_WAITING) && d->link == src);
  uvp_ret_t ret = uvp_ret_pass();
  bool waiting = false, seen = false;
  uvp__scope_t *was = uvp__scope_enter(ctx, o.scope);
  if (cb != NULL && wanted && rk_wants(kind, src->state == UVP__S_FULFILLED)) {
    uvp_outcome_t in = outcome_of(src);
    /* What the handler creates comes from its then(), or from what it
     * observes (both 0 with traces off). */
    uint16_t outer = uvp__trace_enter(ctx, d != NULL ? d->trace : src->trace);
    ret = cb(arg, &in);
    ctx->h.trace = outer;
    seen = true;
    if (rk_finally(kind))
      ret = finally_ret(ctx, src, d, ret, &waiting);
  }
  if (o.arg_free != NULL)
    o.arg_free(arg);
  uvp__scope_leave(ctx, was);
  if (!waiting)
    apply(d, src, &ret, seen);
  uvp__unref_in(ctx, src);
  if (d != NULL)
    uvp__unref_in(ctx, d);
}

/* Frameless: each way is a jump. */
void uvp__run_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  uvp__rkind_t kind = uvp__rkind(r);
  /* A cell's `source` is read as `cb` only once its kind was tested. */
  if (kind >= UVP__RK_THEN_FULFILLED && kind <= UVP__RK_THEN_BOTH &&
      ((uvp__handler_t *)(void *)r)->cb.then != uvp__boxed) {
    run_then(ctx, (uvp__handler_t *)(void *)r, kind);
    return;
  }
  run_general(ctx, r);
}

/* The generic path above would find the same: an embedded NOTIFY reaction
 * with no derived promise.  A burst of I/O runs one per operation. */
void uvp__run_completion(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  static const uvp_outcome_t nothing = {0, NULL, NULL};
  uvp__handler_t *h = (uvp__handler_t *)(void *)r;
  uvp_promise_t *p = uvp__rtarget(r);
  h->cb.notify(h->arg, &nothing);
  uvp__unref_in(ctx, p);
}

void *uvp__next_embedded(uvp_ctx_t *ctx, uvp__notify_cb cb) {
  uvp__reaction_t *r = uvp__runq_next(ctx);
  if (r == NULL || uvp__rkind(r) != UVP__RK_NOTIFY_EMBEDDED ||
      ((uvp__handler_t *)(void *)r)->cb.notify != cb)
    return NULL;
  return ((uvp__handler_t *)(void *)r)->arg;
}

void uvp__take_embedded(uvp_ctx_t *ctx, int *status, void **value) {
  uvp__reaction_t *r = uvp__runq_take(ctx);
  UVP__CHECK(uvp__rkind(r) == UVP__RK_NOTIFY_EMBEDDED);
  uvp_promise_t *src = uvp__rtarget(r);
  if (status != NULL) {
    uvp_outcome_t in = outcome_of(src);
    *status = in.status;
    *value = in.value;
  }
  uvp__unref_in(ctx, src);
}

int uvp__observe(uvp_promise_t *p, uvp__notify_cb cb, void *arg) {
  uvp__handler_t *h =
      handler_alloc(uvp__promise_ctx(p), UVP__RK_NOTIFY, p, arg);
  if (h == NULL)
    return UV_ENOMEM;
  h->cb.notify = cb;
  uvp__attach(p, &h->r);
  return 0;
}

void uvp__observe_embedded(uvp_promise_t *p, uvp__handler_t *h,
                           uvp__notify_cb cb, void *arg) {
  h->r.next = NULL;
  h->r.target = uvp__rtag(p, UVP__RK_NOTIFY_EMBEDDED);
  h->cb.notify = cb;
  h->arg = arg;
  uvp__attach(p, &h->r);
}

void uvp__enqueue_embedded(uvp_promise_t *target, uvp__handler_t *h,
                           uvp__notify_cb cb, void *arg) {
  h->r.next = NULL;
  h->r.target = uvp__rtag(target, UVP__RK_NOTIFY_EMBEDDED);
  h->cb.notify = cb;
  h->arg = arg;
  target->refs++;
  uvp__enqueue(uvp__promise_ctx(target), &h->r);
}

bool uvp__unobserve(uvp_promise_t *q, uvp__reaction_t *r) {
  for (uvp__reaction_t **at = &q->reactions; *at != NULL; at = &(*at)->next) {
    if (*at == r) {
      unlink_at(q, at);
      return true;
    }
  }
  return false;
}

void uvp__give_up(uvp_promise_t *q, uvp__notify_cb cb, void *arg, bool always) {
  if (!uvp__is_pending(q))
    return;
  if (always || uvp__only_observer(q, arg)) {
    (void)uvp_promise_cancel(q); /* the observer runs with its rejection */
    return;
  }
  for (uvp__reaction_t **at = &q->reactions; *at != NULL; at = &(*at)->next) {
    uvp__handler_t *h = (uvp__handler_t *)(void *)*at;
    if (uvp__rkind(*at) == UVP__RK_NOTIFY && h->cb.notify == cb &&
        h->arg == arg) {
      unlink_at(q, at);
      uvp__drop_reaction(uvp__promise_ctx(q), &h->r, false);
      return;
    }
  }
}

void uvp__settle_ret(uvp_promise_t *p, const uvp_ret_t *ret) {
  if (!uvp__is_pending(p) || uvp__closed(uvp__promise_ctx(p))) {
    discard(ret, p, false, true); /* cancelled or torn down meanwhile */
    return;
  }
  switch (ret->kind_) {
  case UVP_RET_VALUE_:
    fulfill(p, ret->ptr_, ret->free_);
    break;
  case UVP_RET_REJECT_:
    reject(p, ret->code_ < 0 ? ret->code_ : UV_EINVAL, ret->ptr_, ret->free_);
    break;
  case UVP_RET_ADOPT_:
    if (ret->promise_ == NULL) {
      reject(p, UV_EINVAL, NULL, NULL);
    } else {
      uvp__adopt(p, ret->promise_);
      uvp__unref(ret->promise_);
    }
    break;
  default:
    fulfill(p, NULL, NULL);
    break;
  }
}

void uvp__cell_attach(uvp__cell_owner_t *owner, uvp__cell_t *cell,
                      uvp_promise_t *src) {
  cell->r.next = NULL;
  cell->r.target = uvp__rtag(owner, UVP__RK_CELL);
  cell->source = src;
  uvp__attach(src, &cell->r);
}

/* The promise core: settlement, reactions, adoption, references.
 *
 * Invariants worth knowing before reading:
 *  - A pending promise's reactions are a singly linked list, newest first;
 *    settling reverses it once, so handlers run in registration order.
 *  - A queued reaction holds one reference to its source; a reaction with a
 *    derived promise holds one reference to that derived promise.
 *  - `link` of a waiting promise (F_WAITING) is a non-owning pointer to what
 *    it waits for: the waited-for promise owns the reaction that owns the
 *    waiter, never the other way round.  A derived promise keeps `link`
 *    pointing at its source until its reaction has run, even if it was
 *    cancelled meanwhile: the reaction finds its source through it.
 *  - `link` of a forwarded promise (F_FORWARD) is an owning reference to the
 *    promise that owns the value.  It always names an owner, never another
 *    forwarder, so adoption chains never grow.
 *  - The last release pushes the promise on a stack (threaded through
 *    `next_dead`, over code, born and site) that the outermost release
 *    drains: freeing the head of a million-long chain costs no stack.
 *    Walks over the slabs (teardown, the pending dump) skip such promises
 *    (refs 0): a destructor run by the drain may close the context.
 *  - After uvp_ctx_close() other threads may release under the context's
 *    lock, so every reference change on the loop thread takes it too
 *    (rel() below); before close only the loop thread touches promises.
 */
#include <stdlib.h>
#include <string.h>

#include "sched.h"

_Static_assert(sizeof(uvp_promise_t) == 48, "a promise is 48 bytes");
_Static_assert(sizeof(uvp_promise_t) % UVP__SLOT_ALIGN == 0,
               "promises stay aligned in their pool: a reaction's target "
               "carries its kind in the low bits");
_Static_assert(sizeof(uvp__handler_t) % UVP__SLOT_ALIGN == 0,
               "reactions stay aligned in their pool");

static uvp_promise_t *promise_alloc(uvp_ctx_t *ctx, const char *file,
                                    int line) {
  uvp_promise_t *p = uvp__pool_get(&ctx->promises);
  if (UVP__UNLIKELY(p == NULL))
    return NULL;
  p->reactions = NULL;
  p->link = NULL;
  p->value = NULL;
  p->fn.free_cb = NULL;
  p->refs = 1;
  p->born = (uint32_t)(uv_now(ctx->loop) - ctx->epoch);
  p->ctx_id = ctx->id;
  p->site = uvp__site(&ctx->sites, file, line);
  p->state = UVP__S_PENDING;
  p->flags = 0;
  ctx->live++;
  ctx->pending++;
  return p;
}

/* A reaction from the pool; `cb` is a uvp_then_cb or, for the NOTIFY
 * kind, a uvp__notify_cb. */
static uvp__handler_t *handler_alloc(uvp_ctx_t *ctx, uvp__rkind_t kind,
                                     void *target, void *arg) {
  uvp__handler_t *h = uvp__pool_get(&ctx->reactions);
  if (UVP__UNLIKELY(h == NULL))
    return NULL;
  h->r.next = NULL;
  h->r.target = uvp__rtag(target, kind);
  h->arg = arg;
  return h;
}

/* Push r on pending p's reaction list. */
static inline void push_reaction(uvp_promise_t *p, uvp__reaction_t *r) {
  if (p->reactions != NULL)
    p->flags |= UVP__F_MANY;
  r->next = p->reactions;
  p->reactions = r;
}

/* Register r on p, which it observes, and mark p handled. */
static void attach(uvp_promise_t *p, uvp__reaction_t *r) {
  p->flags |= UVP__F_HANDLED;
  if (p->state == UVP__S_PENDING) {
    push_reaction(p, r);
  } else {
    p->refs++;
    uvp__enqueue(uvp__promise_ctx(p), r);
  }
}

/* ---- references ---------------------------------------------------------- */

static void destroy(uvp_promise_t *p);

static void report_unhandled(uvp_promise_t *p) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (ctx->unhandled_cb != NULL) {
    ctx->unhandled_cb(p, ctx->unhandled_arg);
    return;
  }
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  fprintf(stderr,
          "uvp: unhandled rejection %s (%s) of promise created at %s:%d\n",
          uvp_err_name(p->code), uvp_strerror(p->code),
          file != NULL ? file : "?", line);
}

void uvp__release_local(uvp_promise_t *p) {
  if (UVP__LIKELY(--p->refs != 0))
    return;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (p->state == UVP__S_REJECTED && !(p->flags & UVP__F_HANDLED)) {
    p->flags |= UVP__F_HANDLED;
    report_unhandled(p);
  }
  /* code, born and site are not read again: they thread the stack. */
  p->next_dead = ctx->free_stack;
  ctx->free_stack = p;
  if (ctx->freeing)
    return;
  ctx->freeing = true;
  /* A destructor or the unhandled hook may close the context meanwhile:
   * from then on other threads may release too, so the rest is freed
   * under the lock, and its unlock frees the context once nothing is
   * left of it. */
  bool locked = false;
  while (ctx->free_stack != NULL) {
    if (UVP__UNLIKELY(ctx->closed) && !locked) {
      uvp__lock(ctx);
      locked = true;
    }
    uvp_promise_t *q = ctx->free_stack;
    ctx->free_stack = q->next_dead;
    destroy(q);
  }
  ctx->freeing = false;
  if (locked)
    uvp__unlock(ctx);
}

/* Release p, of ctx (which the drain knows without a load). */
static inline void rel_in(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (UVP__LIKELY(!ctx->closed)) {
    uvp__release_local(p);
    return;
  }
  uvp__lock(ctx);
  uvp__release_local(p);
  uvp__unlock(ctx);
}

static void rel(uvp_promise_t *p) { rel_in(uvp__promise_ctx(p), p); }

/* Drop a reaction that will never run.  A queued one also held its source. */
void uvp__drop_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r, bool queued) {
  uvp__rkind_t kind = uvp__rkind(r);
  if (kind == UVP__RK_CELL) {
    uvp__cell_t *cell = (uvp__cell_t *)(void *)r;
    uvp__cell_owner_t *o = uvp__rtarget(r);
    uvp_promise_t *src = cell->source; /* run may free the owner */
    o->ops->run(o, (size_t)(cell - o->cells), NULL);
    if (queued)
      rel(src);
    return;
  }
  uvp__handler_t *h = (uvp__handler_t *)(void *)r;
  uvp_promise_t *t = uvp__rtarget(r);
  uvp__notify_cb notify = h->cb.notify;
  void *arg = h->arg;
  if (kind != UVP__RK_NOTIFY_EMBEDDED)
    uvp__pool_put(&ctx->reactions, h);
  if (!uvp__rk_derived(kind)) {
    if (kind >= UVP__RK_NOTIFY)
      notify(arg, NULL);
    if (queued)
      rel(t);
    return;
  }
  if (queued)
    rel(t->link);
  if (t->state == UVP__S_PENDING && (t->flags & UVP__F_WAITING)) {
    /* What t followed is gone unsettled: like JavaScript, t stays pending
     * and already resolved forever (only cancel or teardown settle it).
     * `link` would dangle, so it stops naming anything. */
    t->flags = (uint8_t)((t->flags & ~UVP__F_WAITING) | UVP__F_OWNED);
    t->link = NULL;
  }
  rel(t);
}

static void drop_reactions(uvp_ctx_t *ctx, uvp_promise_t *p) {
  uvp__reaction_t *r = p->reactions;
  p->reactions = NULL;
  p->flags &= (uint8_t)~UVP__F_MANY;
  while (r != NULL) {
    uvp__reaction_t *next = r->next;
    uvp__drop_reaction(ctx, r, false);
    r = next;
  }
}

static void destroy(uvp_promise_t *p) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (p->state == UVP__S_PENDING) {
    /* Nobody can settle it any more; its waiters stay pending, like
     * unreachable promises in JavaScript.  A cancel hook is not run: the
     * producer held no reference, so it has nothing left to stop. */
    ctx->pending--;
    drop_reactions(ctx, p);
  } else if (p->flags & UVP__F_FORWARD) {
    uvp__release_local(p->link);
  } else if (p->fn.free_cb != NULL) {
    p->fn.free_cb(p->value);
  }
  p->state = UVP__S_FREE;
  uvp__pool_put(&ctx->promises, p);
  ctx->live--;
}

uvp_promise_t *uvp_promise_retain(uvp_promise_t *p) {
  if (p == NULL)
    return NULL;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (UVP__UNLIKELY(ctx->closed)) {
    uvp__lock(ctx);
    p->refs++;
    uvp__unlock(ctx);
  } else {
    p->refs++;
  }
  return p;
}

/* Off the fast path: a context this thread has not used last, another
 * thread's, or a closed one. */
static UVP__NOINLINE void release_slow(uvp_promise_t *p) {
  if (!uvp__on_loop_thread(uvp__promise_ctx(p))) {
    /* Only UV_ENOMEM can fail here; the reference then stays (a leak, not a
     * crash), which is all a void function can do. */
    (void)uvp__post(p, UVP__MSG_RELEASE, 0, NULL, NULL);
    return;
  }
  (void)uvp__local_ctx_slow(p);
  rel(p);
}

void uvp_promise_release(uvp_promise_t *p) {
  if (p == NULL)
    return;
  if (UVP__UNLIKELY(uvp__cached_ctx(p) == NULL)) {
    release_slow(p);
    return;
  }
  uvp__release_local(p);
}

/* ---- settlement ---------------------------------------------------------- */

/* Several reactions: the list is newest first, the queue wants
 * registration order. */
static UVP__NOINLINE void queue_many(uvp_ctx_t *ctx, uvp_promise_t *p,
                                     uvp__reaction_t *r) {
  uvp__reaction_t *rev = NULL;
  while (r != NULL) {
    uvp__reaction_t *next = r->next;
    r->next = rev;
    rev = r;
    r = next;
  }
  while (rev != NULL) {
    uvp__reaction_t *next = rev->next;
    p->refs++;
    uvp__queue_push(ctx, rev);
    rev = next;
  }
}

/* Move the reactions, in registration order, to the end of the run queue.
 * ctx is p's, passed in so that it need not be read from p (see
 * uvp__cached_ctx).  Inlined into resolve and reject: a settle loop over
 * promises that miss the cache runs further ahead when each settle is
 * fewer instructions and stores (no call frame to save). */
static UVP__ALWAYS_INLINE void settle_in(uvp_ctx_t *ctx, uvp_promise_t *p,
                                         uint8_t state) {
  uint8_t many = p->flags & UVP__F_MANY;
  p->state = state;
  p->flags &= (uint8_t) ~(UVP__F_WAITING | UVP__F_CANCEL | UVP__F_MANY |
                          UVP__F_MOVABLE);
  ctx->pending--;
  uvp__reaction_t *r = p->reactions;
  if (r == NULL)
    return;
  p->reactions = NULL;
  if (UVP__LIKELY(!many)) {
    /* The common case, one reaction: it is queued without being read or
     * written, so settling a promise whose reaction is cold in memory
     * does not wait for it. */
    p->refs++;
    uvp__queue_push(ctx, r);
  } else {
    queue_many(ctx, p, r);
  }
  uvp__wake(ctx);
}

static void settle(uvp_promise_t *p, uint8_t state) {
  settle_in(uvp__promise_ctx(p), p, state);
}

static void fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  p->value = value;
  p->fn.free_cb = free_cb;
  settle(p, UVP__S_FULFILLED);
}

static void reject(uvp_promise_t *p, int code, void *payload,
                   uvp_free_cb free_cb) {
  p->code = code;
  p->value = payload;
  p->fn.free_cb = free_cb;
  settle(p, UVP__S_REJECTED);
}

/* Settle p exactly like the settled src, sharing its value. */
static void forward(uvp_promise_t *p, uvp_promise_t *src) {
  uvp_promise_t *owner = (src->flags & UVP__F_FORWARD) ? src->link : src;
  owner->refs++;
  p->link = owner;
  p->value = src->value;
  p->fn.free_cb = NULL;
  p->code = src->code;
  settle(p, src->state);
  p->flags |= UVP__F_FORWARD;
}

/* Make pending p follow q (Promises/A+ 2.3.2), or reject it for a cycle. */
static void adopt(uvp_promise_t *p, uvp_promise_t *q) {
  if (!uvp__same_ctx(q, p)) {
    reject(p, UVP_EXCTX, NULL, NULL);
    return;
  }
  q->flags |= UVP__F_HANDLED;
  if (q->state != UVP__S_PENDING) {
    forward(p, q);
    return;
  }
  for (uvp_promise_t *x = q;; x = x->link) {
    if (x == p) {
      reject(p, UVP_ECYCLE, NULL, NULL);
      return;
    }
    if (x->state != UVP__S_PENDING || !(x->flags & UVP__F_WAITING))
      break;
  }
  uvp__handler_t *h =
      handler_alloc(uvp__promise_ctx(p), UVP__RK_FOLLOW, p, NULL);
  if (h == NULL) {
    reject(p, UV_ENOMEM, NULL, NULL);
    return;
  }
  h->cb.then = NULL;
  p->refs++;
  p->link = q;
  p->flags |= UVP__F_WAITING;
  push_reaction(q, &h->r);
}

static bool settleable(const uvp_promise_t *p) {
  return p->state == UVP__S_PENDING &&
         !(p->flags & (UVP__F_WAITING | UVP__F_OWNED));
}

static int check_settleable(const uvp_promise_t *p) {
  if (UVP__UNLIKELY(uvp__promise_ctx(p)->closed))
    return UVP_ECLOSED;
  return settleable(p) ? 0 : UVP_ESETTLED;
}

int uvp__resolve_local(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  int rc = check_settleable(p);
  if (rc == 0)
    fulfill(p, value, free_cb);
  return rc;
}

int uvp__reject_local(uvp_promise_t *p, int code, void *payload,
                      uvp_free_cb free_cb) {
  int rc = check_settleable(p);
  if (rc == 0)
    reject(p, code, payload, free_cb);
  return rc;
}

/* resolve and reject off the fast path: a context this thread has not
 * used last, another thread's, or a closed one.  Out of line, so that the
 * fast path needs no stack frame. */
static UVP__NOINLINE int settle_slow(uvp_promise_t *p, int op, int code,
                                     void *value, uvp_free_cb free_cb) {
  if (!uvp__on_loop_thread(uvp__promise_ctx(p)))
    return uvp__post(p, op, code, value, free_cb);
  (void)uvp__local_ctx_slow(p);
  return op == UVP__MSG_RESOLVE ? uvp__resolve_local(p, value, free_cb)
                                : uvp__reject_local(p, code, value, free_cb);
}

int uvp_promise_resolve(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  if (p == NULL)
    return UV_EINVAL;
  uvp_ctx_t *ctx = uvp__cached_ctx(p);
  if (UVP__UNLIKELY(ctx == NULL))
    return settle_slow(p, UVP__MSG_RESOLVE, 0, value, free_cb);
  if (!settleable(p))
    return UVP_ESETTLED;
  p->value = value;
  p->fn.free_cb = free_cb;
  settle_in(ctx, p, UVP__S_FULFILLED);
  return 0;
}

int uvp_promise_reject(uvp_promise_t *p, int code, void *payload,
                       uvp_free_cb free_cb) {
  if (p == NULL || code >= 0)
    return UV_EINVAL;
  uvp_ctx_t *ctx = uvp__cached_ctx(p);
  if (UVP__UNLIKELY(ctx == NULL))
    return settle_slow(p, UVP__MSG_REJECT, code, payload, free_cb);
  if (!settleable(p))
    return UVP_ESETTLED;
  p->code = code;
  p->value = payload;
  p->fn.free_cb = free_cb;
  settle_in(ctx, p, UVP__S_REJECTED);
  return 0;
}

int uvp_promise_resolve_with(uvp_promise_t *p, uvp_promise_t *src) {
  if (p == NULL || src == NULL)
    return UV_EINVAL;
  int rc = check_settleable(p);
  if (rc != 0)
    return rc;
  if (!uvp__same_ctx(src, p))
    return UVP_EXCTX;
  adopt(p, src);
  return 0;
}

int uvp_promise_set_cancel(uvp_promise_t *p, uvp_cancel_cb cb, void *arg) {
  if (p == NULL)
    return UV_EINVAL;
  if (uvp__promise_ctx(p)->closed)
    return UVP_ECLOSED;
  if (p->state != UVP__S_PENDING)
    return UVP_ESETTLED;
  p->value = cb != NULL ? arg : NULL;
  p->fn.cancel_cb = cb;
  if (cb != NULL)
    p->flags |= UVP__F_CANCEL;
  else
    p->flags &= (uint8_t)~UVP__F_CANCEL;
  return 0;
}

/* Reject a pending promise and run its cancel hook, if any. */
static void cancel_with(uvp_promise_t *p, int code) {
  uvp_cancel_cb hook = (p->flags & UVP__F_CANCEL) ? p->fn.cancel_cb : NULL;
  void *harg = p->value;
  p->refs++;
  reject(p, code, NULL, NULL);
  if (hook != NULL)
    hook(p, harg);
  rel(p);
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

int uvp_promise_cancel(uvp_promise_t *p) {
  if (p == NULL)
    return UV_EINVAL;
  if (uvp__promise_ctx(p)->closed)
    return UVP_ECLOSED;
  if (p->state != UVP__S_PENDING)
    return UVP_ESETTLED;
  /* Cancellation travels up through what p follows while each is pending
   * and p's chain is its only consumer (Bluebird's rule): a timeout on
   * then(connect, send_and_read) then reaches the read itself. */
  uvp_promise_t *held = NULL; /* our reference on p after the first */
  while (p != NULL) {
    uvp_promise_t *up = NULL;
    if ((p->flags & UVP__F_WAITING) && p->link->state == UVP__S_PENDING &&
        uvp__sole_consumer(p->link, p))
      up = uvp_promise_retain(p->link);
    cancel_with(p, UV_ECANCELED);
    if (held != NULL)
      rel(held);
    held = up;
    p = up != NULL && up->state == UVP__S_PENDING ? up : NULL;
  }
  if (held != NULL)
    rel(held);
  return 0;
}

/* ---- creation ------------------------------------------------------------ */

int uvp_promise_new_at(uvp_ctx_t *ctx, uvp_promise_t **out, const char *file,
                       int line) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  if (ctx->closed)
    return UVP_ECLOSED;
  uvp_promise_t *p = promise_alloc(ctx, file, line);
  if (p == NULL)
    return UV_ENOMEM;
  *out = p;
  return 0;
}

int uvp_promise_resolved_at(uvp_ctx_t *ctx, void *value, uvp_free_cb free_cb,
                            uvp_promise_t **out, const char *file, int line) {
  int rc = uvp_promise_new_at(ctx, out, file, line);
  if (rc == 0)
    fulfill(*out, value, free_cb);
  return rc;
}

int uvp_promise_rejected_at(uvp_ctx_t *ctx, int code, void *payload,
                            uvp_free_cb free_cb, uvp_promise_t **out,
                            const char *file, int line) {
  if (code >= 0)
    return UV_EINVAL;
  int rc = uvp_promise_new_at(ctx, out, file, line);
  if (rc == 0)
    reject(*out, code, payload, free_cb);
  return rc;
}

/* ---- reactions ----------------------------------------------------------- */

static int add_reaction(uvp_promise_t *p, uvp__rkind_t kind, uvp_then_cb cb,
                        void *arg, uvp_promise_t **out, const char *file,
                        int line) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (UVP__UNLIKELY(ctx->closed))
    return UVP_ECLOSED;
  uvp_promise_t *d = NULL;
  uvp_promise_t *target = p;
  if (out != NULL) {
    d = promise_alloc(ctx, file, line);
    if (UVP__UNLIKELY(d == NULL))
      return UV_ENOMEM;
    d->refs = 2; /* the caller's and the reaction's */
    d->link = p;
    d->flags = UVP__F_WAITING;
    target = d;
  } else {
    kind += UVP__RK_ON_FULFILLED - UVP__RK_THEN_FULFILLED;
  }
  uvp__handler_t *h = handler_alloc(ctx, kind, target, arg);
  if (UVP__UNLIKELY(h == NULL)) {
    if (d != NULL) {
      d->refs = 1;
      d->flags = 0;
      uvp__release_local(d);
    }
    return UV_ENOMEM;
  }
  h->cb.then = cb;
  attach(p, &h->r);
  if (out != NULL)
    *out = d;
  return 0;
}

int uvp_promise_on_at(uvp_promise_t *p, int mask, uvp_then_cb cb, void *arg,
                      uvp_promise_t **out, const char *file, int line) {
  if (p == NULL || mask <= 0 || mask > UVP_ON_BOTH)
    return UV_EINVAL;
  /* The THEN kinds are the masks themselves (see promise.h). */
  return add_reaction(p, (uvp__rkind_t)mask, cb, arg, out, file, line);
}

int uvp_promise_finally_at(uvp_promise_t *p, uvp_then_cb cb, void *arg,
                           uvp_promise_t **out, const char *file, int line) {
  if (p == NULL)
    return UV_EINVAL;
  return add_reaction(p, UVP__RK_THEN_FINALLY, cb, arg, out, file, line);
}

/* ---- running a reaction -------------------------------------------------- */

/* Report a rejection nobody can observe any more.  The hook receives a
 * temporary promise valid only during the call, as documented. */
static void report_lost(uvp_promise_t *src, int code, void *payload) {
  uvp_promise_t tmp = *src;
  tmp.state = UVP__S_REJECTED;
  tmp.code = code;
  tmp.value = payload;
  tmp.fn.free_cb = NULL;
  tmp.refs = 1;
  report_unhandled(&tmp);
}

/* Throw away what a handler returned when no promise can take it. */
static void discard(const uvp_ret_t *ret, uvp_promise_t *src, bool report) {
  switch (ret->kind_) {
  case UVP_RET_VALUE_:
    if (ret->free_ != NULL)
      ret->free_(ret->ptr_);
    break;
  case UVP_RET_REJECT_:
    if (report)
      report_lost(src, ret->code_ < 0 ? ret->code_ : UV_EINVAL, ret->ptr_);
    if (ret->free_ != NULL)
      ret->free_(ret->ptr_);
    break;
  case UVP_RET_ADOPT_:
    if (ret->promise_ != NULL)
      rel(ret->promise_);
    break;
  case UVP_RET_PASS_:
    if (report && src->state == UVP__S_REJECTED)
      report_lost(src, src->code, src->value);
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

/* Settle d as the handler's result says.  By pointer: passed by value, the
 * result was copied with wide loads that its narrow stores could not
 * forward to, so each copy waited for those stores, and every older one
 * (a combinator's store into a cold result array), to reach the cache. */
static void apply(uvp_promise_t *d, uvp_promise_t *src, const uvp_ret_t *ret) {
  if (d == NULL) {
    discard(ret, src, true);
    return;
  }
  if (d->state != UVP__S_PENDING || !(d->flags & UVP__F_WAITING) ||
      d->link != src) {
    /* Cancelled (or torn down) while its reaction was queued. */
    discard(ret, src, false);
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
        adopt(d, ret->promise_);
      rel(ret->promise_);
    }
    break;
  case UVP_RET_PASS_:
    forward(d, src);
    break;
  default:
    reject(d, UV_EINVAL, NULL, NULL);
    break;
  }
}

/* After finally's handler adopted a promise: settle like the original
 * outcome (arg, one reference) unless the adopted promise rejected. */
static uvp_ret_t finally_after(void *arg, const uvp_outcome_t *in) {
  uvp_promise_t *orig = arg;
  if (in->status == 0)
    return uvp_ret_adopt(orig);
  rel(orig);
  return uvp_ret_pass();
}

/* finally's handler adopted pending q: d waits for q instead, then settles
 * like src unless q rejects.  Returns what apply() is to do now. */
static uvp_ret_t finally_wait(uvp_ctx_t *ctx, uvp_promise_t *src,
                              uvp_promise_t *d, uvp_promise_t *q,
                              bool *waiting) {
  if (q == d) {
    rel(q);
    return uvp_ret_reject(UVP_ECYCLE, NULL, NULL);
  }
  uvp__handler_t *h = handler_alloc(ctx, UVP__RK_THEN_BOTH, d, src);
  if (h == NULL) {
    rel(q);
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  }
  h->cb.then = finally_after;
  src->refs++; /* for finally_after */
  d->refs++;   /* for the new reaction */
  d->link = q; /* d keeps waiting, now on q */
  q->flags |= UVP__F_HANDLED;
  push_reaction(q, &h->r);
  rel(q);
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
    discard(&ret, src, false);
    return uvp_ret_pass();
  }
  uvp_promise_t *q = ret.promise_;
  if (q == NULL || uvp__promise_ctx(q) != ctx || q->state == UVP__S_REJECTED)
    return ret; /* apply() rejects or forwards the rejection */
  if (q->state == UVP__S_FULFILLED || d == NULL ||
      d->state != UVP__S_PENDING) {
    rel(q);
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
  rel_in(ctx, src);
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
  rel_in(ctx, src);
}

void uvp__run_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r) {
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
  uvp_then_cb cb = h->cb.then;
  void *arg = h->arg;
  uvp_promise_t *src, *d;
  if (uvp__rk_derived(kind)) {
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
   * has just given up on.  finally_after always runs: it owns a
   * reference. */
  bool wanted = d == NULL || cb == finally_after ||
                (d->state == UVP__S_PENDING && (d->flags & UVP__F_WAITING) &&
                 d->link == src);
  uvp_ret_t ret = uvp_ret_pass();
  bool waiting = false;
  if (cb != NULL && wanted &&
      uvp__rk_wants(kind, src->state == UVP__S_FULFILLED)) {
    uvp_outcome_t in = outcome_of(src);
    ret = cb(arg, &in);
    if (uvp__rk_finally(kind))
      ret = finally_ret(ctx, src, d, ret, &waiting);
  }
  if (!waiting)
    apply(d, src, &ret);
  rel_in(ctx, src);
  if (d != NULL)
    rel_in(ctx, d);
}

/* The generic path above would find the same: an embedded NOTIFY reaction
 * with no derived promise.  A burst of I/O runs one per operation. */
void uvp__run_completion(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  static const uvp_outcome_t nothing = {0, NULL, NULL};
  uvp__handler_t *h = (uvp__handler_t *)(void *)r;
  uvp_promise_t *p = uvp__rtarget(r);
  h->cb.notify(h->arg, &nothing);
  rel_in(ctx, p);
}

/* ---- teardown ------------------------------------------------------------ */

static void sweep_one(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  (void)arg;
  /* refs 0: being freed by a release that is running the unhandled hook
   * or a destructor which closed the context; that release frees it. */
  if (p->state == UVP__S_FREE || p->refs == 0)
    return;
  if (p->state == UVP__S_PENDING) {
    p->refs++;
    drop_reactions(uvp__promise_ctx(p), p);
    if (p->state == UVP__S_PENDING) {
      p->flags |= UVP__F_HANDLED; /* a consequence of teardown, not news */
      cancel_with(p, UVP_ECLOSED);
    }
    rel(p);
  } else if (p->state == UVP__S_REJECTED && !(p->flags & UVP__F_HANDLED)) {
    p->flags |= UVP__F_HANDLED;
    report_unhandled(p);
  }
}

void uvp__sweep(uvp_ctx_t *ctx) {
  uvp__pool_each(&ctx->promises, sweep_one, NULL);
}

/* ---- inspection ---------------------------------------------------------- */

uvp_state_t uvp_promise_state(const uvp_promise_t *p) {
  return p == NULL ? UVP_PENDING : (uvp_state_t)p->state;
}

void *uvp_promise_value(const uvp_promise_t *p) {
  return p != NULL && p->state == UVP__S_FULFILLED ? p->value : NULL;
}

int uvp_promise_reason(const uvp_promise_t *p, void **payload) {
  bool rejected = p != NULL && p->state == UVP__S_REJECTED;
  if (payload != NULL)
    *payload = rejected ? p->value : NULL;
  return rejected ? p->code : 0;
}

void uvp_promise_site(const uvp_promise_t *p, const char **file, int *line) {
  uvp__site_get(p != NULL ? p->site : 0, file, line);
}

uvp_ctx_t *uvp_promise_ctx(const uvp_promise_t *p) {
  return p != NULL ? uvp__promise_ctx(p) : NULL;
}

typedef struct {
  FILE *stream;
  uint64_t now;
  int count;
} dump_state_t;

static void dump_one(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  dump_state_t *st = arg;
  if (p->state != UVP__S_PENDING || p->refs == 0) /* refs 0: being freed */
    return;
  const char *what = (p->flags & UVP__F_WAITING)   ? " waiting on another"
                     : (p->flags & UVP__F_CANCEL) ? " cancellable"
                                                  : "";
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  fprintf(st->stream, "[pending] %p created at %s:%d age %llu ms refs %u%s\n",
          (void *)p, file != NULL ? file : "?", line,
          (unsigned long long)(st->now - p->born), (unsigned)p->refs, what);
  st->count++;
}

int uvp_ctx_dump_pending(uvp_ctx_t *ctx, FILE *stream) {
  int rc = stream == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  dump_state_t st = {stream, uv_now(ctx->loop) - ctx->epoch, 0};
  uvp__pool_each(&ctx->promises, dump_one, &st);
  return st.count;
}

/* ---- for the layers above ------------------------------------------------ */

uvp_promise_t *uvp__promise_new(uvp_ctx_t *ctx, const char *file, int line) {
  return promise_alloc(ctx, file, line);
}

uvp_promise_t *uvp__produced_new(uvp_ctx_t *ctx, const char *file, int line,
                                 uvp_cancel_cb hook, void *arg) {
  uvp_promise_t *p = promise_alloc(ctx, file, line);
  if (p == NULL)
    return NULL;
  p->refs = 2;
  p->flags = UVP__F_OWNED | UVP__F_CANCEL;
  p->value = arg;
  p->fn.cancel_cb = hook;
  return p;
}

uvp_promise_t *uvp__movable_new(uvp_ctx_t *ctx, const char *file, int line,
                                uvp_cancel_cb hook, uvp_promise_t **slot) {
  uvp_promise_t *p = uvp__produced_new(ctx, file, line, hook, slot);
  if (p != NULL) {
    p->flags |= UVP__F_MOVABLE;
    *slot = p;
  }
  return p;
}

void uvp__produced_forget(uvp_promise_t *p) {
  p->flags &= (uint8_t) ~(UVP__F_CANCEL | UVP__F_MOVABLE);
}

void uvp__produced_abort(uvp_promise_t *p) {
  uvp__produced_forget(p);
  rel(p);
  rel(p);
}

int uvp__observe(uvp_promise_t *p, uvp__notify_cb cb, void *arg) {
  uvp__handler_t *h =
      handler_alloc(uvp__promise_ctx(p), UVP__RK_NOTIFY, p, arg);
  if (h == NULL)
    return UV_ENOMEM;
  h->cb.notify = cb;
  attach(p, &h->r);
  return 0;
}

void uvp__observe_embedded(uvp_promise_t *p, uvp__handler_t *h,
                           uvp__notify_cb cb, void *arg) {
  h->r.next = NULL;
  h->r.target = uvp__rtag(p, UVP__RK_NOTIFY_EMBEDDED);
  h->cb.notify = cb;
  h->arg = arg;
  attach(p, &h->r);
}

void uvp__cell_attach(uvp__cell_owner_t *owner, uvp__cell_t *cell,
                      uvp_promise_t *src) {
  cell->r.next = NULL;
  cell->r.target = uvp__rtag(owner, UVP__RK_CELL);
  cell->source = src;
  attach(src, &cell->r);
}

void uvp__fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  fulfill(p, value, free_cb);
}
void uvp__reject(uvp_promise_t *p, int code, void *payload,
                 uvp_free_cb free_cb) {
  reject(p, code, payload, free_cb);
}
void uvp__forward(uvp_promise_t *p, uvp_promise_t *src) { forward(p, src); }
void uvp__rel(uvp_promise_t *p) { rel(p); }

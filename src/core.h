/* Private to promise.c and reaction.c, the two halves of the promise
 * core: what both need, inline where the hot path crosses between them.
 * The invariants every change must keep are at the top of promise.c. */
#ifndef UVP_CORE_H
#define UVP_CORE_H

#include "context.h"
#include "runq.h"
#include "scope.h"
#include "trace.h"

/* Slot p made a pending promise of ctx with one reference, created at
 * `site` (its trace `trace`). */
static UVP__ALWAYS_INLINE void promise_init(uvp_ctx_t *ctx, uvp_promise_t *p,
                                            uint16_t site, uint16_t trace) {
  p->reactions = NULL;
  p->link = NULL;
  p->value = NULL;
  p->fn.free_cb = NULL;
  p->refs = 1;
  p->born = (uint32_t)(uvp__now(ctx) - ctx->epoch);
  p->ctx_id = ctx->id;
  p->site = site;
  p->trace = trace;
  p->state = UVP__S_PENDING;
  p->flags = 0;
  ctx->pending++;
}

static inline uvp_promise_t *promise_alloc(uvp_ctx_t *ctx, const char *file,
                                           int line) {
  uvp_promise_t *p = uvp__pool_get(&ctx->promises);
  if (UVP__UNLIKELY(p == NULL))
    return NULL;
  uint16_t site = uvp__site(&ctx->sites, file, line);
  promise_init(ctx, p, site, uvp__trace_new(ctx, site));
  return p;
}

/* A context where creating a promise needs nothing but a slot and its
 * site: open (and the thread check off), traces off.  Tested by the fast
 * paths of the entry points, which go their general way otherwise. */
static UVP__ALWAYS_INLINE bool ctx_plain(const uvp_ctx_t *ctx) {
  return !ctx->h.guarded && !ctx->h.traces;
}

/* Whether the target is a derived promise the reaction settles. */
static inline bool rk_derived(uvp__rkind_t k) {
  return k <= UVP__RK_THEN_FINALLY;
}

/* A reaction from the pool; `cb` is a uvp_then_cb or, for the NOTIFY
 * kind, a uvp__notify_cb. */
static inline uvp__handler_t *handler_alloc(uvp_ctx_t *ctx, uvp__rkind_t kind,
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

/* A call named `call` was made on p after its last release (its slot is
 * free, not yet taken by another promise): said on stderr, with the stack
 * when a sanitizer's runtime is in the process or valgrind runs it.  The
 * caller then refuses the call (UV_EINVAL) or ignores it (a release). */
void uvp__misuse(const uvp_promise_t *p, const char *call);
static inline bool is_freed(const uvp_promise_t *p) {
  return UVP__UNLIKELY(p->state == UVP__S_FREE);
}

void uvp__attach(uvp_promise_t *p, uvp__reaction_t *r);
void uvp__report_unhandled(uvp_promise_t *p);
void uvp__adopt(uvp_promise_t *p, uvp_promise_t *q);
/* Whether p following pending q would close a cycle (see promise.c). */
bool uvp__waits_for(uvp_promise_t *q, const uvp_promise_t *p);
void uvp__drop_reactions(uvp_ctx_t *ctx, uvp_promise_t *p);
void uvp__stop_waiting(uvp_promise_t *d);
void uvp__queue_many(uvp_ctx_t *ctx, uvp_promise_t *p, uvp__reaction_t *r);

/* Move the reactions, in registration order, to the end of the run queue.
 * ctx is p's, passed in so that it need not be read from p (see
 * uvp__ctx_cached).  Inlined into resolve and reject: a settle loop over
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
    uvp__enqueue_in(ctx, r);
  } else {
    uvp__queue_many(ctx, p, r);
  }
}

static inline void settle(uvp_promise_t *p, uint8_t state) {
  settle_in(uvp__promise_ctx(p), p, state);
}

/* A cancel hook given with a destroy notifier for its argument lives in a
 * box (uvp_promise_set_cancel_full); the hook is then uvp__box_hook. */
void uvp__box_hook(uvp_promise_t *p, void *box);
void uvp__box_drop(uvp_promise_t *p);
/* Before a settle overwrites value and fn: a cancel hook that will never
 * run lets go of its argument. */
static inline void forget_hook(uvp_promise_t *p) {
  if (UVP__UNLIKELY((p->flags & UVP__F_CANCEL) &&
                    p->fn.cancel_cb == uvp__box_hook))
    uvp__box_drop(p);
}

/* The same before a settle with `code` (0: fulfilled), which the flight
 * recorder hears of for a promise with a hook (uvp's work, mostly): a
 * promise without one tests the flag it always did. */
#if defined(__GNUC__)
__attribute__((cold))
#endif
void uvp__hooked_settle(uvp_promise_t *p, int code);
static inline void settle_hook(uvp_promise_t *p, int code) {
  if (UVP__UNLIKELY(p->flags & UVP__F_CANCEL))
    uvp__hooked_settle(p, code);
}

/* Fulfil p, of ctx (the drain's: no registry load). */
static inline void fulfill_in(uvp_ctx_t *ctx, uvp_promise_t *p, void *value,
                              uvp_free_cb free_cb) {
  settle_hook(p, 0);
  p->value = value;
  p->fn.free_cb = free_cb;
  settle_in(ctx, p, UVP__S_FULFILLED);
}

static inline void fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  fulfill_in(uvp__promise_ctx(p), p, value, free_cb);
}

static inline void reject(uvp_promise_t *p, int code, void *payload,
                          uvp_free_cb free_cb) {
  settle_hook(p, code);
  p->code = code;
  p->value = payload;
  p->fn.free_cb = free_cb;
  settle(p, UVP__S_REJECTED);
}

/* p (of ctx) goes back to its pool; its count is left at 1, so that a
 * release too many reaches 0 off the fast path and is caught there
 * (uvp__misuse) instead of wrapping the count. */
static UVP__ALWAYS_INLINE void free_slot(uvp_ctx_t *ctx, uvp_promise_t *p) {
  p->state = UVP__S_FREE;
  p->refs = 1;
  uvp__pool_put(&ctx->promises, p);
}

/* Free p, whose last reference just went, if it owns nothing but its
 * slot: fulfilled, not forwarding, no destructor, and no message from
 * another thread can name it (uvp__post).  Most promises end so; the rest
 * (a rejection to report, a destructor that may release more, a pending
 * promise's reactions) go through the free stack (promise.c).  ctx is
 * p's: open, or its lock held. */
static UVP__ALWAYS_INLINE bool free_plain(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (p->state != UVP__S_FULFILLED || (p->flags & UVP__F_FORWARD) ||
      p->fn.free_cb != NULL || uvp__mail_waiting(ctx))
    return false;
  free_slot(ctx, p);
  return true;
}

/* p's last reference went: free it and what it owns. */
void uvp__free_last(uvp_ctx_t *ctx, uvp_promise_t *p);

/* uvp__unref_open with p's context known (no registry load). */
static UVP__ALWAYS_INLINE void unref_open_in(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (UVP__LIKELY(--p->refs != 0))
    return;
  uvp__free_last(ctx, p);
}

/* uvp__unref with p's context known (the drain's: no registry load). */
static inline void uvp__unref_in(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (UVP__LIKELY(!ctx->h.closed)) {
    unref_open_in(ctx, p);
    return;
  }
  uvp__lock(ctx);
  uvp__unref_open(p);
  uvp__unlock(ctx);
}

#endif

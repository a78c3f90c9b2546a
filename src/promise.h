/* Private to src/: the promise core's objects and what the layers above it
 * (combinators, time, flow, the operation layer) may call.  The rules a
 * reader needs before changing any of it are at the top of promise.c. */
#ifndef UVP_PROMISE_H
#define UVP_PROMISE_H

#include "alloc.h"
#include "reaction.h"

/* ---- promises ------------------------------------------------------------ */

enum {
  UVP__S_PENDING = UVP_PENDING,
  UVP__S_FULFILLED = UVP_FULFILLED,
  UVP__S_REJECTED = UVP_REJECTED,
  UVP__S_FREE = 3
};

enum {
  UVP__F_HANDLED = 1u,  /* observed, propagated or reported: never report */
  UVP__F_WAITING = 2u,  /* pending, and `link` is what it waits for */
  UVP__F_FORWARD = 4u,  /* settled; `link` is the promise owning the value */
  UVP__F_CANCEL = 8u,   /* pending; value/fn hold a cancel hook */
  UVP__F_CAUSE = 8u,    /* settled, the same bit: rejected by a cancellation
                           whose cause (a reference) is fn.cause */
  UVP__F_MOVABLE = 16u, /* pending; its producer may be handed on (take_over) */
  UVP__F_OWNED = 32u,   /* settled only by the library (combinators, timers) */
  UVP__F_MANY = 64u,    /* pending with more than one reaction */
  UVP__F_NOTE = 64u,    /* settled, the same bit: fn.cause (UVP__F_CAUSE is
                           set too) is a note saying what settled it, not a
                           cut (cause.h) */
  UVP__F_QUIET = 128u   /* rejected by a cancellation or a group's end, or
                            following one: never reported */
};

/* 48 bytes (32 on ILP32).  The context is named by its registry id, the
 * creation site by an interned one.  What every settle and release reads comes
 * first, in 16 bytes (see docs/internals/core.md). */
struct uvp_promise_s {
  uvp__reaction_t *reactions; /* pending: newest first.  A free slot's
                               * free-list link lives here */
  uint32_t refs;
  uint8_t state;
  uint8_t flags;
  uint16_t ctx_id;
  void *value; /* value, payload, or cancel hook argument */
  union {
    uvp_free_cb free_cb;
    uvp_cancel_cb cancel_cb;
    struct uvp__cause_s *cause; /* UVP__F_CAUSE: the payload is NULL */
  } fn;
  uvp_promise_t *link; /* see UVP__F_WAITING / _FORWARD */
  union {
    struct {
      union {
        int32_t code;  /* rejected */
        uint32_t born; /* pending: ms since the context's epoch */
      };
      uint16_t site;
      uint16_t trace; /* its async trace (trace.h), 0 if none */
    };
    /* refs reached 0: none of the above is read again, and a walk over
     * the slabs skips the promise */
    uvp_promise_t *next_dead;
  };
};

static inline bool uvp__is_pending(const uvp_promise_t *p) {
  return p->state == UVP__S_PENDING;
}
/* Whether a and b belong to one context: an id names one context for as
 * long as any of its promises lives, so the ids alone tell. */
static inline bool uvp__same_ctx(const uvp_promise_t *a,
                                 const uvp_promise_t *b) {
  return a->ctx_id == b->ctx_id;
}

/* What `link` names in a promise that waited on another (then's result, or
 * one resolved with a promise) when that other was let go unsettled, its
 * last reference released while pending: nothing can settle the waiter any
 * more but a cancel or its context's close (reaction.c's drop), which the
 * live console warns of.  `link` is read only under UVP__F_WAITING or
 * UVP__F_FORWARD (settled only), so the mark costs no field; the object is
 * never read. */
extern uvp_promise_t uvp__source_lost;
static inline bool uvp__lost_its_source(const uvp_promise_t *p) {
  return p->state == UVP__S_PENDING && !(p->flags & UVP__F_WAITING) &&
         p->link == &uvp__source_lost;
}

/* ---- for the layers above the core --------------------------------------- */

/* A pending promise with one reference (NULL: no memory). */
uvp_promise_t *uvp__promise_new(uvp_ctx_t *ctx, const char *file, int line);

/* A promise for work uvp produces (a combinator's result, a timer, a libuv
 * request): only uvp settles it, `hook(p, arg)` runs if it is cancelled or
 * torn down while pending, and it comes with two references, the caller's
 * and the producer's.  NULL: no memory. */
uvp_promise_t *uvp__produced_new(uvp_ctx_t *ctx, const char *file, int line,
                                 uvp_cancel_cb hook, void *arg);
/* The same for a producer that can be handed to another promise: `*slot`
 * is the producer's pointer to its promise, and the hook's argument.  When
 * a handler returns such a promise fresh (nothing observes it, nobody else
 * holds it), the core hands the producer to the handler's derived promise
 * by rewriting *slot instead of adopting (see take_over in reaction.c).  So
 * the producer must read *slot afresh whenever it settles or releases, its
 * hook must not care which promise it is given, and it sets *slot to NULL
 * once it may no longer be moved. */
uvp_promise_t *uvp__movable_new(uvp_ctx_t *ctx, const char *file, int line,
                                uvp_cancel_cb hook, uvp_promise_t **slot);
/* Give pending p uvp's own cancel hook, or take it back (the producer is
 * done with p, which stays pending or is settled by someone else).  Only
 * the promise layer writes these fields; the layers above call these. */
static inline void uvp__promise_hook_set(uvp_promise_t *p, uvp_cancel_cb hook,
                                         void *arg) {
  p->value = arg;
  p->fn.cancel_cb = hook;
  p->flags |= UVP__F_CANCEL;
}
static inline void uvp__promise_hook_clear(uvp_promise_t *p) {
  p->flags &= (uint8_t)~UVP__F_CANCEL;
  p->value = NULL;
  p->fn.cancel_cb = NULL;
}
/* The producer never started: p was never handed out.  Its hook is dropped
 * and both references go. */
void uvp__produced_abort(uvp_promise_t *p);
/* The producer is gone (its context is being torn down): p stays pending
 * for the teardown to reject, without running the hook. */
void uvp__produced_forget(uvp_promise_t *p);

void uvp__fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb);
void uvp__reject(uvp_promise_t *p, int code, void *payload,
                 uvp_free_cb free_cb);
/* Settle p exactly like the settled src, sharing its value. */
void uvp__forward(uvp_promise_t *p, uvp_promise_t *src);
/* For the task dump: each slot of ctx's promise pool carved since its last
 * rewind, free ones too (fn tells them apart: state UVP__S_FREE, or refs
 * 0 while being freed; see uvp__pool_each); the time promises' `born`
 * counts from; what a program's hook says p waits for (its kind, the
 * target written in buf; NULL if it says nothing). */
void uvp__promises_each(uvp_ctx_t *ctx, bool (*fn)(void *slot, void *arg),
                        void *arg);
uint64_t uvp__ctx_epoch(const uvp_ctx_t *ctx);
const char *uvp__hook_describe(const uvp_promise_t *p, char *buf, size_t cap);

/* Reject pending p with `code` and run its cancel hook, as
 * uvp_promise_cancel does for p alone (a deadline's UV_ETIMEDOUT), with
 * the cause of the cancellation running (cause.h; none: the program's). */
void uvp__cancel_with(uvp_promise_t *p, int code);
/* Reject pending p, which uvp produces, with `code` and cause c (a new
 * reference is taken): a cut that settles later (a group's join). */
void uvp__reject_cause(uvp_promise_t *p, int code, struct uvp__cause_s *c);
/* The cause p's rejection carries (uvp_promise_cause), or NULL. */
static inline struct uvp__cause_s *uvp__cause_of(const uvp_promise_t *p) {
  if (p->state != UVP__S_REJECTED)
    return NULL;
  const uvp_promise_t *o = (p->flags & UVP__F_FORWARD) ? p->link : p;
  return (o->flags & (UVP__F_CAUSE | UVP__F_NOTE)) == UVP__F_CAUSE ? o->fn.cause
                                                                   : NULL;
}

/* ---- releases ------------------------------------------------------------
 * uvp_promise_release (uvp.h) is the public entry, from any thread: off the
 * loop thread it posts the release for the loop (uvp__post, context.h).
 * Inside uvp, on the loop thread: */
/* uvp's own release, whether or not the context is closed (other threads
 * may release once it is: then it takes the context's lock). */
void uvp__unref(uvp_promise_t *p);
/* The decrement itself, where no other thread can release p (the context
 * is open, or its lock is held); at zero p is freed with what it owns. */
void uvp__unref_open(uvp_promise_t *p);

/* Observe p from inside uvp: cb(arg, outcome) runs once when p settles, or
 * cb(arg, NULL) if the reaction is dropped.  Marks p handled.  The
 * observer keeps its own reference to p if it needs one. */
int uvp__observe(uvp_promise_t *p, uvp__notify_cb cb, void *arg);
void uvp__observe_embedded(uvp_promise_t *p, uvp__handler_t *h,
                           uvp__notify_cb cb, void *arg);
/* Queue h (an observer in its owner's memory) to run cb(arg, outcome of
 * target) from the run queue, as if target had just settled (it need not
 * have: cb is told nothing it can rely on then).  The queue holds a
 * reference to target until cb has run. */
void uvp__enqueue_embedded(uvp_promise_t *target, uvp__handler_t *h,
                           uvp__notify_cb cb, void *arg);
/* The fibers' hand-off (see fiber.c): if the next thing the running drain
 * would run is an embedded observer whose callback is cb (uvp__runq_next
 * says when the drain would run one), its arg, else NULL ... */
void *uvp__next_embedded(uvp_ctx_t *ctx, uvp__notify_cb cb);
/* ... and taking that observer off the queue instead, with *status and
 * *value those of the outcome cb would have been told (where not NULL:
 * stored straight where the caller keeps them, no outcome on its stack).
 * The queue's reference to its promise is released: the caller must hold
 * one of its own while it uses *value. */
void uvp__take_embedded(uvp_ctx_t *ctx, int *status, void **value);
/* Take r, attached to pending q (uvp__observe_embedded, a cell), back off
 * q's list: it will not run.  Returns whether it was there. */
bool uvp__unobserve(uvp_promise_t *q, uvp__reaction_t *r);
/* An observer (uvp__observe's cb and arg) gives up on q: a pending q is
 * cancelled if that observer is all that consumes it, or if `always`;
 * otherwise the observer leaves q's list at once (cb(arg, NULL) runs), so
 * that it no longer counts as a consumer and cancelling q's last other
 * consumer later reaches q (uvp_promise_cancel's rule). */
void uvp__give_up(uvp_promise_t *q, uvp__notify_cb cb, void *arg, bool always);
/* Settle p, a promise uvp produces, as a handler's result says
 * (uvp_ret_pass fulfils with NULL); takes what ret holds.  A p no longer
 * pending (cancelled) or in a closed context only lets go of what ret
 * holds, reporting nothing. */
void uvp__settle_ret(uvp_promise_t *p, const uvp_ret_t *ret);
/* Attach cell `cell` of `owner` to src (the owner's reference). */
void uvp__cell_attach(uvp__cell_owner_t *owner, uvp__cell_t *cell,
                      uvp_promise_t *src);
/* Whether q has consumers and every one of them acts for `who` (a derived
 * promise or a cell owner): then nobody else can observe q any more, and
 * cancelling `who` may cancel q (uvp_promise_cancel's rule). */
bool uvp__sole_consumer(const uvp_promise_t *q, const void *who);
/* Whether q's one reaction is an observer (uvp__observe, _embedded)
 * with `arg`. */
bool uvp__only_observer(const uvp_promise_t *q, const void *arg);

/* uvp_promise_retain without its checks: on the loop thread of an open
 * context. */
static inline void uvp__retain_local(uvp_promise_t *p) { p->refs++; }

/* Notes: a message a producer gives the outcome it settles, said where a
 * loser's cause or a trace names it.  Kept as a cause the promise holds
 * (UVP__F_CAUSE | UVP__F_NOTE), so they are the promise's. */
/* p has just settled on its own (not forwarded, no cause): record `text`.
 * Without memory nothing changes. */
void uvp__note_settled(uvp_promise_t *p, const char *text);

/* The note of p's outcome (a forwarded one's owner's), or NULL. */
const char *uvp__note_of(const uvp_promise_t *p);

#endif

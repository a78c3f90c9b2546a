/* Private to src/: the promise core's objects and what the layers above it
 * (combinators, time, flow, the operation layer) may call.  The rules a
 * reader needs before changing any of it are at the top of promise.c. */
#ifndef UVP_PROMISE_H
#define UVP_PROMISE_H

#include "alloc.h"

/* ---- reactions ----------------------------------------------------------- */

/* Every reaction begins with this: its place in a pending promise's list
 * (then in the run queue) and its target word, the address of the object
 * it acts for with the reaction's kind in the low bits.  The objects a
 * target can name (promises, cell owners) are UVP__SLOT_ALIGN-aligned. */
typedef struct uvp__reaction_s uvp__reaction_t;
struct uvp__reaction_s {
  uvp__reaction_t *next;
  uintptr_t target;
};

#define UVP__RKIND_MASK ((uintptr_t)UVP__SLOT_ALIGN - 1)

/* A reaction's kind, and what its target names. */
typedef enum uvp__rkind_e {
  /* Adoption: the derived promise (target) settles like its source. */
  UVP__RK_FOLLOW = 0,
  /* A handler for the outcomes in a UVP_ON_* mask (or finally's) whose
   * result settles the derived promise (target). */
  UVP__RK_THEN_FULFILLED = UVP_ON_FULFILLED,
  UVP__RK_THEN_REJECTED = UVP_ON_REJECTED,
  UVP__RK_THEN_BOTH = UVP_ON_BOTH,
  UVP__RK_THEN_FINALLY,
  /* The same with no derived promise (out == NULL): target is the source. */
  UVP__RK_ON_FULFILLED,
  UVP__RK_ON_REJECTED,
  UVP__RK_ON_BOTH,
  UVP__RK_ON_FINALLY,
  /* An observer inside uvp: its callback sees every outcome, returns
   * nothing, and is called with NULL if the reaction is dropped.  Target
   * is the source.  From the reaction pool, or in its owner's memory. */
  UVP__RK_NOTIFY,
  UVP__RK_NOTIFY_EMBEDDED,
  /* A cell (uvp__cell_t); target is its owner. */
  UVP__RK_CELL,
  UVP__RK_COUNT
} uvp__rkind_t;

_Static_assert(UVP__RK_COUNT <= UVP__RKIND_MASK + 1,
               "a reaction's kind fits the low bits of an aligned address");
_Static_assert(UVP__RK_ON_FULFILLED - UVP__RK_THEN_FULFILLED ==
                   UVP__RK_ON_FINALLY - UVP__RK_THEN_FINALLY,
               "each handler kind has its no-derived twin at one distance");

static inline uvp__rkind_t uvp__rkind(const uvp__reaction_t *r) {
  return (uvp__rkind_t)(r->target & UVP__RKIND_MASK);
}
/* The object a reaction's target names. */
static inline void *uvp__rtarget(const uvp__reaction_t *r) {
  return (void *)(r->target & ~UVP__RKIND_MASK);
}
static inline uintptr_t uvp__rtag(const void *obj, uvp__rkind_t kind) {
  UVP__CHECK(((uintptr_t)obj & UVP__RKIND_MASK) == 0);
  return (uintptr_t)obj | (uintptr_t)kind;
}
/* An internal observer's callback: `in` is NULL when the reaction is
 * dropped and will never run. */
typedef void (*uvp__notify_cb)(void *arg, const uvp_outcome_t *in);

/* Every kind but the cell: a callback, its argument, the argument's
 * destroy notifier (run once the callback can no longer be called; NULL
 * for none) and, for a user's handler, the scope it was registered in
 * (scope.h; it runs in it).  48 bytes, one slot of the reaction pool. */
typedef struct uvp__handler_s {
  uvp__reaction_t r;
  union {
    uvp_then_cb then;     /* FOLLOW: NULL */
    uvp__notify_cb notify; /* NOTIFY kinds */
  } cb;
  void *arg;
  uvp_free_cb arg_free;
  struct uvp__scope_s *scope; /* a reference; NULL: none */
} uvp__handler_t;

/* A cell: the reaction of an owner that observes many inputs with the same
 * callback (a combinator: one per input).  16 bytes of reaction and the
 * source it observes; the owner begins with a uvp__cell_owner_t, and which
 * input a cell is for follows from its place in the owner's array.  The
 * core finds a cell's source in the cell, so that it can run and prefetch
 * it like any reaction. */
typedef struct uvp__cell_s {
  uvp__reaction_t r;
  uvp_promise_t *source; /* a reference the owner holds */
} uvp__cell_t;

typedef struct uvp__cell_owner_s uvp__cell_owner_t;
typedef struct uvp__cell_ops_s {
  /* Cell `index` saw its source settle as *in (NULL: the cell was dropped
   * and will never run).  The core releases what the run queue held of
   * the source afterwards, not the owner's reference. */
  void (*run)(uvp__cell_owner_t *owner, size_t index, const uvp_outcome_t *in);
} uvp__cell_ops_t;
struct uvp__cell_owner_s {
  const uvp__cell_ops_t *ops;
  uvp__cell_t *cells;
};

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
  UVP__F_MOVABLE = 16u, /* pending; its producer may be handed on (take_over) */
  UVP__F_OWNED = 32u,   /* settled only by the library (combinators, timers) */
  UVP__F_MANY = 64u,    /* pending with more than one reaction */
  UVP__F_CANCELLED = 128u /* rejected by a cancellation, or following one */
};

/* 48 bytes.  The context is named by its registry id, the creation site by
 * an interned one.  What every settle and release reads comes first, in
 * 16 bytes (see docs/internals.md). */
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
  } fn;
  uvp_promise_t *link; /* see F_WAITING / F_FORWARD */
  union {
    struct {
      union {
        int32_t code;  /* rejected */
        uint32_t born; /* pending: ms since the context's epoch */
      };
      uint16_t site;
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
void uvp__rel(uvp_promise_t *p);

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
/* Take h, attached to pending q with uvp__observe_embedded, back off q's
 * list: it will not run.  Returns whether it was there. */
bool uvp__unobserve(uvp_promise_t *q, uvp__handler_t *h);
/* Settle pending p, a promise uvp produces, as a handler's result says
 * (uvp_ret_pass fulfils with NULL); takes what ret holds. */
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

/* ---- for the scheduler ---------------------------------------------------- */

void uvp__run_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* Run a queued completion (an embedded NOTIFY reaction): its callback gets
 * an outcome that says nothing, then the queue's reference goes. */
void uvp__run_completion(uvp_ctx_t *ctx, uvp__reaction_t *r);
void uvp__drop_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r, bool queued);
int uvp__resolve_local(uvp_promise_t *p, void *value, uvp_free_cb free_cb);
int uvp__reject_local(uvp_promise_t *p, int code, void *payload,
                      uvp_free_cb free_cb);
void uvp__release_local(uvp_promise_t *p);
void uvp__sweep(uvp_ctx_t *ctx); /* teardown of every live promise */

#endif

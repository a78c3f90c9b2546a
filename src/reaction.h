/* Private to src/: reactions, what waits on a pending promise and then
 * sits in the run queue: handlers (a callback and its argument) and cells
 * (one input of a combinator or map).  Part of the core's objects: see
 * promise.h. */
#ifndef UVP_REACTION_H
#define UVP_REACTION_H

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
  UVP__RK_THEN_FINALLY = UVP_ON_FINALLY,
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

/* Every kind but the cell: a callback and its argument.  32 bytes (16 on
 * ILP32), one slot of the reaction pool.  A user's handler given a destroy
 * notifier for its argument, or registered inside a scope (scope.h), keeps its
 * callback, argument, notifier and scope in a box, a second slot: its cb
 * is then a marker and its arg the box (reaction.c).  Every pending
 * promise pays for the handler's size; only those handlers pay for the
 * box (docs/internals/core.md has the figures). */
typedef struct uvp__handler_s {
  uvp__reaction_t r;
  union {
    uvp_then_cb then;      /* FOLLOW: NULL */
    uvp__notify_cb notify; /* NOTIFY kinds */
  } cb;
  void *arg;
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
  /* The task dump: the scope's carrier the owner's inputs answer to (a
   * group's members: the group, scope.h), or NULL (may be NULL). */
  const struct uvp__owner_s *(*answers_to)(const uvp__cell_owner_t *owner);
  /* The task dump's async stack: the promise the owner settles from its
   * inputs (a combinator's result) while undecided, else NULL (may be
   * NULL: a group's members settle no one promise). */
  const uvp_promise_t *(*settles)(const uvp__cell_owner_t *owner);
} uvp__cell_ops_t;
struct uvp__cell_owner_s {
  const uvp__cell_ops_t *ops;
  uvp__cell_t *cells;
};

/* ---- boxed handlers: reaction.c boxes a user's handler and opens the box;
 * the stall detector reads the scope a queued handler will run in.  Here
 * rather than in a header of their own, as they are the reactions'. */

/* A user's handler with a destroy notifier or a scope (see
 * uvp__handler_t): its cb is uvp__boxed, its arg the box, from the
 * reaction pool. */
typedef struct uvp__hbox_s {
  uvp_then_cb cb;
  void *arg;
  uvp_free_cb arg_free;       /* NULL: none */
  struct uvp__scope_s *scope; /* a reference; NULL: none */
} uvp__hbox_t;
_Static_assert(sizeof(uvp__hbox_t) <= sizeof(uvp__handler_t),
               "a box takes a reaction slot");
/* The marker: a box is always opened before its handler runs. */
uvp_ret_t uvp__boxed(void *arg, const uvp_outcome_t *in);
/* A boxed handler that holds a reference to its source (UVP_ON_TAKE) says
 * so in the low bit of its box's address (a slot of the reaction pool,
 * aligned): only the boxed path reads it, so no other handler pays. */
#define UVP__HBOX_HELD ((uintptr_t)1)
static inline uvp__hbox_t *uvp__hbox_of(const uvp__handler_t *h) {
  return (uvp__hbox_t *)((uintptr_t)h->arg & ~UVP__HBOX_HELD);
}

/* The scope a queued user handler will run in (NULL: none, or not a
 * user's handler), for the stall detector's report: inline, for the
 * drain's mark of each reaction. */
static inline struct uvp__scope_s *
uvp__reaction_scope(const uvp__reaction_t *r) {
  uvp__rkind_t kind = uvp__rkind(r);
  if (kind == UVP__RK_CELL || kind >= UVP__RK_NOTIFY)
    return NULL;
  const uvp__handler_t *h = (const uvp__handler_t *)(const void *)r;
  return h->cb.then == uvp__boxed ? uvp__hbox_of(h)->scope : NULL;
}

#endif

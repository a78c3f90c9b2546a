/* Private to the promise core's reaction.c, which boxes a user's handler
 * and opens the box, and to the stall detector, which reads the scope a
 * queued handler will run in. */
#ifndef UVP_HBOX_H
#define UVP_HBOX_H

#include "reaction.h"

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

/* Private to src/: an input slot of a combinator or map.  While its input
 * is awaited the slot is the cell that observes it; once the outcome is
 * in, allSettled, any and map write the public record over it, keeping the
 * input in the record's `promise`.  The records are then already the
 * result's array, in input order, and the input stays named through both
 * forms at the same place. */
#ifndef UVP_SETTLED_H
#define UVP_SETTLED_H

#include "promise.h"

typedef union uvp__slot_u {
  uvp__cell_t cell;
  uvp_settled_t rec;
} uvp__slot_t;

_Static_assert(sizeof(uvp__cell_t) == sizeof(uvp_settled_t),
               "a record fits its cell exactly");
_Static_assert(offsetof(uvp__cell_t, source) ==
                   offsetof(uvp_settled_t, promise),
               "the input stays where the record names it");

/* The input of slot s, in either form. */
static inline uvp_promise_t *uvp__slot_input(const uvp__slot_t *s) {
  return s->cell.source;
}

/* Record an outcome over the slot's spent cell. */
static inline void uvp__slot_record(uvp__slot_t *s, int status, void *value) {
  s->rec.status = status;
  s->rec.value = value;
}

#endif

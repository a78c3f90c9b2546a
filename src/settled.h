/* Private to src/: an input slot of a combinator or map.  While its input
 * is awaited the slot is the cell that observes it; once the outcome is
 * in, allSettled, any and map write the public record over it, keeping the
 * input in the record's `promise`.  The records are then already the
 * result's array, in input order, and the input stays named through both
 * forms at the same place. */
#ifndef UVP_SETTLED_H
#define UVP_SETTLED_H

#include "sched.h"

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

/* What a combinator and a map share, first in their state.  One block
 * holds the state and one slot per input; `attached` counts the cells not
 * yet run or dropped plus one "share" for the result.  The share goes when
 * the result stops needing the inputs: at once if the result forwards an
 * input's outcome, or when the result (whose value points into the block)
 * is freed.  Releasing the share releases the inputs; the block is freed
 * when `attached` reaches 0. */
typedef struct uvp__fanin_s {
  uvp__cell_owner_t owner; /* first: the cells name the state through it */
  uvp_ctx_t *ctx;
  void *block;
  size_t bytes;
  uvp_promise_t *result; /* our reference, while undecided */
  uvp__slot_t *slots;
  size_t n;
  size_t attached;
  bool inputs_held;
} uvp__fanin_t;

/* A state of `head` bytes beginning with a uvp__fanin_t, zeroed but for
 * the fan-in's fields, followed by n slots and `extra` bytes per input,
 * with its result (uvp__produced_new: `hook(result, state)`), which the
 * caller hands out.  attached is 1 (the share), the inputs counted held.
 * NULL if there is no memory. */
void *uvp__fanin_new(uvp_ctx_t *ctx, size_t head, size_t n, size_t extra,
                     const uvp__cell_ops_t *ops, uvp_cancel_cb hook,
                     const char *file, int line);
void uvp__fanin_unref(uvp__fanin_t *f);
/* The fan-ins' uvp__cell_ops_t.settles: the result while undecided. */
const uvp_promise_t *uvp__fanin_settles(const uvp__cell_owner_t *owner);
/* The share goes: the inputs are released (slots without one skipped). */
void uvp__fanin_release_share(uvp__fanin_t *f);
/* Let go of our reference to the result (decided, cancelled). */
void uvp__fanin_drop_result(uvp__fanin_t *f);
/* The result is decided or cancelled: the cells on inputs still pending
 * leave their lists (each cell's count in `attached` goes), so that they
 * no longer count as consumers of those inputs (uvp_promise_cancel's
 * rule: cancelling another consumer, the last, now cancels the input) nor
 * keep the block until the inputs settle (slots without an input, a map's
 * items not started, are skipped).  Before the share goes. */
void uvp__fanin_detach(uvp__fanin_t *f);

#endif

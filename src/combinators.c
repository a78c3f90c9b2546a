/* all, allSettled, race and any.
 *
 * One allocation per call holds the remaining count, one embedded reaction
 * per input and the results: no per-input allocation exists at all, and a
 * million inputs' reactions sit in one array in input order rather than
 * scattered over the reaction slab by earlier traffic.  A reaction's index
 * in `rx` is its input's index, and its target names the input, so neither
 * needs storing again.  allSettled's and any's records take no room either:
 * input i's record is written over rx[i] once that reaction has run (the
 * run queue let go of it before, and nothing reads it after), keeping the
 * input in the record's `promise`.
 *
 * all needs no record, so each input gets a 16-byte cell instead of a
 * 32-byte reaction (see uvp__cell_ops_t), plus its pointer in `sources`:
 * 24 bytes an input where allSettled takes 32 and all took 40.  A value
 * waits in its spent cell, and once the last is in they are gathered, in
 * input order, to the front of the cells: that is the result's array.
 *
 * Lifetime: `attached` counts the reactions not yet run or dropped, plus
 * one "share" for the result.  The share goes when the result stops needing
 * the inputs: at once if the result forwards an input's outcome, or when
 * the result (whose value points into this block) is freed.  Releasing the
 * share releases the inputs; the block is freed when `attached` reaches 0.
 */
#include <stddef.h>
#include <string.h>

#include "internal.h"

enum { K_ALL, K_SETTLED, K_RACE, K_ANY };

typedef struct combo_s combo_t;
struct combo_s {
  uvp__cell_owner_t owner; /* first: all's cells name the block */
  uvp_ctx_t *ctx;
  void *block;           /* what c is in: the allocator's block */
  size_t bytes;          /* its capacity: uvp__ctx_block_get */
  uvp_promise_t *result; /* our reference, while undecided */
  size_t n;
  size_t remaining;
  size_t attached;
  int kind;
  int flags;
  bool done;
  bool inputs_held;
  union {
    uvp_values_t values;
    uvp_settled_list_t list;
  } view;
  uvp__reaction_t *rx;  /* n: the reaction (all: the cell) on input i */
  uvp_settled_t *items; /* allSettled, any: the same memory as rx */
};

_Static_assert(sizeof(uvp_settled_t) == sizeof(uvp__reaction_t) &&
                   offsetof(uvp_settled_t, reserved) ==
                       offsetof(uvp__reaction_t, arg),
               "a record must fit its reaction, and its NULL `reserved` "
               "tell it from a reaction (whose `arg` is the combo)");

/* Input i.  For allSettled and any, rx[i] is still a reaction (the input
 * is its target, with flags in the low bits, and its `arg` is the combo)
 * or already a record (the input is its `promise`, and `reserved` is
 * NULL).  Read as bytes: the memory may have been written through either
 * type. */
static uvp_promise_t *input_at(const combo_t *c, size_t i) {
  if (c->owner.sources != NULL)
    return c->owner.sources[i];
  const char *at = (const char *)&c->rx[i];
  void *arg;
  uintptr_t t;
  memcpy(&arg, at + offsetof(uvp__reaction_t, arg), sizeof(arg));
  if (arg == NULL) {
    memcpy(&t, at + offsetof(uvp_settled_t, promise), sizeof(t));
    return (uvp_promise_t *)t;
  }
  memcpy(&t, at + offsetof(uvp__reaction_t, target), sizeof(t));
  return uvp__untag(t);
}

static uvp__reaction_t *cell_at(const combo_t *c, size_t i) {
  return (uvp__reaction_t *)(void *)((char *)c->rx + UVP__CELL_SIZE * i);
}

/* Where all's value for input i waits until every input is in: the spent
 * cell's `next`, on the line the drain has just loaded.  Gathering the
 * values in input order at the end is one pass through memory in order,
 * rather than a store to a cold line per input. */
static void *value_slot(const combo_t *c, size_t i) {
  return (char *)cell_at(c, i) + offsetof(uvp__reaction_t, next);
}

/* Into the front of the cells: value i moves from byte 16i to 8i, over
 * cells already read. */
static void gather_values(combo_t *c) {
  void **values = (void **)(void *)c->rx;
  for (size_t i = 0; i < c->n; i++)
    memmove(&values[i], value_slot(c, i), sizeof(void *));
}

static void record(combo_t *c, size_t i, const uvp_outcome_t *in) {
  uvp_settled_t *it = &c->items[i];
  it->status = in->status;
  it->value = in->value;
  it->promise = in->promise;
  it->reserved = NULL;
}

static void combo_unref(combo_t *c) {
  if (--c->attached == 0)
    uvp__ctx_block_put(c->ctx, c->block, c->bytes);
}

static void release_share(combo_t *c) {
  c->attached++; /* releasing inputs may drop reactions that unref us */
  if (c->inputs_held) {
    c->inputs_held = false;
    for (size_t i = 0; i < c->n; i++)
      uvp__rel(input_at(c, i));
  }
  c->attached--; /* the guard */
  combo_unref(c);  /* the share */
}

static void view_free(void *view) {
  release_share(UVP__CONTAINER_OF(view, combo_t, view));
}

static uvp_ret_t combo_react(void *arg, const uvp_outcome_t *in);

/* Whether this combinator is all that observes `in` (each reaction on it is
 * one of ours): uvp_promise_cancel's rule for what a cancellation may reach.
 * References are not consumers; reactions are. */
static bool sole_consumer(const combo_t *c, const uvp_promise_t *in) {
  for (const uvp__reaction_t *r = in->reactions; r != NULL; r = r->next) {
    if (uvp__is_cell(r)) {
      if (uvp__reaction_target(r) != (const void *)c)
        return false;
    } else if (r->cb != combo_react || r < c->rx || r >= c->rx + c->n) {
      return false;
    }
  }
  return in->reactions != NULL;
}

/* Cancel the pending inputs: every one when the caller asked for it
 * (UVP_CANCEL_LOSERS: inputs it owns), else only those nobody else
 * observes, so cancelling one combinator never rejects another's input. */
static void cancel_pending_inputs(combo_t *c, bool every) {
  for (size_t i = 0; i < c->n; i++) {
    uvp_promise_t *in = input_at(c, i);
    if (in->state == UVP__S_PENDING && (every || sole_consumer(c, in)))
      (void)uvp_promise_cancel(in);
  }
}

/* The result has just been settled: drop what the combo holds for it. */
static void finish(combo_t *c, bool result_owns_view) {
  c->done = true;
  c->attached++;
  if (c->flags & UVP_CANCEL_LOSERS)
    cancel_pending_inputs(c, true);
  if (!result_owns_view)
    release_share(c);
  uvp_promise_t *r = c->result;
  c->result = NULL;
  uvp__rel(r);
  combo_unref(c);
}

static void settle_with_view(combo_t *c, bool reject) {
  if (reject)
    uvp__reject(c->result, UVP_EAGGREGATE, &c->view, view_free);
  else
    uvp__fulfill(c->result, &c->view, view_free);
  finish(c, true);
}

static void settle_like(combo_t *c, uvp_promise_t *input) {
  uvp__forward(c->result, input);
  finish(c, false);
}

/* Input i settled as `in` (NULL: its reaction was dropped). */
static void combo_on(combo_t *c, size_t i, const uvp_outcome_t *in) {
  if (in == NULL || c->done || c->result->state != UVP__S_PENDING) {
    combo_unref(c);
    return;
  }
  switch (c->kind) {
  case K_ALL:
    if (in->status != 0) {
      settle_like(c, in->promise);
      break;
    }
    memcpy(value_slot(c, i), &in->value, sizeof(in->value));
    if (--c->remaining == 0) {
      gather_values(c);
      settle_with_view(c, false);
    }
    break;
  case K_SETTLED:
    record(c, i, in);
    if (in->status == 0)
      c->view.list.fulfilled++;
    else
      c->view.list.rejected++;
    if (--c->remaining == 0)
      settle_with_view(c, false);
    break;
  case K_RACE:
    settle_like(c, in->promise);
    break;
  default: /* K_ANY */
    if (in->status == 0) {
      settle_like(c, in->promise);
    } else {
      record(c, i, in);
      c->view.list.rejected++;
      if (--c->remaining == 0)
        settle_with_view(c, true);
    }
    break;
  }
  combo_unref(c);
}

static uvp_ret_t combo_react(void *arg, const uvp_outcome_t *in) {
  combo_t *c = arg;
  uvp_ret_t none = {0};
  combo_on(c, in == NULL ? 0 : (size_t)(uvp__outcome_reaction(in) - c->rx),
           in);
  return none;
}

static void cell_run(uvp__cell_owner_t *owner, size_t i,
                     const uvp_outcome_t *in) {
  combo_on((combo_t *)(void *)owner, i, in);
}

static const uvp__cell_ops_t cell_ops = {cell_run};

/* The result was cancelled (UV_ECANCELED) or torn down (UVP_ECLOSED). */
static void combo_cancel(uvp_promise_t *result, void *arg) {
  combo_t *c = arg;
  c->attached++;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED)
    cancel_pending_inputs(c, false);
  c->done = true;
  release_share(c);
  uvp_promise_t *r = c->result;
  c->result = NULL;
  uvp__rel(r);
  combo_unref(c);
}

static int combo_start(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, int kind, uvp_promise_t **out,
                       const char *file, int line) {
  if (ctx == NULL || out == NULL || (inputs == NULL && n > 0) ||
      (flags & ~UVP_CANCEL_LOSERS) != 0)
    return UV_EINVAL;
  if (ctx->closed)
    return UVP_ECLOSED;
  for (size_t i = 0; i < n; i++) {
    if (inputs[i] == NULL)
      return UV_EINVAL;
    if (uvp__promise_ctx(inputs[i]) != ctx)
      return UVP_EXCTX;
  }

  bool records = kind == K_SETTLED || kind == K_ANY;
  size_t per = kind == K_ALL ? UVP__CELL_SIZE + sizeof(uvp_promise_t *)
                             : sizeof(uvp__reaction_t);
  /* all's cells name c with 4 bits of kind: c is 16-byte aligned, even
   * where a replaced allocator only promises 8. */
  enum { ALIGN = UVP__R_TAG + 1 };
  if (n > (SIZE_MAX - sizeof(combo_t) - ALIGN) / per)
    return UV_ENOMEM;
  size_t bytes = sizeof(combo_t) + ALIGN - 1 + n * per;
  void *block = uvp__ctx_block_get(ctx, &bytes);
  if (block == NULL)
    return UV_ENOMEM;
  uvp_promise_t *result = uvp__promise_new(ctx, file, line);
  if (result == NULL) {
    uvp__ctx_block_put(ctx, block, bytes);
    return UV_ENOMEM;
  }
  combo_t *c = (combo_t *)(((uintptr_t)block + ALIGN - 1) &
                           ~(uintptr_t)(ALIGN - 1));
  memset(c, 0, sizeof(*c));
  c->block = block;
  c->owner.ops = &cell_ops;
  c->ctx = ctx;
  c->bytes = bytes;
  c->rx = (uvp__reaction_t *)(c + 1);
  if (records) {
    c->items = (uvp_settled_t *)(void *)c->rx;
    c->view.list.count = n;
    c->view.list.items = c->items;
  } else if (kind == K_ALL) {
    c->owner.cells = c->rx;
    c->owner.sources =
        (uvp_promise_t **)(void *)((char *)c->rx + UVP__CELL_SIZE * n);
    c->view.values.count = n;
    c->view.values.values = (void **)(void *)c->rx; /* see gather_values */
  }

  c->n = c->remaining = n;
  c->attached = n + 1;
  c->kind = kind;
  c->flags = flags;
  c->inputs_held = true;
  c->result = uvp_promise_retain(result);
  (void)uvp_promise_set_cancel(result, combo_cancel, c);
  result->flags |= UVP__F_OWNED;
  *out = result;

  for (size_t i = 0; i < n; i++) {
    uvp_promise_t *in = uvp_promise_retain(inputs[i]);
    if (kind == K_ALL) {
      c->owner.sources[i] = in;
      uvp__cell_init(cell_at(c, i), &c->owner);
      uvp__attach(in, cell_at(c, i));
    } else {
      uvp__reaction_init(&c->rx[i], combo_react, c, in,
                         UVP__R_NODERIVED | UVP__R_ON_OK | UVP__R_ON_ERR |
                             UVP__R_NOTIFY);
      uvp__attach(in, &c->rx[i]);
    }
  }

  if (n == 0 && kind != K_RACE)
    settle_with_view(c, kind == K_ANY);
  return 0;
}

int uvp_promise_all_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, uvp_promise_t **out, const char *file,
                       int line) {
  return combo_start(ctx, inputs, n, flags, K_ALL, out, file, line);
}

int uvp_promise_all_settled_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                               size_t n, uvp_promise_t **out, const char *file,
                               int line) {
  return combo_start(ctx, inputs, n, 0, K_SETTLED, out, file, line);
}

int uvp_promise_race_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                        int flags, uvp_promise_t **out, const char *file,
                        int line) {
  return combo_start(ctx, inputs, n, flags, K_RACE, out, file, line);
}

int uvp_promise_any_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, uvp_promise_t **out, const char *file,
                       int line) {
  return combo_start(ctx, inputs, n, flags, K_ANY, out, file, line);
}

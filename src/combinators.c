/* all, allSettled, race and any.
 *
 * One allocation per call holds the state and one 24-byte slot per input
 * (settled.h): the cell that observes the input, then, for allSettled and
 * any, the input's record, written over the spent cell.  No per-input
 * allocation exists at all, and a million inputs' cells sit in one array
 * in input order rather than scattered over the reaction pool.  all keeps
 * each value in its spent cell too and, once the last is in, gathers them
 * in input order into an array after the slots: one pass through memory in
 * order, rather than a store to a cold line per input (docs/internals.md).
 *
 * Lifetime: `attached` counts the cells not yet run or dropped, plus one
 * "share" for the result.  The share goes when the result stops needing
 * the inputs: at once if the result forwards an input's outcome, or when
 * the result (whose value points into this block) is freed.  Releasing the
 * share releases the inputs; the block is freed when `attached` reaches 0.
 */
#include <string.h>

#include "sched.h"
#include "settled.h"

enum { K_ALL, K_SETTLED, K_RACE, K_ANY };

typedef struct combo_s {
  uvp__cell_owner_t owner; /* first: the cells name the combo through it */
  uvp_ctx_t *ctx;
  void *block;           /* what the combo is in */
  size_t bytes;          /* its capacity: uvp__block_get */
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
  uvp__slot_t *in; /* n */
  void **values;   /* all: n, after the slots */
} combo_t;

static void combo_unref(combo_t *c) {
  if (--c->attached == 0)
    uvp__block_put(&c->ctx->blocks, c->block, c->bytes, !c->ctx->closed);
}

static void release_share(combo_t *c) {
  c->attached++; /* releasing inputs may drop cells that unref us */
  if (c->inputs_held) {
    c->inputs_held = false;
    for (size_t i = 0; i < c->n; i++)
      uvp__rel(uvp__slot_input(&c->in[i]));
  }
  c->attached--; /* the guard */
  combo_unref(c); /* the share */
}

static void view_free(void *view) {
  release_share(UVP__CONTAINER_OF(view, combo_t, view));
}

/* Cancel the pending inputs: every one when the caller asked for it
 * (UVP_CANCEL_LOSERS: inputs it owns), else only those nobody else
 * observes, so cancelling one combinator never rejects another's input. */
static void cancel_pending_inputs(combo_t *c, bool every) {
  for (size_t i = 0; i < c->n; i++) {
    uvp_promise_t *in = uvp__slot_input(&c->in[i]);
    if (uvp__is_pending(in) && (every || uvp__sole_consumer(in, &c->owner)))
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

/* Input i settled as `in`; returns whether the result is now decided. */
static bool on_outcome(combo_t *c, size_t i, const uvp_outcome_t *in) {
  switch (c->kind) {
  case K_ALL:
    if (in->status != 0) {
      settle_like(c, in->promise);
      return true;
    }
    uvp__slot_record(&c->in[i], 0, in->value);
    if (--c->remaining != 0)
      return false;
    for (size_t k = 0; k < c->n; k++)
      c->values[k] = c->in[k].rec.value;
    settle_with_view(c, false);
    return true;
  case K_SETTLED:
    uvp__slot_record(&c->in[i], in->status, in->value);
    if (in->status == 0)
      c->view.list.fulfilled++;
    else
      c->view.list.rejected++;
    if (--c->remaining != 0)
      return false;
    settle_with_view(c, false);
    return true;
  case K_RACE:
    settle_like(c, in->promise);
    return true;
  default: /* K_ANY */
    if (in->status == 0) {
      settle_like(c, in->promise);
      return true;
    }
    uvp__slot_record(&c->in[i], in->status, in->value);
    c->view.list.rejected++;
    if (--c->remaining != 0)
      return false;
    settle_with_view(c, true);
    return true;
  }
}

/* Cell i's input settled as `in` (NULL: the cell was dropped). */
static void cell_run(uvp__cell_owner_t *owner, size_t i,
                     const uvp_outcome_t *in) {
  combo_t *c = UVP__CONTAINER_OF(owner, combo_t, owner);
  if (in != NULL && !c->done && uvp__is_pending(c->result))
    (void)on_outcome(c, i, in);
  combo_unref(c);
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

static int check_inputs(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                        size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (inputs[i] == NULL)
      return UV_EINVAL;
    if (uvp__promise_ctx(inputs[i]) != ctx)
      return UVP_EXCTX;
  }
  return 0;
}

/* The block: the combo, aligned for the cells' tags, then the slots, then
 * all's values.  NULL if there is no memory. */
static combo_t *combo_alloc(uvp_ctx_t *ctx, size_t n, int kind) {
  enum { ALIGN = UVP__SLOT_ALIGN }; /* even where malloc promises only 8 */
  size_t per = sizeof(uvp__slot_t) + (kind == K_ALL ? sizeof(void *) : 0);
  if (n > (SIZE_MAX - sizeof(combo_t) - ALIGN) / per)
    return NULL;
  size_t bytes = sizeof(combo_t) + ALIGN - 1 + n * per;
  void *block = uvp__block_get(&ctx->blocks, &bytes);
  if (block == NULL)
    return NULL;
  combo_t *c = (combo_t *)(((uintptr_t)block + ALIGN - 1) &
                           ~(uintptr_t)(ALIGN - 1));
  memset(c, 0, sizeof(*c));
  c->block = block;
  c->bytes = bytes;
  c->ctx = ctx;
  c->in = (uvp__slot_t *)(c + 1);
  c->owner.ops = &cell_ops;
  c->owner.cells = &c->in[0].cell;
  if (kind == K_ALL) {
    c->values = (void **)(c->in + n);
    c->view.values.count = n;
    c->view.values.values = c->values;
  } else {
    c->view.list.count = n;
    c->view.list.items = &c->in[0].rec;
  }
  return c;
}

static int combo_start(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, int kind, uvp_promise_t **out,
                       const char *file, int line) {
  int rc = out == NULL || (inputs == NULL && n > 0) ||
                   (flags & ~UVP_CANCEL_LOSERS) != 0
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc == 0)
    rc = check_inputs(ctx, inputs, n);
  if (rc != 0)
    return rc;
  combo_t *c = combo_alloc(ctx, n, kind);
  if (c == NULL)
    return UV_ENOMEM;
  c->result = uvp__produced_new(ctx, file, line, combo_cancel, c);
  if (c->result == NULL) {
    uvp__block_put(&ctx->blocks, c->block, c->bytes, true);
    return UV_ENOMEM;
  }
  c->n = c->remaining = n;
  c->attached = n + 1;
  c->kind = kind;
  c->flags = flags;
  c->inputs_held = true;
  *out = c->result;
  for (size_t i = 0; i < n; i++)
    uvp__cell_attach(&c->owner, &c->in[i].cell, uvp_promise_retain(inputs[i]));
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

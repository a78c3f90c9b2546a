/* all, allSettled, race and any.
 *
 * One allocation per call holds the remaining count and the per-input
 * slots; each input gets one internal reaction whose `arg` is its cell in
 * `cells` (the cell holds the combo pointer, the cell's position is the
 * input index), so no per-input allocation exists beyond the 32-byte slab
 * reaction.  allSettled's and any's records name their input already, so
 * only all and race keep a separate `inputs` array.
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
  combo_t **cells;
  uvp_promise_t **inputs; /* NULL when `items` names them */
  void **values;
  uvp_settled_t *items;
};

static uvp_promise_t *input_at(const combo_t *c, size_t i) {
  return c->inputs != NULL ? c->inputs[i] : c->items[i].promise;
}

static void combo_unref(combo_t *c) {
  if (--c->attached == 0)
    uvp__free(c);
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
  release_share((combo_t *)((char *)view - offsetof(combo_t, view)));
}

static uvp_ret_t combo_react(void *arg, const uvp_outcome_t *in);

/* Whether this combinator is all that observes `in` (each reaction on it is
 * one of ours): uvp_promise_cancel's rule for what a cancellation may reach.
 * References are not consumers; reactions are. */
static bool sole_consumer(const combo_t *c, const uvp_promise_t *in) {
  for (const uvp__reaction_t *r = in->reactions; r != NULL; r = r->next) {
    combo_t *const *cell = r->arg;
    if (r->cb != combo_react || cell < c->cells || cell >= c->cells + c->n)
      return false;
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

static uvp_ret_t combo_react(void *arg, const uvp_outcome_t *in) {
  combo_t **cell = arg;
  combo_t *c = *cell;
  size_t i = (size_t)(cell - c->cells);
  uvp_ret_t none = {0};
  if (in == NULL || c->done || c->result->state != UVP__S_PENDING) {
    combo_unref(c);
    return none;
  }
  switch (c->kind) {
  case K_ALL:
    if (in->status != 0) {
      settle_like(c, in->promise);
    } else {
      c->values[i] = in->value;
      if (--c->remaining == 0)
        settle_with_view(c, false);
    }
    break;
  case K_SETTLED:
    c->items[i].status = in->status;
    c->items[i].value = in->value;
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
      c->items[i].status = in->status;
      c->items[i].value = in->value;
      c->view.list.rejected++;
      if (--c->remaining == 0)
        settle_with_view(c, true);
    }
    break;
  }
  combo_unref(c);
  return none;
}

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
    if (inputs[i]->ctx != ctx)
      return UVP_EXCTX;
  }

  bool records = kind == K_SETTLED || kind == K_ANY;
  size_t per = sizeof(combo_t *);
  if (records)
    per += sizeof(uvp_settled_t);
  else
    per += sizeof(uvp_promise_t *) + (kind == K_ALL ? sizeof(void *) : 0);
  if (n > (SIZE_MAX - sizeof(combo_t)) / per)
    return UV_ENOMEM;
  combo_t *c = uvp__malloc(sizeof(combo_t) + n * per);
  if (c == NULL)
    return UV_ENOMEM;
  uvp_promise_t *result = uvp__promise_new(ctx, file, line);
  if (result == NULL) {
    uvp__free(c);
    return UV_ENOMEM;
  }
  memset(c, 0, sizeof(*c));
  c->cells = (combo_t **)(c + 1);
  if (records) {
    c->items = (uvp_settled_t *)(c->cells + n);
    c->view.list.count = n;
    c->view.list.items = c->items;
  } else {
    c->inputs = (uvp_promise_t **)(c->cells + n);
    if (kind == K_ALL) {
      c->values = (void **)(c->inputs + n);
      c->view.values.count = n;
      c->view.values.values = c->values;
    }
  }

  /* Every reaction first, so a failure leaves nothing attached. */
  uvp__reaction_t *rs = NULL;
  for (size_t i = 0; i < n; i++) {
    uvp__reaction_t *r = uvp__reaction_new(
        ctx, combo_react, &c->cells[i], inputs[i],
        UVP__R_NODERIVED | UVP__R_ON_OK | UVP__R_ON_ERR | UVP__R_NOTIFY);
    if (r == NULL) {
      while (rs != NULL) {
        uvp__reaction_t *next = rs->next;
        uvp__reaction_free(ctx, rs);
        rs = next;
      }
      uvp__rel(result);
      uvp__free(c);
      return UV_ENOMEM;
    }
    r->next = rs;
    rs = r;
  }

  c->n = c->remaining = n;
  c->attached = n + 1;
  c->kind = kind;
  c->flags = flags;
  c->inputs_held = true;
  c->result = uvp_promise_retain(result);
  for (size_t i = 0; i < n; i++) {
    c->cells[i] = c;
    uvp_promise_retain(inputs[i]);
    if (records) {
      c->items[i].status = 0;
      c->items[i].value = NULL;
      c->items[i].promise = inputs[i];
    } else {
      c->inputs[i] = inputs[i];
    }
  }
  (void)uvp_promise_set_cancel(result, combo_cancel, c);
  result->flags |= UVP__F_OWNED;
  *out = result;

  /* rs holds the reactions newest first: attach in input order. */
  uvp__reaction_t *rev = NULL;
  while (rs != NULL) {
    uvp__reaction_t *next = rs->next;
    rs->next = rev;
    rev = rs;
    rs = next;
  }
  for (size_t i = 0; i < n; i++) {
    uvp__reaction_t *next = rev->next;
    uvp__attach(inputs[i], rev);
    rev = next;
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

/* all, allSettled, race and any.
 *
 * One allocation per call holds the state and one 24-byte slot per input
 * (settled.h): the cell that observes the input, then, for allSettled and
 * any, the input's record, written over the spent cell.  No per-input
 * allocation exists at all, and a million inputs' cells sit in one array
 * in input order rather than scattered over the reaction pool.  all keeps
 * each value in its spent cell too and, once the last is in, gathers them
 * in input order into an array after the slots: one pass through memory in
 * order, rather than a store to a cold line per input
 * (docs/internals/operations.md).
 *
 * Lifetime: see uvp__fanin_t. */
#include <string.h>

#include "cause.h"
#include "settled.h"

enum { K_ALL, K_SETTLED, K_RACE, K_ANY };

typedef struct combo_s {
  uvp__fanin_t f; /* first */
  size_t remaining;
  int kind;
  int flags;
  bool done;
  union {
    uvp_values_t values;
    uvp_settled_list_t list;
  } view;
  void **values; /* all: n, after the slots */
} combo_t;

static void view_free(void *view) {
  uvp__fanin_release_share(&UVP__CONTAINER_OF(view, combo_t, view)->f);
}

/* Cancel the pending inputs: every one when the caller asked for it
 * (UVP_CANCEL_LOSERS: inputs it owns), else only those nobody else
 * observes, so cancelling one combinator never rejects another's input. */
static void cancel_pending_inputs(combo_t *c, bool every) {
  for (size_t i = 0; i < c->f.n; i++) {
    uvp_promise_t *in = uvp__slot_input(&c->f.slots[i]);
    if (uvp__is_pending(in) && (every || uvp__sole_consumer(in, &c->f.owner)))
      (void)uvp_promise_cancel(in);
  }
}

/* The result has just been settled: drop what the combo holds for it.
 * Early (winner not NULL): it was decided by one input (race, all's first
 * rejection, any's first fulfilment) and forwards that input's outcome, so
 * other inputs may still be pending and the share goes now; otherwise every
 * input has settled and the result's view, in the block, keeps the share. */
/* UVP_CANCEL_LOSERS: cancel the inputs still pending, saying the race
 * was decided by `winner`, and what settled it if it has a note (a peer
 * that closed: cause.h). */
static void cancel_losers(combo_t *c, const uvp_promise_t *winner) {
  const char *file, *pfile;
  int line, pline;
  uvp__site_get(c->f.result->site, &file, &line);
  uvp__site_get(winner->site, &pfile, &pline);
  uvp_cause_t proto = {.kind = UVP_CAUSE_LOSER,
                       .peer_code = uvp_promise_reason(winner, NULL),
                       .file = file,
                       .line = line,
                       .peer_file = pfile,
                       .peer_line = pline,
                       .message = uvp__note_of(winner)};
  uvp__cause_t *cause = uvp__cause_new(&proto, NULL);
  uvp__cause_t *outer = uvp__cause_enter(c->f.ctx, cause);
  cancel_pending_inputs(c, true);
  uvp__cause_leave(c->f.ctx, outer);
  uvp__cause_unref(cause);
}

static void finish(combo_t *c, const uvp_promise_t *winner) {
  bool early = winner != NULL;
  c->done = true;
  c->f.attached++;
  if (early) {
    if (c->flags & UVP_CANCEL_LOSERS)
      cancel_losers(c, winner);
    uvp__fanin_detach(&c->f);
    uvp__fanin_release_share(&c->f);
  }
  uvp__fanin_drop_result(&c->f);
  uvp__fanin_unref(&c->f);
}

static void settle_with_view(combo_t *c, bool reject) {
  if (reject)
    uvp__reject(c->f.result, UVP_EAGGREGATE, &c->view, view_free);
  else
    uvp__fulfill(c->f.result, &c->view, view_free);
  finish(c, NULL);
}

static void settle_like(combo_t *c, uvp_promise_t *input) {
  uvp__forward(c->f.result, input);
  finish(c, input);
}

/* Input i settled as `in`; returns whether the result is now decided. */
static bool on_outcome(combo_t *c, size_t i, const uvp_outcome_t *in) {
  switch (c->kind) {
  case K_ALL:
    if (in->status != 0) {
      settle_like(c, in->promise);
      return true;
    }
    uvp__slot_record(&c->f.slots[i], 0, in->value);
    if (--c->remaining != 0)
      return false;
    for (size_t k = 0; k < c->f.n; k++)
      c->values[k] = c->f.slots[k].rec.value;
    settle_with_view(c, false);
    return true;
  case K_SETTLED:
    uvp__slot_record(&c->f.slots[i], in->status, in->value);
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
    uvp__slot_record(&c->f.slots[i], in->status, in->value);
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
  combo_t *c = UVP__CONTAINER_OF(owner, combo_t, f.owner);
  if (in != NULL && !c->done && uvp__is_pending(c->f.result))
    (void)on_outcome(c, i, in);
  uvp__fanin_unref(&c->f);
}

static const uvp__cell_ops_t cell_ops = {cell_run, NULL, uvp__fanin_settles};

/* The result was cancelled (UV_ECANCELED) or torn down (UVP_ECLOSED). */
static void combo_cancel(uvp_promise_t *result, void *arg) {
  combo_t *c = arg;
  c->f.attached++;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED)
    cancel_pending_inputs(c, false);
  c->done = true;
  uvp__fanin_detach(&c->f);
  uvp__fanin_release_share(&c->f);
  uvp__fanin_drop_result(&c->f);
  uvp__fanin_unref(&c->f);
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

/* A call given UVP_TAKE_INPUTS that fails still owns the inputs. */
static int refuse(uvp_promise_t *const *inputs, size_t n, int flags, int rc) {
  if ((flags & UVP_TAKE_INPUTS) && inputs != NULL)
    for (size_t i = 0; i < n; i++)
      uvp_promise_release(inputs[i]);
  return rc;
}

static int combo_start(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, int allowed, int kind, uvp_promise_t **out,
                       const char *file, int line) {
  int rc = out == NULL || (inputs == NULL && n > 0) || (flags & ~allowed) != 0
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc == 0)
    rc = check_inputs(ctx, inputs, n);
  if (rc != 0)
    return refuse(inputs, n, flags, rc);
  combo_t *c = uvp__fanin_new(ctx, sizeof(combo_t), n,
                              kind == K_ALL ? sizeof(void *) : 0, &cell_ops,
                              combo_cancel, file, line);
  if (c == NULL)
    return refuse(inputs, n, flags, UV_ENOMEM);
  if (kind == K_ALL) {
    c->values = (void **)(void *)(c->f.slots + n);
    c->view.values.count = n;
    c->view.values.values = c->values;
  } else {
    c->view.list.count = n;
    c->view.list.items = &c->f.slots[0].rec;
  }
  c->remaining = n;
  c->f.attached += n;
  c->kind = kind;
  c->flags = flags;
  *out = c->f.result;
  /* The cells hold the inputs (the share releases them): taken, the
   * caller's references are theirs. */
  if (flags & UVP_TAKE_INPUTS)
    for (size_t i = 0; i < n; i++)
      uvp__cell_attach(&c->f.owner, &c->f.slots[i].cell, inputs[i]);
  else
    for (size_t i = 0; i < n; i++)
      uvp__cell_attach(&c->f.owner, &c->f.slots[i].cell,
                       uvp_promise_retain(inputs[i]));
  if (n == 0 && kind != K_RACE)
    settle_with_view(c, kind == K_ANY);
  return 0;
}

enum { ANY_FLAG = UVP_CANCEL_LOSERS | UVP_TAKE_INPUTS };

int uvp_promise_all_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, uvp_promise_t **out, const char *file,
                       int line) {
  return combo_start(ctx, inputs, n, flags, ANY_FLAG, K_ALL, out, file, line);
}

int uvp_promise_all_settled_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                               size_t n, uvp_promise_t **out, const char *file,
                               int line) {
  return combo_start(ctx, inputs, n, 0, 0, K_SETTLED, out, file, line);
}

int uvp_promise_all_settled_ex_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                                  size_t n, int flags, uvp_promise_t **out,
                                  const char *file, int line) {
  return combo_start(ctx, inputs, n, flags, UVP_TAKE_INPUTS, K_SETTLED, out,
                     file, line);
}

int uvp_promise_race_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                        int flags, uvp_promise_t **out, const char *file,
                        int line) {
  return combo_start(ctx, inputs, n, flags, ANY_FLAG, K_RACE, out, file, line);
}

int uvp_promise_any_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs, size_t n,
                       int flags, uvp_promise_t **out, const char *file,
                       int line) {
  return combo_start(ctx, inputs, n, flags, ANY_FLAG, K_ANY, out, file, line);
}

/* What users do after allSettled: sequences (loop/reduce), retry with
 * backoff, and splitting outcomes.
 *
 * Sequences and retry are small state machines driven by one internal
 * reaction at a time on the promise currently awaited, so each step runs
 * from the scheduler (constant stack) and only that promise is held
 * (constant memory).  `refs` counts that reaction plus one share for the
 * result while it is undecided. */
#include <math.h>
#include <string.h>

#include "sched.h"

/* ---- the driver both share ----------------------------------------------- */

/* First in a sequence's and a retry's state, which is freed with it. */
typedef struct drive_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *result; /* our reference while undecided */
  uvp_promise_t *cur;    /* the promise awaited */
  uvp__notify_cb react;  /* what runs when cur settles */
  int refs;
  void *arg; /* the user's callbacks' */
  uvp_free_cb arg_free;
  int calling; /* a user callback is running */
} drive_t;

/* Once the result is decided and no callback is running, none will run
 * again: arg goes. */
static void drive_free_arg(drive_t *d) {
  if (d->result == NULL && d->calling == 0 && d->arg_free != NULL) {
    uvp_free_cb f = d->arg_free;
    d->arg_free = NULL;
    f(d->arg);
  }
}

static void drive_unref(drive_t *d) {
  if (--d->refs == 0) {
    if (d->cur != NULL)
      uvp__unref(d->cur);
    uvp__free(d);
  }
}

/* Settle the result like `src` (or with `code`) and let go of it. */
static void drive_decide(drive_t *d, uvp_promise_t *src, int code) {
  uvp_promise_t *r = d->result;
  d->result = NULL;
  if (src != NULL)
    uvp__forward(r, src);
  else
    uvp__reject(r, code, NULL, NULL);
  uvp__unref(r);
  drive_free_arg(d);
  drive_unref(d); /* the share */
}

/* Await `p` (its reference is handed over) as the current step. */
static void drive_await(drive_t *d, uvp_promise_t *p) {
  if (d->cur != NULL)
    uvp__unref(d->cur);
  d->cur = p;
  d->refs++;
  if (uvp__observe(p, d->react, d) != 0) {
    d->refs--;
    drive_decide(d, NULL, UV_ENOMEM);
  }
}

/* What a step or an attempt returned: the promise to await, or NULL with
 * *rc saying why not (0: none was given), after releasing one of no use
 * (the call failed, it is of another context, or the result was cancelled
 * from inside the callback). */
static uvp_promise_t *drive_take(drive_t *d, uvp_promise_t *p, int *rc) {
  if (*rc == 0 && p != NULL && uvp__promise_ctx(p) != d->ctx)
    *rc = UVP_EXCTX;
  if (*rc == 0 && d->result != NULL)
    return p;
  if (p != NULL)
    uvp_promise_release(p);
  return NULL;
}

/* The result was cancelled (UV_ECANCELED) or torn down (UVP_ECLOSED). */
static void drive_cancel(uvp_promise_t *result, void *arg) {
  drive_t *d = arg;
  d->refs++;
  uvp_promise_t *r = d->result;
  d->result = NULL;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED && d->cur != NULL)
    uvp__give_up(d->cur, d->react, d, false);
  uvp__unref(r);
  drive_free_arg(d);
  drive_unref(d); /* the share */
  drive_unref(d); /* guard */
}

/* A driver with `size` bytes of state, zeroed: NULL on failure (no memory,
 * the only reason). */
static void *drive_new(uvp_ctx_t *ctx, size_t size, uvp__notify_cb react,
                       void *arg, uvp_free_cb arg_free, const char *file,
                       int line) {
  drive_t *d = uvp__calloc(1, size);
  if (d == NULL)
    return NULL;
  d->result = uvp__produced_new(ctx, file, line, drive_cancel, d);
  if (d->result == NULL) {
    uvp__free(d);
    return NULL;
  }
  d->ctx = ctx;
  d->react = react;
  d->arg = arg;
  d->arg_free = arg_free;
  d->refs = 1; /* the share */
  return d;
}

/* ---- loop / reduce ------------------------------------------------------- */

typedef struct seq_s {
  drive_t d; /* first */
  uvp_step_cb step;
  size_t index;
  size_t n;
} seq_t;

static void seq_react(void *arg, const uvp_outcome_t *in) {
  seq_t *s = arg;
  drive_t *d = &s->d;
  if (in == NULL || d->result == NULL) {
    drive_unref(d);
    return;
  }
  d->refs++; /* guard: the step may cancel the result */
  if (in->status != 0 || s->index == s->n) {
    drive_decide(d, in->promise, 0);
  } else {
    uvp_promise_t *next = NULL;
    d->calling++;
    int rc = s->step(d->arg, s->index++, in, &next);
    d->calling--;
    next = drive_take(d, next, &rc);
    if (d->result == NULL)
      drive_free_arg(d); /* cancelled inside the step */
    else if (rc != 0)
      drive_decide(d, NULL, rc < 0 ? rc : UV_EINVAL);
    else if (next == NULL)
      drive_decide(d, in->promise, 0);
    else
      drive_await(d, next);
  }
  drive_unref(d); /* guard */
  drive_unref(d); /* this reaction */
}

static int seq_start(uvp_ctx_t *ctx, size_t n, uvp_step_cb step, void *arg,
                     uvp_free_cb arg_free, uvp_promise_t *initial,
                     uvp_promise_t **out, const char *file, int line) {
  int rc = step == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc == 0 && initial != NULL && uvp__promise_ctx(initial) != ctx)
    rc = UVP_EXCTX;
  if (rc != 0)
    return rc;
  seq_t *s = drive_new(ctx, sizeof(*s), seq_react, arg, arg_free, file, line);
  uvp_promise_t *first = s == NULL         ? NULL
                         : initial != NULL ? uvp_promise_retain(initial)
                                           : uvp__promise_new(ctx, file, line);
  if (first == NULL || uvp__observe(first, seq_react, s) != 0) {
    if (first != NULL)
      uvp__unref(first);
    if (s != NULL) {
      uvp__produced_abort(s->d.result);
      uvp__free(s);
    }
    return UV_ENOMEM;
  }
  if (initial == NULL)
    uvp__fulfill(first, NULL, NULL);
  s->d.cur = first;
  s->d.refs++; /* the reaction */
  s->step = step;
  s->n = n;
  *out = s->d.result;
  return 0;
}

int uvp_promise_loop_full_at(uvp_ctx_t *ctx, uvp_step_cb step, void *arg,
                             uvp_free_cb arg_free, uvp_promise_t **out,
                             const char *file, int line) {
  return uvp__refuse(
      seq_start(ctx, SIZE_MAX, step, arg, arg_free, NULL, out, file, line), arg,
      arg_free);
}

int uvp_promise_loop_at(uvp_ctx_t *ctx, uvp_step_cb step, void *arg,
                        uvp_promise_t **out, const char *file, int line) {
  return seq_start(ctx, SIZE_MAX, step, arg, NULL, NULL, out, file, line);
}

int uvp_promise_reduce_full_at(uvp_ctx_t *ctx, size_t n, uvp_step_cb step,
                               void *arg, uvp_free_cb arg_free,
                               uvp_promise_t *initial, uvp_promise_t **out,
                               const char *file, int line) {
  return uvp__refuse(
      seq_start(ctx, n, step, arg, arg_free, initial, out, file, line), arg,
      arg_free);
}

int uvp_promise_reduce_at(uvp_ctx_t *ctx, size_t n, uvp_step_cb step, void *arg,
                          uvp_promise_t *initial, uvp_promise_t **out,
                          const char *file, int line) {
  return seq_start(ctx, n, step, arg, NULL, initial, out, file, line);
}

/* ---- retry --------------------------------------------------------------- */

typedef struct retry_s {
  drive_t d; /* first; cur is the attempt, or the backoff delay */
  uvp_attempt_cb attempt;
  uvp_retry_opts_t opts;
  uint64_t rng;
  unsigned int tries; /* attempts started */
  bool waiting;       /* cur is the backoff */
  const char *file;
  int line;
} retry_t;

static void retry_start_attempt(retry_t *t) {
  uvp_promise_t *p = NULL;
  t->d.calling++;
  int rc = t->attempt(t->d.arg, t->tries++, &p);
  t->d.calling--;
  if (rc == 0 && p == NULL)
    rc = UV_EINVAL;
  p = drive_take(&t->d, p, &rc);
  if (t->d.result == NULL) {
    drive_free_arg(&t->d); /* cancelled from inside the attempt */
    return;
  }
  if (rc != 0) {
    /* A refused start is a failed attempt like any other. */
    p = uvp__promise_new(t->d.ctx, t->file, t->line);
    if (p == NULL) {
      drive_decide(&t->d, NULL, UV_ENOMEM);
      return;
    }
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  drive_await(&t->d, p);
}

static bool retryable(retry_t *t, int code) {
  if (t->opts.should_retry != NULL) {
    t->d.calling++;
    bool again = t->opts.should_retry(t->d.arg, code, t->tries - 1) != 0;
    t->d.calling--;
    return again;
  }
  if (t->opts.retry_on == NULL)
    return true;
  for (size_t i = 0; i < t->opts.retry_on_count; i++)
    if (t->opts.retry_on[i] == code)
      return true;
  return false;
}

static uint64_t backoff_ms(retry_t *t) {
  double w = (double)t->opts.base_ms * pow(t->opts.factor, t->tries - 1);
  if (w > (double)t->opts.max_ms)
    w = (double)t->opts.max_ms;
  /* xorshift64*: jitter needs spread, not cryptographic quality. */
  t->rng ^= t->rng >> 12;
  t->rng ^= t->rng << 25;
  t->rng ^= t->rng >> 27;
  double u =
      (double)((t->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
  double ms = w * (1.0 - t->opts.jitter * u);
  /* 2^64 ms and beyond (max_ms = UINT64_MAX, a steep factor) do not fit a
   * uint64_t: the cast would be undefined (0 on x86-64, no wait at all). */
  if (!(ms < 18446744073709551616.0))
    return UINT64_MAX;
  return (uint64_t)ms;
}

/* Wait before the next attempt. */
static void retry_backoff(retry_t *t) {
  uvp_promise_t *delay;
  int rc = uvp_delay_at(t->d.ctx, backoff_ms(t), NULL, NULL, UVP_KEEP_ALIVE,
                        &delay, t->file, t->line);
  if (rc != 0) {
    drive_decide(&t->d, NULL, rc); /* why the retrying stopped */
  } else {
    t->waiting = true;
    drive_await(&t->d, delay);
  }
}

static void retry_react(void *arg, const uvp_outcome_t *in) {
  retry_t *t = arg;
  if (in == NULL || t->d.result == NULL) {
    drive_unref(&t->d);
    return;
  }
  t->d.refs++; /* guard */
  if (t->waiting) {
    t->waiting = false;
    retry_start_attempt(t);
  } else {
    bool last = in->status == 0 || t->tries >= t->opts.attempts ||
                !retryable(t, in->status);
    if (t->d.result == NULL)
      drive_free_arg(&t->d); /* cancelled from inside should_retry */
    else if (last)
      drive_decide(&t->d, in->promise, 0);
    else
      retry_backoff(t);
  }
  drive_unref(&t->d); /* guard */
  drive_unref(&t->d); /* this reaction */
}

/* The defaults the header documents for the fields left 0. */
static void retry_defaults(uvp_retry_opts_t *o) {
  if (o->attempts == 0)
    o->attempts = 3;
  if (o->base_ms == 0)
    o->base_ms = 100;
  if (o->max_ms == 0)
    o->max_ms = 30000;
  if (!(o->factor > 1.0))
    o->factor = 2.0;
  if (!(o->jitter >= 0.0 && o->jitter <= 1.0))
    o->jitter = 0.0;
}

int uvp_retry_at(uvp_ctx_t *ctx, uvp_attempt_cb attempt, void *arg,
                 const uvp_retry_opts_t *opts, uvp_promise_t **out,
                 const char *file, int line) {
  uvp_free_cb arg_free = opts != NULL ? opts->arg_free : NULL;
  int rc = attempt == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, arg, arg_free);
  retry_t *t =
      drive_new(ctx, sizeof(*t), retry_react, arg, arg_free, file, line);
  if (t == NULL)
    return uvp__refuse(UV_ENOMEM, arg, arg_free);
  if (opts != NULL)
    t->opts = *opts;
  retry_defaults(&t->opts);
  t->attempt = attempt;
  t->rng = uv_hrtime() | 1;
  t->file = file;
  t->line = line;
  *out = t->d.result;
  /* The first attempt starts now, as a JavaScript retry loop would. */
  t->d.refs++;
  retry_start_attempt(t);
  drive_unref(&t->d);
  return 0;
}

/* ---- split --------------------------------------------------------------- */

int uvp_settled_split(const uvp_settled_list_t *list, uvp_split_t *out) {
  if (list == NULL || out == NULL || (list->items == NULL && list->count > 0))
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  uvp_indexed_t *all =
      uvp__malloc((list->count ? list->count : 1) * sizeof(uvp_indexed_t));
  if (all == NULL)
    return UV_ENOMEM;
  size_t ok = 0;
  for (size_t i = 0; i < list->count; i++)
    ok += list->items[i].status == 0;
  out->fulfilled = all;
  out->rejected = all + ok;
  for (size_t i = 0; i < list->count; i++) {
    const uvp_settled_t *it = &list->items[i];
    uvp_indexed_t *dst = it->status == 0 ? &out->fulfilled[out->nfulfilled++]
                                         : &out->rejected[out->nrejected++];
    dst->index = i;
    dst->status = it->status;
    dst->value = it->value;
  }
  return 0;
}

void uvp_split_free(uvp_split_t *split) {
  if (split == NULL)
    return;
  uvp__free(split->fulfilled);
  memset(split, 0, sizeof(*split));
}

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

/* ---- loop / reduce -------------------------------------------------------- */

typedef struct seq_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *result; /* our reference while undecided */
  uvp_promise_t *cur;    /* the step awaited */
  uvp_step_cb step;
  void *arg;
  size_t index;
  size_t n;
  int refs;
} seq_t;

static void seq_unref(seq_t *s) {
  if (--s->refs == 0) {
    if (s->cur != NULL)
      uvp__rel(s->cur);
    uvp__free(s);
  }
}

/* Settle the result like `src` (or with `code`) and let go of it. */
static void seq_decide(seq_t *s, uvp_promise_t *src, int code) {
  uvp_promise_t *r = s->result;
  s->result = NULL;
  if (src != NULL)
    uvp__forward(r, src);
  else
    uvp__reject(r, code, NULL, NULL);
  uvp__rel(r);
  seq_unref(s); /* the share */
}

static void seq_react(void *arg, const uvp_outcome_t *in) {
  seq_t *s = arg;
  if (in == NULL || s->result == NULL) {
    seq_unref(s);
    return;
  }
  s->refs++; /* guard: the step may cancel the result */
  if (in->status != 0 || s->index == s->n) {
    seq_decide(s, in->promise, 0);
  } else {
    uvp_promise_t *next = NULL;
    int rc = s->step(s->arg, s->index++, in, &next);
    if (s->result == NULL) { /* cancelled inside the step */
      if (next != NULL)
        uvp_promise_release(next);
    } else if (rc < 0 || (rc == 0 && next != NULL && uvp__promise_ctx(next) != s->ctx)) {
      if (next != NULL)
        uvp_promise_release(next);
      seq_decide(s, NULL, rc < 0 ? rc : UVP_EXCTX);
    } else if (next == NULL) {
      seq_decide(s, in->promise, 0);
    } else {
      uvp__rel(s->cur);
      s->cur = next;
      s->refs++;
      if (uvp__observe(next, seq_react, s) != 0) {
        s->refs--;
        seq_decide(s, NULL, UV_ENOMEM);
      }
    }
  }
  seq_unref(s); /* guard */
  seq_unref(s); /* this reaction */
}

static void seq_cancel(uvp_promise_t *result, void *arg) {
  seq_t *s = arg;
  (void)result;
  s->refs++;
  uvp_promise_t *r = s->result;
  s->result = NULL;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED && s->cur != NULL &&
      uvp__is_pending(s->cur))
    (void)uvp_promise_cancel(s->cur);
  uvp__rel(r);
  seq_unref(s); /* the share */
  seq_unref(s); /* guard */
}

static int seq_start(uvp_ctx_t *ctx, size_t n, uvp_step_cb step, void *arg,
                     uvp_promise_t *initial, uvp_promise_t **out,
                     const char *file, int line) {
  int rc = step == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc == 0 && initial != NULL && uvp__promise_ctx(initial) != ctx)
    rc = UVP_EXCTX;
  if (rc != 0)
    return rc;
  seq_t *s = uvp__malloc(sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  memset(s, 0, sizeof(*s));
  uvp_promise_t *first = initial != NULL ? uvp_promise_retain(initial)
                                         : uvp__promise_new(ctx, file, line);
  s->result = first == NULL
                  ? NULL
                  : uvp__produced_new(ctx, file, line, seq_cancel, s);
  if (s->result == NULL || uvp__observe(first, seq_react, s) != 0) {
    if (s->result != NULL)
      uvp__produced_abort(s->result);
    if (first != NULL)
      uvp__rel(first);
    uvp__free(s);
    return UV_ENOMEM;
  }
  if (initial == NULL)
    uvp__fulfill(first, NULL, NULL);
  s->ctx = ctx;
  s->cur = first;
  s->step = step;
  s->arg = arg;
  s->n = n;
  s->refs = 2; /* the reaction, the share */
  *out = s->result;
  return 0;
}

int uvp_promise_loop_at(uvp_ctx_t *ctx, uvp_step_cb step, void *arg,
                        uvp_promise_t **out, const char *file, int line) {
  return seq_start(ctx, SIZE_MAX, step, arg, NULL, out, file, line);
}

int uvp_promise_reduce_at(uvp_ctx_t *ctx, size_t n, uvp_step_cb step,
                          void *arg, uvp_promise_t *initial,
                          uvp_promise_t **out, const char *file, int line) {
  return seq_start(ctx, n, step, arg, initial, out, file, line);
}

/* ---- retry ---------------------------------------------------------------- */

typedef struct retry_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *result; /* our reference while undecided */
  uvp_promise_t *cur;    /* the attempt, or the backoff delay */
  uvp_attempt_cb attempt;
  void *arg;
  uvp_retry_opts_t opts;
  uint64_t rng;
  unsigned int tries; /* attempts started */
  bool waiting;       /* cur is the backoff */
  int refs;
  const char *file;
  int line;
} retry_t;

static void retry_unref(retry_t *t) {
  if (--t->refs == 0) {
    if (t->cur != NULL)
      uvp__rel(t->cur);
    uvp__free(t);
  }
}

static void retry_decide(retry_t *t, uvp_promise_t *src, int code) {
  uvp_promise_t *r = t->result;
  t->result = NULL;
  if (src != NULL)
    uvp__forward(r, src);
  else
    uvp__reject(r, code, NULL, NULL);
  uvp__rel(r);
  retry_unref(t);
}

static void retry_react(void *arg, const uvp_outcome_t *in);

/* Await `p` (its reference is handed over) as the current step. */
static void retry_await(retry_t *t, uvp_promise_t *p) {
  if (t->cur != NULL)
    uvp__rel(t->cur);
  t->cur = p;
  t->refs++;
  if (uvp__observe(p, retry_react, t) != 0) {
    t->refs--;
    retry_decide(t, NULL, UV_ENOMEM);
  }
}

static void retry_start_attempt(retry_t *t) {
  uvp_promise_t *p = NULL;
  int rc = t->attempt(t->arg, t->tries++, &p);
  if (t->result == NULL) { /* cancelled from inside the attempt */
    if (p != NULL)
      uvp_promise_release(p);
    return;
  }
  if (rc == 0 && (p == NULL || uvp__promise_ctx(p) != t->ctx)) {
    if (p != NULL)
      uvp_promise_release(p);
    rc = p == NULL ? UV_EINVAL : UVP_EXCTX;
  }
  if (rc != 0) {
    /* A refused start is a failed attempt like any other. */
    p = uvp__promise_new(t->ctx, t->file, t->line);
    if (p == NULL) {
      retry_decide(t, NULL, UV_ENOMEM);
      return;
    }
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  retry_await(t, p);
}

static bool retryable(retry_t *t, int code) {
  if (t->opts.should_retry != NULL)
    return t->opts.should_retry(t->arg, code, t->tries - 1) != 0;
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
  double u = (double)((t->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
  return (uint64_t)(w * (1.0 - t->opts.jitter * u));
}

static void retry_react(void *arg, const uvp_outcome_t *in) {
  retry_t *t = arg;
  if (in == NULL || t->result == NULL) {
    retry_unref(t);
    return;
  }
  t->refs++; /* guard */
  if (t->waiting) {
    t->waiting = false;
    retry_start_attempt(t);
  } else if (in->status == 0 || t->tries >= t->opts.attempts ||
             !retryable(t, in->status)) {
    retry_decide(t, in->promise, 0);
  } else {
    uvp_promise_t *d;
    int rc = uvp_delay_at(t->ctx, backoff_ms(t), NULL, NULL, UVP_KEEP_ALIVE,
                          &d, t->file, t->line);
    if (rc != 0) {
      retry_decide(t, NULL, rc); /* why the retrying stopped */
    } else {
      t->waiting = true;
      retry_await(t, d);
    }
  }
  retry_unref(t); /* guard */
  retry_unref(t); /* this reaction */
}

static void retry_cancel(uvp_promise_t *result, void *arg) {
  retry_t *t = arg;
  t->refs++;
  uvp_promise_t *r = t->result;
  t->result = NULL;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED && t->cur != NULL &&
      uvp__is_pending(t->cur))
    (void)uvp_promise_cancel(t->cur);
  uvp__rel(r);
  retry_unref(t); /* the share */
  retry_unref(t); /* guard */
}

int uvp_retry_at(uvp_ctx_t *ctx, uvp_attempt_cb attempt, void *arg,
                 const uvp_retry_opts_t *opts, uvp_promise_t **out,
                 const char *file, int line) {
  int rc = attempt == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  retry_t *t = uvp__malloc(sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  memset(t, 0, sizeof(*t));
  t->result = uvp__produced_new(ctx, file, line, retry_cancel, t);
  if (t->result == NULL) {
    uvp__free(t);
    return UV_ENOMEM;
  }
  if (opts != NULL)
    t->opts = *opts;
  if (t->opts.attempts == 0)
    t->opts.attempts = 3;
  if (t->opts.base_ms == 0)
    t->opts.base_ms = 100;
  if (t->opts.max_ms == 0)
    t->opts.max_ms = 30000;
  if (!(t->opts.factor > 1.0))
    t->opts.factor = 2.0;
  if (!(t->opts.jitter >= 0.0 && t->opts.jitter <= 1.0))
    t->opts.jitter = 0.0;
  t->ctx = ctx;
  t->attempt = attempt;
  t->arg = arg;
  t->rng = uv_hrtime() | 1;
  t->file = file;
  t->line = line;
  t->refs = 1; /* the share */
  *out = t->result;
  /* The first attempt starts now, as a JavaScript retry loop would. */
  t->refs++;
  retry_start_attempt(t);
  retry_unref(t);
  return 0;
}

/* ---- split ---------------------------------------------------------------- */

int uvp_settled_split(const uvp_settled_list_t *list, uvp_split_t *out) {
  if (list == NULL || out == NULL)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  uvp_indexed_t *all = uvp__malloc((list->count ? list->count : 1) *
                                   sizeof(uvp_indexed_t));
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

/* delay and timeout on uvp__timer_t (clock.h: the loop's clock or the
 * context's virtual one).  A timer keeps the loop alive unless the caller
 * asks for UVP_UNREF: what a program awaits is work in progress (the rule
 * of uvp.h's "Time"). */
#include <stdio.h>

#include "cause.h"
#include "clock.h"
#include "dump.h"

/* First in a delay's and a timeout's state: the timer, and the owner of the
 * scope it was started in, told until the timer is closed. */
typedef struct {
  uvp__timer_t timer;
  uvp__owner_t *owner;
} timed_t;

/* uv_timer_init and uv_timer_start cannot fail for a live loop and a
 * non-NULL callback.  `extra`: uvp__timer_extra(ctx) bytes allocated with
 * the owner, after it. */
static void start_timer(uvp_ctx_t *ctx, timed_t *t, void *data, uv_timer_cb cb,
                        uint64_t ms, int flags, void *extra) {
  uvp__timer_init(ctx, &t->timer, data, (flags & UVP_UNREF) != 0, extra);
  uvp__timer_start(&t->timer, cb, ms);
  t->owner = uvp__work_begin(ctx);
}

/* Known flags only, and not both ways of keeping the loop. */
static bool timer_flags_ok(int flags, int more) {
  return (flags & ~(UVP_KEEP_ALIVE | UVP_UNREF | more)) == 0 &&
         (flags & (UVP_KEEP_ALIVE | UVP_UNREF)) != (UVP_KEEP_ALIVE | UVP_UNREF);
}

/* From the timer's close callback. */
static void timer_closed(timed_t *t) { uvp__work_end(t->owner); }

/* ---- delay --------------------------------------------------------------- */

typedef struct {
  timed_t t;        /* first */
  uvp_promise_t *p; /* the timer's reference, until it fires or is cancelled */
  void *value;
  uvp_free_cb free_cb;
} delay_t;

static void delay_closed(uv_handle_t *h) {
  delay_t *d = h->data;
  timer_closed(&d->t);
  uvp__free(d);
}

static void delay_fire(uv_timer_t *t) {
  delay_t *d = t->data;
  uvp_promise_t *p = d->p;
  d->p = NULL;
  uvp__fulfill(p, d->value, d->free_cb);
  uvp__unref(p);
  uvp__timer_close(&d->t.timer, delay_closed);
}

static void delay_cancel(uvp_promise_t *p, void *arg) {
  delay_t *d = arg;
  (void)p;
  if (d->free_cb != NULL)
    d->free_cb(d->value);
  uvp_promise_t *mine = d->p;
  d->p = NULL;
  uvp__timer_close(&d->t.timer, delay_closed);
  uvp__unref(mine);
}

/* The task dump: how delays and timeouts say what they wait for. */
static void describers(void);
static uv_once_t describers_once = UV_ONCE_INIT;

int uvp_delay_at(uvp_ctx_t *ctx, uint64_t ms, void *value, uvp_free_cb free_cb,
                 int flags, uvp_promise_t **out, const char *file, int line) {
  int rc = out == NULL || !timer_flags_ok(flags, 0) ? UV_EINVAL
                                                    : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uv_once(&describers_once, describers);
  /* The virtual clock's part of the timer after d, only with the clock on
   * (clock.h). */
  delay_t *d = uvp__malloc(sizeof(*d) + uvp__timer_extra(ctx));
  if (d == NULL)
    return UV_ENOMEM;
  d->p = uvp__produced_new(ctx, file, line, delay_cancel, d);
  if (d->p == NULL) {
    uvp__free(d);
    return UV_ENOMEM;
  }
  d->value = value;
  d->free_cb = free_cb;
  start_timer(ctx, &d->t, d, delay_fire, ms, flags, d + 1);
  uvp__scope_watch(ctx, d->p);
  *out = d->p;
  return 0;
}

/* ---- timeout ------------------------------------------------------------- */

/* Shared by the timer (until closed) and the reaction on src (until run or
 * dropped); `result` is referenced while undecided. */
typedef struct {
  timed_t t; /* first */
  uvp_promise_t *src;
  uvp_promise_t *result;
  int refs;
  int flags;
  uint64_t ms; /* for its cause */
} tmo_t;

static void tmo_settled(void *arg, const uvp_outcome_t *in);

/* The timeout gave up on src: stop it too if nothing else waits for it (a
 * timed-out request really stops), or always with UVP_CANCEL_INPUT;
 * other consumers of src keep waiting, as with Promise.race, and the
 * timeout stops being one of them. */
static void cancel_input(tmo_t *t) {
  uvp__give_up(t->src, tmo_settled, t, t->flags & UVP_CANCEL_INPUT);
}

static void tmo_unref(tmo_t *t) {
  if (--t->refs == 0) {
    uvp__unref(t->src);
    uvp__free(t);
  }
}

static void tmo_closed(uv_handle_t *h) {
  tmo_t *t = h->data;
  timer_closed(&t->t);
  tmo_unref(t);
}

static void tmo_stop(tmo_t *t) {
  if (!uv_is_closing((uv_handle_t *)&t->t.timer.handle))
    uvp__timer_close(&t->t.timer, tmo_closed);
}

static uvp_promise_t *tmo_take_result(tmo_t *t) {
  uvp_promise_t *r = t->result;
  t->result = NULL;
  return r;
}

static void tmo_fire(uv_timer_t *h) {
  tmo_t *t = h->data;
  uvp_promise_t *r = tmo_take_result(t);
  tmo_stop(t);
  if (r == NULL)
    return;
  t->refs++;
  if (t->src->state != UVP__S_PENDING) {
    /* p did settle within the time (or was settled already): only its
     * reaction is still queued behind the timer phase. */
    uvp__forward(r, t->src);
  } else {
    /* A deadline of the timeout's own: the result, and the input it gives
     * up on, say which (cause.h). */
    const char *file;
    int line;
    uvp__site_get(r->site, &file, &line);
    uvp_cause_t proto = {
        .kind = UVP_CAUSE_DEADLINE, .file = file, .line = line, .ms = t->ms};
    uvp__cause_t *c = uvp__cause_new(&proto, NULL);
    uvp__reject_cause(r, UV_ETIMEDOUT, c);
    uvp_ctx_t *ctx = uvp__promise_ctx(r);
    uvp__cause_t *outer = uvp__cause_enter(ctx, c);
    cancel_input(t);
    uvp__cause_leave(ctx, outer);
    uvp__cause_unref(c);
  }
  uvp__unref(r);
  tmo_unref(t);
}

static void tmo_settled(void *arg, const uvp_outcome_t *in) {
  tmo_t *t = arg;
  if (in != NULL && t->result != NULL) {
    uvp_promise_t *r = tmo_take_result(t);
    uvp__forward(r, in->promise);
    tmo_stop(t);
    uvp__unref(r);
  }
  tmo_unref(t);
}

static void tmo_cancel(uvp_promise_t *result, void *arg) {
  tmo_t *t = arg;
  uvp_promise_t *r = tmo_take_result(t);
  t->refs++;
  tmo_stop(t);
  /* Cancelled, or its deadline passed: the input stops by the same rule.
   * Not at teardown (UVP_ECLOSED), which tears the input down itself. */
  int why = uvp_promise_reason(result, NULL);
  if (why == UV_ECANCELED || why == UV_ETIMEDOUT)
    cancel_input(t);
  uvp__unref(r);
  tmo_unref(t);
}

int uvp_timeout_at(uvp_promise_t *p, uint64_t ms, int flags,
                   uvp_promise_t **out, const char *file, int line) {
  if (p == NULL || out == NULL || !timer_flags_ok(flags, UVP_CANCEL_INPUT))
    return UV_EINVAL;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uv_once(&describers_once, describers);
  tmo_t *t = uvp__malloc(sizeof(*t) + uvp__timer_extra(ctx));
  if (t == NULL)
    return UV_ENOMEM;
  t->result = uvp__produced_new(ctx, file, line, tmo_cancel, t);
  if (t->result == NULL || uvp__observe(p, tmo_settled, t) != 0) {
    if (t->result != NULL)
      uvp__produced_abort(t->result);
    uvp__free(t);
    return UV_ENOMEM;
  }
  start_timer(ctx, &t->t, t, tmo_fire, ms, flags, t + 1);
  t->src = uvp_promise_retain(p);
  t->refs = 2; /* timer, reaction */
  t->flags = flags;
  t->ms = ms;
  uvp__scope_watch(ctx, t->result);
  *out = t->result;
  return 0;
}

/* ---- the task dump ------------------------------------------------------- */

static void delay_describe(const uvp_promise_t *p, void *arg, uvp__what_t *w) {
  const delay_t *d = arg;
  (void)p;
  snprintf(w->kind, sizeof(w->kind), "timer");
  w->left_ms = (int64_t)uvp__timer_due_in(&d->t.timer);
}

static void tmo_describe(const uvp_promise_t *p, void *arg, uvp__what_t *w) {
  const tmo_t *t = arg;
  (void)p;
  const char *file;
  int line;
  uvp__site_get(t->src->site, &file, &line);
  snprintf(w->kind, sizeof(w->kind), "timeout");
  snprintf(w->target, sizeof(w->target), "on a promise created at %s:%d",
           file != NULL ? file : "?", line);
  w->left_ms = uv_is_closing((const uv_handle_t *)&t->t.timer.handle)
                   ? 0
                   : (int64_t)uvp__timer_due_in(&t->t.timer);
}

static void describers(void) {
  uvp__describer_add(delay_cancel, delay_describe, false);
  uvp__describer_add(tmo_cancel, tmo_describe, false);
}

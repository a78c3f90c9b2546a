/* delay and timeout on uvp__timer_t (clock.h: the loop's clock or the
 * context's virtual one).  A timer keeps the loop alive unless the caller
 * asks for UVP_UNREF: what a program awaits is work in progress (the rule
 * of uvp.h's "Time"). */
#include <stdio.h>

#include "cause.h"
#include "clock.h"
#include "work-door.h"

/* First in a delay's and a timeout's state: its record of work (started
 * with the promise, done when the timer is closed; the timer counts as
 * work in the loop itself, and a timer is no real work for the virtual
 * clock, which jumps to it) and the timer. */
typedef struct {
  uvp__work_t work; /* work.p: the timer's reference to its promise, until
                       it fires or is cancelled (delay), until decided
                       (timeout) */
  uvp__timer_t timer;
} timed_t;

/* uv_timer_init and uv_timer_start cannot fail for a live loop and a
 * non-NULL callback.  `extra`: uvp__timer_extra(ctx) bytes allocated with
 * the owner, after it. */
static void start_timer(uvp_ctx_t *ctx, timed_t *t, void *data, uv_timer_cb cb,
                        uint64_t ms, int flags, void *extra) {
  uvp__timer_init(ctx, &t->timer, data, (flags & UVP_UNREF) != 0, extra);
  uvp__timer_start(&t->timer, cb, ms);
}

/* Known flags only, and not both ways of keeping the loop. */
static bool timer_flags_ok(int flags, int more) {
  return (flags & ~(UVP_KEEP_ALIVE | UVP_UNREF | more)) == 0 &&
         (flags & (UVP_KEEP_ALIVE | UVP_UNREF)) != (UVP_KEEP_ALIVE | UVP_UNREF);
}

/* From the timer's close callback. */
static void timer_closed(timed_t *t) { uvp__work_done(t->timer.ctx, &t->work); }

/* ---- delay --------------------------------------------------------------- */

typedef struct {
  timed_t t; /* first */
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
  uvp_promise_t *p = d->t.work.p;
  d->t.work.p = NULL;
  uvp__fulfill(p, d->value, d->free_cb);
  uvp__unref(p);
  uvp__timer_close(&d->t.timer, delay_closed);
}

static void delay_cancel(uvp__work_t *w, uvp_promise_t *p, int code) {
  delay_t *d = UVP__CONTAINER_OF(w, delay_t, t.work);
  (void)p;
  (void)code;
  if (d->free_cb != NULL)
    d->free_cb(d->value);
  uvp_promise_t *mine = d->t.work.p;
  d->t.work.p = NULL;
  uvp__timer_close(&d->t.timer, delay_closed);
  uvp__unref(mine);
}

static void delay_describe(const uvp__work_t *w, uvp__what_t *what);
static const uvp__work_class_t delay_class = {
    delay_cancel, delay_describe, "timer",
    UVP__WORK_IDLE | UVP__WORK_NOT_IN_LOOP | UVP__WORK_GONE_AT_CUT};

int uvp_delay_at(uvp_ctx_t *ctx, uint64_t ms, void *value, uvp_free_cb free_cb,
                 int flags, uvp_promise_t **out, const char *file, int line) {
  int rc = out == NULL || !timer_flags_ok(flags, 0) ? UV_EINVAL
                                                    : uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, value, free_cb);
  /* The virtual clock's part of the timer after d, only with the clock on
   * (clock.h). */
  delay_t *d = uvp__malloc(sizeof(*d) + uvp__timer_extra(ctx));
  if (d == NULL)
    return uvp__refuse(UV_ENOMEM, value, free_cb);
  if (uvp__work_start(ctx, &d->t.work, &delay_class, file, line) != 0) {
    uvp__free(d);
    return uvp__refuse(UV_ENOMEM, value, free_cb);
  }
  d->value = value;
  d->free_cb = free_cb;
  start_timer(ctx, &d->t, d, delay_fire, ms, flags, d + 1);
  *out = d->t.work.p;
  return 0;
}

/* ---- timeout ------------------------------------------------------------- */

/* Shared by the timer (until closed) and the reaction on src (until run or
 * dropped); its promise, t.work.p, is referenced while undecided. */
typedef struct {
  timed_t t; /* first */
  uvp_promise_t *src;
  int refs;
  int flags;
  uint64_t ms; /* for its cause */
} tmo_t;

static void tmo_settled(void *arg, const uvp_outcome_t *in);
static void tmo_cancel(uvp__work_t *w, uvp_promise_t *result, int why);
static void tmo_describe(const uvp__work_t *work, uvp__what_t *w);
static const uvp__work_class_t tmo_class = {
    tmo_cancel, tmo_describe, "timeout",
    UVP__WORK_IDLE | UVP__WORK_NOT_IN_LOOP | UVP__WORK_GONE_AT_CUT};

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
  uvp_promise_t *r = t->t.work.p;
  t->t.work.p = NULL;
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
  if (in != NULL && t->t.work.p != NULL) {
    uvp_promise_t *r = tmo_take_result(t);
    uvp__forward(r, in->promise);
    tmo_stop(t);
    uvp__unref(r);
  }
  tmo_unref(t);
}

static void tmo_cancel(uvp__work_t *w, uvp_promise_t *result, int why) {
  tmo_t *t = UVP__CONTAINER_OF(w, tmo_t, t.work);
  (void)result;
  uvp_promise_t *r = tmo_take_result(t);
  t->refs++;
  tmo_stop(t);
  /* Cancelled, or its deadline passed: the input stops by the same rule.
   * Not at teardown (UVP_ECLOSED), which tears the input down itself. */
  if (why == UV_ECANCELED || why == UV_ETIMEDOUT)
    cancel_input(t);
  uvp__unref(r);
  tmo_unref(t);
}

static int timeout_start(uvp_promise_t *p, uint64_t ms, int flags,
                         uvp_promise_t **out, const char *file, int line) {
  if (p == NULL || out == NULL ||
      !timer_flags_ok(flags, UVP_CANCEL_INPUT | UVP_TAKE_INPUTS))
    return UV_EINVAL;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  tmo_t *t = uvp__malloc(sizeof(*t) + uvp__timer_extra(ctx));
  if (t == NULL)
    return UV_ENOMEM;
  if (uvp__work_start(ctx, &t->t.work, &tmo_class, file, line) != 0) {
    uvp__free(t);
    return UV_ENOMEM;
  }
  if (uvp__observe(p, tmo_settled, t) != 0) {
    uvp__work_done(ctx, &t->t.work);
    uvp__produced_abort(t->t.work.p);
    uvp__free(t);
    return UV_ENOMEM;
  }
  start_timer(ctx, &t->t, t, tmo_fire, ms, flags, t + 1);
  /* Taken, the caller's reference is the timeout's. */
  t->src = (flags & UVP_TAKE_INPUTS) ? p : uvp_promise_retain(p);
  t->refs = 2; /* timer, reaction */
  t->flags = flags;
  t->ms = ms;
  *out = t->t.work.p;
  return 0;
}

int uvp_timeout_at(uvp_promise_t *p, uint64_t ms, int flags,
                   uvp_promise_t **out, const char *file, int line) {
  int rc = timeout_start(p, ms, flags, out, file, line);
  if (rc != 0 && (flags & UVP_TAKE_INPUTS)) /* still the call's to let go */
    uvp_promise_release(p);
  return rc;
}

/* ---- the task dump ------------------------------------------------------- */

static void delay_describe(const uvp__work_t *work, uvp__what_t *w) {
  const delay_t *d = UVP__CONTAINER_OF(work, delay_t, t.work);
  w->left_ms = (int64_t)uvp__timer_due_in(&d->t.timer);
}

static void tmo_describe(const uvp__work_t *work, uvp__what_t *w) {
  const tmo_t *t = UVP__CONTAINER_OF(work, tmo_t, t.work);
  const char *file;
  int line;
  uvp__site_get(t->src->site, &file, &line);
  snprintf(w->target, sizeof(w->target), "on a promise created at %s:%d",
           file != NULL ? file : "?", line);
  w->left_ms = uv_is_closing((const uv_handle_t *)&t->t.timer.handle)
                   ? 0
                   : (int64_t)uvp__timer_due_in(&t->t.timer);
}

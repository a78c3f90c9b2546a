/* Deadlines: a point in uvp's time (the loop's, read afresh, or the
 * virtual clock's: uvp__now_fresh) that a scope carries (scope.h) to
 * everything started under it.  The work watched (scope.h's
 * uvp__scope_watch: operations, timers, fibers, groups' joins) is
 * cancelled, newest first, with UV_ETIMEDOUT when the deadline passes:
 * each producer's hook stops its work as a cancellation does (uv_cancel,
 * uv_close, a signal), and a fiber's awaits say UV_ETIMEDOUT from then on.
 * A deadline lives while a scope names it; its timer is unreferenced (the
 * work keeps the loop alive, not its deadline). */
#include "deadline.h"
#include "cause.h"
#include "clock.h"

typedef struct deadline_s {
  uvp__owner_t carried; /* what scopes name; first */
  uvp_ctx_t *ctx;
  uint64_t at;     /* uvp__now_fresh() when it passes */
  uint32_t scopes; /* naming it */
  bool passed;
  bool closing;
  const char *file; /* where it was set, and its length: its cause */
  int line;
  uint64_t ms;
  uvp__timer_t timer;
  /* The deadline it took the place of in the running code's scope
   * (uvp_deadline_set, uvp_deadline_shield), held while this one lives:
   * the work that one watches stays watched by it.  NULL: none. */
  uvp__owner_t *outer;
  /* The promises of the work watched, newest last, each a reference.
   * Settled ones go when the list would grow (compact). */
  uvp_promise_t **watched;
  size_t n, cap;
} deadline_t;

static deadline_t *deadline_of(uvp__owner_t *o) {
  return UVP__CONTAINER_OF(o, deadline_t, carried);
}

/* Stop what is still pending, newest first: the innermost work goes
 * before what waits for it (a group's members before its join). */
static void expire(deadline_t *d) {
  uvp__cause_t *c = NULL; /* made once, at the first cut, shared */
  uvp__cause_t *outer = NULL;
  while (d->n > 0) {
    uvp_promise_t *p = d->watched[--d->n];
    if (uvp__is_pending(p)) {
      if (c == NULL) {
        uvp_cause_t proto = {.kind = UVP_CAUSE_DEADLINE,
                             .file = d->file,
                             .line = d->line,
                             .ms = d->ms};
        c = uvp__cause_new(&proto, NULL);
        outer = uvp__cause_enter(d->ctx, c);
      }
      uvp__cancel_with(p, UV_ETIMEDOUT);
    }
    uvp__unref(p);
  }
  if (c != NULL) {
    uvp__cause_leave(d->ctx, outer);
    uvp__cause_unref(c);
  }
}

static void on_time(uv_timer_t *t) {
  deadline_t *d = t->data;
  d->passed = true;
  if (!uvp__closed(d->ctx))
    expire(d);
}

static void timer_closed(uv_handle_t *h) {
  deadline_t *d = h->data;
  uvp__free(d->watched);
  uvp__free(d);
}

/* Keep only what is pending (in order), before the list grows. */
static void compact(deadline_t *d) {
  size_t kept = 0;
  for (size_t i = 0; i < d->n; i++) {
    uvp_promise_t *p = d->watched[i];
    if (uvp__is_pending(p))
      d->watched[kept++] = p;
    else
      uvp__unref(p);
  }
  d->n = kept;
}

static int watch(uvp__owner_t *o, uvp_promise_t *p) {
  deadline_t *d = deadline_of(o);
  if (d->n == d->cap) {
    compact(d);
    if (d->n > d->cap / 2 || d->cap == 0) {
      size_t cap = d->cap == 0 ? 8 : 2 * d->cap;
      uvp_promise_t **w = uvp__realloc(d->watched, cap * sizeof(*w));
      if (w == NULL) {
        /* Not watched.  uvp's own work, already started, runs to its end
         * as if no deadline were set (its producers ignore this); a
         * binding's caller of uvp_deadline_watch hears UV_ENOMEM. */
        return UV_ENOMEM;
      }
      d->watched = w;
      d->cap = cap;
    }
  }
  uvp__retain_local(p);
  d->watched[d->n++] = p;
  /* Started after the deadline passed: stopped at once, from the loop
   * (the caller has only just started it). */
  if (d->passed)
    uvp__timer_start(&d->timer, on_time, 0);
  return 0;
}

static void scope_made(uvp__owner_t *o) { deadline_of(o)->scopes++; }

static void scope_gone(uvp__owner_t *o) {
  deadline_t *d = deadline_of(o);
  if (--d->scopes != 0)
    return;
  /* Nothing started under it is left to stop but what it watches: that
   * work goes on without a deadline. */
  while (d->n > 0)
    uvp__unref(d->watched[--d->n]);
  uvp__owner_t *outer = d->outer;
  d->outer = NULL;
  uvp__timer_close(&d->timer, timer_closed);
  if (outer != NULL)
    outer->ops->scope_gone(outer);
}

static const uvp__owner_ops_t deadline_ops = {NULL,       NULL,       watch,
                                              scope_made, scope_gone, NULL};

/* The deadline of scope s, if any. */
static deadline_t *deadline_in(const uvp__scope_t *s) {
  return s != NULL && s->deadline != NULL ? deadline_of(s->deadline) : NULL;
}

/* The deadline base carries, or the one it holds for a shield with none:
 * what a deadline taking its place in the running code's scope holds. */
static uvp__owner_t *replaced_in(const uvp__scope_t *base) {
  if (base == NULL)
    return NULL;
  return base->deadline != NULL ? base->deadline : base->held;
}

/* A scope like base with a deadline of its own `ms` from `now`, the
 * present read afresh (NULL: no memory): a deadline counts from the call
 * that sets it, not from the loop's cached time, which misses whatever
 * ran since the turn began (a fiber spawned before the first uv_run,
 * after a slow start, would be cut before it ran).  hold: it takes base's
 * place where the code runs (not a new fiber's or group's), so its
 * deadline holds the one base carries. */
static uvp__scope_t *scope_fresh(uvp_ctx_t *ctx, uvp__scope_t *base,
                                 uint64_t ms, uint64_t now, const char *file,
                                 int line, bool hold) {
  uint64_t at = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
  /* The timer's virtual-clock part after d, with the clock on (clock.h). */
  deadline_t *d = uvp__calloc(1, sizeof(*d) + uvp__timer_extra(ctx));
  if (d == NULL)
    return NULL;
  d->carried.ops = &deadline_ops;
  d->ctx = ctx;
  d->at = at;
  d->file = file;
  d->line = line;
  d->ms = ms;
  uvp__scope_t *s = uvp__scope_with_deadline(base, &d->carried, NULL);
  if (s == NULL) {
    uvp__free(d);
    return NULL;
  }
  if (hold && (d->outer = replaced_in(base)) != NULL)
    d->outer->ops->scope_made(d->outer);
  uvp__timer_init(ctx, &d->timer, d, true, d + 1);
  uvp__timer_start(&d->timer, on_time, at - now);
  return s;
}

static uvp__scope_t *within(uvp_ctx_t *ctx, uvp__scope_t *base, uint64_t ms,
                            const char *file, int line, bool hold) {
  uint64_t now = uvp__now_fresh(ctx);
  uint64_t at = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
  deadline_t *nearest = deadline_in(base);
  if (nearest != NULL && nearest->at <= at)
    return uvp__scope_ref(base);
  return scope_fresh(ctx, base, ms, now, file, line, hold);
}

uvp__scope_t *uvp__scope_within(uvp_ctx_t *ctx, uvp__scope_t *base, uint64_t ms,
                                const char *file, int line) {
  return within(ctx, base, ms, file, line, false);
}

/* The plain symbols, for programs built before the _at forms. */
#undef uvp_deadline_set
#undef uvp_deadline_shield
UVP_EXTERN int uvp_deadline_set(uvp_ctx_t *ctx, uint64_t ms);
UVP_EXTERN int uvp_deadline_shield(uvp_ctx_t *ctx, uint64_t ms);
int uvp_deadline_set(uvp_ctx_t *ctx, uint64_t ms) {
  return uvp_deadline_set_at(ctx, ms, NULL, 0);
}
int uvp_deadline_shield(uvp_ctx_t *ctx, uint64_t ms) {
  return uvp_deadline_shield_at(ctx, ms, NULL, 0);
}

int uvp_deadline_set_at(uvp_ctx_t *ctx, uint64_t ms, const char *file,
                        int line) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp__ctx_head_t *h = uvp__head(ctx);
  uvp__scope_t *s = within(ctx, h->scope, ms, file, line, true);
  if (s == NULL)
    return UV_ENOMEM;
  uvp__scope_unref(h->scope);
  h->scope = s;
  return 0;
}

int uvp_deadline_shield_at(uvp_ctx_t *ctx, uint64_t ms, const char *file,
                           int line) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp__ctx_head_t *h = uvp__head(ctx);
  if (ms == UVP_NO_DEADLINE && (h->scope == NULL || h->scope->deadline == NULL))
    return 0;
  /* Not nearest-wins: the deadline it replaces may have passed.  The work
   * already watched by that one stays watched by it: the new scope (with
   * none) or its deadline holds it. */
  uvp__scope_t *s =
      ms == UVP_NO_DEADLINE
          ? uvp__scope_with_deadline(h->scope, NULL, replaced_in(h->scope))
          : scope_fresh(ctx, h->scope, ms, uvp__now_fresh(ctx), file, line,
                        true);
  if (s == NULL)
    return UV_ENOMEM;
  uvp__scope_unref(h->scope);
  h->scope = s;
  return 0;
}

int64_t uvp__deadline_left_in(const uvp__scope_t *s) {
  deadline_t *d = deadline_in(s);
  if (d == NULL)
    return -1;
  uint64_t now = uvp__now_fresh(d->ctx);
  return d->passed || d->at <= now ? 0 : (int64_t)(d->at - now);
}

int uvp_deadline_watch(uvp_ctx_t *ctx, uvp_promise_t *p) {
  int rc = p == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc == 0 && uvp__promise_ctx(p) != ctx)
    rc = UVP_EXCTX;
  if (rc == 0 && !uvp__is_pending(p))
    rc = UVP_ESETTLED;
  return rc == 0 ? uvp__scope_watch(ctx, p) : rc;
}

uint64_t uvp_deadline_left(const uvp_ctx_t *ctx) {
  if (ctx == NULL)
    return UVP_NO_DEADLINE;
  deadline_t *d = deadline_in(uvp__head(ctx)->scope);
  if (d == NULL)
    return UVP_NO_DEADLINE;
  uint64_t now = uvp__now_fresh(ctx);
  return d->passed || d->at <= now ? 0 : d->at - now;
}

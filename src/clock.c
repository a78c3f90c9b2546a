/* The virtual clock (uvp.h "Time": uvp_ctx_set_clock): uvp's own time for
 * one context, moved by the program (uvp_clock_advance) or, with
 * UVP_CLOCK_AUTO, by the loop itself:
 *  - when the loop is about to wait (uv_backend_timeout is not 0 in the
 *    prepare phase: nothing queued, no handle closing, no due real timer)
 *    and none of uvp's real work is in flight, virtual time jumps to the
 *    next due timer, which fires there and then;
 *  - while real work is in flight (an operation's request or handle, a
 *    child), virtual time passes at the loop's pace instead, and an
 *    unreferenced real timer wakes the loop when the next virtual timer
 *    falls due at that pace.  A reply on its way therefore beats a
 *    timeout longer than it takes, as it would in real time (a paused
 *    clock that jumped over it would time the request out), and a request
 *    that never completes still times out, after the timeout's length in
 *    real time.
 * The timers are uvp__timer_t (clock.h), ordered by (due, start order) in
 * a pairing heap threaded through their clock parts (uvp__vtimer_t, which
 * each timer's owner allocates with itself while the clock is on):
 * starting one allocates nothing and cannot fail.  With the clock off
 * none of this exists, not even in the timers: a context
 * pays one flag test where a promise is made (uvp__now) and one where an
 * operation begins and ends (op.c). */
#include <string.h>

#include "clock.h"
#include "scope.h"

/* The real timeout of a virtual timer not yet due: active and referenced
 * like the timer it stands for, never reached in real time. */
#define FAR_OFF UINT64_MAX

/* A timer's part on the virtual clock: its due time and its place in the
 * clock's heap, in memory its owner allocated after itself
 * (uvp__timer_extra), only while the clock is on. */
struct uvp__vtimer_s {
  struct vclock_s *clock; /* the clock it was made on */
  uvp__timer_t *timer;
  uv_timer_cb cb;
  uint64_t due; /* virtual time at which it fires */
  uint64_t seq; /* order of starts: equal due times fire in start order */
  uvp__vtimer_t *child, *next, *prev; /* pairing heap links */
  bool queued;
};

typedef struct vclock_s {
  uvp__ext_t ext; /* first */
  uvp_ctx_t *ctx;
  uint64_t seq;
  uvp__vtimer_t *root;
  size_t held; /* the program's: uvp_clock_hold less uvp_clock_unhold */
  bool automatic;
  bool pacing; /* real work was in flight at the last prepare phase */
  uint64_t paced_at;
  bool handles; /* prepare and pace made (closed with the context) */
  int open;     /* of those, not closed yet */
  uv_prepare_t prepare;
  uv_timer_t pace;
} vclock_t;

static vclock_t *clock_of(const uvp_ctx_t *ctx) {
  return UVP__EXT_OF(ctx, UVP__EXT_CLOCK, vclock_t);
}

/* The virtual time lives in the head (vnow), where uvp__now reads it
 * (sched.h): the core asks nothing of this file. */
static uint64_t now_of(const vclock_t *c) { return uvp__head(c->ctx)->vnow; }
static void set_now(vclock_t *c, uint64_t now) {
  uvp__head(c->ctx)->vnow = now;
}

/* ---- the heap ------------------------------------------------------------ */

/* A total order: which of two timers due together fires first does not
 * depend on the heap's shape. */
static bool before(const uvp__vtimer_t *a, const uvp__vtimer_t *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

/* Two roots (or NULL) into one.  A first child's prev is its parent, any
 * other child's its elder sibling. */
static uvp__vtimer_t *meld(uvp__vtimer_t *a, uvp__vtimer_t *b) {
  if (a == NULL)
    return b;
  if (b == NULL)
    return a;
  if (before(b, a)) {
    uvp__vtimer_t *x = a;
    a = b;
    b = x;
  }
  b->prev = a;
  b->next = a->child;
  if (a->child != NULL)
    a->child->prev = b;
  a->child = b;
  return a;
}

/* Siblings (first, linked by next) into one root: pairs left to right,
 * then the pairs from the last one back. */
static uvp__vtimer_t *combine(uvp__vtimer_t *first) {
  uvp__vtimer_t *pairs = NULL;
  while (first != NULL) {
    uvp__vtimer_t *a = first, *b = a->next;
    first = b != NULL ? b->next : NULL;
    a->next = a->prev = NULL;
    if (b != NULL)
      b->next = b->prev = NULL;
    uvp__vtimer_t *m = meld(a, b);
    m->next = pairs;
    pairs = m;
  }
  uvp__vtimer_t *root = NULL;
  while (pairs != NULL) {
    uvp__vtimer_t *n = pairs->next;
    pairs->next = NULL;
    root = meld(root, pairs);
    pairs = n;
  }
  return root;
}

static void heap_insert(vclock_t *c, uvp__vtimer_t *t) {
  t->child = t->next = t->prev = NULL;
  t->queued = true;
  c->root = meld(c->root, t);
}

static void heap_remove(vclock_t *c, uvp__vtimer_t *t) {
  if (t == c->root) {
    c->root = combine(t->child);
  } else {
    if (t->prev->child == t)
      t->prev->child = t->next;
    else
      t->prev->next = t->next;
    if (t->next != NULL)
      t->next->prev = t->prev;
    c->root = meld(c->root, combine(t->child));
  }
  t->child = t->next = t->prev = NULL;
  t->queued = false;
}

/* Move the clock to `upto`, firing on the way every timer due by then, in
 * order, each at its own due time (what it starts counts from there);
 * timers those start fire too if due by `upto`, as libuv's do. */
static void fire_due(vclock_t *c, uint64_t upto) {
  while (c->root != NULL && c->root->due <= upto) {
    uvp__vtimer_t *v = c->root;
    if (v->due > now_of(c))
      set_now(c, v->due);
    heap_remove(c, v);
    uv_timer_stop(&v->timer->handle);
    v->cb(&v->timer->handle);
  }
  if (upto > now_of(c))
    set_now(c, upto);
}

/* The real time now, on the loop's clock (uv_now counts milliseconds of
 * the same monotonic clock), but read afresh: uv_now is the time the
 * loop's turn began or its last poll returned, and misses whatever ran
 * since (a long callback, a call into libcurl). */
static uint64_t fresh_now(void) { return uv_hrtime() / 1000000u; }

/* While the clock runs at the loop's pace, the real time that has passed
 * since the last prepare phase is virtual time too, but the prepare phase
 * only counts it on the loop's next turn: code that runs in between (the
 * I/O callbacks of the poll that just returned, the reactions the check
 * phase drains) would read the time as it was before the poll, and a
 * timer it starts would count from then, early by as long as the poll
 * waited.  So it is counted here first, up to the next timer due (which
 * the prepare phase fires, in order, as before): the time not counted yet
 * (paced_at) moves on by what was.  The present is read afresh, not from
 * uv_now (the time the loop's turn began, or its poll returned): a timer
 * started after a call that took long (libcurl's first, 110 ms under
 * valgrind) would count that call too, and a 350 ms timeout around a
 * 300 ms transfer sent at the call's end fired first.
 * Real work that started since the last prepare phase starts the pace
 * here, from the present: what ran before (the call that started it)
 * is none of a timer started now. */
static void catch_up(vclock_t *c) {
  if (!c->automatic)
    return;
  if (!c->pacing) {
    if (uvp__head(c->ctx)->real_work == 0 && c->held == 0)
      return;
    c->pacing = true;
    c->paced_at = fresh_now();
    return;
  }
  uint64_t real_now = fresh_now(), now = now_of(c);
  if (real_now <= c->paced_at)
    return;
  uint64_t waited = real_now - c->paced_at;
  uint64_t upto = waited > UINT64_MAX - now ? UINT64_MAX : now + waited;
  if (c->root != NULL && c->root->due < upto)
    upto = c->root->due > now ? c->root->due : now;
  set_now(c, upto);
  c->paced_at += upto - now;
}

/* ---- timers -------------------------------------------------------------- */

/* A virtual timer started at 0 ms, or restarted once its time had come:
 * the loop's next timer phase fires what is due, as it would a real one. */
static void due_now(uv_timer_t *h) {
  vclock_t *c = ((uvp__timer_t *)(void *)h)->u.v->clock;
  fire_due(c, now_of(c));
}

size_t uvp__timer_extra(const uvp_ctx_t *ctx) {
  return uvp__head(ctx)->vclock ? sizeof(uvp__vtimer_t) : 0;
}

void uvp__timer_init(uvp_ctx_t *ctx, uvp__timer_t *t, void *data, bool unref,
                     void *extra) {
  (void)uv_timer_init(uvp__loop(ctx), &t->handle);
  t->handle.data = data;
  if (unref)
    uv_unref((uv_handle_t *)&t->handle);
  t->u.v = NULL;
  if (uvp__head(ctx)->vclock) {
    uvp__vtimer_t *v = extra;
    memset(v, 0, sizeof(*v));
    v->clock = clock_of(ctx);
    v->timer = t;
    t->u.v = v;
  }
  t->ctx = ctx;
  uvp__loop_work_begin(ctx);
}

uint64_t uvp__now_fresh(const uvp_ctx_t *ctx) {
  if (uvp__head(ctx)->vclock) {
    catch_up(clock_of(ctx));
    return uvp__now(ctx);
  }
  uint64_t cached = uvp__loop_time(uvp__loop(ctx)), now = fresh_now();
  return now > cached ? now : cached;
}

void uvp__timer_start(uvp__timer_t *t, uv_timer_cb cb, uint64_t ms) {
  uvp__vtimer_t *v = t->u.v;
  if (v == NULL) {
    /* libuv counts from uv_now, the time the loop's turn began: a timer
     * started after a long callback, or before the first uv_run, would
     * count what ran before the call as its own time.  The lag is added
     * (a clock read, vDSO: timers only, never a settle).  A timer due now
     * stays due now. */
    if (ms != 0) {
      uint64_t now = fresh_now(), cached = uvp__loop_time(t->handle.loop);
      uint64_t lag = now > cached ? now - cached : 0;
      ms = ms > UINT64_MAX - lag ? UINT64_MAX : ms + lag;
    }
    (void)uv_timer_start(&t->handle, cb, ms, 0);
    return;
  }
  vclock_t *c = v->clock;
  if (v->queued)
    heap_remove(c, v);
  catch_up(c);
  v->cb = cb;
  v->due = ms > UINT64_MAX - now_of(c) ? UINT64_MAX : now_of(c) + ms;
  v->seq = c->seq++;
  heap_insert(c, v);
  (void)uv_timer_start(&t->handle, due_now, ms == 0 ? 0 : FAR_OFF, 0);
}

void uvp__timer_stop(uvp__timer_t *t) {
  /* Once closing, u holds the close callback, and the timer was stopped
   * by uvp__timer_close. */
  if (uv_is_closing((uv_handle_t *)&t->handle))
    return;
  if (t->u.v != NULL && t->u.v->queued)
    heap_remove(t->u.v->clock, t->u.v);
  uv_timer_stop(&t->handle);
}

static void timer_closed(uv_handle_t *h) {
  uvp__timer_t *t = (uvp__timer_t *)(void *)h;
  uvp_ctx_t *ctx = t->ctx;
  if (t->u.closed != NULL)
    t->u.closed(h); /* may free t */
  uvp__loop_work_end(ctx);
}

void uvp__timer_close(uvp__timer_t *t, uv_close_cb close_cb) {
  uvp__timer_stop(t);
  t->u.closed = close_cb;
  uv_close((uv_handle_t *)&t->handle, timer_closed);
}

uint64_t uvp__timer_due_in(const uvp__timer_t *t) {
  if (uv_is_closing((const uv_handle_t *)&t->handle))
    return 0;
  const uvp__vtimer_t *v = t->u.v;
  if (v == NULL)
    return uv_timer_get_due_in(&t->handle);
  vclock_t *c = v->clock;
  catch_up(c);
  return v->queued && v->due > now_of(c) ? v->due - now_of(c) : 0;
}

/* ---- automatic advance --------------------------------------------------- */

/* Only wakes the loop: its prepare phase, next, moves the clock. */
static void pace_cb(uv_timer_t *h) { (void)h; }

static void on_prepare(uv_prepare_t *h) {
  vclock_t *c = h->data;
  uv_loop_t *loop = h->loop;
  uint64_t real_now = uv_now(loop), upto = now_of(c);
  bool was_pacing = c->pacing;
  if (was_pacing && real_now > c->paced_at) {
    uint64_t waited = real_now - c->paced_at;
    upto = waited > UINT64_MAX - upto ? UINT64_MAX : upto + waited;
  }
  c->pacing = uvp__head(c->ctx)->real_work != 0 || c->held != 0;
  if (!was_pacing && c->pacing) {
    /* The pace begins now, not at the turn's start: the turn may have
     * run long before its real work started (as catch_up). */
    c->paced_at = fresh_now();
  } else if (real_now > c->paced_at) {
    c->paced_at = real_now; /* never back: catch_up may be past it */
  }
  fire_due(c, upto);
  if (uvp__closed(c->ctx) || !c->automatic)
    return; /* a timer's callback closed the context or changed the mode */
  if (c->pacing) {
    if (c->root != NULL)
      (void)uv_timer_start(&c->pace, pace_cb, c->root->due - now_of(c), 0);
    return;
  }
  if (c->root == NULL) {
    uv_timer_stop(&c->pace);
    return;
  }
  /* The loop would wait now, for nothing of uvp's (a handle of the
   * program's, perhaps): virtual time has nothing to wait for.  libuv also
   * says 0 while it has changes to its epoll set to apply (after a handle
   * starts or stops reading): then ask again after this turn's poll, which
   * the pace timer makes return at once. */
  if (uv_backend_timeout(loop) != 0) {
    uv_timer_stop(&c->pace);
    fire_due(c, c->root->due);
  } else {
    (void)uv_timer_start(&c->pace, pace_cb, 0, 0);
  }
}

static void handle_closed(uv_handle_t *h) {
  vclock_t *c = h->data;
  uvp_ctx_t *ctx = c->ctx;
  c->open--;
  uvp__loop_handle_end(ctx); /* may free the context, and c with it */
}

static void clock_close(uvp__ext_t *ext) {
  vclock_t *c = UVP__CONTAINER_OF(ext, vclock_t, ext);
  c->automatic = false;
  if (c->handles) {
    uv_close((uv_handle_t *)&c->prepare, handle_closed);
    uv_close((uv_handle_t *)&c->pace, handle_closed);
  }
}

static void clock_destroy(uvp__ext_t *ext) {
  uvp__free(UVP__CONTAINER_OF(ext, vclock_t, ext));
}

static void clock_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

/* ---- the API ------------------------------------------------------------- */

int uvp_ctx_set_clock(uvp_ctx_t *ctx, int mode) {
  int rc = mode < UVP_CLOCK_REAL || mode > UVP_CLOCK_AUTO ? UV_EINVAL
                                                          : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp__ctx_head_t *h = uvp__head(ctx);
  bool virt = mode != UVP_CLOCK_REAL;
  if (virt != h->vclock) {
    /* A timer, a deadline or an operation started on the other clock
     * would be counted on the wrong one. */
    uvp_ctx_stats_t st;
    (void)uvp_ctx_stats(ctx, &st);
    if (st.live != 0 || (h->scope != NULL && h->scope->deadline != NULL))
      return UV_EBUSY;
  }
  static const uvp__ext_t hooks = {
      .close = clock_close, .destroy = clock_destroy, .stats = clock_stats};
  vclock_t *c = clock_of(ctx);
  if (c == NULL && !virt)
    return 0;
  if (c == NULL) {
    c = UVP__EXT_MAKE(ctx, UVP__EXT_CLOCK, vclock_t, &hooks);
    if (c == NULL)
      return UV_ENOMEM;
    c->ctx = ctx;
  }
  if (mode == UVP_CLOCK_AUTO && !c->handles) {
    /* Neither keeps the loop alive: the timers do, as on the real clock. */
    (void)uv_prepare_init(h->loop, &c->prepare);
    (void)uv_timer_init(h->loop, &c->pace);
    c->prepare.data = c->pace.data = c;
    uv_unref((uv_handle_t *)&c->prepare);
    uv_unref((uv_handle_t *)&c->pace);
    c->handles = true;
    c->open = 2;
    /* Until both have closed (they are in c, which the context keeps). */
    uvp__loop_handle_begin(ctx);
    uvp__loop_handle_begin(ctx);
  }
  if (virt && !h->vclock) {
    set_now(c, uv_now(h->loop));
  }
  c->automatic = mode == UVP_CLOCK_AUTO;
  c->pacing = false;
  if (c->automatic) {
    (void)uv_prepare_start(&c->prepare, on_prepare);
  } else if (c->handles) {
    uv_prepare_stop(&c->prepare);
    uv_timer_stop(&c->pace);
  }
  h->vclock = virt;
  return 0;
}

int uvp_clock_advance(uvp_ctx_t *ctx, uint64_t ms) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (!uvp__head(ctx)->vclock)
    return UV_EINVAL;
  vclock_t *c = clock_of(ctx);
  catch_up(c);
  fire_due(c, ms > UINT64_MAX - now_of(c) ? UINT64_MAX : now_of(c) + ms);
  return 0;
}

uint64_t uvp_clock_now(const uvp_ctx_t *ctx) {
  if (ctx == NULL)
    return 0;
  if (uvp__head(ctx)->vclock)
    catch_up(clock_of(ctx));
  return uvp__now(ctx);
}

int uvp_clock_hold(uvp_ctx_t *ctx) {
  int rc = uvp__ctx_check(ctx);
  if (rc == 0 && uvp__head(ctx)->vclock) {
    clock_of(ctx)->held++;
    catch_up(clock_of(ctx)); /* the pace begins now, if it had not */
  }
  return rc;
}

int uvp_clock_unhold(uvp_ctx_t *ctx) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0 || !uvp__head(ctx)->vclock)
    return rc;
  vclock_t *c = clock_of(ctx);
  if (c->held == 0)
    return UV_EINVAL;
  c->held--;
  return 0;
}

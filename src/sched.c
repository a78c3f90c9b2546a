/* The glue to libuv: the per-loop context, the run queue and the handles
 * that drain it, the mailbox for other threads, and teardown.
 *
 * Handles:
 *  - idle:  started (ref'd) only while the queue holds work.  An active idle
 *           handle makes the poll timeout 0, so queued work runs in the very
 *           next iteration and the loop stays alive exactly as long as there
 *           is work; stopped as soon as the queue drains, so an idle process
 *           never spins.
 *  - check: always active but unref'd.  Drains what I/O callbacks queued in
 *           the same iteration, right after poll.  Alone it would not make
 *           poll return (libuv#2022), which is why idle carries the wake-up.
 *  - wake:  wake-up for messages posted by other threads (wake.h: an
 *           eventfd on Linux, an async elsewhere).  The work travels in
 *           the mailbox; sends coalesce.  Unref'd, but
 *           while work that ends on another thread is in flight (a
 *           binding's record, uvp__mail_keep): then it keeps uv_run() going
 *           as a libuv request would, and stays open after uvp_ctx_close
 *           until that work's end has come, referenced then whatever the
 *           work's class says (sweep_closed).
 */
#include <stdlib.h>
#include <string.h>

#include "context.h"
#include "door.h"
#include "runq.h"
#include "scope.h"
#include "stall-marks.h"
#include "trace.h"
#include "watch.h"

#define UVP__DEFAULT_BUDGET 1024
#define UVP__RING_MIN 256 /* run queue slots a context starts with */
#define UVP__PREFETCH_AHEAD 16

UVP__TLS uvp_ctx_t *uvp__current;
UVP__TLS uint16_t uvp__current_id;

uvp_ctx_t *uvp__local_ctx_slow(const uvp_promise_t *p) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (!uvp__on_loop_thread(ctx) || ctx->h.closed)
    return NULL;
  uvp__current = ctx;
  uvp__current_id = ctx->id;
  return ctx;
}

/* The oldest completion; one is queued. */
static uvp__reaction_t *completion_pop(uvp_ctx_t *ctx) {
  ctx->q.queued--;
  ctx->q.completions--;
  uvp__reaction_t *r = ctx->q.chead;
  ctx->q.chead = r->next;
  if (ctx->q.chead == NULL)
    ctx->q.ctail = NULL;
  return r;
}

/* Grow the ring to at least `want` slots, keeping the order. */
static int ring_grow(uvp_ctx_t *ctx, size_t want) {
  size_t cap = ctx->q.ring_cap;
  while (cap < want) {
    if (cap > SIZE_MAX / 2 / sizeof(*ctx->q.ring))
      return UV_ENOMEM;
    cap *= 2;
  }
  if (cap == ctx->q.ring_cap)
    return 0;
  uvp__reaction_t **ring = uvp__malloc(cap * sizeof(*ring));
  if (ring == NULL)
    return UV_ENOMEM;
  /* The indices keep running: a drain's budget_end is one of them. */
  for (size_t i = ctx->q.rhead; i != ctx->q.rtail; i++)
    ring[i & (cap - 1)] = ctx->q.ring[i & (ctx->q.ring_cap - 1)];
  uvp__free(ctx->q.ring);
  ctx->q.ring = ring;
  ctx->q.ring_cap = cap;
  return 0;
}

void uvp__queue_push_slow(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  /* Full: double it.  Only a burst larger than any before allocates. */
  if (ctx->q.spill == NULL && ring_grow(ctx, ctx->q.ring_cap + 1) == 0) {
    ctx->q.ring[ctx->q.rtail++ & (ctx->q.ring_cap - 1)] = r;
    return;
  }
  /* No memory for a larger ring: settling cannot fail, so the reaction
   * waits on the spill list, behind everything in the ring. */
  uvp__rlist_append(&ctx->q.spill, &ctx->q.spill_tail, r);
}

/* The promise a queued reaction will read first: a cell's source, else
 * what its target names (the derived promise of a then may be cold too). */
static UVP__ALWAYS_INLINE const void *first_read(const uvp__reaction_t *r) {
  if (uvp__rkind(r) == UVP__RK_CELL)
    return ((const uvp__cell_t *)(const void *)r)->source;
  return uvp__rtarget(r);
}

/* A settled burst's reactions are scattered over the slabs (or over a
 * combinator's block), and settling did not touch them.  In two stages,
 * the second a few turns after the first has had time to arrive: load the
 * reaction UVP__PREFETCH_AHEAD ahead, then the promise it reads first 2
 * ahead.  A short queue gets the promise of the entry after the one about
 * to run: its reaction was queued a moment ago by a settle that walked it,
 * or is already in cache.  Figures: docs/internals/core.md.  Always inline:
 * GCC 12 finds a function made of prefetches free of side effects and
 * drops the call altogether. */
static UVP__ALWAYS_INLINE void prefetch_ahead(const uvp__runq_t *q) {
  size_t ahead = q->rtail - q->rhead, mask = q->ring_cap - 1;
  if (ahead > UVP__PREFETCH_AHEAD) {
    const char *r =
        (const char *)q->ring[(q->rhead + UVP__PREFETCH_AHEAD) & mask];
    UVP__PREFETCH(r);
    UVP__PREFETCH(r + sizeof(uvp__handler_t) - 1); /* it may span 2 lines */
  }
  if (ahead != 0)
    UVP__PREFETCH(first_read(q->ring[(q->rhead + (ahead > 2 ? 2 : 0)) & mask]));
}

/* The stall detector's mark of r, out of the drain's loop: the loop's
 * own code stays as it is off. */
static UVP__NOINLINE void stall_reaction(uvp_ctx_t *ctx,
                                         const uvp__reaction_t *r) {
  ctx->h.stall_marks->reaction(ctx, r);
}

static void drain(uvp_ctx_t *ctx) {
  uv_loop_t *loop = ctx->h.loop;
  /* Completions (wrappers' finished operations) run when no reaction is
   * queued, so that the handlers of one, and everything they queue, run
   * before the next one settles.  That is the order of completions
   * arriving one per loop iteration, and Node's, which runs the promise
   * jobs of each I/O callback before the next callback; it also runs each
   * handler while the completion has its promise in cache.  Node lets an
   * endless chain of promise jobs starve I/O; here, when a drain found no
   * moment to run a completion, the next one runs those that waited
   * through it first. */
  size_t overdue = ctx->q.overdue;
  bool ran_completion = false;
  /* A handler may close the context or stop the loop: honour both now.
   * The stop flag is tested before each handler, not only after one, so
   * the check-phase drain of the same iteration runs nothing either. */
  ctx->q.budget_end = ctx->q.rhead + ctx->budget;
  while (ctx->q.queued != 0 && !uvp__loop_stopping(loop) &&
         ctx->q.rhead != ctx->q.budget_end) {
    if (ctx->q.completions != 0 &&
        (overdue != 0 || ctx->q.queued == ctx->q.completions)) {
      overdue -= overdue != 0;
      ran_completion = true;
      ctx->q.budget_end--; /* rhead stays */
      uvp__reaction_t *c = completion_pop(ctx);
      if (UVP__UNLIKELY(ctx->h.watch & UVP__WATCH_STALL))
        stall_reaction(ctx, c);
      uvp__run_completion(ctx, c);
      if (ctx->h.closed)
        return;
      continue;
    }
    uvp__reaction_t *r = uvp__runq_take(ctx);
    prefetch_ahead(&ctx->q);
    if (UVP__UNLIKELY(ctx->h.watch & UVP__WATCH_STALL))
      stall_reaction(ctx, r);
    uvp__run_reaction(ctx, r);
    if (ctx->h.closed)
      return;
  }
  ctx->q.budget_end = ctx->q.rhead;
  ctx->q.overdue = ran_completion ? 0 : ctx->q.completions;
  if (ctx->q.queued == 0 && ctx->idle_active && !ctx->h.closed) {
    uv_idle_stop(&ctx->idle);
    ctx->idle_active = false;
  }
}

/* Where the loop thread leaves uvp's callbacks, for the stall detector
 * (the phase it goes to) and the recorder. */
static UVP__NOINLINE void watch_leave(uvp_ctx_t *ctx, int ph) {
  if (ctx->h.closed)
    return;
  if (ctx->h.watch & UVP__WATCH_STALL)
    ctx->h.stall_marks->outside(ctx, ph);
  if (ctx->h.watch & UVP__WATCH_REC)
    uvp__tell(ctx, UVP__HEARD_UVP_END, NULL, NULL, 0);
}

static void idle_cb(uv_idle_t *h) {
  uvp_ctx_t *ctx = h->data;
  if (uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_IDLE, NULL, NULL, 0);
  drain(ctx);
  if (UVP__UNLIKELY(ctx->h.watch))
    watch_leave(ctx, UVP__PH_AFTER_IDLE);
}
static void read_mail(uvp_ctx_t *ctx);
/* Mail is read here too, not only when the wake-up handle's turn comes.  A
 * thread that settles and then tells the loop it is done through a handle
 * of the program's own (its uv_async_send, a pipe) may have its messages'
 * wake-up seen only in the next poll: libuv runs the callbacks of one
 * poll in turn, and ours may have had its turn (nothing pending) just
 * before the thread posted.  By the check phase of the iteration that ran
 * the program's callback, every message posted before its signal is in
 * the mailbox: reading it here means that iteration queues their
 * reactions (keeping the loop alive to run them), so closing the
 * program's handle in its callback never loses a message. */
static void check_cb(uv_check_t *h) {
  uvp_ctx_t *ctx = h->data;
  if (UVP__UNLIKELY(ctx->h.watch)) {
    if (ctx->h.watch & UVP__WATCH_STALL)
      ctx->h.stall_marks->check(ctx);
    if (ctx->h.watch & UVP__WATCH_REC)
      uvp__tell(ctx, UVP__HEARD_CHECK, NULL, NULL, 0);
  }
  if (atomic_load_explicit(&ctx->mail, memory_order_relaxed))
    read_mail(ctx);
  if (ctx->q.queued != 0)
    drain(ctx);
  if (UVP__UNLIKELY(ctx->h.watch))
    watch_leave(ctx, UVP__PH_AFTER_CHECK);
}

/* Queue work exists: make the next poll non-blocking and keep the loop
 * alive until it has run.  uv_idle_start is a list insertion: no syscall. */
void uvp__wake_slow(uvp_ctx_t *ctx) {
  /* Not on a handle the program closed (a uv_walk closing every handle):
   * starting it would link a closed handle back into the loop. */
  if (!ctx->idle_active && !ctx->h.closed &&
      !uv_is_closing((uv_handle_t *)&ctx->idle)) {
    uv_idle_start(&ctx->idle, idle_cb);
    ctx->idle_active = true;
  }
}

void uvp__enqueue(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  uvp__queue_push(ctx, r);
  uvp__wake(ctx);
}

void uvp__enqueue_completion(uvp_ctx_t *ctx, uvp__handler_t *h) {
  uvp__runq_t *q = &ctx->q;
  uvp__rlist_append(&q->chead, &q->ctail, &h->r);
  q->completions++;
  q->queued++;
  uvp__wake(ctx);
}

uvp__sites_t *uvp__ctx_sites(uvp_ctx_t *ctx) { return &ctx->sites; }

uvp__blocks_t *uvp__ctx_blocks(uvp_ctx_t *ctx) { return &ctx->blocks; }

/* ---- locking ------------------------------------------------------------- */

/* ---- the doors (door.h) -------------------------------------------------- */

static _Atomic(const uvp__door_t *) doors[UVP__DOOR_COUNT];

void uvp__door_open(int slot, const uvp__door_t *door) {
  atomic_store(&doors[slot], door);
}

const uvp__door_t *uvp__door_of_cut(uvp_cancel_cb hook) {
  for (int i = 0; i < UVP__DOOR_COUNT; i++) {
    const uvp__door_t *d =
        atomic_load_explicit(&doors[i], memory_order_acquire);
    if (d != NULL && d->cut_hook == hook)
      return d;
  }
  return NULL;
}

/* The teardown's walk: ctx is shut first, then each door is told (door.h
 * says why in that order).  Whether ctx's mailbox must be read again. */
static bool doors_closing(uvp_ctx_t *ctx) {
  atomic_store(&ctx->h.shut, true);
  bool again = false;
  for (int i = 0; i < UVP__DOOR_COUNT; i++) {
    const uvp__door_t *d = atomic_load(&doors[i]);
    if (d != NULL && d->closing != NULL && d->closing(ctx))
      again = true;
  }
  return again;
}

static void doors_freed(uvp_ctx_t *ctx) {
  for (int i = 0; i < UVP__DOOR_COUNT; i++) {
    const uvp__door_t *d = atomic_load(&doors[i]);
    if (d != NULL && d->freed != NULL)
      d->freed(ctx);
  }
}

static void ctx_free(uvp_ctx_t *ctx) {
  for (int i = 0; i < UVP__EXT_COUNT; i++)
    if (ctx->h.ext[i] != NULL)
      ctx->h.ext[i]->destroy(ctx->h.ext[i]);
  uvp__registry_remove(ctx->id);
  doors_freed(ctx); /* nothing reaching it from outside still reads it */
  uvp__pool_destroy(&ctx->promises);
  uvp__pool_destroy(&ctx->reactions);
  uvp__blocks_destroy(&ctx->blocks);
  uvp__free(ctx->q.ring);
  uvp__wake_free(&ctx->wake);
  uv_mutex_destroy(&ctx->mu);
  uvp__free(ctx);
}

void uvp__lock(uvp_ctx_t *ctx) {
  uv_mutex_lock(&ctx->mu);
  ctx->mu_depth++;
}

void uvp__unlock(uvp_ctx_t *ctx) {
  /* A closed context dies with its last promise and its last handle. */
  bool dead = --ctx->mu_depth == 0 && ctx->h.closed &&
              ctx->promises.live == 0 && ctx->holds == 0 &&
              ctx->loop_work == 0 && ctx->waking == 0;
  uv_mutex_unlock(&ctx->mu);
  if (dead)
    ctx_free(ctx);
}

/* Without the lock: a hold is taken on the loop thread while the context
 * is open (its caller has passed uvp__ctx_check), and other threads read
 * `holds` only once `closed` is set, under the lock (uvp__unlock).  A drop
 * may come after the teardown, and takes the lock. */
void uvp__hold(uvp_ctx_t *ctx) {
  UVP__CHECK(!ctx->h.closed);
  ctx->holds++;
}

/* ---- uvp's work in the loop ---------------------------------------------- */

static void loop_count(uvp_ctx_t *ctx, size_t work) {
  if (UVP__LIKELY(!ctx->h.closed)) {
    ctx->loop_work++;
    ctx->inflight += work;
    return;
  }
  uvp__lock(ctx); /* after the teardown other threads read it (uvp__unlock) */
  ctx->loop_work++;
  ctx->inflight += work;
  uvp__unlock(ctx);
}

void uvp__loop_work_begin(uvp_ctx_t *ctx) { loop_count(ctx, 1); }
void uvp__loop_handle_begin(uvp_ctx_t *ctx) { loop_count(ctx, 0); }

void uvp__ext_prepare_open(uvp_ctx_t *ctx, uv_prepare_t *h, bool *open) {
  if (*open)
    return;
  uv_prepare_init(uvp__loop(ctx), h);
  h->data = ctx;
  uv_unref((uv_handle_t *)h);
  uvp__loop_handle_begin(ctx);
  *open = true;
}

/* After uvp_ctx_close: the last end calls the close callback first, while
 * the count still keeps the context, then lets the context go under the
 * lock.  The test of the count is under the lock too: other threads'
 * releases read it there (uvp__unlock), and it is the one rule of a
 * closed context's counts, whoever ends (docs/internals/teardown.md, "A
 * context's life"). */
static UVP__NOINLINE void loop_work_end_closed(uvp_ctx_t *ctx, size_t work) {
  uvp__lock(ctx);
  if (ctx->loop_work == 1 && ctx->closed_cb != NULL) {
    uvp_ctx_closed_cb cb = ctx->closed_cb;
    void *arg = ctx->closed_arg;
    ctx->closed_cb = NULL;
    ctx->closed_arg = NULL;
    ctx->inflight -= work; /* 0 for the callback to read */
    work = 0;
    /* Unlocked: the callback may block on another thread's teardown;
     * the count of 1, this end's, keeps the context meanwhile. */
    uvp__unlock(ctx);
    cb(ctx, arg);
    uvp__lock(ctx);
  }
  ctx->loop_work--;
  ctx->inflight -= work;
  uvp__unlock(ctx); /* may free the context */
}

static void loop_uncount(uvp_ctx_t *ctx, size_t work) {
  if (UVP__LIKELY(!ctx->h.closed)) {
    ctx->loop_work--;
    ctx->inflight -= work;
  } else {
    loop_work_end_closed(ctx, work);
  }
}

void uvp__loop_work_end(uvp_ctx_t *ctx) { loop_uncount(ctx, 1); }
void uvp__loop_handle_end(uvp_ctx_t *ctx) { loop_uncount(ctx, 0); }

size_t uvp_ctx_inflight(const uvp_ctx_t *ctx) {
  if (ctx == NULL)
    return 0;
  if (uvp__on_loop_thread(ctx))
    return ctx->inflight;
  /* After the teardown, elsewhere: the loop thread changes it under the
   * lock (not uvp__lock: a reader frees nothing). */
  uv_mutex_t *mu = (uv_mutex_t *)(uintptr_t)&ctx->mu;
  uv_mutex_lock(mu);
  size_t n = ctx->inflight;
  uv_mutex_unlock(mu);
  return n;
}

void uvp__drop(uvp_ctx_t *ctx) {
  uvp__lock(ctx);
  ctx->holds--;
  uvp__unlock(ctx);
}

/* ---- cross-thread mailbox ------------------------------------------------ */

/* The context's handles' close callback. */
static void handle_closed(uv_handle_t *h) { uvp__loop_handle_end(h->data); }

static void apply_msg(uvp_ctx_t *ctx, uvp__msg_t *m) {
  int rc = 0;
  if (uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_MAIL, m->p, (const void *)(intptr_t)m->code,
              m->op);
  switch (m->op) {
  case UVP__MSG_RESOLVE:
    rc = uvp__resolve_local(m->p, m->value, m->free_cb);
    break;
  case UVP__MSG_REJECT:
    rc = uvp__reject_local(m->p, m->code, m->value, m->free_cb);
    break;
  default:
    uvp__unref_open(m->p);
    break;
  }
  /* The poster was told 0 and gave the value away: it is ours to destroy. */
  if (rc != 0 && m->free_cb != NULL && m->value != NULL)
    m->free_cb(m->value);
}

/* The oldest message, taken off the mailbox (NULL: none).  Taken one at a
 * time, so that what applying one runs (a destructor, uvp_ctx_close) finds
 * every later message still in the mailbox, in order. */
static uvp__msg_t *take_msg(uvp_ctx_t *ctx) {
  uv_mutex_lock(&ctx->mu);
  uvp__msg_t *m = ctx->mhead;
  if (m != NULL) {
    ctx->mhead = m->next;
    if (ctx->mhead == NULL) {
      ctx->mtail = NULL;
      atomic_store_explicit(&ctx->mail, false, memory_order_relaxed);
    }
  }
  uv_mutex_unlock(&ctx->mu);
  return m;
}

/* On the loop thread only, after the teardown too: another thread's
 * release never reads a closed context's mail (promise.c), and the
 * messages it may still get (uvp__post_call's) take the lock for what
 * other threads read (references, the work count).  Not under the lock:
 * what they apply may post to another context, taking its lock, whose
 * own closed loop may be posting here (a lock-order inversion). */
static void read_mail(uvp_ctx_t *ctx) {
  bool outer = !atomic_load_explicit(&ctx->reading_mail, memory_order_relaxed);
  atomic_store_explicit(&ctx->reading_mail, true, memory_order_relaxed);
  uvp__msg_t *m;
  while ((m = take_msg(ctx)) != NULL) {
    if (m->op == UVP__MSG_CALL) { /* the poster's memory, which fn may reuse */
      m->free_cb(m->value);
      continue;
    }
    apply_msg(ctx, m);
    uvp__free(m);
  }
  if (outer)
    atomic_store_explicit(&ctx->reading_mail, false, memory_order_relaxed);
}

void uvp__read_mail(uvp_ctx_t *ctx) { read_mail(ctx); }

/* The stall detector times it as uvp's own callback; it runs among the
 * I/O callbacks, so the time after it is the poll's again. */
static void wake_cb(uvp__wake_t *w) {
  uvp_ctx_t *ctx = uvp__wake_handle(w)->data;
  if (UVP__UNLIKELY(ctx->h.watch & UVP__WATCH_STALL))
    ctx->h.stall_marks->async(ctx);
  read_mail(ctx);
  if (UVP__UNLIKELY(ctx->h.watch & UVP__WATCH_STALL) && !ctx->h.closed)
    ctx->h.stall_marks->outside(ctx, UVP__PH_POLL);
}

/* Append m to the mailbox and wake the loop; under the lock.  Returns
 * whether the caller is to send the wake-up once it has let go of the
 * lock (wake_after).  The loop, woken by a send made under the lock,
 * would wait for the lock while the sender still finishes its write:
 * two futex calls a wake-up, a third of a round trip between two loops
 * on one CPU (internals 23.4). */
static bool mail_append(uvp_ctx_t *ctx, uvp__msg_t *m) {
  m->next = NULL;
  bool wake = ctx->mhead == NULL;
  if (ctx->mtail != NULL)
    ctx->mtail->next = m;
  else
    ctx->mhead = m;
  ctx->mtail = m;
  atomic_store_explicit(&ctx->mail, true, memory_order_relaxed);
  if (!wake || ctx->mail_closed)
    return false;
  /* libuv's async is sent under the lock: the handle is closed only
   * under it, after `mail_closed` is set, so no send can reach a closing
   * handle.  An eventfd is written after it, the context's memory kept
   * meanwhile (`waking`): the descriptor stays open until the memory
   * goes. */
  if (!uvp__wake_unlocked(&ctx->wake)) {
    uvp__wake_send(&ctx->wake);
    return false;
  }
  ctx->waking++;
  return true;
}

/* The send mail_append left to its caller, who has let go of the lock. */
static void wake_after(uvp_ctx_t *ctx) {
  uvp__wake_send(&ctx->wake);
  uvp__lock(ctx);
  ctx->waking--;
  uvp__unlock(ctx); /* may free a closed context */
}

int uvp__post(uvp_promise_t *p, int op, int code, void *value,
              uvp_free_cb free_cb) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  uvp__lock(ctx);
  if (ctx->h.closed) {
    /* After teardown nothing settles any more; a release is done here,
     * under the lock every post-teardown reference change takes. */
    int rc = UVP_ECLOSED;
    if (op == UVP__MSG_RELEASE) {
      uvp__unref_open(p);
      rc = 0;
    }
    uvp__unlock(ctx);
    return rc;
  }
  uvp__msg_t *m = uvp__malloc(sizeof(*m));
  if (m == NULL) {
    uvp__unlock(ctx);
    return UV_ENOMEM;
  }
  m->p = p;
  m->op = op;
  m->code = code;
  m->value = value;
  m->free_cb = free_cb;
  bool send = mail_append(ctx, m);
  uvp__unlock(ctx);
  if (send)
    wake_after(ctx);
  return 0;
}

void uvp__post_call(uvp_ctx_t *ctx, uvp__msg_t *m, uvp_free_cb fn, void *arg) {
  m->p = NULL;
  m->op = UVP__MSG_CALL;
  m->code = 0;
  m->value = arg;
  m->free_cb = fn;
  /* Also after the teardown: the caller's hold keeps the context (its
   * work counts in the loop) and the mailbox open until fn has run. */
  uvp__lock(ctx);
  bool send = mail_append(ctx, m);
  uvp__unlock(ctx);
  if (send)
    wake_after(ctx);
}

static void closed_cb_later(uvp_ctx_t *ctx);

/* No work that may end elsewhere is left after the teardown: the wake-up
 * closes (its close callback ends the context's count of it). */
static void close_mail(uvp_ctx_t *ctx) {
  bool by_host = false;
  uvp__lock(ctx);
  if (!ctx->mail_closed) {
    ctx->mail_closed = true;
    /* A host's walk closed it after the teardown, with a close callback
     * of its own: its count goes here (never the last: the ending
     * record's still holds the context). */
    by_host = uv_is_closing(uvp__wake_handle(&ctx->wake));
    if (!by_host)
      uv_close(uvp__wake_handle(&ctx->wake), handle_closed);
  }
  uvp__unlock(ctx);
  if (by_host)
    uvp__loop_handle_end(ctx);
  /* The last record is ending (uvp__mail_hold), inside uvp_inflight_end:
   * if its count is all that is left (the host's walk closed the wake-up,
   * whose close callback would have run uvp_ctx_close_full's), the
   * callback waits for a close callback of a handle opened for it, never
   * running inside uvp_inflight_end.  The count is read under the lock,
   * as everywhere after the teardown. */
  uvp__lock(ctx);
  if (ctx->loop_work == 1 && ctx->closed_cb != NULL)
    closed_cb_later(ctx);
  uvp__unlock(ctx);
}

void uvp__mail_hold(uvp_ctx_t *ctx, bool held) {
  ctx->mail_held = held;
  if (!held && UVP__UNLIKELY(ctx->h.closed))
    close_mail(ctx);
}

void uvp__mail_keep(uvp_ctx_t *ctx, bool kept) {
  if (UVP__UNLIKELY(ctx->h.closed))
    return; /* referenced until the last end (sweep_closed) */
  if (kept)
    uv_ref(uvp__wake_handle(&ctx->wake));
  else
    uv_unref(uvp__wake_handle(&ctx->wake));
}

/* ---- context ------------------------------------------------------------- */

/* UVP_CHECKS=thread turns the thread check on for every context. */
static unsigned int checks_from_env(void) {
  const char *s = getenv("UVP_CHECKS");
  return s != NULL && strstr(s, "thread") != NULL ? UVP_CHECK_THREAD : 0;
}

/* UVP_TRACES=1 turns async traces on for every context. */
static bool traces_from_env(void) {
  const char *s = getenv("UVP_TRACES");
  return s != NULL && strcmp(s, "1") == 0;
}

/* Undo what uvp_ctx_new did before it failed. */
static int ctx_init_failed(uvp_ctx_t *ctx, int rc) {
  (void)uvp__trace_set(ctx, false);
  if (ctx->id != 0)
    uvp__registry_remove(ctx->id);
  uvp__free(ctx->q.ring);
  uv_mutex_destroy(&ctx->mu);
  uvp__free(ctx);
  return rc;
}

int uvp_ctx_new(uv_loop_t *loop, uvp_ctx_t **out) {
  if (loop == NULL || out == NULL)
    return UV_EINVAL;
  uvp_ctx_t *ctx = uvp__calloc(1, sizeof(*ctx));
  if (ctx == NULL)
    return UV_ENOMEM;
  atomic_init(&ctx->mail, false);
  atomic_init(&ctx->reading_mail, false);
  int rc = uv_mutex_init_recursive(&ctx->mu);
  if (rc != 0) {
    uvp__free(ctx);
    return rc;
  }
  ctx->q.ring_cap = UVP__RING_MIN;
  ctx->q.ring = uvp__malloc(UVP__RING_MIN * sizeof(*ctx->q.ring));
  if (ctx->q.ring == NULL)
    return ctx_init_failed(ctx, UV_ENOMEM);
  rc = uvp__registry_add(ctx, &ctx->id);
  if (rc != 0)
    return ctx_init_failed(ctx, rc);
  ctx->h.loop = loop;
  ctx->h.thread = &uvp__thread_anchor;
  ctx->budget = UVP__DEFAULT_BUDGET;
  ctx->epoch = uv_now(loop);
  ctx->h.check_thread = checks_from_env() & UVP_CHECK_THREAD;
  ctx->h.guarded = ctx->h.check_thread;
  uvp__pool_init(&ctx->promises, sizeof(uvp_promise_t));
  uvp__pool_init(&ctx->reactions, sizeof(uvp__handler_t));
  if (traces_from_env() && uvp__trace_set(ctx, true) != 0)
    return ctx_init_failed(ctx, UV_ENOMEM);

  /* Of the handles' inits only the wake-up's can fail (libuv's async may
   * need the loop's eventfd, made at its first).  Done first,
   * so a failure leaves no open handle whose close callback would have to
   * outlive the context. */
  rc = uvp__wake_init(loop, &ctx->wake, wake_cb);
  if (rc != 0)
    return ctx_init_failed(ctx, rc);
  uv_idle_init(loop, &ctx->idle);
  uv_check_init(loop, &ctx->check);
  ctx->idle.data = ctx->check.data = uvp__wake_handle(&ctx->wake)->data = ctx;
  uv_unref((uv_handle_t *)&ctx->check);
  uv_unref(uvp__wake_handle(&ctx->wake));
  uv_check_start(&ctx->check, check_cb);
  ctx->loop_work = 3;
  *out = ctx;
  return 0;
}

uv_loop_t *uvp_ctx_loop(const uvp_ctx_t *ctx) {
  return ctx != NULL ? ctx->h.loop : NULL;
}

int uvp_ctx_set_budget(uvp_ctx_t *ctx, unsigned int budget) {
  int rc = budget == 0 ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc == 0)
    ctx->budget = budget;
  return rc;
}

/* Teardown and the pending dump walk the promise slabs: a free slot must
 * say so. */
static void mark_free(void *slot) {
  ((uvp_promise_t *)slot)->state = UVP__S_FREE;
}

int uvp_ctx_reserve(uvp_ctx_t *ctx, size_t promises, size_t reactions) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  rc = uvp__pool_reserve(&ctx->promises, promises, mark_free);
  if (rc == 0)
    rc = uvp__pool_reserve(&ctx->reactions, reactions, NULL);
  /* Room to queue every reserved reaction at once, beyond what is queued. */
  size_t in_ring = ctx->q.queued - ctx->q.completions; /* completions: a list */
  if (rc == 0 && reactions > SIZE_MAX - in_ring)
    rc = UV_ENOMEM;
  if (rc == 0)
    rc = ring_grow(ctx, in_ring + reactions);
  return rc;
}

int uvp_ctx_trim(uvp_ctx_t *ctx) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  (void)uvp__pool_trim(&ctx->promises);
  (void)uvp__pool_trim(&ctx->reactions);
  (void)uvp__blocks_trim(&ctx->blocks);
  /* Nothing queued: the ring is empty, whatever its indices say. */
  if (ctx->q.queued == ctx->q.completions && ctx->q.ring_cap > UVP__RING_MIN &&
      ctx->q.spill == NULL) {
    uvp__reaction_t **ring = uvp__malloc(UVP__RING_MIN * sizeof(*ring));
    if (ring != NULL) {
      uvp__free(ctx->q.ring);
      ctx->q.ring = ring;
      ctx->q.ring_cap = UVP__RING_MIN;
    }
  }
  for (int i = 0; i < UVP__EXT_COUNT; i++)
    if (ctx->h.ext[i] != NULL && ctx->h.ext[i]->trim != NULL)
      ctx->h.ext[i]->trim(ctx->h.ext[i]);
  return 0;
}

/* Let go of the hook's and the data's arguments (replaced, or at close). */
static void drop_arg(void **arg, uvp_free_cb *arg_free) {
  uvp_free_cb f = *arg_free;
  void *a = *arg;
  *arg_free = NULL;
  *arg = NULL;
  if (f != NULL)
    f(a);
}

/* The hook installed is going (replaced, or the context closes): its
 * argument goes now, or, if that hook is running, when its outermost call
 * returns. */
static void retire_unhandled(uvp_ctx_t *ctx) {
  uvp__report_t *last = NULL;
  for (uvp__report_t *r = ctx->reports; r != NULL; r = r->outer)
    if (r->gen == ctx->unhandled_gen)
      last = r;
  ctx->unhandled_gen++;
  if (last == NULL) {
    drop_arg(&ctx->unhandled_arg, &ctx->unhandled_free);
    return;
  }
  last->arg = ctx->unhandled_arg;
  last->arg_free = ctx->unhandled_free;
  ctx->unhandled_arg = NULL;
  ctx->unhandled_free = NULL;
}

int uvp_ctx_set_unhandled_cb_full(uvp_ctx_t *ctx, uvp_unhandled_cb cb,
                                  void *arg, uvp_free_cb arg_free) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, arg, arg_free);
  retire_unhandled(ctx);
  ctx->unhandled_cb = cb;
  ctx->unhandled_arg = arg;
  ctx->unhandled_free = cb != NULL ? arg_free : NULL;
  return 0;
}

int uvp_ctx_set_unhandled_cb(uvp_ctx_t *ctx, uvp_unhandled_cb cb, void *arg) {
  return uvp_ctx_set_unhandled_cb_full(ctx, cb, arg, NULL);
}

int uvp_ctx_set_checks(uvp_ctx_t *ctx, unsigned int checks) {
  int rc =
      (checks & ~(unsigned)UVP_CHECK_THREAD) ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc == 0) {
    ctx->h.check_thread = (checks & UVP_CHECK_THREAD) != 0;
    ctx->h.guarded = ctx->h.check_thread || ctx->h.closed;
  }
  return rc;
}

int uvp_ctx_set_data(uvp_ctx_t *ctx, void *data, uvp_free_cb free_cb) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, data, free_cb);
  drop_arg(&ctx->data, &ctx->data_free);
  ctx->data = data;
  ctx->data_free = free_cb;
  return 0;
}

void *uvp_ctx_data(const uvp_ctx_t *ctx) {
  return ctx != NULL ? ctx->data : NULL;
}

int uvp_ctx_stats(const uvp_ctx_t *ctx, uvp_ctx_stats_t *out) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  /* Not uvp__ctx_check: a closed context still has counts to give. */
  if (uvp__refused_thread(ctx))
    return UVP_ETHREAD;
  out->live = ctx->promises.live;
  out->pending = ctx->pending;
  out->queued = ctx->q.queued;
  out->slab_bytes = ctx->promises.bytes + ctx->reactions.bytes +
                    ctx->q.ring_cap * sizeof(*ctx->q.ring) +
                    ctx->blocks.spare_size;
  out->slab_idle_bytes =
      uvp__pool_idle_bytes(&ctx->promises) +
      uvp__pool_idle_bytes(&ctx->reactions) +
      (ctx->q.ring_cap - (ctx->q.queued - ctx->q.completions)) *
          sizeof(*ctx->q.ring) +
      ctx->blocks.spare_size;
  out->slab_allocs = ctx->promises.allocs + ctx->reactions.allocs;
  out->fibers = out->fiber_stacks = out->fiber_stack_bytes = 0;
  for (int i = 0; i < UVP__EXT_COUNT; i++)
    if (ctx->h.ext[i] != NULL)
      ctx->h.ext[i]->stats(ctx->h.ext[i], out);
  out->site_misses = ctx->sites.misses;
  return 0;
}

/* Drop every queued reaction and completion (reactions first, as the
 * drain would have run them), and whatever dropping them queues. */
static void drop_queued(uvp_ctx_t *ctx) {
  while (ctx->q.queued != 0) {
    if (ctx->q.queued != ctx->q.completions)
      uvp__drop_reaction(ctx, uvp__reaction_pop(ctx), true);
    else
      uvp__drop_reaction(ctx, completion_pop(ctx), true);
  }
}

static void find_handle(uv_handle_t *h, void *arg) {
  uv_handle_t **want = arg; /* {the handle, found} */
  if (h == want[0])
    want[1] = h;
}

/* A program that closes every handle with uv_walk before uvp_ctx_close
 * closes ours too (nothing tells them apart).  One whose close has
 * completed is gone from the loop's list: count it closed.  One still in
 * the list is closing with the program's callback, which is all that
 * says when libuv is done with the context's memory: the caller must run
 * the loop first (UV_EBUSY). */
static int count_closed_by_host(uvp_ctx_t *ctx, uv_handle_t **hs, int nh) {
  int closed = 0;
  for (int i = 0; i < nh; i++) {
    if (!uv_is_closing(hs[i]))
      continue;
    uv_handle_t *want[2] = {hs[i], NULL};
    uv_walk(ctx->h.loop, find_handle, want);
    if (want[1] != NULL)
      return UV_EBUSY;
    closed++;
  }
  return closed;
}

/* The teardown under the lock (held across the whole sweep: from `closed`
 * on, other threads change references only under it): every promise
 * rejected and its hook run, what that queues dropped, the handles
 * closing. */
static void sweep_closed(uvp_ctx_t *ctx, uv_handle_t **hs, int nh) {
  uvp__lock(ctx);
  ctx->h.closed = true;
  ctx->h.guarded = true;
  uv_handle_t *wake = uvp__wake_handle(&ctx->wake);
  if (uv_is_closing(wake)) /* by the host: nothing may send it now */
    ctx->mail_closed = true;
  /* A closed context may be freed from any thread, so this thread must
   * stop naming it: its id (and address) may come back as another
   * context's. */
  if (uvp__current == ctx) {
    uvp__current = NULL;
    uvp__current_id = 0;
  }
  /* Messages posted before the close still count: apply them first. */
  read_mail(ctx);
  /* The sweep's hooks and dropped observers may settle what waits on what
   * they tear down (a group whose last member goes rejects its join, which
   * a member of another group waits for): what that queues is dropped in
   * turn, or it would hold its promises, and so the context, for good;
   * and a derived promise that a dropped reaction leaves pending is swept
   * then. */
  do {
    drop_queued(ctx);
    uvp__sweep(ctx);
  } while (ctx->q.queued != 0);
  if (ctx->idle_active) {
    uv_idle_stop(&ctx->idle);
    ctx->idle_active = false;
  }
  /* Nothing is reported after the sweep (nothing settles any more): the
   * hook's argument goes now, on this thread. */
  ctx->unhandled_cb = NULL;
  retire_unhandled(ctx);
  for (int i = 0; i < nh; i++) {
    /* The wake-up stays open for the ends of work that may end on another
     * thread: the last one's end closes it (uvp__mail_hold).  Referenced
     * meanwhile, whatever the records' classes say (UVP_INFLIGHT_UNREF):
     * uv_run() must go on until an end posted from another thread has
     * come, or the close would never complete (a closing handle keeps
     * the loop alive, ref'd or not, in the same way). */
    if (hs[i] == wake && ctx->mail_held) {
      if (!uv_is_closing(wake))
        uv_ref(wake);
      continue;
    }
    if (!uv_is_closing(hs[i])) {
      uv_close(hs[i], handle_closed);
      if (hs[i] == wake)
        ctx->mail_closed = true;
    }
  }
  uvp__unlock(ctx);
}

/* The host closed some of the handles itself (by_host of them): their
 * count goes now, last, since the context may be freed with it. */
static void closed_by_host(uvp_ctx_t *ctx, int by_host) {
  uvp__lock(ctx);
  ctx->loop_work -= (size_t)by_host;
  /* Nothing of uvp's is left in the loop to call the callback from, and
   * it never runs inside this call. */
  if (ctx->loop_work == 0 && ctx->closed_cb != NULL)
    closed_cb_later(ctx);
  uvp__unlock(ctx);
}

/* uvp_ctx_close_full's callback where nothing of uvp's but the caller's
 * own count is left in the loop to call it from: the idle handle (its
 * close has completed, since it counted, so its memory is ours again) is
 * opened and closed at once, and its close callback calls it, on the
 * loop's next turn. */
static void closed_cb_later(uvp_ctx_t *ctx) {
  uvp__lock(ctx);
  uv_idle_init(ctx->h.loop, &ctx->idle);
  ctx->idle.data = ctx;
  ctx->loop_work++;
  uv_close((uv_handle_t *)&ctx->idle, handle_closed);
  uvp__unlock(ctx);
}

static int ctx_close(uvp_ctx_t *ctx, uvp_ctx_closed_cb closed_cb,
                     void *closed_arg) {
  /* A second close may come once the context is freed: look it up first,
   * without reading it. */
  if (ctx == NULL)
    return UV_EINVAL; /* as uvp__ctx_check says, which is out of line now */
  if (!uvp__registry_has(ctx))
    return UVP_ECLOSED;
  int rc = uvp__ctx_check(ctx);
  if (rc == 0)
    rc = uvp__close_refused;
  if (rc != 0)
    return rc;
  /* The context's handles, and the stall detector's and the recorder's
   * once they were on. */
  uv_handle_t *hs[5] = {(uv_handle_t *)&ctx->idle, (uv_handle_t *)&ctx->check,
                        uvp__wake_handle(&ctx->wake)};
  int nh = 3;
  if (ctx->h.stall_marks != NULL && (hs[nh] = ctx->h.stall_marks->handle(ctx)))
    nh++;
  if (ctx->h.watch_hook != NULL && (hs[nh] = ctx->h.watch_hook->handle(ctx)))
    nh++;
  int by_host = count_closed_by_host(ctx, hs, nh);
  if (by_host < 0)
    return by_host;
  /* Nothing below can bring loop_work to 0 before the end of this call:
   * the three handles count until their close callbacks (or the
   * subtraction at the end for those the host closed). */
  ctx->closed_cb = closed_cb;
  ctx->closed_arg = closed_arg;
  sweep_closed(ctx, hs, nh);
  if (doors_closing(ctx)) /* their messages may have come since */
    read_mail(ctx);
  /* The layers' own teardown (fibers run to their end) after the lock: a
   * fiber takes it again for each release, and a fiber is, to the tools,
   * another owner of a lock it would find held.  The handles are closing:
   * the context outlives this. */
  for (int i = 0; i < UVP__EXT_COUNT; i++)
    if (ctx->h.ext[i] != NULL && ctx->h.ext[i]->close != NULL)
      ctx->h.ext[i]->close(ctx->h.ext[i]);
  /* The slots current out here (the fibers above ran in their own). */
  uvp__scope_unref(ctx->h.scope);
  ctx->h.scope = NULL;
  drop_arg(&ctx->data, &ctx->data_free); /* the fibers may have used it */
  if (by_host != 0) /* last: with them the context may be freed now */
    closed_by_host(ctx, by_host);
  return 0;
}

int uvp_ctx_close(uvp_ctx_t *ctx) { return ctx_close(ctx, NULL, NULL); }

int uvp_ctx_close_full(uvp_ctx_t *ctx, uvp_ctx_closed_cb closed_cb, void *arg) {
  if (closed_cb == NULL)
    return UV_EINVAL;
  return ctx_close(ctx, closed_cb, arg);
}

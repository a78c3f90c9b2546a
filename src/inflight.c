/* The door for bindings' work in flight (uvp_inflight_t, include/uvp/groups.h):
 * the public face of uvp's own door (work-door.h).  Each started record has
 * a block of uvp's own, taken from the context's free list, holding the
 * uvp__work_t whose class forwards a cut to the public class's cancel and
 * the task dump's question to its kind and describe; so the binding's work
 * is told to its scope's owner, deadline, the virtual clock and the
 * context's count exactly as an operation's is, and the dump finds it,
 * with its group, through the promise's record.
 *
 * The block, not the caller's record, is what the promise's hook names,
 * because the record may end on another thread (the library's callback
 * thread), which frees it right after: from then on a cut or the dump must
 * find the block saying "ended", and the block itself lives until that end,
 * posted to the loop thread, has been applied there.  The block's `w` is the
 * record while it lives; it changes under the state's lock, which is a leaf:
 * taken for a few instructions around a class call (to mark the call) and
 * by an end elsewhere (to clear `w` and wait until no call of the record
 * runs), never held across the class's code nor together with another lock
 * but by the loop thread inside the context's (the teardown's sweep).  An
 * end elsewhere thus waits only for a cancel or describe of its own record,
 * never for other records' calls.  On the loop thread start and end take
 * no lock: only that thread calls the class, and a record ends once.
 *
 * The block keeps a reference to the promise from start to end, so the
 * end can tell whether it is still pending and take its hook back: a hook
 * left behind would call into a block that is reused. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "mail.h"
#include "recorder.h"
#include "work-door.h"

enum { W_IDLE = 0, W_STARTED = 1, W_ENDED = 2 };

typedef struct state_s state_t;
typedef struct blk_s blk_t;

struct blk_s {
  uvp__work_t work; /* first: the promise's hook argument */
  state_t *st;
  /* The caller's record, NULL once it has ended: written under st->mu
   * but by the loop thread while no other thread knows the block. */
  uvp_inflight_t *w;
  /* The loop thread's class calls running for w (nested ones too): written
   * by the loop thread under st->mu. */
  unsigned calls;
  bool waited; /* an end elsewhere waits for calls to be 0 (st->mu) */
  bool ended;  /* ended on the loop thread inside a call of its own:
                  the call's return puts the block back */
  bool keep;   /* holds uv_run() (uvp__mail_keep) */
  /* Never both: a block is on the free list only once its end, posted from
   * another thread, has been taken off the mailbox (read_mail takes a
   * message off before it calls it).  One a request of a burst of NATS
   * requests: 96 bytes of a malloc chunk instead of 112 (internals 21.13). */
  union {
    blk_t *next;     /* on the free list */
    uvp__msg_t mail; /* its end, posted from another thread */
  } u;
};
_Static_assert(sizeof(void *) != 8 || sizeof(blk_t) <= 88,
               "a block fits a 96-byte malloc chunk (internals 21.13)");

struct state_s {
  uvp__ext_t ext;
  uvp_ctx_t *ctx;
  uv_mutex_t mu;
  uv_cond_t cv; /* calls of a waited block reached 0 */
  blk_t *free;
  size_t blocks; /* made and not freed */
  size_t idle;   /* of which on the free list */
  size_t held;   /* records started (uvp__mail_hold as it leaves 0) */
  size_t kept;   /* of which keep uv_run() going (uvp__mail_keep) */
};

static blk_t *blk_of(const uvp__work_t *work) {
  return (blk_t *)(void *)(uintptr_t)work;
}

static void free_idle(state_t *st) {
  while (st->free != NULL) {
    blk_t *b = st->free;
    st->free = b->u.next;
    uvp__free(b);
  }
  st->blocks -= st->idle;
  st->idle = 0;
}

/* Every record has ended when the context goes: all blocks are idle. */
static void state_destroy(uvp__ext_t *ext) {
  state_t *st = UVP__CONTAINER_OF(ext, state_t, ext);
  free_idle(st);
  uv_cond_destroy(&st->cv);
  uv_mutex_destroy(&st->mu);
  uvp__free(st);
}

static void state_trim(uvp__ext_t *ext) {
  free_idle(UVP__CONTAINER_OF(ext, state_t, ext));
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  const state_t *st = UVP__CONTAINER_OF(ext, const state_t, ext);
  out->slab_bytes += st->blocks * sizeof(blk_t);
  out->slab_idle_bytes += st->idle * sizeof(blk_t);
}

static UVP__NOINLINE state_t *state_make(uvp_ctx_t *ctx) {
  static const uvp__ext_t hooks = {
      .destroy = state_destroy, .trim = state_trim, .stats = state_stats};
  state_t *st = UVP__EXT_MAKE(ctx, UVP__EXT_INFLIGHT, state_t, &hooks);
  if (st == NULL)
    return NULL;
  st->ctx = ctx;
  if (uv_mutex_init(&st->mu) != 0) {
    uvp__head(ctx)->ext[UVP__EXT_INFLIGHT] = NULL;
    uvp__free(st);
    return NULL;
  }
  if (uv_cond_init(&st->cv) != 0) {
    uv_mutex_destroy(&st->mu);
    uvp__head(ctx)->ext[UVP__EXT_INFLIGHT] = NULL;
    uvp__free(st);
    return NULL;
  }
  return st;
}

static blk_t *blk_take(uvp_ctx_t *ctx) {
  state_t *st = UVP__EXT_OF(ctx, UVP__EXT_INFLIGHT, state_t);
  if (UVP__UNLIKELY(st == NULL) && (st = state_make(ctx)) == NULL)
    return NULL;
  blk_t *b = st->free;
  if (UVP__LIKELY(b != NULL)) {
    st->free = b->u.next;
    st->idle--;
    return b;
  }
  b = uvp__calloc(1, sizeof(*b));
  if (b != NULL) {
    b->st = st;
    st->blocks++;
  }
  return b;
}

/* Past UVP_INFLIGHT_KEEP idle blocks, a burst's go back to the allocator:
 * kept, they held 96 bytes a request of a burst of 100 000 NATS requests
 * that the replies, allocated as the requests ended, could not use
 * (bench/run-nats: 593 bytes a request held, 500 with the blocks given
 * back). */
static void blk_put(blk_t *b) {
  state_t *st = b->st;
  if (UVP__UNLIKELY(st->idle >= UVP_INFLIGHT_KEEP)) {
    st->blocks--;
    uvp__free(b);
    return;
  }
  b->u.next = st->free;
  st->free = b;
  st->idle++;
}

/* The loop thread is about to call the class for b's record: the record,
 * or NULL if it has ended (elsewhere: its end is on its way). */
static uvp_inflight_t *call_begin(blk_t *b) {
  uv_mutex_lock(&b->st->mu);
  uvp_inflight_t *w = b->w;
  b->calls += w != NULL;
  uv_mutex_unlock(&b->st->mu);
  return w;
}

static void call_end(blk_t *b) {
  state_t *st = b->st;
  uv_mutex_lock(&st->mu);
  bool wake = --b->calls == 0 && b->waited;
  if (wake)
    b->waited = false;
  uv_mutex_unlock(&st->mu);
  if (wake)
    uv_cond_broadcast(&st->cv);
  if (b->calls == 0 && b->ended) { /* its end came from inside the call */
    b->ended = false;
    blk_put(b);
  }
}

static void on_cancel(uvp__work_t *work, uvp_promise_t *p, int code) {
  blk_t *b = blk_of(work);
  (void)p;
  uvp_inflight_t *w = call_begin(b);
  if (w == NULL)
    return;
  w->cls_->cancel(w, code);
  call_end(b);
}

static void on_describe(const uvp__work_t *work, uvp__what_t *what) {
  blk_t *b = blk_of(work);
  what->owner = uvp__work_owner(work);
  uvp_inflight_t *w = call_begin(b);
  if (w == NULL) {
    snprintf(what->target, sizeof(what->target), "(ended, on another thread)");
    return;
  }
  snprintf(what->kind, sizeof(what->kind), "%s", w->cls_->kind);
  int n = w->cls_->describe == NULL
              ? 0
              : w->cls_->describe(w, what->target, sizeof(what->target));
  if (n < 0)
    snprintf(what->target, sizeof(what->target), "(its description failed: %d)",
             n);
  else if (w->cls_->describe != NULL) /* its length, with or without a NUL */
    what->target[(size_t)n < sizeof(what->target) ? (size_t)n
                                                  : sizeof(what->target) - 1] =
        '\0';
  call_end(b);
}

/* By UVP_INFLIGHT_IDLE. */
static const uvp__work_class_t classes[2] = {
    {on_cancel, on_describe, "binding", 0},
    {on_cancel, on_describe, "binding", UVP__WORK_IDLE}};

static int check_start(uvp_ctx_t *ctx, const uvp_inflight_t *w,
                       const uvp_promise_t *p,
                       const uvp_inflight_class_t *cls) {
  if (w == NULL || p == NULL || cls == NULL || cls->kind == NULL ||
      cls->cancel == NULL ||
      (cls->flags & ~(UVP_INFLIGHT_IDLE | UVP_INFLIGHT_UNREF)) != 0 ||
      w->state_ == W_STARTED)
    return UV_EINVAL;
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (uvp__promise_ctx(p) != ctx)
    return UVP_EXCTX;
  if (!uvp__is_pending(p))
    return UVP_ESETTLED;
  if (p->flags & (UVP__F_CANCEL | UVP__F_OWNED | UVP__F_WAITING))
    return UV_EBUSY;
  return 0;
}

int uvp_inflight_start(uvp_ctx_t *ctx, uvp_inflight_t *w, uvp_promise_t *p,
                       const uvp_inflight_class_t *cls) {
  int rc = check_start(ctx, w, p, cls);
  if (rc != 0)
    return rc;
  blk_t *b = blk_take(ctx);
  if (b == NULL)
    return UV_ENOMEM;
  rc = uvp__work_attach(ctx, &b->work, p,
                        &classes[(cls->flags & UVP_INFLIGHT_IDLE) ? 1 : 0]);
  if (rc != 0) {
    blk_put(b);
    return rc;
  }
  state_t *st = b->st;
  b->w = w;
  b->keep = !(cls->flags & UVP_INFLIGHT_UNREF);
  if (st->held++ == 0)
    uvp__mail_hold(ctx, true);
  if (b->keep && st->kept++ == 0)
    uvp__mail_keep(ctx, true);
  uvp__retain_local(p);
  w->cls_ = cls;
  w->work_[0] = b;
  w->state_ = W_STARTED;
  if (uvp__recording(ctx)) /* what it is, now that its class can say */
    uvp__rec_work_desc(ctx, &b->work);
  return 0;
}

/* The end, on the loop thread: everything start did is undone. */
static void end_here(blk_t *b) {
  state_t *st = b->st;
  uvp_ctx_t *ctx = st->ctx;
  uvp__work_t *work = &b->work;
  uvp_promise_t *p = work->p; /* our reference: its context lives */
  bool keep = b->keep;
  b->w = NULL;
  work->p = NULL;
  if (uvp__work_of(p) == work) /* pending, its hook ours */
    uvp__promise_hook_clear(p);
  bool in_loop = uvp__work_done_but_loop(ctx, work); /* may settle a join */
  if (b->calls == 0)
    blk_put(b);
  else /* inside the class's cancel or describe for it: when that returns */
    b->ended = true;
  uvp_promise_release(p);
  if (keep && --st->kept == 0)
    uvp__mail_keep(ctx, false);
  if (--st->held == 0) /* after the teardown, closes the async */
    uvp__mail_hold(ctx, false);
  if (in_loop)
    uvp__loop_work_end(ctx); /* last: may free a closed context */
}

static void end_posted(void *arg) { end_here(arg); }

/* The end on another thread: once the record is marked ended and no class
 * call of it runs, uvp is done with the record; the rest is posted, behind
 * whatever this thread posted before (its settle of the promise). */
static UVP__NOINLINE void end_elsewhere(blk_t *b) {
  state_t *st = b->st;
  uv_mutex_lock(&st->mu);
  b->w = NULL;
  while (b->calls != 0) {
    b->waited = true;
    uv_cond_wait(&st->cv, &st->mu);
  }
  uv_mutex_unlock(&st->mu);
  /* Not under st->mu: the lock order is st->mu inside the context's
   * (the teardown's sweep runs the class's cancel under it), never the
   * other way round. */
  uvp__post_call(st->ctx, &b->u.mail, end_posted, b);
}

void uvp_inflight_end(uvp_inflight_t *w) {
  if (w == NULL || w->state_ != W_STARTED)
    return;
  blk_t *b = w->work_[0];
  w->state_ = W_ENDED;
  if (UVP__LIKELY(uvp__on_loop_thread(b->st->ctx)))
    end_here(b);
  else
    end_elsewhere(b);
}

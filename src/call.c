/* Calls between loops (uvp_call_start, include/uvp/calls.h).
 *
 * A call is an operation of the caller's context (op.h: a slot of its
 * pool, its promise, its record of work, its cancel and describe), which
 * travels to the target and back through the pair's link: one link per
 * (caller, target), found in a process-wide registry, holding two queues
 * under its own lock, the requests and the answers.  Whoever queues onto
 * an empty side posts one message (uvp__post_call, uvp's thread-safe
 * path into a mailbox), whose run takes the whole queue: calls made in a
 * burst share one wake-up each way.  No lock is ever held while a
 * context's lock is taken (a post), because a context applies its mail
 * under its own lock at teardown, where a drain takes the link's.
 *
 * Lifetimes.  The caller's context lives while a call is in flight (its
 * operation counts as work in the loop) and keeps its mailbox open for
 * the answer (uvp__mail_hold), closed or not: the target answers every
 * call exactly once, with what fn gave, or UVP_ECLOSED at its own
 * teardown.  The target lives while a caller posts to it: the teardown
 * marks the link gone under the lock, then waits for the posts begun
 * before (`posting`) and reads its mailbox once more
 * (calls_closing).  A link is freed once both sides are gone and
 * the target is done with it: a drain of its requests counts (`serving`)
 * until it has served them, since the caller, its calls answered, may let
 * go of the link in the meantime.  A context's memory outlives every call
 * being made into it: a call looks the target up in the process's
 * registry (a context freed is refused, not read) under the links' lock,
 * which the context's end takes after leaving the registry
 * (calls_freed).
 *
 * The target keeps the calls that follow a promise (uvp_ret_adopt) in a
 * list of its own, for the caller's cuts to find. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call-int.h"
#include "cause.h"
#include "door.h"
#include "mail.h"
#include "recorder.h"
#include "scope.h"
#include "tasks.h"

/* The followed values in flight, hashed by address: a value's destructor
 * has nothing but the value to find its promise by.  k_mu is a leaf:
 * nothing is taken under it, and it is taken under nothing but a
 * context's lock (a destructor the sweep runs). */
#define K_BUCKETS 1024
static uv_mutex_t k_mu;
static kept_t *k_tab[K_BUCKETS], *k_free;
static kept_t **k_bucket(const void *value) {
  uintptr_t h = (uintptr_t)value;
  h ^= h >> 17;
  h *= (uintptr_t)0x9E3779B97F4A7C15ull;
  return &k_tab[(h >> 20) % K_BUCKETS];
}

/* Inside the teardown's sweep (see past_close). */
static bool in_sweep(uvp_ctx_t *ctx, const cstate_t *st) {
  return UVP__UNLIKELY(uvp__closed(ctx)) && (st == NULL || !st->past_close);
}

static uv_once_t k_once = UV_ONCE_INIT;
static void k_init(void) {
  if (uv_mutex_init(&k_mu) != 0)
    abort();
}

/* ---- the caller's state ------------------------------------------------ */

/* The task dump of the target: each call following a promise is a task,
 * "call" named after the calling context, waiting for that promise (the
 * caller's side is its operation's line, "call into context ..."). */
static void calls_tasks(uvp__ext_t *ext, uvp__task_sink_t *sink) {
  cstate_t *st = UVP__CONTAINER_OF(ext, cstate_t, ext);
  for (const call_t *c = st->following; c != NULL; c = c->tnext) {
    uvp__task_t t = {"call", c->q, c->file, c->line,       c->since, NULL,  0,
                     c->q,   NULL, NULL,    c->link->from, NULL,     false, 0};
    sink->task(sink, &t);
  }
}

void uvp__call_release_all(kept_t *k) {
  while (k != NULL) {
    kept_t *n = k->next;
    uvp_promise_release(k->q);
    uvp__free(k);
    k = n;
  }
}

/* After uvp_ctx_close's other layers (the fibers run to their end): the
 * followed promises they let go of go now, under no lock. */
static void calls_close(uvp__ext_t *ext) {
  cstate_t *st = UVP__CONTAINER_OF(ext, cstate_t, ext);
  uvp__lock(st->ctx); /* other threads add to them under it */
  kept_t *k = st->releases;
  st->releases = NULL;
  uvp__unlock(st->ctx); /* never the last: its handles are closing */
  uvp__call_release_all(k);
}

/* The context is freed: its calls have all been answered. */
static void cstate_destroy(uvp__ext_t *ext) {
  cstate_t *st = UVP__CONTAINER_OF(ext, cstate_t, ext);
  uvp__call_release_all(st->releases); /* let go of since calls_close */
  uvp__calls_lock();
  for (link_t *l = st->out, *n; l != NULL; l = n) {
    n = l->snext;
    uvp__link_drop_src(l);
  }
  uvp__calls_unlock();
  uvp__free(st);
}

static cstate_t *cstate(uvp_ctx_t *ctx) {
  cstate_t *st = UVP__EXT_OF(ctx, UVP__EXT_CALLS, cstate_t);
  if (UVP__LIKELY(st != NULL))
    return st;
  static const uvp__ext_t hooks = {
      .close = calls_close, .destroy = cstate_destroy, .tasks = calls_tasks};
  uvp__calls_door_open(); /* on ctx's loop thread, before its teardown */
  st = UVP__EXT_MAKE(ctx, UVP__EXT_CALLS, cstate_t, &hooks);
  if (st != NULL)
    st->ctx = ctx;
  return st;
}

/* A call in flight holds the caller's mailbox open and its uv_run going. */
static void inflight_add(cstate_t *st, ptrdiff_t n) {
  size_t was = st->inflight;
  st->inflight = (size_t)((ptrdiff_t)was + n);
  if ((was == 0) != (st->inflight == 0)) {
    uvp__mail_keep(st->ctx, was == 0);
    uvp__mail_hold(st->ctx, was == 0);
  }
}

/* ---- links --------------------------------------------------------------- */

static void drain_rq(void *arg);
static void drain_an(void *arg);
static void serve(link_t *l, call_t *c, bool cuts, bool gone);
static void apply_answers(uvp_ctx_t *ctx, call_t *c);

/* Under l->mu: whether the caller must post the requests' message. */
bool uvp__call_rq_wake_locked(link_t *l) {
  if (l->rq_posted)
    return false;
  l->rq_posted = true;
  l->rq_at = uv_hrtime();
  l->posting++;
  return true;
}

/* Not under any lock: dst lives until `posting` is back to 0.  Woken
 * under the lock: once it is released the teardown may free l. */
void uvp__call_rq_post(link_t *l) {
  uvp__post_call(l->dst, &l->rq_msg, drain_rq, l);
  uv_mutex_lock(&l->mu);
  if (--l->posting == 0 && l->dst_gone)
    uv_cond_broadcast(&l->cv);
  uv_mutex_unlock(&l->mu);
}

/* ---- the target's side --------------------------------------------------- */

/* Answers made while the target drains a link's requests go back in one
 * take of the lock, after the drain (its fn's immediate results). */
typedef struct batch_s {
  link_t *l;
  call_t *head, *tail;
} batch_t;
static UVP__TLS batch_t *cur_batch;

static void push_answers(link_t *l, call_t *head, call_t *tail) {
  uv_mutex_lock(&l->mu);
  for (call_t *x = head; x != NULL; x = x->next)
    x->state = C_DONE;
  if (l->an_tail != NULL)
    l->an_tail->next = head;
  else
    l->an = head;
  l->an_tail = tail;
  bool post = !l->an_posted;
  l->an_posted = true;
  uv_mutex_unlock(&l->mu);
  /* The caller lives: these calls are in flight, and its drain cannot
   * take them before this post (it takes the queue only from its
   * message). */
  if (post)
    uvp__post_call(l->src, &l->an_msg, drain_an, l);
}

/* The answer goes back: to the caller's queue, or, posted, to done. */
static void answer(call_t *c) {
  link_t *l = c->link;
  if (c->done != NULL) { /* a posted call: done runs here, on the target */
    if (c->follows) {
      c->done(c->done_arg, 0, c->value, NULL);
      uvp_promise_release(c->q);
    } else {
      c->done(c->done_arg, c->code, c->value, c->free_cb);
    }
    uvp__free(c);
    return;
  }
  c->next = NULL;
  batch_t *b = cur_batch;
  if (b != NULL && b->l == l) {
    if (b->tail != NULL)
      b->tail->next = c;
    else
      b->head = c;
    b->tail = c;
    return;
  }
  push_answers(l, c, c);
}

static void answer_code(call_t *c, int code, const char *why) {
  c->code = code;
  c->value = NULL;
  c->free_cb = NULL;
  c->follows = false;
  snprintf(c->awhy, sizeof(c->awhy), "%s", why != NULL ? why : "");
  answer(c);
}

void uvp__call_answer_closed(call_t *c, uvp_ctx_t *dst) {
  char why[96];
  snprintf(why, sizeof(why),
           "the call's target context " UVP__PTR " was closed", UVP__PTRV(dst));
  answer_code(c, UVP_ECLOSED, why);
}

void uvp__call_follow_unlist(cstate_t *st, call_t *c) {
  if (c->tprev != NULL)
    c->tprev->tnext = c->tnext;
  else
    st->following = c->tnext;
  if (c->tnext != NULL)
    c->tnext->tprev = c->tprev;
  c->tprev = c->tnext = NULL;
}

/* q settled; at teardown this never runs: calls_closing answers.
 */
static uvp_ret_t on_q(void *arg, const uvp_outcome_t *in) {
  call_t *c = arg;
  cstate_t *st = UVP__EXT_OF(uvp_promise_ctx(c->q), UVP__EXT_CALLS, cstate_t);
  uvp__call_follow_unlist(st, c);
  c->cut_done = true; /* answered from here: no cut any more */
  if (in->status == 0) {
    c->code = 0;
    c->value = in->value;
    c->free_cb = NULL;
    c->follows = true; /* q is kept: it owns the value */
    c->awhy[0] = '\0';
    answer(c);
    return uvp_ret_pass();
  }
  const uvp_cause_t *cause = uvp_promise_cause(c->q);
  char why[192] = "";
  if (cause != NULL) {
    int n = snprintf(why, sizeof(why), "call into context " UVP__PTR ": ",
                     UVP__PTRV(c->link->dst));
    if (n > 0 && (size_t)n < sizeof(why))
      uvp_cause_format(cause, why + n, sizeof(why) - (size_t)n);
  }
  uvp_promise_t *q = c->q;
  answer_code(c, in->status, cause != NULL ? why : NULL);
  uvp_promise_release(q);
  return uvp_ret_pass();
}

/* fn runs, under the caller's deadline if it has one, and its result
 * becomes the answer (now, or when q settles). */
static void run(uvp_ctx_t *ctx, cstate_t *st, call_t *c) {
  if (c->link->src != NULL && uvp__recording(ctx)) /* its flow's end */
    uvp__rec_event(ctx, UVP__R_CALL_IN, c, (const void *)(uintptr_t)c->seq,
                   c->link->src);
  uvp__scope_t *was = uvp__scope_enter(ctx, NULL);
  int rc = c->left == UVP_NO_DEADLINE
               ? 0
               : uvp_deadline_set_at(ctx, c->left, c->file, c->line);
  if (rc != 0) { /* no memory: fn does not run without its bound */
    uvp__scope_leave(ctx, was);
    if (c->arg_free != NULL)
      c->arg_free(c->arg);
    answer_code(c, rc, "the caller's deadline could not be set on the target");
    return;
  }
  uvp_ret_t r = c->fn(ctx, c->arg);
  uvp__scope_leave(ctx, was);
  if (c->arg_free != NULL)
    c->arg_free(c->arg);
  c->follows = false;
  c->awhy[0] = '\0';
  c->value = NULL;
  c->free_cb = NULL;
  switch (r.kind_) {
  case UVP_RET_REJECT_:
    c->code = r.code_ < 0 ? r.code_ : UV_EINVAL;
    c->value = r.ptr_;
    c->free_cb = r.free_;
    break;
  case UVP_RET_ADOPT_:
    c->code = r.promise_ == NULL ? UV_EINVAL : 0;
    if (r.promise_ != NULL && uvp_promise_ctx(r.promise_) != ctx) {
      uvp_promise_release(r.promise_);
      c->code = UVP_EXCTX;
    } else if (r.promise_ != NULL) {
      c->q = r.promise_;
      c->cut_done = false;
      if (st == NULL || uvp_promise_on(c->q, UVP_ON_BOTH, on_q, c, NULL) != 0) {
        uvp_promise_release(c->q);
        c->code = UV_ENOMEM;
        break;
      }
      c->since = uvp__now(ctx);
      c->tprev = NULL;
      c->tnext = st->following;
      if (st->following != NULL)
        st->following->tprev = c;
      st->following = c;
      return;
    }
    break;
  case UVP_RET_VALUE_:
    c->code = 0;
    c->value = r.ptr_;
    c->free_cb = r.free_;
    break;
  default:
    c->code = 0;
  }
  answer(c);
}

/* The caller's cut reaches a call that follows q. */
static void cut_following(cstate_t *st, link_t *l) {
  for (call_t *c = st->following, *n; c != NULL; c = n) {
    n = c->tnext;
    if (c->link != l || c->cut_done)
      continue;
    uv_mutex_lock(&l->mu);
    int code = c->cut;
    char why[sizeof(c->cwhy)];
    memcpy(why, c->cwhy, sizeof(why));
    uv_mutex_unlock(&l->mu);
    if (code == 0)
      continue;
    c->cut_done = true;
    /* UVP_ESETTLED: q settled, and its handler, queued, answers. */
    int rc = uvp_promise_cancel_binding(c->q, code, why);
    UVP__CHECK(rc == 0 || rc == UVP_ESETTLED);
    (void)rc; /* NDEBUG */
  }
}

/* The requests' message: every call queued by now. */
static void drain_rq(void *arg) {
  link_t *l = arg;
  uvp_ctx_t *ctx = l->dst;
  uv_mutex_lock(&l->mu);
  call_t *c = l->rq;
  l->rq = l->rq_tail = NULL;
  l->rq_posted = false;
  bool cuts = l->cuts;
  l->cuts = false;
  bool gone = l->dst_gone || uvp__closed(ctx);
  for (call_t *x = c; x != NULL; x = x->next)
    x->state = x->cut != 0 ? C_DONE : C_RUNNING;
  /* The last message of a link both sides have let go of: nothing is in
   * it (a call in it would hold its caller). */
  bool dead = uvp__link_unused_locked(l);
  if (!dead)
    l->serving++;
  uv_mutex_unlock(&l->mu);
  if (dead) {
    uvp__link_free(l);
    return;
  }
  if (UVP__UNLIKELY(uvp__call_gap != NULL)) /* the tests' seam */
    uvp__call_gap(c != NULL);
  serve(l, c, cuts, gone);
  /* The caller may have let go of l meanwhile (its calls answered). */
  uv_mutex_lock(&l->mu);
  l->serving--;
  dead = uvp__link_unused_locked(l);
  uv_mutex_unlock(&l->mu);
  if (dead)
    uvp__link_free(l);
}

/* The target runs the calls c (their states set): each fn, or, the target
 * gone or the call cut, its answer. */
static void serve(link_t *l, call_t *c, bool cuts, bool gone) {
  uvp_ctx_t *ctx = l->dst;
  cstate_t *st = cstate(ctx);
  if (gone && st != NULL && in_sweep(ctx, st)) {
    while (c != NULL) { /* answered by calls_closing */
      call_t *n = c->next;
      c->arg_free_due = true;
      c->next = st->orphans;
      st->orphans = c;
      c = n;
    }
    return;
  }
  batch_t b = {l, NULL, NULL};
  batch_t *outer = cur_batch;
  cur_batch = &b;
  while (c != NULL) {
    call_t *n = c->next;
    if (gone || c->state == C_DONE) { /* never runs */
      if (c->arg_free != NULL)
        c->arg_free(c->arg);
      if (gone)
        uvp__call_answer_closed(c, ctx);
      else
        answer_code(c, c->cut, c->cwhy);
    } else {
      run(ctx, st, c);
    }
    c = n;
  }
  cur_batch = outer;
  if (b.head != NULL && l->src == ctx) { /* a call to itself: here */
    for (call_t *x = b.head; x != NULL; x = x->next)
      x->state = C_DONE;
    apply_answers(ctx, b.head);
  } else if (b.head != NULL) {
    push_answers(l, b.head, b.tail);
  }
  if (cuts && st != NULL && !gone)
    cut_following(st, l);
}

/* ---- the caller's side --------------------------------------------------- */

/* On ctx's thread (the caller's). */
static void follow_keep(uvp_ctx_t *ctx, void *value, uvp_promise_t *q) {
  uv_once(&k_once, k_init);
  uv_mutex_lock(&k_mu);
  kept_t *k = k_free;
  if (k != NULL)
    k_free = k->next;
  uv_mutex_unlock(&k_mu);
  if (k == NULL)
    k = uvp__malloc(sizeof(*k));
  if (k == NULL) /* the value stays q's, held for good: better than freed */
    return;
  k->value = value;
  k->q = q;
  k->ctx = ctx;
  kept_t **b = k_bucket(value);
  uv_mutex_lock(&k_mu);
  k->next = *b;
  *b = k;
  uv_mutex_unlock(&k_mu);
}

/* The caller's promise lets go of a followed value (on the caller's
 * thread): its promise goes.  A release from another thread is posted to
 * the target, which takes the target's lock; once the caller is closed,
 * every release of its promises runs under the caller's lock (its sweep,
 * the fibers it runs to their end, other threads), so that would be one
 * lock under another, and the target, closing too, may do the same the
 * other way at the same moment (test_both_close_following; the torture
 * test's fibers): left to calls_closing, then to calls_close,
 * then to the context's end. */
static void follow_free(void *value) {
  kept_t *k = NULL;
  uv_mutex_lock(&k_mu);
  for (kept_t **pp = k_bucket(value); *pp != NULL; pp = &(*pp)->next)
    if ((*pp)->value == value) {
      k = *pp;
      *pp = k->next;
      break;
    }
  uv_mutex_unlock(&k_mu);
  if (k == NULL)
    return;
  cstate_t *st = UVP__EXT_OF(k->ctx, UVP__EXT_CALLS, cstate_t);
  if (st != NULL && uvp__closed(k->ctx)) {
    k->next = st->releases;
    st->releases = k;
    return;
  }
  uvp_promise_t *q = k->q;
  uv_mutex_lock(&k_mu);
  k->next = k_free;
  k_free = k;
  uv_mutex_unlock(&k_mu);
  uvp_promise_release(q);
}

/* A followed promise goes: a release from this thread is posted to its
 * context, which the sweep must not do (past_close). */
static void release_q(uvp_ctx_t *ctx, cstate_t *st, uvp_promise_t *q) {
  if (!in_sweep(ctx, st)) {
    uvp_promise_release(q);
    return;
  }
  kept_t *k = uvp__malloc(sizeof(*k));
  if (k == NULL) /* held for good rather than risk the other lock */
    return;
  k->q = q;
  k->next = st->releases;
  st->releases = k;
}

/* The answers' message: apply each, then end the calls' operations. */
static void drain_an(void *arg) {
  link_t *l = arg;
  uv_mutex_lock(&l->mu);
  call_t *c = l->an;
  l->an = l->an_tail = NULL;
  l->an_posted = false;
  uv_mutex_unlock(&l->mu);
  apply_answers(l->src, c);
}

/* p, pending, rejects with the target's code and a cause of the binding
 * naming the target.  Not uvp_promise_cancel_binding: the answer may come
 * after the caller's `closed` (its teardown reads its mail), which that
 * refuses, and p would stay pending while its operation's memory goes. */
static void reject_answered(uvp_promise_t *p, int code, const char *why) {
  uvp_cause_t proto = {.kind = UVP_CAUSE_BINDING, .message = why};
  uvp__cause_t *cause = uvp__cause_new(&proto, NULL);
  uvp__reject_cause(p, code, cause);
  uvp__cause_unref(cause);
  if (code == UV_ECANCELED) /* as a cancellation's: not unhandled */
    p->flags |= UVP__F_QUIET;
}

static void apply_answers(uvp_ctx_t *ctx, call_t *c) {
  cstate_t *st = cstate(ctx);
  ptrdiff_t n = 0;
  for (call_t *x = c; x != NULL; x = x->next, n--) {
    x->answered = true;
    uvp_promise_t *p = x->op.p;
    bool wanted = uvp__op_wanted(&x->op);
    if (x->follows) {
      if (wanted && x->value != NULL) {
        follow_keep(ctx, x->value, x->q);
        uvp__fulfill(p, x->value, follow_free);
      } else {
        if (wanted)
          uvp__fulfill(p, NULL, NULL);
        release_q(ctx, st, x->q);
      }
    } else if (x->code >= 0) {
      uvp__op_settle(&x->op, 0, x->value, x->free_cb);
    } else if (!wanted) {
      if (x->value != NULL && x->free_cb != NULL)
        x->free_cb(x->value);
    } else if (x->awhy[0] != '\0') {
      reject_answered(p, x->code, x->awhy);
      if (x->value != NULL && x->free_cb != NULL)
        x->free_cb(x->value);
    } else {
      uvp__reject(p, x->code, x->value, x->free_cb);
    }
  }
  /* Last: the last operation's end may free a closed context. */
  if (c != NULL) /* the calls of one link */
    c->link->inflight -= (size_t)-n;
  inflight_add(st, n);
  while (c != NULL) {
    call_t *next = c->next;
    uvp__op_finish(&c->op);
    c = next;
  }
}

/* The caller's promise was cut: the target is told, unless it answered. */
static void call_cancel(uvp__op_t *op) {
  call_t *c = (call_t *)op;
  if (c->answered)
    return;
  link_t *l = c->link;
  char why[sizeof(c->cwhy)];
  const uvp_cause_t *cause = uvp_promise_cause(op->p);
  int n = snprintf(
      why, sizeof(why),
      "the caller's context " UVP__PTR " cut the call: ", UVP__PTRV(l->src));
  if (n > 0 && (size_t)n < sizeof(why))
    uvp_cause_format(cause, why + n, sizeof(why) - (size_t)n);
  int code = uvp_promise_reason(op->p, NULL);
  if (code >= 0 || code == UVP_ECLOSED)
    code = UV_ECANCELED;
  uv_mutex_lock(&l->mu);
  bool wake = false;
  if (!l->dst_gone && c->state != C_DONE && c->cut == 0) {
    c->cut = code;
    memcpy(c->cwhy, why, sizeof(why));
    l->cuts = true;
    wake = !in_sweep(l->src, UVP__EXT_OF(l->src, UVP__EXT_CALLS, cstate_t)) &&
           uvp__call_rq_wake_locked(l);
  }
  uv_mutex_unlock(&l->mu);
  if (wake)
    uvp__call_rq_post(l);
}

/* A call whose target has not taken it for a second: the target's loop
 * is not running (never run, its uv_run returned) or is blocked, and the
 * call waits for it without bound unless a deadline cuts it. */
#define CALL_STUCK_MS 1000

/* How long c's target has left it in its mailbox, in ms (0: taken, or a
 * call to its own context). */
static uint64_t call_waited(const call_t *c) {
  link_t *l = c->link;
  uint64_t waited = 0;
  if (l->src != l->dst) {
    uv_mutex_lock(&l->mu);
    if (c->state == C_QUEUED && l->rq_posted)
      waited = (uv_hrtime() - l->rq_at) / 1000000u;
    uv_mutex_unlock(&l->mu);
  }
  return waited;
}

static void call_describe(const uvp__op_t *op, uvp__what_t *w) {
  const call_t *c = (const call_t *)op;
  link_t *l = c->link;
  uint64_t waited = call_waited(c);
  snprintf(w->kind, sizeof(w->kind), "call");
  if (waited < CALL_STUCK_MS)
    snprintf(w->target, sizeof(w->target), "into context " UVP__PTR,
             UVP__PTRV(l->dst));
  else
    snprintf(w->target, sizeof(w->target),
             "into context " UVP__PTR
             " whose loop has not run for %llu.%llu s (not running, or "
             "blocked)",
             UVP__PTRV(l->dst), (unsigned long long)(waited / 1000),
             (unsigned long long)(waited % 1000 / 100));
}

static const uvp__op_kind_t call_kind;

uint64_t uvp__call_stuck(const uvp_promise_t *p, const void **dst,
                         const char **file, int *line) {
  const uvp__work_t *w =
      p != NULL && uvp__is_pending(p) ? uvp__work_of(p) : NULL;
  /* Every operation's class is the op layer's "operation": then op->kind
   * tells a call from the others. */
  if (w == NULL || strcmp(w->cls->kind, "operation") != 0 ||
      ((const uvp__op_t *)(const void *)w)->kind != &call_kind)
    return 0;
  const call_t *c = (const call_t *)(const void *)w;
  uint64_t waited = call_waited(c);
  if (waited < CALL_STUCK_MS)
    return 0;
  *dst = c->link->dst;
  *file = c->file;
  *line = c->line;
  return waited;
}

static const uvp__op_kind_t call_kind = {call_cancel, NULL,          NULL,
                                         false,       call_describe, false};

/* The caller's link to dst, live, made if need be. */
static link_t *link_to(cstate_t *st, uvp_ctx_t *dst, int *rc) {
  for (link_t **pp = &st->out, *l; (l = *pp) != NULL; pp = &l->snext) {
    if (l->dst != dst)
      continue;
    if (!atomic_load_explicit(&l->dst_gone, memory_order_acquire))
      return l;
    if (l->staged) /* its flush answers what it holds */
      break;
    /* A torn-down target; its address may be a new context's now. */
    if (l->stage != NULL)
      return l; /* its flush first: refused below, as the flush would */
    /* Its target's teardown is answering its calls (after marking it gone,
     * it pushes their answers onto it): kept until they have come. */
    if (l->inflight != 0)
      continue;
    *pp = l->snext;
    uvp__calls_lock();
    uvp__link_drop_src(l);
    uvp__calls_unlock();
    break;
  }
  uvp__calls_lock();
  link_t *l = uvp__link_make_locked(st->ctx, dst, rc);
  uvp__calls_unlock();
  if (l != NULL) {
    l->snext = st->out;
    st->out = l;
  }
  return l;
}

/* The staged calls of l go to the target's queue, or, the target gone,
 * are answered here. */
static void flush_link(link_t *l) {
  call_t *c = l->stage;
  call_t *tail = l->stage_tail;
  l->stage = l->stage_tail = NULL;
  l->staged = false;
  if (c == NULL)
    return;
  if (l->src == l->dst) {
    /* A call to itself: served here, without a wake-up nor the lock (only
     * this thread knows these calls). */
    for (call_t *x = c; x != NULL; x = x->next)
      x->state = x->cut != 0 ? C_DONE : C_RUNNING;
    serve(l, c, false, uvp__closed(l->dst));
    return;
  }
  uv_mutex_lock(&l->mu);
  bool gone = l->dst_gone;
  bool wake = false;
  if (!gone) {
    if (l->rq_tail != NULL)
      l->rq_tail->next = c;
    else
      l->rq = c;
    l->rq_tail = tail;
    wake = uvp__call_rq_wake_locked(l);
  }
  uv_mutex_unlock(&l->mu);
  if (wake)
    uvp__call_rq_post(l);
  if (!gone)
    return;
  char why[96];
  snprintf(why, sizeof(why),
           "the call's target context " UVP__PTR " was closed",
           UVP__PTRV(l->dst));
  for (call_t *x = c; x != NULL; x = x->next) {
    if (x->arg_free != NULL) /* fn never runs: this thread still owns it */
      x->arg_free(x->arg);
    x->code = UVP_ECLOSED;
    x->value = NULL;
    x->free_cb = NULL;
    x->follows = false;
    snprintf(x->awhy, sizeof(x->awhy), "%s", why);
  }
  apply_answers(l->src, c);
}

void uvp__call_flush_all(cstate_t *st) {
  st->flush_armed = false;
  link_t *l = st->flush;
  st->flush = NULL;
  while (l != NULL) {
    link_t *n = l->fnext;
    flush_link(l); /* may free the context: only after the last */
    l = n;
  }
}

static uvp_ret_t flush_cb(void *arg, const uvp_outcome_t *in) {
  (void)in;
  uvp__call_flush_all(arg);
  return uvp_ret_pass();
}

/* c joins l's stage; the stage is flushed once the run queue has run what
 * is queued now (a reaction queued behind it): the calls a burst of
 * handlers starts take the link's lock once. */
static void stage(cstate_t *st, link_t *l, call_t *c) {
  c->next = NULL;
  c->state = C_QUEUED;
  c->cut = 0;
  if (l->stage_tail != NULL)
    l->stage_tail->next = c;
  else
    l->stage = c;
  l->stage_tail = c;
  if (!l->staged) {
    l->staged = true;
    l->fnext = st->flush;
    st->flush = l;
  }
  if (st->flush_armed)
    return;
  uvp_promise_t *fp;
  uvp__scope_t *was = uvp__scope_enter(st->ctx, NULL); /* no deadline */
  bool armed = uvp_promise_resolved(st->ctx, NULL, NULL, &fp) == 0 &&
               uvp_promise_on(fp, UVP_ON_FULFILLED | UVP_ON_TAKE, flush_cb, st,
                              NULL) == 0;
  uvp__scope_leave(st->ctx, was);
  if (armed)
    st->flush_armed = true;
  else /* no memory: now */
    uvp__call_flush_all(st);
}

int uvp_call_start_at(uvp_ctx_t *ctx, uvp_ctx_t *target, uvp_call_fn fn,
                      void *arg, uvp_free_cb arg_free, uvp_promise_t **out,
                      const char *file, int line) {
  if (target == NULL || fn == NULL)
    return uvp__refuse(UV_EINVAL, arg, arg_free);
  int rc = out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, arg, arg_free);
  cstate_t *st = cstate(ctx);
  if (st == NULL)
    return uvp__refuse(UV_ENOMEM, arg, arg_free);
  link_t *l = link_to(st, target, &rc);
  if (l == NULL)
    return uvp__refuse(rc, arg, arg_free);
  if (st->limit != 0 && l->inflight >= st->limit)
    return uvp__refuse(UV_ENOBUFS, arg, arg_free);
  call_t *c =
      uvp__op_new(ctx, &call_kind, sizeof(call_t), out, file, line, &rc);
  if (c == NULL)
    return uvp__refuse(rc, arg, arg_free);
  c->link = l;
  c->state = C_QUEUED; /* read by its description (the recorder's) */
  c->fn = fn;
  c->arg = arg;
  c->arg_free = arg_free;
  c->left = uvp_deadline_left(ctx);
  c->seq = ++st->seq;
  c->file = file;
  c->line = line;
  c->answered = false;
  c->arg_free_due = false;
  c->cut_done = false;
  c->follows = false;
  c->q = NULL;
  c->done = NULL;
  c->tprev = c->tnext = NULL;
  if (atomic_load_explicit(&l->dst_gone, memory_order_acquire))
    return uvp__refuse(uvp__op_started(&c->op, UVP_ECLOSED, out), arg,
                       arg_free);
  rc = uvp__op_started(&c->op, 0, out);
  if (uvp__recording(ctx)) /* the start of a flow to its work (run) */
    uvp__rec_event(ctx, UVP__R_CALL_OUT, c->op.p,
                   (const void *)(uintptr_t)c->seq, target);
  inflight_add(st, 1);
  l->inflight++;
  stage(st, l, c); /* last: a flush for want of memory may answer it */
  return rc;
}

int uvp_call_set_limit(uvp_ctx_t *ctx, size_t max) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  cstate_t *st = cstate(ctx);
  if (st == NULL)
    return UV_ENOMEM;
  st->limit = max;
  return 0;
}

/* ---- teardown (door.h) ------------------------------------------------ */

static void calls_freed(uvp_ctx_t *ctx) {
  (void)ctx;         /* any context: the registry's lock is the whole wait */
  uvp__calls_lock(); /* a call that found the context has let go */
  uvp__calls_unlock();
}

/* The calls the target's teardown must answer that are its own: those
 * left to it, and those following a promise here (the sweep dropped
 * their handlers). */
static call_t *take_orphans(cstate_t *st) {
  call_t *orphans = st->orphans;
  st->orphans = NULL;
  while (st->following != NULL) {
    call_t *c = st->following;
    uvp__call_follow_unlist(st, c);
    c->cut_done = true;
    c->next = orphans;
    orphans = c;
  }
  return orphans;
}

/* ctx has just been torn down (uvp_ctx_close, after the sweep, on its
 * loop thread, no lock held) and shut: every call queued to it is
 * answered with UVP_ECLOSED.  Whether the core must read ctx's mailbox
 * once more (a call's message may have come in after the sweep read
 * it). */
static bool calls_closing(uvp_ctx_t *ctx) {
  cstate_t *st = UVP__EXT_OF(ctx, UVP__EXT_CALLS, cstate_t);
  call_t *orphans = NULL;
  kept_t *releases = NULL;
  if (st != NULL) {
    st->past_close = true;
    orphans = take_orphans(st);
    uvp__lock(ctx); /* other threads add to them under it */
    releases = st->releases;
    st->releases = NULL;
    uvp__unlock(ctx); /* never the last: its handles are closing */
  }
  bool any = uvp__links_gone(ctx, &orphans);
  /* Answered after the registry's lock: an answer takes the caller's. */
  while (orphans != NULL) {
    call_t *n = orphans->next;
    uvp_promise_t *q = orphans->arg_free_due ? NULL : orphans->q;
    if (orphans->arg_free_due && orphans->arg_free != NULL)
      orphans->arg_free(orphans->arg);
    uvp__call_answer_closed(orphans, ctx);
    if (q != NULL)
      uvp_promise_release(q);
    orphans = n;
  }
  uvp__call_release_all(releases);
  /* The calls staged when the sweep dropped the flush, and the cuts it
   * made of this context's calls, go out now. */
  if (st != NULL && st->flush != NULL)
    uvp__call_flush_all(st);
  if (st != NULL)
    for (link_t *l = st->out; l != NULL; l = l->snext) {
      uv_mutex_lock(&l->mu);
      bool wake = l->cuts && !l->dst_gone && uvp__call_rq_wake_locked(l);
      uv_mutex_unlock(&l->mu);
      if (wake)
        uvp__call_rq_post(l);
    }
  return any;
}

void uvp__calls_door_open(void) {
  static const uvp__door_t door = {.closing = calls_closing,
                                   .freed = calls_freed};
  uvp__door_open(UVP__DOOR_CALLS, &door);
}

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
 * (uvp__calls_closing).  A link is freed once both sides are gone.
 *
 * The target keeps the calls that follow a promise (uvp_ret_adopt) in a
 * list of its own, for the caller's cuts to find. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "cause.h"
#include "mail.h"
#include "op.h"
#include "recorder.h"
#include "scope.h"
#include "tasks.h"

typedef struct link_s link_t;
typedef struct call_s call_t;

enum { C_QUEUED, C_RUNNING, C_DONE };

struct call_s {
  uvp__op_t op; /* first: the caller's side (unused by a posted call) */
  call_t *next; /* in the link's requests or answers (mu) */
  call_t *tprev, *tnext; /* among the target's following calls */
  link_t *link;
  uvp_call_fn fn;
  void *arg;
  uvp_free_cb arg_free;
  uint64_t left; /* the caller's deadline, ms (UVP_NO_DEADLINE) */
  uint64_t seq;  /* its number among the caller's calls (the recorder's) */
  const char *file;
  int line;
  int state;         /* C_* (mu) */
  int cut;           /* the caller's cut's code, or 0 (mu) */
  bool cut_done;     /* the target has cancelled q (target thread) */
  bool answered;     /* the caller applies the answer (caller thread) */
  bool follows;      /* the value is q's (answer) */
  bool arg_free_due; /* an orphan whose fn never ran */
  /* The answer, written by the target before it is queued. */
  int code;
  void *value;
  uvp_free_cb free_cb;
  uvp_promise_t *q;      /* followed on the target, or NULL */
  uvp_call_done_cb done; /* a posted call's, else NULL */
  void *done_arg;
  char cwhy[192]; /* the caller's cut, for the target (mu) */
  uint64_t since; /* following q on the target since (uvp__now) */
  char awhy[192]; /* the target's cause, for the caller ("": none) */
};

_Static_assert(sizeof(call_t) <= UVP__OP_SLOT, "a call takes a pool slot");

struct link_s {
  uv_mutex_t mu;
  uv_cond_t cv;   /* posting came back to 0 after dst_gone */
  uvp_ctx_t *src; /* NULL: posted calls, from threads with no context */
  uvp_ctx_t *dst;
  call_t *rq, *rq_tail; /* requests */
  call_t *an, *an_tail; /* answers */
  bool rq_posted, an_posted, cuts;
  /* The target was torn down: written under mu (and g_mu), read by the
   * caller without it for the refusal of a new call. */
  atomic_bool dst_gone;
  bool src_gone;    /* the caller's state is gone (mu) */
  bool registered;  /* in the registry (g_mu and mu) */
  unsigned posting; /* posts to dst under way (mu) */
  uvp__msg_t rq_msg, an_msg;
  link_t *gnext; /* the registry (g_mu) */
  link_t *snext; /* the caller's links (caller thread) */
  /* Calls started in this turn of the caller's run queue, queued in one
   * take of mu by its flush (caller thread). */
  call_t *stage, *stage_tail;
  link_t *fnext;   /* among the caller's links to flush */
  bool staged;     /* on that list */
  char from[40];   /* "from context SRC": its calls' name in dst's dump */
  size_t inflight; /* its calls awaiting an answer (caller thread) */
};

/* Followed values handed to callers: value -> the promise that owns it,
 * and the caller's context, whose thread lets the value go. */
typedef struct kept_s {
  void *value;
  uvp_promise_t *q;
  uvp_ctx_t *ctx;
  struct kept_s *next;
} kept_t;

/* Per context, on its loop thread. */
typedef struct cstate_s {
  uvp__ext_t ext;
  uvp_ctx_t *ctx;
  link_t *out;       /* links it calls through */
  size_t inflight;   /* its calls awaiting an answer */
  uint64_t seq;      /* calls started */
  size_t limit;      /* uvp_call_set_limit's; 0: none */
  call_t *following; /* calls to it following a promise */
  /* Torn down, uvp__calls_closing has run.  Until then, a closed
   * context's drains and cuts run inside the sweep, under its lock, and
   * post nothing (a post takes another context's lock, whose own sweep
   * may post here): they leave it to uvp__calls_closing. */
  bool past_close;
  call_t *orphans;  /* answers left to it */
  link_t *flush;    /* links with calls staged */
  bool flush_armed; /* a reaction will flush them */
  kept_t *releases; /* followed promises to release */
} cstate_t;

static uv_once_t g_once = UV_ONCE_INIT;
static uv_mutex_t g_mu; /* the registry; taken before a link's or ctx's */
static link_t *g_links;
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

static void g_init(void) {
  if (uv_mutex_init(&g_mu) != 0 || uv_mutex_init(&k_mu) != 0)
    abort();
}

/* ---- the caller's state ------------------------------------------------ */

static void link_free(link_t *l) {
  uv_cond_destroy(&l->cv);
  uv_mutex_destroy(&l->mu);
  uvp__free(l);
}

static void g_unlink(link_t *l) {
  for (link_t **pp = &g_links; *pp != NULL; pp = &(*pp)->gnext)
    if (*pp == l) {
      *pp = l->gnext;
      return;
    }
}

/* Under l->mu: nothing names l any more, nor will: its caller is gone,
 * it is out of the registry, no message naming it is in a mailbox, no
 * post to its target is under way.  Whoever makes it so frees it. */
static bool link_unused_locked(const link_t *l) {
  return l->src_gone && !l->registered && !l->rq_posted && !l->an_posted &&
         l->posting == 0;
}

/* The caller lets go of l (g_mu held). */
static void link_drop_src(link_t *l) {
  if (l->registered)
    g_unlink(l);
  uv_mutex_lock(&l->mu);
  l->registered = false;
  l->src_gone = true;
  bool dead = link_unused_locked(l);
  uv_mutex_unlock(&l->mu);
  if (dead)
    link_free(l);
}

/* The task dump of the target: each call following a promise is a task,
 * "call" named after the calling context, waiting for that promise (the
 * caller's side is its operation's line, "call into context ..."). */
static void calls_tasks(uvp__ext_t *ext, uvp__task_sink_t *sink) {
  cstate_t *st = UVP__CONTAINER_OF(ext, cstate_t, ext);
  for (const call_t *c = st->following; c != NULL; c = c->tnext) {
    uvp__task_t t = {"call", c->q, c->file, c->line, c->since,      NULL,
                     0,      c->q, NULL,    NULL,    c->link->from, NULL};
    sink->task(sink, &t);
  }
}

/* The context is freed: its calls have all been answered. */
static void cstate_destroy(uvp__ext_t *ext) {
  cstate_t *st = UVP__CONTAINER_OF(ext, cstate_t, ext);
  uv_mutex_lock(&g_mu);
  for (link_t *l = st->out, *n; l != NULL; l = n) {
    n = l->snext;
    link_drop_src(l);
  }
  uv_mutex_unlock(&g_mu);
  uvp__free(st);
}

static cstate_t *cstate(uvp_ctx_t *ctx) {
  cstate_t *st = UVP__EXT_OF(ctx, UVP__EXT_CALLS, cstate_t);
  if (UVP__LIKELY(st != NULL))
    return st;
  static const uvp__ext_t hooks = {.destroy = cstate_destroy,
                                   .tasks = calls_tasks};
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

static link_t *link_alloc(uvp_ctx_t *src, uvp_ctx_t *dst, int *rc) {
  link_t *l = uvp__calloc(1, sizeof(*l));
  *rc = UV_ENOMEM;
  if (l == NULL)
    return NULL;
  if (uv_mutex_init(&l->mu) != 0) {
    uvp__free(l);
    return NULL;
  }
  if (uv_cond_init(&l->cv) != 0) {
    uv_mutex_destroy(&l->mu);
    uvp__free(l);
    return NULL;
  }
  l->src = src;
  l->dst = dst;
  l->src_gone = src == NULL; /* posted calls: no caller's state */
  if (src != NULL)
    snprintf(l->from, sizeof(l->from), "from context " UVP__PTR,
             UVP__PTRV(src));
  else
    snprintf(l->from, sizeof(l->from), "posted from a thread");
  *rc = 0;
  return l;
}

/* A link to dst, made and registered (g_mu held); NULL with *rc
 * (UVP_ECLOSED: dst is torn down; UV_ENOMEM). */
static link_t *link_make_locked(uvp_ctx_t *src, uvp_ctx_t *dst, int *rc) {
  link_t *l = link_alloc(src, dst, rc);
  if (l == NULL)
    return NULL;
  /* `closed` is written under dst's lock before its teardown takes g_mu
   * (uvp__calls_closing): a link registered here is seen there. */
  uvp__lock(dst);
  bool closed = uvp__closed(dst);
  uvp__unlock(dst);
  if (!closed) {
    l->gnext = g_links;
    g_links = l;
    l->registered = true;
  }
  if (closed) {
    link_free(l);
    *rc = UVP_ECLOSED;
    return NULL;
  }
  return l;
}

/* Under l->mu: whether the caller must post the requests' message. */
static bool rq_wake_locked(link_t *l) {
  if (l->rq_posted)
    return false;
  l->rq_posted = true;
  l->posting++;
  return true;
}

/* Not under any lock: dst lives until `posting` is back to 0. */
static void rq_post(link_t *l) {
  uvp__post_call(l->dst, &l->rq_msg, drain_rq, l);
  uv_mutex_lock(&l->mu);
  bool wake = --l->posting == 0 && l->dst_gone;
  uv_mutex_unlock(&l->mu);
  if (wake)
    uv_cond_broadcast(&l->cv);
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

static void answer_closed(call_t *c, uvp_ctx_t *dst) {
  char why[96];
  snprintf(why, sizeof(why),
           "the call's target context " UVP__PTR " was closed", UVP__PTRV(dst));
  answer_code(c, UVP_ECLOSED, why);
}

static void follow_unlist(cstate_t *st, call_t *c) {
  if (c->tprev != NULL)
    c->tprev->tnext = c->tnext;
  else
    st->following = c->tnext;
  if (c->tnext != NULL)
    c->tnext->tprev = c->tprev;
  c->tprev = c->tnext = NULL;
}

/* q settled; at teardown this never runs: uvp__calls_closing answers. */
static uvp_ret_t on_q(void *arg, const uvp_outcome_t *in) {
  call_t *c = arg;
  cstate_t *st = UVP__EXT_OF(uvp_promise_ctx(c->q), UVP__EXT_CALLS, cstate_t);
  follow_unlist(st, c);
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
  if (c->left != UVP_NO_DEADLINE)
    (void)uvp_deadline_set_at(ctx, c->left, c->file, c->line);
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
    (void)uvp_promise_cancel_binding(c->q, code, why);
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
  bool dead = link_unused_locked(l);
  uv_mutex_unlock(&l->mu);
  if (dead) {
    link_free(l);
    return;
  }
  serve(l, c, cuts, gone);
}

/* The target runs the calls c (their states set): each fn, or, the target
 * gone or the call cut, its answer. */
static void serve(link_t *l, call_t *c, bool cuts, bool gone) {
  uvp_ctx_t *ctx = l->dst;
  cstate_t *st = cstate(ctx);
  if (gone && st != NULL && in_sweep(ctx, st)) {
    while (c != NULL) { /* answered by uvp__calls_closing */
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
        answer_closed(c, ctx);
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
 * the target, which takes the target's lock; inside the caller's
 * teardown's sweep, under the caller's lock, that would be one lock under
 * another, and the target's sweep may do the same the other way at the
 * same moment (test_both_close_following): left to uvp__calls_closing. */
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
  if (st != NULL && in_sweep(k->ctx, st)) {
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
      (void)uvp_promise_cancel_binding(p, x->code, x->awhy);
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
           rq_wake_locked(l);
  }
  uv_mutex_unlock(&l->mu);
  if (wake)
    rq_post(l);
}

static void call_describe(const uvp__op_t *op, uvp__what_t *w) {
  const call_t *c = (const call_t *)op;
  snprintf(w->kind, sizeof(w->kind), "call");
  snprintf(w->target, sizeof(w->target), "into context " UVP__PTR,
           UVP__PTRV(c->link->dst));
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
    *pp = l->snext;
    uv_mutex_lock(&g_mu);
    link_drop_src(l);
    uv_mutex_unlock(&g_mu);
    break;
  }
  uv_once(&g_once, g_init);
  uv_mutex_lock(&g_mu);
  link_t *l = link_make_locked(st->ctx, dst, rc);
  uv_mutex_unlock(&g_mu);
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
    wake = rq_wake_locked(l);
  }
  uv_mutex_unlock(&l->mu);
  if (wake)
    rq_post(l);
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

static void flush_all(cstate_t *st) {
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
  flush_all(arg);
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
    flush_all(st);
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

/* ---- calls from threads with no context ------------------------------ */

int uvp_call_post(uvp_ctx_t *target, uvp_call_fn fn, void *arg,
                  uvp_free_cb arg_free, uvp_call_done_cb done, void *done_arg) {
  if (target == NULL || fn == NULL || done == NULL)
    return uvp__refuse(UV_EINVAL, arg, arg_free);
  call_t *c = uvp__calloc(1, sizeof(*c));
  if (c == NULL)
    return uvp__refuse(UV_ENOMEM, arg, arg_free);
  c->fn = fn;
  c->arg = arg;
  c->arg_free = arg_free;
  c->left = UVP_NO_DEADLINE;
  c->done = done;
  c->done_arg = done_arg;
  int rc = 0;
  uv_once(&g_once, g_init);
  /* The registry's lock until the call is queued: the target's teardown
   * frees this link (nothing else names it) under it. */
  uv_mutex_lock(&g_mu);
  link_t *l = g_links;
  while (l != NULL && !(l->src == NULL && l->dst == target))
    l = l->gnext;
  if (l == NULL)
    l = link_make_locked(NULL, target, &rc);
  bool wake = false;
  if (l != NULL) {
    c->link = l;
    c->state = C_QUEUED;
    uv_mutex_lock(&l->mu);
    if (l->dst_gone) {
      rc = UVP_ECLOSED;
    } else {
      if (l->rq_tail != NULL)
        l->rq_tail->next = c;
      else
        l->rq = c;
      l->rq_tail = c;
      wake = rq_wake_locked(l);
    }
    uv_mutex_unlock(&l->mu);
  }
  uv_mutex_unlock(&g_mu);
  if (rc != 0) {
    uvp__free(c);
    return uvp__refuse(rc, arg, arg_free);
  }
  if (wake)
    rq_post(l);
  return 0;
}

/* ---- teardown ------------------------------------------------------------ */

bool uvp__calls_closing(uvp_ctx_t *ctx) {
  uv_once(&g_once, g_init);
  cstate_t *st = UVP__EXT_OF(ctx, UVP__EXT_CALLS, cstate_t);
  call_t *orphans = NULL;
  kept_t *releases = NULL;
  if (st != NULL) {
    st->past_close = true;
    orphans = st->orphans;
    releases = st->releases;
    st->orphans = NULL;
    st->releases = NULL;
    /* The calls following a promise here: the sweep dropped their
     * handlers. */
    while (st->following != NULL) {
      call_t *c = st->following;
      follow_unlist(st, c);
      c->cut_done = true;
      c->next = orphans;
      orphans = c;
    }
  }
  bool any = false;
  uv_mutex_lock(&g_mu);
  for (link_t **pp = &g_links, *l; (l = *pp) != NULL;) {
    if (l->dst != ctx) {
      pp = &l->gnext;
      continue;
    }
    any = true;
    uv_mutex_lock(&l->mu);
    l->dst_gone = true;
    while (l->posting != 0)
      uv_cond_wait(&l->cv, &l->mu);
    call_t *c = l->rq;
    l->rq = l->rq_tail = NULL;
    /* Its message, if one is in the mailbox, still names it: the drain
     * it runs (read below) frees it if it is the last. */
    l->registered = false;
    bool dead = link_unused_locked(l);
    uv_mutex_unlock(&l->mu);
    while (c != NULL) {
      call_t *n = c->next;
      c->arg_free_due = true;
      c->next = orphans;
      orphans = c;
      c = n;
    }
    *pp = l->gnext;
    if (dead)
      link_free(l);
  }
  uv_mutex_unlock(&g_mu);
  /* Answered after the registry's lock: an answer takes the caller's. */
  while (orphans != NULL) {
    call_t *n = orphans->next;
    uvp_promise_t *q = orphans->arg_free_due ? NULL : orphans->q;
    if (orphans->arg_free_due && orphans->arg_free != NULL)
      orphans->arg_free(orphans->arg);
    answer_closed(orphans, ctx);
    if (q != NULL)
      uvp_promise_release(q);
    orphans = n;
  }
  while (releases != NULL) {
    kept_t *n = releases->next;
    uvp_promise_release(releases->q);
    uvp__free(releases);
    releases = n;
  }
  /* The calls staged when the sweep dropped the flush, and the cuts it
   * made of this context's calls, go out now. */
  if (st != NULL && st->flush != NULL)
    flush_all(st);
  if (st != NULL)
    for (link_t *l = st->out; l != NULL; l = l->snext) {
      uv_mutex_lock(&l->mu);
      bool wake = l->cuts && !l->dst_gone && rq_wake_locked(l);
      uv_mutex_unlock(&l->mu);
      if (wake)
        rq_post(l);
    }
  return any;
}

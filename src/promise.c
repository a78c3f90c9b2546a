/* The promise core, first half: references, settlement, adoption,
 * cancellation, creation and inspection (reaction.c: the reactions).
 *
 * Invariants worth knowing before reading:
 *  - A pending promise's reactions are a singly linked list, newest first;
 *    settling reverses it once, so handlers run in registration order.
 *  - A queued reaction holds one reference to its source; a reaction with a
 *    derived promise holds one reference to that derived promise.
 *  - `link` of a waiting promise (UVP__F_WAITING) is a non-owning pointer
 *    to what it waits for: the waited-for promise owns the reaction that
 *    owns the waiter, never the other way round.  A derived promise keeps
 *    `link` pointing at its source until its reaction has run, even if it
 *    was cancelled meanwhile: the reaction finds its source through it.
 *    A waiter whose source went unsettled names uvp__source_lost instead.
 *  - `link` of a forwarded promise (UVP__F_FORWARD) is an owning reference
 *    to the promise that owns the value.  It always names an owner, never
 *    another forwarder, so adoption chains never grow.
 *  - The last release pushes the promise on a stack (threaded through
 *    `next_dead`, over code, born and site) that the outermost release
 *    drains: freeing the head of a million-long chain costs no stack.
 *    Walks over the slabs (teardown, the pending dump) skip such promises
 *    (refs 0): a destructor run by the drain may close the context.
 *  - After uvp_ctx_close() other threads may release under the context's
 *    lock, so every reference change on the loop thread takes it too
 *    (uvp__unref() below); before close only the loop thread touches promises.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cause.h"
#include "core.h"
#include "door.h"
#if defined(UVP_HAVE_VALGRIND)
#include <valgrind/valgrind.h>
#endif

/* Each ABI's sizes: LP64 (x86-64, aarch64, ppc64el, s390x, ...) and ILP32
 * (i386, armhf, ...), where the pointers and callbacks take 4 bytes. */
#if UINTPTR_MAX > UINT32_MAX
_Static_assert(sizeof(uvp_promise_t) == 48, "a promise is 48 bytes (LP64)");
_Static_assert(sizeof(uvp__handler_t) == 32,
               "a handler is 32 bytes (LP64: a pending promise with one "
               "reaction costs 80)");
#else
_Static_assert(sizeof(uvp_promise_t) == 32, "a promise is 32 bytes (ILP32)");
_Static_assert(sizeof(uvp__handler_t) == 16,
               "a handler is 16 bytes (ILP32: a pending promise with one "
               "reaction costs 48)");
#endif
_Static_assert(sizeof(uvp_promise_t) % UVP__SLOT_ALIGN == 0,
               "promises stay aligned in their pool: a reaction's target "
               "carries its kind in the low bits");
_Static_assert(sizeof(uvp__handler_t) % UVP__SLOT_ALIGN == 0,
               "a handler stays aligned in its pool");

/* Register r on p, which it observes, and mark p handled. */
void uvp__attach(uvp_promise_t *p, uvp__reaction_t *r) {
  p->flags |= UVP__F_HANDLED;
  if (p->state == UVP__S_PENDING) {
    push_reaction(p, r);
  } else {
    p->refs++;
    uvp__enqueue(uvp__promise_ctx(p), r);
  }
}

/* ---- references ---------------------------------------------------------- */

static void destroy(uvp_promise_t *p);

void uvp__report_unhandled(uvp_promise_t *p) {
  /* The program asked for a cancellation (or a consumer of p did, on its
   * behalf), or a group said it has no more: that is not a failure
   * anybody needs to hear about. */
  if (p->flags & UVP__F_QUIET)
    return;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (ctx->unhandled_cb != NULL) {
    /* The hook may replace itself or close the context: its argument then
     * waits here until it returns. */
    uvp__report_t r = {ctx->reports, ctx->unhandled_gen, NULL, NULL};
    ctx->reports = &r;
    ctx->unhandled_cb(p, ctx->unhandled_arg);
    ctx->reports = r.outer;
    if (r.arg_free != NULL)
      r.arg_free(r.arg);
    return;
  }
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  fprintf(stderr,
          "uvp: unhandled rejection %s (%s) of promise created at %s:%d\n",
          uvp_err_name(p->code), uvp_strerror(p->code),
          file != NULL ? file : "?", line);
  const uvp_cause_t *cause = uvp_promise_cause(p);
  if (cause != NULL) {
    char why[256];
    (void)uvp_cause_format(cause, why, sizeof(why));
    fprintf(stderr, "    cancelled: %s\n", why);
  }
  if (p->trace != 0)
    uvp__trace_print(stderr, p->trace, "    ");
}

/* ---- misuse -------------------------------------------------------------- */

/* Weak: defined only when a sanitizer's runtime is in the process (the
 * program was built with -fsanitize=..., whether or not uvp was); where
 * the linker takes no weak reference to an absent function (meson.build:
 * Mach-O), no sanitizer's trace. */
#if defined(UVP_HAVE_WEAK_UNDEFINED)
extern void __sanitizer_print_stack_trace(void) __attribute__((weak));
#endif

void uvp__misuse(const uvp_promise_t *p, const char *call) {
  fprintf(stderr,
          "uvp: %s on promise " UVP__PTR
          ", already freed: a release too many, or a "
          "use after the last release (ignored)\n",
          call, UVP__PTRV(p));
#if defined(UVP_HAVE_WEAK_UNDEFINED)
  if (__sanitizer_print_stack_trace != NULL)
    __sanitizer_print_stack_trace();
#endif
#if defined(UVP_HAVE_VALGRIND)
  VALGRIND_PRINTF_BACKTRACE("uvp: %s on a freed promise\n", call);
#endif
}

/* Whether the mailbox may hold a message naming a promise it holds no
 * reference to (a settle's).  Not after the teardown: uvp__post refuses
 * settles and releases from `closed` on, under the lock, and the sweep
 * applied, under the same lock, those posted before; what is posted then
 * (uvp__post_call: calls' requests and answers, records' ends) names
 * operations that hold their promises until applied.  So another
 * thread's release, under the lock, never reads a closed context's mail,
 * whose messages end work of the loop thread's (a group's, while that
 * thread runs its fibers to their end, unlocked). */
static bool mail_names_refless(const uvp_ctx_t *ctx) {
  return !ctx->h.closed || uvp__on_loop_thread(ctx);
}

/* p's last reference went, and p owns more than its slot (free_plain
 * says so), or it is a release too many.  ctx is p's: open, or its lock
 * held. */
static UVP__NOINLINE void free_last_slow(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (UVP__UNLIKELY(p->state == UVP__S_FREE)) {
    /* A free slot's count is 1 (destroy): this is a release too many. */
    p->refs = 1;
    uvp__misuse(p, "uvp_promise_release");
    return;
  }
  if (mail_names_refless(ctx) && uvp__mail_waiting(ctx)) {
    /* A message may name p (see uvp__post): read with p alive.  One that
     * settled it has its reactions holding it now. */
    p->refs = 1;
    uvp__read_mail(ctx);
    if (--p->refs != 0)
      return;
  }
  if (p->state == UVP__S_REJECTED && !(p->flags & UVP__F_HANDLED)) {
    p->flags |= UVP__F_HANDLED;
    uvp__report_unhandled(p);
  }
  /* code, born and site are not read again: they thread the stack. */
  p->next_dead = ctx->free_stack;
  ctx->free_stack = p;
  if (ctx->freeing)
    return;
  ctx->freeing = true;
  /* A destructor or the unhandled hook may close the context meanwhile:
   * from then on other threads may release too, so the rest is freed
   * under the lock, and its unlock frees the context once nothing is
   * left of it. */
  bool locked = false;
  while (ctx->free_stack != NULL) {
    if (UVP__UNLIKELY(ctx->h.closed) && !locked) {
      uvp__lock(ctx);
      locked = true;
    }
    uvp_promise_t *q = ctx->free_stack;
    ctx->free_stack = q->next_dead;
    destroy(q);
  }
  ctx->freeing = false;
  if (locked)
    uvp__unlock(ctx);
}

void uvp__free_last(uvp_ctx_t *ctx, uvp_promise_t *p) {
  if (UVP__LIKELY(free_plain(ctx, p)))
    return;
  free_last_slow(ctx, p);
}

void uvp__unref_open(uvp_promise_t *p) {
  if (UVP__LIKELY(--p->refs != 0))
    return;
  uvp__free_last(uvp__promise_ctx(p), p);
}

static void destroy(uvp_promise_t *p) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (p->state == UVP__S_PENDING) {
    /* Nobody can settle it any more; its waiters stay pending, like
     * unreachable promises in JavaScript.  A cancel hook is not run: the
     * producer held no reference, so it has nothing left to stop. */
    ctx->pending--;
    forget_hook(p); /* a boxed argument is let go */
    uvp__drop_reactions(ctx, p);
  } else if (p->flags & UVP__F_FORWARD) {
    uvp__unref_open(p->link);
  } else if (p->fn.free_cb != NULL) {
    /* Tested here, not before: a promise without a destructor (most, and
     * every forwarder) pays nothing for causes; one whose destructor runs
     * pays a test of a flag already loaded. */
    if (UVP__UNLIKELY(p->flags & UVP__F_CAUSE))
      uvp__cause_unref(p->fn.cause); /* its payload is NULL */
    else
      p->fn.free_cb(p->value);
  }
  free_slot(ctx, p);
}

uvp_promise_t *uvp_promise_retain(uvp_promise_t *p) {
  if (p == NULL)
    return NULL;
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (uvp__refused_thread(ctx))
    return NULL;
  if (is_freed(p)) {
    uvp__misuse(p, "uvp_promise_retain");
    return NULL;
  }
  if (UVP__UNLIKELY(ctx->h.closed)) {
    uvp__lock(ctx);
    p->refs++;
    uvp__unlock(ctx);
  } else {
    p->refs++;
  }
  return p;
}

/* uvp_promise_release off its fast path: a context this thread has not
 * used last, another thread's (the release is posted), or a closed one. */
static UVP__NOINLINE void release_elsewhere(uvp_promise_t *p) {
  if (!uvp__on_loop_thread(uvp__promise_ctx(p))) {
    /* Only UV_ENOMEM can fail here; the reference then stays (a leak, not a
     * crash), which is all a void function can do. */
    (void)uvp__post(p, UVP__MSG_RELEASE, 0, NULL, NULL);
    return;
  }
  (void)uvp__local_ctx_slow(p);
  uvp__unref(p);
}

void uvp_promise_release(uvp_promise_t *p) {
  if (p == NULL)
    return;
  if (UVP__UNLIKELY(!uvp__ctx_cached(p))) {
    release_elsewhere(p);
    return;
  }
  uvp_ctx_t *ctx = uvp__cached();
  if (UVP__LIKELY(--p->refs != 0))
    return;
  /* The program's release is where most promises end: free_plain inline. */
  if (UVP__LIKELY(free_plain(ctx, p)))
    return;
  free_last_slow(ctx, p);
}

int uvp_promise_mark_handled(uvp_promise_t *p) {
  int rc = p == NULL ? UV_EINVAL : uvp__ctx_check(uvp__promise_ctx(p));
  if (rc == 0)
    p->flags |= UVP__F_HANDLED;
  return rc;
}

/* ---- settlement ---------------------------------------------------------- */

/* Several reactions: the list is newest first, the queue wants
 * registration order.  Wakes the context. */
UVP__NOINLINE void uvp__queue_many(uvp_ctx_t *ctx, uvp_promise_t *p,
                                   uvp__reaction_t *r) {
  uvp__reaction_t *rev = NULL;
  while (r != NULL) {
    uvp__reaction_t *next = r->next;
    r->next = rev;
    rev = r;
    r = next;
  }
  while (rev != NULL) {
    uvp__reaction_t *next = rev->next;
    p->refs++;
    uvp__queue_push(ctx, rev);
    rev = next;
  }
  uvp__wake(ctx);
}

/* Settle p exactly like the settled src, sharing its value. */
static void forward(uvp_promise_t *p, uvp_promise_t *src) {
  uvp_promise_t *owner = (src->flags & UVP__F_FORWARD) ? src->link : src;
  if (UVP__UNLIKELY(p->flags & UVP__F_CANCEL)) /* the code only then */
    uvp__hooked_settle(p, src->state == UVP__S_REJECTED ? src->code : 0);
  owner->refs++;
  p->link = owner;
  p->value = src->value;
  p->fn.free_cb = NULL;
  p->code = src->code;
  settle(p, src->state);
  p->flags |= UVP__F_FORWARD | (src->flags & UVP__F_QUIET);
}

/* The promises waiting on each other form trees: a waiting promise names
 * the one it waits for in `link`, and that one holds the reaction through
 * which it waits on its list.  p, about to wait for q, closes a cycle
 * exactly when q is p or lies in p's tree.  Two walks answer that: up from
 * q along `link` (as long as q's chain), and over p's tree from p (as
 * large as that tree).  They take a step in turn and the first to finish
 * answers, so a check costs twice the smaller of the two: building a
 * chain costs O(1) a link whether each new promise waits for the last
 * (the walk up would be the whole chain) or the last waits for each new
 * one (the walk over the tree would), and whether or not the links are
 * observed.  Cycles through combinators, timeouts, maps and sequences are
 * not seen (uvp.h says so). */
enum { WALK_ON, WALK_FOUND, WALK_DONE };

static inline bool waits_on(const uvp_promise_t *x, const uvp_promise_t *n) {
  return x->state == UVP__S_PENDING && (x->flags & UVP__F_WAITING) &&
         x->link == n;
}

/* One step up from *x towards the root of its tree, looking for p. */
static int up_step(const uvp_promise_t **x, const uvp_promise_t *p) {
  const uvp_promise_t *y = *x;
  if (y->state != UVP__S_PENDING || !(y->flags & UVP__F_WAITING))
    return WALK_DONE;
  if (y->link == p)
    return WALK_FOUND;
  *x = y->link;
  return WALK_ON;
}

/* A depth-first walk over the tree under `root`, one reaction a step, with
 * no stack: it climbs back through `link` and finds its place on the
 * parent's list again. */
typedef struct {
  const uvp_promise_t *root, *want;
  const uvp_promise_t *n;      /* whose reactions are being walked */
  const uvp__reaction_t *r;    /* the next one */
  const uvp_promise_t *resume; /* climbing back: go on after its reaction */
} tree_walk_t;

static int tree_step(tree_walk_t *w) {
  const uvp__reaction_t *r = w->r;
  if (r == NULL) {
    UVP__CHECK(w->resume == NULL); /* n's reaction to it was on n's list */
    if (w->n == w->root)
      return WALK_DONE;
    w->resume = w->n;
    w->n = w->n->link;
    w->r = w->n->reactions;
    return WALK_ON;
  }
  w->r = r->next;
  if (!rk_derived(uvp__rkind(r)))
    return WALK_ON;
  const uvp_promise_t *c = uvp__rtarget(r);
  if (w->resume != NULL) {
    if (c == w->resume)
      w->resume = NULL;
    return WALK_ON;
  }
  if (!waits_on(c, w->n))
    return WALK_ON;
  if (c == w->want)
    return WALK_FOUND;
  w->n = c;
  w->r = c->reactions;
  return WALK_ON;
}

bool uvp__waits_for(uvp_promise_t *q, const uvp_promise_t *p) {
  if (q == p)
    return true;
  if (p->reactions == NULL) /* nothing waits for p */
    return false;
  const uvp_promise_t *x = q;
  tree_walk_t w = {p, q, p, p->reactions, NULL};
  for (;;) {
    int up = up_step(&x, p);
    if (up != WALK_ON)
      return up == WALK_FOUND;
    int down = tree_step(&w);
    if (down != WALK_ON)
      return down == WALK_FOUND;
  }
}

/* Make pending p follow q (Promises/A+ 2.3.2), or reject it for a cycle. */
void uvp__adopt(uvp_promise_t *p, uvp_promise_t *q) {
  if (!uvp__same_ctx(q, p)) {
    reject(p, UVP_EXCTX, NULL, NULL);
    return;
  }
  q->flags |= UVP__F_HANDLED;
  if (q->state != UVP__S_PENDING) {
    forward(p, q);
    return;
  }
  if (uvp__waits_for(q, p)) {
    reject(p, UVP_ECYCLE, NULL, NULL);
    return;
  }
  uvp__handler_t *h =
      handler_alloc(uvp__promise_ctx(p), UVP__RK_FOLLOW, p, NULL);
  if (h == NULL) {
    reject(p, UV_ENOMEM, NULL, NULL);
    return;
  }
  h->cb.then = NULL;
  p->refs++;
  p->link = q;
  p->flags |= UVP__F_WAITING;
  push_reaction(q, &h->r);
}

static bool settleable(const uvp_promise_t *p) {
  return p->state == UVP__S_PENDING &&
         !(p->flags & (UVP__F_WAITING | UVP__F_OWNED));
}

/* Not settleable: why (a freed promise is reported, see uvp__misuse). */
static UVP__NOINLINE int unsettleable(const uvp_promise_t *p,
                                      const char *call) {
  if (!is_freed(p))
    return UVP_ESETTLED;
  uvp__misuse(p, call);
  return UV_EINVAL;
}

static int check_settleable_in(const uvp_promise_t *p, const char *call) {
  int rc = uvp__ctx_check(uvp__promise_ctx(p));
  if (UVP__UNLIKELY(rc != 0))
    return rc;
  return settleable(p) ? 0 : unsettleable(p, call);
}

static int check_settleable(const uvp_promise_t *p) {
  return check_settleable_in(p, "a settle");
}

UVP__NOINLINE int uvp__resolve_local(uvp_promise_t *p, void *value,
                                     uvp_free_cb free_cb) {
  int rc = check_settleable_in(p, "uvp_promise_resolve");
  if (rc == 0)
    fulfill(p, value, free_cb);
  return rc;
}

UVP__NOINLINE int uvp__reject_local(uvp_promise_t *p, int code, void *payload,
                                    uvp_free_cb free_cb) {
  int rc = check_settleable_in(p, "uvp_promise_reject");
  if (rc == 0)
    reject(p, code, payload, free_cb);
  return rc;
}

/* resolve and reject off the fast path: a context this thread has not
 * used last, another thread's, or a closed one.  Out of line, so that the
 * fast path needs no stack frame. */
static UVP__NOINLINE int settle_slow(uvp_promise_t *p, int op, int code,
                                     void *value, uvp_free_cb free_cb) {
  if (!uvp__on_loop_thread(uvp__promise_ctx(p)))
    return uvp__post(p, op, code, value, free_cb);
  (void)uvp__local_ctx_slow(p);
  return op == UVP__MSG_RESOLVE ? uvp__resolve_local(p, value, free_cb)
                                : uvp__reject_local(p, code, value, free_cb);
}

int uvp_promise_resolve(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  if (p == NULL)
    return uvp__refuse(UV_EINVAL, value, free_cb);
  if (UVP__UNLIKELY(!uvp__ctx_cached(p)))
    return uvp__refuse(settle_slow(p, UVP__MSG_RESOLVE, 0, value, free_cb),
                       value, free_cb);
  uvp_ctx_t *ctx = uvp__cached();
  /* Refused there, or a cancel hook to let go of first: off the path that
   * needs no stack frame. */
  if (UVP__UNLIKELY(!settleable(p) || (p->flags & UVP__F_CANCEL)))
    return uvp__refuse(uvp__resolve_local(p, value, free_cb), value, free_cb);
  p->value = value;
  p->fn.free_cb = free_cb;
  settle_in(ctx, p, UVP__S_FULFILLED);
  return 0;
}

int uvp_promise_reject(uvp_promise_t *p, int code, void *payload,
                       uvp_free_cb free_cb) {
  if (p == NULL || code >= 0)
    return uvp__refuse(UV_EINVAL, payload, free_cb);
  if (UVP__UNLIKELY(!uvp__ctx_cached(p)))
    return uvp__refuse(settle_slow(p, UVP__MSG_REJECT, code, payload, free_cb),
                       payload, free_cb);
  uvp_ctx_t *ctx = uvp__cached();
  if (UVP__UNLIKELY(!settleable(p) || (p->flags & UVP__F_CANCEL)))
    return uvp__refuse(uvp__reject_local(p, code, payload, free_cb), payload,
                       free_cb);
  p->code = code;
  p->value = payload;
  p->fn.free_cb = free_cb;
  settle_in(ctx, p, UVP__S_REJECTED);
  return 0;
}

int uvp_promise_resolve_with(uvp_promise_t *p, uvp_promise_t *src) {
  if (p == NULL || src == NULL)
    return UV_EINVAL;
  int rc = check_settleable_in(p, "uvp_promise_resolve_with");
  if (rc != 0)
    return rc;
  if (!uvp__same_ctx(src, p))
    return UVP_EXCTX;
  if (is_freed(src)) {
    uvp__misuse(src, "uvp_promise_resolve_with");
    return UV_EINVAL;
  }
  uvp__adopt(p, src);
  return 0;
}

/* 0, or why p cannot be cancelled or given a hook. */
static int check_pending(const uvp_promise_t *p) {
  if (p == NULL)
    return UV_EINVAL;
  int rc = uvp__ctx_check(uvp__promise_ctx(p));
  if (rc != 0)
    return rc;
  return p->state == UVP__S_PENDING ? 0 : UVP_ESETTLED;
}

/* A hook whose argument has a destroy notifier, or which says what the
 * promise waits for (the task dump). */
typedef struct {
  uvp_cancel_cb cb;
  void *arg;
  uvp_free_cb arg_free; /* may be NULL */
  const char *kind;     /* NULL: nothing to say */
  uvp_describe_cb describe;
} hook_box_t;

void uvp__box_hook(uvp_promise_t *p, void *box) {
  hook_box_t b = *(hook_box_t *)box;
  uvp__free(box);
  b.cb(p, b.arg);
  if (b.arg_free != NULL)
    b.arg_free(b.arg);
}

void uvp__hooked_settle(uvp_promise_t *p, int code) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  if (uvp__recording(ctx)) /* while its hook can still say */
    uvp__tell(ctx, UVP__HEARD_SETTLE, p, NULL, code);
  if (p->fn.cancel_cb == uvp__box_hook)
    uvp__box_drop(p);
}

bool uvp__promise_described(const uvp_promise_t *p, const char **kind,
                            uvp_describe_cb *describe, void **arg) {
  if (p->state != UVP__S_PENDING || !(p->flags & UVP__F_CANCEL) ||
      p->fn.cancel_cb != uvp__box_hook)
    return false;
  const hook_box_t *box = p->value;
  *kind = box->kind;
  *describe = box->describe;
  *arg = box->arg;
  return box->kind != NULL;
}

void uvp__box_drop(uvp_promise_t *p) {
  hook_box_t *box = p->value;
  p->flags &= (uint8_t)~UVP__F_CANCEL;
  p->value = NULL;
  p->fn.cancel_cb = NULL;
  if (box->arg_free != NULL)
    box->arg_free(box->arg);
  uvp__free(box);
}

const char *uvp__hook_describe(const uvp_promise_t *p, char *buf, size_t cap) {
  if (p->state != UVP__S_PENDING || !(p->flags & UVP__F_CANCEL) ||
      p->fn.cancel_cb != uvp__box_hook)
    return NULL;
  const hook_box_t *box = p->value;
  if (box->kind == NULL)
    return NULL;
  int n = box->describe != NULL ? box->describe(box->arg, buf, cap) : 0;
  if (n < 0)
    snprintf(buf, cap, "(its description failed: %d)", n);
  else if (cap > 0) /* its length, whether or not it wrote a NUL */
    buf[(size_t)n < cap ? (size_t)n : cap - 1] = '\0';
  return box->kind;
}

static int set_cancel(uvp_promise_t *p, uvp_cancel_cb cb, void *arg,
                      uvp_free_cb arg_free, const char *kind,
                      uvp_describe_cb describe) {
  /* Only a promise the program settles: one uvp settles keeps uvp's hook
   * (or its link), which a program's hook would overwrite. */
  int rc = p == NULL ? UV_EINVAL : check_settleable(p);
  if (rc != 0)
    return uvp__refuse(rc, arg, arg_free);
  void *harg = arg;
  if (cb != NULL && (arg_free != NULL || kind != NULL)) {
    hook_box_t *box = uvp__malloc(sizeof(*box));
    if (box == NULL)
      return uvp__refuse(UV_ENOMEM, arg, arg_free);
    *box = (hook_box_t){cb, arg, arg_free, kind, describe};
    harg = box;
    cb = uvp__box_hook;
  }
  forget_hook(p); /* the hook replaced */
  p->value = cb != NULL ? harg : NULL;
  p->fn.cancel_cb = cb;
  if (cb != NULL)
    p->flags |= UVP__F_CANCEL;
  else
    p->flags &= (uint8_t)~UVP__F_CANCEL;
  /* A program's or a binding's work that says what it is: the recorder
   * keeps it as work, from here to its settle. */
  if (cb != NULL && kind != NULL && uvp__recording(uvp__promise_ctx(p)))
    uvp__tell(uvp__promise_ctx(p), UVP__HEARD_DESCRIBED, p, NULL, 0);
  return 0;
}

int uvp_promise_set_cancel_full(uvp_promise_t *p, uvp_cancel_cb cb, void *arg,
                                uvp_free_cb arg_free) {
  return set_cancel(p, cb, arg, arg_free, NULL, NULL);
}

int uvp_promise_set_cancel(uvp_promise_t *p, uvp_cancel_cb cb, void *arg) {
  return set_cancel(p, cb, arg, NULL, NULL, NULL);
}

int uvp_promise_set_cancel_described(uvp_promise_t *p, uvp_cancel_cb cb,
                                     void *arg, uvp_free_cb arg_free,
                                     const char *kind,
                                     uvp_describe_cb describe) {
  if (cb == NULL || kind == NULL)
    return uvp__refuse(UV_EINVAL, arg, arg_free);
  return set_cancel(p, cb, arg, arg_free, kind, describe);
}

void uvp__promises_each(uvp_ctx_t *ctx, bool (*fn)(void *slot, void *arg),
                        void *arg) {
  uvp__pool_each(&ctx->promises, fn, arg);
}

uint64_t uvp__ctx_epoch(const uvp_ctx_t *ctx) { return ctx->epoch; }

/* Reject settled-to-be p with `code` and cause c (a new reference). */
static void reject_cause(uvp_promise_t *p, int code, uvp__cause_t *c) {
  reject(p, code, NULL, NULL);
  /* After the settle, which clears the bit (UVP__F_CANCEL while pending):
   * the reactions it queued have not run yet. */
  p->fn.cause = uvp__cause_ref(c);
  p->flags |= UVP__F_CAUSE;
}

void uvp__reject_cause(uvp_promise_t *p, int code, uvp__cause_t *c) {
  forget_hook(p);
  reject_cause(p, code, c);
}

/* The cause a cancellation with `code` gives now (cause.h). */
static uvp__cause_t *cause_now(const uvp_ctx_t *ctx, int code) {
  if (code == UVP_ECLOSED && uvp__closed(ctx)) /* a teardown, even one a
                                                 hook started */
    return &uvp__cause_closed;
  uvp__cause_t *c = uvp__head(ctx)->cause;
  return c != NULL ? c : &uvp__cause_program;
}

/* Reject a pending promise and run its cancel hook, if any, with the
 * cause of the cancellation running (cause.h), which whatever the hook
 * cancels takes too.  A promise rejected with UV_ECANCELED is one the
 * program, or a consumer acting for it, asked to stop: it is never
 * reported as unhandled. */
static void cancel_with(uvp_promise_t *p, int code) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  uvp_cancel_cb hook = (p->flags & UVP__F_CANCEL) ? p->fn.cancel_cb : NULL;
  void *harg = p->value;
  uvp__cause_t *c = cause_now(ctx, code);
  uvp__cause_t *outer = uvp__cause_enter(ctx, c);
  if (uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_CUT, p, c, code);
  const uvp__door_t *door = NULL;
  uvp__door_frame_t frame;
  p->refs++;
  if (UVP__UNLIKELY(hook != NULL) && code != UVP_ECLOSED &&
      (door = uvp__door_of_cut(hook)) != NULL &&
      door->cut_begin(ctx, p, harg, code, &frame)) {
    uvp__cause_leave(ctx, outer); /* taken whole: p stays pending */
    uvp__unref(p);
    return;
  }
  p->flags &= (uint8_t)~UVP__F_CANCEL; /* it runs below, not dropped */
  reject_cause(p, code, c);
  if (code == UV_ECANCELED)
    p->flags |= UVP__F_QUIET;
  if (hook != NULL)
    hook(p, harg);
  if (door != NULL)
    door->cut_end(ctx, &frame);
  uvp__cause_leave(ctx, outer);
  uvp__unref(p);
}

/* uvp_promise_cancel with `code` for p itself. */
static void cancel_chain(uvp_promise_t *p, int code);

int uvp_promise_cancel(uvp_promise_t *p) {
  int rc = check_pending(p);
  if (rc == 0)
    cancel_chain(p, UV_ECANCELED);
  return rc;
}

/* uvp_promise_cancel_with and _binding: c (taken) for what it cuts. */
static int cancel_caused(uvp_promise_t *p, int code, uvp__cause_t *c) {
  uvp_ctx_t *ctx = uvp__promise_ctx(p);
  uvp__cause_t *outer = uvp__cause_enter(ctx, c);
  cancel_chain(p, code);
  uvp__cause_leave(ctx, outer);
  uvp__cause_unref(c);
  return 0;
}

int uvp_promise_cancel_with(uvp_promise_t *p, int code, void *cause,
                            uvp_free_cb cause_free) {
  int rc = code >= 0 ? UV_EINVAL : check_pending(p);
  if (rc != 0)
    return uvp__refuse(rc, cause, cause_free);
  uvp_cause_t proto = {.kind = UVP_CAUSE_PROGRAM, .data = cause};
  return cancel_caused(p, code, uvp__cause_new(&proto, cause_free));
}

int uvp_promise_cancel_binding(uvp_promise_t *p, int code,
                               const char *message) {
  int rc = code >= 0 || message == NULL ? UV_EINVAL : check_pending(p);
  if (rc != 0)
    return rc;
  uvp_cause_t proto = {.kind = UVP_CAUSE_BINDING, .message = message};
  return cancel_caused(p, code, uvp__cause_new(&proto, NULL));
}

const uvp_cause_t *uvp_promise_cause(const uvp_promise_t *p) {
  if (p == NULL || is_freed(p))
    return NULL;
  uvp__cause_t *c = uvp__cause_of(p);
  return c != NULL ? &c->pub : NULL;
}

static void cancel_chain(uvp_promise_t *p, int code) {
  /* Cancellation travels up through what p follows while each is pending
   * and p's chain is its only consumer (Bluebird's rule): a timeout on
   * then(connect, send_and_read) then reaches the read itself. */
  uvp_promise_t *held = NULL; /* our reference on p after the first */
  while (p != NULL) {
    uvp_promise_t *up = NULL;
    bool waits = (p->flags & UVP__F_WAITING) && uvp__is_pending(p->link);
    if (waits && uvp__sole_consumer(p->link, p))
      up = uvp_promise_retain(p->link);
    if (waits)
      uvp__stop_waiting(p);
    cancel_with(p, code);
    code = UV_ECANCELED; /* what p's cancellation reaches */
    if (held != NULL)
      uvp__unref(held);
    held = up;
    p = up != NULL && up->state == UVP__S_PENDING ? up : NULL;
  }
  if (held != NULL)
    uvp__unref(held);
}

/* ---- creation ------------------------------------------------------------ */

static UVP__NOINLINE int new_general(uvp_ctx_t *ctx, uvp_promise_t **out,
                                     const char *file, int line) {
  int rc = out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp_promise_t *p = promise_alloc(ctx, file, line);
  if (p == NULL)
    return UV_ENOMEM;
  *out = p;
  return 0;
}

int uvp_promise_new_at(uvp_ctx_t *ctx, uvp_promise_t **out, const char *file,
                       int line) {
  /* The common case makes no call, so needs no stack frame: everything
   * else (a check that fails, traces, a site or a slot that is not at
   * hand) goes the general way, which starts over. */
  if (UVP__LIKELY(out != NULL && ctx != NULL && ctx_plain(ctx))) {
    const uvp__site_entry_t *site = uvp__site_first(&ctx->sites, file, line);
    uvp_promise_t *p;
    if (UVP__LIKELY(site != NULL &&
                    (p = uvp__pool_try(&ctx->promises)) != NULL)) {
      promise_init(ctx, p, site->id, 0);
      *out = p;
      return 0;
    }
  }
  return new_general(ctx, out, file, line);
}

int uvp_promise_resolved_at(uvp_ctx_t *ctx, void *value, uvp_free_cb free_cb,
                            uvp_promise_t **out, const char *file, int line) {
  int rc = new_general(ctx, out, file, line);
  if (rc == 0)
    fulfill(*out, value, free_cb);
  return uvp__refuse(rc, value, free_cb);
}

int uvp_promise_rejected_at(uvp_ctx_t *ctx, int code, void *payload,
                            uvp_free_cb free_cb, uvp_promise_t **out,
                            const char *file, int line) {
  if (code >= 0)
    return uvp__refuse(UV_EINVAL, payload, free_cb);
  int rc = new_general(ctx, out, file, line);
  if (rc == 0)
    reject(*out, code, payload, free_cb);
  return uvp__refuse(rc, payload, free_cb);
}

/* ---- teardown ------------------------------------------------------------ */

static bool sweep_one(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  (void)arg;
  /* refs 0: being freed by a release that is running the unhandled hook
   * or a destructor which closed the context; that release frees it. */
  if (p->state == UVP__S_FREE)
    return false;
  if (p->refs == 0)
    return true;
  if (p->state == UVP__S_PENDING) {
    p->refs++;
    uvp__drop_reactions(uvp__promise_ctx(p), p);
    if (p->state == UVP__S_PENDING) {
      p->flags |= UVP__F_HANDLED; /* a consequence of teardown, not news */
      cancel_with(p, UVP_ECLOSED);
    }
    uvp__unref(p);
  } else if (p->state == UVP__S_REJECTED && !(p->flags & UVP__F_HANDLED)) {
    p->flags |= UVP__F_HANDLED;
    uvp__report_unhandled(p);
  }
  return true;
}

void uvp__sweep(uvp_ctx_t *ctx) {
  uvp__pool_each(&ctx->promises, sweep_one, NULL);
}

/* ---- inspection ---------------------------------------------------------- */

uvp_state_t uvp_promise_state(const uvp_promise_t *p) {
  return p == NULL ? UVP_PENDING : (uvp_state_t)p->state;
}

void *uvp_promise_value(const uvp_promise_t *p) {
  return p != NULL && p->state == UVP__S_FULFILLED ? p->value : NULL;
}

int uvp_promise_reason(const uvp_promise_t *p, void **payload) {
  bool rejected = p != NULL && p->state == UVP__S_REJECTED;
  if (payload != NULL)
    *payload = rejected ? p->value : NULL;
  return rejected ? p->code : 0;
}

void uvp_promise_site(const uvp_promise_t *p, const char **file, int *line) {
  uvp__site_get(p != NULL ? p->site : 0, file, line);
}

uvp_ctx_t *uvp_promise_ctx(const uvp_promise_t *p) {
  return p != NULL ? uvp__promise_ctx(p) : NULL;
}

/* ---- for the layers above ------------------------------------------------ */

uvp_promise_t uvp__source_lost;

uvp_promise_t *uvp__promise_new(uvp_ctx_t *ctx, const char *file, int line) {
  return promise_alloc(ctx, file, line);
}

uvp_promise_t *uvp__produced_new(uvp_ctx_t *ctx, const char *file, int line,
                                 uvp_cancel_cb hook, void *arg) {
  uvp_promise_t *p = promise_alloc(ctx, file, line);
  if (p == NULL)
    return NULL;
  p->refs = 2;
  p->flags = UVP__F_OWNED | UVP__F_CANCEL;
  p->value = arg;
  p->fn.cancel_cb = hook;
  return p;
}

uvp_promise_t *uvp__movable_new(uvp_ctx_t *ctx, const char *file, int line,
                                uvp_cancel_cb hook, uvp_promise_t **slot) {
  uvp_promise_t *p = uvp__produced_new(ctx, file, line, hook, slot);
  if (p != NULL) {
    p->flags |= UVP__F_MOVABLE;
    *slot = p;
  }
  return p;
}

void uvp__produced_forget(uvp_promise_t *p) {
  UVP__CHECK(uvp__is_pending(p)); /* settled, the bit is UVP__F_CAUSE */
  forget_hook(p);
  p->flags &= (uint8_t) ~(UVP__F_CANCEL | UVP__F_MOVABLE);
}

void uvp__produced_abort(uvp_promise_t *p) {
  uvp__produced_forget(p);
  uvp__unref(p);
  uvp__unref(p);
}

void uvp__fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb) {
  fulfill(p, value, free_cb);
}
void uvp__reject(uvp_promise_t *p, int code, void *payload,
                 uvp_free_cb free_cb) {
  reject(p, code, payload, free_cb);
}
void uvp__forward(uvp_promise_t *p, uvp_promise_t *src) { forward(p, src); }
void uvp__cancel_with(uvp_promise_t *p, int code) { cancel_with(p, code); }
void uvp__unref(uvp_promise_t *p) { uvp__unref_in(uvp__promise_ctx(p), p); }

/* ---- notes (promise.h) --------------------------------------------------- */

void uvp__note_settled(uvp_promise_t *p, const char *text) {
  if (p->state == UVP__S_PENDING ||
      (p->flags & (UVP__F_FORWARD | UVP__F_CAUSE)) != 0)
    return;
  size_t len = strlen(text) + 1;
  uvp__cause_t *c = uvp__malloc(sizeof(*c) + len);
  if (c == NULL)
    return;
  c->pub = (uvp_cause_t){.message = memcpy(c + 1, text, len), .data = p->value};
  c->refs = 1;
  c->data_free = p->fn.free_cb; /* the value's, run when p goes */
  p->fn.cause = c;
  p->flags |= UVP__F_CAUSE | UVP__F_NOTE;
}

const char *uvp__note_of(const uvp_promise_t *p) {
  if (p->state == UVP__S_PENDING)
    return NULL;
  const uvp_promise_t *o = (p->flags & UVP__F_FORWARD) ? p->link : p;
  return (o->flags & (UVP__F_CAUSE | UVP__F_NOTE)) ==
                 (UVP__F_CAUSE | UVP__F_NOTE)
             ? o->fn.cause->pub.message
             : NULL;
}

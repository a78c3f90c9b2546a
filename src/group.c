/* Task groups: a growing set of members (promises, fibers, work started
 * lazily) drained in completion order, bounded, cancelled as a whole, and
 * joined once every member has settled and everything they started in
 * libuv is closed (the contract is in uvp.h).
 *
 * Members run in the group's scope (scope.h), so what they start is the
 * group's: the operation layer, TCP connections and timers hold the group
 * (uvp__group_hold) until their libuv requests and handles are done.  The
 * group's memory lives while the program holds it, while a scope names
 * it, and while a member, a request or a handle does. */
#include <string.h>

#include "group.h"
#include "scope.h"
#include "trace.h"

/* A member: running (on `running`, observed), then settled (on the done
 * queue until a next() takes it).  From the context's pool of members.
 * The reaction that observes p is part of the record, which is one cache
 * line: members settle in any order, each settle's reaction is a miss, and
 * the drain's prefetch of the reaction (docs/internals.md §6.4) brings in
 * the whole member with it. */
typedef struct member_s member_t;
struct member_s {
  uvp__handler_t observer;
  member_t *prev, *next;
  uvp_promise_t *p; /* our reference */
  uvp_group_t *g;
};
_Static_assert(sizeof(member_t) == 64 || sizeof(void *) != 8,
               "a member is one cache line on 64-bit targets");

/* A member not started yet: waits for room under the limit. */
typedef struct lazy_s lazy_t;
struct lazy_s {
  lazy_t *next;
  uvp_group_t *g;           /* a fiber's, held from its spawn to its end */
  uvp_fiber_fn fn;          /* a fiber ... */
  uvp_group_start_cb start; /* ... or a start callback */
  void *arg;
  uvp_free_cb arg_free;
  uvp__scope_t *scope; /* current when it was added (naming the group) */
  size_t stack_size;
  const char *file; /* where a fiber was asked for */
  int line;
};

struct uvp_group_s {
  uvp_ctx_t *ctx;
  uvp_group_t *parent;    /* the group of the scope it was made in, held
                             until this one has wound down */
  uvp__scope_t *scope;    /* names this group, with the slots it was made
                             in: what members added with those run in */
  uvp_promise_t *join;    /* produced; our reference while undecided */
  uvp_promise_t *joined;  /* the same, kept for uvp_group_join until the
                             group is released */
  uvp_promise_t *failure; /* FAIL_FAST: the member that failed first */
  size_t limit;           /* 0: none */
  int flags;
  uint16_t trace; /* the frame members start in (trace.h) */
  bool closed, cancelled, released, pumping;
  size_t holds;  /* libuv requests and handles of members, open */
  size_t scopes; /* scopes naming the group */
  size_t nrunning;
  member_t *running; /* doubly linked */
  member_t *done_head, *done_tail;
  lazy_t *lazy_head, *lazy_tail;
  uvp_promise_t **waiters; /* next() promises waiting: a FIFO ring */
  size_t wcap, whead, wtail;
};

/* Per context, made with its first member: the slots of every group's
 * members.  One pool for all of them, as the operation layer has one for
 * its operations: a group of its own would take a fresh chunk for its
 * first member, populate it (a system call) and give it back when it ends,
 * for every group (one per request, in a server), and a group used again
 * and again would fault its members' memory in each time. */
typedef struct group_state_s {
  uvp__ext_t ext;
  uvp__pool_t members;
} group_state_t;

static void state_destroy(uvp__ext_t *ext) {
  group_state_t *st = UVP__CONTAINER_OF(ext, group_state_t, ext);
  uvp__pool_destroy(&st->members);
  uvp__free(st);
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  const group_state_t *st = UVP__CONTAINER_OF(ext, group_state_t, ext);
  out->slab_bytes += st->members.bytes;
  out->slab_allocs += st->members.allocs;
}

/* NULL only if there was none and no memory to make it. */
static group_state_t *state_of(uvp_ctx_t *ctx) {
  if (UVP__LIKELY(ctx->ext[UVP__EXT_GROUPS] != NULL))
    return UVP__CONTAINER_OF(ctx->ext[UVP__EXT_GROUPS], group_state_t, ext);
  group_state_t *st = uvp__calloc(1, sizeof(*st));
  if (st == NULL)
    return NULL;
  st->ext.destroy = state_destroy;
  st->ext.stats = state_stats;
  uvp__pool_init(&st->members, sizeof(member_t));
  ctx->ext[UVP__EXT_GROUPS] = &st->ext;
  return st;
}

static void maybe_end(uvp_group_t *g);

/* ---- lifetime ------------------------------------------------------------ */

static void maybe_free(uvp_group_t *g) {
  if (g->released && g->scopes == 0 && g->holds == 0 && g->nrunning == 0 &&
      g->join == NULL && g->lazy_head == NULL && g->whead == g->wtail &&
      g->done_head == NULL && !g->pumping && g->parent == NULL) {
    if (g->failure != NULL)
      uvp__rel(g->failure);
    uvp__free(g->waiters);
    uvp__free(g);
  }
}

void uvp__group_scope_made(uvp_group_t *g) { g->scopes++; }

void uvp__group_scope_gone(uvp_group_t *g) {
  g->scopes--;
  maybe_free(g);
}

void uvp__group_hold(uvp_group_t *g) { g->holds++; }

void uvp__group_drop(uvp_group_t *g) {
  g->holds--;
  maybe_end(g);
  maybe_free(g);
}

/* ---- completion order ---------------------------------------------------- */

/* m's slot goes back before its promise: after the context's close, that
 * reference may be what keeps the context, and the pool, alive. */
static void member_free(uvp_group_t *g, member_t *m) {
  uvp_promise_t *p = m->p;
  uvp__pool_put(&state_of(g->ctx)->members, m);
  uvp__rel(p);
}

static uvp_promise_t *waiter_pop(uvp_group_t *g) {
  return g->waiters[g->whead++ & (g->wcap - 1)];
}

/* The oldest settled member no next() has taken yet; there is one. */
static member_t *done_pop(uvp_group_t *g) {
  member_t *m = g->done_head;
  g->done_head = m->next;
  if (g->done_head == NULL)
    g->done_tail = NULL;
  return m;
}

/* Nothing can be added any more. */
static bool ended(const uvp_group_t *g) { return g->closed || g->cancelled; }

static bool exhausted(const uvp_group_t *g) {
  return ended(g) && g->nrunning == 0 && g->lazy_head == NULL &&
         g->done_head == NULL;
}

/* A teardown ends the group too (its members dropped), but that is no
 * end of its members: what still waits then learns UVP_ECLOSED, not UV_EOF
 * or a join's outcome, and is not reported, as for every promise pending
 * at uvp_ctx_close (whichever of them its sweep reaches first). */
static void reject_closed(uvp_promise_t *p) {
  p->flags |= UVP__F_HANDLED;
  uvp__reject(p, UVP_ECLOSED, NULL, NULL);
}

/* Hand settled members to waiting next() calls, in completion order; once
 * nothing more can come, the rest learn UV_EOF. */
static void serve(uvp_group_t *g) {
  while (g->whead != g->wtail && g->done_head != NULL) {
    uvp_promise_t *w = waiter_pop(g);
    if (!uvp__is_pending(w)) { /* cancelled: it stopped waiting */
      uvp__rel(w);
      continue;
    }
    member_t *m = done_pop(g);
    uvp__forward(w, m->p);
    uvp__rel(w);
    member_free(g, m);
  }
  /* Given up: what no next() waits for can never be asked for. */
  while (g->released && g->whead == g->wtail && g->done_head != NULL)
    member_free(g, done_pop(g));
  while (exhausted(g) && g->whead != g->wtail) {
    uvp_promise_t *w = waiter_pop(g);
    if (uvp__is_pending(w)) {
      if (g->ctx->closed)
        reject_closed(w);
      else
        uvp__reject(w, UV_EOF, NULL, NULL);
    }
    uvp__rel(w);
  }
}

/* The group has wound down once it is closed (or cancelled), every member
 * has settled and every request, handle and fiber they started is done:
 * the join settles, and the group that made this one (if any) stops
 * waiting for it. */
static void maybe_end(uvp_group_t *g) {
  serve(g);
  if (!ended(g) || g->nrunning != 0 || g->lazy_head != NULL || g->holds != 0)
    return;
  uvp_promise_t *j = g->join;
  uvp_group_t *parent = g->parent;
  g->join = NULL;
  g->parent = NULL;
  if (j != NULL) {
    if (uvp__is_pending(j)) {
      if (g->ctx->closed)
        reject_closed(j);
      else if (g->failure != NULL)
        uvp__forward(j, g->failure);
      else
        uvp__fulfill(j, NULL, NULL);
    }
    uvp__rel(j);
  }
  if (parent != NULL)
    uvp__group_drop(parent);
}

/* ---- members ------------------------------------------------------------- */

static void pump(uvp_group_t *g);
static void cancel_all(uvp_group_t *g);

/* A member settled (in == NULL: its observer was dropped at teardown). */
static void member_done(void *arg, const uvp_outcome_t *in) {
  member_t *m = arg;
  uvp_group_t *g = m->g;
  if (m->prev != NULL)
    m->prev->next = m->next;
  else
    g->running = m->next;
  if (m->next != NULL)
    m->next->prev = m->prev;
  g->nrunning--;
  if (in == NULL) {
    member_free(g, m);
  } else {
    m->next = NULL;
    if (g->done_tail != NULL)
      g->done_tail->next = m;
    else
      g->done_head = m;
    g->done_tail = m;
    if (in->status != 0 && in->status != UV_ECANCELED &&
        (g->flags & UVP_GROUP_FAIL_FAST) && g->failure == NULL) {
      uvp__retain_local(in->promise); /* run by the drain: ctx open */
      g->failure = in->promise;
      cancel_all(g);
    }
  }
  pump(g);
  maybe_end(g);
  maybe_free(g);
}

/* Observe p (a reference handed over) as a running member. */
static int watch(uvp_group_t *g, uvp_promise_t *p) {
  group_state_t *st = state_of(g->ctx);
  member_t *m = st != NULL ? uvp__pool_get(&st->members) : NULL;
  if (m == NULL)
    return UV_ENOMEM;
  uvp__observe_embedded(p, &m->observer, member_done, m);
  m->p = p;
  m->g = g;
  m->prev = NULL;
  m->next = g->running;
  if (g->running != NULL)
    g->running->prev = m;
  g->running = m;
  g->nrunning++;
  return 0;
}

/* A fiber member runs through these: the group waits for the fiber to
 * return (its promise may have been cancelled long before: the fiber then
 * still runs, to clean up, and what it starts is the group's), and its
 * arg_free runs when the fiber's would. */
static uvp_ret_t fiber_entry(void *arg) {
  lazy_t *z = arg;
  return z->fn(z->arg);
}

static void fiber_done(void *arg) {
  lazy_t *z = arg;
  uvp_group_t *g = z->g;
  if (z->arg_free != NULL)
    z->arg_free(z->arg);
  uvp__free(z);
  uvp__group_drop(g);
}

/* Start one lazy member (taking z), in the scope it was added in.  A
 * member that cannot start is a member that failed: it settles like
 * one. */
static void start_lazy(uvp_group_t *g, lazy_t *z) {
  uvp_ctx_t *ctx = g->ctx;
  uvp_promise_t *p = NULL;
  uvp__scope_t *was = uvp__scope_enter(ctx, z->scope); /* z's reference */
  z->scope = NULL;
  uint16_t outer = uvp__trace_enter(ctx, g->trace);
  int rc;
  if (z->fn != NULL) {
    uvp_fiber_opts_t o = {z->stack_size, fiber_done};
    z->g = g;
    uvp__group_hold(g);
    rc = uvp_fiber_spawn_at(ctx, fiber_entry, z, &o, &p, z->file, z->line);
  } else {
    rc = z->start(z->arg, &p);
  }
  ctx->trace = outer;
  uvp__scope_leave(ctx, was);
  if (z->fn == NULL || rc != 0) {
    /* A start callback is called once; a fiber that cannot be spawned
     * will never run. */
    if (z->arg_free != NULL)
      z->arg_free(z->arg);
    if (z->fn != NULL)
      g->holds--; /* the caller ends the group if it must */
    uvp__free(z);
  }
  if (rc == 0 && (p == NULL || uvp__promise_ctx(p) != ctx)) {
    rc = p == NULL ? UV_EINVAL : UVP_EXCTX;
    uvp_promise_release(p);
  }
  if (rc != 0) {
    p = uvp__promise_new(ctx, __FILE__, __LINE__);
    if (p == NULL)
      return; /* no memory even to say so: the member is lost */
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  if (watch(g, p) != 0)
    uvp__rel(p);
}

/* Start queued members while there is room under the limit. */
static void pump(uvp_group_t *g) {
  if (g->pumping)
    return; /* a start callback re-entered through a settled member */
  g->pumping = true;
  while (g->lazy_head != NULL && !g->cancelled && !g->ctx->closed &&
         (g->limit == 0 || g->nrunning < g->limit)) {
    lazy_t *z = g->lazy_head;
    g->lazy_head = z->next;
    if (g->lazy_head == NULL)
      g->lazy_tail = NULL;
    start_lazy(g, z);
  }
  g->pumping = false;
}

/* Drop the members never started (cancelled, failed fast, torn down). */
static void drop_lazy(uvp_group_t *g) {
  while (g->lazy_head != NULL) {
    lazy_t *z = g->lazy_head;
    g->lazy_head = z->next;
    if (z->arg_free != NULL)
      z->arg_free(z->arg);
    /* Cannot free g: while members wait its join is undecided. */
    uvp__scope_unref(z->scope);
    uvp__free(z);
  }
  g->lazy_tail = NULL;
}

static void cancel_all(uvp_group_t *g) {
  g->cancelled = true;
  drop_lazy(g);
  /* One walk: a cancel runs hooks (user code) and settles the member, but
   * the member leaves the list only in member_done, which runs from the
   * drain, never inside uvp_promise_cancel (the member's reference keeps
   * its promise from being freed meanwhile), and nothing joins the list
   * once `cancelled` is set.  Only a teardown inside a hook drops members
   * on the spot; it drops all of them, so the walk stops there.  (Walking
   * from the head again after each cancel took n^2/2 steps: 1 s for
   * 40 000 members.) */
  for (member_t *m = g->running, *next; m != NULL && !g->ctx->closed;
       m = next) {
    next = m->next;
    if (uvp__is_pending(m->p))
      (void)uvp_promise_cancel(m->p);
  }
}

/* ---- the API ------------------------------------------------------------- */

/* The join promise was cancelled (or torn down): so is the group. */
static void join_cancel(uvp_promise_t *join, void *arg) {
  uvp_group_t *g = arg;
  if (uvp_promise_reason(join, NULL) == UV_ECANCELED)
    cancel_all(g);
  else
    drop_lazy(g); /* teardown: members are torn down with the context */
  g->closed = true;
  uvp_promise_t *j = g->join;
  g->join = NULL;
  uvp__rel(j);
  maybe_end(g);
  maybe_free(g);
}

int uvp_group_new_at(uvp_ctx_t *ctx, const uvp_group_opts_t *opts,
                     uvp_group_t **out, const char *file, int line) {
  int rc = out == NULL || (opts != NULL && (opts->flags & ~UVP_GROUP_FAIL_FAST))
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp_group_t *g = uvp__calloc(1, sizeof(*g));
  uvp_promise_t **w = uvp__malloc(16 * sizeof(*w));
  if (g == NULL || w == NULL) {
    uvp__free(g);
    uvp__free(w);
    return UV_ENOMEM;
  }
  g->ctx = ctx;
  g->waiters = w;
  g->wcap = 16;
  g->limit = opts != NULL ? opts->limit : 0;
  g->flags = opts != NULL ? opts->flags : 0;
  g->scope = uvp__scope_with_group(ctx->scope, g);
  g->join = g->scope == NULL
                ? NULL
                : uvp__produced_new(ctx, file, line, join_cancel, g);
  if (g->join == NULL) {
    /* Its hook finds g not released, so it cannot free g. */
    uvp__scope_unref(g->scope);
    uvp__free(w);
    uvp__free(g);
    return UV_ENOMEM;
  }
  g->joined = g->join; /* the second reference */
  /* Made by work of another group (a member, or what one started): that
   * group waits for this one as for its requests. */
  g->parent = uvp__scope_group(ctx);
  if (g->parent != NULL)
    uvp__group_hold(g->parent);
  if (ctx->traces)
    g->trace = g->join->trace =
        uvp__trace_intern(ctx, g->join->site, UVP__TK_GROUP, ctx->trace);
  *out = g;
  return 0;
}

/* 0, or why no member can be added now. */
static int check_open(const uvp_group_t *g) {
  if (g == NULL)
    return UV_EINVAL;
  int rc = uvp__ctx_check(g->ctx);
  if (rc == 0 && (g->closed || g->released))
    rc = UVP_ECLOSED;
  return rc;
}

int uvp_group_add(uvp_group_t *g, uvp_promise_t *p) {
  int rc = p == NULL ? UV_EINVAL : check_open(g);
  if (rc == 0 && uvp__promise_ctx(p) != g->ctx)
    rc = UVP_EXCTX;
  if (rc == 0 && g->cancelled)
    rc = UV_ECANCELED;
  if (rc != 0)
    return rc;
  uvp__retain_local(p); /* checked above: the loop thread, ctx open */
  rc = watch(g, p);
  if (rc != 0)
    uvp__rel(p);
  return rc;
}

/* The scope a member added now starts in: the slots current now, and the
 * group.  Usually the group's own (no slot was set since it was made). */
static uvp__scope_t *member_scope(uvp_group_t *g) {
  uvp__scope_t *cur = g->ctx->scope;
  for (int i = 0; i < UVP_SCOPE_SLOTS; i++)
    if ((cur != NULL ? cur->slots[i] : NULL) != g->scope->slots[i])
      return uvp__scope_with_group(cur, g);
  return uvp__scope_ref(g->scope);
}

static int add_lazy(uvp_group_t *g, uvp_fiber_fn fn, uvp_group_start_cb start,
                    void *arg, uvp_free_cb arg_free, size_t stack_size,
                    const char *file, int line) {
  int rc = check_open(g);
  if (rc == 0 && g->cancelled)
    rc = UV_ECANCELED;
  if (rc != 0)
    return rc;
  lazy_t *z = uvp__malloc(sizeof(*z));
  uvp__scope_t *scope = z != NULL ? member_scope(g) : NULL;
  if (scope == NULL) {
    uvp__free(z);
    return UV_ENOMEM;
  }
  *z = (lazy_t){NULL,     NULL,  fn,         start, arg,
                arg_free, scope, stack_size, file,  line};
  if (g->lazy_tail != NULL)
    g->lazy_tail->next = z;
  else
    g->lazy_head = z;
  g->lazy_tail = z;
  pump(g);
  return 0;
}

int uvp_group_spawn_at(uvp_group_t *g, uvp_fiber_fn fn, void *arg,
                       const uvp_fiber_opts_t *opts, const char *file,
                       int line) {
  if (fn == NULL)
    return UV_EINVAL;
  return add_lazy(g, fn, NULL, arg, opts != NULL ? opts->arg_free : NULL,
                  opts != NULL ? opts->stack_size : 0, file, line);
}

int uvp_group_start(uvp_group_t *g, uvp_group_start_cb start, void *arg,
                    uvp_free_cb arg_free) {
  if (start == NULL)
    return UV_EINVAL;
  return add_lazy(g, NULL, start, arg, arg_free, 0, NULL, 0);
}

int uvp_group_next_at(uvp_group_t *g, uvp_promise_t **out, const char *file,
                      int line) {
  int rc = g == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc != 0)
    return rc;
  if (g->wtail - g->whead == g->wcap) {
    size_t cap = 2 * g->wcap;
    uvp_promise_t **w = uvp__malloc(cap * sizeof(*w));
    if (w == NULL)
      return UV_ENOMEM;
    for (size_t i = 0; i < g->wcap; i++)
      w[i] = g->waiters[(g->whead + i) & (g->wcap - 1)];
    uvp__free(g->waiters);
    g->waiters = w;
    g->wtail -= g->whead;
    g->whead = 0;
    g->wcap = cap;
  }
  uvp_promise_t *w = uvp__produced_new(g->ctx, file, line, NULL, NULL);
  if (w == NULL)
    return UV_ENOMEM;
  uvp__produced_forget(w); /* no hook: cancelling a next() just stops it */
  g->waiters[g->wtail++ & (g->wcap - 1)] = w;
  *out = w;
  serve(g);
  return 0;
}

int uvp_group_set_limit(uvp_group_t *g, size_t limit) {
  int rc = g == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0) {
    g->limit = limit;
    pump(g);
    maybe_end(g);
  }
  return rc;
}

int uvp_group_close(uvp_group_t *g) {
  int rc = g == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0) {
    g->closed = true;
    maybe_end(g);
  }
  return rc;
}

int uvp_group_cancel(uvp_group_t *g) {
  int rc = g == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0) {
    cancel_all(g);
    maybe_end(g);
  }
  return rc;
}

int uvp_group_join(uvp_group_t *g, uvp_promise_t **out) {
  int rc = g == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0 && g->released)
    rc = UVP_ECLOSED;
  if (rc == 0) {
    uvp__retain_local(g->joined);
    *out = g->joined;
  }
  return rc;
}

size_t uvp_group_size(const uvp_group_t *g) {
  return g != NULL ? g->nrunning + (g->lazy_head != NULL ? 1 : 0) : 0;
}

void uvp_group_release(uvp_group_t *g) {
  if (g == NULL || g->released)
    return;
  g->released = true;
  g->closed = true; /* nobody can add any more */
  uvp_promise_t *j = g->joined;
  g->joined = NULL;
  uvp__scope_t *s = g->scope;
  g->scope = NULL;
  maybe_end(g);
  uvp__rel(j);
  uvp__scope_unref(s); /* may free g */
}

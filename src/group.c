/* Task groups: a growing set of members (promises, fibers, work started
 * lazily) drained in completion order, bounded, cancelled as a whole, and
 * joined once every member has settled and everything they started in
 * libuv is closed (the contract is in uvp.h).
 *
 * A group is a client of the core: the owner (scope.h) of the scope its
 * members run in.  What they start is the group's: the operation layer,
 * TCP connections and timers tell the scope's owner about their libuv
 * requests and handles until those are done (work_begin, work_end) without
 * knowing it is a group.  The group's memory lives while the program holds
 * it, while a scope names it, and while a member, a request or a handle
 * does.
 *
 * This file has the members: their cells, completion order, the limit and
 * the cancelling walk; group-life.c has the group's life around them (made,
 * closed, cancelled, joined, released) and how it is described. */
#include "cause.h"
#include "deadline.h"
#include "group-int.h"
#include "recorder.h"
#include "trace.h"
#include "work-door.h"

/* A member is a cell (reaction.h): the reaction that observes its promise
 * and the promise (our reference), 24 bytes, in a block of cells the group
 * owns.  Its group is its block's; the running members are found by
 * walking the blocks (cancel_all), so a member needs no links of its own.
 * A cell is, in turn:
 *   running: attached to its promise, then queued; the core owns r;
 *   settled: on the done queue until a next() takes it, linked through
 *            r.next (the core never reads a cell again once it has run);
 *            a UVP_GROUP_DISCARD_SETTLED group's cells skip this;
 *   free:    source NULL, on its block's free list through r.next.
 * A settled or free cell keeps r.target, which names its block. */
struct block_s {
  uvp__cell_owner_t owner; /* first: the cells' target names the block */
  uvp_group_t *g;
  block_t *prev, *next; /* on the group's `room` or `full` list */
  uvp__cell_t *free;    /* cells given back */
  uint32_t cap;         /* cells in the block */
  uint32_t used;        /* cells ever handed out; the rest never touched */
  uint32_t live;        /* cells running or settled */
  bool full;            /* on `full`: live == cap, or was when a walk began */
};

/* Blocks come from two pools per context (group_state_t): a group's first
 * block is small, so that a group of a few members (one per request, in
 * a server) takes four lines; its later blocks are large, so that their
 * headers are few (a settle reads its block's header: a million members
 * have 3 900 of them; with 32-cell blocks, 31 250, the drain of 1e6 took
 * 10 % longer) and cost a quarter of a byte a member.  1024-cell blocks
 * gained 4 % there, but a group past its first 8 members would take
 * 24 KiB (docs/internals/groups.md §14.2). */
enum { SMALL_CELLS = 8, LARGE_CELLS = 256 };

/* Rounded to whole lines: the pool aligns a slot to the largest power of
 * two up to 64 dividing its size, and a cell's target needs
 * UVP__SLOT_ALIGN. */
#define BLOCK_BYTES(cells)                                                     \
  ((sizeof(block_t) + (cells) * sizeof(uvp__cell_t) + 63) & ~(size_t)63)

static uvp__cell_t *block_cells(block_t *b) {
  return (uvp__cell_t *)(void *)(b + 1);
}

/* The block of a cell handed out at least once. */
static block_t *block_of(const uvp__cell_t *c) {
  return (block_t *)uvp__rtarget(&c->r);
}

/* A settled or free cell's link. */
static uvp__cell_t *link_of(const uvp__cell_t *c) {
  return (uvp__cell_t *)(void *)c->r.next;
}
static void set_link(uvp__cell_t *c, uvp__cell_t *next) {
  c->r.next = next != NULL ? &next->r : NULL;
}

/* A member not started yet: waits for room under the limit. */
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

/* Per context, made with its first member: the blocks of every group's
 * members.  Pools for all groups, as the operation layer has one for its
 * operations: memory of a group's own would be taken fresh for its first
 * member, populated (a system call) and given back when it ends, for
 * every group (one per request, in a server), and a group used again and
 * again would fault its members' memory in each time.  A block goes back
 * to its pool as soon as its last member is taken or dropped, so a group
 * whose members are gone keeps no member memory, and one that shrank keeps
 * at most the blocks its live members are in; the pools keep their chunks
 * for the next blocks until the context is freed, as every pool does. */
typedef struct group_state_s {
  uvp__ext_t ext;
  uvp__pool_t small, large; /* blocks of SMALL_CELLS, LARGE_CELLS */
} group_state_t;

static void state_destroy(uvp__ext_t *ext) {
  group_state_t *st = UVP__CONTAINER_OF(ext, group_state_t, ext);
  uvp__pool_destroy(&st->small);
  uvp__pool_destroy(&st->large);
  uvp__free(st);
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  const group_state_t *st = UVP__CONTAINER_OF(ext, group_state_t, ext);
  out->slab_bytes += st->small.bytes + st->large.bytes;
  out->slab_idle_bytes +=
      uvp__pool_idle_bytes(&st->small) + uvp__pool_idle_bytes(&st->large);
  out->slab_allocs += st->small.allocs + st->large.allocs;
}

static void state_trim(uvp__ext_t *ext) {
  group_state_t *st = UVP__CONTAINER_OF(ext, group_state_t, ext);
  (void)uvp__pool_trim(&st->small);
  (void)uvp__pool_trim(&st->large);
}

/* NULL only if there was none and no memory to make it. */
static const uvp__ext_t state_hooks = {
    .destroy = state_destroy, .stats = state_stats, .trim = state_trim};

static group_state_t *state_of(uvp_ctx_t *ctx) {
  group_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_GROUPS, group_state_t);
  if (UVP__LIKELY(st != NULL) ||
      (st = UVP__EXT_MAKE(ctx, UVP__EXT_GROUPS, group_state_t, &state_hooks)) ==
          NULL)
    return st;
  uvp__pool_init(&st->small, BLOCK_BYTES(SMALL_CELLS));
  uvp__pool_init(&st->large, BLOCK_BYTES(LARGE_CELLS));
  return st;
}

static void maybe_end(uvp_group_t *g);

/* ---- lifetime ------------------------------------------------------------ */

static void maybe_free(uvp_group_t *g) {
  if (g->released && g->scopes == 0 && g->holds == 0 && g->nrunning == 0 &&
      g->join == NULL && g->lazy_head == NULL && g->whead == g->wtail &&
      g->done_head == NULL && !g->pumping && !g->walking && g->work.told == 0) {
    UVP__CHECK(g->room == NULL && g->full == NULL); /* every cell free */
    if (g->failure != NULL)
      uvp__unref(g->failure);
    if (g->cut_cause != NULL)
      uvp__cause_unref(g->cut_cause);
    if (g->cause != NULL)
      uvp__cause_unref(g->cause);
    uvp__free(g->waiters);
    uvp__free(g->name);
    uvp__free(g);
  }
}

/* A libuv request or handle of its members, or a fiber member, open: the
 * join waits for it. */
static void group_hold(uvp_group_t *g) { g->holds++; }

static void group_drop(uvp_group_t *g) {
  g->holds--;
  maybe_end(g);
  maybe_free(g);
}

/* ---- blocks of cells ----------------------------------------------------- */

static void member_run(uvp__cell_owner_t *owner, size_t i,
                       const uvp_outcome_t *in);
static void discard_run(uvp__cell_owner_t *owner, size_t i,
                        const uvp_outcome_t *in);
/* A group that keeps no results has blocks of its own kind, so that the
 * settle of every other group's member does not test for it. */
static const uvp__owner_t *member_group(const uvp__cell_owner_t *owner);
static const uvp__cell_ops_t member_ops = {member_run, member_group, NULL};
static const uvp__cell_ops_t discard_ops = {discard_run, member_group, NULL};

/* The task dump: a member's group. */
static const uvp__owner_t *member_group(const uvp__cell_owner_t *owner) {
  return &((const block_t *)(const void *)owner)->g->owner;
}

static block_t **list_of(uvp_group_t *g, const block_t *b) {
  return b->full ? &g->full : &g->room;
}

static void block_unlink(uvp_group_t *g, block_t *b) {
  if (b->prev != NULL)
    b->prev->next = b->next;
  else
    *list_of(g, b) = b->next;
  if (b->next != NULL)
    b->next->prev = b->prev;
}

static void block_push(uvp_group_t *g, block_t *b, bool full) {
  b->full = full;
  block_t **head = list_of(g, b);
  b->prev = NULL;
  b->next = *head;
  if (*head != NULL)
    (*head)->prev = b;
  *head = b;
}

static void block_move(uvp_group_t *g, block_t *b, bool full) {
  block_unlink(g, b);
  block_push(g, b, full);
}

/* A block with no cell handed out yet, on `room`; NULL without memory.
 * Small if it is the group's only one. */
static block_t *block_new(uvp_group_t *g) {
  group_state_t *st = state_of(g->ctx);
  bool first = g->room == NULL && g->full == NULL;
  block_t *b = NULL;
  if (st != NULL)
    b = uvp__pool_get(first ? &st->small : &st->large);
  if (b == NULL)
    return NULL;
  b->owner.ops =
      (g->flags & UVP_GROUP_DISCARD_SETTLED) ? &discard_ops : &member_ops;
  b->owner.cells = block_cells(b);
  b->g = g;
  b->free = NULL;
  b->cap = first ? SMALL_CELLS : LARGE_CELLS;
  b->used = 0;
  b->live = 0;
  block_push(g, b, false);
  return b;
}

static void block_release(uvp_group_t *g, block_t *b) {
  group_state_t *st = state_of(g->ctx); /* made with the block */
  block_unlink(g, b);
  uvp__pool_put(b->cap == SMALL_CELLS ? &st->small : &st->large, b);
}

/* A cell for a new member, in its block (*out); NULL without memory.
 * Never during a walk: nothing joins a cancelled group. */
static uvp__cell_t *cell_take(uvp_group_t *g, block_t **out) {
  UVP__CHECK(!g->walking);
  block_t *b = g->room != NULL ? g->room : block_new(g);
  if (b == NULL)
    return NULL;
  uvp__cell_t *c = b->free;
  if (c != NULL)
    b->free = link_of(c);
  else
    c = &block_cells(b)[b->used++];
  if (++b->live == b->cap)
    block_move(g, b, true);
  *out = b;
  return c;
}

/* A member's cell is free again.  Its block goes back once empty, and
 * returns to `room` if it was full; not while cancel_all walks the
 * blocks (it tidies up after).  Inlined, as member_free: with discard_run
 * a fourth caller, gcc called one of them out of line from serve, the
 * next() path (5 instructions more a member, callgrind on
 * bench/group-drain). */
static UVP__ALWAYS_INLINE void cell_give(uvp_group_t *g, uvp__cell_t *c) {
  block_t *b = block_of(c);
  c->source = NULL;
  set_link(c, b->free);
  b->free = c;
  b->live--;
  if (g->walking)
    return;
  if (b->live == 0)
    block_release(g, b);
  else if (b->full)
    block_move(g, b, false);
}

/* What cell_give left undone during a walk. */
static void blocks_tidy(uvp_group_t *g) {
  for (block_t *b = g->full, *next; b != NULL; b = next) {
    next = b->next;
    if (b->live < b->cap)
      block_move(g, b, false);
  }
  for (block_t *b = g->room, *next; b != NULL; b = next) {
    next = b->next;
    if (b->live == 0)
      block_release(g, b);
  }
}

/* ---- completion order ---------------------------------------------------- */

/* The member's cell goes back before its promise: after the context's
 * close, that reference may be what keeps the context, and the pools,
 * alive. */
static UVP__ALWAYS_INLINE void member_free(uvp_group_t *g, uvp__cell_t *c) {
  uvp_promise_t *p = c->source;
  cell_give(g, c);
  uvp__unref(p);
}

static uvp_promise_t *waiter_pop(uvp_group_t *g) {
  return g->waiters[g->whead++ & (g->wcap - 1)];
}

/* The oldest settled member no next() has taken yet; there is one. */
static uvp__cell_t *done_pop(uvp_group_t *g) {
  uvp__cell_t *c = g->done_head;
  g->done_head = link_of(c);
  if (g->done_head == NULL)
    g->done_tail = NULL;
  return c;
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
  uvp__reject_cause(p, UVP_ECLOSED, &uvp__cause_closed);
}

/* UV_EOF ends an iteration as JavaScript's {done: true} does: no failure,
 * so neither a next() left unhandled with it nor what passes it on is
 * reported (as for a cancellation). */
static void end_of_group(uvp_promise_t *p) {
  uvp__reject(p, UV_EOF, NULL, NULL);
  p->flags |= UVP__F_QUIET;
}

/* Hand settled members to waiting next() calls, in completion order; once
 * nothing more can come, the rest learn UV_EOF. */
static void serve(uvp_group_t *g) {
  while (g->whead != g->wtail && g->done_head != NULL) {
    uvp_promise_t *w = waiter_pop(g);
    if (!uvp__is_pending(w)) { /* cancelled: it stopped waiting */
      uvp__unref(w);
      continue;
    }
    uvp__cell_t *c = done_pop(g);
    uvp__forward(w, c->source);
    uvp__unref(w);
    member_free(g, c);
  }
  /* Given up: what no next() waits for can never be asked for. */
  while (g->released && g->whead == g->wtail && g->done_head != NULL)
    member_free(g, done_pop(g));
  while (exhausted(g) && g->whead != g->wtail) {
    uvp_promise_t *w = waiter_pop(g);
    if (uvp__is_pending(w)) {
      if (uvp__closed(g->ctx))
        reject_closed(w);
      else
        end_of_group(w);
    }
    uvp__unref(w);
  }
}

/* The group has wound down once it is closed (or cancelled), every member
 * has settled and every request, handle and fiber they started is done:
 * the join settles, and the group that made this one (if any) stops
 * waiting for it. */
static void maybe_end(uvp_group_t *g) {
  serve(g);
  if (g->nrunning != 0 || g->lazy_head != NULL || g->holds != 0)
    return;
  if (!ended(g)) {
    /* UVP_GROUP_CLOSE_WHEN_DONE: nothing of the group runs any more (no
     * member running or waiting, no fiber member that has not returned, no
     * request or handle they opened), so nothing of its own can add to
     * it: it closes, as uvp_group_close would, and next() learns UV_EOF.
     * Tested only here, once nothing runs: a settle with members still
     * running returns above as it always did (a test of the flag on every
     * settle cost bench/group-drain 7 instructions a member). */
    if (!(g->flags & UVP_GROUP_CLOSE_WHEN_DONE) || !g->had_member)
      return;
    g->closed = true;
    serve(g);
  }
  if (uvp__recording(g->ctx))
    uvp__rec_event(g->ctx, UVP__R_GROUP_END, g, NULL, NULL);
  uvp_promise_t *j = g->join;
  uvp__work_t work = g->work; /* done below, once the join has settled */
  uvp_ctx_t *ctx = g->ctx;
  g->join = NULL;
  g->work.told = 0;
  /* The deadline passed while the group's work still ran: it did not end
   * in time, though the deadline may have cut that work (a binding's,
   * which ends at once) before reaching the join. */
  if (g->cut == 0 && j != NULL && uvp__deadline_left_in(g->scope) == 0) {
    /* Inside the deadline's expiry, its cause is current; else (the end
     * came later) the deadline's fallback. */
    uvp_cause_t proto = {.kind = UVP_CAUSE_DEADLINE};
    uvp__cause_t *c = uvp__head(g->ctx)->cause;
    g->cut = UV_ETIMEDOUT;
    g->cut_cause = c != NULL && c->pub.kind == UVP_CAUSE_DEADLINE
                       ? uvp__cause_ref(c)
                       : uvp__cause_new(&proto, NULL);
  }
  if (j != NULL) {
    if (uvp__is_pending(j)) {
      if (uvp__closed(g->ctx)) {
        reject_closed(j);
      } else if (g->cut != 0) {
        uvp__reject_cause(j, g->cut, g->cut_cause);
        if (g->cut == UV_ECANCELED)
          j->flags |= UVP__F_QUIET; /* asked for: no news */
      } else if (g->failure != NULL) {
        uvp__forward(j, g->failure);
      } else {
        uvp__fulfill(j, NULL, NULL);
      }
    }
    uvp__unref(j);
  }
  uvp__work_done(ctx, &work);
}

/* ---- members ------------------------------------------------------------- */

static void pump(uvp_group_t *g);
static void cancel_all(uvp_group_t *g, uvp__cause_t *c);

/* FAIL_FAST: member p failed first (a reference handed over): every other
 * is cancelled, saying which and how (cause.h). */
static void fail_fast(uvp_group_t *g, uvp_promise_t *p) {
  g->failure = p;
  const char *file, *pfile;
  int line, pline;
  uvp__site_get(g->site, &file, &line);
  uvp__site_get(p->site, &pfile, &pline);
  uvp_cause_t proto = {.kind = UVP_CAUSE_SIBLING,
                       .peer_code = p->code,
                       .file = file,
                       .line = line,
                       .peer_file = pfile,
                       .peer_line = pline};
  uvp__cause_t *c = uvp__cause_new(&proto, NULL);
  cancel_all(g, c);
  uvp__cause_unref(c);
}

/* Cell i of a block saw its member settle (in == NULL: the cell was
 * dropped at teardown). */
static void member_run(uvp__cell_owner_t *owner, size_t i,
                       const uvp_outcome_t *in) {
  block_t *b = UVP__CONTAINER_OF(owner, block_t, owner);
  uvp__cell_t *c = &block_cells(b)[i];
  uvp_group_t *g = b->g;
  g->nrunning--;
  if (in == NULL) {
    member_free(g, c);
  } else {
    set_link(c, NULL);
    if (g->done_tail != NULL)
      set_link(g->done_tail, c);
    else
      g->done_head = c;
    g->done_tail = c;
    if (in->status != 0 && in->status != UV_ECANCELED &&
        (g->flags & UVP_GROUP_FAIL_FAST) && g->failure == NULL) {
      uvp__retain_local(in->promise); /* run by the drain: ctx open */
      fail_fast(g, in->promise);
    }
  }
  pump(g);
  maybe_end(g);
  maybe_free(g);
}

/* The same in a group that keeps no results: the member is let go of at
 * once.  (The run queue still holds the promise: if the group's was the
 * last other reference, the promise goes when this returns, with its
 * value's notifier and, for a rejection nothing observed, the report.)
 * A cancellation is no news; FAIL_FAST's first failure travels in the
 * join.  A cut, whatever its code, is the group's to handle: the member's
 * rejection carries a cause (a deadline's UV_ETIMEDOUT, a code given to
 * uvp_promise_cancel_with), so the program chose it, and nobody could
 * observe it but the group, which keeps nothing (a server's request past
 * its deadline_ms, answered and returned, would be reported otherwise).
 * Any other failure is left unobserved (watch), to be reported, and so is
 * one the join can no longer carry: the join was cancelled, which
 * cancelled the group, so there is nothing left to fail fast. */
static void discard_run(uvp__cell_owner_t *owner, size_t i,
                        const uvp_outcome_t *in) {
  block_t *b = UVP__CONTAINER_OF(owner, block_t, owner);
  uvp__cell_t *c = &block_cells(b)[i];
  uvp_group_t *g = b->g;
  uvp_promise_t *failed = NULL;
  g->nrunning--;
  if (in != NULL && in->status != 0) {
    if (in->status == UV_ECANCELED) {
      in->promise->flags |= UVP__F_HANDLED;
    } else if ((g->flags & UVP_GROUP_FAIL_FAST) && g->failure == NULL &&
               g->join != NULL && g->cut == 0) {
      failed = in->promise;
      failed->flags |= UVP__F_HANDLED;
    } else if (uvp__cause_of(in->promise) != NULL) {
      in->promise->flags |= UVP__F_HANDLED;
    }
  }
  member_free(g, c);
  if (failed != NULL) {
    uvp__retain_local(failed); /* run by the drain: ctx open */
    fail_fast(g, failed);
  }
  pump(g);
  maybe_end(g);
  maybe_free(g);
}

/* Observe p (a reference handed over) as a running member.  A group that
 * keeps no results does not count as observing it: a rejection nothing
 * else observes is reported (uvp.h), unless a cut made it (discard_run). */
static int watch(uvp_group_t *g, uvp_promise_t *p) {
  block_t *b;
  uvp__cell_t *c = cell_take(g, &b);
  if (c == NULL)
    return UV_ENOMEM;
  g->nrunning++;
  if (uvp__recording(g->ctx)) {
    uvp__rec_member(g->ctx, g, p);
    uvp__rec_redescribe(g->ctx, p);
  }
  bool observed = (p->flags & UVP__F_HANDLED) != 0;
  uvp__cell_attach(&b->owner, c, p);
  if ((g->flags & UVP_GROUP_DISCARD_SETTLED) && !observed)
    p->flags &= (uint8_t)~UVP__F_HANDLED;
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
  group_drop(g);
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
    uvp_fiber_opts_t o = {z->stack_size, fiber_done, 0};
    z->g = g;
    group_hold(g);
    rc = uvp__fiber_spawn(ctx, fiber_entry, z, &o, &p, z->file, z->line);
  } else {
    /* The member runs from here on: the callback may call back into the
     * group (close it, release it, ask next()), which must not end it. */
    g->nrunning++;
    rc = z->start(z->arg, &p);
    g->nrunning--;
  }
  uvp__head(ctx)->trace = outer;
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
  if (uvp__closed(ctx)) {
    /* The callback closed the context, whose teardown dropped every
     * member: this one goes too (observing it would queue a reaction
     * that never runs, holding the context for good). */
    if (rc == 0)
      uvp_promise_release(p);
    return;
  }
  if (rc == 0 && (p == NULL || uvp__promise_ctx(p) != ctx)) {
    rc = p == NULL ? UV_EINVAL : UVP_EXCTX;
    uvp_promise_release(p);
  }
  if (rc != 0) {
    p = uvp__promise_new(ctx, __FILE__, __LINE__);
    if (p == NULL)
      return; /* no memory even to say so: the member is lost */
    /* Reported where the group was made if nothing observes it (a group
     * keeping no results): a line of this file would tell nothing. */
    p->site = g->site;
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  if (watch(g, p) != 0) {
    uvp__unref(p);
    return;
  }
  /* The start callback cancelled the group: the member it started is
   * cancelled as every running member was, rather than left running in a
   * cancelled group.  (A fiber starts from the run queue, never in here.)
   * pump's `pumping` keeps g while the cancel runs hooks. */
  if (g->cancelled && uvp__is_pending(p)) {
    uvp__cause_t *outer = uvp__cause_enter(ctx, g->cause);
    (void)uvp_promise_cancel(p);
    uvp__cause_leave(ctx, outer);
  }
}

/* Start queued members while there is room under the limit. */
static void pump(uvp_group_t *g) {
  if (g->pumping)
    return; /* a start callback re-entered through a settled member */
  g->pumping = true;
  while (g->lazy_head != NULL && !g->cancelled && !uvp__closed(g->ctx) &&
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

/* Cancel every member still pending: one walk over the blocks' cells
 * (those handed out so far), in which a settled member's promise is no
 * longer pending and a free cell has none.  A cancel runs hooks (user
 * code) and settles the member, whose cell then only runs from the drain,
 * never inside uvp_promise_cancel (and the member's reference keeps its
 * promise meanwhile); nothing joins the group once `cancelled` is set.
 * But a hook may take settled members (next(), a release) or tear the
 * context down, dropping every member: their cells go free, and the
 * blocks stay where they are until the walk is over.  After a teardown
 * the walk stops.  (Walking a list from its head again after each cancel
 * took n^2/2 steps: 1 s for 40 000 members.) */
static void cancel_all(uvp_group_t *g, uvp__cause_t *c) {
  g->cancelled = true;
  if (g->cause == NULL)
    g->cause = uvp__cause_ref(c);
  drop_lazy(g);
  if (g->walking)
    return; /* a hook of the walk's cancels cancels the group: it goes on */
  g->walking = true;
  uvp__cause_t *outer = uvp__cause_enter(g->ctx, c);
  for (int l = 0; l < 2; l++)
    for (block_t *b = l == 0 ? g->room : g->full; b != NULL; b = b->next)
      for (uint32_t i = 0; i < b->used && !uvp__closed(g->ctx); i++) {
        uvp_promise_t *p = block_cells(b)[i].source;
        if (p != NULL && uvp__is_pending(p))
          (void)uvp_promise_cancel(p);
      }
  uvp__cause_leave(g->ctx, outer);
  g->walking = false;
  blocks_tidy(g);
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
    uvp__unref(p);
  else
    g->had_member = true;
  return rc;
}

/* The scope a member added now starts in: the slots current now, and the
 * group.  Usually the group's own (no slot was set since it was made). */
static uvp__scope_t *member_scope(uvp_group_t *g) {
  uvp__scope_t *cur = uvp__head(g->ctx)->scope;
  for (int i = 0; i < UVP_SCOPE_SLOTS; i++)
    if ((cur != NULL ? cur->slots[i] : NULL) != g->scope->slots[i])
      return uvp__scope_with_owner(cur, &g->owner);
  return uvp__scope_ref(g->scope);
}

/* opts: a fiber's (may be NULL); its deadline runs from now, while the
 * member waits for room too, as a request's does. */
static int add_lazy(uvp_group_t *g, uvp_fiber_fn fn, uvp_group_start_cb start,
                    void *arg, const uvp_fiber_opts_t *opts, const char *file,
                    int line) {
  int rc = check_open(g);
  if (rc == 0 && g->cancelled)
    rc = UV_ECANCELED;
  if (rc != 0)
    return rc;
  lazy_t *z = uvp__malloc(sizeof(*z));
  uvp__scope_t *scope = z != NULL ? member_scope(g) : NULL;
  if (scope != NULL && opts != NULL && opts->deadline_ms != 0) {
    uvp__scope_t *s =
        uvp__scope_within(g->ctx, scope, opts->deadline_ms, file, line);
    uvp__scope_unref(scope);
    scope = s;
  }
  if (scope == NULL) {
    uvp__free(z);
    return UV_ENOMEM;
  }
  *z = (lazy_t){NULL,  NULL,
                fn,    start,
                arg,   opts != NULL ? opts->arg_free : NULL,
                scope, opts != NULL ? opts->stack_size : 0,
                file,  line};
  if (g->lazy_tail != NULL)
    g->lazy_tail->next = z;
  else
    g->lazy_head = z;
  g->lazy_tail = z;
  g->had_member = true;
  pump(g);
  /* What pump started may have run user code (the start callback, a
   * member's cancel hook) that closed the context and released g: with no
   * member left to settle, it ends here. */
  maybe_end(g);
  maybe_free(g);
  return 0;
}

int uvp_group_spawn_at(uvp_group_t *g, uvp_fiber_fn fn, void *arg,
                       const uvp_fiber_opts_t *opts, const char *file,
                       int line) {
  uvp_free_cb arg_free = opts != NULL ? opts->arg_free : NULL;
  int rc =
      fn == NULL ? UV_EINVAL : add_lazy(g, fn, NULL, arg, opts, file, line);
  return uvp__refuse(rc, arg, arg_free);
}

int uvp_group_start(uvp_group_t *g, uvp_group_start_cb start, void *arg,
                    uvp_free_cb arg_free) {
  uvp_fiber_opts_t o = {0, arg_free, 0};
  int rc =
      start == NULL ? UV_EINVAL : add_lazy(g, NULL, start, arg, &o, NULL, 0);
  return uvp__refuse(rc, arg, arg_free);
}

int uvp_group_next_at(uvp_group_t *g, uvp_promise_t **out, const char *file,
                      int line) {
  int rc = g == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc != 0)
    return rc;
  if (g->wtail - g->whead == g->wcap) {
    /* A group that keeps no results has none to hand out, and no ring
     * (wcap 0): refused here, off the common path. */
    if (g->flags & UVP_GROUP_DISCARD_SETTLED)
      return UV_EINVAL;
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
    maybe_free(g); /* as in add_lazy */
  }
  return rc;
}

/* ---- for group-life.c ---------------------------------------------------- */

/* Out-of-line doors to what the members' paths above call inline. */
void uvp__group_hold(uvp_group_t *g) { group_hold(g); }
void uvp__group_drop(uvp_group_t *g) { group_drop(g); }
void uvp__group_maybe_end(uvp_group_t *g) { maybe_end(g); }
void uvp__group_maybe_free(uvp_group_t *g) { maybe_free(g); }
void uvp__group_cancel_all(uvp_group_t *g, uvp__cause_t *c) {
  cancel_all(g, c);
}
void uvp__group_drop_lazy(uvp_group_t *g) { drop_lazy(g); }

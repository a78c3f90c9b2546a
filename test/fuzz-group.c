/* libFuzzer harness for task groups: the input decodes into a sequence of
 * operations on up to MAXG groups -- create (limit 0..3, with or without
 * UVP_GROUP_FAIL_FAST, with or without UVP_GROUP_DISCARD_SETTLED), add a fresh
 * pending promise, add a promise the harness holds (a member of another group,
 * settled or not: one promise in two groups; or an earlier group's join:
 * nesting), add hundreds at once, start a member through a start callback that
 * first calls back into its group (next, close, cancel, add, set_limit, start,
 * release), spawn a fiber member with a small program (spawn a fiber into its
 * group, make a group of its own -- whose parent its group is --, close or
 * cancel its group, cut its group's join, add to it or ask next(); then await a
 * promise, or what it made, and return a value or a rejection), add a member
 * whose cancel hook calls back into its group (next, close, cancel, set_limit),
 * resolve / reject / cancel a promise (a join, which cuts it, a next() promise,
 * many at once), next() (many at once), set_limit, close, cancel, join,
 * release, a free promise for fibers to await, one loop turn -- which run both
 * on uvp and on a small reference model of uvp.h's rules written here.  After
 * every loop turn every promise the harness holds (members, next() promises,
 * joins), what each fiber's calls and await returned, which fibers ran and had
 * their arg_free run, and each group's size must agree with the model; every
 * call's return code, which start callbacks have run (in which order) and had
 * their arg_free run, and what the callbacks' and hooks' calls returned, are
 * checked after every operation (uvp.h pins those to the call).  At the end
 * every group still open is closed, the loop turns and all is compared again;
 * then uvp_ctx_close must leave every promise the model still has pending
 * rejected with UVP_ECLOSED, and uv_loop_close must return 0, with every
 * allocation of uvp's freed (fuzz-helpers.h counts them).  Every start callback
 * and fiber runs at most once, never after its arg_free nor after
 * uvp_ctx_close; every arg_free runs exactly once by the end, a fiber's only
 * once it has returned; no cancellation, no teardown's UVP_ECLOSED and no
 * next()'s UV_EOF is reported as unhandled, and no promise twice; a member of a
 * group keeping no results is reported, by the end, exactly when it rejected
 * (not with UV_ECANCELED) and nothing observed it (no group keeping results, no
 * fiber's await, no join carrying it as a FAIL_FAST failure: a join cut before
 * the failure carries none).  ASan/UBSan/LSan catch the rest.  Hundreds of
 * members fill a group's small first block and 256-cell blocks after it; taking
 * some and adding more reuses their cells, and a cancel walks every block (the
 * model's too: see below).
 *
 * The model is deliberately naive: promises in an array, each with its
 * reactions in registration order (groups' members, fibers awaiting it);
 * members, starts and fibers in plain arrays; per group FIFO arrays of waiting
 * starts and fibers, settled members and waiting next() calls; and one FIFO of
 * jobs standing for uvp's run queue: a settling promise queues its reactions, a
 * spawn queues the fiber's start, an await of a settled promise queues the wake
 * at once.  A job is a group observing a member settle (that order is the
 * completion order next() serves) or a fiber starting or waking (fiber
 * semantics as in fuzz-fiber.c: cancelling a suspended fiber cancels the
 * promise it awaits if it alone awaits it, else takes it off and queues its
 * wake).  A group winds down -- its join settles, its parent stops waiting --
 * once it is closed or cancelled, no member runs or waits, and no fiber member
 * is still running and no group its members made is still winding down (holds).
 * Its join then rejects with what cut it, if anything did, else with the
 * FAIL_FAST failure, if any, else fulfils.  uvp.h's structured rule: cancelling
 * a pending join (uvp_promise_cancel on it, or the cancel of a fiber suspended
 * on it as its only consumer, or of its parent group's members) cuts it: the
 * group is cancelled as by uvp_group_cancel, but the join stays pending until
 * the group has wound down, then rejects with UV_ECANCELED (quiet); cut again,
 * it returns 0 and the members are walked again.  So a fiber alone awaiting a
 * join stays suspended, cancelled, until the join's group has wound down (its
 * await then says UV_ECANCELED; one awaiting its own group's join waits for
 * uvp_ctx_close), and a cut join that is a parent's member keeps its parent
 * from winding down until then.  Cancelling a group cancels each pending member
 * by uvp_promise_cancel, as uvp.h says: a member shared with another group is
 * rejected for both.  Members fulfil with their promise's index + 1 and reject
 * with -(20000 + index), fibers with 50000 + f / -(50000 + f), failed starts
 * with -(40000 + z), so an outcome tells which member it was.  A group keeping
 * no results puts no settled member in its FIFO, and refuses next() (UV_EINVAL:
 * the slot stays empty).  A start callback's member counts as running from the
 * call on (uvp.h: started inside that call), so the group cannot end, nor
 * next() say UV_EOF, while the callback runs.
 *
 * Not pinned by uvp.h, so not compared: the state of promises and the
 * group's size between loop turns (the model only says where things stand
 * once the run queue is drained; a turn here runs UV_RUN_NOWAIT until
 * uvp_ctx_stats says nothing is queued), and which of UVP_ECLOSED and
 * UV_ECANCELED adding to a group both closed and cancelled returns.
 *
 * Cancel order.  uvp.h leaves open the order in which a cancel reaches the
 * running members; uvp's walk (group.c's cancel_all) follows its cells: the
 * blocks on the group's `room` list, then on `full`, each in cell order -- not
 * the order of adding, once a freed cell was reused.  That order shows where
 * nothing below keeps it out: cancelling one member, a group's join, can wind
 * that group down and with it the group it held (its parent), whose join,
 * another member, is then fulfilled before the walk reaches it (walked the
 * other way, it is cut, and rejects with UV_ECANCELED when its group has wound
 * down).  So the model copies uvp's choice: it keeps each group's members in
 * cells laid out as group.c lays them out (mblock_t: a first block of 8 cells,
 * 256 after it, each list pushed at the head, the cell freed last taken first,
 * a block given back once empty, none moved during a walk) and walks them in
 * that order; a change to group.c's layout must be made here too
 * (DEVELOPERS.md).  The restrictions and the detection below predate that and
 * stay, uvp.h pinning none of what they keep out.  The harness avoids what
 * would make the walk's order visible: a hook's call back is one that commutes
 * with the others' (no release, add or start from a hook; in each group one
 * hook at most calls next(), its promise in a slot of its own); no next()
 * promise is made a member or awaited by a fiber (a walk could both serve and
 * cancel it); a fiber awaits no promise that is a member while pending (a walk
 * of another group would wake fibers in walk order) but the one it added to its
 * own group (whose walk cancels the fiber too), and a promise a fiber awaits,
 * or one with a hook, joins no other group.  What remains -- the jobs one walk
 * queued (a shared member's observation by another group, a cancelled fiber's
 * wake, the last member of the cancelled group) run in walk order, and two of
 * them have effects (start members, end a group, queue more); and two fibers of
 * one walk whose cancels spread to what each alone awaited (one can end a group
 * the other cancels, or the join the other awaits: the model sees a spread that
 * its own order made moot) -- the model detects: it stops comparing that input
 * (0.75 % of the corpus before the second rule), and only what holds in any
 * order is checked at the end (every arg_free once, nothing left after
 * uv_loop_close).  uvp's choices the model copies: a FAIL_FAST failure cancels
 * the group (adding afterwards returns UV_ECANCELED), as uvp_group_cancel does;
 * a member whose start callback cancelled its own group is cancelled as soon as
 * the callback returns it.
 *
 * Left out: what members start in libuv (timers, requests, handles, whose holds
 * the join waits for), time (deadlines: a group's or a fiber member's
 * deadline_ms, whose cut says UV_ETIMEDOUT, uvp_deadline_shield), scope slots,
 * groups made by start callbacks or hooks, a start callback or fiber that tears
 * the context down, adopted or already settled fiber results, threads.
 *
 * Allocation failure: an input may first arm it (fuzz-helpers.h).  A
 * group_new, add, start, spawn or next() refused with UV_ENOMEM must have
 * changed nothing (a refused start's or spawn's arg_free never runs; the
 * promise an add was given stays a plain pending one); the model skips it.
 * A failure met anywhere else (a start callback's or a fiber's calls, a
 * spawn the group makes later, a loop turn) loses the model: comparing
 * stops, but unlike a walk's order the input goes on, so that what uvp
 * does after a failure, and the teardown of groups some of whose calls
 * failed, are exercised.  From then on groups and promises are picked
 * from the harness's own records (how many it made, which it released,
 * which are joins or next() promises, which slot is whose join: no cycle
 * of joins), any promise it holds may be shared or awaited, and only what
 * holds in any case is checked: each call returns a code uvp.h documents
 * for it (set_limit, close, cancel, join: 0; next(): 0 unless it
 * refused), every arg_free runs once and never early, no start or fiber
 * runs after the close, no cancellation is reported unhandled,
 * uv_loop_close returns 0 and everything is freed.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true; run on a copy of
 * the seeds (libFuzzer adds what it finds to the directory it is given):
 *   c=$(mktemp -d); cp -r test/fuzz-group-corpus/. $c/
 *   build-fuzz/test/fuzz-group -max_total_time=60 $c */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-helpers.h"

#define MAXG 6    /* groups, the harness's and those fibers make */
#define MAXP 2048 /* promises the harness holds */
#define SPARE 128 /* of those, left for what callbacks make */
#define MAXI 64   /* uvp's own: fibers' promises, failed starts' */
#define NP (MAXP + MAXI)
#define MAXMEM 4096 /* members */
#define MAXS 24     /* start callbacks */
#define MAXF 16     /* fibers */
#define MAXH 16     /* promises with a cancel hook */
#define RMAX 32     /* reactions on one promise */
#define SHARE 8     /* a promise joins a group only while it has fewer */
#define MAXQ (4 * NP + 8 * MAXMEM) /* jobs of one input, all told */
#define BULK 383 /* at most this many at once: past 8 + 256 cells */

static int value_of(int i) { return i + 1; }
static int code_of(int i) { return -(20000 + i); }

static int start_error(int z) { return -(40000 + z); }
static int fiber_value(int f) { return 50000 + f; }
static int fiber_code(int f) { return -(50000 + f); }

/* What a start callback's member is. */
enum { ST_PENDING, ST_FULFILLED, ST_REJECTED, ST_ERROR };
/* What a start callback, or a cancel hook, does to its group first. */
enum { A_NONE, A_NEXT, A_CLOSE, A_CANCEL, A_ADD, A_LIMIT, A_START, A_RELEASE };
/* What a fiber does before it awaits: to its group, or a group of its own. */
enum {
  FP_NONE,
  FP_SPAWN,
  FP_GROUP,
  FP_CLOSE,
  FP_CANCEL,
  FP_ADD,
  FP_NEXT,
  FP_CUT /* uvp_promise_cancel on its group's join: cut, it waits for us */
};
/* What it awaits: nothing, a promise the harness holds, what it made. */
enum { AW_NONE, AW_TARGET, AW_OWN };

/* ---- the model ----------------------------------------------------------- */

typedef enum { M_PENDING, M_FULFILLED, M_REJECTED } mstate_t;

typedef struct mout_s {
  mstate_t st;
  int value; /* fulfilled value, or rejection code */
} mout_t;

/* Kinds of promises: what cancelling one does besides rejecting it. */
enum { K_PLAIN, K_HOOKED, K_JOIN, K_FIBER, K_NEXT, K_ERROR, K_SLOT };

typedef struct mprom_s {
  mout_t out;
  int kind;
  int owner;      /* K_HOOKED: its hook (M.h); K_JOIN: its group; K_FIBER:
                     f; K_ERROR: its start z */
  bool member;    /* has been a group's member */
  bool awaited;   /* a fiber awaits (or will): never a member then */
  bool discarded; /* has been a member of a group keeping no results */
  bool observed;  /* by a group keeping results, a fiber's await, or a
                     DISCARD_SETTLED | FAIL_FAST group's join: a rejection
                     is then never reported */
  int nr;
  int rx[RMAX];   /* reactions in registration order: >= 0 a member's cell,
                     < 0 the wake of fiber ~r */
  int sole_walk;  /* settled in this walk with one reaction, a fiber's wake */
  int sole_fiber; /* that fiber */
} mprom_t;

typedef struct mmember_s {
  int group, prom;
  bool observed; /* the group saw it settle: no longer running */
  int blk, cell; /* where it is in its group's blocks (B) while it has one */
} mmember_t;

/* A block of cells, as group.c's block_t: the model keeps each group's
 * members in cells as uvp does -- a small first block, large ones after
 * it, on the group's `room` or `full` list (pushed at the head), freed
 * cells reused last-freed first, a block given back once empty -- so that
 * a cancel walks them in uvp's order ("Cancel order" above). */
enum { SMALL_CELLS = 8, LARGE_CELLS = 256 };
#define MAXB 64 /* blocks at once, all groups */

typedef struct mblock_s {
  int prev, next; /* on its group's room or full list; -1 ends it */
  int cap, used, live;
  int free; /* the last cell freed, -1: none; then through link[] */
  bool full;
  int cell[LARGE_CELLS]; /* the member (MEM) in each cell, -1: free */
  int link[LARGE_CELLS];
} mblock_t;

typedef struct mgroup_s {
  bool closed, cancelled, released, ff, walking, pumping, wound;
  bool discard;   /* UVP_GROUP_DISCARD_SETTLED */
  bool next_hook; /* a member's cancel hook calls next() */
  int cut;        /* what cut its join first (UV_ECANCELED), or 0: the
                     join then settles with it once the group wound down */
  int parent;     /* the group whose member made it, until it winds down */
  int jp;         /* its join */
  int room, full; /* its blocks (B) with a free cell, and without */
  size_t limit;
  int nrunning, holds; /* holds: fibers not returned, child groups */
  int failure;         /* FAIL_FAST: the promise that failed first, or -1 */
  int lazy[MAXS + MAXF], lh, lt; /* waiting: start z, or fiber ~f */
  int dh, dt, wh, wt;            /* into DONE[g] and WAIT[g] */
} mgroup_t;

typedef struct mstart_s {
  int group, mode, act, lim;
  bool started, freed;
  int rc, rc2; /* what its action returns (either of two) */
} mstart_t;

enum { F_LAZY, F_QUEUED, F_RUNNING, F_SUSPENDED, F_DONE };

typedef struct mfiber_s {
  int group, pre, aw, target, ret;
  int state, prom, waiting;
  bool cancelled, ran, freed;
  int rc, rc2, await_rc;
} mfiber_t;

typedef struct mhook_s {
  int prom, group, act, lim, slot;
  int calls, rc, rc2;
} mhook_t;

typedef struct model_s {
  mgroup_t g[MAXG];
  int ng;
  int np, ni; /* promises: the harness's [0, np), uvp's [MAXP, MAXP + ni) */
  int nm;
  mstart_t s[MAXS];
  int ns;
  mfiber_t f[MAXF];
  int nf;
  mhook_t h[MAXH];
  int nh;
  int start_log[MAXS], nlog;
  int qh, qt;
  int walks;       /* cancels walking their members, nested */
  int walk_id;     /* top-level walks so far */
  int effects;     /* jobs queued, promises made, starts run, ends */
  int effect_walk; /* the walk whose job last had effects */
  int spread_walk; /* the walk in which a fiber's cancel last spread */
  int nb, bfree[MAXB], nbfree; /* blocks (B) made; those given back */
  bool unpinned; /* a walk's order shows: nothing more is compared */
  bool lost;     /* an allocation failure lost the model before this op: the
                    op is picked from the harness's own records (S) */
} model_t;

static model_t M;
/* Big and written before read: not cleared between inputs. */
static mprom_t P[NP];
static mmember_t MEM[MAXMEM];
static mblock_t B[MAXB];
static int Q[MAXQ], QW[MAXQ]; /* a job; the walk that queued it, or 0 */
static int DONE[MAXG][MAXMEM], WAIT[MAXG][MAXP];

static bool pending(int pi) { return P[pi].out.st == M_PENDING; }

static int new_prom(int kind, int owner, mout_t out) {
  int pi = kind == K_FIBER || kind == K_ERROR ? MAXP + M.ni++ : M.np++;
  if (M.ni > MAXI || M.np > MAXP)
    abort();
  P[pi] = (mprom_t){out, kind, owner, false, false, false, false, 0, {0}, 0, 0};
  M.effects++;
  return pi;
}

static void m_enqueue(int job) {
  if (M.qt == MAXQ)
    abort();
  QW[M.qt] = M.walks > 0 ? M.walk_id : 0;
  Q[M.qt++] = job;
  M.effects++;
}

static void m_react(int pi, int r) {
  if (pending(pi)) {
    if (P[pi].nr == RMAX)
      abort();
    P[pi].rx[P[pi].nr++] = r;
  } else {
    m_enqueue(r);
  }
}

/* Settling queues the promise's reactions in order. */
static void m_settle(int pi, mout_t out) {
  P[pi].out = out;
  if (M.walks > 0 && P[pi].nr == 1 && P[pi].rx[0] < 0) {
    P[pi].sole_walk = M.walk_id;
    P[pi].sole_fiber = ~P[pi].rx[0];
  }
  for (int r = 0; r < P[pi].nr; r++)
    m_enqueue(P[pi].rx[r]);
  P[pi].nr = 0;
}

/* ---- the members' cells, laid out as group.c lays them out -------------- */

static int *mb_list(mgroup_t *g, const mblock_t *b) {
  return b->full ? &g->full : &g->room;
}

static void mb_unlink(mgroup_t *g, int bi) {
  mblock_t *b = &B[bi];
  if (b->prev >= 0)
    B[b->prev].next = b->next;
  else
    *mb_list(g, b) = b->next;
  if (b->next >= 0)
    B[b->next].prev = b->prev;
}

static void mb_push(mgroup_t *g, int bi, bool full) {
  mblock_t *b = &B[bi];
  b->full = full;
  int *head = mb_list(g, b);
  b->prev = -1;
  b->next = *head;
  if (*head >= 0)
    B[*head].prev = bi;
  *head = bi;
}

static void mb_move(mgroup_t *g, int bi, bool full) {
  mb_unlink(g, bi);
  mb_push(g, bi, full);
}

/* A block with no cell handed out yet, on `room`: small if it is the
 * group's only one. */
static int mb_new(mgroup_t *g) {
  bool first = g->room < 0 && g->full < 0;
  int bi = M.nbfree > 0 ? M.bfree[--M.nbfree] : M.nb++;
  if (bi == MAXB)
    abort();
  B[bi] = (mblock_t){.cap = first ? SMALL_CELLS : LARGE_CELLS, .free = -1};
  mb_push(g, bi, false);
  return bi;
}

static void mb_release(mgroup_t *g, int bi) {
  mb_unlink(g, bi);
  M.bfree[M.nbfree++] = bi;
}

/* Member k takes a cell (group.c's cell_take). */
static void m_cell_take(mgroup_t *g, int k) {
  int bi = g->room >= 0 ? g->room : mb_new(g);
  mblock_t *b = &B[bi];
  int c = b->free;
  if (c >= 0)
    b->free = b->link[c];
  else
    c = b->used++;
  b->cell[c] = k;
  MEM[k].blk = bi;
  MEM[k].cell = c;
  if (++b->live == b->cap)
    mb_move(g, bi, true);
}

/* Member k's cell is free again (cell_give): the block goes back once
 * empty, or returns to `room` if it was full, but not during a walk. */
static void m_cell_give(mgroup_t *g, int k) {
  int bi = MEM[k].blk, c = MEM[k].cell;
  mblock_t *b = &B[bi];
  b->cell[c] = -1;
  b->link[c] = b->free;
  b->free = c;
  b->live--;
  MEM[k].blk = -1;
  if (g->walking)
    return;
  if (b->live == 0)
    mb_release(g, bi);
  else if (b->full)
    mb_move(g, bi, false);
}

/* What m_cell_give left undone during a walk (blocks_tidy). */
static void m_blocks_tidy(mgroup_t *g) {
  for (int bi = g->full, next; bi >= 0; bi = next) {
    next = B[bi].next;
    if (B[bi].live < B[bi].cap)
      mb_move(g, bi, false);
  }
  for (int bi = g->room, next; bi >= 0; bi = next) {
    next = B[bi].next;
    if (B[bi].live == 0)
      mb_release(g, bi);
  }
}

static bool m_ended(const mgroup_t *g) { return g->closed || g->cancelled; }

static bool m_exhausted(const mgroup_t *g) {
  return m_ended(g) && g->nrunning == 0 && g->lh == g->lt && g->dh == g->dt;
}

/* Settled members to waiting next() calls in completion order; UV_EOF to
 * the rest once nothing more can come. */
static void m_serve(mgroup_t *g) {
  int gi = (int)(g - M.g);
  while (g->wh < g->wt && g->dh < g->dt) {
    int w = WAIT[gi][g->wh++];
    if (!pending(w))
      continue; /* cancelled: stopped waiting */
    int k = DONE[gi][g->dh++];
    m_settle(w, P[MEM[k].prom].out);
    m_cell_give(g, k);
  }
  /* Nobody can ask for them any more. */
  while (g->released && g->wh == g->wt && g->dh < g->dt)
    m_cell_give(g, DONE[gi][g->dh++]);
  if (m_exhausted(g))
    for (; g->wh < g->wt; g->wh++)
      if (pending(WAIT[gi][g->wh]))
        m_settle(WAIT[gi][g->wh], (mout_t){M_REJECTED, UV_EOF});
}

/* Closed (or cancelled), nothing running nor waiting, nothing held: the
 * join settles and the parent stops waiting, once.  The join says, first
 * what cut it (uvp.h's structured rule: a cut join waited for this), then
 * a FAIL_FAST failure, else it fulfils.  (A closed context comes first in
 * uvp, UVP_ECLOSED; the model stops before uvp_ctx_close.) */
static void m_maybe_end(mgroup_t *g) {
  m_serve(g);
  if (!m_ended(g) || g->nrunning != 0 || g->lh != g->lt || g->holds != 0 ||
      g->wound)
    return;
  g->wound = true;
  M.effects++;
  if (pending(g->jp))
    m_settle(g->jp, g->cut != 0       ? (mout_t){M_REJECTED, g->cut}
                    : g->failure >= 0 ? P[g->failure].out
                                      : (mout_t){M_FULFILLED, 0});
  if (g->parent >= 0) {
    mgroup_t *parent = &M.g[g->parent];
    g->parent = -1;
    parent->holds--;
    m_maybe_end(parent);
  }
}

/* Promise pi becomes a running member of g. */
static void m_member(int gi, int pi) {
  int k = M.nm++;
  if (k == MAXMEM)
    abort();
  MEM[k] = (mmember_t){gi, pi, false, -1, -1};
  m_cell_take(&M.g[gi], k);
  P[pi].member = true;
  if (M.g[gi].discard)
    P[pi].discarded = true;
  else
    P[pi].observed = true;
  M.g[gi].nrunning++;
  m_react(pi, k);
}

/* Why nothing can be added to g now (0: it can), and the other code
 * uvp.h allows when both apply. */
static int add_rc(const mgroup_t *g, int *alt) {
  int rc = g->closed ? UVP_ECLOSED : g->cancelled ? UV_ECANCELED : 0;
  *alt = g->closed && g->cancelled ? UV_ECANCELED : rc;
  return rc;
}

static int m_new_group(size_t limit, bool ff, bool discard, int parent) {
  int gi = M.ng++;
  M.g[gi] = (mgroup_t){.ff = ff,
                       .discard = discard,
                       .parent = parent,
                       .limit = limit,
                       .failure = -1,
                       .room = -1,
                       .full = -1};
  M.g[gi].jp = new_prom(K_JOIN, gi, (mout_t){M_PENDING, 0});
  if (parent >= 0)
    M.g[parent].holds++;
  return gi;
}

static void m_pump(mgroup_t *g);
static void m_cancel_all(mgroup_t *g);
static int m_cancel(int pi);

static int m_add_fresh(int gi, int *alt) {
  int pi = new_prom(K_PLAIN, -1, (mout_t){M_PENDING, 0});
  int rc = add_rc(&M.g[gi], alt);
  if (rc == 0)
    m_member(gi, pi);
  return rc;
}

/* slot: where the promise goes (-1: a new one).  A group keeping no
 * results refuses, leaving the slot empty. */
static int m_next(int gi, int slot) {
  mgroup_t *g = &M.g[gi];
  if (g->discard) {
    if (slot < 0)
      (void)new_prom(K_SLOT, -1, (mout_t){M_PENDING, 0});
    return UV_EINVAL;
  }
  if (slot < 0)
    slot = new_prom(K_NEXT, gi, (mout_t){M_PENDING, 0});
  P[slot].kind = K_NEXT;
  WAIT[gi][g->wt++] = slot;
  m_serve(g);
  return 0;
}

static void m_release(mgroup_t *g) {
  g->released = true;
  g->closed = true;
  m_maybe_end(g);
}

static int m_add_lazy(int gi, int entry, int *alt) {
  mgroup_t *g = &M.g[gi];
  int rc = add_rc(g, alt);
  if (rc != 0)
    return rc;
  g->lazy[g->lt++] = entry;
  m_pump(g);
  return 0;
}

static int m_start_plain(int gi, int *alt) {
  int z = M.ns++;
  M.s[z] = (mstart_t){gi, ST_PENDING, A_NONE, 0, false, false, 0, 0};
  int rc = m_add_lazy(gi, z, alt);
  if (rc != 0)
    M.s[z].freed = true;
  return rc;
}

/* What a start callback or a cancel hook does to its group (not once the
 * harness has given it up). */
static int m_act(int gi, int act, int lim, int slot, int *alt) {
  mgroup_t *g = &M.g[gi];
  *alt = 0;
  if (g->released)
    return 0;
  switch (act) {
  case A_NEXT:
    return m_next(gi, slot);
  case A_CLOSE:
    g->closed = true;
    m_maybe_end(g);
    return 0;
  case A_CANCEL:
    m_cancel_all(g);
    m_maybe_end(g);
    return 0;
  case A_ADD:
    return m_add_fresh(gi, alt);
  case A_LIMIT:
    g->limit = (size_t)lim;
    m_pump(g);
    m_maybe_end(g);
    return 0;
  case A_START:
    return M.ns < MAXS ? m_start_plain(gi, alt) : 0;
  case A_RELEASE:
    m_release(g);
    return 0;
  }
  return 0;
}

/* Start waiting members while there is room. */
static void m_pump(mgroup_t *g) {
  int gi = (int)(g - M.g);
  if (g->pumping)
    return;
  g->pumping = true;
  while (g->lh < g->lt && !g->cancelled &&
         (g->limit == 0 || (size_t)g->nrunning < g->limit)) {
    int e = g->lazy[g->lh++];
    if (e < 0) { /* a fiber: queued to start */
      mfiber_t *f = &M.f[~e];
      g->holds++;
      f->state = F_QUEUED;
      f->prom = new_prom(K_FIBER, ~e, (mout_t){M_PENDING, 0});
      m_enqueue(e);
      m_member(gi, f->prom);
      continue;
    }
    mstart_t *z = &M.s[e];
    z->started = true;
    M.start_log[M.nlog++] = e;
    M.effects++;
    /* uvp.h: the member runs from its start on; so the group cannot end
     * (nor next() say UV_EOF) while the callback runs. */
    g->nrunning++;
    z->rc = m_act(gi, z->act, z->lim, -1, &z->rc2);
    g->nrunning--;
    z->freed = true;
    int pi;
    if (z->mode == ST_ERROR)
      pi = new_prom(K_ERROR, e, (mout_t){M_REJECTED, start_error(e)});
    else
      pi = new_prom(K_PLAIN, -1, (mout_t){M_PENDING, 0});
    if (z->mode == ST_FULFILLED)
      P[pi].out = (mout_t){M_FULFILLED, value_of(pi)};
    else if (z->mode == ST_REJECTED)
      P[pi].out = (mout_t){M_REJECTED, code_of(pi)};
    m_member(gi, pi);
    if (g->cancelled && pending(pi)) /* the callback cancelled its group */
      (void)m_cancel(pi);
  }
  g->pumping = false;
}

/* Cancel the running members (uvp_promise_cancel), drop the waiting ones. */
static void m_cancel_all(mgroup_t *g) {
  g->cancelled = true;
  for (; g->lh < g->lt; g->lh++) {
    int e = g->lazy[g->lh];
    if (e >= 0)
      M.s[e].freed = true;
    else
      M.f[~e].freed = true;
  }
  if (g->walking)
    return; /* a hook of the walk's cancelled the group: the walk goes on */
  g->walking = true;
  if (M.walks++ == 0)
    M.walk_id++;
  /* In uvp's order: the `room` blocks, then the `full` ones, each in
   * cell order (group.c's cancel_all); nothing takes a cell of g's
   * meanwhile, and none of its blocks moves. */
  for (int l = 0; l < 2; l++)
    for (int bi = l == 0 ? g->room : g->full; bi >= 0; bi = B[bi].next)
      for (int c = 0; c < B[bi].used; c++) {
        int k = B[bi].cell[c];
        if (k >= 0 && !MEM[k].observed && pending(MEM[k].prom))
          (void)m_cancel(MEM[k].prom);
      }
  g->walking = false;
  M.walks--;
  m_blocks_tidy(g);
}

/* A fiber's promise was cancelled: its awaits say UV_ECANCELED; the one it
 * is suspended in gives up the promise by uvp_promise_cancel's rule. */
static void m_fiber_cancelled(int fi) {
  mfiber_t *f = &M.f[fi];
  f->cancelled = true;
  if (f->state != F_SUSPENDED)
    return;
  mprom_t *q = &P[f->waiting];
  if (!pending(f->waiting)) {
    /* Settled earlier in this walk while this fiber alone awaited it:
     * walked in another order, this cancel would have spread there first
     * (rejecting it, where the walk's other cancels ended its group). */
    if (M.walks > 0 && q->sole_walk == M.walk_id && q->sole_fiber == fi)
      M.unpinned = true;
    return;
  }
  if (q->nr == 1 && q->rx[0] == ~fi) {
    /* The cancel spreads to what the fiber awaited (another group's join,
     * say).  Two such spreads in one walk can meet (one ends a group the
     * other cancels), and which comes first is the walk's order. */
    if (M.walks > 0) {
      M.unpinned |= M.spread_walk == M.walk_id;
      M.spread_walk = M.walk_id;
    }
    (void)m_cancel(f->waiting);
    return;
  }
  int r = 0;
  while (q->rx[r] != ~fi)
    r++;
  memmove(&q->rx[r], &q->rx[r + 1], (size_t)(q->nr - r - 1) * sizeof(int));
  q->nr--;
  m_enqueue(~fi);
}

/* uvp_promise_cancel.  A join is cut, not settled: its group is cancelled
 * (cancelled, not closed: adding says UV_ECANCELED) and the join stays
 * pending until the group has wound down (m_maybe_end), then rejects with
 * the first cut's code; cut again, it returns 0, the group's members are
 * walked again (a nested join among them, still pending, is cut again)
 * and nothing else changes. */
static int m_cancel(int pi) {
  if (!pending(pi))
    return UVP_ESETTLED;
  mprom_t *p = &P[pi];
  if (p->kind == K_JOIN) {
    mgroup_t *g = &M.g[p->owner];
    if (g->cut == 0)
      g->cut = UV_ECANCELED;
    m_cancel_all(g);
    m_maybe_end(g);
    return 0;
  }
  m_settle(pi, (mout_t){M_REJECTED, UV_ECANCELED});
  if (p->kind == K_FIBER) {
    m_fiber_cancelled(p->owner);
  } else if (p->kind == K_HOOKED) {
    mhook_t *h = &M.h[p->owner];
    h->calls++;
    h->rc = m_act(h->group, h->act, h->lim, h->slot, &h->rc2);
  }
  return 0;
}

static void m_fiber_finish(int fi) {
  mfiber_t *f = &M.f[fi];
  if (f->state != F_QUEUED && pending(f->prom))
    m_settle(f->prom, f->ret ? (mout_t){M_REJECTED, fiber_code(fi)}
                             : (mout_t){M_FULFILLED, fiber_value(fi)});
  f->state = F_DONE;
  f->freed = true;
  mgroup_t *g = &M.g[f->group];
  g->holds--;
  m_maybe_end(g);
}

static int m_spawn(int gi, int pre, int aw, int target, int ret, int *alt);

/* The fiber's first run: what it does to its group, then its await. */
static void m_fiber_run(int fi) {
  mfiber_t *f = &M.f[fi];
  mgroup_t *g = &M.g[f->group];
  int own = -1;
  f->state = F_RUNNING;
  f->ran = true;
  f->rc = f->rc2 = 0;
  switch (f->pre) {
  case FP_SPAWN:
    if (!g->released && M.nf < MAXF)
      f->rc = m_spawn(f->group, FP_NONE, AW_NONE, -1, 0, &f->rc2);
    break;
  case FP_GROUP:
    if (M.ng < MAXG)
      own = M.g[m_new_group(0, false, false, f->group)].jp;
    break;
  case FP_CLOSE:
  case FP_CANCEL:
  case FP_NEXT:
    if (!g->released)
      f->rc = m_act(f->group,
                    f->pre == FP_CLOSE    ? A_CLOSE
                    : f->pre == FP_CANCEL ? A_CANCEL
                                          : A_NEXT,
                    0, -1, &f->rc2);
    break;
  case FP_ADD:
    if (!g->released) {
      own = M.np;
      f->rc = m_add_fresh(f->group, &f->rc2);
    }
    break;
  case FP_CUT: /* its own promise among those the cut cancels */
    f->rc = m_cancel(g->jp);
    break;
  }
  int t = f->aw == AW_TARGET ? f->target : f->aw == AW_OWN ? own : -1;
  if (t >= 0)
    P[t].awaited = true;
  if (t < 0) {
    m_fiber_finish(fi);
  } else if (f->cancelled) {
    f->await_rc = UV_ECANCELED;
    m_fiber_finish(fi);
  } else {
    f->state = F_SUSPENDED;
    f->waiting = t;
    P[t].observed = true;
    m_react(t, ~fi); /* a settled one: a yield */
  }
}

static void m_wake(int fi) {
  mfiber_t *f = &M.f[fi];
  if (f->state == F_QUEUED) {
    if (f->cancelled)
      m_fiber_finish(fi); /* never runs */
    else
      m_fiber_run(fi);
    return;
  }
  mout_t o = P[f->waiting].out;
  f->await_rc = f->cancelled ? UV_ECANCELED : o.st == M_FULFILLED ? 0 : o.value;
  m_fiber_finish(fi);
}

/* The group observes member k settled (a run-queue job). */
static void m_observe(int k) {
  mmember_t *m = &MEM[k];
  mgroup_t *g = &M.g[m->group];
  m->observed = true;
  g->nrunning--;
  if (!g->discard)
    DONE[m->group][g->dt++] = k;
  else
    m_cell_give(g, k); /* let go of at once */
  mout_t out = P[m->prom].out;
  /* Keeping no results, the group fails fast only while its join can
   * carry the failure (it is not reported then): not once the join was
   * cut, which it then rejects with, nor once it has settled. */
  if (g->ff && g->failure < 0 && out.st == M_REJECTED &&
      out.value != UV_ECANCELED &&
      (!g->discard || (pending(g->jp) && g->cut == 0))) {
    g->failure = m->prom;
    P[m->prom].observed = true;
    m_cancel_all(g);
  }
  m_pump(g);
  m_maybe_end(g);
}

/* The jobs one walk queued run in an order uvp.h leaves open: if two of
 * them do more than change states (queue jobs, make promises, run starts,
 * end groups), that order shows, and the model stops comparing. */
static void m_drain(void) {
  while (M.qh < M.qt && !M.unpinned) {
    int w = QW[M.qh], job = Q[M.qh++], before = M.effects;
    if (job >= 0)
      m_observe(job);
    else
      m_wake(~job);
    if (w != 0 && M.effects != before) {
      M.unpinned |= M.effect_walk == w;
      M.effect_walk = w;
    }
  }
}

/* ---- the system under test ---------------------------------------------- */

typedef struct sstart_s {
  int id, group, mode, act, lim;
  int calls, freed, rc;
} sstart_t;

typedef struct sfiber_s {
  int id, group, pre, aw, target, ret;
  int runs, freed, returned, rc, await_rc;
} sfiber_t;

typedef struct shook_s {
  int prom, group, act, lim, slot;
  int calls, rc;
} shook_t;

typedef struct sut_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  bool ctx_closed;
  uvp_group_t *g[MAXG];
  bool released[MAXG];
  bool discard[MAXG]; /* UVP_GROUP_DISCARD_SETTLED: next() is refused */
  int jp[MAXG], join_refs[MAXG];
  int ng, np, ns, nf, nh;
  uvp_promise_t *p[MAXP]; /* references the harness holds */
  bool grouped[MAXP];     /* a join or next() promise: its group settles it */
  sstart_t s[MAXS];
  sfiber_t f[MAXF];
  shook_t h[MAXH];
  int start_log[MAXS], nlog;
  /* Reports of unhandled rejections: of the harness's promises (found
   * through `by_addr`, made before uvp_ctx_close: until then it holds
   * them all, so only uvp's own can be reported), of fibers' promises and
   * of failed starts' (told by their codes), and the rest. */
  int reported[MAXP], reported_fiber[MAXF], reported_start[MAXS];
  int reported_other;
  struct addr_s {
    const uvp_promise_t *p;
    int i;
  } by_addr[MAXP];
  int naddr;
} sut_t;

static sut_t S;

static int addr_cmp(const void *a, const void *b) {
  const uvp_promise_t *x = ((const struct addr_s *)a)->p,
                      *y = ((const struct addr_s *)b)->p;
  return x < y ? -1 : x > y;
}

/* What is never reported (uvp.h): a cancellation, a teardown's
 * UVP_ECLOSED, a next()'s UV_EOF (no member rejects with it); the rest is
 * counted, for the end to compare. */
static void unhandled_not_expected(uvp_promise_t *p, void *arg) {
  unhandled_not_cancelled(p, arg);
  int code = uvp_promise_reason(p, NULL);
  if (code == UV_EOF)
    fail("a next()'s UV_EOF reported as unhandled", UV_EOF, 0);
  struct addr_s key = {p, 0}, *hit = NULL;
  if (S.naddr > 0)
    hit = bsearch(&key, S.by_addr, (size_t)S.naddr, sizeof(key), addr_cmp);
  if (hit != NULL)
    S.reported[hit->i]++;
  else if (code <= fiber_code(0) && code > fiber_code(MAXF))
    S.reported_fiber[fiber_code(0) - code]++;
  else if (code <= start_error(0) && code > start_error(MAXS))
    S.reported_start[start_error(0) - code]++;
  else
    S.reported_other++;
}

/* A new promise in the next slot; an injected failure leaves the slot
 * NULL (*out too), which nothing names. */
static int s_new(uvp_promise_t **out) {
  int i = S.np++;
  if (i == MAXP)
    abort();
  int rc = uvp_promise_new(S.ctx, &S.p[i]);
  if (rc != 0)
    check_rc("promise_new", rc, UV_ENOMEM);
  if (out != NULL)
    *out = S.p[i];
  return i;
}

/* A new group, or -1 if an injected failure refused it. */
static int s_new_group(size_t limit, int flags) {
  uvp_group_opts_t o = {limit, flags, 0};
  uvp_promise_t *j;
  int rc = uvp_group_new(S.ctx, &o, &S.g[S.ng]);
  if (rc != 0) {
    check_rc("group_new", rc, UV_ENOMEM);
    return -1;
  }
  int n = S.ng++;
  S.discard[n] = (flags & UVP_GROUP_DISCARD_SETTLED) != 0;
  if (uvp_group_join(S.g[n], &j) != 0)
    abort();
  S.jp[n] = S.np++;
  S.p[S.jp[n]] = j;
  S.grouped[S.jp[n]] = true;
  S.join_refs[n] = 1;
  return n;
}

static int s_add_fresh(int gi) {
  uvp_promise_t *p;
  (void)s_new(&p);
  return p != NULL ? uvp_group_add(S.g[gi], p) : UV_ENOMEM;
}

static int s_next(int gi, int slot) {
  int i = slot >= 0 ? slot : S.np++;
  S.grouped[i] = true;
  return uvp_group_next(S.g[gi], &S.p[i]);
}

static int start_cb(void *arg, uvp_promise_t **out);
static void start_free(void *arg) { ((sstart_t *)arg)->freed++; }

static int s_start(int gi, int mode, int act, int lim) {
  int z = S.ns++;
  S.s[z] = (sstart_t){z, gi, mode, act, lim, 0, 0, 0};
  /* refused, its arg_free has run (uvp.h, "Handing over") */
  return uvp_group_start(S.g[gi], start_cb, &S.s[z], start_free);
}

static int s_act(int gi, int act, int lim, int slot) {
  if (S.released[gi])
    return 0;
  switch (act) {
  case A_NEXT:
    return s_next(gi, slot);
  case A_CLOSE:
    return uvp_group_close(S.g[gi]);
  case A_CANCEL:
    return uvp_group_cancel(S.g[gi]);
  case A_ADD:
    return s_add_fresh(gi);
  case A_LIMIT:
    return uvp_group_set_limit(S.g[gi], (size_t)lim);
  case A_START:
    return S.ns < MAXS ? s_start(gi, ST_PENDING, A_NONE, 0) : 0;
  case A_RELEASE:
    S.released[gi] = true;
    uvp_group_release(S.g[gi]);
    return 0;
  }
  return 0;
}

static int start_cb(void *arg, uvp_promise_t **out) {
  sstart_t *z = arg;
  if (z->freed != 0)
    fail("start ran after its arg_free", z->id, z->freed);
  if (z->calls++ != 0)
    fail("start ran twice", z->id, z->calls);
  if (S.ctx_closed)
    fail("start ran after uvp_ctx_close", z->id, 0);
  S.start_log[S.nlog++] = z->id;
  z->rc = s_act(z->group, z->act, z->lim, -1);
  if (z->mode == ST_ERROR)
    return start_error(z->id);
  uvp_promise_t *p;
  int i = s_new(&p);
  if (p == NULL)
    return UV_ENOMEM; /* the member counts as rejected with it */
  if (z->mode == ST_FULFILLED &&
      uvp_promise_resolve(p, (void *)(intptr_t)value_of(i), NULL) != 0)
    abort();
  if (z->mode == ST_REJECTED &&
      uvp_promise_reject(p, code_of(i), NULL, NULL) != 0)
    abort();
  *out = uvp_promise_retain(p);
  return 0;
}

static void fiber_free(void *arg) {
  sfiber_t *f = arg;
  if (f->runs != f->returned)
    fail("fiber arg_free while it runs", f->id, f->runs);
  f->freed++;
}

static uvp_ret_t fiber_body(void *arg);

static int s_spawn(int gi, int pre, int aw, int target, int ret) {
  int z = S.nf++;
  S.f[z] = (sfiber_t){z, gi, pre, aw, target, ret, 0, 0, 0, 0, 0};
  uvp_fiber_opts_t o = {0, fiber_free, 0};
  /* refused, its arg_free has run (uvp.h, "Handing over") */
  return uvp_group_spawn(S.g[gi], fiber_body, &S.f[z], &o);
}

static uvp_ret_t fiber_body(void *arg) {
  sfiber_t *f = arg;
  int own = -1, gi = f->group;
  if (f->freed != 0)
    fail("fiber ran after its arg_free", f->id, f->freed);
  if (f->runs++ != 0)
    fail("fiber ran twice", f->id, f->runs);
  if (S.ctx_closed)
    fail("fiber ran after uvp_ctx_close", f->id, 0);
  f->rc = 0;
  switch (f->pre) {
  case FP_SPAWN:
    if (!S.released[gi] && S.nf < MAXF)
      f->rc = s_spawn(gi, FP_NONE, AW_NONE, -1, 0);
    break;
  case FP_GROUP: /* its parent is gi: the fiber runs in gi's scope */
    if (S.ng < MAXG && (own = s_new_group(0, 0)) >= 0)
      own = S.jp[own];
    break;
  case FP_CLOSE:
  case FP_CANCEL:
  case FP_NEXT:
    if (!S.released[gi])
      f->rc = s_act(gi,
                    f->pre == FP_CLOSE    ? A_CLOSE
                    : f->pre == FP_CANCEL ? A_CANCEL
                                          : A_NEXT,
                    0, -1);
    break;
  case FP_ADD:
    if (!S.released[gi]) {
      own = S.np;
      f->rc = s_add_fresh(gi);
    }
    break;
  case FP_CUT: /* the harness holds the join, released group or not */
    f->rc = uvp_promise_cancel(S.p[S.jp[gi]]);
    break;
  }
  int t = f->aw == AW_TARGET ? f->target : f->aw == AW_OWN ? own : -1;
  if (t >= 0)
    f->await_rc = uvp_await(S.p[t], NULL);
  f->returned++;
  return f->ret ? uvp_ret_reject(fiber_code(f->id), NULL, NULL)
                : uvp_ret_value((void *)(intptr_t)fiber_value(f->id), NULL);
}

/* A cancel hook: acts on its group, not at the teardown. */
static void hook_cb(uvp_promise_t *p, void *arg) {
  shook_t *h = arg;
  if (uvp_promise_reason(p, NULL) != UV_ECANCELED)
    return;
  h->calls++;
  h->rc = s_act(h->group, h->act, h->lim, h->slot);
}

static void check_rc2(const char *what, int rc, int want, int alt) {
  if (rc != alt)
    check_rc(what, rc, want);
}

/* What adding to a group (a promise, a start, a fiber) may return once
 * UV_ENOMEM is set apart (uvp.h). */
#define ADD_CODES ((const int[]){0, UVP_ECLOSED, UV_ECANCELED, 1})

/* rc is the model's `want` (or `alt`), or, once the model is lost, a code
 * uvp.h documents for the call (`ok`). */
static void check_rc2_or(const char *what, int rc, int want, int alt,
                         const int *ok) {
  if (fuzz_model_lost())
    check_documented(what, rc, ok);
  else
    check_rc2(what, rc, want, alt);
}

/* Nothing more is compared: a walk's order shows, or an allocation
 * failure lost the model. */
static bool m_off(void) { return M.unpinned || fuzz_model_lost(); }

/* What uvp.h pins to the call: which starts ran, whose arg_free ran, what
 * their calls and the hooks' returned. */
static void compare_starts(void) {
  if (m_off())
    return;
  if (S.nlog != M.nlog)
    fail("starts run", S.nlog, M.nlog);
  for (int i = 0; i < S.nlog; i++)
    if (S.start_log[i] != M.start_log[i])
      fail("start order", S.start_log[i], M.start_log[i]);
  if (S.ns != M.ns || S.nh != M.nh || S.np != M.np || S.ng != M.ng)
    fail("starts, hooks, promises or groups made", S.np, M.np);
  for (int z = 0; z < M.ns; z++) {
    if (S.s[z].freed != (int)M.s[z].freed)
      fail("arg_free runs", z, S.s[z].freed);
    check_rc2("start's call", S.s[z].rc, M.s[z].rc, M.s[z].rc2);
  }
  for (int h = 0; h < M.nh; h++) {
    if (S.h[h].calls != M.h[h].calls)
      fail("hook calls", h, S.h[h].calls);
    check_rc2("hook's call", S.h[h].rc, M.h[h].rc, M.h[h].rc2);
  }
}

static void compare_out(const char *what, uvp_promise_t *p, mout_t want) {
  check_outcome(what, p, (int)want.st, want.value);
}

/* Everything, once the run queue is drained. */
static void compare(void) {
  if (m_off())
    return;
  compare_starts();
  if (S.nf != M.nf)
    fail("fibers", S.nf, M.nf);
  for (int f = 0; f < M.nf; f++) {
    mfiber_t *m = &M.f[f];
    if (S.f[f].runs != (int)m->ran || S.f[f].freed != (int)m->freed)
      fail("fiber runs or arg_free runs", f, S.f[f].runs);
    if (m->ran)
      check_rc2("fiber's call", S.f[f].rc, m->rc, m->rc2);
    if (m->state == F_DONE && m->ran && m->aw != AW_NONE)
      check_rc("fiber's await", S.f[f].await_rc, m->await_rc);
  }
  for (int i = 0; i < M.np; i++)
    if (S.p[i] != NULL)
      compare_out(P[i].kind == K_NEXT   ? "next"
                  : P[i].kind == K_JOIN ? "join"
                                        : "promise",
                  S.p[i], P[i].out);
  for (int gi = 0; gi < M.ng; gi++) {
    mgroup_t *g = &M.g[gi];
    size_t want = (size_t)g->nrunning + (g->lh < g->lt ? 1 : 0);
    if (!g->released && uvp_group_size(S.g[gi]) != want)
      fail("size", (int)uvp_group_size(S.g[gi]), (int)want);
  }
}

/* Who was reported as an unhandled rejection, once uvp_ctx_close has
 * reported what was left: never a promise twice; and, while the model
 * holds, every rejection of a member of a group keeping no results that
 * nothing observed (UV_ECANCELED aside), and no other such member.  (Which
 * of the other promises are reported is the core's rule, not modelled.) */
static void compare_reports(bool off) {
  for (int i = 0; i < MAXP; i++)
    if (S.reported[i] > 1)
      fail("reported twice", i, S.reported[i]);
  for (int f = 0; f < MAXF; f++)
    if (S.reported_fiber[f] > 1)
      fail("fiber reported twice", f, S.reported_fiber[f]);
  for (int z = 0; z < MAXS; z++)
    if (S.reported_start[z] > 1)
      fail("failed start reported twice", z, S.reported_start[z]);
  if (off)
    return;
  /* The harness's promises, then uvp's own (P is not cleared between
   * inputs: only these ranges are this input's). */
  for (int k = 0; k < M.np + M.ni; k++) {
    int pi = k < M.np ? k : MAXP + (k - M.np);
    const mprom_t *q = &P[pi];
    if (!q->discarded)
      continue;
    int want =
        q->out.st == M_REJECTED && q->out.value != UV_ECANCELED && !q->observed;
    int got = pi < MAXP            ? S.reported[pi]
              : q->kind == K_FIBER ? S.reported_fiber[q->owner]
                                   : S.reported_start[q->owner];
    if (got != want)
      fail("reports of a discarded member", pi, got);
  }
}

/* A call the model predicts met an injected failure and returned
 * UV_ENOMEM: it changed nothing, and the promise slot `slot` it would have
 * filled (-1: none) is left for nothing (NULL) or holds a plain pending
 * promise that joined no group. */
static bool refused(int rc, int slot) {
  if (!fuzz_alloc_refused(rc))
    return false;
  if (slot >= 0 && !M.lost)
    (void)new_prom(S.p[slot] != NULL ? K_PLAIN : K_SLOT, -1,
                   (mout_t){M_PENDING, 0});
  return true;
}

/* One turn: the run queue drained, then everything compared. */
static void turn(void) {
  if (!fuzz_turn(&S.loop, S.ctx))
    return;
  m_drain();
  compare();
}

/* Groups and promises the harness may name: the model's, or once it is
 * lost the harness's own (they were the same until then). */
static int n_groups(void) { return M.lost ? S.ng : M.ng; }
static int n_proms(void) { return M.lost ? S.np : M.np; }

/* A group the harness may still call, or -1. */
static int pick_group(uint8_t b) {
  if (n_groups() == 0)
    return -1;
  int gi = b % n_groups();
  return (M.lost ? S.released[gi] : M.g[gi].released) ? -1 : gi;
}

/* The group whose join slot i holds, or -1. */
static int s_join_of(int i) {
  for (int gi = 0; gi < S.ng; gi++)
    if (S.jp[gi] == i)
      return gi;
  return -1;
}

/* Promise i, settled by the harness: resolve, reject or cancel. */
static void op_settle(int op, int i) {
  /* Only their producer settles joins and next() promises. */
  if (op < 2 &&
      (M.lost ? S.grouped[i] : P[i].kind != K_PLAIN && P[i].kind != K_HOOKED))
    return;
  uvp_promise_t *p = S.p[i];
  int rc = op == 0 ? uvp_promise_resolve(p, (void *)(intptr_t)value_of(i), NULL)
           : op == 1 ? uvp_promise_reject(p, code_of(i), NULL, NULL)
                     : uvp_promise_cancel(p);
  if (M.lost) {
    check_documented(op == 2 ? "cancel" : "settle", rc, FUZZ_SETTLE_CODES);
    return;
  }
  if (op == 2) {
    check_rc("cancel", rc, m_cancel(i));
    return;
  }
  check_rc("settle", rc, pending(i) ? 0 : UVP_ESETTLED);
  if (pending(i))
    m_settle(i, op == 0 ? (mout_t){M_FULFILLED, value_of(i)}
                        : (mout_t){M_REJECTED, code_of(i)});
}

static int m_spawn(int gi, int pre, int aw, int target, int ret, int *alt) {
  int fi = M.nf++;
  M.f[fi] = (mfiber_t){gi, pre,   aw,    target, ret, F_LAZY, -1,
                       -1, false, false, false,  0,   0,      0};
  int rc = m_add_lazy(gi, ~fi, alt);
  if (rc != 0)
    M.f[fi].freed = true;
  return rc;
}

/* Room for what this op and the callbacks it leads to make. */
static bool room(int promises) {
  if (M.lost)
    return S.np + promises <= MAXP - SPARE;
  return M.np + promises <= MAXP - SPARE && M.nm + promises <= MAXMEM - SPARE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&M, 0, sizeof(M));
  memset(&S, 0, sizeof(S));
  fuzz_count_allocations(&data, &size);
  if (uv_loop_init(&S.loop) != 0 || uvp_ctx_new(&S.loop, &S.ctx) != 0)
    abort();
  uvp_ctx_set_budget(S.ctx, 1u << 30);
  uvp_ctx_set_unhandled_cb(S.ctx, unhandled_not_expected, NULL);
  fuzz_alloc_arm();

  size_t i = 0;
#define NEXT() (i < size ? data[i++] : 0)
  /* An allocation failure that loses the model (fuzz-helpers.h) does not
   * end the input: its operations go on, picked from S, and each call is
   * checked against what uvp.h documents for it. */
  while (i < size && !M.unpinned) {
    M.lost = fuzz_model_lost();
    uint8_t op = NEXT() % 20;
    uint8_t b = NEXT();
    int gi = pick_group(b);
    mgroup_t *g = gi >= 0 ? &M.g[gi] : NULL;
    int rc, want, alt = 0;
    fuzz_alloc_mark();
    switch (op) {
    case 0: /* a new group */
      if (n_groups() == MAXG || !room(1))
        break;
      if (s_new_group((size_t)(b % 4),
                      ((b & 4) ? UVP_GROUP_FAIL_FAST : 0) |
                          ((b & 8) ? UVP_GROUP_DISCARD_SETTLED : 0)) < 0 &&
          refused(UV_ENOMEM, -1))
        break;
      if (!M.lost)
        (void)m_new_group((size_t)(b % 4), (b & 4) != 0, (b & 8) != 0, -1);
      break;
    case 1: /* add a fresh pending promise */
      if (g == NULL || !room(1))
        break;
      rc = s_add_fresh(gi);
      if (refused(rc, S.np - 1))
        break;
      want = M.lost ? 0 : m_add_fresh(gi, &alt);
      check_rc2_or("add", rc, want, alt, ADD_CODES);
      break;
    case 2: { /* a start callback: what it does to its group, its member */
      uint8_t mode = NEXT();
      if (g == NULL || (M.lost ? S.ns : M.ns) == MAXS || !room(2))
        break;
      /* Mostly pending members: the others settle before anyone asks. */
      int kind = mode % 8 < 4 ? mode % 8 : ST_PENDING;
      int act = (mode >> 3) % 8, lim = mode >> 6;
      rc = s_start(gi, kind, act, lim);
      if (M.lost) { /* refused or not, s_start kept the count of arg_free */
        if (!refused(rc, -1))
          check_documented("start", rc, ADD_CODES);
        break;
      }
      int z = M.ns++;
      M.s[z] = (mstart_t){gi, kind, act, lim, false, false, 0, 0};
      if (refused(rc, -1)) {
        M.s[z].freed = true; /* never added: handed over, freed */
        break;
      }
      want = m_add_lazy(gi, z, &alt);
      if (want != 0)
        M.s[z].freed = true;
      check_rc2("start", rc, want, alt);
      break;
    }
    case 3:   /* resolve a promise */
    case 4:   /* reject one */
    case 5: { /* cancel one: a join, a next() promise too */
      if (n_proms() > 0 && S.p[b % n_proms()] != NULL)
        op_settle(op - 3, b % n_proms());
      break;
    }
    case 6: /* next() */
      if (g == NULL || !room(1))
        break;
      rc = s_next(gi, -1);
      if (refused(rc, S.np - 1))
        break;
      check_rc("next", rc,
               M.lost ? (S.discard[gi] ? UV_EINVAL : 0) : m_next(gi, -1));
      break;
    case 7: { /* set_limit */
      size_t limit = (size_t)(NEXT() % 4);
      if (g == NULL)
        break;
      check_rc("set_limit", uvp_group_set_limit(S.g[gi], limit), 0);
      if (M.lost)
        break;
      g->limit = limit;
      m_pump(g);
      m_maybe_end(g);
      break;
    }
    case 8: /* close */
      if (g == NULL)
        break;
      check_rc("close", uvp_group_close(S.g[gi]), 0);
      if (M.lost)
        break;
      g->closed = true;
      m_maybe_end(g);
      break;
    case 9: /* cancel */
      if (g == NULL)
        break;
      check_rc("cancel", uvp_group_cancel(S.g[gi]), 0);
      if (M.lost)
        break;
      m_cancel_all(g);
      m_maybe_end(g);
      break;
    case 10: { /* join: the same promise every time */
      uvp_promise_t *j = NULL;
      if (g == NULL)
        break;
      check_rc("join", uvp_group_join(S.g[gi], &j), 0);
      if (j != S.p[S.jp[gi]])
        fail("join is another promise", gi, 0);
      S.join_refs[gi]++;
      break;
    }
    case 11: /* release: no group call after this */
      if (g == NULL)
        break;
      S.released[gi] = true;
      uvp_group_release(S.g[gi]);
      if (!M.lost)
        m_release(g);
      break;
    case 12: /* one loop turn */
      turn();
      break;
    case 13: { /* add a promise the harness holds: a second group's member,
                  a join of an earlier group (no cycles) */
      int t = n_proms() > 0 ? NEXT() % n_proms() : -1;
      if (M.lost) { /* any promise there is, but still no cycle */
        if (g == NULL || t < 0 || S.p[t] == NULL || s_join_of(t) >= gi ||
            !room(1))
          break;
        rc = uvp_group_add(S.g[gi], S.p[t]);
        if (!refused(rc, -1))
          check_documented("add a promise", rc, ADD_CODES);
        break;
      }
      /* Not a next() promise, nor one a fiber awaits: see "Left out". */
      if (g == NULL || t < 0 || P[t].kind == K_HOOKED || P[t].kind == K_SLOT ||
          P[t].awaited || P[t].kind == K_NEXT || P[t].nr >= SHARE ||
          (P[t].kind == K_JOIN && P[t].owner >= gi) || !room(1))
        break;
      rc = uvp_group_add(S.g[gi], S.p[t]);
      if (refused(rc, -1))
        break;
      want = add_rc(g, &alt);
      check_rc2("add a promise", rc, want, alt);
      if (want == 0)
        m_member(gi, t);
      break;
    }
    case 14: { /* a fiber member and its program */
      uint8_t pre = NEXT(), aw = NEXT(), t = NEXT();
      if (g == NULL || (M.lost ? S.nf : M.nf) == MAXF || !room(8))
        break;
      int target = n_proms() > 0 ? t % n_proms() : -1;
      /* A join or a promise of the harness's, no member while pending,
       * and none after (see "Left out"); once the model is lost, any. */
      bool ok =
          target >= 0 &&
          (M.lost ? S.p[target] != NULL
                  : (P[target].kind == K_PLAIN || P[target].kind == K_JOIN) &&
                        (!pending(target) || !P[target].member));
      int awk = aw % 3 == AW_TARGET && !ok ? AW_NONE : aw % 3;
      if (awk == AW_TARGET && !M.lost)
        P[target].awaited = true;
      rc = s_spawn(gi, pre % 8, awk, target, (aw & 4) != 0);
      if (M.lost) { /* refused or not, s_spawn kept the count of arg_free */
        if (!refused(rc, -1))
          check_documented("spawn", rc, ADD_CODES);
        break;
      }
      if (refused(rc, -1)) {
        int fi = M.nf++; /* never added: handed over, freed */
        M.f[fi] = (mfiber_t){.group = gi, .state = F_LAZY, .freed = true};
        break;
      }
      check_rc2("spawn", rc,
                m_spawn(gi, pre % 8, awk, target, (aw & 4) != 0, &alt), alt);
      break;
    }
    case 15: { /* a fresh promise member whose cancel hook acts on g */
      /* Only what commutes: a cancel's walk reaches the hooks in an order
       * uvp.h leaves open.  So no release (it would skip the hooks after
       * it), no add or start (ECANCELED in a walk; promises and starts
       * numbered in walk order), and one next() per group, into a slot
       * of its own (two would be served in walk order). */
      static const int acts[] = {A_NONE, A_NEXT, A_CLOSE, A_CANCEL, A_LIMIT};
      uint8_t a = NEXT();
      if (g == NULL || (M.lost ? S.nh : M.nh) == MAXH || !room(2))
        break;
      int act = acts[a % 5];
      if (act == A_NEXT && !M.lost && g->next_hook)
        act = A_NONE;
      uvp_promise_t *p;
      int pi = s_new(&p);
      if (p == NULL) { /* refused: the slot is left for nothing */
        (void)refused(UV_ENOMEM, pi);
        break;
      }
      int h = S.nh++;
      S.h[h] = (shook_t){pi, gi, act, a >> 6, -1, 0, 0};
      if (act == A_NEXT)
        S.h[h].slot = S.np++;
      if (uvp_promise_set_cancel(p, hook_cb, &S.h[h]) != 0)
        abort();
      rc = uvp_group_add(S.g[gi], p);
      if (M.lost) { /* not a member: a plain promise */
        if (!refused(rc, -1))
          check_documented("add with a hook", rc, ADD_CODES);
        if (rc != 0 && uvp_promise_set_cancel(p, NULL, NULL) != 0)
          abort();
        break;
      }
      int mp = new_prom(K_PLAIN, -1, (mout_t){M_PENDING, 0});
      M.h[M.nh++] = (mhook_t){mp, gi, act, a >> 6, -1, 0, 0, 0};
      if (act == A_NEXT)
        M.h[h].slot = new_prom(K_SLOT, -1, (mout_t){M_PENDING, 0});
      /* Refused, it is no member: as below when the group says no. */
      bool no = refused(rc, -1);
      want = no ? rc : add_rc(g, &alt);
      if (!no)
        check_rc2("add with a hook", rc, want, alt);
      if (want == 0) {
        P[mp].kind = K_HOOKED;
        P[mp].owner = h;
        g->next_hook |= act == A_NEXT;
        m_member(gi, mp);
      } else if (uvp_promise_set_cancel(p, NULL, NULL) != 0) {
        abort(); /* not a member: a plain promise */
      }
      break;
    }
    case 16: { /* many fresh members at once */
      int k = 1 + NEXT() * 3 / 2;
      if (g == NULL || !room(k))
        break;
      for (int n = 0; n < k; n++) {
        rc = s_add_fresh(gi);
        if (refused(rc, S.np - 1))
          continue;
        want = M.lost ? 0 : m_add_fresh(gi, &alt);
        check_rc2_or("bulk add", rc, want, alt, ADD_CODES);
      }
      break;
    }
    case 17: { /* settle every stride-th promise from one on */
      uint8_t c = NEXT();
      int stride = 1 + c % 4, how = (c >> 2) % 3;
      for (int n = n_proms() > 0 ? (int)(b * (unsigned)n_proms() / 256) : 0;
           n < n_proms(); n += stride)
        if (S.p[n] != NULL &&
            (M.lost ? !S.grouped[n]
                    : P[n].kind != K_NEXT && P[n].kind != K_JOIN))
          op_settle(how, n);
      break;
    }
    case 18: { /* many next() calls */
      int k = 1 + NEXT() * 3 / 2;
      if (g == NULL || !room(k))
        break;
      for (int n = 0; n < k; n++) {
        rc = s_next(gi, -1);
        if (refused(rc, S.np - 1))
          continue;
        check_rc("bulk next", rc,
                 M.lost ? (S.discard[gi] ? UV_EINVAL : 0) : m_next(gi, -1));
      }
      break;
    }
    default: /* a promise of no group's (for fibers to await, to share) */
      if (!room(1))
        break;
      if (refused(S.p[s_new(NULL)] != NULL ? 0 : UV_ENOMEM, S.np - 1))
        break;
      if (!M.lost)
        (void)new_prom(K_PLAIN, -1, (mout_t){M_PENDING, 0});
      break;
    }
    fuzz_alloc_settle(); /* a failure no call reported */
    compare_starts();
  }

  /* Teardown: close what is open, let it settle, compare. */
  bool off = m_off();
  fuzz_alloc_mark();
  for (int gi = 0; gi < S.ng; gi++)
    if (!S.released[gi]) {
      check_rc("close", uvp_group_close(S.g[gi]), 0);
      if (!off) {
        M.g[gi].closed = true;
        m_maybe_end(&M.g[gi]);
      }
    }
  fuzz_alloc_settle();
  turn();

  /* Then the context: what is pending becomes UVP_ECLOSED, waiting starts
   * and fibers never run but let go of their arg, suspended fibers return;
   * the harness's rejected promises nothing observed are reported. */
  S.naddr = 0;
  for (int n = 0; n < S.np; n++)
    if (S.p[n] != NULL)
      S.by_addr[S.naddr++] = (struct addr_s){S.p[n], n};
  qsort(S.by_addr, (size_t)S.naddr, sizeof(S.by_addr[0]), addr_cmp);
  fuzz_alloc_mark();
  if (uvp_ctx_close(S.ctx) != 0)
    abort();
  fuzz_alloc_settle();
  off = m_off();
  compare_reports(off);
  S.ctx_closed = true;
  for (int n = 0; n < S.np; n++) {
    if (S.p[n] == NULL)
      continue;
    if (!off && pending(n) && uvp_promise_reason(S.p[n], NULL) != UVP_ECLOSED)
      fail("teardown: pending", n, uvp_promise_reason(S.p[n], NULL));
    uvp_promise_release(S.p[n]);
  }
  for (int gi = 0; gi < S.ng; gi++) {
    while (--S.join_refs[gi] > 0)
      uvp_promise_release(S.p[S.jp[gi]]);
    if (!S.released[gi])
      uvp_group_release(S.g[gi]);
  }
  uv_run(&S.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&S.loop) != 0)
    fail("uv_loop_close", 1, 0);
  for (int z = 0; z < S.ns; z++)
    if (S.s[z].freed != 1)
      fail("arg_free runs at the end", z, S.s[z].freed);
  for (int f = 0; f < S.nf; f++)
    if (S.f[f].freed != 1 || S.f[f].runs != S.f[f].returned)
      fail("fiber arg_free runs at the end", f, S.f[f].freed);
  fuzz_check_all_freed();
  return 0;
}

/* libFuzzer harness for task groups: the input decodes into a sequence of
 * operations on up to MAXG groups — create (limit 0..3, with or without
 * UVP_GROUP_FAIL_FAST), add a fresh pending promise, add an earlier
 * group's join (nesting), start a member through a start callback,
 * resolve / reject / cancel a member, next(), cancel a next() promise,
 * set_limit, close, cancel, join, cancel the join, release, one loop turn
 * — which run both on uvp and on a small reference model of uvp.h's rules
 * written here.  After every loop turn each next() promise, each join,
 * each member and each group's size must agree with the model; every
 * call's return code, and which start callbacks have run (in which order)
 * and had their arg_free run, are checked after every operation (uvp.h
 * pins those to the call).  At the end every group still open is closed,
 * the loop turns and all is compared again; then uvp_ctx_close must leave
 * every promise the model still has pending rejected with UVP_ECLOSED,
 * and uv_loop_close must return 0, with every allocation of uvp's freed
 * (fuzz-helpers.h counts them).  Every start callback runs at most
 * once, never after its arg_free nor after uvp_ctx_close; every arg_free
 * runs exactly once by the end; no cancellation and no teardown's
 * UVP_ECLOSED is reported as unhandled.  ASan/UBSan/LSan catch the rest.
 *
 * The model is deliberately naive: members, next() promises and starts in
 * plain arrays, per group FIFO arrays of waiting starts, settled members
 * and waiting next() calls, and one FIFO of settled members the groups
 * have yet to observe, standing for uvp's run queue: a member's
 * settlement is observed when a loop turn drains it, in settle order
 * (harness settles, a cancel's, a start callback's already settled
 * promise or error, a join settling, in the order they happened).  That
 * order is the completion order next() serves.  Members fulfil with their
 * index + 1 and reject with -(20000 + index), so a next() promise tells
 * which member it settled like.
 *
 * Left out on purpose: fibers (uvp_group_spawn), groups made by members
 * (parents), what members start in libuv (scopes, holds), adding one
 * promise to two groups, start callbacks that call back into the group,
 * allocation failure, threads.  Not pinned by uvp.h, so not compared: the
 * state of promises and the group's size between loop turns (the model
 * only says where things stand once the run queue is drained; one
 * UV_RUN_NOWAIT turn drains it, the budget being huge), the order in
 * which a cancel reaches the running members (their outcomes,
 * UV_ECANCELED, are alike), and which of UVP_ECLOSED and UV_ECANCELED
 * adding to a group both closed and cancelled returns.  uvp's choice the
 * model copies: a FAIL_FAST failure cancels the group (adding afterwards
 * returns UV_ECANCELED), as uvp_group_cancel does.
 *
 * Build: meson setup build-fuzz -Dfuzz=true (clang); run:
 *   build-fuzz/test/fuzz-group -max_total_time=60 test/fuzz-group-corpus */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-helpers.h"

#define MAXG 3
#define MAXADD 16            /* promise members */
#define MAXS 16              /* start callbacks */
#define MAXM (MAXADD + MAXS) /* members of either kind */
#define MAXN 16              /* next() promises */

/* Start callback behaviours: the member it creates. */
enum { ST_PENDING, ST_FULFILLED, ST_REJECTED, ST_ERROR, ST_KINDS };

static int value_of(int k) { return k + 1; }
static int code_of(int k) { return -(20000 + k); }

/* ---- the model ----------------------------------------------------------- */

typedef enum { M_PENDING, M_FULFILLED, M_REJECTED } mstate_t;

typedef struct mout_s {
  mstate_t st;
  int value; /* fulfilled value, or rejection code */
} mout_t;

typedef struct mgroup_s {
  bool used, closed, cancelled, released, ff;
  bool join_live; /* the group still settles its join */
  int as_member;  /* its join is this member of a later group, or -1 */
  size_t limit;
  int nrunning;
  int failure; /* FAIL_FAST: the member that failed first, or -1 */
  mout_t join;
  int lazy[MAXS], lh, lt;   /* starts waiting for room */
  int done[MAXM], dh, dt;   /* settled members no next() took */
  int waiter[MAXN], wh, wt; /* next() promises waiting */
} mgroup_t;

typedef struct mmember_s {
  int group;
  int join_of;   /* the member is that group's join, or -1 */
  bool observed; /* the group saw it settle: no longer running */
  mout_t out;
} mmember_t;

typedef struct mstart_s {
  int group;
  int mode;
  bool started, freed;
} mstart_t;

typedef struct model_s {
  mgroup_t g[MAXG];
  int ng;
  mmember_t m[MAXM];
  int nm, nadd;
  mout_t n[MAXN];
  int nn;
  mstart_t s[MAXS];
  int ns;
  int start_log[MAXS], nlog;
  int q[4 * MAXM], qh, qt; /* settled members awaiting observation */
} model_t;

static model_t M;

static void m_enqueue(int k) { M.q[M.qt++] = k; }

static void m_settle(int k, mstate_t st, int value) {
  M.m[k].out.st = st;
  M.m[k].out.value = value;
  m_enqueue(k);
}

/* The join settles; so does the member it is of another group. */
static void m_join_settle(mgroup_t *g, mout_t out) {
  g->join = out;
  g->join_live = false;
  if (g->as_member >= 0) {
    M.m[g->as_member].out = out;
    m_enqueue(g->as_member);
  }
}

static bool m_ended(const mgroup_t *g) { return g->closed || g->cancelled; }

static bool m_exhausted(const mgroup_t *g) {
  return m_ended(g) && g->nrunning == 0 && g->lh == g->lt && g->dh == g->dt;
}

/* Settled members to waiting next() calls in completion order; UV_EOF to
 * the rest once nothing more can come. */
static void m_serve(mgroup_t *g) {
  while (g->wh < g->wt && g->dh < g->dt) {
    int w = g->waiter[g->wh++];
    if (M.n[w].st != M_PENDING)
      continue; /* cancelled: stopped waiting */
    M.n[w] = M.m[g->done[g->dh++]].out;
  }
  if (g->released && g->wh == g->wt)
    g->dh = g->dt; /* nobody can ask for them any more */
  if (m_exhausted(g))
    for (; g->wh < g->wt; g->wh++)
      if (M.n[g->waiter[g->wh]].st == M_PENDING)
        M.n[g->waiter[g->wh]] = (mout_t){M_REJECTED, UV_EOF};
}

static void m_maybe_end(mgroup_t *g) {
  m_serve(g);
  if (!m_ended(g) || g->nrunning != 0 || g->lh != g->lt || !g->join_live)
    return;
  g->join_live = false;
  if (g->join.st == M_PENDING)
    m_join_settle(g, g->failure >= 0 ? M.m[g->failure].out
                                     : (mout_t){M_FULFILLED, 0});
}

/* A new member of g, running; settled ones are queued for observation. */
static int m_member(int gi, mout_t out) {
  int k = M.nm++;
  M.m[k] = (mmember_t){gi, -1, false, out};
  M.g[gi].nrunning++;
  if (out.st != M_PENDING)
    m_enqueue(k);
  return k;
}

/* Start waiting members while there is room. */
static void m_pump(mgroup_t *g) {
  int gi = (int)(g - M.g);
  while (g->lh < g->lt && !g->cancelled &&
         (g->limit == 0 || (size_t)g->nrunning < g->limit)) {
    mstart_t *z = &M.s[g->lazy[g->lh++]];
    int k = M.nm;
    z->started = true;
    z->freed = true;
    M.start_log[M.nlog++] = (int)(z - M.s);
    mout_t out = {M_PENDING, 0};
    if (z->mode == ST_FULFILLED)
      out = (mout_t){M_FULFILLED, value_of(k)};
    else if (z->mode != ST_PENDING)
      out = (mout_t){M_REJECTED, code_of(k)};
    m_member(gi, out);
  }
}

static void m_cancel_all(mgroup_t *g);

/* Cancelling the join cancels the group. */
static void m_join_cancel(mgroup_t *g) {
  m_join_settle(g, (mout_t){M_REJECTED, UV_ECANCELED});
  m_cancel_all(g);
  g->closed = true;
  m_maybe_end(g);
}

/* Cancel the running members (a join: its group too), drop the waiting
 * ones. */
static void m_cancel_all(mgroup_t *g) {
  int gi = (int)(g - M.g);
  g->cancelled = true;
  for (; g->lh < g->lt; g->lh++)
    M.s[g->lazy[g->lh]].freed = true;
  for (int k = M.nm - 1; k >= 0; k--)
    if (M.m[k].group == gi && !M.m[k].observed && M.m[k].out.st == M_PENDING) {
      if (M.m[k].join_of >= 0)
        m_join_cancel(&M.g[M.m[k].join_of]);
      else
        m_settle(k, M_REJECTED, UV_ECANCELED);
    }
}

/* The group observes member k settled (a run-queue job). */
static void m_observe(int k) {
  mmember_t *m = &M.m[k];
  mgroup_t *g = &M.g[m->group];
  m->observed = true;
  g->nrunning--;
  g->done[g->dt++] = k;
  if (g->ff && g->failure < 0 && m->out.st == M_REJECTED &&
      m->out.value != UV_ECANCELED) {
    g->failure = k;
    m_cancel_all(g);
  }
  m_pump(g);
  m_maybe_end(g);
}

static void m_drain(void) {
  while (M.qh < M.qt)
    m_observe(M.q[M.qh++]);
}

/* ---- the system under test ---------------------------------------------- */

typedef struct sstart_s {
  int id;
  int mode;
  int calls, freed;
} sstart_t;

typedef struct sut_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  bool ctx_closed;
  uvp_group_t *g[MAXG];
  uvp_promise_t *join[MAXG];
  int join_refs[MAXG];
  uvp_promise_t *m[MAXM]; /* NULL: the member is uvp's (a start's error) */
  int nm;
  uvp_promise_t *n[MAXN];
  sstart_t s[MAXS];
  int start_log[MAXS], nlog;
} sut_t;

static sut_t S;

static void start_free(void *arg) { ((sstart_t *)arg)->freed++; }

static int start_cb(void *arg, uvp_promise_t **out) {
  sstart_t *z = arg;
  if (z->freed != 0)
    fail("start ran after its arg_free", z->id, z->freed);
  if (z->calls++ != 0)
    fail("start ran twice", z->id, z->calls);
  if (S.ctx_closed)
    fail("start ran after uvp_ctx_close", z->id, 0);
  S.start_log[S.nlog++] = z->id;
  int k = S.nm++;
  if (z->mode == ST_ERROR)
    return code_of(k);
  uvp_promise_t *p;
  if (uvp_promise_new(S.ctx, &p) != 0)
    abort();
  if (z->mode == ST_FULFILLED &&
      uvp_promise_resolve(p, (void *)(intptr_t)value_of(k), NULL) != 0)
    abort();
  if (z->mode == ST_REJECTED &&
      uvp_promise_reject(p, code_of(k), NULL, NULL) != 0)
    abort();
  S.m[k] = uvp_promise_retain(p);
  *out = p;
  return 0;
}

static void compare_out(const char *what, uvp_promise_t *p, mout_t want) {
  check_outcome(what, p, (int)want.st, want.value);
}

/* What uvp.h pins to the call: which starts ran, whose arg_free ran. */
static void compare_starts(void) {
  if (S.nlog != M.nlog)
    fail("starts run", S.nlog, M.nlog);
  for (int i = 0; i < S.nlog; i++)
    if (S.start_log[i] != M.start_log[i])
      fail("start order", S.start_log[i], M.start_log[i]);
  for (int z = 0; z < M.ns; z++)
    if (S.s[z].freed != (int)M.s[z].freed)
      fail("arg_free runs", z, S.s[z].freed);
}

/* Everything, once the run queue is drained. */
static void compare(void) {
  compare_starts();
  if (S.nm != M.nm)
    fail("members", S.nm, M.nm);
  for (int k = 0; k < M.nm; k++)
    if (S.m[k] != NULL)
      compare_out("member", S.m[k], M.m[k].out);
  for (int w = 0; w < M.nn; w++)
    compare_out("next", S.n[w], M.n[w]);
  for (int gi = 0; gi < M.ng; gi++) {
    mgroup_t *g = &M.g[gi];
    compare_out("join", S.join[gi], g->join);
    size_t want = (size_t)g->nrunning + (g->lh < g->lt ? 1 : 0);
    if (!g->released && uvp_group_size(S.g[gi]) != want)
      fail("size", (int)uvp_group_size(S.g[gi]), (int)want);
  }
}

/* A group the harness may still call, or -1. */
static int pick_group(uint8_t b) {
  if (M.ng == 0)
    return -1;
  int gi = b % M.ng;
  return M.g[gi].released ? -1 : gi;
}

/* Why a member cannot be added now (0: it can). */
static int add_rc(const mgroup_t *g) {
  return g->closed ? UVP_ECLOSED : g->cancelled ? UV_ECANCELED : 0;
}

static void check_add_rc(const char *what, const mgroup_t *g, int rc) {
  int want = add_rc(g);
  /* Closed and cancelled: uvp.h does not say which code wins. */
  if (g->closed && g->cancelled && rc == UV_ECANCELED)
    want = rc;
  check_rc(what, rc, want);
}

static void op_resolve(int op, int k) {
  uvp_promise_t *p = S.m[k];
  bool pending = M.m[k].out.st == M_PENDING;
  int rc = op == 0 ? uvp_promise_resolve(p, (void *)(intptr_t)value_of(k), NULL)
           : op == 1 ? uvp_promise_reject(p, code_of(k), NULL, NULL)
                     : uvp_promise_cancel(p);
  check_rc("member settle", rc, pending ? 0 : UVP_ESETTLED);
  if (pending)
    m_settle(k, op == 0 ? M_FULFILLED : M_REJECTED,
             op == 0   ? value_of(k)
             : op == 1 ? code_of(k)
                       : UV_ECANCELED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&M, 0, sizeof(M));
  memset(&S, 0, sizeof(S));
  fuzz_count_allocations();
  if (uv_loop_init(&S.loop) != 0 || uvp_ctx_new(&S.loop, &S.ctx) != 0)
    abort();
  uvp_ctx_set_budget(S.ctx, 1u << 30);
  uvp_ctx_set_unhandled_cb(S.ctx, unhandled_not_cancelled, NULL);

  size_t i = 0;
#define NEXT() (i < size ? data[i++] : 0)
  while (i < size) {
    uint8_t op = NEXT() % 16;
    uint8_t b = NEXT();
    int gi = pick_group(b);
    mgroup_t *g = gi >= 0 ? &M.g[gi] : NULL;
    switch (op) {
    case 0: { /* a new group */
      if (M.ng == MAXG)
        break;
      uvp_group_opts_t o = {(size_t)(b % 4), (b & 4) ? UVP_GROUP_FAIL_FAST : 0};
      int n = M.ng++;
      if (uvp_group_new(S.ctx, &o, &S.g[n]) != 0 ||
          uvp_group_join(S.g[n], &S.join[n]) != 0)
        abort();
      S.join_refs[n] = 1;
      M.g[n] = (mgroup_t){.used = true,
                          .ff = (b & 4) != 0,
                          .join_live = true,
                          .as_member = -1,
                          .limit = o.limit,
                          .failure = -1};
      break;
    }
    case 1: { /* add a fresh pending promise */
      if (g == NULL || M.nadd == MAXADD)
        break;
      uvp_promise_t *p;
      if (uvp_promise_new(S.ctx, &p) != 0)
        abort();
      M.nadd++;
      int rc = uvp_group_add(S.g[gi], p);
      check_add_rc("add", g, rc);
      if (rc != 0) {
        uvp_promise_release(p);
        break;
      }
      S.m[S.nm++] = p;
      m_member(gi, (mout_t){M_PENDING, 0});
      break;
    }
    case 2: { /* a start callback */
      uint8_t mode = NEXT();
      if (g == NULL || M.ns == MAXS)
        break;
      int z = M.ns++;
      /* Mostly pending members: the others settle before anyone asks. */
      M.s[z] = (mstart_t){gi, mode % 8 < ST_KINDS ? mode % 8 : ST_PENDING,
                          false, false};
      S.s[z] = (sstart_t){z, M.s[z].mode, 0, 0};
      int rc = uvp_group_start(S.g[gi], start_cb, &S.s[z], start_free);
      check_add_rc("start", g, rc);
      if (rc != 0) {
        M.s[z].freed = true; /* arg still ours: stands for freed */
        S.s[z].freed++;
        break;
      }
      g->lazy[g->lt++] = z;
      m_pump(g);
      m_maybe_end(g);
      break;
    }
    case 3:   /* resolve a member */
    case 4:   /* reject one */
    case 5: { /* cancel one */
      int k = M.nm > 0 ? b % M.nm : -1;
      if (k >= 0 && S.m[k] != NULL)
        op_resolve(op - 3, k);
      break;
    }
    case 6: { /* next() */
      if (g == NULL || M.nn == MAXN)
        break;
      int w = M.nn++;
      check_rc("next", uvp_group_next(S.g[gi], &S.n[w]), 0);
      M.n[w] = (mout_t){M_PENDING, 0};
      g->waiter[g->wt++] = w;
      m_serve(g);
      break;
    }
    case 7: { /* set_limit */
      size_t limit = (size_t)(NEXT() % 4);
      if (g == NULL)
        break;
      check_rc("set_limit", uvp_group_set_limit(S.g[gi], limit), 0);
      g->limit = limit;
      m_pump(g);
      m_maybe_end(g);
      break;
    }
    case 8: /* close */
      if (g == NULL)
        break;
      check_rc("close", uvp_group_close(S.g[gi]), 0);
      g->closed = true;
      m_maybe_end(g);
      break;
    case 9: /* cancel */
      if (g == NULL)
        break;
      check_rc("cancel", uvp_group_cancel(S.g[gi]), 0);
      m_cancel_all(g);
      m_maybe_end(g);
      break;
    case 10: { /* join: the same promise every time */
      uvp_promise_t *j = NULL;
      if (g == NULL)
        break;
      check_rc("join", uvp_group_join(S.g[gi], &j), 0);
      if (j != S.join[gi])
        fail("join is another promise", gi, 0);
      S.join_refs[gi]++;
      break;
    }
    case 11: /* release: no group call after this */
      if (g == NULL)
        break;
      uvp_group_release(S.g[gi]);
      g->released = true;
      g->closed = true;
      m_maybe_end(g);
      break;
    case 13: { /* add an earlier group's join (no cycles), once */
      int h = M.ng > 0 ? NEXT() % M.ng : 0;
      if (g == NULL || h >= gi || M.g[h].as_member >= 0 || M.nadd == MAXADD)
        break;
      M.nadd++;
      int rc = uvp_group_add(S.g[gi], S.join[h]);
      check_add_rc("add a join", g, rc);
      if (rc != 0)
        break;
      int k = m_member(gi, M.g[h].join);
      S.nm++; /* S.m[k] stays NULL: only uvp settles a join */
      M.m[k].join_of = h;
      M.g[h].as_member = k;
      break;
    }
    case 12: /* one loop turn */
      uv_run(&S.loop, UV_RUN_NOWAIT);
      m_drain();
      compare();
      break;
    case 14: { /* cancel a next() promise: it stops waiting */
      int w = M.nn > 0 ? b % M.nn : -1;
      if (w < 0)
        break;
      bool pending = M.n[w].st == M_PENDING;
      check_rc("next cancel", uvp_promise_cancel(S.n[w]),
               pending ? 0 : UVP_ESETTLED);
      if (pending)
        M.n[w] = (mout_t){M_REJECTED, UV_ECANCELED};
      break;
    }
    default: { /* cancel the join: cancels the group, released or not */
      gi = M.ng > 0 ? b % M.ng : -1;
      if (gi < 0)
        break;
      g = &M.g[gi];
      bool pending = g->join.st == M_PENDING;
      check_rc("join cancel", uvp_promise_cancel(S.join[gi]),
               pending ? 0 : UVP_ESETTLED);
      if (!pending)
        break;
      m_join_cancel(g);
      break;
    }
    }
    compare_starts();
  }

  /* Teardown: close what is open, let it settle, compare. */
  for (int gi = 0; gi < M.ng; gi++)
    if (!M.g[gi].released) {
      check_rc("close", uvp_group_close(S.g[gi]), 0);
      M.g[gi].closed = true;
      m_maybe_end(&M.g[gi]);
    }
  uv_run(&S.loop, UV_RUN_NOWAIT);
  m_drain();
  compare();

  /* Then the context: what is pending becomes UVP_ECLOSED, waiting starts
   * never run but let go of their arg. */
  if (uvp_ctx_close(S.ctx) != 0)
    abort();
  S.ctx_closed = true;
  for (int k = 0; k < M.nm; k++)
    if (S.m[k] != NULL) {
      if (M.m[k].out.st == M_PENDING &&
          uvp_promise_reason(S.m[k], NULL) != UVP_ECLOSED)
        fail("teardown: member", k, uvp_promise_reason(S.m[k], NULL));
      uvp_promise_release(S.m[k]);
    }
  for (int w = 0; w < M.nn; w++) {
    if (M.n[w].st == M_PENDING &&
        uvp_promise_reason(S.n[w], NULL) != UVP_ECLOSED)
      fail("teardown: next", w, uvp_promise_reason(S.n[w], NULL));
    uvp_promise_release(S.n[w]);
  }
  for (int gi = 0; gi < M.ng; gi++) {
    if (M.g[gi].join.st == M_PENDING &&
        uvp_promise_reason(S.join[gi], NULL) != UVP_ECLOSED)
      fail("teardown: join", gi, uvp_promise_reason(S.join[gi], NULL));
    while (S.join_refs[gi]-- > 0)
      uvp_promise_release(S.join[gi]);
    if (!M.g[gi].released)
      uvp_group_release(S.g[gi]);
  }
  uv_run(&S.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&S.loop) != 0)
    fail("uv_loop_close", 1, 0);
  for (int z = 0; z < M.ns; z++)
    if (S.s[z].freed != 1)
      fail("arg_free runs at the end", z, S.s[z].freed);
  fuzz_check_all_freed();
  return 0;
}

/* libFuzzer harness for fibers: the input decodes into a sequence of top-level
 * operations — create a pending promise, spawn a fiber (or, once a group
 * exists, a group's member fiber), resolve / reject / cancel a promise (a
 * fiber's own or a group's join included), register a handler on one (another
 * consumer), one loop turn, a task group operation (make one, up to MAXG, its
 * join a slot; close it, uvp_group_cancel it, or cut its join), set the
 * scheduler's budget (1 to 3 handlers a drain, or a huge one), release the
 * harness's reference to a promise — and into a small program for each fiber,
 * decoded when its spawn is: a list of steps (await promise slot k, shielded or
 * not, await an already settled promise, resolve / reject / cancel slot k,
 * spawn a nested fiber, or a member of a group, return a value / a rejection /
 * pass, call uvp_ctx_close, which a fiber may not).  Fibers run the same
 * programs on uvp and on a small reference model of uvp.h's rules written here.
 * Everything a fiber does is logged (its start, each step's return code and
 * each await's value, its end) in the order it happens; after every loop turn
 * the logs, the number of fibers alive and which arg_free notifiers ran must
 * agree, and after every operation the state and outcome of every promise must
 * (cancellation acts at once).  At the end, uvp_ctx_close with whatever is
 * still queued: every suspended fiber must see UVP_ECLOSED from its await and
 * from every later one and run to its end, every fiber not started must never
 * start (its arg_free runs all the same); every pending promise is rejected
 * with UVP_ECLOSED; every spawned fiber's arg_free has run exactly once, never
 * while its fiber runs; uv_loop_close returns 0, with every allocation of uvp's
 * freed (fuzz-helpers.h counts them).  No cancellation and no UVP_ECLOSED is
 * reported as unhandled.  ASan/UBSan/LSan (and ASan's fiber-switch annotations)
 * catch the rest.
 *
 * The model is deliberately naive: promises in an array of slots, each with
 * its list of consumers (fibers awaiting it, handlers) in registration order,
 * and one FIFO of fiber wakes standing for uvp's run queue.  A spawn queues
 * the fiber's start; an await of a pending promise joins its consumers, and
 * its settlement queues the wakes of the fibers awaiting it in that order; an
 * await of a settled promise queues the wake at once (the yield uvp.h
 * promises).  Cancelling a fiber's promise rejects it (queueing its consumers'
 * wakes), then, as its cancel hook, marks the fiber cancelled and, if it is
 * suspended on a pending promise, cancels that promise when the fiber is its
 * only consumer (which wakes the fiber through its rejection), else takes the
 * fiber off its consumers and queues its wake; a cancelled fiber's awaits all
 * return UV_ECANCELED (the one it is suspended in included, whatever woke it),
 * and it never starts if it had not.  A shielded await (uvp_await_shielded:
 * an await step whose arg has the SHIELD bit) is the exception: the hook
 * only marks the fiber, which waits on for the promise's own outcome, and
 * neither it nor a later shielded await says UV_ECANCELED.  A fiber's return
 * settles its promise unless that was cancelled.  Handlers pass their input on
 * and have no derived promise: only their presence as consumers matters, so the
 * model does not queue them.
 *
 * Task groups (no limit, no flags, no next(), released after the close; so
 * their members' cells are never reused and a cancel walks the members in the
 * order they were spawned, as group.c's walk does).  A member fiber
 * (uvp_group_spawn) is queued at once; its promise is no slot (the group alone
 * consumes it): its settling queues the group's observation, a job of the FIFO
 * like a wake, and its return (or its drop, cancelled before it started) ends
 * the group's hold on it.  A group winds down once it is closed or cancelled,
 * every member's settling observed and every member fiber returned: its join
 * then settles, fulfilled (value NULL), or, if it was cut, rejected with
 * UV_ECANCELED.  uvp_group_cancel cancels each pending member in walk order (a
 * member's cancel is a fiber's, above).  Cutting the join -- uvp_promise_cancel
 * on it, or the cancel of a fiber suspended on it as its only consumer -- does
 * the same, but the join stays pending until the group has wound down (uvp.h's
 * structured rule): so a fiber alone awaiting it stays suspended until then,
 * its await then saying UV_ECANCELED; cut again, it returns 0 and walks the
 * members again; torn down, it says UVP_ECLOSED like every pending promise.  A
 * member that was cut may go on (a shielded await, another spawn into its
 * group, which says UV_ECANCELED), and the join waits for it.  Adding to a
 * closed group says UVP_ECLOSED, to a cancelled one UV_ECANCELED.
 *
 * Left out or not compared, because uvp.h does not pin it down: how many loop
 * turns the run queue takes (a turn here runs UV_RUN_NOWAIT until uvp_ctx_stats
 * says nothing is queued; the model drains its queue whole), when the notifier
 * of a fiber cancelled before its start runs (compared after turns only), the
 * order in which uvp_ctx_close resumes the suspended fibers (the logs after the
 * close are compared fiber by fiber), and which of UVP_ESETTLED and UVP_ECLOSED
 * resolving or cancelling a promise, or of UVP_EINFIBER and UVP_ECLOSED
 * uvp_ctx_close, returns in a fiber the close runs (both read as UVP_ECLOSED;
 * uvp returns UVP_ECLOSED today).  Where uvp.h says what happens but not
 * exactly when, the model copies uvp's choice: a cancelled suspended fiber's
 * wake is queued by the cancellation itself (directly, or through the rejection
 * of the promise it alone awaited), behind the wakes its promise's own
 * rejection queued.  Not exercised: resolving a fiber's promise by hand,
 * adopting promises (uvp_ret_adopt), stack sizes, groups' limits, flags, next()
 * and other members than fibers (fuzz-group.c has them), groups made inside
 * fibers, other threads, timers and I/O, so deadlines (a deadline's cut,
 * UV_ETIMEDOUT, uvp_deadline_shield, uvp_group_spawn's deadline_ms) too.
 *
 * Allocation failure: an input may first arm it (fuzz-helpers.h).  A
 * promise_new, group_new, spawn or handler registration refused with UV_ENOMEM
 * must have changed nothing (a refused spawn's arg_free runs once, before
 * the call returns: uvp.h, "Handing over"); the model
 * skips it.  A failure met anywhere else (inside a fiber, in a loop turn) loses
 * the model: it stands still, the operations go on, and only what holds in any
 * case is checked: each call's code is one uvp.h documents, the await's outcome
 * matches its code, every spawned fiber's arg_free runs exactly once and never
 * while it runs, teardown frees everything.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true; run on a copy of
 * the seeds (libFuzzer adds what it finds to the directory it is given):
 *   c=$(mktemp -d); cp -r test/fuzz-fiber-corpus/. $c/
 *   build-fuzz/test/fuzz-fiber -max_total_time=60 $c */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-helpers.h"

#define MAXF 6    /* fibers (programs) */
#define MAXP 10   /* plain promises, the two settled ones included */
#define MAXG 2    /* task groups */
#define MAXSTEP 6 /* steps per program */
#define MAXSLOT (MAXP + MAXF + MAXG)
#define MAXLOG 256 /* events: at most MAXF * (MAXSTEP + 2) */
#define MAXQ 256   /* wakes queued in a run: one per resumption */
#define MAXCONS 16 /* consumers of one promise (fibers and handlers) */

/* What promises and fibers settle with: a slot k fulfils with 1000 + k or
 * rejects with -(20000 + k); fiber i returns 2000 + i or -(21000 + i).
 * Slot 0 is fulfilled and slot 1 rejected from the start. */
static intptr_t value_of(int k) { return 1000 + k; }
static int code_of(int k) { return -(20000 + k); }
static intptr_t fvalue_of(int i) { return 2000 + i; }
static int fcode_of(int i) { return -(21000 + i); }

/* ---- the programs (shared by the model and the system under test) ------- */

typedef enum {
  S_AWAIT,         /* await slot arg % nslots; shielded if arg & SHIELD */
  S_AWAIT_SETTLED, /* await slot arg % 2 (fulfilled or rejected) */
  S_RESOLVE,       /* resolve / reject slot arg % nslots, unless a fiber's */
  S_REJECT,
  S_CANCEL, /* uvp_promise_cancel slot arg % nslots */
  S_SPAWN,  /* spawn program `child` (if any slot is left); if arg &
               MEMBER and a group exists, into group arg % ngroups */
  S_RETURN, /* arg % 3: a value, a rejection, pass */
  S_CLOSE   /* uvp_ctx_close: refused inside a fiber */
} skind_t;

/* An S_AWAIT with this bit in its arg is uvp_await_shielded. */
#define SHIELD 0x80
/* An S_SPAWN (or the spawn operation's byte) with this bit spawns the
 * fiber as a member of a task group (uvp_group_spawn), once one exists. */
#define MEMBER 0x80

typedef struct step_s {
  skind_t kind;
  uint8_t arg;
  int child; /* S_SPAWN: a program, or -1 (none left: a no-op) */
} step_t;

typedef struct prog_s {
  int n;
  step_t step[MAXSTEP];
} prog_t;

static prog_t P[MAXF];
static int nprog;

/* Slots whose promise the harness has released: nobody may name them any
 * more (steps naming one do nothing), though a fiber may still await it. */
static bool released[MAXSLOT];

/* A step's code when it did nothing (no such slot, no program). */
#define NOOP 1

/* One event of a fiber: its start (step -1), a step, its end (MAXSTEP;
 * rc: how it returned). */
typedef struct event_s {
  int fiber, step, rc;
  intptr_t value;
} event_t;

typedef struct log_s {
  event_t ev[MAXLOG];
  int n;
  int closed_at; /* first event of uvp_ctx_close's, or -1 */
} log_t;

static void log_push(log_t *l, int fiber, int step, int rc, intptr_t value) {
  if (l->n == MAXLOG)
    abort();
  l->ev[l->n++] = (event_t){fiber, step, rc, value};
}

/* ---- the model ----------------------------------------------------------- */

typedef enum { M_PENDING, M_FULFILLED, M_REJECTED } mstate_t;

typedef struct mout_s {
  mstate_t st;
  intptr_t value; /* fulfilled value, or rejection code */
} mout_t;

#define HANDLER (-1) /* a consumer that is not a fiber */

typedef struct mslot_s {
  mout_t out;
  int fiber;         /* the fiber whose promise it is, or -1 */
  int group;         /* the group whose join it is, or -1 */
  int cons[MAXCONS]; /* consumers of a pending promise, in order */
  int ncons;
} mslot_t;

enum { F_UNSPAWNED, F_QUEUED, F_RUNNING, F_SUSPENDED, F_DONE };

/* A consumer (and a job in the run queue) that is group observing its
 * member fiber j's promise settle: OBS + j. */
#define OBS MAXF

/* A task group: no limit, no flags, no next(), released only after the
 * close, so its cells are never freed and reused: a cancel walks its
 * members in the order they were spawned, as uvp does (group.c). */
typedef struct mgroup_s {
  bool closed, cancelled, wound, walking;
  int cut;                   /* what cut its join first (UV_ECANCELED), or 0 */
  int join;                  /* its slot */
  int nrunning;              /* members whose settling it has not observed */
  int holds;                 /* member fibers that have not returned */
  int member[MAXF], nmember; /* fibers, in spawn (cell) order */
} mgroup_t;

typedef struct mfiber_s {
  int state;
  int group; /* a member of this group (uvp_group_spawn), or -1 */
  int slot;  /* its promise: a member's is no slot of the harness's but
                MAXSLOT + i, consumed by its group only */
  int pc;    /* the step it is suspended in */
  bool cancelled, freed;
  bool shielded; /* suspended in uvp_await_shielded */
  int waiting;   /* the slot it awaits, or -1 */
  mout_t woken;  /* what its queued wake says (unless cancelled) */
} mfiber_t;

typedef struct model_s {
  mslot_t slot[MAXSLOT + MAXF];
  int nslots, nplain;
  mfiber_t f[MAXF];
  mgroup_t g[MAXG];
  int ng;
  int q[MAXQ], qh, qt;
  bool closed;
  log_t log;
} model_t;

static model_t M;

static void m_enqueue(int i) {
  if (M.qt == MAXQ)
    abort();
  M.q[M.qt++] = i;
}

static bool m_pending(int k) { return M.slot[k].out.st == M_PENDING; }

/* Settle slot k: the fibers awaiting it are woken, in order. */
static void m_settle(int k, mout_t out) {
  mslot_t *s = &M.slot[k];
  s->out = out;
  for (int c = 0; c < s->ncons; c++)
    if (s->cons[c] >= OBS) {
      m_enqueue(s->cons[c]); /* its group observes it */
    } else if (s->cons[c] != HANDLER) {
      M.f[s->cons[c]].woken = out;
      m_enqueue(s->cons[c]);
    }
  s->ncons = 0;
}

static int m_new_slot(mout_t out, int fiber) {
  int k = M.nslots++;
  M.slot[k] = (mslot_t){out, fiber, -1, {0}, 0};
  return k;
}

/* Closed or cancelled, every member observed, every member fiber
 * returned: the join settles, with what cut it if anything did (uvp.h's
 * structured rule), else fulfilled (value NULL). */
static void m_maybe_end(mgroup_t *g) {
  if (!(g->closed || g->cancelled) || g->nrunning != 0 || g->holds != 0 ||
      g->wound)
    return;
  g->wound = true;
  if (m_pending(g->join))
    m_settle(g->join, g->cut != 0 ? (mout_t){M_REJECTED, g->cut}
                                  : (mout_t){M_FULFILLED, 0});
}

static int m_cancel(int k);

/* uvp_group_cancel, or a cut: each member still pending cancelled, in
 * cell order. */
static void m_cancel_all(mgroup_t *g) {
  g->cancelled = true;
  if (g->walking)
    return; /* a member's cancel cut the join: the walk goes on */
  g->walking = true;
  for (int m = 0; m < g->nmember; m++)
    if (m_pending(M.f[g->member[m]].slot))
      (void)m_cancel(M.f[g->member[m]].slot);
  g->walking = false;
}

/* Its group observes member fiber j's promise settled. */
static void m_observe(int j) {
  mgroup_t *g = &M.g[M.f[j].group];
  g->nrunning--;
  m_maybe_end(g);
}

static int m_cancel(int k) {
  if (M.closed)
    return UVP_ECLOSED;
  if (!m_pending(k))
    return UVP_ESETTLED;
  if (M.slot[k].group >= 0) {
    /* A join is cut, not settled: its group is cancelled, and the join
     * stays pending until the group has wound down, then rejects with
     * the first cut's code.  Cut again: 0, the members walked again. */
    mgroup_t *g = &M.g[M.slot[k].group];
    if (g->cut == 0)
      g->cut = UV_ECANCELED;
    m_cancel_all(g);
    m_maybe_end(g);
    return 0;
  }
  m_settle(k, (mout_t){M_REJECTED, UV_ECANCELED});
  int i = M.slot[k].fiber;
  if (i < 0)
    return 0;
  /* The fiber's cancel hook. */
  mfiber_t *f = &M.f[i];
  f->cancelled = true;
  if (f->shielded)
    return 0; /* it waits on, its awaited promise left alone */
  if (f->state != F_SUSPENDED || f->waiting < 0 || !m_pending(f->waiting))
    return 0; /* a queued wake (or its next await) says UV_ECANCELED */
  mslot_t *q = &M.slot[f->waiting];
  if (q->ncons == 1 && q->cons[0] == i) {
    /* Its rejection wakes the fiber; a join, cut, stays pending (and the
     * fiber suspended) until its group has wound down. */
    (void)m_cancel(f->waiting);
    return 0;
  }
  int c = 0;
  while (q->cons[c] != i)
    c++;
  memmove(&q->cons[c], &q->cons[c + 1],
          (size_t)(q->ncons - c - 1) * sizeof(int));
  q->ncons--;
  m_enqueue(i);
  return 0;
}

static int m_resolve(int k, bool fulfil) {
  if (M.slot[k].fiber >= 0 || M.slot[k].group >= 0 || released[k])
    return NOOP;
  if (M.closed)
    return UVP_ECLOSED;
  if (!m_pending(k))
    return UVP_ESETTLED;
  m_settle(k, fulfil ? (mout_t){M_FULFILLED, value_of(k)}
                     : (mout_t){M_REJECTED, code_of(k)});
  return 0;
}

static int m_spawn(int j) {
  if (M.closed)
    return UVP_ECLOSED;
  M.f[j] = (mfiber_t){.state = F_QUEUED, .group = -1, .waiting = -1};
  M.f[j].slot = m_new_slot((mout_t){M_PENDING, 0}, j);
  m_enqueue(j);
  return 0;
}

/* uvp_group_spawn (no limit: it starts at once), the group observing its
 * promise. */
static int m_spawn_member(int j, int gi) {
  mgroup_t *g = &M.g[gi];
  if (M.closed || g->closed)
    return UVP_ECLOSED;
  if (g->cancelled)
    return UV_ECANCELED;
  M.f[j] = (mfiber_t){.state = F_QUEUED, .group = gi, .waiting = -1};
  int k = M.f[j].slot = MAXSLOT + j;
  M.slot[k] = (mslot_t){{M_PENDING, 0}, j, -1, {OBS + j}, 1};
  g->holds++;
  g->nrunning++;
  g->member[g->nmember++] = j;
  m_enqueue(j);
  return 0;
}

static int m_new_group(void) {
  int gi = M.ng++;
  M.g[gi] = (mgroup_t){.join = m_new_slot((mout_t){M_PENDING, 0}, -1)};
  M.slot[M.g[gi].join].group = gi;
  return gi;
}

/* The fiber is done (returned, or never to start): a member's group stops
 * waiting for it. */
static void m_done(int i) {
  mfiber_t *f = &M.f[i];
  f->state = F_DONE;
  f->freed = true;
  if (f->group >= 0 && !M.closed) {
    M.g[f->group].holds--;
    m_maybe_end(&M.g[f->group]);
  }
}

/* Fiber i ends returning `how` (an S_RETURN arg, or pass). */
static void m_end(int i, int how) {
  mfiber_t *f = &M.f[i];
  log_push(&M.log, i, MAXSTEP, how, 0);
  if (m_pending(f->slot)) /* else cancelled or torn down: discarded */
    m_settle(f->slot, how == 0   ? (mout_t){M_FULFILLED, fvalue_of(i)}
                      : how == 1 ? (mout_t){M_REJECTED, fcode_of(i)}
                                 : (mout_t){M_FULFILLED, 0});
  m_done(i);
}

/* Run fiber i from step pc until it suspends or ends. */
static void m_run(int i, int pc) {
  mfiber_t *f = &M.f[i];
  const prog_t *pg = &P[i];
  f->state = F_RUNNING;
  for (; pc < pg->n; pc++) {
    const step_t *st = &pg->step[pc];
    int k = st->arg % M.nslots;
    int rc = NOOP;
    intptr_t v = 0;
    switch (st->kind) {
    case S_AWAIT_SETTLED:
      k = st->arg % 2;
      /* fall through */
    case S_AWAIT:
      if (released[k])
        break;
      rc = M.closed ? UVP_ECLOSED
           : f->cancelled && !(st->kind == S_AWAIT && (st->arg & SHIELD))
               ? UV_ECANCELED
               : 0;
      if (rc != 0)
        break; /* at once */
      f->shielded = st->kind == S_AWAIT && (st->arg & SHIELD);
      f->state = F_SUSPENDED;
      f->pc = pc;
      f->waiting = k;
      if (m_pending(k)) {
        M.slot[k].cons[M.slot[k].ncons++] = i;
      } else {
        f->woken = M.slot[k].out; /* yield once */
        m_enqueue(i);
      }
      return;
    case S_RESOLVE:
    case S_REJECT:
      rc = m_resolve(k, st->kind == S_RESOLVE);
      break;
    case S_CANCEL:
      rc = released[k] ? NOOP : m_cancel(k);
      break;
    case S_SPAWN:
      if (st->child >= 0 && (st->arg & MEMBER) && M.ng > 0) {
        rc = m_spawn_member(st->child, st->arg % M.ng);
      } else if (st->child >= 0 && M.nslots < MAXSLOT) {
        rc = m_spawn(st->child);
        v = rc == 0 ? M.nslots - 1 : -1;
      }
      break;
    case S_RETURN:
      m_end(i, st->arg % 3);
      return;
    case S_CLOSE:
      rc = M.closed ? UVP_ECLOSED : UVP_EINFIBER;
      break;
    }
    log_push(&M.log, i, pc, rc, v);
  }
  m_end(i, 2);
}

/* The await fiber i is suspended in returns `out`; it goes on. */
static void m_resume(int i, mout_t out) {
  mfiber_t *f = &M.f[i];
  log_push(&M.log, i, f->pc, out.st == M_REJECTED ? (int)out.value : 0,
           out.st == M_FULFILLED ? out.value : 0);
  f->waiting = -1;
  f->shielded = false;
  m_run(i, f->pc + 1);
}

/* A wake at the head of the run queue. */
static void m_wake(int i) {
  mfiber_t *f = &M.f[i];
  if (f->state == F_QUEUED) {
    if (f->cancelled) { /* never runs */
      m_done(i);
      return;
    }
    log_push(&M.log, i, -1, 0, 0);
    m_run(i, 0);
    return;
  }
  m_resume(i, f->cancelled && !f->shielded ? (mout_t){M_REJECTED, UV_ECANCELED}
                                           : f->woken);
}

static void m_drain(void) {
  while (M.qh < M.qt) {
    int job = M.q[M.qh++];
    if (job >= OBS)
      m_observe(job - OBS);
    else
      m_wake(job);
  }
  M.qh = M.qt = 0;
}

/* uvp_ctx_close: pending promises rejected, queued wakes dropped (fibers
 * not started never start), every suspended fiber resumed with
 * UVP_ECLOSED and run to its end. */
static void m_close(void) {
  M.closed = true;
  M.log.closed_at = M.log.n;
  for (int k = 0; k < MAXSLOT + MAXF; k++)
    if ((k < M.nslots ||
         (k >= MAXSLOT && M.f[k - MAXSLOT].state != F_UNSPAWNED &&
          M.f[k - MAXSLOT].group >= 0)) &&
        m_pending(k)) {
      M.slot[k].out = (mout_t){M_REJECTED, UVP_ECLOSED};
      M.slot[k].ncons = 0;
    }
  M.qh = M.qt = 0;
  for (int i = 0; i < nprog; i++) {
    if (M.f[i].state == F_QUEUED) {
      M.f[i].state = F_DONE;
      M.f[i].freed = true;
    } else if (M.f[i].state == F_SUSPENDED) {
      m_resume(i, (mout_t){M_REJECTED, UVP_ECLOSED});
    }
  }
}

/* ---- the system under test ---------------------------------------------- */

typedef struct sfiber_s {
  int id;
  bool handed; /* given to a spawn call, which owns it from then on */
  bool spawned, running;
  int freed;
} sfiber_t;

typedef struct sut_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  bool closing;
  uvp_promise_t *slot[MAXSLOT]; /* our references */
  int fiber_of[MAXSLOT];        /* -1: ours to settle (MAXF: a join) */
  int nslots;
  uvp_group_t *g[MAXG];
  int join[MAXG]; /* each group's join: its slot */
  int ng;
  sfiber_t f[MAXF];
  log_t log;
} sut_t;

static sut_t S;

static void s_arg_free(void *arg) {
  sfiber_t *f = arg;
  if (f->running)
    fail("arg_free while its fiber runs", f->id, 0);
  if (f->freed++ != 0)
    fail("arg_free twice", f->id, f->freed);
}

static int s_spawn(int j);
static int s_spawn_member(int j, int gi);

static uvp_ret_t s_end(sfiber_t *f, int how) {
  log_push(&S.log, f->id, MAXSTEP, how, 0);
  f->running = false;
  return how == 0   ? uvp_ret_value((void *)fvalue_of(f->id), NULL)
         : how == 1 ? uvp_ret_reject(fcode_of(f->id), NULL, NULL)
                    : uvp_ret_pass();
}

/* A fiber: runs its program. */
static uvp_ret_t body(void *arg) {
  sfiber_t *f = arg;
  const prog_t *pg = &P[f->id];
  if (!uvp_in_fiber() || f->freed != 0 || f->running)
    fail("fiber started wrongly", f->id, f->freed);
  f->running = true;
  log_push(&S.log, f->id, -1, 0, 0);
  for (int pc = 0; pc < pg->n; pc++) {
    const step_t *st = &pg->step[pc];
    int k = st->arg % S.nslots;
    int rc = NOOP;
    intptr_t v = 0;
    switch (st->kind) {
    case S_AWAIT_SETTLED:
      k = st->arg % 2;
      /* fall through */
    case S_AWAIT: {
      uvp_outcome_t o;
      if (released[k])
        break;
      rc = st->kind == S_AWAIT && (st->arg & SHIELD)
               ? uvp_await_shielded(S.slot[k], &o)
               : uvp_await(S.slot[k], &o);
      if (o.status != rc || o.promise != S.slot[k])
        fail("await's outcome", o.status, rc);
      v = (intptr_t)o.value;
      break;
    }
    case S_RESOLVE:
      if (S.fiber_of[k] < 0 && !released[k])
        rc = uvp_promise_resolve(S.slot[k], (void *)value_of(k), NULL);
      break;
    case S_REJECT:
      if (S.fiber_of[k] < 0 && !released[k])
        rc = uvp_promise_reject(S.slot[k], code_of(k), NULL, NULL);
      break;
    case S_CANCEL:
      if (!released[k])
        rc = uvp_promise_cancel(S.slot[k]);
      break;
    case S_SPAWN:
      if (st->child >= 0 && (st->arg & MEMBER) && S.ng > 0) {
        rc = s_spawn_member(st->child, st->arg % S.ng);
      } else if (st->child >= 0 && S.nslots < MAXSLOT) {
        rc = s_spawn(st->child);
        v = rc == 0 ? S.nslots - 1 : -1;
      }
      break;
    case S_RETURN:
      return s_end(f, st->arg % 3);
    case S_CLOSE:
      rc = uvp_ctx_close(S.ctx);
      break;
    }
    /* While the close runs fibers: either code (see above). */
    if (S.closing && (rc == UVP_ESETTLED || rc == UVP_EINFIBER))
      rc = UVP_ECLOSED;
    log_push(&S.log, f->id, pc, rc, v);
  }
  return s_end(f, 2);
}

static int s_spawn(int j) {
  uvp_fiber_opts_t o = {.stack_size = 0, .arg_free = s_arg_free};
  uvp_promise_t *p;
  S.f[j] = (sfiber_t){.id = j, .handed = true};
  int rc = uvp_fiber_spawn(S.ctx, body, &S.f[j], &o, &p);
  if (rc == 0) {
    S.f[j].spawned = true;
    S.fiber_of[S.nslots] = j;
    S.slot[S.nslots++] = p;
  }
  return rc;
}

/* The same program as a member of group gi: its promise is the group's. */
static int s_spawn_member(int j, int gi) {
  uvp_fiber_opts_t o = {.stack_size = 0, .arg_free = s_arg_free};
  S.f[j] = (sfiber_t){.id = j, .handed = true};
  int rc = uvp_group_spawn(S.g[gi], body, &S.f[j], &o);
  S.f[j].spawned = rc == 0;
  return rc;
}

/* A group and its join, in the next slot; refused (UV_ENOMEM), none. */
static int s_new_group(void) {
  uvp_promise_t *j;
  int rc = uvp_group_new(S.ctx, NULL, &S.g[S.ng]);
  if (rc != 0)
    return rc;
  if (uvp_group_join(S.g[S.ng], &j) != 0)
    abort();
  S.join[S.ng++] = S.nslots;
  S.fiber_of[S.nslots] = MAXF; /* only its group settles it */
  S.slot[S.nslots++] = j;      /* a reference of ours */
  return 0;
}

/* ---- comparison ---------------------------------------------------------- */

static void compare_event(const event_t *a, const event_t *b) {
  if (a->fiber != b->fiber || a->step != b->step)
    fail("fiber event (fiber*100+step)", a->fiber * 100 + a->step,
         b->fiber * 100 + b->step);
  if (a->rc != b->rc)
    fail("step's code", a->rc, b->rc);
  if (a->value != b->value)
    fail("await's value", (int)a->value, (int)b->value);
}

/* Before the close: the same events in the same order. */
static void compare_log(void) {
  if (S.log.n != M.log.n)
    fail("fiber events", S.log.n, M.log.n);
  for (int e = 0; e < S.log.n; e++)
    compare_event(&S.log.ev[e], &M.log.ev[e]);
}

/* After it: the same events fiber by fiber. */
static void compare_closed_log(void) {
  if (S.log.n != M.log.n)
    fail("fiber events at close", S.log.n, M.log.n);
  for (int i = 0; i < nprog; i++) {
    int a = S.log.closed_at, b = M.log.closed_at;
    for (;;) {
      while (a < S.log.n && S.log.ev[a].fiber != i)
        a++;
      while (b < M.log.n && M.log.ev[b].fiber != i)
        b++;
      if (a == S.log.n || b == M.log.n)
        break;
      compare_event(&S.log.ev[a++], &M.log.ev[b++]);
    }
    if (a != S.log.n || b != M.log.n)
      fail("fiber's events at close", i, 0);
  }
}

static void compare_slots(void) {
  if (S.nslots != M.nslots)
    fail("promises", S.nslots, M.nslots);
  for (int k = 0; k < M.nslots; k++) {
    if (released[k])
      continue;
    uvp_promise_t *p = S.slot[k];
    mout_t want = M.slot[k].out;
    uvp_state_t st = uvp_promise_state(p);
    if ((int)st != (int)want.st)
      fail("promise state (slot)", (int)st * 100 + k, (int)want.st * 100 + k);
    if (st == UVP_REJECTED && uvp_promise_reason(p, NULL) != want.value)
      fail("promise reason", uvp_promise_reason(p, NULL), (int)want.value);
    if (st == UVP_FULFILLED && (intptr_t)uvp_promise_value(p) != want.value)
      fail("promise value", (int)(intptr_t)uvp_promise_value(p),
           (int)want.value);
  }
}

static void compare_fibers(void) {
  size_t alive = 0;
  for (int i = 0; i < nprog; i++) {
    bool spawned = M.f[i].state != F_UNSPAWNED;
    if (S.f[i].spawned != spawned)
      fail("spawned", i, spawned);
    /* a refused spawn's arg was handed over: freed once at once */
    if (S.f[i].freed != (spawned ? (int)M.f[i].freed : S.f[i].handed))
      fail("arg_free runs", i, S.f[i].freed);
    alive += spawned && M.f[i].state != F_DONE;
  }
  if (!M.closed) {
    uvp_ctx_stats_t s;
    if (uvp_ctx_stats(S.ctx, &s) != 0 || s.fibers != alive)
      fail("fibers alive", (int)s.fibers, (int)alive);
  }
}

/* One turn: the run queue drained, however many loop iterations it
 * takes.  Once the model is lost (fuzz-helpers.h) it stands still. */
static void turn(void) {
  if (!fuzz_turn(&S.loop, S.ctx))
    return;
  m_drain();
  compare_log();
  compare_slots();
  compare_fibers();
}

/* ---- decoding ------------------------------------------------------------ */

static const uint8_t *in;
static size_t in_len, in_pos;

static uint8_t next_byte(void) { return in_pos < in_len ? in[in_pos++] : 0; }

/* Mostly awaits: they are what fibers are for. */
static const skind_t kinds[11] = {
    S_AWAIT,  S_AWAIT,  S_AWAIT, S_AWAIT,  S_AWAIT_SETTLED, S_RESOLVE,
    S_REJECT, S_CANCEL, S_SPAWN, S_RETURN, S_CLOSE};

/* A program (and its children's), or -1 when all are taken. */
static int decode_prog(void) {
  if (nprog == MAXF)
    return -1;
  int j = nprog++;
  prog_t *pg = &P[j];
  pg->n = next_byte() % MAXSTEP + 1;
  for (int s = 0; s < pg->n; s++) {
    step_t *st = &pg->step[s];
    st->kind = kinds[next_byte() % 11];
    st->arg = next_byte();
    st->child = st->kind == S_SPAWN ? decode_prog() : -1;
  }
  return j;
}

/* What uvp_group_spawn may return before the context is closed, UV_ENOMEM
 * aside (uvp.h). */
#define GROUP_ADD_CODES ((const int[]){0, UVP_ECLOSED, UV_ECANCELED, 1})

/* n (0 to 14): a new group (up to MAXG), or to group n / 4 % ngroups:
 * uvp_group_close, uvp_group_cancel, or cut its join (uvp_promise_cancel,
 * as the cancel operation on its slot does). */
static void group_op(int n, bool lost) {
  int rc;
  if (n % 4 == 0) {
    if (S.ng == MAXG || S.nslots == MAXSLOT)
      return;
    rc = s_new_group();
    if (fuzz_alloc_refused(rc))
      return;
    check_rc("group_new", rc, 0);
    if (!lost)
      (void)m_new_group();
    return;
  }
  if (S.ng == 0)
    return;
  int gi = n / 4 % S.ng;
  switch (n % 4) {
  case 1:
    check_rc("group_close", uvp_group_close(S.g[gi]), 0);
    if (!lost) {
      M.g[gi].closed = true;
      m_maybe_end(&M.g[gi]);
    }
    break;
  case 2:
    check_rc("group_cancel", uvp_group_cancel(S.g[gi]), 0);
    if (!lost) {
      m_cancel_all(&M.g[gi]);
      m_maybe_end(&M.g[gi]);
    }
    break;
  default: {
    int k = S.join[gi];
    if (released[k])
      return;
    rc = uvp_promise_cancel(S.slot[k]);
    check_rc_or("cut", rc, lost ? 0 : m_cancel(k), FUZZ_SETTLE_CODES);
    break;
  }
  }
}

static uvp_ret_t pass_handler(void *arg, const uvp_outcome_t *o) {
  (void)arg;
  (void)o;
  return uvp_ret_pass();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&M, 0, sizeof(M));
  memset(&S, 0, sizeof(S));
  memset(P, 0, sizeof(P));
  memset(released, 0, sizeof(released));
  nprog = 0;
  M.log.closed_at = S.log.closed_at = -1;
  fuzz_count_allocations(&data, &size);
  in = data;
  in_len = size;
  in_pos = 0;
  if (uv_loop_init(&S.loop) != 0 || uvp_ctx_new(&S.loop, &S.ctx) != 0)
    abort();
#if defined(FUZZ_COMPACT)
  /* fuzz-fiber-compact: the same model, the fibers in the compact mode
   * (under ASan each parked fiber's stack is poisoned). */
  if (uvp_ctx_set_fiber_mode(S.ctx, UVP_FIBER_COMPACT) != 0)
    abort();
#endif
  uvp_ctx_set_budget(S.ctx, 1u << 30);
  uvp_ctx_set_unhandled_cb(S.ctx, unhandled_not_cancelled, NULL);

  /* Slots 0 and 1: settled from the start. */
  if (uvp_promise_resolved(S.ctx, (void *)value_of(0), NULL, &S.slot[0]) != 0 ||
      uvp_promise_rejected(S.ctx, code_of(1), NULL, NULL, &S.slot[1]) != 0)
    abort();
  S.fiber_of[0] = S.fiber_of[1] = -1;
  S.nslots = 2;
  m_new_slot((mout_t){M_FULFILLED, value_of(0)}, -1);
  m_new_slot((mout_t){M_REJECTED, code_of(1)}, -1);
  M.nplain = 2;
  fuzz_alloc_arm();

  while (in_pos < in_len) {
    uint8_t op = next_byte() % 9;
    uint8_t b = next_byte();
    int k = b % S.nslots;
    bool lost = fuzz_model_lost();
    int rc;
    if (released[k] && op >= 2 && op <= 5)
      continue; /* nobody may name it any more */
    fuzz_alloc_mark();
    switch (op) {
    case 0: { /* a new pending promise */
      if (M.nplain == MAXP)
        break;
      uvp_promise_t *p;
      rc = uvp_promise_new(S.ctx, &p);
      if (fuzz_alloc_refused(rc))
        break;
      check_rc("promise_new", rc, 0);
      M.nplain++;
      S.fiber_of[S.nslots] = -1;
      S.slot[S.nslots++] = p;
      if (!lost)
        m_new_slot((mout_t){M_PENDING, 0}, -1);
      break;
    }
    case 1: { /* spawn a fiber (a group's member if b says so); its
                 program follows */
      int j = decode_prog();
      if (j < 0)
        break;
      int gi = (b & MEMBER) && S.ng > 0 ? b % S.ng : -1;
      rc = gi >= 0 ? s_spawn_member(j, gi) : s_spawn(j);
      if (fuzz_alloc_refused(rc))
        break; /* never spawned: handed over, freed once (checked) */
      if (gi < 0) {
        check_rc("spawn", rc, 0);
        if (!lost)
          m_spawn(j);
      } else {
        check_rc_or("group spawn", rc, lost ? 0 : m_spawn_member(j, gi),
                    GROUP_ADD_CODES);
      }
      break;
    }
    case 2:   /* resolve */
    case 3: { /* reject */
      if (S.fiber_of[k] >= 0)
        break;
      rc = op == 2 ? uvp_promise_resolve(S.slot[k], (void *)value_of(k), NULL)
                   : uvp_promise_reject(S.slot[k], code_of(k), NULL, NULL);
      check_rc_or("settle", rc, lost ? 0 : m_resolve(k, op == 2),
                  FUZZ_SETTLE_CODES);
      break;
    }
    case 4: /* cancel: a fiber's promise, or one fibers await */
      rc = uvp_promise_cancel(S.slot[k]);
      check_rc_or("cancel", rc, lost ? 0 : m_cancel(k), FUZZ_SETTLE_CODES);
      break;
    case 5:                                  /* another consumer, not a fiber */
      if (M.slot[k].ncons >= MAXCONS - MAXF) /* room for every fiber */
        break;
      rc = uvp_promise_on(S.slot[k], UVP_ON_BOTH, pass_handler, NULL, NULL);
      if (fuzz_alloc_refused(rc))
        break;
      check_rc("then", rc, 0);
      if (!lost && m_pending(k))
        M.slot[k].cons[M.slot[k].ncons++] = HANDLER;
      break;
    case 6: /* one turn; b 0xF1 to 0xFF: a group operation instead */
      if (b > 0xF0)
        group_op(b - 0xF1, lost);
      else
        turn();
      break;
    case 7: /* a small budget: drains end between fibers, hand-offs stop */
      check_rc("budget", uvp_ctx_set_budget(S.ctx, b % 4 ? b % 4 : 1u << 30),
               0);
      break;
    default: /* release ours: uvp holds its own while a fiber awaits it */
      if (k < 2 || released[k])
        break;
      uvp_promise_release(S.slot[k]);
      released[k] = true;
      break;
    }
    fuzz_alloc_settle(); /* a failure no call reported */
    if (!fuzz_model_lost())
      compare_slots();
  }

  /* No last turn: what is queued meets the close (fibers not started never
   * start, queued wakes are dropped). */
  bool lost = fuzz_model_lost();
  if (!lost)
    compare_log();
  S.closing = true;
  if (!lost)
    m_close();
  S.log.closed_at = S.log.n;
  fuzz_alloc_mark();
  check_rc("ctx_close", uvp_ctx_close(S.ctx), 0);
  fuzz_alloc_settle();
  if (!fuzz_model_lost()) {
    compare_closed_log();
    compare_slots();
    compare_fibers();
  }
  for (int k = 0; k < S.nslots; k++)
    if (!released[k])
      uvp_promise_release(S.slot[k]);
  for (int gi = 0; gi < S.ng; gi++)
    uvp_group_release(S.g[gi]);
  uv_run(&S.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&S.loop) != 0)
    fail("uv_loop_close", 1, 0);
  /* A program handed to a spawn call, which owns its arg whatever it
   * returned (uvp.h, "Handing over"): freed once, spawned or refused. */
  for (int i = 0; i < nprog; i++)
    if (S.f[i].freed != (S.f[i].handed ? 1 : 0))
      fail("arg_free runs at the end", i, S.f[i].freed);
  fuzz_check_all_freed();
  return 0;
}

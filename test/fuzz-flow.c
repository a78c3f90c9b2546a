/* libFuzzer harness for the flow layer: the input decodes into a sequence
 * of operations — start a map (0..6 items, limit 0..3, with or without
 * UVP_MAP_FAIL_FAST and on_settle), a reduce (0..4 steps, no initial or an
 * earlier promise, pending or settled), a loop, a retry, each with or
 * without a destroy notifier and with a small program saying what each of
 * its callbacks does; resolve / reject / cancel a promise a callback made;
 * cancel or release a flow's result; release a promise; drain the run
 * queue; one loop turn of a budget of 1 to 3 — which run both on uvp and on
 * a small reference model of uvp.h's rules written here.  A start, step or
 * attempt makes a new promise (pending, fulfilled or rejected), returns an
 * error code, returns no promise (a step: stop), or cancels its own flow's
 * result and then returns a pending promise; an on_settle or should_retry
 * call may cancel the result too.  The harness settles the pending ones in
 * the order the input says, so items complete in any order.
 *
 * Checked after every operation: every callback call (which flow, which
 * index, what outcome it was given) in the order they ran, every promise a
 * callback made, every result the harness holds (a map's list item by item
 * in input order), which destroy notifiers ran.  In the start callback
 * itself: items start in index order, and fewer than `limit` of the map's
 * items are pending when one more starts.  At the end, uvp_ctx_close at
 * whatever point the input stopped: every promise the model has pending
 * must be rejected with UVP_ECLOSED and no callback may run; every
 * notifier has run exactly once, none before its callback's last call
 * (each callback checks); uv_loop_close returns 0; no cancellation and no
 * UVP_ECLOSED is reported as unhandled.  ASan/UBSan/LSan catch the rest.
 *
 * The model is deliberately naive: promises in an array of slots, each
 * with its consumers (the flows awaiting it) in registration order, and
 * one FIFO standing for uvp's run queue: a settled promise queues a job
 * per consumer, in that order; a consumer that registers on a settled
 * promise (an item already settled, a start's error, a sequence's first
 * step) queues its job at once.  A job is a flow observing one outcome:
 * a map records the item, reports it to on_settle, fails fast or starts
 * the next items and fulfils once all are in; a sequence calls its next
 * step or settles; a retry settles or asks should_retry.  A drain runs the
 * model's queue to its end; a turn with budget b runs 2b jobs (uvp.h: a
 * budget per scheduler callback, two callbacks per loop iteration).
 * Cancelling a flow's result rejects it at once and cancels the promise it
 * awaits (a map: every item in flight) if the flow is all that consumes
 * it; a promise others consume too (a reduce's initial that is also
 * another flow's item) is left to them, and the flow stops consuming it
 * (uvp_promise_cancel's rule).  Where uvp.h is silent the model
 * copies uvp's choice: FAIL_FAST counts a cancelled item as a failure;
 * should_retry is not asked once the attempts are used up; a promise a
 * callback returns after cancelling its own flow is let go of, not
 * observed nor cancelled (loop and retry say so).
 *
 * Left out: the backoff of uvp_retry, uvp_delay and uvp_timeout.  uvp.h
 * gives no 0 ms backoff (base_ms 0 means 100, and the shortest wait,
 * base_ms 1 with jitter, is drawn from [0, 1] ms), so when the next
 * attempt starts depends on the clock: should_retry here always says no
 * (or retry_on names no code the harness uses), so a retry makes one
 * attempt.  Also left out: flows of flows (a result as an item or an
 * initial), cancel hooks on the callbacks' promises, uvp_ctx_close from a
 * callback, promises of another context, threads.
 *
 * Allocation failure: an input may first arm it (fuzz-helpers.h).  A map,
 * reduce, loop or retry refused with UV_ENOMEM must have changed nothing:
 * no callback ran and its notifier did not run; the model skips it.  A
 * failure met anywhere else (a callback's promise_new, which the callback
 * returns as its error; a loop turn; a call that returns 0) loses the
 * model: it stands still, the operations go on, and only what holds in any
 * case is checked: each call's code is one uvp.h documents, callbacks
 * start items in order and under the limit, none runs after its notifier
 * or the close, every notifier runs exactly once, teardown frees
 * everything.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true; run on a copy of
 * the seeds (libFuzzer adds what it finds to the directory it is given):
 *   c=$(mktemp -d); cp -r test/fuzz-flow-corpus/. $c/
 *   build-fuzz/test/fuzz-flow -max_total_time=60 $c */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-helpers.h"

#define MAXF 4     /* flows */
#define MAXSLOT 24 /* promises the callbacks make */
#define MAXN 6     /* items of a map */
#define MAXSTEPS 6 /* steps of a loop before its step says stop */
#define PROG 4     /* behaviour bytes per flow */
#define MAXLOG 256 /* callback calls: MAXF * (2 * MAXN + 1) at most */
#define MAXQ 256   /* jobs: one per consumer per promise, one per start */
#define MAXCONS 8  /* consumers of one promise */
#define HUGE_BUDGET (1u << 30)

enum { F_MAP, F_REDUCE, F_LOOP, F_RETRY };

/* What a start, step or attempt does. */
enum { B_PENDING, B_FULFILLED, B_REJECTED, B_ERROR, B_NULL, B_CANCEL };

/* Callback calls, as logged. */
enum { L_START, L_EACH, L_STEP, L_ATTEMPT, L_PRED };

/* Slot k fulfils with 1000 + k or rejects with -(20000 + k); call c of flow
 * f fails with -(21000 + 100 f + c). */
static int value_of(int k) { return 1000 + k; }
static int code_of(int k) { return -(20000 + k); }
static int error_of(int f, int call) { return -(21000 + 100 * f + call); }

/* Call `call` of a flow's start, step or attempt, when `nslot` promises
 * exist already. */
static int behaviour(const uint8_t *prog, int call, int kind, int nslot) {
  static const int kinds[8] = {B_PENDING, B_PENDING, B_FULFILLED, B_REJECTED,
                               B_ERROR,   B_NULL,    B_CANCEL,    B_PENDING};
  int b = kinds[prog[call % PROG] & 7];
  if (kind == F_LOOP && call >= MAXSTEPS)
    return B_NULL;
  if (nslot == MAXSLOT && b != B_NULL)
    return B_ERROR;
  return b;
}

/* Whether on_settle's or should_retry's call `call` cancels the result. */
static bool cancels_inside(const uint8_t *prog, int call) {
  return (prog[call % PROG] & 0x80) != 0;
}

typedef struct ev_s {
  int flow, what, index, status, value;
} ev_t;

/* ---- the model ----------------------------------------------------------- */

typedef enum { M_PENDING, M_FULFILLED, M_REJECTED } mstate_t;

typedef struct mout_s {
  mstate_t st;
  int value; /* fulfilled value, or rejection code */
} mout_t;

static int status_of(mout_t o) { return o.st == M_REJECTED ? o.value : 0; }
/* What a handler sees as `value`: the value, or the (absent) payload. */
static int seen_of(mout_t o) { return o.st == M_FULFILLED ? o.value : 0; }

typedef struct mslot_s {
  mout_t out;
  int cons[MAXCONS][2]; /* flow, item index */
  int ncons;
  bool own; /* the harness may still settle or release it */
} mslot_t;

typedef struct mflow_s {
  int kind;
  uint8_t prog[PROG];
  bool notifier, held, decided, freed;
  mout_t result;  /* a fulfilled map's value is its list, compared apart */
  int calls;      /* start, step, attempt */
  int side_calls; /* on_settle, should_retry */
  int incall;     /* a callback is running */
  int cur;        /* sequence, retry: the slot awaited, -1: uvp's own */
  /* map */
  int n, limit, next, inflight, remaining;
  bool ff, each;
  int item[MAXN]; /* the slot of each started item, -1: uvp's own */
  mout_t rec[MAXN];
  /* sequence: n is the number of steps (INT32_MAX: a loop) */
  int index;
  /* retry */
  int attempts, tries;
  bool pred;
} mflow_t;

typedef struct mjob_s {
  int flow, index;
  mout_t out;
} mjob_t;

typedef struct model_s {
  mslot_t s[MAXSLOT];
  int ns;
  mflow_t f[MAXF];
  int nf;
  mjob_t q[MAXQ];
  int qh, qt;
  ev_t log[MAXLOG];
  int nlog;
} model_t;

static model_t M;

static void m_log(int f, int what, int index, int status, int value) {
  if (M.nlog == MAXLOG)
    abort(); /* the bounds above make this impossible */
  M.log[M.nlog++] = (ev_t){f, what, index, status, value};
}

static void m_push(int f, int index, mout_t out) {
  if (M.qt == MAXQ)
    abort();
  M.q[M.qt++] = (mjob_t){f, index, out};
}

static void m_settle(int k, mout_t out) {
  mslot_t *s = &M.s[k];
  s->out = out;
  for (int c = 0; c < s->ncons; c++)
    m_push(s->cons[c][0], s->cons[c][1], out);
  s->ncons = 0;
}

static void m_observe(int k, int f, int index) {
  mslot_t *s = &M.s[k];
  if (s->out.st != M_PENDING) {
    m_push(f, index, s->out);
    return;
  }
  if (s->ncons == MAXCONS)
    abort();
  s->cons[s->ncons][0] = f;
  s->cons[s->ncons][1] = index;
  s->ncons++;
}

static void m_free_arg(mflow_t *f) {
  if (f->decided && f->incall == 0 && f->notifier)
    f->freed = true;
}

static void m_decide(mflow_t *f, mout_t out) {
  f->decided = true;
  f->result = out;
}

/* Flow fi gives up on slot k (uvp_promise_cancel's rule): a pending k
 * that only fi consumes is cancelled; one that others consume too is left
 * to them, and fi stops consuming it. */
static void m_give_up(int k, int fi) {
  if (k < 0 || M.s[k].out.st != M_PENDING)
    return;
  mslot_t *s = &M.s[k];
  bool sole = true;
  for (int c = 0; c < s->ncons; c++)
    sole = sole && s->cons[c][0] == fi;
  if (sole) {
    m_settle(k, (mout_t){M_REJECTED, UV_ECANCELED});
    return;
  }
  int kept = 0;
  for (int c = 0; c < s->ncons; c++)
    if (s->cons[c][0] != fi) {
      s->cons[kept][0] = s->cons[c][0];
      s->cons[kept][1] = s->cons[c][1];
      kept++;
    }
  s->ncons = kept;
}

static void m_cancel_items(mflow_t *f) {
  for (int i = 0; i < f->next; i++)
    m_give_up(f->item[i], (int)(f - M.f));
}

/* The flow's result is cancelled (its cancel hook: at once). */
static void m_cancel_flow(mflow_t *f) {
  m_decide(f, (mout_t){M_REJECTED, UV_ECANCELED});
  if (f->kind == F_MAP)
    m_cancel_items(f);
  else if (f->cur >= 0)
    m_give_up(f->cur, (int)(f - M.f));
  m_free_arg(f);
}

static void m_cancel_inside(mflow_t *f) {
  f->incall++;
  m_cancel_flow(f);
  f->incall--;
}

/* A start, step or attempt runs: its behaviour, *slot the promise it made
 * (-1: none), *code what it fails with. */
static int m_call(mflow_t *f, int fi, int *slot, int *code) {
  int call = f->calls++;
  int b = behaviour(f->prog, call, f->kind, M.ns);
  *slot = -1;
  *code = b == B_ERROR ? error_of(fi, call) : UV_EINVAL;
  if (b == B_CANCEL)
    m_cancel_inside(f);
  if (b == B_ERROR || b == B_NULL)
    return b;
  int k = M.ns++;
  M.s[k] = (mslot_t){.own = true};
  if (b == B_FULFILLED)
    M.s[k].out = (mout_t){M_FULFILLED, value_of(k)};
  else if (b == B_REJECTED)
    M.s[k].out = (mout_t){M_REJECTED, code_of(k)};
  *slot = k;
  return b;
}

static void m_map_start(mflow_t *f, int fi, int i) {
  m_log(fi, L_START, i, 0, 0);
  int k, code;
  (void)m_call(f, fi, &k, &code);
  if (f->decided)
    return; /* cancelled inside: its promise is let go of */
  f->inflight++;
  if (k < 0) {
    m_push(fi, i, (mout_t){M_REJECTED, code}); /* uvp's rejected promise */
    return;
  }
  f->item[i] = k;
  m_observe(k, fi, i);
}

static void m_map_pump(mflow_t *f, int fi) {
  while (!f->decided && f->next < f->n && f->inflight < f->limit)
    m_map_start(f, fi, f->next++);
  if (!f->decided && f->remaining == 0)
    m_decide(f, (mout_t){M_FULFILLED, 0});
  m_free_arg(f);
}

static void m_map_job(mflow_t *f, int fi, int i, mout_t out) {
  f->inflight--;
  f->remaining--;
  f->rec[i] = out;
  if (!f->decided && f->each) {
    m_log(fi, L_EACH, i, status_of(out), seen_of(out));
    if (cancels_inside(f->prog, f->side_calls++))
      m_cancel_inside(f);
  }
  if (!f->decided && out.st == M_REJECTED && f->ff) {
    m_decide(f, out);
    m_cancel_items(f);
  } else if (!f->decided) {
    m_map_pump(f, fi);
  }
  m_free_arg(f);
}

static void m_seq_job(mflow_t *f, int fi, mout_t out) {
  if (f->decided)
    return;
  if (out.st != M_FULFILLED || f->index == f->n) {
    m_decide(f, out);
  } else {
    m_log(fi, L_STEP, f->index++, 0, out.value);
    int k, code;
    int b = m_call(f, fi, &k, &code);
    if (f->decided)
      ; /* cancelled inside */
    else if (b == B_ERROR)
      m_decide(f, (mout_t){M_REJECTED, code});
    else if (b == B_NULL)
      m_decide(f, out); /* stop: the last value */
    else {
      f->cur = k;
      m_observe(k, fi, 0);
    }
  }
  m_free_arg(f);
}

static void m_retry_attempt(mflow_t *f, int fi) {
  m_log(fi, L_ATTEMPT, f->tries++, 0, 0);
  int k, code;
  (void)m_call(f, fi, &k, &code);
  if (f->decided) {
    m_free_arg(f);
    return;
  }
  if (k < 0)
    m_push(fi, 0, (mout_t){M_REJECTED, code});
  else
    m_observe(k, fi, 0);
  f->cur = k;
}

static void m_retry_job(mflow_t *f, int fi, mout_t out) {
  if (f->decided)
    return;
  if (out.st == M_REJECTED && f->tries < f->attempts && f->pred) {
    m_log(fi, L_PRED, f->tries - 1, out.value, 0);
    if (cancels_inside(f->prog, f->side_calls++))
      m_cancel_inside(f);
  }
  /* Nothing here ever asks for another attempt. */
  if (!f->decided)
    m_decide(f, out);
  m_free_arg(f);
}

static void m_run_job(void) {
  mjob_t j = M.q[M.qh++];
  mflow_t *f = &M.f[j.flow];
  if (f->kind == F_MAP)
    m_map_job(f, j.flow, j.index, j.out);
  else if (f->kind == F_RETRY)
    m_retry_job(f, j.flow, j.out);
  else
    m_seq_job(f, j.flow, j.out);
}

/* ---- the system under test ---------------------------------------------- */

typedef struct sflow_s {
  int id, kind;
  uint8_t prog[PROG];
  uvp_promise_t *result;
  bool held;
  int calls, side_calls, freed;
  size_t limit, next;
  int item[MAXN];
} sflow_t;

typedef struct sut_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  bool closed;
  /* The harness keeps one reference to each promise a callback made until
   * the end, to look at it, and drops another when the input says. */
  uvp_promise_t *slot[MAXSLOT];
  bool own[MAXSLOT]; /* the droppable reference is still held */
  int ns;
  sflow_t f[MAXF];
  int nf;
  ev_t log[MAXLOG];
  int nlog;
} sut_t;

static sut_t S;

static void s_enter(sflow_t *f, int what, int index, int status, int value) {
  if (f->freed != 0)
    fail("callback after its destroy notifier", f->id, f->freed);
  if (S.closed)
    fail("callback after uvp_ctx_close", f->id, what);
  if (S.nlog == MAXLOG)
    fail("callbacks without end", f->id, what);
  S.log[S.nlog++] = (ev_t){f->id, what, index, status, value};
}

static void s_free(void *arg) { ((sflow_t *)arg)->freed++; }

static void s_cancel_inside(sflow_t *f) {
  check_rc_or("cancel from a callback", uvp_promise_cancel(f->result), 0,
              FUZZ_SETTLE_CODES);
}

/* A start, step or attempt: store a promise in *out or return a code. */
static int s_call(sflow_t *f, uvp_promise_t **out, int *slot) {
  int call = f->calls++;
  int b = behaviour(f->prog, call, f->kind, S.ns);
  *slot = -1;
  if (b == B_CANCEL)
    s_cancel_inside(f);
  if (b == B_ERROR)
    return error_of(f->id, call);
  if (b == B_NULL)
    return 0;
  uvp_promise_t *p;
  int rc = uvp_promise_new(S.ctx, &p);
  if (rc != 0) { /* an injected failure: the flow takes it as an error */
    check_rc("promise_new in a callback", rc, UV_ENOMEM);
    return rc;
  }
  int k = S.ns++;
  if (b == B_FULFILLED &&
      uvp_promise_resolve(p, (void *)(intptr_t)value_of(k), NULL) != 0)
    abort();
  if (b == B_REJECTED && uvp_promise_reject(p, code_of(k), NULL, NULL) != 0)
    abort();
  S.slot[k] = uvp_promise_retain(uvp_promise_retain(p));
  S.own[k] = true;
  *slot = k;
  *out = p;
  return 0;
}

static int s_start(void *arg, size_t index, uvp_promise_t **out) {
  sflow_t *f = arg;
  s_enter(f, L_START, (int)index, 0, 0);
  if (index != f->next)
    fail("map: items start out of order", (int)index, (int)f->next);
  size_t running = 0;
  for (size_t i = 0; i < index; i++)
    if (f->item[i] >= 0 && uvp_promise_state(S.slot[f->item[i]]) == UVP_PENDING)
      running++;
  if (running >= f->limit)
    fail("map: one more than limit started", (int)running + 1, (int)f->limit);
  f->next++;
  return s_call(f, out, &f->item[index]);
}

static void s_each(void *arg, size_t index, const uvp_outcome_t *o) {
  sflow_t *f = arg;
  s_enter(f, L_EACH, (int)index, o->status, (int)(intptr_t)o->value);
  if (cancels_inside(f->prog, f->side_calls++))
    s_cancel_inside(f);
}

static int s_step(void *arg, size_t index, const uvp_outcome_t *prev,
                  uvp_promise_t **next) {
  sflow_t *f = arg;
  s_enter(f, L_STEP, (int)index, prev->status, (int)(intptr_t)prev->value);
  int k;
  return s_call(f, next, &k);
}

static int s_attempt(void *arg, unsigned int attempt, uvp_promise_t **out) {
  sflow_t *f = arg;
  s_enter(f, L_ATTEMPT, (int)attempt, 0, 0);
  int k;
  return s_call(f, out, &k);
}

static int s_pred(void *arg, int code, unsigned int attempt) {
  sflow_t *f = arg;
  s_enter(f, L_PRED, (int)attempt, code, 0);
  if (cancels_inside(f->prog, f->side_calls++))
    s_cancel_inside(f);
  return 0;
}

/* A code no promise here rejects with: retry_on that never retries. */
static const int never_codes[] = {UV_EAI_AGAIN};

/* ---- comparing ----------------------------------------------------------- */

static void compare_list(int fi) {
  const mflow_t *f = &M.f[fi];
  const uvp_settled_list_t *l = uvp_promise_value(S.f[fi].result);
  if (l == NULL || l->count != (size_t)f->n)
    fail("map: list count", l != NULL ? (int)l->count : -1, f->n);
  size_t ok = 0;
  for (int i = 0; i < f->n; i++) {
    const uvp_settled_t *it = &l->items[i];
    if (it->status != status_of(f->rec[i]))
      fail("map: item status", i, it->status);
    if ((int)(intptr_t)it->value != seen_of(f->rec[i]))
      fail("map: item value", i, (int)(intptr_t)it->value);
    if (f->item[i] >= 0 && it->promise != S.slot[f->item[i]])
      fail("map: item promise", i, f->item[i]);
    ok += it->status == 0;
  }
  if (l->fulfilled != ok || l->rejected != l->count - ok)
    fail("map: list counts", (int)l->fulfilled, (int)ok);
}

static void compare(void) {
  if (fuzz_model_lost())
    return;
  if (S.nlog != M.nlog)
    fail("callback calls", S.nlog, M.nlog);
  for (int e = 0; e < M.nlog; e++)
    if (memcmp(&S.log[e], &M.log[e], sizeof(ev_t)) != 0)
      fail("callback call", e, S.log[e].flow * 10 + S.log[e].what);
  if (S.ns != M.ns)
    fail("promises made", S.ns, M.ns);
  for (int k = 0; k < M.ns; k++)
    check_outcome("promise", S.slot[k], (int)M.s[k].out.st, M.s[k].out.value);
  for (int fi = 0; fi < M.nf; fi++) {
    const mflow_t *f = &M.f[fi];
    if (S.f[fi].freed != (int)f->freed)
      fail("destroy notifier runs", S.f[fi].freed, (int)f->freed);
    if (!f->held)
      continue;
    if (f->kind == F_MAP && f->result.st == M_FULFILLED) {
      if (uvp_promise_state(S.f[fi].result) != UVP_FULFILLED)
        fail("map", (int)uvp_promise_state(S.f[fi].result), UVP_FULFILLED);
      compare_list(fi);
    } else {
      check_outcome("result", S.f[fi].result, (int)f->result.st,
                    f->result.value);
    }
  }
}

/* ---- operations ---------------------------------------------------------- */

static const uint8_t *in;
static size_t in_len, in_pos;

static uint8_t next_byte(void) { return in_pos < in_len ? in[in_pos++] : 0; }

/* Flow fi's call returned rc: if it was refused for an injected failure,
 * the flow never was (no callback ran; an arg handed over with its free
 * function was freed once, never twice: uvp.h, "Handing over"). */
static bool refused(int fi, int rc) {
  if (!fuzz_alloc_refused(rc))
    return false;
  if (S.f[fi].calls != 0 || S.f[fi].side_calls != 0 || S.f[fi].freed > 1)
    fail("a refused flow ran its callbacks or kept its arg", fi, S.f[fi].freed);
  M.nf--;
  S.nf--;
  return true;
}

/* A new flow of `kind` on both sides, its program read from the input;
 * -1 when there is no room. */
static int new_flow(int kind, bool notifier) {
  if (M.nf == MAXF)
    return -1;
  int fi = M.nf++;
  S.nf++;
  mflow_t *f = &M.f[fi];
  sflow_t *s = &S.f[fi];
  *f = (mflow_t){.kind = kind, .notifier = notifier, .held = true, .cur = -1};
  *s = (sflow_t){.id = fi, .kind = kind, .held = true};
  for (int j = 0; j < PROG; j++)
    f->prog[j] = s->prog[j] = next_byte();
  for (int i = 0; i < MAXN; i++)
    f->item[i] = s->item[i] = -1;
  return fi;
}

static void op_map(uint8_t b) {
  int fi = new_flow(F_MAP, (b & 0x80) == 0);
  if (fi < 0)
    return;
  mflow_t *f = &M.f[fi];
  sflow_t *s = &S.f[fi];
  uvp_map_opts_t o = {(size_t)((b >> 3) % 4),
                      (b & 0x20) ? UVP_MAP_FAIL_FAST : 0,
                      (b & 0x40) ? s_each : NULL, f->notifier ? s_free : NULL};
  s->limit = o.limit != 0 ? o.limit : uvp_pool_size();
  f->n = f->remaining = b % 7;
  f->limit = (int)s->limit;
  f->ff = o.flags != 0;
  f->each = o.on_settle != NULL;
  int rc = uvp_promise_map(S.ctx, (size_t)f->n, s_start, s, &o, &s->result);
  if (refused(fi, rc))
    return;
  check_rc("map", rc, 0);
  if (!fuzz_model_lost())
    m_map_pump(f, fi);
}

static void op_sequence(int kind, uint8_t b) {
  uint8_t init = next_byte();
  int fi = new_flow(kind, (b & 0x80) == 0);
  if (fi < 0)
    return;
  mflow_t *f = &M.f[fi];
  sflow_t *s = &S.f[fi];
  int k = kind == F_REDUCE && S.ns > 0 && !(init & 0x80) ? init % S.ns : -1;
  uvp_promise_t *initial = k >= 0 ? S.slot[k] : NULL;
  uvp_free_cb nf = f->notifier ? s_free : NULL;
  int rc;
  f->n = kind == F_LOOP ? INT32_MAX : b % 5;
  if (kind == F_LOOP)
    rc = nf ? uvp_promise_loop_full(S.ctx, s_step, s, nf, &s->result)
            : uvp_promise_loop(S.ctx, s_step, s, &s->result);
  else if (nf)
    rc = uvp_promise_reduce_full(S.ctx, (size_t)f->n, s_step, s, nf, initial,
                                 &s->result);
  else
    rc =
        uvp_promise_reduce(S.ctx, (size_t)f->n, s_step, s, initial, &s->result);
  if (refused(fi, rc))
    return;
  check_rc("sequence", rc, 0);
  f->cur = k;
  if (fuzz_model_lost())
    return;
  if (k >= 0)
    m_observe(k, fi, 0);
  else
    m_push(fi, 0, (mout_t){M_FULFILLED, 0});
}

static void op_retry(uint8_t b) {
  int fi = new_flow(F_RETRY, (b & 0x80) == 0);
  if (fi < 0)
    return;
  mflow_t *f = &M.f[fi];
  sflow_t *s = &S.f[fi];
  uvp_retry_opts_t o = {.attempts = (unsigned int)(b % 4),
                        .arg_free = f->notifier ? s_free : NULL};
  f->attempts = o.attempts != 0 ? (int)o.attempts : 3;
  f->pred = (b & 0x40) != 0;
  if (f->pred) {
    o.should_retry = s_pred;
  } else if (f->attempts > 1) {
    o.retry_on = never_codes;
    o.retry_on_count = 1;
  }
  int rc = uvp_retry(S.ctx, s_attempt, s, &o, &s->result);
  if (refused(fi, rc))
    return;
  check_rc("retry", rc, 0);
  if (!fuzz_model_lost())
    m_retry_attempt(f, fi);
}

static void op_slot(int op, uint8_t b) {
  int k = S.ns > 0 ? b % S.ns : -1;
  if (k < 0 || !S.own[k])
    return;
  uvp_promise_t *p = S.slot[k];
  if (op == 3) {
    uvp_promise_release(p);
    S.own[k] = M.s[k].own = false;
    return;
  }
  bool lost = fuzz_model_lost();
  bool pending = !lost && M.s[k].out.st == M_PENDING;
  int rc = op == 0 ? uvp_promise_resolve(p, (void *)(intptr_t)value_of(k), NULL)
           : op == 1 ? uvp_promise_reject(p, code_of(k), NULL, NULL)
                     : uvp_promise_cancel(p);
  check_rc_or("settle a promise", rc, pending ? 0 : UVP_ESETTLED,
              FUZZ_SETTLE_CODES);
  if (pending)
    m_settle(k, op == 0   ? (mout_t){M_FULFILLED, value_of(k)}
                : op == 1 ? (mout_t){M_REJECTED, code_of(k)}
                          : (mout_t){M_REJECTED, UV_ECANCELED});
}

static void op_result(bool cancel, uint8_t b) {
  int fi = M.nf > 0 ? b % M.nf : -1;
  if (fi < 0 || !M.f[fi].held)
    return;
  mflow_t *f = &M.f[fi];
  if (!cancel) {
    uvp_promise_release(S.f[fi].result);
    f->held = false;
    return;
  }
  bool lost = fuzz_model_lost();
  check_rc_or("cancel a result", uvp_promise_cancel(S.f[fi].result),
              f->decided ? UVP_ESETTLED : 0, FUZZ_SETTLE_CODES);
  if (!lost && !f->decided)
    m_cancel_flow(f);
}

static void drain(void) {
  uvp_ctx_stats_t st;
  do {
    uv_run(&S.loop, UV_RUN_NOWAIT);
    if (uvp_ctx_stats(S.ctx, &st) != 0)
      abort();
  } while (st.queued != 0);
  fuzz_alloc_settle();
  while (!fuzz_model_lost() && M.qh < M.qt)
    m_run_job();
}

static void turn(unsigned int budget) {
  check_rc("budget", uvp_ctx_set_budget(S.ctx, budget), 0);
  uv_run(&S.loop, UV_RUN_ONCE);
  check_rc("budget", uvp_ctx_set_budget(S.ctx, HUGE_BUDGET), 0);
  fuzz_alloc_settle();
  if (fuzz_model_lost())
    return;
  for (unsigned int j = 0; j < 2 * budget && M.qh < M.qt; j++)
    m_run_job();
}

/* uvp_ctx_close wherever the input stopped. */
static void teardown(void) {
  fuzz_alloc_mark();
  check_rc("ctx_close", uvp_ctx_close(S.ctx), 0);
  fuzz_alloc_settle();
  S.closed = true;
  for (int fi = 0; fi < M.nf; fi++)
    if (!M.f[fi].decided) {
      m_decide(&M.f[fi], (mout_t){M_REJECTED, UVP_ECLOSED});
      m_free_arg(&M.f[fi]);
    }
  for (int k = 0; k < M.ns; k++)
    if (M.s[k].out.st == M_PENDING)
      M.s[k].out = (mout_t){M_REJECTED, UVP_ECLOSED};
  compare();
  for (int k = 0; k < S.ns; k++) {
    if (S.own[k])
      uvp_promise_release(S.slot[k]);
    uvp_promise_release(S.slot[k]);
  }
  for (int fi = 0; fi < M.nf; fi++)
    if (M.f[fi].held)
      uvp_promise_release(S.f[fi].result);
  uv_run(&S.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&S.loop) != 0)
    fail("uv_loop_close", 1, 0);
  for (int fi = 0; fi < M.nf; fi++)
    if (S.f[fi].freed != (int)M.f[fi].notifier)
      fail("destroy notifier runs at the end", S.f[fi].freed,
           (int)M.f[fi].notifier);
  fuzz_check_all_freed();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&M, 0, sizeof(M));
  memset(&S, 0, sizeof(S));
  fuzz_count_allocations(&data, &size);
  in = data;
  in_len = size;
  in_pos = 0;
  if (uv_loop_init(&S.loop) != 0 || uvp_ctx_new(&S.loop, &S.ctx) != 0)
    abort();
  check_rc("budget", uvp_ctx_set_budget(S.ctx, HUGE_BUDGET), 0);
  uvp_ctx_set_unhandled_cb(S.ctx, unhandled_not_cancelled, NULL);
  fuzz_alloc_arm();
  while (in_pos < in_len) {
    uint8_t op = next_byte() % 16;
    uint8_t b = next_byte();
    fuzz_alloc_mark();
    switch (op) {
    case 0:
      op_map(b);
      break;
    case 1:
      op_sequence(F_REDUCE, b);
      break;
    case 2:
      op_sequence(F_LOOP, b);
      break;
    case 3:
      op_retry(b);
      break;
    case 4: /* resolve a promise a callback made */
    case 5: /* reject it */
    case 6: /* cancel it */
    case 7: /* release the harness's reference */
      op_slot(op - 4, b);
      break;
    case 8:
    case 9:
      op_result(op == 8, b);
      break;
    case 10:
      turn(1 + b % 3);
      break;
    default:
      drain();
      break;
    }
    fuzz_alloc_settle(); /* a failure no call reported */
    compare();
  }
  teardown();
  return 0;
}

/* libFuzzer harness: the input decodes into a sequence of operations on up to
 * SLOTS promises — create, resolve, reject, then/catch/finally with every kind
 * of handler result, all/allSettled/race/any over earlier promises, cancel,
 * release, a settle posted by another thread and the promise let go of before
 * the loop reads it, one loop turn, teardown — which run both on uvp and on a
 * small reference model of the semantics written here.  Every handler call
 * (which handler, with what outcome, in what order) and every promise's final
 * state must agree; after uv_loop_close every allocation of uvp's must be freed
 * (fuzz-helpers.h counts them); ASan/UBSan/LSan catch the rest.  Every handler
 * is registered with a destroy notifier: it must run exactly once by the end of
 * teardown, and never before its handler runs (a handler that runs after its
 * notifier would read freed memory).  No cancellation and no teardown's
 * UVP_ECLOSED is reported as unhandled.  An input may first arm allocation
 * failures (fuzz-helpers.h): a call that meets one and returns UV_ENOMEM must
 * have changed nothing but hand its arg back: a refused handler's notifier
 * runs once before the call returns (uvp.h, "Handing over"); a failure met
 * anywhere else (a loop turn, a call that returns 0) loses the model, and from
 * there on only what holds in any case is checked: each call's code is one
 * uvp.h documents, every notifier runs once and never before its handler,
 * teardown frees everything.
 *
 * The model is deliberately naive: a FIFO job queue like ECMAScript's,
 * promises as plain structs, combinators as counters.  It mirrors uvp's
 * documented choices where JavaScript has none: adopting an already settled
 * promise settles at once (no extra ticks); cancel travels up to a promise
 * whose only consumer is the cancelled one; teardown rejects what is
 * pending with UVP_ECLOSED and runs no handler.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=true; run on a copy of
 * the seeds (libFuzzer adds what it finds to the directory it is given):
 *   c=$(mktemp -d); cp -r test/fuzz-corpus/. $c/
 *   build-fuzz/test/fuzz-model -max_total_time=60 $c */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-helpers.h"

#define SLOTS 24
#define MAXREACT 8
#define MAXLOG 512

/* ---- the model ----------------------------------------------------------- */

typedef enum { M_PENDING, M_FULFILLED, M_REJECTED } mstate_t;

typedef enum { H_VALUE, H_REJECT, H_PASS, H_ADOPT } hkind_t;

typedef struct mreact_s {
  int kind;    /* 0 then-like (mask), 1 finally, 2 adopt-follower, 3 combinator,
                * 4 finally waiting for what its handler returned (mask and
                * harg: the original state and value) */
  int mask;    /* UVP_ON_* for then-like */
  int handler; /* id for the log */
  hkind_t hk;  /* what the handler returns */
  int harg;    /* value / code / slot to adopt */
  int target;  /* derived slot (-1: none) */
  int combo;   /* combinator index for kind 3 */
  int index;   /* input index for kind 3 */
} mreact_t;

typedef struct mprom_s {
  bool used;
  mstate_t st;
  bool locked;    /* resolved with another promise (or owned): no resolve */
  int waiting_on; /* slot it follows (-1) */
  int value;      /* fulfilled value / rejection code */
  int nr;
  mreact_t r[MAXREACT];
  bool held;   /* the harness still holds its reference */
  bool owned;  /* settled only by the library (combinator results) */
  bool pinned; /* an adopt handler names it: never released */
} mprom_t;

typedef struct mjob_s {
  mreact_t r;
  int src;
} mjob_t;

typedef struct mcombo_s {
  int kind; /* 0 all, 1 allSettled, 2 race, 3 any */
  int result;
  int n;
  int remaining;
  bool done;
  int vals[4];
  int codes[4];
  int ins[4]; /* the input slots */
} mcombo_t;

typedef struct model_s {
  mprom_t p[SLOTS];
  mjob_t q[4096];
  int qh, qt;
  mcombo_t c[SLOTS];
  int nc;
  int log[MAXLOG][3];
  int nlog;
  bool overflow;
} model_t;

static void m_log(model_t *m, int handler, int status, int value) {
  if (m->nlog >= MAXLOG) {
    m->overflow = true;
    return;
  }
  m->log[m->nlog][0] = handler;
  m->log[m->nlog][1] = status;
  m->log[m->nlog][2] = value;
  m->nlog++;
}

static void m_enqueue(model_t *m, mreact_t r, int src) {
  if (m->qt - m->qh >= 4096 || m->qt >= 4096) {
    m->overflow = true;
    return;
  }
  m->q[m->qt].r = r;
  m->q[m->qt].src = src;
  m->qt++;
}

static void m_settle(model_t *m, int s, mstate_t st, int value) {
  mprom_t *p = &m->p[s];
  p->st = st;
  p->value = value;
  p->waiting_on = -1;
  for (int i = 0; i < p->nr; i++)
    m_enqueue(m, p->r[i], s);
  p->nr = 0;
}

static void m_add_reaction(model_t *m, int s, mreact_t r) {
  mprom_t *p = &m->p[s];
  if (p->st != M_PENDING) {
    m_enqueue(m, r, s);
    return;
  }
  if (p->nr >= MAXREACT) {
    m->overflow = true;
    return;
  }
  p->r[p->nr++] = r;
}

/* Whether q is d or waits for it, following what each waits on. */
static bool m_waits_for(const model_t *m, int q, int d) {
  for (int x = q;; x = m->p[x].waiting_on) {
    if (x == d)
      return true;
    if (m->p[x].st != M_PENDING || m->p[x].waiting_on < 0)
      return false;
  }
}

/* Pending d follows q; q == d is a cycle (m_waits_for). */
static void m_adopt(model_t *m, int d, int q) {
  if (m->p[q].st != M_PENDING) {
    m_settle(m, d, m->p[q].st, m->p[q].value);
    return;
  }
  if (m_waits_for(m, q, d)) {
    m_settle(m, d, M_REJECTED, UVP_ECYCLE);
    return;
  }
  mreact_t r = {2, 0, -1, H_PASS, 0, d, -1, 0};
  m->p[d].waiting_on = q;
  m->p[d].locked = true;
  m_add_reaction(m, q, r);
}

/* A decided combinator observes its inputs no more: its reactions leave
 * the inputs still pending (they no longer count as their consumers). */
static void m_combo_detach(model_t *m, int ci) {
  for (int s = 0; s < SLOTS; s++) {
    mprom_t *p = &m->p[s];
    int kept = 0;
    for (int k = 0; k < p->nr; k++)
      if (p->r[k].kind != 3 || p->r[k].combo != ci)
        p->r[kept++] = p->r[k];
    p->nr = kept;
  }
}

static void m_combo_input(model_t *m, int ci, int idx, int src) {
  mcombo_t *c = &m->c[ci];
  mprom_t *in = &m->p[src];
  if (c->done || m->p[c->result].st != M_PENDING)
    return;
  bool ok = in->st == M_FULFILLED;
  switch (c->kind) {
  case 0: /* all */
    if (!ok) {
      c->done = true;
      m_settle(m, c->result, M_REJECTED, in->value);
    } else {
      c->vals[idx] = in->value;
      if (--c->remaining == 0) {
        c->done = true;
        m_settle(m, c->result, M_FULFILLED, 1000 + c->n);
      }
    }
    break;
  case 1: /* allSettled */
    c->vals[idx] = ok ? in->value : 0;
    c->codes[idx] = ok ? 0 : in->value;
    if (--c->remaining == 0) {
      c->done = true;
      m_settle(m, c->result, M_FULFILLED, 2000 + c->n);
    }
    break;
  case 2: /* race */
    c->done = true;
    m_settle(m, c->result, in->st, in->value);
    break;
  default: /* any */
    if (ok) {
      c->done = true;
      m_settle(m, c->result, M_FULFILLED, in->value);
    } else if (--c->remaining == 0) {
      c->done = true;
      m_settle(m, c->result, M_REJECTED, UVP_EAGGREGATE);
    }
    break;
  }
  if (c->done)
    m_combo_detach(m, ci);
}

/* One job: the reaction r of settled promise src. */
static void m_run_job(model_t *m, mjob_t *j) {
  mreact_t *r = &j->r;
  mprom_t *src = &m->p[j->src];
  int status = src->st == M_FULFILLED ? 0 : src->value;
  int sval = src->st == M_FULFILLED ? src->value : 0;
  if (r->kind == 3) {
    m_combo_input(m, r->combo, r->index, j->src);
    return;
  }
  int d = r->target;
  bool derived_ok =
      d >= 0 && m->p[d].st == M_PENDING && m->p[d].waiting_on == j->src;
  if (r->kind == 2) { /* an adopting promise following src */
    if (derived_ok)
      m_settle(m, d, src->st, src->value);
    return;
  }
  if (r->kind == 4) { /* the original outcome, unless src rejected */
    if (derived_ok && src->st == M_REJECTED)
      m_settle(m, d, M_REJECTED, src->value);
    else if (derived_ok)
      m_settle(m, d, (mstate_t)r->mask, r->harg);
    return;
  }
  bool match =
      r->kind == 1 || (src->st == M_FULFILLED ? (r->mask & UVP_ON_FULFILLED)
                                              : (r->mask & UVP_ON_REJECTED));
  if (!match) {
    if (derived_ok)
      m_settle(m, d, src->st, src->value);
    return;
  }
  /* A handler whose derived promise was cancelled does not run. */
  if (!derived_ok)
    return;
  m_log(m, r->handler, status, sval);
  m->p[d].waiting_on = -1;
  if (r->kind == 1) { /* finally */
    if (r->hk == H_REJECT)
      m_settle(m, d, M_REJECTED, r->harg);
    else if (r->hk == H_ADOPT && m->p[r->harg].st == M_REJECTED)
      m_settle(m, d, M_REJECTED, m->p[r->harg].value);
    else if (r->hk == H_ADOPT && m->p[r->harg].st == M_PENDING) {
      /* waits for the adopted one, then passes the original through; one
       * that waits for d is a cycle, as for any adoption */
      if (m_waits_for(m, r->harg, d)) {
        m_settle(m, d, M_REJECTED, UVP_ECYCLE);
        return;
      }
      mreact_t w = {4, (int)src->st, -1, H_PASS, src->value, d, -1, 0};
      m->p[d].waiting_on = r->harg;
      m_add_reaction(m, r->harg, w);
    } else
      m_settle(m, d, src->st, src->value);
    return;
  }
  switch (r->hk) {
  case H_VALUE:
    m_settle(m, d, M_FULFILLED, r->harg);
    break;
  case H_REJECT:
    m_settle(m, d, M_REJECTED, r->harg);
    break;
  case H_PASS:
    m_settle(m, d, src->st, src->value);
    break;
  default:
    m_adopt(m, d, r->harg);
    break;
  }
}

/* uvp_promise_cancel(s), s pending: s rejects with UV_ECANCELED and stops
 * waiting, so what it followed loses a consumer; that one is cancelled too
 * when s was its last (Bluebird's rule, uvp.h). */
static void m_cancel(model_t *m, int s) {
  int up = m->p[s].waiting_on;
  m_settle(m, s, M_REJECTED, UV_ECANCELED);
  if (m->p[s].owned) { /* a combinator's result: its inputs next */
    int ci = 0;
    while (ci < m->nc && (m->c[ci].result != s || m->c[ci].done))
      ci++;
    if (ci == m->nc) { /* not a combinator's after all */
      m->overflow = true;
      return;
    }
    mcombo_t *c = &m->c[ci];
    for (int k = 0; k < c->n; k++) {
      mprom_t *in = &m->p[c->ins[k]];
      bool sole = in->st == M_PENDING && in->nr > 0;
      for (int j = 0; j < in->nr && sole; j++)
        sole = in->r[j].kind == 3 && in->r[j].combo == ci;
      if (sole)
        m_cancel(m, c->ins[k]);
    }
    c->done = true;
    m_combo_detach(m, ci);
    return;
  }
  if (up < 0 || m->p[up].st != M_PENDING)
    return; /* a queued reaction for s finds it cancelled and does nothing */
  mprom_t *u = &m->p[up];
  int kept = 0;
  for (int k = 0; k < u->nr; k++)
    if (u->r[k].target != s)
      u->r[kept++] = u->r[k];
  u->nr = kept;
  if (kept == 0)
    m_cancel(m, up);
}

static void m_drain(model_t *m) {
  while (m->qh < m->qt && !m->overflow) {
    mjob_t j = m->q[m->qh++];
    m_run_job(m, &j);
  }
}

/* ---- the system under test ---------------------------------------------- */

typedef struct sut_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *p[SLOTS];
  int log[MAXLOG][3];
  int nlog;
} sut_t;

static sut_t S;
static model_t M;

typedef struct hdesc_s {
  int id;
  hkind_t hk;
  int harg;
  int freed; /* times its destroy notifier ran */
} hdesc_t;

static hdesc_t H[256];
static int nh;

static void notifier(void *arg) { ((hdesc_t *)arg)->freed++; }

static uvp_ret_t handler(void *arg, const uvp_outcome_t *in) {
  hdesc_t *h = arg;
  if (h->freed != 0)
    fail("handler ran after its notifier", h->id, h->freed);
  if (S.nlog < MAXLOG) {
    S.log[S.nlog][0] = h->id;
    S.log[S.nlog][1] = in->status;
    S.log[S.nlog][2] = in->status == 0 ? (int)(intptr_t)in->value : 0;
    S.nlog++;
  }
  switch (h->hk) {
  case H_VALUE:
    return uvp_ret_value((void *)(intptr_t)h->harg, NULL);
  case H_REJECT:
    return uvp_ret_reject(h->harg, NULL, NULL);
  case H_PASS:
    return uvp_ret_pass();
  default:
    return uvp_ret_adopt(uvp_promise_retain(S.p[h->harg]));
  }
}

static int value_of(uvp_promise_t *p, int slot_kind) {
  (void)slot_kind;
  return (int)(intptr_t)uvp_promise_value(p);
}

/* Compare the handler logs and every live slot's state. */
static void compare(void) {
  if (M.overflow || fuzz_model_lost())
    return;
  if (S.nlog != M.nlog)
    fail("handler count", S.nlog, M.nlog);
  for (int i = 0; i < S.nlog; i++)
    for (int k = 0; k < 3; k++) {
      /* Combinator views are pointers; the model only knows they exist. */
      if (k == 2 && M.log[i][2] >= 1000)
        continue;
      if (S.log[i][k] != M.log[i][k])
        fail("handler log entry", S.log[i][k], M.log[i][k]);
    }
  for (int s = 0; s < SLOTS; s++) {
    if (!M.p[s].used || !M.p[s].held)
      continue;
    uvp_state_t st = uvp_promise_state(S.p[s]);
    if ((int)st != (int)M.p[s].st)
      fail("state", st, M.p[s].st);
    if (st == UVP_REJECTED && uvp_promise_reason(S.p[s], NULL) != M.p[s].value)
      fail("reason", uvp_promise_reason(S.p[s], NULL), M.p[s].value);
    if (st == UVP_FULFILLED && M.p[s].value < 1000 &&
        value_of(S.p[s], 0) != M.p[s].value)
      fail("value", value_of(S.p[s], 0), M.p[s].value);
  }
}

static int free_slot(void) {
  for (int s = 0; s < SLOTS; s++)
    if (!M.p[s].used)
      return s;
  return -1;
}

static int pick(uint8_t b) {
  int s = b % SLOTS;
  return M.p[s].used && M.p[s].held ? s : -1;
}

static void new_slot(int s, uvp_promise_t *p, bool owned) {
  memset(&M.p[s], 0, sizeof(M.p[s]));
  M.p[s].used = true;
  M.p[s].held = true;
  M.p[s].waiting_on = -1;
  M.p[s].owned = owned;
  M.p[s].locked = owned;
  S.p[s] = p;
}

static const int codes[] = {UV_ECONNREFUSED, UV_ETIMEDOUT, UV_ENOENT, UV_EIO};

/* Another thread settles a promise the harness holds, and is joined: its
 * message waits in the mailbox (issue 40). */
typedef struct poster_s {
  uvp_promise_t *p;
  int v, rc;
} poster_t;

static void poster(void *arg) {
  poster_t *x = arg;
  x->rc = uvp_promise_resolve(x->p, (void *)(intptr_t)x->v, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memset(&M, 0, sizeof(M));
  memset(&S, 0, sizeof(S));
  nh = 0;
  fuzz_count_allocations(&data, &size);
  if (uv_loop_init(&S.loop) != 0 || uvp_ctx_new(&S.loop, &S.ctx) != 0)
    abort();
  uvp_ctx_set_budget(S.ctx, 1u << 30);
  uvp_ctx_set_unhandled_cb(S.ctx, unhandled_not_cancelled, NULL);
  fuzz_alloc_arm();

  size_t i = 0;
#define NEXT() (i < size ? data[i++] : 0)
  while (i < size && !M.overflow) {
    uint8_t op = NEXT() % 13;
    fuzz_alloc_mark();
    switch (op) {
    case 0: { /* new pending */
      int s = free_slot();
      if (s < 0)
        break;
      uvp_promise_t *p;
      int rc = uvp_promise_new(S.ctx, &p);
      if (fuzz_alloc_refused(rc))
        break;
      check_rc("promise_new", rc, 0);
      new_slot(s, p, false);
      break;
    }
    case 1:   /* resolve */
    case 2: { /* reject */
      int s = pick(NEXT());
      int v = NEXT();
      if (s < 0)
        break;
      int expect = M.p[s].st != M_PENDING || M.p[s].locked ? UVP_ESETTLED : 0;
      int rc = op == 1 ? uvp_promise_resolve(S.p[s], (void *)(intptr_t)v, NULL)
                       : uvp_promise_reject(S.p[s], codes[v % 4], NULL, NULL);
      check_rc_or("settle return", rc, expect, FUZZ_SETTLE_CODES);
      if (rc == 0)
        m_settle(&M, s, op == 1 ? M_FULFILLED : M_REJECTED,
                 op == 1 ? v : codes[v % 4]);
      break;
    }
    case 3:   /* then / catch / on-both */
    case 4: { /* finally */
      int s = pick(NEXT());
      uint8_t b = NEXT(), c = NEXT();
      int d = free_slot();
      if (s < 0 || d < 0 || nh >= 256)
        break;
      hdesc_t *h = &H[nh];
      h->id = nh++;
      h->hk = (hkind_t)(b % 4);
      h->harg = c;
      h->freed = 0;
      if (h->hk == H_REJECT)
        h->harg = codes[c % 4];
      if (h->hk == H_ADOPT) {
        int t = pick(c);
        if (t < 0)
          h->hk = H_PASS;
        else {
          h->harg = t;
          M.p[t].pinned = true;
        }
      }
      int mask = 1 + (b >> 2) % 3;
      uvp_promise_t *out;
      int rc =
          op == 3
              ? uvp_promise_on_full(S.p[s], mask, handler, h, notifier, &out)
              : uvp_promise_finally_full(S.p[s], handler, h, notifier, &out);
      if (fuzz_alloc_refused(rc)) {
        if (h->freed != 1) /* handed over: freed once, before the return */
          fail("a refused handler's notifier did not run once", h->id,
               h->freed);
        nh--;
        break;
      }
      check_rc("on/finally", rc, 0);
      new_slot(d, out, false);
      M.p[d].locked = true;
      M.p[d].waiting_on = s;
      mreact_t r = {op == 3 ? 0 : 1, mask, h->id, h->hk, h->harg, d, -1, 0};
      m_add_reaction(&M, s, r);
      break;
    }
    case 5: { /* combinator */
      uint8_t b = NEXT();
      int n = (b >> 2) % 5, kind = b % 4;
      int ins[4], d = free_slot();
      uvp_promise_t *ps[4];
      bool okins = d >= 0;
      for (int k = 0; k < n; k++) {
        ins[k] = pick(NEXT());
        if (ins[k] < 0)
          okins = false;
        else
          ps[k] = S.p[ins[k]];
      }
      if (!okins || M.nc >= SLOTS)
        break;
      uvp_promise_t *out;
      int rc = kind == 0   ? uvp_promise_all(S.ctx, ps, (size_t)n, 0, &out)
               : kind == 1 ? uvp_promise_all_settled(S.ctx, ps, (size_t)n, &out)
               : kind == 2 ? uvp_promise_race(S.ctx, ps, (size_t)n, 0, &out)
                           : uvp_promise_any(S.ctx, ps, (size_t)n, 0, &out);
      if (fuzz_alloc_refused(rc))
        break; /* allocated before attaching: nothing changed (uvp.h) */
      check_rc("combinator", rc, 0);
      new_slot(d, out, true);
      mcombo_t *c = &M.c[M.nc];
      memset(c, 0, sizeof(*c));
      c->kind = kind;
      c->result = d;
      c->n = n;
      c->remaining = n;
      memcpy(c->ins, ins, sizeof(ins));
      for (int k = 0; k < n; k++) {
        mreact_t r = {3, 0, -1, H_PASS, 0, -1, M.nc, k};
        m_add_reaction(&M, ins[k], r);
      }
      if (n == 0 && kind != 2) {
        c->done = true;
        if (kind == 3)
          m_settle(&M, d, M_REJECTED, UVP_EAGGREGATE);
        else
          m_settle(&M, d, M_FULFILLED, (kind == 0 ? 1000 : 2000));
      }
      M.nc++;
      break;
    }
    case 6: { /* resolve_with */
      int s = pick(NEXT()), t = pick(NEXT());
      if (s < 0 || t < 0)
        break;
      int expect = M.p[s].st != M_PENDING || M.p[s].locked ? UVP_ESETTLED : 0;
      int rc = uvp_promise_resolve_with(S.p[s], S.p[t]);
      /* No UV_ENOMEM: a failure rejects s with it (seen as the model
       * lost, at the end of the operation). */
      check_rc_or("resolve_with return", rc, expect, FUZZ_SETTLE_CODES);
      if (rc == 0) {
        M.p[s].locked = true;
        m_adopt(&M, s, t);
      }
      break;
    }
    case 7:   /* one loop turn */
    case 8: { /* another */
      uv_run(&S.loop, UV_RUN_NOWAIT);
      fuzz_alloc_settle();
      m_drain(&M);
      compare();
      break;
    }
    case 9: { /* release a settled promise (never changes what is seen) */
      int s = pick(NEXT());
      if (s < 0 || M.p[s].st == M_PENDING || M.p[s].pinned)
        break;
      uvp_promise_release(S.p[s]);
      M.p[s].held = false;
      break;
    }
    case 10: { /* cancel, up the chain while it is the only consumer */
      int s = pick(NEXT());
      if (s < 0 || M.p[s].st != M_PENDING)
        break;
      check_rc_or("cancel", uvp_promise_cancel(S.p[s]), 0, FUZZ_SETTLE_CODES);
      m_cancel(&M, s);
      break;
    }
    case 11: { /* another thread settles it; then its last reference goes
                  before the loop reads the message: the message must apply
                  to it, never to the slot a later promise takes */
      int s = pick(NEXT());
      int v = NEXT();
      if (s < 0 || M.p[s].st != M_PENDING || M.p[s].locked || M.p[s].nr != 0 ||
          M.p[s].pinned)
        break;
      poster_t x = {S.p[s], v, 1};
      uv_thread_t tid;
      if (uv_thread_create(&tid, poster, &x) != 0)
        abort();
      uv_thread_join(&tid);
      if (fuzz_alloc_refused(x.rc))
        break;
      check_rc("posted settle", x.rc, 0);
      uvp_promise_release(S.p[s]); /* nothing observes it: it goes */
      M.p[s].st = M_FULFILLED;
      M.p[s].value = v;
      M.p[s].held = false;
      break;
    }
    default:
      break;
    }
    fuzz_alloc_settle(); /* a failure no call reported */
  }
  fuzz_alloc_mark();
  uv_run(&S.loop, UV_RUN_NOWAIT);
  fuzz_alloc_settle();
  m_drain(&M);
  compare();

  /* Teardown: everything pending becomes UVP_ECLOSED, no handler runs. */
  int before = S.nlog;
  check_rc("ctx_close", uvp_ctx_close(S.ctx), 0);
  if (S.nlog != before)
    fail("handler ran during teardown", S.nlog, before);
  for (int s = 0; s < SLOTS; s++) {
    if (!M.p[s].used || !M.p[s].held)
      continue;
    if (!M.overflow && !fuzz_model_lost() && M.p[s].st == M_PENDING &&
        uvp_promise_reason(S.p[s], NULL) != UVP_ECLOSED)
      fail("teardown reason", uvp_promise_reason(S.p[s], NULL), UVP_ECLOSED);
    uvp_promise_release(S.p[s]);
  }
  uv_run(&S.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&S.loop) != 0)
    fail("uv_loop_close", 1, 0);
  for (int k = 0; k < nh; k++)
    if (H[k].freed != 1)
      fail("notifier runs", H[k].id, H[k].freed);
  fuzz_check_all_freed();
  return 0;
}

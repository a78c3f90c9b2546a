/* uvp-nats: serving requests (uvp-nats.c says how it fits). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nats-internal.h"

/* ---- serving ------------------------------------------------------------- *
 * A service is a synchronous subscription whose messages sub_poll hands to
 * its taker (svc_take) instead of to waits, and a UVP_GROUP_DISCARD_SETTLED
 * group: each request is a member started by svc_start when the limit has
 * room, which spawns the program's fiber (or calls its start) under the
 * request's deadline; a handler on it (svc_replied) publishes the reply.
 *
 * Held requests.  From svc_take until its member ends, a request is on the
 * service's list (oldest first: the drain's deadline walks it) and in a
 * hash by reply subject (a cancel names the request by it); svc->held
 * counts them, and past limit + max_waiting a request is answered EBUSY at
 * once instead, so that what NATS pushes cannot pile up in the group's
 * queue.  The served_t of a request goes when nothing holds it: the
 * handler's destroy notifier (or the group's, sv_unstarted, if it never
 * started) and, for a fiber, the fiber's arg_free, since a fiber cut by a
 * cancel or the drain's deadline may still run its cleanup after its
 * member has settled.
 *
 * Cancels.  Every instance subscribes (plainly: whichever instance of the
 * queue group took the request must hear it) to UVP_NATS_CANCEL_PREFIX +
 * its subject; uvp_nats_request publishes there when its caller cuts it.
 * The cancel subscription is made before the service's own, so that
 * poll_subs, which walks the newest first, takes a request before a
 * cancel read with it in the same read event.  A cancel acts only with
 * its request's token (token_ok: issue 71); others are counted, forged.
 *
 * The service itself goes with its group's join (svc_join_free) once no
 * request's record is left (svc->live), which the connection's teardown
 * waits for (b->svcs). */
typedef struct served_s {
  uvp_nats_served_t pub;
  uint64_t arrived;
  uint64_t hash;                /* of its reply subject */
  struct served_s *hnext;       /* the hash's chain */
  struct served_s *prev, *next; /* the held list */
  uvp_promise_t *p; /* its fiber's or start's promise while it runs */
  uvp_span_t *span; /* its SERVER span, if it came with a traceparent */
  unsigned refs;    /* the group's or the handler's, and a fiber's */
  bool hashed;      /* in the hash (it has a reply subject) */
  bool started;     /* svc_start ran for it */
  bool handed;      /* svc_replied's destroy notifier holds it */
  bool dropped;     /* ended while waiting: a cancel, the drain's deadline */
  bool quiet;       /* its caller cancelled it: no reply */
  bool cut;         /* the drain's deadline cut it while it ran */
} served_t;

static void svc_maybe_free(uvp_nats_svc_t *svc);

static void sv_release(served_t *sv) {
  if (--sv->refs > 0)
    return;
  uvp_nats_svc_t *svc = sv->pub.svc;
  /* never started, or cut without a reply */
  uvp_nats__trace_end(svc->b->ctx, &sv->span, UV_ECANCELED);
  uvp_nats__msg_free(sv->pub.msg);
  free(sv);
  svc->live--;
  svc_maybe_free(svc);
}

/* ---- the held requests: a list, and a hash by reply subject ------------ */

/* The length of reply's part that names its request: all of it but a
 * cancel token, ".<UVP_NATS_CANCEL_TOKEN_LEN lowercase hex digits>" at
 * its end (the form of the unreleased requesters after 0.3.0,
 * uvp-nats.h). */
static size_t reply_key_len(const char *reply, size_t n) {
  size_t k = UVP_NATS_CANCEL_TOKEN_LEN;
  if (n <= k + 1 || reply[n - k - 1] != '.')
    return n;
  for (const char *c = reply + n - k; c < reply + n; c++)
    if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
      return n;
  return n - k - 1;
}

static uint64_t reply_hash(const char *s, size_t n) {
  uint64_t h = 14695981039346656037ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static size_t bucket_of(const uvp_nats_svc_t *svc, uint64_t h) {
  return (size_t)(h ^ (h >> 32)) & (svc->nbuckets - 1);
}

/* The hash with n buckets (a power of two), its entries moved over. */
static int held_rehash(uvp_nats_svc_t *svc, size_t n) {
  served_t **nb = calloc(n, sizeof(*nb));
  if (nb == NULL)
    return UV_ENOMEM;
  served_t **old = svc->buckets;
  size_t oldn = svc->nbuckets;
  svc->buckets = nb;
  svc->nbuckets = n;
  for (size_t i = 0; i < oldn; i++)
    for (served_t *sv = old[i], *next; sv != NULL; sv = next) {
      next = sv->hnext;
      size_t k = bucket_of(svc, sv->hash);
      sv->hnext = nb[k];
      nb[k] = sv;
    }
  free(old);
  return 0;
}

static void held_link(uvp_nats_svc_t *svc, served_t *sv) {
  sv->prev = svc->last;
  if (svc->last != NULL)
    svc->last->next = sv;
  else
    svc->first = sv;
  svc->last = sv;
  svc->held++;
  const char *reply = natsMsg_GetReply(sv->pub.msg);
  if (reply == NULL || *reply == '\0')
    return; /* nobody to cancel it */
  if (svc->held > svc->nbuckets &&
      held_rehash(svc, svc->nbuckets ? svc->nbuckets * 2 : 16) != 0 &&
      svc->nbuckets == 0)
    return; /* no memory: it cannot be cancelled, it is served */
  sv->hash = reply_hash(reply, reply_key_len(reply, strlen(reply)));
  size_t k = bucket_of(svc, sv->hash);
  sv->hnext = svc->buckets[k];
  svc->buckets[k] = sv;
  sv->hashed = true;
}

static void held_unlink(uvp_nats_svc_t *svc, served_t *sv) {
  if (sv->prev != NULL)
    sv->prev->next = sv->next;
  else
    svc->first = sv->next;
  if (sv->next != NULL)
    sv->next->prev = sv->prev;
  else
    svc->last = sv->prev;
  svc->held--;
  if (!sv->hashed)
    return;
  served_t **pp = &svc->buckets[bucket_of(svc, sv->hash)];
  while (*pp != sv)
    pp = &(*pp)->hnext;
  *pp = sv->hnext;
  sv->hashed = false;
  /* a service without a limit may have held a burst: a quarter of the
   * table once an eighth is used */
  if (svc->nbuckets > 64 && svc->held < svc->nbuckets / 8)
    (void)held_rehash(svc, svc->nbuckets / 4); /* no memory: it stays */
}

/* The held request whose reply subject names the same request as reply
 * (n bytes), tokens aside: token_ok judges those. */
static served_t *held_find(const uvp_nats_svc_t *svc, const char *reply,
                           size_t n) {
  if (svc->nbuckets == 0)
    return NULL;
  size_t k = reply_key_len(reply, n);
  uint64_t h = reply_hash(reply, k);
  for (served_t *sv = svc->buckets[bucket_of(svc, h)]; sv != NULL;
       sv = sv->hnext) {
    const char *r = natsMsg_GetReply(sv->pub.msg);
    if (sv->hash == h && reply_key_len(r, strlen(r)) == k &&
        memcmp(r, reply, k) == 0)
      return sv;
  }
  return NULL;
}

/* ---- replies ------------------------------------------------------------- */

/* Reply to req with body, or, for rc < 0, with Uvp-Error and `body` (NULL:
 * the code's message): the message made with its headers set, not written
 * as "Name: value" lines to be read back. */
static void svc_reply(uvp_nats_svc_t *svc, natsMsg *req, int rc,
                      const char *body) {
  const char *reply = natsMsg_GetReply(req);
  if (svc->closed || svc->b->state != S_OPEN)
    return;
  if (reply == NULL || *reply == '\0') {
    svc->stats.base.no_reply++;
    return;
  }
  if (!uvp_nats__subject_ok(reply, false))
    return;
  if (rc < 0 && body == NULL)
    body = uvp_nats_strerror(rc);
  size_t len = body != NULL ? strlen(body) : 0;
  natsMsg *m = NULL;
  natsStatus s = len <= INT32_MAX
                     ? natsMsg_Create(&m, reply, NULL, body, (int)len)
                     : NATS_INVALID_ARG;
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m, UVP_NATS_WORKER_HEADER, svc->worker);
  if (s == NATS_OK && rc < 0)
    s = natsMsgHeader_Set(m, UVP_NATS_ERROR_HEADER, uvp_nats_err_name(rc));
  if (s != NATS_OK) {
    uvp_nats__msg_free(m);
    return;
  }
  if (uvp_nats__msg_send(svc->b, m, UINT64_MAX) == 0)
    svc->stats.base.replied++;
}

#define DRAINING "worker draining"

static uvp_ret_t svc_replied(void *arg, const uvp_outcome_t *in) {
  served_t *sv = arg;
  uvp_nats_svc_t *svc = sv->pub.svc;
  if (sv->quiet) /* its caller gave up: counted at the cancel */
    return uvp_ret_value(NULL, NULL);
  if (in->status < 0)
    svc->stats.base.failed++;
  /* The span ends before the reply goes out: ended after, a preempted
   * thread could record its end after the caller read the reply, and
   * uvp-trace merge would take that false pair for the tightest one. */
  uvp_nats__trace_end(svc->b->ctx, &sv->span, in->status);
  svc_reply(svc, sv->pub.msg, in->status,
            in->status == 0 ? in->value
            : sv->cut       ? DRAINING
                            : NULL);
  return uvp_ret_value(NULL, NULL);
}

/* svc_replied's destroy notifier: the member has ended. */
static void sv_ended(void *arg) {
  served_t *sv = arg;
  uvp_nats_svc_t *svc = sv->pub.svc;
  if (!sv->handed) /* its registration was refused: sv_unstarted's */
    return;
  svc->running--;
  held_unlink(svc, sv);
  uvp_promise_release(sv->p);
  sv->p = NULL;
  sv_release(sv);
}

/* A fiber's arg_free: it has returned. */
static void sv_fiber_done(void *arg) { sv_release(arg); }

/* A member that is done at once (expired, dropped, or failed to start). */
static int settled_member(uvp_nats_svc_t *svc, uvp_promise_t **out) {
  int rc = uvp_promise_new(svc->b->ctx, out);
  if (rc == 0)
    uvp_promise_resolve(*out, NULL, NULL);
  return rc;
}

static int svc_start(void *arg, uvp_promise_t **out) {
  served_t *sv = arg;
  uvp_nats_svc_t *svc = sv->pub.svc;
  uvp_ctx_t *ctx = svc->b->ctx;
  sv->started = true;
  svc->waiting--;
  if (sv->dropped) /* counted when it was */
    return settled_member(svc, out);
  uint64_t waited = uv_now(svc->b->loop) - sv->arrived;
  uint64_t spent = waited + svc->o.margin_ms;
  if (spent >= sv->pub.timeout_ms) { /* its caller has given up */
    svc->stats.base.expired++;
    return settled_member(svc, out); /* sv_unstarted frees sv */
  }
  sv->pub.deadline_ms = sv->pub.timeout_ms - spent;
  uvp_promise_t *p = NULL;
  int rc;
  /* the caller's trace: what the fiber or start begins is the span's
   * (no memory for it: served untraced) */
  (void)uvp_nats__trace_enter(ctx, sv->span, sv->pub.msg);
  if (svc->o.fiber != NULL) {
    uvp_fiber_opts_t fo = {.deadline_ms = sv->pub.deadline_ms,
                           .arg_free = sv_fiber_done};
    /* the fiber's, until it returns (a refused spawn gives it back at
     * once: uvp.h, "Handing over") */
    sv->refs++;
    rc = uvp_fiber_spawn(ctx, svc->o.fiber, &sv->pub, &fo, &p);
  } else {
    rc = uvp_deadline_set(ctx, sv->pub.deadline_ms);
    if (rc == 0)
      rc = svc->o.start(&sv->pub, &p);
  }
  svc->stats.base.served++;
  uvp_promise_t *d = NULL;
  if (rc == 0)
    rc = uvp_promise_on_full(p, UVP_ON_BOTH, svc_replied, sv, sv_ended, &d);
  if (rc != 0) {
    if (p != NULL)
      uvp_promise_release(p);
    svc->stats.base.failed++;
    uvp_nats__trace_end(ctx, &sv->span, rc); /* before the reply, as above */
    svc_reply(svc, sv->pub.msg, rc, NULL);
    return settled_member(svc, out); /* sv_unstarted frees sv */
  }
  sv->p = p; /* to cut it: the caller's cancel, the drain's deadline */
  sv->handed = true;
  svc->running++;
  *out = d;
  return 0;
}

/* The group's destroy notifier for a request's served_t: runs right
 * after svc_start, or when the request never starts (cancelled or torn
 * down while it waited: counted as expired). */
static void sv_unstarted(void *arg) {
  served_t *sv = arg;
  uvp_nats_svc_t *svc = sv->pub.svc;
  if (sv->handed)
    return;
  if (!sv->started) {
    svc->waiting--;
    if (!sv->dropped)
      svc->stats.base.expired++;
  }
  held_unlink(svc, sv);
  sv_release(sv);
}

/* Uvp-Timeout-Ms: absent (the default), or a decimal number of
 * milliseconds up to UVP_NATS_TIMEOUT_MAX; -1 for anything else.  Absent
 * is also an empty value, and a header block nats.c cannot read: its 3.4
 * cannot read one with any header of empty value ("traceparent:", which
 * HTTP and NATS allow), and such a request is served as one without
 * headers, as uvp_nats_msg_header hands them over, not refused. */
static int64_t timeout_of(const uvp_nats_svc_t *svc, natsMsg *m) {
  const char *v = NULL;
  natsStatus s = natsMsgHeader_Get(m, UVP_NATS_TIMEOUT_HEADER, &v);
  if (s != NATS_OK || v == NULL || *v == '\0')
    return (int64_t)svc->o.default_timeout_ms;
  uint64_t t = 0;
  for (const char *c = v; *c != '\0'; c++) {
    if (*c < '0' || *c > '9' || c - v > 9)
      return -1;
    t = t * 10 + (uint64_t)(*c - '0');
  }
  return t > UVP_NATS_TIMEOUT_MAX ? -1 : (int64_t)t;
}

/* Requests held (waiting or running) past limit + max_waiting: refused. */
static bool svc_full(const uvp_nats_svc_t *svc) {
  size_t limit = svc->o.limit;
  return limit > 0 && svc->held >= limit &&
         svc->held - limit >= svc->max_waiting;
}

static void svc_take(void *owner, natsMsg *m) {
  uvp_nats_svc_t *svc = owner;
  svc->stats.base.received++;
  if (svc->cut) { /* past the drain's deadline: nothing more is served */
    svc->stats.cut++;
    svc_reply(svc, m, UV_ECANCELED, DRAINING);
    uvp_nats__msg_free(m);
    return;
  }
  int64_t t = timeout_of(svc, m);
  if (t < 0 || (uint64_t)t <= svc->o.margin_ms) { /* nothing left for it */
    svc->stats.base.bad++;
    svc_reply(svc, m, t < 0 ? UV_EPROTO : UV_ETIMEDOUT, NULL);
    uvp_nats__msg_free(m);
    return;
  }
  if (svc_full(svc)) {
    svc->stats.busy++;
    svc_reply(svc, m, UV_EBUSY, "worker busy: its queue is full");
    uvp_nats__msg_free(m);
    return;
  }
  served_t *sv = calloc(1, sizeof(*sv));
  if (sv == NULL) {
    uvp_nats__msg_free(m); /* its caller times out */
    return;
  }
  sv->pub = (uvp_nats_served_t){m, svc, svc->o.arg, (uint64_t)t, 0};
  sv->arrived = uv_now(svc->b->loop);
  sv->span = uvp_nats__trace_in(svc->b->ctx, UVP_SPAN_SERVER,
                                natsMsg_GetSubject(m), m);
  sv->refs = 1;
  svc->live++;
  held_link(svc, sv);
  svc->waiting++;
  /* Refused, the group has run sv_unstarted (uvp.h, "Handing over"),
   * which counted sv as expired: it was not. */
  if (uvp_group_start(svc->g, svc_start, sv, sv_unstarted) != 0)
    svc->stats.base.expired--;
}

/* ---- cancels from callers ------------------------------------------------ */

/* The two tokens are equal, in constant time: how far a guess matched
 * must not show. */
static bool token_eq(const char *want, const char *got) {
  unsigned char diff = 0;
  for (size_t i = 0; i < UVP_NATS_CANCEL_TOKEN_LEN; i++)
    diff |= (unsigned char)(want[i] ^ got[i]);
  return diff == 0;
}

/* The cancel m, whose body `named` (n bytes) names the request, is the
 * caller's: its token is the request's.  The token is the request's
 * UVP_NATS_CANCEL_TOKEN_HEADER, which the cancel carries too; from the
 * unreleased requesters after 0.3.0, it ends the request's reply subject,
 * and the cancel names that whole subject.  A request
 * without one (from a client that is not uvp, or sent with
 * UVP_NATS_REQUEST_NO_CANCEL) cannot be cancelled: anyone could have sent
 * that cancel. */
static bool token_ok(natsMsg *request, natsMsg *m, const char *named,
                     size_t n) {
  const char *reply = natsMsg_GetReply(request);
  size_t rn = strlen(reply), k = reply_key_len(reply, rn);
  if (k < rn) /* in the subject: the cancel must name it whole */
    return reply_key_len(named, n) < n &&
           token_eq(reply + k + 1, named + n - UVP_NATS_CANCEL_TOKEN_LEN);
  const char *want = uvp_nats_msg_header(request, UVP_NATS_CANCEL_TOKEN_HEADER);
  const char *got = uvp_nats_msg_header(m, UVP_NATS_CANCEL_TOKEN_HEADER);
  return want != NULL && got != NULL &&
         strlen(want) == UVP_NATS_CANCEL_TOKEN_LEN &&
         strnlen(got, UVP_NATS_CANCEL_TOKEN_LEN + 1) ==
             UVP_NATS_CANCEL_TOKEN_LEN &&
         token_eq(want, got);
}

static void svc_cancel_take(void *owner, natsMsg *m) {
  uvp_nats_svc_t *svc = owner;
  svc->stats.cancels++;
  const char *reply = natsMsg_GetData(m);
  int n = natsMsg_GetDataLength(m);
  served_t *sv =
      reply != NULL && n > 0 ? held_find(svc, reply, (size_t)n) : NULL;
  if (sv != NULL && !token_ok(sv->pub.msg, m, reply, (size_t)n)) {
    svc->stats.forged++; /* counted, not logged: a flood must cost nothing */
    sv = NULL;
  }
  if (sv != NULL && !sv->quiet && !sv->dropped) {
    const char *cause = uvp_nats_msg_header(m, UVP_NATS_CAUSE_HEADER);
    char why[320];
    snprintf(why, sizeof(why), "cancelled by the caller%s%s",
             cause != NULL && *cause != '\0' ? ": " : "",
             cause != NULL ? cause : "");
    if (!sv->started) { /* it will never start */
      sv->dropped = sv->quiet = true;
      svc->stats.cancelled++;
    } else if (sv->p != NULL &&
               uvp_promise_cancel_binding(sv->p, UV_ECANCELED, why) == 0) {
      sv->quiet = true; /* (settled already: its reply is on its way) */
      svc->stats.cancelled++;
    }
  }
  uvp_nats__msg_free(m);
}

static void svc_cancels_gone(void *owner, int rc) {
  uvp_nats_svc_t *svc = owner;
  (void)rc;
  svc->cancels = NULL;
}

/* Never drained (it goes with the service): as gone. */
static void svc_cancels_drained(void *owner) {
  uvp_nats_svc_t *svc = owner;
  uvp_nats_sub_t *s = svc->cancels;
  s->taker = NULL;
  svc->cancels = NULL;
  uvp_nats__sub_free(s, 0);
}

static const uvp_nats__taker_t cancels_taker = {
    svc_cancel_take, svc_cancels_drained, svc_cancels_gone};

/* ---- the service's end --------------------------------------------------- */

/* Stop watching the drain's deadline. */
static void deadline_stop(uvp_nats_svc_t *svc) {
  uvp_promise_t *d = svc->deadline;
  if (d == NULL)
    return;
  svc->deadline = NULL;
  (void)uvp_promise_cancel(d); /* its delay with it */
  uvp_promise_release(d);
}

static uvp_ret_t svc_joined(void *arg, const uvp_outcome_t *in) {
  uvp_nats_svc_t *svc = arg;
  (void)in;
  deadline_stop(svc);
  if (svc->drain_p != NULL) { /* its value: the last counters */
    uvp_promise_t *p = svc->drain_p;
    uvp_nats_serve_stats_ex_t *st = malloc(sizeof(*st));
    if (st != NULL)
      (void)uvp_nats_serve_stats_ex(svc, st);
    svc->drain_p = NULL;
    uvp_promise_resolve(p, st, st != NULL ? free : NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_value(NULL, NULL);
}

static void svc_maybe_free(uvp_nats_svc_t *svc) {
  if (!svc->joined || svc->live > 0)
    return;
  uvp_nats_t *b = svc->b;
  free(svc->buckets);
  free(svc);
  b->svcs--;
  uvp_nats__waiting_add(b, -1);
  uvp_nats__maybe_finish(b);
}

static void svc_join_free(void *arg) {
  uvp_nats_svc_t *svc = arg;
  if (svc->g == NULL) /* its registration was refused: uvp_nats_serve's */
    return;
  if (svc->drain_p != NULL) { /* torn down */
    uvp_promise_reject(svc->drain_p, UVP_ECLOSED, NULL, NULL);
    uvp_promise_release(svc->drain_p);
    svc->drain_p = NULL;
  }
  deadline_stop(svc);
  if (svc->cancels != NULL)
    (void)uvp_nats_unsubscribe(svc->cancels); /* svc_cancels_gone */
  uvp_group_release(svc->g);
  svc->g = NULL;
  svc->joined = true;
  svc_maybe_free(svc); /* or when the last cut fiber has returned */
}

/* The subscription is done with (drained, or given up at the drain's
 * deadline): no more members; the join ends it. */
static void svc_sub_end(uvp_nats_svc_t *svc, bool unsubscribe) {
  uvp_nats_sub_t *s = svc->sub;
  s->taker = NULL;
  svc->sub = NULL;
  if (unsubscribe && svc->b->state == S_OPEN)
    (void)natsSubscription_Unsubscribe(s->sub);
  uvp_nats__sub_free(s, 0);
  uvp_group_close(svc->g);
}

static void svc_drained(void *owner) { svc_sub_end(owner, false); }

/* Its subscription goes: the connection closes (rc < 0), or the program
 * unsubscribed it. */
static void svc_gone(void *owner, int rc) {
  uvp_nats_svc_t *svc = owner;
  svc->sub = NULL;
  svc->closed = rc != 0;
  if (rc != 0) { /* the connection closes: members are cut, unreplied */
    uvp_group_cancel(svc->g);
    uvp_group_close(svc->g);
  }
}

static const uvp_nats__taker_t svc_taker = {svc_take, svc_drained, svc_gone};

/* The drain's deadline has passed: what waits is answered ECANCELED, what
 * runs is cut (its handler replies ECANCELED), and a subscription nats.c
 * has not finished draining (a server that does not answer) is given up. */
static void svc_cut(uvp_nats_svc_t *svc) {
  if (svc->cut)
    return;
  svc->cut = true;
  deadline_stop(svc);
  for (served_t *sv = svc->first; sv != NULL; sv = sv->next) {
    if (sv->quiet || sv->dropped || sv->cut)
      continue;
    if (!sv->started) {
      sv->dropped = true;
      svc->stats.cut++;
      svc_reply(svc, sv->pub.msg, UV_ECANCELED, DRAINING);
    } else if (sv->p != NULL &&
               uvp_promise_cancel_binding(sv->p, UV_ECANCELED, DRAINING) == 0) {
      sv->cut = true;
      svc->stats.cut++;
    }
  }
  if (svc->sub != NULL)
    svc_sub_end(svc, true);
}

static uvp_ret_t on_deadline(void *arg, const uvp_outcome_t *in) {
  uvp_nats_svc_t *svc = arg;
  if (in->status != 0) /* its context closes */
    return uvp_ret_value(NULL, NULL);
  uvp_promise_t *d = svc->deadline; /* this handler's: not cancelled */
  svc->deadline = NULL;
  svc_cut(svc);
  uvp_promise_release(d);
  return uvp_ret_value(NULL, NULL);
}

/* The drain ends within ms from now, if that is nearer than it was to. */
static void deadline_set(uvp_nats_svc_t *svc, uint64_t ms) {
  if (ms == UVP_NO_DEADLINE || svc->cut)
    return;
  uint64_t now = uvp_clock_now(svc->b->ctx);
  uint64_t at = ms < UINT64_MAX - now ? now + ms : UINT64_MAX - 1;
  if (at >= svc->drain_at)
    return;
  svc->drain_at = at;
  deadline_stop(svc);
  uvp_promise_t *t = NULL;
  if (ms == 0 || uvp_delay(svc->b->ctx, ms, NULL, NULL, UVP_UNREF, &t) != 0 ||
      uvp_promise_on(t, UVP_ON_BOTH | UVP_ON_TAKE, on_deadline, svc,
                     &svc->deadline) != 0) {
    svc_cut(svc); /* at once, or no memory to watch for it: now */
    return;
  }
  uvp_promise_mark_handled(svc->deadline);
}

/* ---- the service's start ------------------------------------------------- */

static int svc_new(uvp_nats_t *b, const uvp_nats_serve_opts_t *o,
                   uvp_nats_svc_t **out) {
  uvp_nats_svc_t *svc = calloc(1, sizeof(*svc));
  if (svc == NULL)
    return UV_ENOMEM;
  svc->b = b;
  svc->o = *o;
  if (svc->o.margin_ms == 0)
    svc->o.margin_ms = 10;
  if (svc->o.default_timeout_ms == 0)
    svc->o.default_timeout_ms = UVP_NATS_REQUEST_TIMEOUT_DEFAULT;
  svc->max_waiting = o->limit <= SIZE_MAX / 2 ? o->limit * 2 : SIZE_MAX;
  svc->drain_at = UINT64_MAX;
  if (o->worker != NULL) {
    snprintf(svc->worker, sizeof(svc->worker), "%s", o->worker);
  } else {
    char host[256] = "localhost";
    (void)gethostname(host, sizeof(host) - 1);
    snprintf(svc->worker, sizeof(svc->worker), "%s:%ld", host, (long)getpid());
  }
  uvp_group_opts_t go = {.limit = o->limit, .flags = UVP_GROUP_DISCARD_SETTLED};
  uvp_promise_t *join = NULL, *d = NULL;
  uvp_group_t *g = NULL; /* svc->g once the join's handler is registered */
  int rc = uvp_group_new(b->ctx, &go, &g);
  if (rc == 0 && (rc = uvp_group_join(g, &join)) == 0) {
    rc = uvp_promise_on_full(join, UVP_ON_BOTH, svc_joined, svc, svc_join_free,
                             &d);
    uvp_promise_release(join);
  }
  if (rc != 0) {
    if (g != NULL)
      uvp_group_release(g);
    free(svc);
    return rc;
  }
  svc->g = g;
  uvp_promise_mark_handled(d);
  uvp_promise_release(d);
  b->svcs++;
  uvp_nats__waiting_add(b, 1);
  *out = svc;
  return 0;
}

/* The subscription of the service's cancels: UVP_NATS_CANCEL_PREFIX and
 * its subject. */
static int cancels_subscribe(uvp_nats_t *b, const char *subject,
                             uvp_nats_sub_t **out) {
  static const char prefix[] = UVP_NATS_CANCEL_PREFIX;
  size_t n = strlen(subject);
  char *c = malloc(sizeof(prefix) + n);
  if (c == NULL)
    return UV_ENOMEM;
  memcpy(c, prefix, sizeof(prefix) - 1);
  memcpy(c + sizeof(prefix) - 1, subject, n + 1);
  int rc = uvp_nats_subscribe(b, c, NULL, out);
  free(c);
  return rc;
}

int uvp_nats_serve(uvp_nats_t *b, const char *subject, const char *queue,
                   const uvp_nats_serve_opts_t *o, uvp_nats_svc_t **out) {
  if (b == NULL || o == NULL || out == NULL ||
      (o->fiber == NULL && o->start == NULL) ||
      !uvp_nats__subject_ok(subject, true))
    return UV_EINVAL;
  uvp_nats_sub_t *c, *s;
  int rc = cancels_subscribe(b, subject, &c); /* first: polled last */
  if (rc != 0)
    return rc;
  if ((rc = uvp_nats_subscribe(b, subject, queue, &s)) != 0) {
    uvp_nats_unsubscribe(c);
    return rc;
  }
  uvp_nats_svc_t *svc;
  if ((rc = svc_new(b, o, &svc)) != 0) {
    uvp_nats_unsubscribe(s);
    uvp_nats_unsubscribe(c);
    return rc;
  }
  svc->sub = s;
  s->taker = &svc_taker;
  s->owner = svc;
  svc->cancels = c;
  c->taker = &cancels_taker;
  c->owner = svc;
  *out = svc;
  return 0;
}

int uvp_nats_serve_set_max_waiting(uvp_nats_svc_t *svc, size_t max_waiting) {
  if (svc == NULL)
    return UV_EINVAL;
  svc->max_waiting = max_waiting;
  return 0;
}

/* A drain, within ms; `again`: a second call shortens it. */
static int drain_start(uvp_nats_svc_t *svc, uint64_t ms, bool again,
                       uvp_promise_t **out, const char *file, int line) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  if (again && svc->drain_p != NULL) {
    deadline_set(svc, ms);
    *out = uvp_promise_retain(svc->drain_p);
    return 0;
  }
  if (svc->drain_p != NULL || svc->sub == NULL || svc->sub->draining)
    return svc->closed ? UVP_ECLOSED : UV_EALREADY;
  uvp_promise_t *p = NULL; /* the service keeps uv_run() going: no hook */
  int rc = uvp_nats__drain_start(svc->sub, NULL, &p, file, line);
  if (rc != 0)
    return rc;
  svc->drain_p = p;
  *out = uvp_promise_retain(p);
  deadline_set(svc, ms);
  return 0;
}

int uvp_nats_serve_drain_at(uvp_nats_svc_t *svc, uvp_promise_t **out,
                            const char *file, int line) {
  return drain_start(svc, UVP_NO_DEADLINE, false, out, file, line);
}

int uvp_nats_serve_drain_within_at(uvp_nats_svc_t *svc, uint64_t deadline_ms,
                                   uvp_promise_t **out, const char *file,
                                   int line) {
  return drain_start(svc, deadline_ms, true, out, file, line);
}

int uvp_nats_serve_stats(const uvp_nats_svc_t *svc,
                         uvp_nats_serve_stats_t *out) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  *out = svc->stats.base;
  return 0;
}

int uvp_nats_serve_stats_ex(const uvp_nats_svc_t *svc,
                            uvp_nats_serve_stats_ex_t *out) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  *out = svc->stats;
  out->waiting = svc->waiting;
  out->running = svc->running;
  out->max_waiting = svc->max_waiting;
  return 0;
}

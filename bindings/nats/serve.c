/* uvp-nats: serving requests (uvp-nats.c says how it fits). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nats-internal.h"

/* ---- serving ------------------------------------------------------------- *
 * A service is a synchronous subscription whose messages sub_poll hands to
 * its taker (svc_take) instead of to waits, and a UVP_GROUP_DISCARD_SETTLED
 * group: each request is a member started by svc_start when the limit has room,
 * which spawns the program's fiber (or calls its start) under the
 * request's deadline; a handler on it (svc_replied) publishes the reply.
 * The served_t of a request is freed by that handler's destroy notifier,
 * or by the group's (sv_unstarted) if it never started.  The service
 * itself goes with its group's join (svc_join_free), which the
 * connection's teardown waits for (b->svcs). */
typedef struct served_s {
  uvp_nats_served_t pub;
  uint64_t arrived;
  bool started; /* svc_start ran for it */
  bool handed;  /* svc_replied's destroy notifier frees it */
} served_t;

static void sv_free(void *arg) {
  served_t *sv = arg;
  natsMsg_Destroy(sv->pub.msg);
  free(sv);
}

/* Reply to req with body, or, for rc < 0, with Uvp-Error: the message
 * made with its headers set, not written as "Name: value" lines to be
 * read back. */
static void svc_reply(uvp_nats_svc_t *svc, natsMsg *req, int rc,
                      const char *body) {
  const char *reply = natsMsg_GetReply(req);
  if (svc->closed || svc->b->state != S_OPEN)
    return;
  if (reply == NULL || *reply == '\0') {
    svc->stats.no_reply++;
    return;
  }
  if (!uvp_nats__subject_ok(reply, false))
    return;
  if (rc < 0)
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
    natsMsg_Destroy(m);
    return;
  }
  if (uvp_nats__msg_send(svc->b, m, UINT64_MAX) == 0)
    svc->stats.replied++;
}

static uvp_ret_t svc_replied(void *arg, const uvp_outcome_t *in) {
  served_t *sv = arg;
  uvp_nats_svc_t *svc = sv->pub.svc;
  if (in->status < 0)
    svc->stats.failed++;
  svc_reply(svc, sv->pub.msg, in->status, in->status == 0 ? in->value : NULL);
  return uvp_ret_value(NULL, NULL);
}

/* A member that is done at once (expired, or failed to start). */
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
  uint64_t waited = uv_now(svc->b->loop) - sv->arrived;
  uint64_t spent = waited + svc->o.margin_ms;
  if (spent >= sv->pub.timeout_ms) { /* its caller has given up */
    svc->stats.expired++;
    return settled_member(svc, out); /* sv_unstarted frees sv */
  }
  sv->pub.deadline_ms = sv->pub.timeout_ms - spent;
  uvp_promise_t *p = NULL;
  int rc;
  if (svc->o.fiber != NULL) {
    uvp_fiber_opts_t fo = {.deadline_ms = sv->pub.deadline_ms};
    rc = uvp_fiber_spawn(ctx, svc->o.fiber, &sv->pub, &fo, &p);
  } else {
    rc = uvp_deadline_set(ctx, sv->pub.deadline_ms);
    if (rc == 0)
      rc = svc->o.start(&sv->pub, &p);
  }
  svc->stats.served++;
  uvp_promise_t *d = NULL;
  if (rc == 0)
    rc = uvp_promise_on_full(p, UVP_ON_BOTH, svc_replied, sv, sv_free, &d);
  if (p != NULL)
    uvp_promise_release(p);
  if (rc != 0) {
    svc->stats.failed++;
    svc_reply(svc, sv->pub.msg, rc, NULL);
    return settled_member(svc, out); /* sv_unstarted frees sv */
  }
  sv->handed = true;
  *out = d;
  return 0;
}

/* The group's destroy notifier for a request's served_t: runs right
 * after svc_start, or when the request never starts (cancelled or torn
 * down while it waited: counted as expired). */
static void sv_unstarted(void *arg) {
  served_t *sv = arg;
  if (sv->handed)
    return;
  if (!sv->started)
    sv->pub.svc->stats.expired++;
  sv_free(sv);
}

/* Uvp-Timeout-Ms: absent (the default), or a decimal number of
 * milliseconds up to UVP_NATS_TIMEOUT_MAX; -1 for anything else. */
static int64_t timeout_of(const uvp_nats_svc_t *svc, natsMsg *m) {
  const char *v = uvp_nats_msg_header(m, UVP_NATS_TIMEOUT_HEADER);
  if (v == NULL)
    return (int64_t)svc->o.default_timeout_ms;
  uint64_t t = 0;
  if (*v == '\0')
    return -1;
  for (const char *c = v; *c != '\0'; c++) {
    if (*c < '0' || *c > '9' || c - v > 9)
      return -1;
    t = t * 10 + (uint64_t)(*c - '0');
  }
  return t > UVP_NATS_TIMEOUT_MAX ? -1 : (int64_t)t;
}

static void svc_take(void *owner, natsMsg *m) {
  uvp_nats_svc_t *svc = owner;
  svc->stats.received++;
  int64_t t = timeout_of(svc, m);
  if (t <= 0) {
    svc->stats.bad++;
    svc_reply(svc, m, t < 0 ? UV_EPROTO : UV_ETIMEDOUT, NULL);
    natsMsg_Destroy(m);
    return;
  }
  served_t *sv = calloc(1, sizeof(*sv));
  if (sv == NULL) {
    natsMsg_Destroy(m); /* its caller times out */
    return;
  }
  sv->pub = (uvp_nats_served_t){m, svc, svc->o.arg, (uint64_t)t, 0};
  sv->arrived = uv_now(svc->b->loop);
  if (uvp_group_start(svc->g, svc_start, sv, sv_unstarted) != 0)
    sv_free(sv);
}

static uvp_ret_t svc_joined(void *arg, const uvp_outcome_t *in) {
  uvp_nats_svc_t *svc = arg;
  (void)in;
  if (svc->drain_p != NULL) {
    uvp_promise_t *p = svc->drain_p;
    svc->drain_p = NULL;
    uvp_promise_resolve(p, NULL, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_value(NULL, NULL);
}

static void svc_join_free(void *arg) {
  uvp_nats_svc_t *svc = arg;
  uvp_nats_t *b = svc->b;
  if (svc->drain_p != NULL) { /* torn down */
    uvp_promise_reject(svc->drain_p, UVP_ECLOSED, NULL, NULL);
    uvp_promise_release(svc->drain_p);
  }
  uvp_group_release(svc->g);
  free(svc);
  b->svcs--;
  uvp_nats__waiting_add(b, -1);
  uvp_nats__maybe_finish(b);
}

/* The subscription is drained: no more members; the join ends it. */
static void svc_drained(void *owner) {
  uvp_nats_svc_t *svc = owner;
  uvp_nats_sub_t *s = svc->sub;
  s->taker = NULL;
  svc->sub = NULL;
  uvp_nats__sub_free(s, 0);
  uvp_group_close(svc->g);
}

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
  if (o->worker != NULL) {
    snprintf(svc->worker, sizeof(svc->worker), "%s", o->worker);
  } else {
    char host[256] = "localhost";
    (void)gethostname(host, sizeof(host) - 1);
    snprintf(svc->worker, sizeof(svc->worker), "%s:%ld", host, (long)getpid());
  }
  uvp_group_opts_t go = {.limit = o->limit, .flags = UVP_GROUP_DISCARD_SETTLED};
  uvp_promise_t *join = NULL, *d = NULL;
  int rc = uvp_group_new(b->ctx, &go, &svc->g);
  if (rc == 0 && (rc = uvp_group_join(svc->g, &join)) == 0) {
    rc = uvp_promise_on_full(join, UVP_ON_BOTH, svc_joined, svc, svc_join_free,
                             &d);
    uvp_promise_release(join);
  }
  if (rc != 0) {
    if (svc->g != NULL)
      uvp_group_release(svc->g);
    free(svc);
    return rc;
  }
  uvp_promise_mark_handled(d);
  uvp_promise_release(d);
  b->svcs++;
  uvp_nats__waiting_add(b, 1);
  *out = svc;
  return 0;
}

int uvp_nats_serve(uvp_nats_t *b, const char *subject, const char *queue,
                   const uvp_nats_serve_opts_t *o, uvp_nats_svc_t **out) {
  if (b == NULL || o == NULL || out == NULL ||
      (o->fiber == NULL && o->start == NULL))
    return UV_EINVAL;
  uvp_nats_sub_t *s;
  int rc = uvp_nats_subscribe(b, subject, queue, &s);
  if (rc != 0)
    return rc;
  uvp_nats_svc_t *svc;
  if ((rc = svc_new(b, o, &svc)) != 0) {
    uvp_nats_unsubscribe(s);
    return rc;
  }
  svc->sub = s;
  s->taker = &svc_taker;
  s->owner = svc;
  *out = svc;
  return 0;
}

int uvp_nats_serve_drain_at(uvp_nats_svc_t *svc, uvp_promise_t **out,
                            const char *file, int line) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  if (svc->drain_p != NULL || svc->sub == NULL || svc->sub->draining)
    return svc->closed ? UVP_ECLOSED : UV_EALREADY;
  uvp_promise_t *p = NULL; /* the service keeps uv_run() going: no hook */
  int rc = uvp_nats__drain_start(svc->sub, NULL, &p, file, line);
  if (rc != 0)
    return rc;
  svc->drain_p = p;
  *out = uvp_promise_retain(p);
  return 0;
}

int uvp_nats_serve_stats(const uvp_nats_svc_t *svc,
                         uvp_nats_serve_stats_t *out) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  *out = svc->stats;
  return 0;
}

/* uvp-nats JetStream: serving the messages of a pull (js.c says how it
 * fits).
 *
 * A service is a pull whose messages go to a taker (svc_take) instead of
 * its waits, and a UVP_GROUP_DISCARD_SETTLED group: each message is a
 * member started by svc_start, which spawns the program's fiber (or calls
 * its start) under the message's deadline; a handler on it (svc_done)
 * acknowledges, gives back or terminates the message.  The pull asks for
 * the group's limit, less what runs (its want is the limit: it asks only
 * for the room its held messages leave), so nothing waits in the group's
 * queue for long.
 *
 * A served_t is held by the group (until its start has run), by the
 * handler and by the fiber (its arg_free: the fiber may run on after its
 * promise was cut, and reads the message); the message goes with the
 * last.  The service goes with its group's join and its timer's close. */
#include "js-internal.h"

typedef struct served_s served_t;
struct served_s {
  uvp_nats_js_served_t pub;
  uvp_promise_t *p;      /* the fiber's or start's, while it runs */
  uvp_span_t *span;      /* its CONSUMER span, if it has a traceparent */
  served_t *prev, *next; /* the service's running members */
  unsigned refs;
  bool started;
};

struct uvp_nats_js_svc_s {
  uvp_nats_js_pull_t *pull;
  uvp_nats_js_t *js;
  uvp_group_t *g;
  uvp_nats_js_serve_opts_t o;
  uint64_t *backoff;
  served_t *first; /* running */
  uvp_promise_t *drain_p;
  bool draining, failed, waiting;
  uv_timer_t timer; /* the drain's deadline */
  uvp_nats_js_serve_stats_t stats;
};

bool uvp_nats_js_retryable(int code) {
  switch (code) {
  case UV_ETIMEDOUT:
  case UV_ECANCELED:
  case UV_EAGAIN:
  case UV_EBUSY:
  case UV_ENOBUFS:
  case UV_ENOMEM:
  case UV_ECONNREFUSED:
  case UV_ECONNRESET:
  case UV_ECONNABORTED:
  case UV_EPIPE:
  case UV_ENETDOWN:
  case UV_ENETUNREACH:
  case UV_EHOSTUNREACH:
  case UV_EAI_AGAIN:
  case UVP_NATS_ENORESPONDERS:
  case UVP_NATS_EDISCONNECTED:
    return true;
  default:
    return false;
  }
}

static void sv_release(void *arg) {
  served_t *sv = arg;
  if (--sv->refs > 0)
    return;
  /* given back or terminated without its member running */
  uvp_nats__trace_end(sv->pub.svc->js->ctx, &sv->span, UV_ECANCELED);
  uvp_nats__js_msg_free(sv->pub.msg); /* unfinished: given back */
  free(sv);
}

static void running_unlink(uvp_nats_js_svc_t *svc, served_t *sv) {
  if (sv->prev != NULL)
    sv->prev->next = sv->next;
  else
    svc->first = sv->next;
  if (sv->next != NULL)
    sv->next->prev = sv->prev;
  sv->prev = sv->next = NULL;
  svc->stats.running--;
}

/* The -NAK delay after a failed delivery number `delivered`. */
static uint64_t backoff(const uvp_nats_js_svc_t *svc, uint64_t delivered) {
  size_t i = delivered > 0 ? (size_t)(delivered - 1) : 0;
  if (svc->o.nbackoff > 0)
    return svc->backoff[i < svc->o.nbackoff ? i : svc->o.nbackoff - 1];
  return i >= 6 ? 60000 : 1000u << i;
}

/* The member is over, whether svc_done ran or not (a member cut by the
 * group's cancel does not run its handler): it leaves the running list
 * and lets its promise go. */
static void sv_done_free(void *arg) {
  served_t *sv = arg;
  if (sv->p != NULL) {
    running_unlink(sv->pub.svc, sv);
    uvp_promise_release(sv->p);
    sv->p = NULL;
  }
  sv_release(sv);
}

static uvp_ret_t svc_done(void *arg, const uvp_outcome_t *in) {
  served_t *sv = arg;
  uvp_nats_js_svc_t *svc = sv->pub.svc;
  uvp_nats_js_msg_t *m = sv->pub.msg;
  bool (*retryable)(int) =
      svc->o.retryable != NULL ? svc->o.retryable : uvp_nats_js_retryable;
  if (in->status == 0) {
    svc->stats.acked++;
    (void)uvp_nats_js_ack(m);
  } else if (retryable(in->status)) {
    svc->stats.naked++;
    (void)uvp_nats_js_nak(m, backoff(svc, m->delivered));
  } else {
    svc->stats.termed++;
    (void)uvp_nats_js_term(m);
  }
  uvp_nats__trace_end(svc->js->ctx, &sv->span, in->status);
  return uvp_ret_value(NULL, NULL);
}

/* A member that is done at once (given back, expired, failed to start). */
static int settled_member(uvp_nats_js_svc_t *svc, uvp_promise_t **out) {
  int rc = uvp_promise_new(svc->js->ctx, out);
  if (rc == 0)
    uvp_promise_resolve(*out, NULL, NULL);
  return rc;
}

static int svc_start(void *arg, uvp_promise_t **out) {
  served_t *sv = arg;
  uvp_nats_js_svc_t *svc = sv->pub.svc;
  uvp_ctx_t *ctx = svc->js->ctx;
  uvp_nats_js_msg_t *m = sv->pub.msg;
  sv->started = true;
  if (svc->draining || svc->failed) { /* for another worker */
    svc->stats.naked++;
    (void)uvp_nats_js_nak(m, 0);
    return settled_member(svc, out);
  }
  uint64_t timeout = svc->o.default_timeout_ms;
  const char *dl = uvp_nats_msg_header(m->msg, UVP_NATS_DEADLINE_HEADER);
  if (dl != NULL) {
    uint64_t at = strtoull(dl, NULL, 10), now = uvp_nats__js_unix_ms();
    timeout = at > now ? at - now : 0;
  }
  if (timeout <= svc->o.margin_ms) { /* its caller has given up */
    svc->stats.expired++;
    (void)uvp_nats_js_term(m);
    return settled_member(svc, out);
  }
  sv->pub.deadline_ms = timeout - svc->o.margin_ms;
  uvp_promise_t *p = NULL;
  int rc;
  /* the publisher's trace: what the fiber or start begins is the span's
   * (no memory for it: served untraced) */
  (void)uvp_nats__trace_enter(ctx, sv->span, m->msg);
  if (svc->o.fiber != NULL) {
    uvp_fiber_opts_t fo = {.deadline_ms = sv->pub.deadline_ms,
                           .arg_free = sv_release};
    sv->refs++; /* sv_release's, which a refused spawn runs at once */
    rc = uvp_fiber_spawn(ctx, svc->o.fiber, &sv->pub, &fo, &p);
  } else {
    rc = uvp_deadline_set(ctx, sv->pub.deadline_ms);
    if (rc == 0)
      rc = svc->o.start(&sv->pub, &p);
  }
  svc->stats.served++;
  uvp_promise_t *d = NULL;
  if (rc == 0) {
    sv->refs++; /* sv_done_free's, which a refusal runs at once */
    rc = uvp_promise_on_full(p, UVP_ON_BOTH, svc_done, sv, sv_done_free, &d);
  }
  if (rc != 0) {
    if (p != NULL)
      uvp_promise_release(p);
    bool (*retryable)(int) =
        svc->o.retryable != NULL ? svc->o.retryable : uvp_nats_js_retryable;
    if (retryable(rc)) {
      svc->stats.naked++;
      (void)uvp_nats_js_nak(m, backoff(svc, m->delivered));
    } else {
      svc->stats.termed++;
      (void)uvp_nats_js_term(m);
    }
    return settled_member(svc, out);
  }
  sv->p = p;
  sv->next = svc->first;
  if (svc->first != NULL)
    svc->first->prev = sv;
  svc->first = sv;
  svc->stats.running++;
  *out = d;
  return 0;
}

static void svc_take(void *owner, uvp_nats_js_msg_t *m) {
  uvp_nats_js_svc_t *svc = owner;
  if (m == NULL) { /* the pull failed: its messages are lost to us */
    if (!svc->failed) {
      svc->failed = true;
      uvp_group_cancel(svc->g);
      uvp_group_close(svc->g);
    }
    return;
  }
  svc->stats.received++;
  if (svc->draining || svc->failed) {
    svc->stats.naked++;
    (void)uvp_nats_js_nak(m, 0);
    uvp_nats__js_msg_free(m);
    return;
  }
  served_t *sv = calloc(1, sizeof(*sv));
  if (sv == NULL) {
    uvp_nats__js_msg_free(m); /* given back */
    return;
  }
  sv->pub = (uvp_nats_js_served_t){m, svc, svc->o.arg, 0};
  sv->span = uvp_nats__trace_in(svc->js->ctx, UVP_SPAN_CONSUMER,
                                natsMsg_GetSubject(m->msg), m->msg);
  sv->refs = 1; /* the group's, until its start has run */
  /* Refused, the group has run sv_release already (uvp.h, "Handing
   * over"): nothing is left to undo. */
  uvp_group_start(svc->g, svc_start, sv, sv_release);
}

static uvp_ret_t svc_joined(void *arg, const uvp_outcome_t *in) {
  uvp_nats_js_svc_t *svc = arg;
  (void)in;
  if (svc->drain_p != NULL) {
    uvp_promise_t *p = svc->drain_p;
    svc->drain_p = NULL;
    uvp_promise_resolve(p, NULL, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_value(NULL, NULL);
}

static void on_svc_timer_closed(uv_handle_t *h) { free(h->data); }

static void svc_join_free(void *arg) {
  uvp_nats_js_svc_t *svc = arg;
  /* Its registration refused (the timer is set up after it): the
   * registering call undoes what it made. */
  if (svc->timer.data == NULL)
    return;
  if (svc->drain_p != NULL) { /* torn down */
    uvp_promise_reject(svc->drain_p, UVP_ECLOSED, NULL, NULL);
    uvp_promise_release(svc->drain_p);
  }
  uvp_group_release(svc->g);
  uvp_nats__js_pull_take(svc->pull, NULL, NULL);
  uvp_nats__js_pull_want(svc->pull, 0);
  uvp_nats__js_pull_release(svc->pull);
  if (svc->waiting && svc->js->b != NULL)
    uvp_nats__waiting_add(svc->js->b, -1);
  free(svc->backoff);
  uv_close((uv_handle_t *)&svc->timer, on_svc_timer_closed);
}

int uvp_nats_js_serve(uvp_nats_js_pull_t *pull,
                      const uvp_nats_js_serve_opts_t *o,
                      uvp_nats_js_svc_t **out) {
  if (pull == NULL || o == NULL || out == NULL ||
      (o->fiber == NULL && o->start == NULL) ||
      (o->nbackoff > 0 && o->backoff_ms == NULL))
    return UV_EINVAL;
  for (size_t i = 0; i < o->nbackoff; i++)
    if (o->backoff_ms[i] > UVP_NATS_TIMEOUT_MAX)
      return UV_EINVAL;
  int rc = uvp_nats__js_pull_usable(pull);
  if (rc != 0)
    return rc;
  uvp_nats_js_svc_t *svc = calloc(1, sizeof(*svc));
  if (svc == NULL)
    return UV_ENOMEM;
  svc->pull = pull;
  svc->js = uvp_nats__js_pull_js(pull);
  svc->o = *o;
  if (svc->o.margin_ms == 0)
    svc->o.margin_ms = 10;
  if (svc->o.default_timeout_ms == 0)
    svc->o.default_timeout_ms = 30000;
  if (o->nbackoff > 0) {
    svc->backoff = malloc(o->nbackoff * sizeof(*svc->backoff));
    if (svc->backoff == NULL) {
      free(svc);
      return UV_ENOMEM;
    }
    memcpy(svc->backoff, o->backoff_ms, o->nbackoff * sizeof(*svc->backoff));
  }
  size_t limit = uvp_nats__js_pull_limit(pull);
  uvp_group_opts_t go = {.limit = limit, .flags = UVP_GROUP_DISCARD_SETTLED};
  uvp_promise_t *join = NULL, *d = NULL;
  rc = uvp_group_new(svc->js->ctx, &go, &svc->g);
  if (rc == 0 && (rc = uvp_group_join(svc->g, &join)) == 0) {
    rc = uvp_promise_on_full(join, UVP_ON_BOTH, svc_joined, svc, svc_join_free,
                             &d);
    uvp_promise_release(join);
  }
  if (rc != 0) {
    if (svc->g != NULL)
      uvp_group_release(svc->g);
    free(svc->backoff);
    free(svc);
    return rc;
  }
  uvp_promise_mark_handled(d);
  uvp_promise_release(d);
  uv_timer_init(svc->js->b->loop, &svc->timer);
  svc->timer.data = svc;
  uv_unref((uv_handle_t *)&svc->timer);
  svc->waiting = true;
  uvp_nats__waiting_add(svc->js->b, 1);
  uvp_nats__js_pull_retain(pull);
  uvp_nats__js_pull_take(pull, svc_take, svc);
  uvp_nats__js_pull_want(pull, limit);
  *out = svc;
  return 0;
}

/* The drain's deadline: what still runs is cut, and given back. */
static void on_drain_deadline(uv_timer_t *t) {
  uvp_nats_js_svc_t *svc = t->data;
  for (served_t *sv = svc->first; sv != NULL; sv = sv->next) {
    svc->stats.cut++;
    uvp_promise_cancel_binding(sv->p, UV_ECANCELED, "worker draining");
  }
}

int uvp_nats_js_serve_drain_at(uvp_nats_js_svc_t *svc, uint64_t deadline_ms,
                               uvp_promise_t **out, const char *file,
                               int line) {
  if (svc == NULL || out == NULL || deadline_ms > UVP_NATS_TIMEOUT_MAX)
    return UV_EINVAL;
  if (svc->draining)
    return UV_EALREADY;
  uvp_promise_t *p;
  int rc = uvp_promise_new_at(svc->js->ctx, &p, file, line);
  if (rc != 0)
    return rc;
  svc->draining = true;
  svc->drain_p = p;
  uvp_nats__js_pull_want(svc->pull, 0);
  if (deadline_ms > 0)
    uv_timer_start(&svc->timer, on_drain_deadline, deadline_ms, 0);
  *out = uvp_promise_retain(p);
  uvp_group_close(svc->g); /* its join may settle now */
  return 0;
}

int uvp_nats_js_serve_stats(const uvp_nats_js_svc_t *svc,
                            uvp_nats_js_serve_stats_t *out) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  *out = svc->stats;
  return 0;
}

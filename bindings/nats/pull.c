/* uvp-nats JetStream: pulling from a durable consumer (js.c says how it
 * fits).
 *
 * A pull is a subscription of the binding's on an inbox of its own,
 * "<inbox>.*", whose messages a taker (pull_take) reads on the loop, and
 * the pull requests it publishes to $JS.API.CONSUMER.MSG.NEXT with the
 * reply subject "<inbox>.<id>": the server delivers up to `batch`
 * messages there, or a status (404 nothing, 408 expired, 409 refused).
 * The pull has one request out at a time (preq_t says why) and knows
 * how many messages it still owes; it asks only for the waits
 * (uvp_nats_js_next, or a service's want) not yet covered, and only as
 * far as `limit` leaves room over the messages it holds.  A request the
 * server never answers (its consumer's leader died, the connection
 * dropped) is given up expires + 2 s after it was sent.
 *
 * Every message out and not finished is on the `held` list, in the order
 * its next +WPI is due (all share one ack_wait, so appending keeps it
 * sorted); one timer per pull serves the WPIs, the requests' expiries and
 * the back-off after a 409.  A message that arrives for no wait (its wait
 * was cancelled) is held too, on the ready queue, for the next wait.
 *
 * Lifetimes: the program holds the pull until uvp_nats_js_pull_close;
 * each message out holds it too; its memory goes with the timer's close
 * callback after the last. */
#include <assert.h>

#include "js-internal.h"

typedef struct pwait_s pwait_t;
struct pwait_s {
  uvp_nats_js_pull_t *pull;
  uvp_promise_t *p; /* ours */
  uvp_inflight_t w;
  pwait_t *prev, *next;
};

/* The pull request at the server: one at a time.  A delivered message
 * has its own subject, not the request's reply subject, so with several
 * requests out a message could not be told apart; with one, every
 * message is its, and it ends when it has delivered all it was asked
 * for, or with a status of its own (on "<inbox>.<id>").  A request that
 * still owes messages means the server had none more to give, so the
 * next one is not needed before it ends. */
typedef struct preq_s {
  uint64_t id;      /* 0: none out */
  size_t owed;      /* messages it may still deliver */
  uint64_t give_up; /* uv_now when it is taken for lost */
} preq_t;

typedef struct jmsg_s jmsg_t;
struct jmsg_s {
  uvp_nats_js_msg_t pub; /* first: the program's pointer */
  uvp_nats_js_pull_t *pull;
  const char *reply;   /* the $JS.ACK subject (the natsMsg's) */
  bool done;           /* acked, naked or termed */
  bool held;           /* on the pull's held list */
  uint64_t wpi_at;     /* uv_now when its next +WPI is due */
  jmsg_t *prev, *next; /* held */
  jmsg_t *rnext;       /* ready queue */
  char names[];        /* stream and consumer */
};

struct uvp_nats_js_pull_s {
  js_obj_t obj;
  uvp_nats_js_t *js;
  uvp_nats_sub_t *sub; /* NULL once gone */
  char inbox[128];
  char api[300];  /* "$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>" */
  char name[140]; /* "STREAM/CONSUMER" */
  uint64_t ack_wait_ms, expires_ms;
  size_t limit;
  int flags;
  pwait_t *wfirst, *wlast;
  size_t nwaits;
  jmsg_t *rfirst, *rlast; /* ready: arrived for no wait */
  jmsg_t *hfirst, *hlast; /* held: out and not finished */
  preq_t req;
  uint64_t next_id;
  uint64_t backoff_until; /* after a 409: no request before */
  uv_timer_t timer;
  size_t refs; /* the program's (until close), each message's */
  bool closed; /* uvp_nats_js_pull_close */
  int fail_rc; /* the connection failed: what waits get; 0 if not */
  uvp_nats_js_pull_stats_t stats;
  /* a service's (js-serve.c): messages go to take, `want` of them */
  uvp_nats__js_take_fn take;
  void *owner;
  size_t want;
};

static void pump(uvp_nats_js_pull_t *pull);
static void timer_arm(uvp_nats_js_pull_t *pull);

/* ---- references ---------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h) {
  uvp_nats_js_pull_t *pull = h->data;
  uvp_nats__js_release(pull->js);
  free(pull);
}

static void pull_release(uvp_nats_js_pull_t *pull) {
  if (--pull->refs > 0)
    return;
  uvp_nats__js_obj_unlink(pull->js, &pull->obj);
  uv_close((uv_handle_t *)&pull->timer, on_timer_closed);
}

/* ---- messages ------------------------------------------------------------ */

static void held_unlink(jmsg_t *m) {
  uvp_nats_js_pull_t *pull = m->pull;
  if (!m->held)
    return;
  if (m->prev != NULL)
    m->prev->next = m->next;
  else
    pull->hfirst = m->next;
  if (m->next != NULL)
    m->next->prev = m->prev;
  else
    pull->hlast = m->prev;
  m->prev = m->next = NULL;
  m->held = false;
  pull->stats.held--;
}

static void held_append(jmsg_t *m) {
  uvp_nats_js_pull_t *pull = m->pull;
  m->wpi_at = uv_now(pull->timer.loop) + pull->ack_wait_ms / 2;
  m->prev = pull->hlast;
  m->next = NULL;
  if (pull->hlast != NULL)
    pull->hlast->next = m;
  else
    pull->hfirst = m;
  pull->hlast = m;
  m->held = true;
  pull->stats.held++;
}

/* Publish body to m's reply subject (an ack of some kind). */
static int reply(jmsg_t *m, const char *body) {
  uvp_nats_js_t *js = m->pull->js;
  int rc = uvp_nats__js_usable(js);
  if (rc != 0)
    return rc;
  return uvp_nats__publish_msg(js->b, m->reply, NULL, body, strlen(body),
                               UINT64_MAX, NULL);
}

/* m is finished (rc 0: body was sent): its room is free. */
static int finish(jmsg_t *m, const char *body) {
  if (m->done)
    return UV_EALREADY;
  int rc = reply(m, body);
  if (rc != 0 && rc != UVP_ECLOSED)
    return rc;
  m->done = true;
  held_unlink(m);
  pump(m->pull);
  return rc;
}

void uvp_nats__js_msg_free(void *arg) {
  jmsg_t *m = arg;
  uvp_nats_js_pull_t *pull = m->pull;
  if (!m->done) { /* nobody finished it: give it back */
    pull->stats.given_back++;
    (void)finish(m, "-NAK");
    m->done = true;
    held_unlink(m);
  }
  uvp_nats__msg_free(m->pub.msg);
  free(m);
  pull_release(pull);
}

static jmsg_t *from_pub(uvp_nats_js_msg_t *msg) { return (jmsg_t *)msg; }

int uvp_nats_js_ack(uvp_nats_js_msg_t *msg) {
  return msg == NULL ? UV_EINVAL : finish(from_pub(msg), "+ACK");
}

int uvp_nats_js_nak(uvp_nats_js_msg_t *msg, uint64_t delay_ms) {
  if (msg == NULL || delay_ms > UVP_NATS_TIMEOUT_MAX)
    return UV_EINVAL;
  if (delay_ms == 0)
    return finish(from_pub(msg), "-NAK");
  char body[64];
  snprintf(body, sizeof(body), "-NAK {\"delay\":%" PRIu64 "}",
           delay_ms * (uint64_t)JS_NS);
  return finish(from_pub(msg), body);
}

int uvp_nats_js_term(uvp_nats_js_msg_t *msg) {
  return msg == NULL ? UV_EINVAL : finish(from_pub(msg), "+TERM");
}

/* +WPI, and its next one is due half an ack_wait from now. */
static int wpi(jmsg_t *m) {
  int rc = reply(m, "+WPI");
  if (rc == 0 && m->held) {
    held_unlink(m);
    held_append(m);
  }
  return rc;
}

int uvp_nats_js_in_progress(uvp_nats_js_msg_t *msg) {
  if (msg == NULL)
    return UV_EINVAL;
  jmsg_t *m = from_pub(msg);
  if (m->done)
    return UV_EALREADY;
  int rc = wpi(m);
  timer_arm(m->pull);
  return rc;
}

static jmsg_t *jmsg_new(uvp_nats_js_pull_t *pull, natsMsg *nm) {
  const char *rep = natsMsg_GetReply(nm), *stream, *consumer;
  size_t slen, clen;
  uint64_t nums[5];
  if (!uvp_nats__js_metadata(rep, &stream, &slen, &consumer, &clen, nums))
    return NULL;
  jmsg_t *m = calloc(1, sizeof(*m) + slen + clen + 2);
  if (m == NULL)
    return NULL;
  memcpy(m->names, stream, slen);
  memcpy(m->names + slen + 1, consumer, clen);
  m->pub = (uvp_nats_js_msg_t){nm,      m->names,        m->names + slen + 1,
                               nums[1], nums[2],         nums[0],
                               nums[4], (int64_t)nums[3]};
  m->pull = pull;
  m->reply = rep;
  pull->refs++;
  return m;
}

/* ---- waits --------------------------------------------------------------- */

static void wait_unlink(pwait_t *w) {
  uvp_nats_js_pull_t *pull = w->pull;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    pull->wfirst = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    pull->wlast = w->prev;
  pull->nwaits--;
  uvp_nats__waiting_add(pull->js->b, -1);
}

/* The oldest wait ends: with m (rc 0), or rc. */
static void wait_end(uvp_nats_js_pull_t *pull, int rc, jmsg_t *m) {
  pwait_t *w = pull->wfirst;
  wait_unlink(w);
  assert(pull->wfirst != w); /* waits_fail's loop ends (the analyzer) */
  uvp_promise_t *p = w->p;
  if (rc == 0)
    uvp_promise_resolve(p, &m->pub, uvp_nats__js_msg_free);
  else
    uvp_promise_reject(p, rc, NULL, NULL);
  uvp_inflight_end(&w->w);
  free(w);
  uvp_promise_release(p);
}

static void waits_fail(uvp_nats_js_pull_t *pull, int rc) {
  while (pull->wfirst != NULL)
    wait_end(pull, rc, NULL);
}

static void on_wait_cancel(uvp_inflight_t *fl, int code) {
  pwait_t *w = fl->data;
  uvp_promise_t *p = w->p;
  (void)code;
  wait_unlink(w);
  uvp_inflight_end(&w->w);
  free(w);
  uvp_promise_release(p);
}

static int wait_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  const pwait_t *w = fl->data;
  return snprintf(buf, cap, "next %s", w->pull->name);
}

static const uvp_inflight_class_t wait_class = {
    "JetStream", on_wait_cancel, wait_describe, UVP_INFLIGHT_IDLE};

/* ---- asking the server --------------------------------------------------- */

/* The request out ends: what it owed is no longer asked for. */
static void preq_end(uvp_nats_js_pull_t *pull) {
  pull->stats.asked -= pull->req.owed;
  pull->req = (preq_t){0};
}

static bool live(const uvp_nats_js_pull_t *pull) {
  return !pull->closed && pull->fail_rc == 0 && pull->sub != NULL &&
         uvp_nats__js_usable(pull->js) == 0 && pull->js->b->state == S_OPEN;
}

/* Ask for what the waits (and a service) want and nothing covers, as far
 * as the limit leaves room. */
static void pump(uvp_nats_js_pull_t *pull) {
  if (!live(pull))
    return;
  size_t wanted = pull->nwaits + pull->want;
  size_t asked = pull->stats.asked, held = pull->stats.held;
  if (pull->req.id != 0 || wanted <= asked)
    return;
  size_t room = pull->limit > held + asked ? pull->limit - held - asked : 0;
  size_t n = wanted - asked < room ? wanted - asked : room;
  uint64_t now = uv_now(pull->timer.loop);
  if (n == 0 || now < pull->backoff_until)
    return;
  uint64_t id = ++pull->next_id;
  char reply_to[160], body[96];
  snprintf(reply_to, sizeof(reply_to), "%s.%" PRIu64, pull->inbox, id);
  snprintf(body, sizeof(body), "{\"batch\":%zu,\"expires\":%" PRIu64 "}", n,
           pull->expires_ms * (uint64_t)JS_NS);
  if (uvp_nats__publish_msg(pull->js->b, pull->api, reply_to, body,
                            strlen(body), UINT64_MAX, NULL) != 0)
    return; /* asked again at the next pump */
  pull->req = (preq_t){id, n, now + pull->expires_ms + 2000};
  pull->stats.asked += n;
  pull->stats.requests++;
  timer_arm(pull);
}

/* ---- the timer: WPIs, lost requests, back-off ---------------------------- */

static void on_timer(uv_timer_t *t) {
  uvp_nats_js_pull_t *pull = t->data;
  uint64_t now = uv_now(t->loop);
  if (pull->req.id != 0 && pull->req.give_up <= now) {
    pull->stats.expired++;
    preq_end(pull);
  }
  if (!(pull->flags & UVP_NATS_JS_NO_AUTO_WPI))
    while (pull->hfirst != NULL && pull->hfirst->wpi_at <= now) {
      jmsg_t *m = pull->hfirst;
      if (wpi(m) != 0) { /* the connection is gone: no more WPIs */
        held_unlink(m);
        continue;
      }
      pull->stats.wpi++;
    }
  pump(pull);
  timer_arm(pull);
}

static void timer_arm(uvp_nats_js_pull_t *pull) {
  uint64_t at = UINT64_MAX;
  if (pull->req.id != 0)
    at = pull->req.give_up;
  if (!(pull->flags & UVP_NATS_JS_NO_AUTO_WPI) && pull->hfirst != NULL &&
      pull->hfirst->wpi_at < at)
    at = pull->hfirst->wpi_at;
  if (pull->backoff_until <= uv_now(pull->timer.loop))
    pull->backoff_until = 0;
  if (pull->backoff_until > 0 && pull->backoff_until < at)
    at = pull->backoff_until;
  if (at == UINT64_MAX || uvp_nats__js_usable(pull->js) != 0) {
    uv_timer_stop(&pull->timer);
    return;
  }
  uint64_t now = uv_now(pull->timer.loop);
  uv_timer_start(&pull->timer, on_timer, at > now ? at - now : 1, 0);
}

/* ---- deliveries ---------------------------------------------------------- */

/* A message for the waits, a service, or the ready queue. */
static void hand(uvp_nats_js_pull_t *pull, jmsg_t *m) {
  if (pull->take != NULL) {
    pull->take(pull->owner, &m->pub);
  } else if (pull->wfirst != NULL) {
    wait_end(pull, 0, m);
  } else {
    if (pull->rlast != NULL)
      pull->rlast->rnext = m;
    else
      pull->rfirst = m;
    pull->rlast = m;
  }
}

static void on_status(uvp_nats_js_pull_t *pull, natsMsg *nm, int status,
                      bool ours) {
  const char *d = NULL;
  (void)natsMsgHeader_Get(nm, "Description", &d);
  if (status == 100) /* a heartbeat */
    return;
  if (ours) {
    if (status == 408)
      pull->stats.expired++;
    preq_end(pull);
  }
  if (status == 409 && d != NULL && strstr(d, "Consumer Deleted") != NULL) {
    pull->fail_rc = UV_ENOENT;
    waits_fail(pull, UV_ENOENT);
  } else if (status == 409) { /* max ack pending, max waiting: later */
    pull->backoff_until = uv_now(pull->timer.loop) + 250;
  }
}

static void pull_take(void *owner, natsMsg *nm) {
  uvp_nats_js_pull_t *pull = owner;
  int status = uvp_nats__js_status(nm);
  if (status != 0) { /* on the request's own reply subject */
    const char *subj = natsMsg_GetSubject(nm);
    size_t n = strlen(pull->inbox);
    bool ours = pull->req.id != 0 && subj != NULL &&
                strncmp(subj, pull->inbox, n) == 0 && subj[n] == '.' &&
                strtoull(subj + n + 1, NULL, 10) == pull->req.id;
    on_status(pull, nm, status, ours);
    uvp_nats__msg_free(nm);
    pump(pull);
    timer_arm(pull);
    return;
  }
  if (pull->req.id != 0) { /* (none out: a request given up delivers) */
    pull->req.owed--;
    pull->stats.asked--;
    if (pull->req.owed == 0)
      pull->req = (preq_t){0};
  }
  jmsg_t *m = jmsg_new(pull, nm);
  if (m == NULL) { /* not a JetStream message: dropped */
    uvp_nats__msg_free(nm);
    return;
  }
  pull->stats.received++;
  held_append(m);
  hand(pull, m);
  pump(pull);
  timer_arm(pull);
}

static void pull_drained(void *owner) { (void)owner; }

/* Its subscription goes: uvp_nats_js_pull_close, or the connection
 * closes (rc < 0). */
static void pull_gone(void *owner, int rc) {
  uvp_nats_js_pull_t *pull = owner;
  pull->sub = NULL;
  (void)rc;
}

static const uvp_nats__taker_t pull_taker = {pull_take, pull_drained,
                                             pull_gone};

/* ---- the connection closes ----------------------------------------------- */

static void ready_drop(uvp_nats_js_pull_t *pull, bool give_back) {
  while (pull->rfirst != NULL) {
    jmsg_t *m = pull->rfirst;
    pull->rfirst = m->rnext;
    if (pull->rfirst == NULL)
      pull->rlast = NULL;
    if (!give_back)
      m->done = true;
    held_unlink(m);
    uvp_nats__js_msg_free(m);
  }
}

static void pull_fail(js_obj_t *o, int rc, bool all) {
  uvp_nats_js_pull_t *pull = (uvp_nats_js_pull_t *)o;
  pull->fail_rc = rc;
  pull->refs++;
  waits_fail(pull, rc);
  if (pull->take != NULL && pull->owner != NULL)
    pull->take(pull->owner, NULL); /* the service learns it */
  if (all) {
    ready_drop(pull, false);
    while (pull->hfirst != NULL) /* no acks any more */
      held_unlink(pull->hfirst);
    uvp_nats__js_obj_unlink(pull->js, &pull->obj);
    uv_timer_stop(&pull->timer);
  }
  pull_release(pull);
}

/* ---- open, next, close --------------------------------------------------- */

typedef struct open_s {
  char stream[65], consumer[65];
  uvp_nats_js_pull_opts_t o;
} open_t;

static int pull_new(uvp_nats_js_t *js, const open_t *a,
                    const uvp_nats_js_consumer_info_t *ci,
                    uvp_nats_js_pull_t **out) {
  uvp_nats_js_pull_t *pull = calloc(1, sizeof(*pull));
  if (pull == NULL)
    return UV_ENOMEM;
  int irc = uvp_nats__inbox_new(js->b, pull->inbox, sizeof(pull->inbox));
  if (irc != 0) {
    free(pull);
    return irc;
  }
  char wild[sizeof(pull->inbox) + 2];
  snprintf(wild, sizeof(wild), "%s.*", pull->inbox);
  int rc = uvp_nats_subscribe(js->b, wild, NULL, &pull->sub);
  if (rc != 0) {
    free(pull);
    return rc;
  }
  pull->sub->taker = &pull_taker;
  pull->sub->owner = pull;
  snprintf(pull->api, sizeof(pull->api), "%s.CONSUMER.MSG.NEXT.%s.%s",
           js->prefix, a->stream, a->consumer);
  snprintf(pull->name, sizeof(pull->name), "%s/%s", a->stream, a->consumer);
  pull->js = js;
  uvp_nats__js_retain(js);
  pull->refs = 1;
  pull->ack_wait_ms = ci->ack_wait_ms > 0 ? ci->ack_wait_ms : 30000;
  pull->expires_ms = a->o.expires_ms > 0 ? a->o.expires_ms : 5000;
  pull->limit = a->o.limit > 0            ? a->o.limit
                : ci->max_ack_pending > 0 ? (size_t)ci->max_ack_pending
                                          : 1000;
  pull->flags = a->o.flags;
  pull->obj.fail = pull_fail;
  uvp_nats__js_obj_link(js, &pull->obj);
  uv_timer_init(js->b->loop, &pull->timer);
  pull->timer.data = pull;
  uv_unref((uv_handle_t *)&pull->timer);
  *out = pull;
  return 0;
}

static void open_step(js_op_t *op, int rc, natsMsg *nm) {
  json_t *j = NULL;
  uvp_nats_js_error_t *err = NULL;
  uvp_nats_js_pull_t *pull = NULL;
  if (rc == 0)
    rc = uvp_nats__js_json(nm, &j, &err);
  if (rc == 0) {
    json_t *cfg = json_object_get(j, "config");
    uvp_nats_js_consumer_info_t ci = {
        .ack_wait_ms = uvp_nats__js_ms(cfg, "ack_wait"),
        .max_ack_pending =
            json_integer_value(json_object_get(cfg, "max_ack_pending"))};
    rc = uvp_nats__js_usable(op->js);
    if (rc == 0)
      rc = pull_new(op->js, op->data, &ci, &pull);
  }
  json_decref(j);
  uvp_nats__js_op_end(op, rc, pull, NULL, err);
}

int uvp_nats_js_pull_at(uvp_nats_js_t *js, const char *stream,
                        const char *consumer,
                        const uvp_nats_js_pull_opts_t *opts,
                        uvp_promise_t **out, const char *file, int line) {
  if (js == NULL || out == NULL || !uvp_nats__js_name_ok(stream) ||
      !uvp_nats__js_name_ok(consumer) ||
      (opts != NULL && opts->expires_ms > UVP_NATS_TIMEOUT_MAX))
    return UV_EINVAL;
  open_t *a = calloc(1, sizeof(*a));
  if (a == NULL)
    return UV_ENOMEM;
  snprintf(a->stream, sizeof(a->stream), "%s", stream);
  snprintf(a->consumer, sizeof(a->consumer), "%s", consumer);
  if (opts != NULL)
    a->o = *opts;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, open_step, file, line, &op, "pull %s/%s",
                               stream, consumer);
  if (rc != 0) {
    free(a);
    return rc;
  }
  op->data = a;
  op->data_free = free;
  return uvp_nats__js_op_api(op, true, out, NULL, "CONSUMER.INFO.%s.%s", stream,
                             consumer);
}

int uvp_nats_js_next_at(uvp_nats_js_pull_t *pull, uvp_promise_t **out,
                        const char *file, int line) {
  if (pull == NULL || out == NULL || pull->take != NULL)
    return UV_EINVAL;
  if (pull->closed || pull->fail_rc == UVP_ECLOSED ||
      uvp_nats__js_usable(pull->js) != 0)
    return UVP_ECLOSED;
  pwait_t *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->pull = pull;
  w->w.data = w;
  int rc = uvp_promise_new_at(pull->js->ctx, &w->p, file, line);
  if (rc == 0 &&
      (rc = uvp_inflight_start(pull->js->ctx, &w->w, w->p, &wait_class)) != 0)
    uvp_promise_release(w->p);
  if (rc != 0) {
    free(w);
    return rc;
  }
  *out = uvp_promise_retain(w->p);
  w->prev = pull->wlast;
  if (pull->wlast != NULL)
    pull->wlast->next = w;
  else
    pull->wfirst = w;
  pull->wlast = w;
  pull->nwaits++;
  uvp_nats__waiting_add(pull->js->b, 1);
  if (pull->fail_rc != 0) { /* the consumer went: say so */
    wait_end(pull, pull->fail_rc, NULL);
    return 0;
  }
  if (pull->rfirst != NULL) {
    jmsg_t *m = pull->rfirst;
    pull->rfirst = m->rnext;
    if (pull->rfirst == NULL)
      pull->rlast = NULL;
    m->rnext = NULL;
    wait_end(pull, 0, m);
    return 0;
  }
  pump(pull);
  return 0;
}

int uvp_nats_js_pull_stats(const uvp_nats_js_pull_t *pull,
                           uvp_nats_js_pull_stats_t *out) {
  if (pull == NULL || out == NULL)
    return UV_EINVAL;
  *out = pull->stats;
  return 0;
}

int uvp_nats_js_pull_close(uvp_nats_js_pull_t *pull) {
  if (pull == NULL || pull->closed)
    return UV_EINVAL;
  pull->closed = true;
  waits_fail(pull, UV_ECANCELED);
  ready_drop(pull, true);
  if (pull->sub != NULL)
    uvp_nats_unsubscribe(pull->sub); /* pull_gone */
  pull_release(pull);
  return 0;
}

/* ---- for a service (js-serve.c) ------------------------------------------ */

void uvp_nats__js_pull_take(uvp_nats_js_pull_t *pull, uvp_nats__js_take_fn take,
                            void *owner) {
  pull->take = take;
  pull->owner = owner;
}

void uvp_nats__js_pull_want(uvp_nats_js_pull_t *pull, size_t want) {
  pull->want = want;
  pump(pull);
}

size_t uvp_nats__js_pull_limit(const uvp_nats_js_pull_t *pull) {
  return pull->limit;
}

void uvp_nats__js_pull_retain(uvp_nats_js_pull_t *pull) { pull->refs++; }

void uvp_nats__js_pull_release(uvp_nats_js_pull_t *pull) { pull_release(pull); }

uvp_nats_js_t *uvp_nats__js_pull_js(const uvp_nats_js_pull_t *pull) {
  return pull->js;
}

int uvp_nats__js_pull_usable(const uvp_nats_js_pull_t *pull) {
  if (pull->take != NULL || pull->nwaits > 0)
    return UV_EINVAL;
  if (pull->closed || pull->fail_rc != 0 || uvp_nats__js_usable(pull->js) != 0)
    return UVP_ECLOSED;
  return 0;
}

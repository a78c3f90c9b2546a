/* uvp-nats JetStream: key-value watches (kv.c has the buckets, reads and
 * writes; js.c says how it fits).
 *
 * A watch is an ordered consumer: ephemeral, in memory, no acks, flow
 * control and idle heartbeats, delivering to an inbox the watch
 * subscribes to (a new one for each consumer, so that what an old one
 * still sends is never mistaken for the new one's).  Each delivery's
 * consumer sequence must follow the last; a gap, a heartbeat that says
 * the consumer sent more than arrived, a heartbeat missed twice, or the
 * consumer's loss, and the watch makes a new consumer from the stream
 * sequence after the last entry it took (a restart).  Making one is an
 * internal op; a transient failure (no leader yet, a timeout) is tried
 * again on the watch's timer, 250 ms to 2 s apart.  The watch's entries
 * go to its waits (uvp_nats_kv_watch_next) or, for a durable promise's
 * await (dpromise.c), to a callback. */
#include <assert.h>

#include "js-internal.h"

/* ---- watches ------------------------------------------------------------- */

typedef struct kwait_s kwait_t;
struct kwait_s {
  uvp_nats_kv_watch_t *w;
  uvp_promise_t *p;
  uvp_inflight_t fl;
  kwait_t *prev, *next;
};

/* An entry waiting to be taken; e NULL: "caught up". */
typedef struct kitem_s kitem_t;
struct kitem_s {
  uvp_nats_kv_entry_t *e;
  kitem_t *next;
};

struct uvp_nats_kv_watch_s {
  js_obj_t obj;
  uvp_nats_js_t *js;
  char bucket[65];
  char filter[300]; /* "$KV.<bucket>.<keys>" */
  char name[280];   /* "BUCKET/KEYS" */
  int flags;
  uint64_t hb_ms;
  uvp_nats_sub_t *sub; /* the current consumer's inbox */
  char inbox[128];
  char consumer[80]; /* its name, "" until its create's reply */
  js_op_t *making;   /* the create in flight */
  uint64_t last_sseq, expect_cseq;
  uint64_t heard_at; /* uv_now of the last delivery or heartbeat */
  uint64_t retry_in; /* the next retry's delay */
  uint64_t retry_at; /* 0: none due */
  bool started;      /* a consumer existed once */
  bool caught_up;
  bool closed;
  int fail_rc;
  char *fc_reply; /* a flow control answer held until the queue empties */
  uv_timer_t timer;
  size_t refs; /* the program's (or the owner's), the create in flight */
  /* the public side: the open promise, the waits, the queue */
  uvp_promise_t *open_p;
  uvp_inflight_t open_fl;
  kwait_t *wfirst, *wlast;
  kitem_t *qfirst, *qlast;
  size_t queued;
  /* a durable promise's (dpromise.c): entries go here instead */
  uvp_nats__kv_see_fn see;
  void *owner;
  uvp_nats_kv_watch_stats_t stats;
};

static void watch_restart(uvp_nats_kv_watch_t *w);
static void watch_make(uvp_nats_kv_watch_t *w);
static void watch_arm(uvp_nats_kv_watch_t *w);

static void on_watch_timer_closed(uv_handle_t *h) {
  uvp_nats_kv_watch_t *w = h->data;
  uvp_nats__js_release(w->js);
  free(w);
}

static void watch_release(uvp_nats_kv_watch_t *w) {
  if (--w->refs > 0)
    return;
  uvp_nats__js_obj_unlink(w->js, &w->obj);
  uv_close((uv_handle_t *)&w->timer, on_watch_timer_closed);
}

static bool watch_live(const uvp_nats_kv_watch_t *w) {
  return !w->closed && w->fail_rc == 0 && uvp_nats__js_usable(w->js) == 0;
}

/* Answer the server's flow control (or a stalled consumer's). */
static void fc_answer(uvp_nats_kv_watch_t *w, const char *reply) {
  if (reply != NULL && *reply != '\0' && watch_live(w))
    (void)uvp_nats__publish_msg(w->js->b, reply, NULL, NULL, 0, UINT64_MAX,
                                NULL);
}

/* ---- the public side: waits and the queue ---- */

static void kwait_unlink(kwait_t *k) {
  uvp_nats_kv_watch_t *w = k->w;
  if (k->prev != NULL)
    k->prev->next = k->next;
  else
    w->wfirst = k->next;
  if (k->next != NULL)
    k->next->prev = k->prev;
  else
    w->wlast = k->prev;
  uvp_nats__waiting_add(w->js->b, -1);
}

static void kwait_end(uvp_nats_kv_watch_t *w, int rc, uvp_nats_kv_entry_t *e) {
  kwait_t *k = w->wfirst;
  kwait_unlink(k);
  assert(w->wfirst != k); /* watch_fail's loop ends (the analyzer) */
  uvp_promise_t *p = k->p;
  if (rc == 0)
    uvp_promise_resolve(p, e, e != NULL ? free : NULL);
  else
    uvp_promise_reject(p, rc, NULL, NULL);
  uvp_inflight_end(&k->fl);
  free(k);
  uvp_promise_release(p);
}

static void on_kwait_cancel(uvp_inflight_t *fl, int code) {
  kwait_t *k = fl->data;
  uvp_promise_t *p = k->p;
  (void)code;
  kwait_unlink(k);
  uvp_inflight_end(&k->fl);
  free(k);
  uvp_promise_release(p);
}

static int kwait_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  const kwait_t *k = fl->data;
  return snprintf(buf, cap, "kv watch %s", k->w->name);
}

static const uvp_inflight_class_t kwait_class = {
    "JetStream", on_kwait_cancel, kwait_describe, UVP_INFLIGHT_IDLE};

/* An entry (NULL: caught up) for the owner, a wait, or the queue. */
static void deliver(uvp_nats_kv_watch_t *w, uvp_nats_kv_entry_t *e) {
  if (w->see != NULL) {
    w->see(w->owner, e, 0);
    return;
  }
  if (w->wfirst != NULL) {
    kwait_end(w, 0, e);
    return;
  }
  kitem_t *it = malloc(sizeof(*it));
  if (it == NULL) { /* lost: start again from before it */
    if (e != NULL) {
      w->last_sseq = e->revision - 1;
      free(e);
    }
    watch_restart(w);
    return;
  }
  it->e = e;
  it->next = NULL;
  if (w->qlast != NULL)
    w->qlast->next = it;
  else
    w->qfirst = it;
  w->qlast = it;
  w->queued++;
}

static void queue_drop(uvp_nats_kv_watch_t *w) {
  while (w->qfirst != NULL) {
    kitem_t *it = w->qfirst;
    w->qfirst = it->next;
    free(it->e);
    free(it);
  }
  w->qlast = NULL;
  w->queued = 0;
}

/* The watch failed for good: what waits learns it. */
static void watch_fail(uvp_nats_kv_watch_t *w, int rc) {
  w->fail_rc = rc;
  if (w->see != NULL) {
    w->see(w->owner, NULL, rc);
    return;
  }
  while (w->wfirst != NULL)
    kwait_end(w, rc, NULL);
}

/* ---- the open promise (the public watch's, until its first consumer) ---- */

/* A watch whose open failed or was cancelled: what it was making is
 * cut, its subscription dropped, and its last hold let go. */
static void open_abandon(uvp_nats_kv_watch_t *w) {
  if (w->making != NULL) {
    uvp_nats__js_op_cancel(w->making);
    w->making = NULL;
  }
  if (w->sub != NULL) {
    uvp_nats__js_sub_drop(w->sub);
    w->sub = NULL;
  }
  watch_release(w);
}

static void open_end(uvp_nats_kv_watch_t *w, int rc) {
  uvp_promise_t *p = w->open_p;
  if (p == NULL)
    return;
  w->open_p = NULL;
  if (rc == 0) {
    uvp_promise_resolve(p, w, NULL); /* the program's from now on */
  } else {
    uvp_promise_reject(p, rc, NULL, NULL);
    w->closed = true;
  }
  uvp_inflight_end(&w->open_fl);
  uvp_promise_release(p);
  if (rc != 0) /* nothing is left */
    open_abandon(w);
}

static void on_open_cancel(uvp_inflight_t *fl, int code) {
  uvp_nats_kv_watch_t *w = fl->data;
  uvp_promise_t *p = w->open_p;
  (void)code;
  w->open_p = NULL;
  w->closed = true;
  uvp_inflight_end(&w->open_fl);
  uvp_promise_release(p);
  open_abandon(w);
}

static int open_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  const uvp_nats_kv_watch_t *w = fl->data;
  return snprintf(buf, cap, "kv watch %s (starting)", w->name);
}

static const uvp_inflight_class_t open_class = {"JetStream", on_open_cancel,
                                                open_describe, 0};

/* ---- deliveries ---- */

static void on_heartbeat(uvp_nats_kv_watch_t *w, natsMsg *m) {
  w->stats.heartbeats++;
  const char *stalled = uvp_nats_msg_header(m, "Nats-Consumer-Stalled");
  if (stalled != NULL)
    fc_answer(w, stalled);
  const char *last = uvp_nats_msg_header(m, "Nats-Last-Consumer");
  if (last != NULL && strtoull(last, NULL, 10) != w->expect_cseq - 1)
    watch_restart(w); /* it sent what never came */
}

static void watch_take(void *owner, natsMsg *m) {
  uvp_nats_kv_watch_t *w = owner;
  if (!watch_live(w)) {
    uvp_nats__msg_free(m);
    return;
  }
  w->heard_at = uv_now(w->timer.loop);
  int status = uvp_nats__js_status(m);
  if (status == 100) {
    const char *d = uvp_nats_msg_header(m, "Description");
    if (d != NULL && strstr(d, "FlowControl") != NULL) {
      if (w->queued < 1024 || w->see != NULL) {
        fc_answer(w, natsMsg_GetReply(m));
      } else {
        free(w->fc_reply);
        w->fc_reply = strdup(natsMsg_GetReply(m));
      }
    } else {
      on_heartbeat(w, m);
    }
    uvp_nats__msg_free(m);
    return;
  }
  if (status != 0) { /* the consumer is gone */
    uvp_nats__msg_free(m);
    watch_restart(w);
    return;
  }
  const char *stream, *consumer;
  size_t slen, clen;
  uint64_t nums[5];
  if (!uvp_nats__js_metadata(natsMsg_GetReply(m), &stream, &slen, &consumer,
                             &clen, nums)) {
    uvp_nats__msg_free(m);
    return;
  }
  if (nums[2] != w->expect_cseq) { /* a gap */
    uvp_nats__msg_free(m);
    watch_restart(w);
    return;
  }
  w->expect_cseq++;
  w->last_sseq = nums[1];
  w->stats.entries++;
  const char *subj = natsMsg_GetSubject(m);
  size_t skip = 5 + strlen(w->bucket);
  uvp_nats_kv_entry_t *e =
      subj != NULL && strlen(subj) > skip
          ? uvp_nats__kv_entry_new(w->bucket, subj + skip, m, nums[1],
                                   (int64_t)nums[3], nums[4])
          : NULL;
  uvp_nats__msg_free(m);
  if (e == NULL) {
    w->last_sseq = nums[1] - 1;
    watch_restart(w);
    return;
  }
  bool now_caught_up = !w->caught_up && nums[4] == 0;
  deliver(w, e);
  if (now_caught_up && watch_live(w)) {
    w->caught_up = true;
    if (!(w->flags & UVP_NATS_KV_UPDATES_ONLY))
      deliver(w, NULL);
  }
}

static void watch_drained(void *owner) { (void)owner; }

static void watch_gone(void *owner, int rc) {
  uvp_nats_kv_watch_t *w = owner;
  (void)rc;
  w->sub = NULL;
}

static const uvp_nats__taker_t watch_taker = {watch_take, watch_drained,
                                              watch_gone};

/* ---- consumers: made, lost, made again ---- */

static bool transient(int rc) {
  return rc == UV_ETIMEDOUT || rc == UVP_NATS_ENORESPONDERS ||
         rc == UV_EAGAIN || rc == UVP_NATS_EDISCONNECTED ||
         rc == UVP_NATS_EJETSTREAM;
}

/* A consumer was made (j: its info), or making it failed (rc). */
static void watch_made(uvp_nats_kv_watch_t *w, int rc, json_t *j) {
  w->making = NULL;
  if (!watch_live(w)) {
    json_decref(j);
    return;
  }
  if (rc != 0) {
    if (!transient(rc) && !w->started) {
      open_end(w, rc);
      watch_fail(w, rc);
      return;
    }
    if (!transient(rc)) {
      watch_fail(w, rc);
      return;
    }
    w->retry_at = uv_now(w->timer.loop) + w->retry_in;
    w->retry_in = w->retry_in * 2 > 2000 ? 2000 : w->retry_in * 2;
    watch_arm(w);
    return;
  }
  const char *name = json_string_value(json_object_get(j, "name"));
  snprintf(w->consumer, sizeof(w->consumer), "%s", name != NULL ? name : "");
  uint64_t pending =
      (uint64_t)json_integer_value(json_object_get(j, "num_pending"));
  json_decref(j);
  w->retry_in = 250;
  w->heard_at = uv_now(w->timer.loop);
  w->stats.consumers++;
  bool first = !w->started;
  w->started = true;
  if (first)
    open_end(w, 0);
  if (!w->caught_up && pending == 0 && w->expect_cseq == 1 && watch_live(w)) {
    w->caught_up = true;
    if (!(w->flags & UVP_NATS_KV_UPDATES_ONLY))
      deliver(w, NULL);
  }
  watch_arm(w);
}

static void made(js_op_t *op, int rc, void *value, uvp_free_cb vfree) {
  (void)vfree;
  watch_made(op->data, rc, value);
}

static void make_step(js_op_t *op, int rc, natsMsg *m) {
  json_t *j = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_json(m, &j, &err);
  uvp_nats__js_op_end(op, rc, j, NULL, err);
}

static void make_data_free(void *arg) { watch_release(arg); }

/* A new consumer on a new inbox, from after the last entry taken. */
static void watch_make(uvp_nats_kv_watch_t *w) {
  if (!watch_live(w) || w->making != NULL)
    return;
  w->retry_at = 0;
  int rc = 0;
  if (w->sub == NULL) {
    rc = uvp_nats__inbox_new(w->js->b, w->inbox, sizeof(w->inbox));
    if (rc == 0)
      rc = uvp_nats_subscribe(w->js->b, w->inbox, NULL, &w->sub);
    if (rc == 0) {
      w->sub->taker = &watch_taker;
      w->sub->owner = w;
    }
  }
  const char *policy = w->last_sseq > 0 ? "by_start_sequence"
                       : (w->flags & UVP_NATS_KV_UPDATES_ONLY)
                           ? "new"
                           : "last_per_subject";
  json_t *cfg =
      rc == 0 ? json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:b, s:i, s:s, s:I}",
                          "deliver_subject", w->inbox, "deliver_policy", policy,
                          "ack_policy", "none", "filter_subject", w->filter,
                          "flow_control", 1, "idle_heartbeat",
                          (json_int_t)w->hb_ms * JS_NS, "mem_storage", 1,
                          "num_replicas", 1, "replay_policy", "instant",
                          "max_deliver", (json_int_t)1)
              : NULL;
  if (cfg != NULL && w->last_sseq > 0)
    json_object_set_new(cfg, "opt_start_seq",
                        json_integer((json_int_t)w->last_sseq + 1));
  char stream[80];
  snprintf(stream, sizeof(stream), "KV_%s", w->bucket);
  json_t *body = cfg != NULL ? json_pack("{s:s, s:o}", "stream_name", stream,
                                         "config", cfg)
                             : NULL;
  js_op_t *op = NULL;
  if (body != NULL)
    rc = uvp_nats__js_op_new(w->js, make_step, __FILE__, __LINE__, &op,
                             "kv watch %s (consumer)", w->name);
  else if (rc == 0)
    rc = UV_ENOMEM;
  if (rc != 0) {
    json_decref(body);
    watch_made(w, rc, NULL);
    return;
  }
  op->done = made;
  op->data = w;
  op->data_free = make_data_free;
  w->refs++;
  w->making = op;
  w->expect_cseq = 1;
  w->consumer[0] = '\0';
  rc = uvp_nats__js_op_api(op, true, NULL, body, "CONSUMER.CREATE.%s", stream);
  if (rc != 0) /* the op is gone, its data_free ran */
    watch_made(w, rc, NULL);
}

/* Lost track: drop the consumer and its inbox, make a new one. */
static void watch_restart(uvp_nats_kv_watch_t *w) {
  if (!watch_live(w))
    return;
  w->stats.restarts++;
  if (w->making != NULL) {
    uvp_nats__js_op_cancel(w->making);
    w->making = NULL;
  }
  if (w->consumer[0] != '\0') { /* nobody waits for the answer */
    char subj[400];
    snprintf(subj, sizeof(subj), "%s.CONSUMER.DELETE.KV_%s.%s", w->js->prefix,
             w->bucket, w->consumer);
    (void)uvp_nats__publish_msg(w->js->b, subj, NULL, NULL, 0, UINT64_MAX,
                                NULL);
    w->consumer[0] = '\0';
  }
  if (w->sub != NULL) { /* maybe inside its own delivery: later */
    uvp_nats__js_sub_drop(w->sub);
    w->sub = NULL;
  }
  watch_make(w);
}

static void on_watch_timer(uv_timer_t *t) {
  uvp_nats_kv_watch_t *w = t->data;
  uint64_t now = uv_now(t->loop);
  if (w->retry_at != 0) {
    if (w->retry_at <= now)
      watch_make(w);
  } else if (w->making == NULL && w->started &&
             now - w->heard_at > 2 * w->hb_ms + 500) {
    watch_restart(w); /* heartbeats stopped: its server died */
  }
  watch_arm(w);
}

/* The timer is due for a retry, or to look for missed heartbeats while a
 * consumer runs; never at once (a timer started again at 0 inside its
 * own callback would run again in the same turn, for ever). */
static void watch_arm(uvp_nats_kv_watch_t *w) {
  uint64_t at;
  if (!watch_live(w)) {
    uv_timer_stop(&w->timer);
    return;
  }
  if (w->retry_at != 0) {
    at = w->retry_at;
  } else if (w->making == NULL && w->started) {
    at = w->heard_at + 2 * w->hb_ms + 501;
  } else {
    uv_timer_stop(&w->timer);
    return;
  }
  uint64_t now = uv_now(w->timer.loop);
  uv_timer_start(&w->timer, on_watch_timer, at > now ? at - now : 1, 0);
}

/* ---- the connection closes ---- */

static void watch_obj_fail(js_obj_t *o, int rc, bool all) {
  uvp_nats_kv_watch_t *w = (uvp_nats_kv_watch_t *)o;
  w->refs++;
  if (w->making != NULL) {
    uvp_nats__js_op_cancel(w->making);
    w->making = NULL;
  }
  if (w->open_p != NULL)
    open_end(w, rc);
  else if (w->fail_rc == 0)
    watch_fail(w, rc);
  uv_timer_stop(&w->timer);
  if (all)
    uvp_nats__js_obj_unlink(w->js, &w->obj);
  watch_release(w);
}

/* ---- making, taking, closing ---- */

int uvp_nats__kv_watch_start(uvp_nats_js_t *js, const char *bucket,
                             const char *keys, int flags, uint64_t hb_ms,
                             uvp_nats__kv_see_fn see, void *owner,
                             uvp_nats_kv_watch_t **out) {
  if (!uvp_nats__js_name_ok(bucket) || !uvp_nats__kv_key_ok(keys, true) ||
      hb_ms > UVP_NATS_TIMEOUT_MAX)
    return UV_EINVAL;
  int rc = uvp_nats__js_usable(js);
  if (rc != 0)
    return rc;
  uvp_nats_kv_watch_t *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->js = js;
  uvp_nats__js_retain(js);
  snprintf(w->bucket, sizeof(w->bucket), "%s", bucket);
  snprintf(w->filter, sizeof(w->filter), "$KV.%s.%s", bucket, keys);
  snprintf(w->name, sizeof(w->name), "%s/%s", bucket, keys);
  w->flags = flags;
  w->hb_ms = hb_ms > 0 ? hb_ms : 5000;
  w->retry_in = 250;
  w->refs = 1;
  w->see = see;
  w->owner = owner;
  w->obj.fail = watch_obj_fail;
  uvp_nats__js_obj_link(js, &w->obj);
  uv_timer_init(js->b->loop, &w->timer);
  w->timer.data = w;
  uv_unref((uv_handle_t *)&w->timer);
  *out = w;
  return 0;
}

int uvp_nats_kv_watch_at(uvp_nats_js_t *js, const char *bucket,
                         const char *keys, const uvp_nats_kv_watch_opts_t *o,
                         uvp_promise_t **out, const char *file, int line) {
  if (js == NULL || out == NULL ||
      (o != NULL && (o->flags & ~UVP_NATS_KV_UPDATES_ONLY) != 0))
    return UV_EINVAL;
  uvp_nats_kv_watch_t *w;
  int rc =
      uvp_nats__kv_watch_start(js, bucket, keys, o != NULL ? o->flags : 0,
                               o != NULL ? o->heartbeat_ms : 0, NULL, NULL, &w);
  if (rc != 0)
    return rc;
  w->open_fl.data = w;
  rc = uvp_promise_new_at(js->ctx, &w->open_p, file, line);
  if (rc == 0 && (rc = uvp_inflight_start(js->ctx, &w->open_fl, w->open_p,
                                          &open_class)) != 0) {
    uvp_promise_release(w->open_p);
    w->open_p = NULL;
  }
  if (rc != 0) {
    w->closed = true;
    watch_release(w);
    return rc;
  }
  *out = uvp_promise_retain(w->open_p);
  watch_make(w);
  return 0;
}

void uvp_nats__kv_watch_go(uvp_nats_kv_watch_t *w) { watch_make(w); }

int uvp_nats_kv_watch_next_at(uvp_nats_kv_watch_t *w, uvp_promise_t **out,
                              const char *file, int line) {
  if (w == NULL || out == NULL || w->see != NULL)
    return UV_EINVAL;
  if (w->closed || uvp_nats__js_usable(w->js) != 0)
    return UVP_ECLOSED;
  kwait_t *k = calloc(1, sizeof(*k));
  if (k == NULL)
    return UV_ENOMEM;
  k->w = w;
  k->fl.data = k;
  int rc = uvp_promise_new_at(w->js->ctx, &k->p, file, line);
  if (rc == 0 &&
      (rc = uvp_inflight_start(w->js->ctx, &k->fl, k->p, &kwait_class)) != 0)
    uvp_promise_release(k->p);
  if (rc != 0) {
    free(k);
    return rc;
  }
  *out = uvp_promise_retain(k->p);
  k->prev = w->wlast;
  if (w->wlast != NULL)
    w->wlast->next = k;
  else
    w->wfirst = k;
  w->wlast = k;
  uvp_nats__waiting_add(w->js->b, 1);
  if (w->qfirst != NULL) {
    kitem_t *it = w->qfirst;
    w->qfirst = it->next;
    if (w->qfirst == NULL)
      w->qlast = NULL;
    w->queued--;
    uvp_nats_kv_entry_t *e = it->e;
    free(it);
    kwait_end(w, 0, e);
    if (w->queued == 0 && w->fc_reply != NULL) {
      fc_answer(w, w->fc_reply);
      free(w->fc_reply);
      w->fc_reply = NULL;
    }
  } else if (w->fail_rc != 0) {
    kwait_end(w, w->fail_rc, NULL);
  }
  return 0;
}

int uvp_nats_kv_watch_stats(const uvp_nats_kv_watch_t *w,
                            uvp_nats_kv_watch_stats_t *out) {
  if (w == NULL || out == NULL)
    return UV_EINVAL;
  *out = w->stats;
  return 0;
}

int uvp_nats_kv_watch_close(uvp_nats_kv_watch_t *w) {
  if (w == NULL || w->closed)
    return UV_EINVAL;
  if (w->wfirst != NULL)
    watch_fail(w, UV_ECANCELED);
  if (w->consumer[0] != '\0' && uvp_nats__js_usable(w->js) == 0) {
    char subj[400];
    snprintf(subj, sizeof(subj), "%s.CONSUMER.DELETE.KV_%s.%s", w->js->prefix,
             w->bucket, w->consumer);
    (void)uvp_nats__publish_msg(w->js->b, subj, NULL, NULL, 0, UINT64_MAX,
                                NULL);
  }
  w->closed = true;
  if (w->making != NULL) {
    uvp_nats__js_op_cancel(w->making);
    w->making = NULL;
  }
  if (w->sub != NULL) { /* a durable promise's see may close it */
    uvp_nats__js_sub_drop(w->sub);
    w->sub = NULL;
  }
  queue_drop(w);
  free(w->fc_reply);
  w->fc_reply = NULL;
  uv_timer_stop(&w->timer);
  watch_release(w);
  return 0;
}

/* uvp-nats: subscriptions, polled on the loop (uvp-nats.c says how it
 * fits). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "nats-internal.h"

/* ---- subscriptions ------------------------------------------------------- */

/* A wait was cut (cancel, deadline, uvp_ctx_close): only that wait goes;
 * no message was taken for it. */
static void on_wait_cancel(uvp_inflight_t *fl, int code) {
  waiter_t *w = fl->data;
  uvp_promise_t *p = w->p;
  (void)code;
  uvp_nats_sub_t *s = w->s;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    s->wfirst = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    s->wlast = w->prev;
  uvp_inflight_end(&w->w);
  free(w);
  uvp_nats__waiting_add(s->b, -1);
  uvp_promise_release(p);
}

static int wait_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  const uvp_nats_sub_t *s = ((const waiter_t *)fl->data)->s;
  if (s->queue != NULL)
    return snprintf(buf, cap, "next %s [queue %s]", s->subject, s->queue);
  return snprintf(buf, cap, "next %s", s->subject);
}

/* A wait for the next message is work in flight that may never end (a
 * message nobody has sent yet): "idle", so the virtual clock may jump past
 * it; the scope's deadline, its group and the task dump still hold. */
static const uvp_inflight_class_t wait_class = {
    "NATS", on_wait_cancel, wait_describe, UVP_INFLIGHT_IDLE};

/* The oldest wait of s ends (rc 0: with msg). */
static void wait_end(uvp_nats_sub_t *s, int rc, natsMsg *msg) {
  waiter_t *w = s->wfirst;
  s->wfirst = w->next;
  if (s->wfirst != NULL)
    s->wfirst->prev = NULL;
  else
    s->wlast = NULL;
  uvp_promise_t *p = w->p;
  uvp_nats__waiting_add(s->b, -1);
  if (rc == 0)
    uvp_promise_resolve(p, msg, uvp_nats__msg_free);
  else
    uvp_promise_reject(p, rc, NULL, NULL);
  uvp_inflight_end(&w->w);
  free(w);
  uvp_promise_release(p);
}

/* Messages nats.c dropped for s since the binding last counted them
 * (natsSubscription_GetDropped keeps counting while it drops, but its
 * error handler speaks once a slow spell). */
static uint64_t dropped_since(const uvp_nats_sub_t *s) {
  int64_t d = 0;
  if (s->sub == NULL) /* not made yet: uvp_nats_open still connects */
    return 0;
  if (natsSubscription_GetDropped(s->sub, &d) != NATS_OK || d <= s->dropped)
    return 0;
  return (uint64_t)(d - s->dropped);
}

/* uvp_nats_stats' dropped: those counted, and those not yet. */
static uint64_t dropped(const uvp_nats_t *b) {
  uint64_t n = b->stats.dropped;
  for (const uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next)
    n += dropped_since(s);
  return n;
}

static void count_one(uvp_nats_sub_t *s) {
  uint64_t d = dropped_since(s);
  s->b->stats.dropped += d;
  s->dropped += (int64_t)d;
}

static void count_dropped(uvp_nats_t *b) {
  for (uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next)
    count_one(s);
}

void uvp_nats__sub_free(uvp_nats_sub_t *s, int rc) {
  uvp_nats_t *b = s->b;
  count_one(s);
  if (s->taker != NULL)
    s->taker->gone(s->owner, rc);
  while (s->wfirst != NULL)
    wait_end(s, rc, NULL);
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    b->subs = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  if (s->draining) {
    b->draining--;
    if (b->draining == 0)
      uv_timer_stop(&b->drain_timer);
  }
  if (s->drain_p != NULL) {
    uvp_promise_t *p = s->drain_p;
    s->drain_p = NULL;
    uvp_nats__waiting_add(b, -1);
    if (rc == 0)
      uvp_promise_resolve(p, NULL, NULL);
    else
      uvp_promise_reject(p, rc, NULL, NULL);
    uvp_promise_release(p);
  }
  if (s->held != NULL)
    uvp_nats__msg_free(s->held);
  natsSubscription_Destroy(s->sub);
  free(s->subject);
  free(s->queue);
  free(s);
}

/* Hand what nats.c holds for s to its waits; while draining, find out
 * whether the drain is complete (only natsSubscription_NextMsg with a
 * timeout says so: it waits at most 1 ms, and not at all once nats.c's
 * drain thread has flushed the UNSUB).  False if s was freed. */

static bool sub_poll(uvp_nats_sub_t *s) {
  if (s->sub == NULL)
    return true;
  while (s->wfirst != NULL || s->taker != NULL) {
    natsMsg *m = s->held;
    s->held = NULL;
    natsStatus st =
        m != NULL ? NATS_OK : natsSubscription_NextMsg(&m, s->sub, 0);
    if (st == NATS_SLOW_CONSUMER)
      continue; /* counted by the error handler's event */
    if (st != NATS_OK)
      break;
    if (s->taker != NULL)
      s->taker->take(s->owner, m);
    else
      wait_end(s, 0, m);
  }
  if (!s->draining || s->held != NULL)
    return true;
  int msgs = 0, bytes = 0;
  if (natsSubscription_GetPending(s->sub, &msgs, &bytes) == NATS_OK && msgs > 0)
    return true;
  natsMsg *m = NULL;
  natsStatus st = natsSubscription_NextMsg(&m, s->sub, 1);
  if (st == NATS_OK) {
    s->held = m;
    return sub_poll(s);
  }
  if (natsSubscription_IsValid(s->sub))
    return true;
  if (s->taker != NULL) {
    s->taker->drained(s->owner); /* frees s */
    return false;
  }
  while (s->wfirst != NULL)
    wait_end(s, UV_EOF, NULL);
  uvp_nats__sub_free(s, 0);
  return false;
}

static void poll_subs(uvp_nats_t *b) {
  for (uvp_nats_sub_t *s = b->subs, *next; s != NULL; s = next) {
    next = s->next;
    if (s->wfirst != NULL || s->draining || s->taker != NULL)
      (void)sub_poll(s);
  }
}

static void on_drain_timer(uv_timer_t *t) { poll_subs(t->data); }

/* nats.c's subscription of s, on b's connection. */
static natsStatus sub_make(uvp_nats_sub_t *s, uvp_nats_t *b) {
  return s->queue != NULL
             ? natsConnection_QueueSubscribeSync(&s->sub, b->conn, s->subject,
                                                 s->queue)
             : natsConnection_SubscribeSync(&s->sub, b->conn, s->subject);
}

/* uvp_nats_open's connection is up: the subscriptions made meanwhile are
 * made at nats.c now (one it refuses ends as at uvp_nats_close). */
static void subs_up(uvp_nats_t *b) {
  for (uvp_nats_sub_t *s = b->subs, *next; s != NULL; s = next) {
    next = s->next;
    if (s->sub != NULL)
      continue;
    natsStatus st = sub_make(s, b);
    if (st != NATS_OK)
      uvp_nats__sub_free(s, uvp_nats_code(st));
  }
}

static void subs_fail(uvp_nats_t *b, int rc, bool all);

/* A subscription refused: its waits end; it stays for
 * uvp_nats_unsubscribe (the program hears of it: UVP_NATS_DENIED). */
static void subs_denied(uvp_nats_t *b, bool publish, const char *subject,
                        const char *why) {
  (void)why;
  if (publish)
    return;
  for (uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next)
    if (strcmp(s->subject, subject) == 0)
      while (s->wfirst != NULL)
        wait_end(s, UV_EACCES, NULL);
}

static const uvp_nats__layer_t subs_layer = {.denied = subs_denied,
                                             .poll = poll_subs,
                                             .up = subs_up,
                                             .fail = subs_fail,
                                             .count_dropped = count_dropped,
                                             .dropped = dropped};

int uvp_nats_subscribe(uvp_nats_t *b, const char *subject, const char *queue,
                       uvp_nats_sub_t **out) {
  if (b == NULL || out == NULL || !uvp_nats__subject_ok(subject, true) ||
      (queue != NULL && !uvp_nats__subject_ok(queue, false)))
    return UV_EINVAL;
  bool connecting = b->state == S_CONNECTING; /* uvp_nats_open's */
  if (b->state != S_OPEN && !connecting)
    return UVP_ECLOSED;
  uvp_nats__layer_set(b, UVP_NATS__SUBS, &subs_layer);
  uvp_nats_sub_t *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->subject = strdup(subject)) == NULL ||
      (queue != NULL && (s->queue = strdup(queue)) == NULL)) {
    if (s != NULL)
      free(s->subject);
    free(s);
    return UV_ENOMEM;
  }
  natsStatus st = connecting ? NATS_OK : sub_make(s, b);
  if (st != NATS_OK) {
    free(s->subject);
    free(s->queue);
    free(s);
    return uvp_nats_code(st);
  }
  s->b = b;
  s->next = b->subs;
  if (b->subs != NULL)
    b->subs->prev = s;
  b->subs = s;
  *out = s;
  return 0;
}

int uvp_nats_next_at(uvp_nats_sub_t *s, uvp_promise_t **out, const char *file,
                     int line) {
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  if (s->b->state != S_OPEN && s->b->state != S_CONNECTING)
    return UVP_ECLOSED;
  waiter_t *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->s = s;
  w->w.data = w;
  int rc = uvp_promise_new_at(s->b->ctx, &w->p, file, line);
  if (rc == 0 &&
      (rc = uvp_inflight_start(s->b->ctx, &w->w, w->p, &wait_class)) != 0)
    uvp_promise_release(w->p);
  if (rc != 0) {
    free(w);
    return rc;
  }
  *out = uvp_promise_retain(w->p);
  w->prev = s->wlast;
  if (s->wlast != NULL)
    s->wlast->next = w;
  else
    s->wfirst = w;
  s->wlast = w;
  uvp_nats__waiting_add(s->b, 1);
  (void)sub_poll(s); /* maybe a message is there already */
  return 0;
}

int uvp_nats_unsubscribe(uvp_nats_sub_t *s) {
  if (s == NULL)
    return UV_EINVAL;
  if (s->b->state == S_OPEN)
    (void)natsSubscription_Unsubscribe(s->sub);
  uvp_nats__sub_free(s, UV_ECANCELED);
  return 0;
}

static void on_drain_cancel(uvp_promise_t *p, void *arg) {
  uvp_nats_sub_t *s = arg;
  if (s->drain_p == p) {
    s->drain_p = NULL;
    uvp_nats__waiting_add(s->b, -1);
    uvp_promise_release(p);
  }
}

/* The drain of a subscription and of a service alike: the promise (with
 * `cancel` as its hook, if any), nats.c's drain, and the timer that
 * completes it (uvp_nats_drain says why a timer).  The caller keeps *p. */
int uvp_nats__drain_start(uvp_nats_sub_t *s, uvp_cancel_cb cancel,
                          uvp_promise_t **p, const char *file, int line) {
  uvp_nats_t *b = s->b;
  if (b->state != S_OPEN)
    return b->state == S_CONNECTING ? UV_ENOTCONN : UVP_ECLOSED;
  int rc = uvp_promise_new_at(b->ctx, p, file, line);
  if (rc == 0 && cancel != NULL)
    rc = uvp_promise_set_cancel(*p, cancel, s);
  natsStatus st = rc == 0 ? natsSubscription_Drain(s->sub) : NATS_OK;
  if (rc == 0 && st != NATS_OK)
    rc = uvp_nats_code(st);
  if (rc != 0) {
    if (*p != NULL) {
      uvp_promise_set_cancel(*p, NULL, NULL);
      uvp_promise_release(*p);
      *p = NULL;
    }
    return rc;
  }
  s->draining = true;
  if (b->draining++ == 0)
    uv_timer_start(&b->drain_timer, on_drain_timer, 10, 10);
  return 0;
}

int uvp_nats_drain_at(uvp_nats_sub_t *s, uvp_promise_t **out, const char *file,
                      int line) {
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  if (s->draining)
    return UV_EALREADY;
  uvp_promise_t *p = NULL;
  int rc = uvp_nats__drain_start(s, on_drain_cancel, &p, file, line);
  if (rc != 0)
    return rc;
  s->drain_p = p;
  uvp_nats__waiting_add(s->b, 1);
  *out = uvp_promise_retain(p);
  return 0;
}

/* The connection closes (all): every subscription goes; or nats.c gave
 * up on the server: the waits end, the subscriptions stay for
 * uvp_nats_unsubscribe. */
static void subs_fail(uvp_nats_t *b, int rc, bool all) {
  if (!all) {
    for (uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next)
      while (s->wfirst != NULL)
        wait_end(s, rc, NULL);
    return;
  }
  /* The head is read afresh: freeing one may free others (a service's
   * members, cut, may unsubscribe). */
  for (uvp_nats_sub_t *s; (s = b->subs) != NULL;) {
    if (b->conn != NULL && s->sub != NULL)
      (void)natsSubscription_Unsubscribe(s->sub);
    uvp_nats__sub_free(s, rc);
    assert(b->subs != s); /* unlinked: the loop moves on */
  }
}

/* uvp-nats: nats.c connections on a uvp context's loop.
 *
 * One binding object (uvp_nats_t) per connection holds nats.c's
 * natsConnection, the poll handle of its socket, a uv_timer_t for the
 * requests' timeouts, a uv_timer_t that polls draining subscriptions, and
 * a uv_async_t with a locked queue: the one way in from nats.c's threads.
 *
 * The event loop.  nats.c calls four callbacks (attach, read, write,
 * detach: natsOptions_SetEventLoop) from whichever thread is at work: the
 * pool thread connecting or closing, its reconnect thread, its timer
 * thread (PINGs), or the loop thread itself, inside a read event or a
 * publish; it holds its connection lock meanwhile, so they come one at a
 * time, in its order.  On the loop thread with nothing queued they act at
 * once (ev_post); otherwise they are queued in order and the async wakes
 * the loop, which applies them (ev_drain).  The inbox's replies (nats.c's
 * delivery thread) and the connection's events (its asynchronous-callback
 * thread) come the same way.  The async is referenced only while
 * something waits (a request, a next, a flush, a drain) or while the
 * connection closes; the poll handles and timers never are.
 *
 * Sockets.  nats.c closes a socket itself, maybe on another thread,
 * before the loop stops polling it, and a reconnect's socket may get the
 * same descriptor.  In libuv 1.44 closing the old handle removes the
 * descriptor from epoll, taking a new registration on it along; so a new
 * attach closes the old handle and starts the new one in its close
 * callback (on_poll_closed), and no handle is closed twice (b->poll is
 * cleared as it is closed).
 *
 * Lifetimes.  uvp_nats_close runs natsConnection_Close on the pool (on
 * the loop it would wait up to 500 ms for a PONG only the loop can read).
 * natsConnection_Destroy waits (maybe_finish) until: that job returned,
 * the loop applied the detach and the poll handle's close callback ran
 * (destroying the connection inside natsConnection_ProcessReadEvent is
 * nats.c#888's crash), nats.c's closed callback came (its asynchronous
 * thread holds our pointer until then) and the inbox's delivery thread
 * said it is done (natsSubscription_SetOnCompleteCB).  The binding's
 * memory goes with the last of its handles' close callbacks.
 *
 * Requests.  One wildcard inbox subscription per connection,
 * "<inbox>.*"; request #id is published with reply "<inbox>.<id>" and
 * found by id in a hash when its reply comes.  A request's own timeout
 * runs on one timer per connection over a list sorted by expiry (inserted
 * from the tail: with one timeout for all, that is O(1)); the scope's
 * deadline watches its promise (uvp_deadline_watch). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uvp-nats.h"

enum {
  EV_ATTACH,
  EV_READ,
  EV_WRITE,
  EV_DETACH,
  EV_MSG,
  EV_CONN,
  EV_INBOX_DONE
};

typedef struct ev_s {
  struct ev_s *next;
  int type;
  int arg; /* add (READ, WRITE), the socket (ATTACH), the event (CONN) */
  natsConnection *conn; /* ATTACH */
  natsMsg *msg;         /* MSG */
} ev_t;

typedef struct poll_s {
  uv_poll_t h;
  uvp_nats_t *b;
  int fd; /* our duplicate of nats.c's socket */
} poll_t;

typedef struct req_s req_t;
struct req_s {
  uvp_nats_t *b;
  uvp_promise_t *p; /* ours */
  uint64_t id;
  uint64_t start_ms, expire_ms;
  req_t *hnext;         /* hash chain */
  req_t *prev, *next;   /* every request, oldest first */
  req_t *tprev, *tnext; /* by expiry */
  bool setup;           /* uvp_nats_request has not returned yet */
  bool hold;            /* counted in holding (the virtual clock) */
  bool cancelled;
  const char *file;
  int line;
  char subject[];
};

typedef struct waiter_s waiter_t;
struct waiter_s {
  uvp_nats_sub_t *s;
  uvp_promise_t *p; /* ours */
  waiter_t *prev, *next;
  bool setup, cancelled;
};

struct uvp_nats_sub_s {
  uvp_nats_t *b;
  natsSubscription *sub;
  char *subject, *queue;
  waiter_t *wfirst, *wlast;
  natsMsg *held; /* taken from nats.c while draining, for the next wait */
  uvp_promise_t *drain_p;
  bool draining;
  int64_t dropped;     /* natsSubscription_GetDropped, as last counted */
  uvp_nats_svc_t *svc; /* a service's: messages go to it, not to waits */
  uvp_nats_sub_t *prev, *next;
};

struct uvp_nats_svc_s {
  uvp_nats_t *b;
  uvp_nats_sub_t *sub; /* NULL once drained or closed */
  uvp_group_t *g;
  uvp_nats_serve_opts_t o;
  char worker[300];
  uvp_promise_t *drain_p;
  bool closed; /* the connection is closing: no more replies */
  uvp_nats_serve_stats_t stats;
};

/* A blocking nats.c call run on the thread pool for a promise. */
typedef struct job_s {
  uv_work_t w;
  uvp_nats_t *b;
  uvp_promise_t *p; /* NULL once cancelled */
  int64_t timeout_ms;
  natsStatus s;
  int rc;
} job_t;

enum { S_CONNECTING, S_OPEN, S_DEAD, S_CLOSING };

struct uvp_nats_s {
  uvp_ctx_t *ctx;
  uv_loop_t *loop;
  uv_thread_t loop_thread;
  natsOptions *opts;
  natsConnection *conn;
  natsSubscription *inbox_sub;
  char inbox[128]; /* "_INBOX.<nuid>" */
  size_t inbox_len;
  int flags;
  uvp_nats_event_cb on_event;
  void *arg;
  int state;
  /* the queue from nats.c's threads (lock) */
  uv_mutex_t lock;
  uv_async_t async;
  ev_t *qhead, *qtail, *qfree;
  /* the socket */
  poll_t *poll;
  bool poll_closing, attached;
  int fd, events;
  unsigned in_nats; /* inside natsConnection_Process*Event */
  /* requests */
  uv_timer_t timer, drain_timer;
  req_t **buckets;
  size_t nbuckets;
  req_t *first, *last, *tfirst, *tlast;
  uint64_t next_id;
  size_t waiting; /* what keeps uv_run going: requests, waits, jobs */
  size_t holding; /* requests that hold the virtual clock */
  bool held;      /* uvp_clock_hold is in force */
  uvp_nats_sub_t *subs;
  size_t draining;
  size_t svcs; /* services whose group has not joined yet */
  /* teardown */
  job_t connect_job, close_job;
  size_t jobs;       /* flush jobs running */
  bool connect_done; /* the connect job returned */
  bool close_started, close_done, got_closed, inbox_done, finished;
  unsigned handles; /* libuv handles not yet closed */
  uvp_nats_stats_t stats;
};

static void msg_free(void *m) { natsMsg_Destroy(m); }

/* ---- errors -------------------------------------------------------------- */

const char *uvp_nats_strerror(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return msg;
    UVP_NATS_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_strerror(code);
  }
}

const char *uvp_nats_err_name(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return #name;
    UVP_NATS_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_err_name(code);
  }
}

int uvp_nats_code(natsStatus s) {
  switch (s) {
  case NATS_OK:
    return 0;
  case NATS_NO_SERVER:
    return UV_ECONNREFUSED;
  case NATS_TIMEOUT:
    return UV_ETIMEDOUT;
  case NATS_NO_MEMORY:
    return UV_ENOMEM;
  case NATS_INVALID_ARG:
  case NATS_INVALID_SUBJECT:
  case NATS_INVALID_SUBSCRIPTION:
    return UV_EINVAL;
  case NATS_MAX_PAYLOAD:
    return UV_EMSGSIZE;
  case NATS_INSUFFICIENT_BUFFER:
    return UV_ENOBUFS;
  case NATS_CONNECTION_CLOSED:
    return UVP_ECLOSED;
  case NATS_CONNECTION_DISCONNECTED:
    return UVP_NATS_EDISCONNECTED;
  case NATS_NO_RESPONDERS:
    return UVP_NATS_ENORESPONDERS;
  case NATS_NOT_PERMITTED:
    return UV_EACCES;
  case NATS_NO_SERVER_SUPPORT:
    return UV_ENOTSUP;
  case NATS_SSL_ERROR:
  case NATS_PROTOCOL_ERROR:
    return UV_EPROTO;
  default:
    return UVP_NATS_ENATS;
  }
}

/* The code a name from uvp_nats_err_name stands for (a reply's
 * Uvp-Error): libuv's, uvp's and the binding's; UV_EPROTO if unknown. */
static int code_of_name(const char *name) {
#define XX(code, msg)                                                          \
  if (strcmp(name, #code) == 0)                                                \
    return UV_##code;
  UV_ERRNO_MAP(XX)
#undef XX
#define XX(n, val, msg)                                                        \
  if (strcmp(name, #n) == 0)                                                   \
    return val;
  UVP_ERRNO_MAP(XX)
  UVP_NATS_ERRNO_MAP(XX)
#undef XX
  return UV_EPROTO;
}

/* A subject: tokens of printable characters but space, none empty; with
 * `wild`, "*" and ">" tokens too (">" last). */
static bool subject_ok(const char *s, bool wild) {
  if (s == NULL || *s == '\0')
    return false;
  const char *tok = s;
  for (const char *c = s;; c++) {
    if (*c == '.' || *c == '\0') {
      size_t n = (size_t)(c - tok);
      if (n == 0)
        return false;
      if (n == 1 && (*tok == '*' || *tok == '>')) {
        if (!wild || (*tok == '>' && *c != '\0'))
          return false;
      }
      if (*c == '\0')
        return true;
      tok = c + 1;
    } else if ((unsigned char)*c <= ' ' || *c == 0x7f) {
      return false;
    }
  }
}

/* ---- keeping the loop going ---------------------------------------------- */

/* Something waits: the async keeps uv_run() going, and requests hold a
 * virtual clock to the loop's pace (uvp_clock_hold). */
static void keep_set(uvp_nats_t *b) {
  if (b->waiting > 0 || (b->close_started && !b->finished))
    uv_ref((uv_handle_t *)&b->async);
  else
    uv_unref((uv_handle_t *)&b->async);
  bool hold = b->holding > 0;
  if (hold != b->held) {
    b->held = hold;
    if (hold)
      (void)uvp_clock_hold(b->ctx);
    else
      (void)uvp_clock_unhold(b->ctx);
  }
}

static void waiting_add(uvp_nats_t *b, int d) {
  b->waiting = (size_t)((ptrdiff_t)b->waiting + d);
  keep_set(b);
}

/* ---- the socket ---------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);
static void poll_subs(uvp_nats_t *b);
static void maybe_finish(uvp_nats_t *b);

static int poll_update(uvp_nats_t *b) {
  if (b->poll == NULL)
    return 0;
  if (b->events != 0)
    return uv_poll_start(&b->poll->h, b->events, on_poll);
  return uv_poll_stop(&b->poll->h);
}

/* The loop polls a duplicate of nats.c's socket, never nats.c's own
 * descriptor: nats.c closes its socket on its own thread right after
 * asking (through the queue) to stop polling it, and libuv applies a
 * poll's epoll change only at the loop's next turn, aborting when
 * epoll_ctl fails with EBADF (nats-io/nats.c#814's window).  The
 * duplicate keeps the socket open until the poll handle's close
 * callback closes it. */
static int poll_open(uvp_nats_t *b) {
  poll_t *p = malloc(sizeof(*p));
  if (p == NULL)
    return UV_ENOMEM;
  p->fd = fcntl(b->fd, F_DUPFD_CLOEXEC, 0);
  if (p->fd < 0) {
    int rc = uv_translate_sys_error(errno);
    free(p); /* a socket nats.c closed already: its next attach comes */
    return rc;
  }
  int rc = uv_poll_init_socket(b->loop, &p->h, p->fd);
  if (rc != 0) {
    close(p->fd);
    free(p);
    return rc;
  }
  p->b = b;
  p->h.data = p;
  uv_unref((uv_handle_t *)&p->h);
  b->handles++;
  b->poll = p;
  b->stats.polls++;
  return poll_update(b);
}

static void on_poll_closed(uv_handle_t *h) {
  poll_t *p = h->data;
  uvp_nats_t *b = p->b;
  close(p->fd);
  free(p);
  b->handles--;
  b->poll_closing = false;
  if (b->attached && b->poll == NULL && b->fd >= 0)
    (void)poll_open(b); /* the attach that came meanwhile */
  maybe_finish(b);
}

static void poll_close(uvp_nats_t *b) {
  if (b->poll == NULL)
    return;
  uv_close((uv_handle_t *)&b->poll->h, on_poll_closed);
  b->poll = NULL;
  b->poll_closing = true;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poll_t *p = h->data;
  uvp_nats_t *b = p->b;
  b->in_nats++;
  if (status < 0 || (events & UV_READABLE))
    natsConnection_ProcessReadEvent(b->conn); /* an error reconnects */
  if (b->poll == p && status == 0 && (events & UV_WRITABLE))
    natsConnection_ProcessWriteEvent(b->conn);
  b->in_nats--;
  poll_subs(b);
}

/* ---- the event loop's callbacks and the queue ---------------------------- */

static void on_reply(uvp_nats_t *b, natsMsg *m);
static void on_conn_event(uvp_nats_t *b, int event);

static natsStatus ev_apply(uvp_nats_t *b, ev_t *ev) {
  int rc = 0;
  switch (ev->type) {
  case EV_ATTACH:
    if (b->conn == NULL)
      b->conn = ev->conn;
    b->attached = true;
    b->fd = ev->arg;
    b->events = UV_READABLE;
    poll_close(b);
    if (!b->poll_closing)
      rc = poll_open(b);
    break;
  case EV_READ:
  case EV_WRITE: {
    int bit = ev->type == EV_READ ? UV_READABLE : UV_WRITABLE;
    b->events = ev->arg ? (b->events | bit) : (b->events & ~bit);
    rc = poll_update(b);
    break;
  }
  case EV_DETACH:
    b->attached = false;
    b->fd = -1;
    b->events = 0;
    poll_close(b);
    maybe_finish(b);
    break;
  case EV_MSG:
    on_reply(b, ev->msg);
    break;
  case EV_CONN:
    on_conn_event(b, ev->arg);
    break;
  case EV_INBOX_DONE:
    b->inbox_done = true;
    maybe_finish(b);
    break;
  }
  return rc == 0 ? NATS_OK : NATS_ERR;
}

static bool on_loop(const uvp_nats_t *b) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &b->loop_thread) != 0;
}

/* Apply at once on the loop thread with nothing queued before it (an
 * event-loop call, made under nats.c's connection lock); otherwise queue
 * it, in order, and wake the loop.  The async is sent under the lock, so
 * once the loop has taken an event from the queue the thread that sent it
 * has left the binding's memory (maybe_finish relies on it). */
static natsStatus ev_post(uvp_nats_t *b, int type, int arg,
                          natsConnection *conn, natsMsg *msg) {
  ev_t local = {NULL, type, arg, conn, msg};
  uv_mutex_lock(&b->lock);
  if (type <= EV_DETACH && b->qhead == NULL && on_loop(b)) {
    uv_mutex_unlock(&b->lock);
    b->stats.direct_events++;
    return ev_apply(b, &local);
  }
  ev_t *ev = b->qfree;
  if (ev != NULL)
    b->qfree = ev->next;
  else if ((ev = malloc(sizeof(*ev))) == NULL) {
    uv_mutex_unlock(&b->lock);
    return NATS_NO_MEMORY;
  }
  *ev = local;
  if (b->qtail != NULL)
    b->qtail->next = ev;
  else
    b->qhead = ev;
  b->qtail = ev;
  uv_async_send(&b->async);
  uv_mutex_unlock(&b->lock);
  return NATS_OK;
}

/* One event at a time: what an event's handling does on the loop (a
 * publish's write) may go directly only once nothing is queued. */
static void ev_drain(uvp_nats_t *b) {
  for (;;) {
    uv_mutex_lock(&b->lock);
    ev_t *ev = b->qhead;
    if (ev == NULL) {
      uv_mutex_unlock(&b->lock);
      return;
    }
    ev_t copy = *ev;
    b->qhead = ev->next;
    if (b->qhead == NULL)
      b->qtail = NULL;
    ev->next = b->qfree;
    b->qfree = ev;
    uv_mutex_unlock(&b->lock);
    if (copy.type <= EV_DETACH)
      b->stats.queued_events++;
    (void)ev_apply(b, &copy); /* a failed attach: a socket nats.c closed
                                 already; its next attach comes */
  }
}

static void on_async(uv_async_t *a) {
  uvp_nats_t *b = a->data;
  ev_drain(b);
  poll_subs(b);
}

static natsStatus el_attach(void **user, void *loop, natsConnection *nc,
                            natsSock fd) {
  *user = loop;
  return ev_post(loop, EV_ATTACH, (int)fd, nc, NULL);
}

static natsStatus el_read(void *user, bool add) {
  return ev_post(user, EV_READ, add, NULL, NULL);
}

static natsStatus el_write(void *user, bool add) {
  return ev_post(user, EV_WRITE, add, NULL, NULL);
}

static natsStatus el_detach(void *user) {
  return ev_post(user, EV_DETACH, 0, NULL, NULL);
}

/* nats.c's delivery thread (the inbox) and asynchronous-callback thread
 * (connection events). */
static void inbox_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                     void *closure) {
  (void)nc;
  (void)sub;
  if (ev_post(closure, EV_MSG, 0, NULL, msg) != NATS_OK)
    natsMsg_Destroy(msg); /* no memory: the request times out */
}

static void inbox_done_cb(void *closure) {
  (void)ev_post(closure, EV_INBOX_DONE, 0, NULL, NULL);
}

static void disconnected_cb(natsConnection *nc, void *closure) {
  (void)nc;
  (void)ev_post(closure, EV_CONN, UVP_NATS_DISCONNECTED, NULL, NULL);
}

static void reconnected_cb(natsConnection *nc, void *closure) {
  (void)nc;
  (void)ev_post(closure, EV_CONN, UVP_NATS_RECONNECTED, NULL, NULL);
}

static void closed_cb(natsConnection *nc, void *closure) {
  (void)nc;
  (void)ev_post(closure, EV_CONN, UVP_NATS_CLOSED, NULL, NULL);
}

static void error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err,
                     void *closure) {
  (void)nc;
  (void)sub;
  if (err == NATS_SLOW_CONSUMER)
    (void)ev_post(closure, EV_CONN, UVP_NATS_SLOW_CONSUMER, NULL, NULL);
}

/* ---- requests ------------------------------------------------------------ */

static size_t req_bucket(const uvp_nats_t *b, uint64_t id) {
  return (size_t)(id * 0x9E3779B97F4A7C15ull >> 32) & (b->nbuckets - 1);
}

static req_t *req_find(const uvp_nats_t *b, uint64_t id) {
  if (b->nbuckets == 0)
    return NULL;
  for (req_t *r = b->buckets[req_bucket(b, id)]; r != NULL; r = r->hnext)
    if (r->id == id)
      return r;
  return NULL;
}

/* Room for one more in the hash (grown to twice the requests in flight). */
static int req_room(uvp_nats_t *b) {
  if (b->stats.in_flight + 1 <= b->nbuckets / 2)
    return 0;
  size_t n = b->nbuckets ? b->nbuckets * 2 : 64;
  req_t **nb = calloc(n, sizeof(*nb));
  if (nb == NULL)
    return UV_ENOMEM;
  req_t **old = b->buckets;
  size_t oldn = b->nbuckets;
  b->buckets = nb;
  b->nbuckets = n;
  for (size_t i = 0; i < oldn; i++)
    for (req_t *r = old[i], *next; r != NULL; r = next) {
      next = r->hnext;
      size_t k = req_bucket(b, r->id);
      r->hnext = nb[k];
      nb[k] = r;
    }
  free(old);
  return 0;
}

static void on_timer(uv_timer_t *t);

static void timer_arm(uvp_nats_t *b) {
  if (b->tfirst == NULL) {
    uv_timer_stop(&b->timer);
    return;
  }
  uint64_t now = uv_now(b->loop);
  uint64_t at = b->tfirst->expire_ms;
  uv_timer_start(&b->timer, on_timer, at > now ? at - now : 0, 0);
}

static void req_link(uvp_nats_t *b, req_t *r) {
  size_t k = req_bucket(b, r->id);
  r->hnext = b->buckets[k];
  b->buckets[k] = r;
  r->prev = b->last;
  if (b->last != NULL)
    b->last->next = r;
  else
    b->first = r;
  b->last = r;
  req_t *t = b->tlast; /* sorted by expiry, from the tail */
  while (t != NULL && t->expire_ms > r->expire_ms)
    t = t->tprev;
  r->tprev = t;
  r->tnext = t != NULL ? t->tnext : b->tfirst;
  if (r->tnext != NULL)
    r->tnext->tprev = r;
  else
    b->tlast = r;
  if (t != NULL)
    t->tnext = r;
  else
    b->tfirst = r;
  b->stats.in_flight++;
  b->holding += r->hold;
  if (b->tfirst == r)
    timer_arm(b);
  waiting_add(b, 1);
}

static void req_unlink(uvp_nats_t *b, req_t *r) {
  req_t **pp = &b->buckets[req_bucket(b, r->id)];
  while (*pp != r)
    pp = &(*pp)->hnext;
  *pp = r->hnext;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    b->first = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  else
    b->last = r->prev;
  bool was_first = b->tfirst == r;
  if (r->tprev != NULL)
    r->tprev->tnext = r->tnext;
  else
    b->tfirst = r->tnext;
  if (r->tnext != NULL)
    r->tnext->tprev = r->tprev;
  else
    b->tlast = r->tprev;
  b->stats.in_flight--;
  b->holding -= r->hold;
  if (was_first)
    timer_arm(b);
  waiting_add(b, -1);
}

/* Settle r's promise (rc 0: with msg) and let it go. */
static void req_end(uvp_nats_t *b, req_t *r, int rc, natsMsg *msg) {
  req_unlink(b, r);
  uvp_promise_t *p = r->p;
  free(r);
  if (rc == 0)
    uvp_promise_resolve(p, msg, msg_free);
  else
    uvp_promise_reject(p, rc, NULL, NULL);
  uvp_promise_release(p); /* may run the program's code: r is gone */
}

static void on_timer(uv_timer_t *t) {
  uvp_nats_t *b = t->data;
  uint64_t now = uv_now(b->loop);
  while (b->tfirst != NULL && b->tfirst->expire_ms <= now) {
    b->stats.timeouts++;
    req_end(b, b->tfirst, UV_ETIMEDOUT, NULL);
  }
}

static void on_req_cancel(uvp_promise_t *p, void *arg) {
  req_t *r = arg;
  (void)p;
  r->cancelled = true;
  if (r->setup)
    return; /* uvp_nats_request sees it */
  uvp_nats_t *b = r->b;
  req_unlink(b, r);
  b->stats.cancelled++;
  free(r);
  uvp_promise_release(p);
}

/* The one place a request is named: the task dump and uvp_nats_dump. */
static int req_describe(void *arg, char *buf, size_t cap) {
  const req_t *r = arg;
  return snprintf(buf, cap, "request %s #%" PRIu64, r->subject, r->id);
}

static void on_reply(uvp_nats_t *b, natsMsg *m) {
  const char *subj = natsMsg_GetSubject(m);
  req_t *r = NULL;
  if (subj != NULL && strncmp(subj, b->inbox, b->inbox_len) == 0 &&
      subj[b->inbox_len] == '.') {
    char *end;
    errno = 0;
    uint64_t id = strtoull(subj + b->inbox_len + 1, &end, 10);
    if (errno == 0 && *end == '\0')
      r = req_find(b, id);
  }
  if (r == NULL) {
    b->stats.late++;
    natsMsg_Destroy(m);
    return;
  }
  if (natsMsg_IsNoResponders(m)) {
    natsMsg_Destroy(m);
    b->stats.no_responders++;
    req_end(b, r, UVP_NATS_ENORESPONDERS, NULL);
    return;
  }
  b->stats.replies++;
  const char *err = uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER);
  if (err != NULL) { /* the worker's handler failed: that code */
    req_unlink(b, r);
    uvp_promise_t *p = r->p;
    free(r);
    uvp_promise_reject(p, code_of_name(err), m, msg_free);
    uvp_promise_release(p);
    return;
  }
  req_end(b, r, 0, m);
}

/* Every request in flight ends with rc (no more replies will come). */
static void reqs_fail(uvp_nats_t *b, int rc) {
  while (b->first != NULL) {
    b->stats.cancelled++;
    req_end(b, b->first, rc, NULL);
  }
}

/* A message with subject, reply, data and the headers: the Uvp-Timeout-Ms
 * one (timeout_ms, unless UINT64_MAX) and the program's. */
static int msg_make(natsMsg **out, const char *subject, const char *reply,
                    const void *data, size_t len, uint64_t timeout_ms,
                    const char *const *headers) {
  if (len > INT32_MAX)
    return UV_EMSGSIZE;
  natsMsg *m;
  natsStatus s = natsMsg_Create(&m, subject, reply, data, (int)len);
  if (s != NATS_OK)
    return uvp_nats_code(s);
  if (timeout_ms != UINT64_MAX) {
    char v[24];
    snprintf(v, sizeof(v), "%" PRIu64, timeout_ms);
    s = natsMsgHeader_Set(m, UVP_NATS_TIMEOUT_HEADER, v);
  }
  for (size_t i = 0; s == NATS_OK && headers != NULL && headers[i]; i++) {
    const char *colon = strchr(headers[i], ':');
    size_t n = colon != NULL ? (size_t)(colon - headers[i]) : 0;
    char name[256];
    if (n == 0 || n >= sizeof(name)) {
      natsMsg_Destroy(m);
      return UV_EINVAL;
    }
    memcpy(name, headers[i], n);
    name[n] = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    s = natsMsgHeader_Add(m, name, v);
  }
  if (s != NATS_OK) {
    natsMsg_Destroy(m);
    return uvp_nats_code(s);
  }
  *out = m;
  return 0;
}

/* Checks common to a publish and a request; then nats.c publishes. */
static int publish_msg(uvp_nats_t *b, const char *subject, const char *reply,
                       const void *data, size_t len, uint64_t timeout_ms,
                       const char *const *headers) {
  if (!subject_ok(subject, false) ||
      (reply != NULL && !subject_ok(reply, false)) || (data == NULL && len > 0))
    return UV_EINVAL;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  int64_t max = natsConnection_GetMaxPayload(b->conn);
  if (max > 0 && len > (uint64_t)max)
    return UV_EMSGSIZE;
  natsMsg *m;
  int rc = msg_make(&m, subject, reply, data, len, timeout_ms, headers);
  if (rc != 0)
    return rc;
  natsStatus s = natsConnection_PublishMsg(b->conn, m);
  natsMsg_Destroy(m);
  return uvp_nats_code(s);
}

int uvp_nats_publish(uvp_nats_t *nc, const char *subject, const char *reply,
                     const void *data, size_t len, const char *const *headers) {
  if (nc == NULL)
    return UV_EINVAL;
  return publish_msg(nc, subject, reply, data, len, UINT64_MAX, headers);
}

/* A new request, its promise hooked and watched by the scope's deadline. */
static int req_new(uvp_nats_t *b, const char *subject, req_t **out,
                   const char *file, int line) {
  size_t n = strlen(subject);
  req_t *r = calloc(1, sizeof(*r) + n + 1);
  if (r == NULL)
    return UV_ENOMEM;
  memcpy(r->subject, subject, n + 1);
  r->b = b;
  r->id = ++b->next_id;
  r->file = file;
  r->line = line;
  r->setup = true;
  int rc = uvp_promise_new_at(b->ctx, &r->p, file, line);
  if (rc == 0)
    rc = uvp_promise_set_cancel_described(r->p, on_req_cancel, r, NULL, "NATS",
                                          req_describe);
  if (rc == 0 && (rc = uvp_deadline_watch(b->ctx, r->p)) != 0)
    uvp_promise_set_cancel(r->p, NULL, NULL);
  if (rc != 0) {
    if (r->p != NULL)
      uvp_promise_release(r->p); /* pending, its hook gone: nothing runs */
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

int uvp_nats_request_at(uvp_nats_t *b, const char *subject, const void *data,
                        size_t len, const uvp_nats_request_opts_t *opts,
                        uvp_promise_t **out, const char *file, int line) {
  if (b == NULL || out == NULL || !subject_ok(subject, false))
    return UV_EINVAL;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  int rc = req_room(b);
  req_t *r;
  if (rc != 0 || (rc = req_new(b, subject, &r, file, line)) != 0)
    return rc;
  if (r->cancelled) { /* the scope's deadline has passed: nothing sent */
    *out = r->p;
    free(r);
    return 0;
  }
  uint64_t timeout = opts != NULL && opts->timeout_ms > 0
                         ? opts->timeout_ms
                         : UVP_NATS_REQUEST_TIMEOUT_DEFAULT;
  uint64_t left = uvp_deadline_left(b->ctx);
  char reply[160];
  snprintf(reply, sizeof(reply), "%s.%" PRIu64, b->inbox, r->id);
  rc =
      publish_msg(b, subject, reply, data, len, left < timeout ? left : timeout,
                  opts != NULL ? opts->headers : NULL);
  if (rc != 0) {
    uvp_promise_set_cancel(r->p, NULL, NULL);
    uvp_promise_release(r->p);
    free(r);
    return rc;
  }
  r->setup = false;
  r->start_ms = uv_now(b->loop);
  r->expire_ms = r->start_ms + timeout;
  r->hold = opts == NULL || !(opts->flags & UVP_NATS_REQUEST_NO_HOLD);
  req_link(b, r);
  b->stats.requests++;
  *out = uvp_promise_retain(r->p);
  return 0;
}

const char *uvp_nats_msg_header(natsMsg *msg, const char *name) {
  const char *v = NULL;
  if (msg == NULL || name == NULL ||
      natsMsgHeader_Get(msg, name, &v) != NATS_OK)
    return NULL;
  return v;
}

int uvp_nats_dump(uvp_nats_t *b, FILE *stream) {
  if (b == NULL || stream == NULL)
    return UV_EINVAL;
  int n = 0;
  uint64_t now = uv_now(b->loop);
  for (req_t *r = b->first; r != NULL; r = r->next, n++)
    fprintf(stream,
            "NATS request %s #%" PRIu64 " for %" PRIu64
            " ms (promise at %s:%d)\n",
            r->subject, r->id, now - r->start_ms,
            r->file != NULL ? r->file : "?", r->line);
  return n;
}

int uvp_nats_stats(const uvp_nats_t *b, uvp_nats_stats_t *out) {
  if (b == NULL || out == NULL)
    return UV_EINVAL;
  *out = b->stats;
  return 0;
}

natsConnection *uvp_nats_connection(const uvp_nats_t *b) {
  return b != NULL ? b->conn : NULL;
}

/* ---- subscriptions ------------------------------------------------------- */

static void on_wait_cancel(uvp_promise_t *p, void *arg) {
  waiter_t *w = arg;
  w->cancelled = true;
  if (w->setup)
    return;
  uvp_nats_sub_t *s = w->s;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    s->wfirst = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  else
    s->wlast = w->prev;
  free(w);
  waiting_add(s->b, -1);
  uvp_promise_release(p);
}

static int wait_describe(void *arg, char *buf, size_t cap) {
  const uvp_nats_sub_t *s = ((const waiter_t *)arg)->s;
  if (s->queue != NULL)
    return snprintf(buf, cap, "next %s [queue %s]", s->subject, s->queue);
  return snprintf(buf, cap, "next %s", s->subject);
}

/* The oldest wait of s ends (rc 0: with msg). */
static void wait_end(uvp_nats_sub_t *s, int rc, natsMsg *msg) {
  waiter_t *w = s->wfirst;
  s->wfirst = w->next;
  if (s->wfirst != NULL)
    s->wfirst->prev = NULL;
  else
    s->wlast = NULL;
  uvp_promise_t *p = w->p;
  free(w);
  waiting_add(s->b, -1);
  if (rc == 0)
    uvp_promise_resolve(p, msg, msg_free);
  else
    uvp_promise_reject(p, rc, NULL, NULL);
  uvp_promise_release(p);
}

static void count_dropped(uvp_nats_t *b) {
  for (uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next) {
    int64_t d = 0;
    if (natsSubscription_GetDropped(s->sub, &d) == NATS_OK && d > s->dropped) {
      b->stats.dropped += (uint64_t)(d - s->dropped);
      s->dropped = d;
    }
  }
}

static void sub_free(uvp_nats_sub_t *s, int rc) {
  uvp_nats_t *b = s->b;
  if (s->svc != NULL) {
    s->svc->sub = NULL;
    s->svc->closed = rc != 0;
    if (rc != 0) { /* the connection closes: members are cut, unreplied */
      uvp_group_cancel(s->svc->g);
      uvp_group_close(s->svc->g);
    }
  }
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
    waiting_add(b, -1);
    if (rc == 0)
      uvp_promise_resolve(p, NULL, NULL);
    else
      uvp_promise_reject(p, rc, NULL, NULL);
    uvp_promise_release(p);
  }
  if (s->held != NULL)
    natsMsg_Destroy(s->held);
  natsSubscription_Destroy(s->sub);
  free(s->subject);
  free(s->queue);
  free(s);
}

/* Hand what nats.c holds for s to its waits; while draining, find out
 * whether the drain is complete (only natsSubscription_NextMsg with a
 * timeout says so: it waits at most 1 ms, and not at all once nats.c's
 * drain thread has flushed the UNSUB).  False if s was freed. */
static void svc_accept(uvp_nats_svc_t *svc, natsMsg *m);
static void svc_drained(uvp_nats_svc_t *svc);

static bool sub_poll(uvp_nats_sub_t *s) {
  while (s->wfirst != NULL || s->svc != NULL) {
    natsMsg *m = s->held;
    s->held = NULL;
    natsStatus st =
        m != NULL ? NATS_OK : natsSubscription_NextMsg(&m, s->sub, 0);
    if (st == NATS_SLOW_CONSUMER)
      continue; /* counted by the error handler's event */
    if (st != NATS_OK)
      break;
    if (s->svc != NULL)
      svc_accept(s->svc, m);
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
  if (s->svc != NULL) {
    svc_drained(s->svc); /* frees s */
    return false;
  }
  while (s->wfirst != NULL)
    wait_end(s, UV_EOF, NULL);
  sub_free(s, 0);
  return false;
}

static void poll_subs(uvp_nats_t *b) {
  for (uvp_nats_sub_t *s = b->subs, *next; s != NULL; s = next) {
    next = s->next;
    if (s->wfirst != NULL || s->draining || s->svc != NULL)
      (void)sub_poll(s);
  }
}

static void on_drain_timer(uv_timer_t *t) { poll_subs(t->data); }

int uvp_nats_subscribe(uvp_nats_t *b, const char *subject, const char *queue,
                       uvp_nats_sub_t **out) {
  if (b == NULL || out == NULL || !subject_ok(subject, true) ||
      (queue != NULL && !subject_ok(queue, false)))
    return UV_EINVAL;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  uvp_nats_sub_t *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->subject = strdup(subject)) == NULL ||
      (queue != NULL && (s->queue = strdup(queue)) == NULL)) {
    if (s != NULL)
      free(s->subject);
    free(s);
    return UV_ENOMEM;
  }
  natsStatus st =
      queue != NULL
          ? natsConnection_QueueSubscribeSync(&s->sub, b->conn, subject, queue)
          : natsConnection_SubscribeSync(&s->sub, b->conn, subject);
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
  if (s->b->state != S_OPEN)
    return UVP_ECLOSED;
  waiter_t *w = calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->s = s;
  w->setup = true;
  int rc = uvp_promise_new_at(s->b->ctx, &w->p, file, line);
  if (rc == 0)
    rc = uvp_promise_set_cancel_described(w->p, on_wait_cancel, w, NULL, "NATS",
                                          wait_describe);
  if (rc == 0 && (rc = uvp_deadline_watch(s->b->ctx, w->p)) != 0)
    uvp_promise_set_cancel(w->p, NULL, NULL);
  if (rc != 0) {
    if (w->p != NULL)
      uvp_promise_release(w->p);
    free(w);
    return rc;
  }
  *out = uvp_promise_retain(w->p);
  w->setup = false;
  if (w->cancelled) { /* the deadline had passed */
    uvp_promise_release(w->p);
    free(w);
    return 0;
  }
  w->prev = s->wlast;
  if (s->wlast != NULL)
    s->wlast->next = w;
  else
    s->wfirst = w;
  s->wlast = w;
  waiting_add(s->b, 1);
  (void)sub_poll(s); /* maybe a message is there already */
  return 0;
}

int uvp_nats_unsubscribe(uvp_nats_sub_t *s) {
  if (s == NULL)
    return UV_EINVAL;
  if (s->b->state == S_OPEN)
    (void)natsSubscription_Unsubscribe(s->sub);
  sub_free(s, UV_ECANCELED);
  return 0;
}

static void on_drain_cancel(uvp_promise_t *p, void *arg) {
  uvp_nats_sub_t *s = arg;
  if (s->drain_p == p) {
    s->drain_p = NULL;
    waiting_add(s->b, -1);
    uvp_promise_release(p);
  }
}

int uvp_nats_drain_at(uvp_nats_sub_t *s, uvp_promise_t **out, const char *file,
                      int line) {
  if (s == NULL || out == NULL)
    return UV_EINVAL;
  if (s->draining)
    return UV_EALREADY;
  uvp_nats_t *b = s->b;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  uvp_promise_t *p;
  int rc = uvp_promise_new_at(b->ctx, &p, file, line);
  if (rc != 0)
    return rc;
  if ((rc = uvp_promise_set_cancel(p, on_drain_cancel, s)) != 0) {
    uvp_promise_release(p);
    return rc;
  }
  natsStatus st = natsSubscription_Drain(s->sub);
  if (st != NATS_OK) {
    uvp_promise_set_cancel(p, NULL, NULL);
    uvp_promise_release(p);
    return uvp_nats_code(st);
  }
  s->draining = true;
  s->drain_p = p;
  waiting_add(b, 1);
  if (b->draining++ == 0)
    uv_timer_start(&b->drain_timer, on_drain_timer, 10, 10);
  *out = uvp_promise_retain(p);
  return 0;
}

/* ---- connection events --------------------------------------------------- */

static void subs_fail(uvp_nats_t *b, int rc) {
  for (uvp_nats_sub_t *s = b->subs; s != NULL; s = s->next)
    while (s->wfirst != NULL)
      wait_end(s, rc, NULL);
}

static void on_conn_event(uvp_nats_t *b, int event) {
  switch (event) {
  case UVP_NATS_DISCONNECTED:
    b->stats.disconnects++;
    if ((b->flags & UVP_NATS_FAIL_ON_DISCONNECT) && b->state == S_OPEN)
      reqs_fail(b, UVP_NATS_EDISCONNECTED);
    break;
  case UVP_NATS_RECONNECTED:
    b->stats.reconnects++;
    break;
  case UVP_NATS_CLOSED:
    b->got_closed = true;
    if (b->state == S_OPEN) { /* nats.c gave up: closed for good */
      b->state = S_DEAD;
      reqs_fail(b, UVP_ECLOSED);
      subs_fail(b, UVP_ECLOSED);
    }
    break;
  case UVP_NATS_SLOW_CONSUMER:
    count_dropped(b);
    break;
  }
  if (b->on_event != NULL && b->state != S_CLOSING && b->state != S_CONNECTING)
    b->on_event(b->arg, b, (uvp_nats_event_t)event);
  maybe_finish(b);
}

/* ---- connect, flush, close ----------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  uvp_nats_t *b = h->data;
  if (--b->handles > 0)
    return;
  for (ev_t *ev = b->qfree, *next; ev != NULL; ev = next) {
    next = ev->next;
    free(ev);
  }
  uv_mutex_destroy(&b->lock);
  free(b->buckets);
  free(b);
}

/* natsConnection_Destroy once nothing of nats.c's can reach the binding
 * any more (see the top); then the handles close and the memory goes. */
static void maybe_finish(uvp_nats_t *b) {
  if (b->finished || !b->connect_done || b->in_nats > 0)
    return;
  if (b->state != S_CLOSING || !b->close_done || b->jobs > 0)
    return;
  if (b->attached || b->poll != NULL || b->poll_closing)
    return;
  if (b->inbox_sub != NULL && !b->inbox_done)
    return;
  if (b->conn != NULL && !b->got_closed) /* its thread still has b */
    return;
  if (b->svcs > 0) /* their members' replies look at b */
    return;
  b->finished = true;
  ev_drain(b); /* nothing of ours is left in it: messages, late events */
  natsSubscription_Destroy(b->inbox_sub);
  natsConnection_Destroy(b->conn);
  natsOptions_Destroy(b->opts);
  b->inbox_sub = NULL;
  b->conn = NULL;
  b->opts = NULL;
  keep_set(b);
  uv_close((uv_handle_t *)&b->timer, on_handle_closed);
  uv_close((uv_handle_t *)&b->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&b->async, on_handle_closed);
}

static void close_work(uv_work_t *w) {
  job_t *j = w->data;
  if (j->b->conn != NULL)
    natsConnection_Close(j->b->conn);
  nats_ReleaseThreadMemory(); /* see connect_work */
}

static void close_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  (void)status;
  b->close_done = true;
  ev_drain(b); /* the detach, queued by the pool thread */
  maybe_finish(b);
}

/* Start the end: everything waiting rejects with rc, subscriptions go, and
 * natsConnection_Close runs on the pool. */
static void close_start(uvp_nats_t *b, int rc) {
  b->state = S_CLOSING;
  b->close_started = true;
  reqs_fail(b, rc);
  while (b->subs != NULL) {
    if (b->conn != NULL)
      (void)natsSubscription_Unsubscribe(b->subs->sub);
    sub_free(b->subs, rc);
  }
  keep_set(b);
  b->close_job.b = b;
  b->close_job.w.data = &b->close_job;
  if (uv_queue_work(b->loop, &b->close_job.w, close_work, close_after) != 0) {
    close_work(&b->close_job.w); /* cannot happen with a live loop */
    close_after(&b->close_job.w, 0);
  }
}

int uvp_nats_close(uvp_nats_t *b) {
  if (b == NULL || b->state == S_CLOSING || b->state == S_CONNECTING)
    return UV_EINVAL;
  close_start(b, UV_ECANCELED);
  return 0;
}

static void connect_more(job_t *j, natsConnection *conn, natsStatus s);

static void connect_work(uv_work_t *w) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  natsConnection *conn = NULL;
  natsStatus s = natsConnection_Connect(&conn, b->opts);
  connect_more(j, conn, s);
  /* nats.c keeps an error record per thread that calls it, freed when
   * the thread exits: libuv's pool threads never do */
  nats_ReleaseThreadMemory();
}

static void connect_more(job_t *j, natsConnection *conn, natsStatus s) {
  uvp_nats_t *b = j->b;
  if (s != NATS_OK) {
    j->rc = uvp_nats_code(s);
    return;
  }
  b->conn = conn; /* the loop reads it once this job is done */
  if (natsConnection_HasHeaderSupport(conn) != NATS_OK) {
    j->rc = UV_ENOTSUP;
    return;
  }
  char *inbox = NULL;
  s = natsInbox_Create(&inbox);
  if (s == NATS_OK && strlen(inbox) + 3 > sizeof(b->inbox))
    s = NATS_ERR;
  if (s == NATS_OK) {
    char wild[sizeof(b->inbox) + 2];
    snprintf(b->inbox, sizeof(b->inbox), "%s", inbox);
    b->inbox_len = strlen(b->inbox);
    snprintf(wild, sizeof(wild), "%s.*", b->inbox);
    s = natsConnection_Subscribe(&b->inbox_sub, conn, wild, inbox_cb, b);
  }
  natsInbox_Destroy(inbox);
  if (s == NATS_OK)
    s = natsSubscription_SetOnCompleteCB(b->inbox_sub, inbox_done_cb, b);
  if (s == NATS_OK) /* replies are taken at once: no limit to trip */
    s = natsSubscription_SetPendingLimits(b->inbox_sub, -1, -1);
  j->rc = uvp_nats_code(s);
}

static void connect_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  (void)status;
  b->connect_done = true;
  uvp_promise_t *p = j->p;
  j->p = NULL;
  ev_drain(b); /* the attach, and the inbox's SUB */
  if (j->rc == 0 && p != NULL) {
    b->state = S_OPEN;
    waiting_add(b, -1);
    uvp_promise_resolve(p, b, NULL);
    uvp_promise_release(p);
    return;
  }
  waiting_add(b, -1);
  b->state = S_OPEN;
  close_start(b, UV_ECANCELED); /* failed, or nobody wants it any more */
  if (p != NULL) {
    uvp_promise_reject(p, j->rc, NULL, NULL);
    uvp_promise_release(p);
  }
}

static void on_connect_cancel(uvp_promise_t *p, void *arg) {
  job_t *j = arg;
  j->p = NULL; /* connect_after closes what it makes */
  uvp_promise_release(p);
}

static int connect_describe(void *arg, char *buf, size_t cap) {
  (void)arg;
  return snprintf(buf, cap, "connect");
}

/* The options the connection runs with: the program's (handed over) or
 * nats.c's defaults, with the binding's event loop and callbacks. */
static int options_make(uvp_nats_t *b, const uvp_nats_connect_opts_t *o) {
  natsStatus s = NATS_OK;
  if (o != NULL && o->options != NULL)
    b->opts = o->options;
  else
    s = natsOptions_Create(&b->opts);
  if (s == NATS_OK && o != NULL && o->url != NULL)
    s = natsOptions_SetURL(b->opts, o->url);
  if (s == NATS_OK)
    s = natsOptions_SetEventLoop(b->opts, b, el_attach, el_read, el_write,
                                 el_detach);
  if (s == NATS_OK)
    s = natsOptions_SetSendAsap(b->opts, !(b->flags & UVP_NATS_NO_SEND_ASAP));
  if (s == NATS_OK)
    s = natsOptions_SetDisconnectedCB(b->opts, disconnected_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectedCB(b->opts, reconnected_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetClosedCB(b->opts, closed_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetErrorHandler(b->opts, error_cb, b);
  return uvp_nats_code(s);
}

static void binding_free_early(uvp_nats_t *b) {
  natsOptions_Destroy(b->opts);
  uv_mutex_destroy(&b->lock);
  free(b);
}

/* The binding's three handles (closed, and b freed, by maybe_finish). */
static int handles_init(uvp_nats_t *b) {
  int rc = uv_async_init(b->loop, &b->async, on_async);
  if (rc != 0)
    return rc;
  b->async.data = b;
  uv_unref((uv_handle_t *)&b->async);
  uv_timer_init(b->loop, &b->timer);
  uv_timer_init(b->loop, &b->drain_timer);
  b->timer.data = b->drain_timer.data = b;
  uv_unref((uv_handle_t *)&b->timer);
  uv_unref((uv_handle_t *)&b->drain_timer);
  b->handles = 3;
  return 0;
}

int uvp_nats_connect_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                        uvp_promise_t **out, const char *file, int line) {
  if (ctx == NULL || out == NULL) {
    if (o != NULL)
      natsOptions_Destroy(o->options);
    return UV_EINVAL;
  }
  uvp_promise_t *p;
  int rc = uvp_promise_new_at(ctx, &p, file, line);
  uvp_nats_t *b = rc == 0 ? calloc(1, sizeof(*b)) : NULL;
  if (b == NULL || uv_mutex_init(&b->lock) != 0) {
    if (o != NULL)
      natsOptions_Destroy(o->options);
    if (p != NULL && rc == 0)
      uvp_promise_release(p);
    free(b);
    return rc != 0 ? rc : UV_ENOMEM;
  }
  b->ctx = ctx;
  b->loop = uvp_ctx_loop(ctx);
  b->loop_thread = uv_thread_self();
  b->fd = -1;
  b->flags = o != NULL ? o->flags : 0;
  b->on_event = o != NULL ? o->on_event : NULL;
  b->arg = o != NULL ? o->arg : NULL;
  b->connect_job.b = b;
  b->connect_job.p = p;
  b->connect_job.w.data = &b->connect_job;
  if ((rc = options_make(b, o)) != 0 ||
      (rc = uvp_promise_set_cancel_described(p, on_connect_cancel,
                                             &b->connect_job, NULL, "NATS",
                                             connect_describe)) != 0 ||
      (rc = uvp_deadline_watch(ctx, p)) != 0 || (rc = handles_init(b)) != 0) {
    uvp_promise_set_cancel(p, NULL, NULL);
    uvp_promise_release(p);
    binding_free_early(b);
    return rc;
  }
  *out = uvp_promise_retain(p);
  if (b->connect_job.p == NULL) { /* the deadline had passed */
    b->connect_done = true;
    b->state = S_CLOSING;
    b->close_started = b->close_done = true;
    maybe_finish(b);
    return 0;
  }
  if ((rc = uv_queue_work(b->loop, &b->connect_job.w, connect_work,
                          connect_after)) != 0) {
    uvp_promise_release(*out);
    uvp_promise_set_cancel(p, NULL, NULL);
    uvp_promise_release(p);
    b->connect_done = true;
    b->state = S_CLOSING;
    b->close_started = b->close_done = true;
    maybe_finish(b);
    return rc;
  }
  waiting_add(b, 1);
  return 0;
}

/* ---- flush --------------------------------------------------------------- */

static void flush_work(uv_work_t *w) {
  job_t *j = w->data;
  j->s = natsConnection_FlushTimeout(j->b->conn, j->timeout_ms);
  nats_ReleaseThreadMemory(); /* see connect_work */
}

static void flush_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  (void)status;
  b->jobs--;
  if (j->p != NULL) {
    uvp_promise_t *p = j->p;
    waiting_add(b, -1);
    if (j->s == NATS_OK)
      uvp_promise_resolve(p, NULL, NULL);
    else
      uvp_promise_reject(p, uvp_nats_code(j->s), NULL, NULL);
    uvp_promise_release(p);
  }
  free(j);
  maybe_finish(b);
}

static void on_flush_cancel(uvp_promise_t *p, void *arg) {
  job_t *j = arg;
  j->p = NULL;
  waiting_add(j->b, -1);
  uvp_promise_release(p);
}

static int flush_describe(void *arg, char *buf, size_t cap) {
  (void)arg;
  return snprintf(buf, cap, "flush");
}

int uvp_nats_flush_at(uvp_nats_t *b, uvp_promise_t **out, const char *file,
                      int line) {
  if (b == NULL || out == NULL)
    return UV_EINVAL;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  job_t *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return UV_ENOMEM;
  uint64_t left = uvp_deadline_left(b->ctx);
  j->b = b;
  j->w.data = j;
  j->timeout_ms = left < UVP_NATS_REQUEST_TIMEOUT_DEFAULT
                      ? (int64_t)(left > 0 ? left : 1)
                      : (int64_t)UVP_NATS_REQUEST_TIMEOUT_DEFAULT;
  int rc = uvp_promise_new_at(b->ctx, &j->p, file, line);
  if (rc == 0)
    rc = uvp_promise_set_cancel_described(j->p, on_flush_cancel, j, NULL,
                                          "NATS", flush_describe);
  if (rc == 0)
    rc = uv_queue_work(b->loop, &j->w, flush_work, flush_after);
  if (rc != 0) {
    if (j->p != NULL) {
      uvp_promise_set_cancel(j->p, NULL, NULL);
      uvp_promise_release(j->p);
    }
    free(j);
    return rc;
  }
  b->jobs++;
  waiting_add(b, 1);
  *out = uvp_promise_retain(j->p);
  (void)uvp_deadline_watch(b->ctx, j->p);
  return 0;
}

/* ---- serving ------------------------------------------------------------- *
 * A service is a synchronous subscription whose messages sub_poll hands to
 * svc_accept instead of to waits, and a UVP_GROUP_DISCARD_SETTLED group:
 * each request is a member started by svc_start when the limit has room,
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

/* Reply to req with body, or, for rc < 0, with Uvp-Error. */
static void svc_reply(uvp_nats_svc_t *svc, natsMsg *req, int rc,
                      const char *body) {
  const char *reply = natsMsg_GetReply(req);
  if (svc->closed || svc->b->state != S_OPEN)
    return;
  if (reply == NULL || *reply == '\0') {
    svc->stats.no_reply++;
    return;
  }
  char worker[320], err[64];
  snprintf(worker, sizeof(worker), UVP_NATS_WORKER_HEADER ": %s", svc->worker);
  const char *hdrs[3] = {worker, NULL, NULL};
  if (rc < 0) {
    snprintf(err, sizeof(err), UVP_NATS_ERROR_HEADER ": %s",
             uvp_nats_err_name(rc));
    hdrs[1] = err;
    body = uvp_nats_strerror(rc);
  }
  size_t len = body != NULL ? strlen(body) : 0;
  if (publish_msg(svc->b, reply, NULL, body, len, UINT64_MAX, hdrs) == 0)
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

static void svc_accept(uvp_nats_svc_t *svc, natsMsg *m) {
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
  waiting_add(b, -1);
  maybe_finish(b);
}

/* The subscription is drained: no more members; the join ends it. */
static void svc_drained(uvp_nats_svc_t *svc) {
  uvp_nats_sub_t *s = svc->sub;
  s->svc = NULL;
  svc->sub = NULL;
  sub_free(s, 0);
  uvp_group_close(svc->g);
}

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
  waiting_add(b, 1);
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
  s->svc = svc;
  *out = svc;
  return 0;
}

int uvp_nats_serve_drain_at(uvp_nats_svc_t *svc, uvp_promise_t **out,
                            const char *file, int line) {
  if (svc == NULL || out == NULL)
    return UV_EINVAL;
  if (svc->drain_p != NULL || svc->sub == NULL || svc->sub->draining)
    return svc->closed ? UVP_ECLOSED : UV_EALREADY;
  uvp_nats_t *b = svc->b;
  if (b->state != S_OPEN)
    return UVP_ECLOSED;
  uvp_promise_t *p;
  int rc = uvp_promise_new_at(b->ctx, &p, file, line);
  if (rc != 0)
    return rc;
  natsStatus st = natsSubscription_Drain(svc->sub->sub);
  if (st != NATS_OK) {
    uvp_promise_release(p);
    return uvp_nats_code(st);
  }
  svc->sub->draining = true;
  if (b->draining++ == 0)
    uv_timer_start(&b->drain_timer, on_drain_timer, 10, 10);
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

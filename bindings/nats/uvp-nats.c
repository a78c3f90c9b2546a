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
 * the loop, which applies them (uvp_nats__ev_drain).  The inbox's replies
 * (nats.c's delivery thread) and the connection's events (its
 * asynchronous-callback thread) come the same way.  The async is referenced
 * only while something waits (a request, a next, a flush, a drain) or while the
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
 * found by id in a hash when its reply comes (the id is its bucket: a
 * burst's replies, which come about in order, walk the buckets and the
 * records forward).  A request's own timeout runs on one timer per
 * connection over a list sorted by expiry (inserted from the tail: with
 * one timeout for all, that is O(1)); the scope's deadline watches its
 * promise (through uvp_inflight_start: each request, next, connect and
 * flush is a record of work in flight, which also holds the virtual
 * clock, tells its group, and names it in the task dump).  Records come
 * from a free list of the connection's; the reply subject and the
 * timeout's header value are written without printf; and a program's loop
 * of requests has nats.c write every 64 KiB rather than once at the end
 * (uvp_nats__sent).  The inbox's replies come from nats.c's delivery
 * thread through the queue, which the loop takes a batch at a time: a
 * synchronous inbox would save that hop, but natsSubscription_NextMsg
 * destroys a no-responders status without saying which request it
 * answered (docs/internals/nats.md 21.5 has the figures).  Messages are
 * freed on the loop, not on nats.c's collector thread ("messages" below),
 * and the loop stops reading while nats.c's buffer is full (OUT_MAX).
 *
 * Cancels and backpressure.  A request cut after it was sent publishes
 * its reply subject on UVP_NATS_CANCEL_PREFIX + its subject (requests.c,
 * on the cut only), where every instance of a service listens beside its
 * queue subscription; the instance holding it cuts the member (serve.c).
 * A service holds at most limit + max_waiting requests and answers the
 * rest Uvp-Error: EBUSY at once, so that what NATS pushes cannot pile up
 * in its group's queue; its drain can have a deadline, past which what
 * waits is answered ECANCELED and what runs is cut (docs/internals/nats-2.md
 * 21.7).
 *
 * Files, each on the ones before it: this one (errors, the loop's side:
 * keeping it going, the socket, the queue, connection events, close,
 * stats), connect.c (the connect, on a thread of the binding's that the
 * loop abandons past its bound or when cut: nats.c 3.4's connect cannot
 * be stopped and may never return; the flush; what uvp_nats_open holds
 * meanwhile), msg.c (making and publishing messages),
 * requests.c (requests, their inbox and timer, their cancels), subs.c
 * (subscriptions), serve.c (uvp_nats_serve, on a subscription and its
 * cancels' subscription); nats-internal.h declares what they share.
 * JetStream (uvp-nats-js.h) stands on them: js.c's opening comment says
 * how, js-internal.h what its files share.  The connection tells the
 * floors above it what they must know (a reply, the loop's turn,
 * connected, closing) through the hooks each sets when first used
 * (uvp_nats__layer_t), never by name. */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#include "nats-internal.h"

static void (*openssl_thread_stop)(void);

static void find_openssl(void) {
  /* in the process when nats.c was built with TLS; the binding does not
   * link OpenSSL itself */
  *(void **)&openssl_thread_stop = dlsym(RTLD_DEFAULT, "OPENSSL_thread_stop");
}

/* What a pool job's thread holds for nats.c and OpenSSL, freed: nats.c
 * keeps an error record per thread that calls it, OpenSSL its error
 * queue and random generators per thread (a TLS connect makes them), both
 * freed when the thread exits, which libuv's pool threads never do
 * (valgrind: 10 kB a pool thread that made a TLS connect). */
void uvp_nats__release_thread_memory(void) {
  static uv_once_t once = UV_ONCE_INIT;
  nats_ReleaseThreadMemory();
  uv_once(&once, find_openssl);
  if (openssl_thread_stop != NULL)
    openssl_thread_stop();
}

/* ---- messages ------------------------------------------------------------ */

/* nats.c's natsMsg_Destroy does not free a message: it hands it to its
 * garbage collector's thread, which frees it later, into the malloc arena
 * of the thread that made it.  nats.c parses on the loop
 * (natsOptions_SetEventLoop), so that is the loop's arena: the collector's
 * wake-ups and that arena's lock, taken from both threads, were most of a
 * requester's CPU (docs/internals/nats-2.md 21.11).  A message that is not
 * set up for collection, one whose natsGCItem (a natsMsg's first member in
 * every nats.c since 1.0) has no free callback, nats.c frees at once, in
 * the thread that destroys it.  So the binding clears that callback before
 * it destroys a message whose first member it finds to be that item, out
 * of any list, with natsMsg_free (which libnats exports, though nats.h
 * does not declare it) as its callback.  Any other message, and every
 * message where that symbol does not link, goes to the collector. */
typedef struct {
  void *next;
  void (*free_cb)(void *);
} gc_item_t; /* nats.c's natsGCItem (src/gc.h) */
_Static_assert(sizeof(gc_item_t) == 2 * sizeof(void *),
               "natsGCItem: a link and a callback, no padding");

#if defined(UVP_NATS_HAVE_MSG_FREE)
void natsMsg_free(void *object);
#endif

int uvp_nats__msg_frees_here(const void *m) {
#if defined(UVP_NATS_HAVE_MSG_FREE)
  gc_item_t gc;
  memcpy(&gc, m, sizeof(gc));
  return gc.next == NULL && gc.free_cb == natsMsg_free;
#else
  (void)m;
  return 0;
#endif
}

void uvp_nats__msg_free(void *m) {
  if (m != NULL && uvp_nats__msg_frees_here(m)) {
    void (*none)(void *) = NULL;
    memcpy((char *)m + offsetof(gc_item_t, free_cb), &none, sizeof(none));
  }
  natsMsg_Destroy(m);
}

/* ---- the floors above (nats-internal.h) ---------------------------------- */

void uvp_nats__layer_set(uvp_nats_t *b, int which, const uvp_nats__layer_t *l) {
  b->layers[which] = l;
}

/* Waits of one floor end with rc (see uvp_nats__layer_t's fail). */
static void layer_fail(uvp_nats_t *b, int which, int rc, bool all) {
  const uvp_nats__layer_t *l = b->layers[which];
  if (l != NULL && l->fail != NULL)
    l->fail(b, rc, all);
}

static void layers_fail(uvp_nats_t *b, int rc, bool all) {
  for (int i = 0; i < UVP_NATS__LAYERS; i++)
    layer_fail(b, i, rc, all);
}

static void layers_poll(uvp_nats_t *b) {
  const uvp_nats__layer_t *l = b->layers[UVP_NATS__SUBS];
  if (l != NULL && l->poll != NULL)
    l->poll(b);
}

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
int uvp_nats__code_of_name(const char *name) {
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
bool uvp_nats__subject_ok(const char *s, bool wild) {
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

/* Something waits, or the connection closes: the async keeps uv_run()
 * going.  (The virtual clock is held by each request's record of work in
 * flight: uvp_inflight_start.)  An opened connection whose connect failed
 * closes as far as it can, then waits for the program's uvp_nats_close
 * without keeping the loop: the program learns of the failure when
 * uv_run() returns. */
void uvp_nats__keep_set(uvp_nats_t *b) {
  bool closing = b->close_started && !b->finished &&
                 (!b->opened || b->close_asked || !b->close_done);
  if (b->waiting > 0 || closing)
    uv_ref((uv_handle_t *)&b->async);
  else
    uv_unref((uv_handle_t *)&b->async);
}

void uvp_nats__waiting_add(uvp_nats_t *b, int d) {
  b->waiting = (size_t)((ptrdiff_t)b->waiting + d);
  uvp_nats__keep_set(b);
}

/* ---- the socket ---------------------------------------------------------- */

static void on_poll(uv_poll_t *h, int status, int events);

static int poll_update(uvp_nats_t *b) {
  if (b->poll == NULL)
    return 0;
  int events = b->events & ~(b->read_paused ? UV_READABLE : 0);
  if (events != 0)
    return uv_poll_start(&b->poll->h, events, on_poll);
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
  uvp_nats__maybe_finish(b);
}

void uvp_nats__poll_close(uvp_nats_t *b) {
  if (b->poll == NULL)
    return;
  uv_close((uv_handle_t *)&b->poll->h, on_poll_closed);
  b->poll = NULL;
  b->poll_closing = true;
}

/* nats.c writes its whole buffer in a write event, then asks to stop
 * polling for writing: on the loop thread, but queued behind the replies
 * its delivery thread queued meanwhile, so the handle may report
 * writable once more before the request is applied.  nats.c 3.4.1 must
 * not see that event: with nothing to write, its send(2) of 0 bytes
 * returns 0, which it takes for a closed connection, and it drops and
 * reconnects (a coordinator's connection every 150 ms or so under 10 000
 * requests at once).  The binding keeps nats.c's last request and stops
 * the write poll at once when nats.c no longer wants it. */
static void on_writable(uvp_nats_t *b) {
  uv_mutex_lock(&b->lock);
  bool wanted = b->write_wanted;
  uv_mutex_unlock(&b->lock);
  if (wanted) {
    natsConnection_ProcessWriteEvent(b->conn);
    return;
  }
  b->events &= ~UV_WRITABLE;
  (void)poll_update(b);
}

/* A program's loop of requests publishes everything before the loop
 * turns again, and nats.c keeps it all in its buffer until the next write
 * event: 10 MB for 100 000 requests, grown by copies, then written at
 * once.  Past UNSENT_MAX bytes published since nats.c last emptied its
 * buffer, the binding has it write now, as the write event would. */
#define UNSENT_MAX (64 * 1024)

void uvp_nats__sent(uvp_nats_t *b, size_t bytes) {
  b->unsent += bytes;
  if (b->unsent < UNSENT_MAX || b->in_nats > 0 || b->poll == NULL)
    return;
  b->unsent = 0;
  uv_mutex_lock(&b->lock);
  bool wanted = b->write_wanted;
  uv_mutex_unlock(&b->lock);
  if (!wanted)
    return;
  b->in_nats++;
  natsConnection_ProcessWriteEvent(b->conn);
  b->in_nats--;
}

/* nats.c on an event loop cannot make a publisher wait for the socket,
 * as it does on its own threads once its buffer is full: its buffer
 * grows to hold whatever is published faster than the server reads it,
 * and keeps that size for the connection's life (its reset keeps the
 * capacity).  A worker answering a pile of 100 000 requests EBUSY, each as
 * soon as it is read, kept 2-5 MB so.  Past OUT_MAX bytes unsent after a
 * read or write event, the binding stops reading, until the socket has
 * taken them down to OUT_MAX / 2: what comes meanwhile waits in the
 * server's buffers for this client, as it would for a publisher that
 * waits.  (Requests a program makes in a loop are not read events: they
 * are bounded by the program, and uvp_nats__sent has them written.) */
#define OUT_MAX (256 * 1024)

static void out_check(uvp_nats_t *b) {
  if (b->poll == NULL || b->conn == NULL)
    return;
  int n = natsConnection_Buffered(b->conn); /* -1: closed */
  bool pause = n > (b->read_paused ? OUT_MAX / 2 : OUT_MAX);
  if (pause != b->read_paused) {
    b->read_paused = pause;
    (void)poll_update(b);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poll_t *p = h->data;
  uvp_nats_t *b = p->b;
  b->in_nats++;
  if (status < 0 || (events & UV_READABLE))
    natsConnection_ProcessReadEvent(b->conn); /* an error reconnects */
  if (b->poll == p && status == 0 && (events & UV_WRITABLE))
    on_writable(b);
  b->in_nats--;
  layers_poll(b);
  out_check(b);
}

/* ---- the event loop's callbacks and the queue ---------------------------- */

static void on_conn_event(uvp_nats_t *b, int event);
static void on_denied(uvp_nats_t *b, natsMsg *m);

static natsStatus ev_apply(uvp_nats_t *b, ev_t *ev) {
  int rc = 0;
  switch (ev->type) {
  case EV_ATTACH:
    if (b->abandoned) /* queued before: the thread closes that one */
      break;
    if (b->conn == NULL)
      b->conn = ev->conn;
    b->attached = true;
    b->fd = ev->arg;
    b->events = UV_READABLE;
    b->read_paused = false;
    uvp_nats__poll_close(b);
    if (!b->poll_closing)
      rc = poll_open(b);
    break;
  case EV_READ:
  case EV_WRITE: {
    int bit = ev->type == EV_READ ? UV_READABLE : UV_WRITABLE;
    b->events = ev->arg ? (b->events | bit) : (b->events & ~bit);
    if (ev->type == EV_WRITE && !ev->arg) {
      b->unsent = 0; /* nats.c's buffer is empty */
      b->read_paused = false;
    }
    rc = poll_update(b);
    break;
  }
  case EV_DETACH:
    b->attached = false;
    b->fd = -1;
    b->events = 0;
    uvp_nats__poll_close(b);
    uvp_nats__maybe_finish(b);
    break;
  case EV_MSG: /* the inbox's: only requests are answered there */
    if (b->layers[UVP_NATS__REQS] != NULL) {
      b->layers[UVP_NATS__REQS]->msg(b, ev->msg);
    } else {
      b->stats.late++;
      uvp_nats__msg_free(ev->msg);
    }
    break;
  case EV_CONN:
    on_conn_event(b, ev->arg);
    break;
  case EV_INBOX_DONE:
    b->inbox_done = true;
    uvp_nats__maybe_finish(b);
    break;
  case EV_DENIED:
    on_denied(b, ev->msg);
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
 * has left the binding's memory (uvp_nats__maybe_finish relies on it).
 * "Nothing queued" counts the batch the loop has taken and not yet
 * applied (b->batch, the loop's own). */
static natsStatus ev_post(uvp_nats_t *b, int type, int arg,
                          natsConnection *conn, natsMsg *msg) {
  ev_t local = {NULL, type, arg, conn, msg};
  uv_mutex_lock(&b->lock);
  if (b->abandoned) { /* the loop went on without this connect */
    uv_mutex_unlock(&b->lock);
    if (type == EV_CONN && arg == UVP_NATS_CLOSED)
      uvp_nats__thread_done(b); /* the late connection's last word */
    if (type == EV_MSG || type == EV_DENIED)
      uvp_nats__msg_free(msg);
    return type == EV_ATTACH ? NATS_ERR : NATS_OK;
  }
  if (type == EV_WRITE)
    b->write_wanted = arg != 0;
  if (type <= EV_DETACH && b->qhead == NULL && on_loop(b) && b->batch == NULL) {
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

/* The loop takes what is queued in one go (one lock for a batch of the
 * inbox's replies, and its spent records given back in the same lock),
 * then applies it one event at a time: what an event's handling does on
 * the loop (a publish's write) may go directly only once nothing older is
 * left, and a drain re-entered from an event's handling goes on with the
 * same batch. */
void uvp_nats__ev_drain(uvp_nats_t *b) {
  for (;;) {
    ev_t *ev = b->batch;
    if (ev == NULL) {
      uv_mutex_lock(&b->lock);
      if (b->spent != NULL) {
        b->spent_tail->next = b->qfree;
        b->qfree = b->spent;
        b->spent = b->spent_tail = NULL;
      }
      ev = b->batch = b->qhead;
      b->qhead = b->qtail = NULL;
      uv_mutex_unlock(&b->lock);
      if (ev == NULL)
        return;
    }
    ev_t copy = *ev;
    b->batch = ev->next;
    ev->next = b->spent;
    b->spent = ev;
    if (b->spent_tail == NULL)
      b->spent_tail = ev;
    if (copy.type <= EV_DETACH)
      b->stats.queued_events++;
    (void)ev_apply(b, &copy); /* a failed attach: a socket nats.c closed
                                 already; its next attach comes */
  }
}

static void on_async(uv_async_t *a) {
  uvp_nats_t *b = a->data;
  uv_mutex_lock(&b->lock);
  bool connected = b->ready && !b->connect_done;
  uv_mutex_unlock(&b->lock);
  if (connected)
    uvp_nats__connect_after(b); /* applies what the queue holds first */
  uvp_nats__ev_drain(b);
  layers_poll(b);
  out_check(b);
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
void uvp_nats__inbox_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                        void *closure) {
  (void)nc;
  (void)sub;
  if (ev_post(closure, EV_MSG, 0, NULL, msg) != NATS_OK)
    uvp_nats__msg_free(msg); /* no memory: the request times out */
}

void uvp_nats__inbox_done_cb(void *closure) {
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
  if (err == NATS_NOT_PERMITTED) { /* its words: this thread's last error */
    natsMsg *m = uvp_nats__why_msg(nats_GetLastError(NULL));
    if (m != NULL && ev_post(closure, EV_DENIED, 0, NULL, m) != NATS_OK)
      uvp_nats__msg_free(m); /* no memory: what it hit times out */
  }
}

natsMsg *uvp_nats__why_msg(const char *why) {
  natsMsg *m = NULL;
  if (why == NULL || *why == '\0')
    why = "Permissions Violation";
  if (natsMsg_Create(&m, "_UVP.DENIED", NULL, why, (int)strlen(why)) != NATS_OK)
    return NULL;
  return m;
}

/* The subject in nats.c's words for a permission violation: "Permissions
 * Violation for Publish to \"S\"", or "... for Subscription to \"S\""
 * (and " using queue \"Q\""); false if they say neither. */
static bool denied_parse(const char *t, bool *publish, char *subj, size_t cap) {
  const char *p = strstr(t, "Publish to \"");
  const char *s = strstr(t, "Subscription to \"");
  const char *at = p != NULL ? p + 12 : s != NULL ? s + 17 : NULL;
  const char *end = at != NULL ? strchr(at, '"') : NULL;
  if (end == NULL || (size_t)(end - at) >= cap)
    return false;
  memcpy(subj, at, (size_t)(end - at));
  subj[end - at] = '\0';
  *publish = p != NULL;
  return true;
}

/* The server refused an operation: it ends with UV_EACCES and these
 * words, at once (it is no transient failure: a retry meets the same
 * refusal), and the program hears of it (UVP_NATS_DENIED). */
static void on_denied(uvp_nats_t *b, natsMsg *m) {
  const char *why = natsMsg_GetData(m);
  char *copy = why != NULL ? strdup(why) : NULL;
  if (copy != NULL) {
    free(b->denied);
    b->denied = copy;
  }
  bool publish;
  char subj[256];
  if (why != NULL && denied_parse(why, &publish, subj, sizeof(subj)))
    for (int i = 0; i < UVP_NATS__LAYERS; i++)
      if (b->layers[i] != NULL && b->layers[i]->denied != NULL)
        b->layers[i]->denied(b, publish, subj, why);
  uvp_nats__msg_free(m);
  on_conn_event(b, UVP_NATS_DENIED);
}

const char *uvp_nats_denied(const uvp_nats_t *nc) {
  return nc != NULL ? nc->denied : NULL;
}

/* ---- connection events --------------------------------------------------- */

static void on_conn_event(uvp_nats_t *b, int event) {
  switch (event) {
  case UVP_NATS_DISCONNECTED:
    b->stats.disconnects++;
    if ((b->flags & UVP_NATS_FAIL_ON_DISCONNECT) && b->state == S_OPEN)
      layer_fail(b, UVP_NATS__REQS, UVP_NATS_EDISCONNECTED, false);
    break;
  case UVP_NATS_RECONNECTED:
    b->stats.reconnects++;
    break;
  case UVP_NATS_CLOSED:
    b->got_closed = true;
    if (b->state == S_OPEN) { /* nats.c gave up: closed for good */
      b->state = S_DEAD;
      layers_fail(b, UVP_ECLOSED, false);
    }
    break;
  case UVP_NATS_SLOW_CONSUMER:
    if (b->layers[UVP_NATS__SUBS] != NULL)
      b->layers[UVP_NATS__SUBS]->count_dropped(b);
    break;
  }
  if (b->on_event != NULL && b->state != S_CLOSING && b->state != S_CONNECTING)
    b->on_event(b->arg, b, (uvp_nats_event_t)event);
  uvp_nats__maybe_finish(b);
}

/* ---- connect, flush, close ----------------------------------------------- */

/* b's memory, once both the loop and an abandoned connect's thread are
 * done with it: whichever is last frees it. */
static void binding_free(uvp_nats_t *b) {
  uv_mutex_destroy(&b->lock);
  free(b->connect_err);
  free(b->denied);
  free(b);
}

void uvp_nats__thread_done(uvp_nats_t *b) {
  uv_mutex_lock(&b->lock);
  b->thread_holds = false;
  bool last = b->loop_gone;
  uv_mutex_unlock(&b->lock);
  if (last)
    binding_free(b);
}

static void on_handle_closed(uv_handle_t *h) {
  uvp_nats_t *b = h->data;
  if (--b->handles > 0)
    return;
  for (ev_t *ev = b->qfree, *next; ev != NULL; ev = next) {
    next = ev->next;
    free(ev);
  }
  for (ev_t *ev = b->spent, *next; ev != NULL; ev = next) {
    next = ev->next;
    free(ev);
  }
  for (int i = 0; i < UVP_NATS__LAYERS; i++)
    if (b->layers[i] != NULL && b->layers[i]->free != NULL)
      b->layers[i]->free(b);
  free(b->buckets);
  uv_mutex_lock(&b->lock);
  b->loop_gone = true;
  bool last = !b->thread_holds;
  uv_mutex_unlock(&b->lock);
  if (last)
    binding_free(b);
}

/* natsConnection_Destroy once nothing of nats.c's can reach the binding
 * any more (see the top); then the handles close and the memory goes. */
void uvp_nats__maybe_finish(uvp_nats_t *b) {
  if (b->finished || !b->connect_done || b->in_nats > 0)
    return;
  if (b->opened && !b->close_asked) /* the program still holds it */
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
  /* nothing of ours is left in it: messages, late events */
  uvp_nats__ev_drain(b);
  natsSubscription_Destroy(b->inbox_sub);
  natsConnection_Destroy(b->conn);
  if (!b->abandoned) { /* else its thread's, which may still read them */
    natsOptions_Destroy(b->opts);
    b->opts = NULL;
  }
  b->inbox_sub = NULL;
  b->conn = NULL;
  uvp_nats__keep_set(b);
  uv_close((uv_handle_t *)&b->timer, on_handle_closed);
  uv_close((uv_handle_t *)&b->drain_timer, on_handle_closed);
  uv_close((uv_handle_t *)&b->async, on_handle_closed);
  uv_close((uv_handle_t *)&b->connect_timer, on_handle_closed);
}

static void close_work(uv_work_t *w) {
  job_t *j = w->data;
  if (j->b->conn != NULL)
    natsConnection_Close(j->b->conn);
  uvp_nats__release_thread_memory(); /* a pool thread lives on */
}

static void close_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  (void)status;
  b->close_done = true;
  uvp_nats__ev_drain(b); /* the detach, queued by the pool thread */
  uvp_nats__keep_set(b);
  uvp_nats__maybe_finish(b);
}

/* Everything waiting rejects with rc (flushes uvp_nats_open kept too),
 * subscriptions go, and the connection takes nothing new. */
static void fail_all(uvp_nats_t *b, int rc) {
  b->state = S_CLOSING;
  layers_fail(b, rc, true);
  for (job_t *j; (j = b->held_flushes) != NULL;) {
    b->held_flushes = j->next;
    uvp_nats__flush_end(j, rc);
  }
}

/* Start the end: fail_all, then natsConnection_Close runs on the pool. */
void uvp_nats__close_start(uvp_nats_t *b, int rc) {
  fail_all(b, rc);
  b->close_started = true;
  uvp_nats__keep_set(b);
  b->close_job.b = b;
  b->close_job.w.data = &b->close_job;
  if (uv_queue_work(b->loop, &b->close_job.w, close_work, close_after) != 0) {
    close_work(&b->close_job.w); /* cannot happen with a live loop */
    close_after(&b->close_job.w, 0);
  }
}

/* A program holds b only once it is S_OPEN (uvp_nats_connect), or from
 * the start (uvp_nats_open): S_CONNECTING and S_CLOSING without
 * close_asked are uvp_nats_open's. */
int uvp_nats_close(uvp_nats_t *b) {
  if (b == NULL || b->close_asked)
    return UV_EINVAL;
  b->close_asked = true;
  if (b->state == S_CONNECTING) { /* open_after closes what it made */
    fail_all(b, UV_ECANCELED);
    b->connect_job.cut = true; /* nobody waits for the connect now */
    b->connect_job.cut_rc = UV_ECANCELED;
    uv_timer_start(&b->connect_timer, uvp_nats__on_connect_timer, 0, 0);
  } else if (b->state == S_CLOSING) { /* its connect failed: closing already */
    uvp_nats__keep_set(b);
    uvp_nats__maybe_finish(b);
  } else
    uvp_nats__close_start(b, UV_ECANCELED);
  return 0;
}

/* The options the connection runs with: the program's (handed over) or
 * nats.c's defaults, with the binding's event loop and callbacks. */
/* The servers of `url`: one, or a comma-separated list (nats.c 3.4.1's
 * natsOptions_SetURL takes the whole list for one URL and finds no
 * server: a list goes through natsOptions_SetServers). */
static natsStatus servers_set(natsOptions *opts, const char *url) {
  if (strchr(url, ',') == NULL)
    return natsOptions_SetURL(opts, url);
  size_t n = 1;
  for (const char *c = url; *c != '\0'; c++)
    n += *c == ',';
  char *copy = strdup(url);
  const char **list = calloc(n, sizeof(*list));
  natsStatus s = copy != NULL && list != NULL ? NATS_OK : NATS_NO_MEMORY;
  int count = 0;
  for (char *save = NULL,
            *tok = s == NATS_OK ? strtok_r(copy, ", ", &save) : NULL;
       tok != NULL; tok = strtok_r(NULL, ", ", &save))
    list[count++] = tok;
  if (s == NATS_OK)
    s = count > 0 ? natsOptions_SetServers(opts, list, count)
                  : NATS_INVALID_ARG;
  free(list);
  free(copy);
  return s;
}

int uvp_nats__options_make(uvp_nats_t *b, const uvp_nats_connect_opts_t *o) {
  natsStatus s = NATS_OK;
  if (o != NULL && o->options != NULL)
    b->opts = o->options;
  else
    s = natsOptions_Create(&b->opts);
  if (s == NATS_OK && o != NULL && o->url != NULL)
    s = servers_set(b->opts, o->url);
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

void uvp_nats__binding_free_early(uvp_nats_t *b) {
  natsOptions_Destroy(b->opts);
  uv_mutex_destroy(&b->lock);
  free(b);
}

/* The binding's four handles (closed, and b freed, by
 * uvp_nats__maybe_finish). */
int uvp_nats__handles_init(uvp_nats_t *b) {
  int rc = uv_async_init(b->loop, &b->async, on_async);
  if (rc != 0)
    return rc;
  b->async.data = b;
  uv_unref((uv_handle_t *)&b->async);
  uv_timer_init(b->loop, &b->timer);
  uv_timer_init(b->loop, &b->drain_timer);
  uv_timer_init(b->loop, &b->connect_timer);
  b->timer.data = b->drain_timer.data = b->connect_timer.data = b;
  uv_unref((uv_handle_t *)&b->timer);
  uv_unref((uv_handle_t *)&b->drain_timer);
  uv_unref((uv_handle_t *)&b->connect_timer);
  b->handles = 4;
  return 0;
}

int uvp_nats_stats(const uvp_nats_t *b, uvp_nats_stats_t *out) {
  if (b == NULL || out == NULL)
    return UV_EINVAL;
  *out = b->stats;
  const uvp_nats__layer_t *l = b->layers[UVP_NATS__SUBS];
  if (l != NULL)
    out->dropped = l->dropped(b);
  return 0;
}

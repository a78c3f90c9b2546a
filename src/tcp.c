/* uv_tcp_* as promises.
 *
 * A uvp_tcp_t reaches its uv_tcp_t through a pointer, because connect_host
 * may need a fresh handle per address tried (a handle whose connect failed
 * cannot be reused); the first one is embedded in it.  The connection is
 * freed when the user has closed it, every handle it ever had has run its
 * close callback, and no operation still refers to it.  libuv itself calls
 * back connect, write and shutdown requests with UV_ECANCELED when their
 * handle closes; the pending read and the watches have no request, so
 * closing settles them here.
 *
 * A watch (uvp_tcp_closed) needs libuv to read while the program does
 * not: those reads land in the connection's `kept` block, at most
 * KEEP_MAX bytes, and with the end of the stream they saw they are the
 * next reads' before anything the kernel still holds.  The read path
 * only tests for them (read_ahead), so a connection never watched reads
 * as before. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cause.h"
#include "op.h"
#include "scope.h"
#include "tcp.h"

uvp__getaddrinfo_fn uvp__tcp_getaddrinfo; /* NULL: uv_getaddrinfo */

enum { OP_CONNECT, OP_CONNECT_HOST, OP_WRITE, OP_READ, OP_SHUTDOWN, OP_WATCH };

/* One scratch buffer per context for reads: libuv calls a stream's alloc
 * and read callbacks back to back on the loop thread, so every read can
 * land there and only what arrived is copied out (as Node does). */
#define SCRATCH_LEN (64 * 1024)

/* What a watch reads ahead: at most a read's chunk, so that one read hands
 * all of it over; the block grows from KEEP_GRAIN as bytes come. */
#define KEEP_MAX SCRATCH_LEN
#define KEEP_GRAIN 4096

typedef struct tcpop_s tcpop_t;

struct uvp_tcp_s {
  uvp_ctx_t *ctx;
  uvp__owner_t *owner; /* of the scope it was made in, or as attached (see
                          uvp_tcp_detach): told until freed */
  uv_tcp_t *handle;    /* NULL once closed */
  tcpop_t *read_op;
  /* libuv keeps reading between two reads (no epoll_ctl per read); with no
   * read pending the handle is unref'd, so an idle connection never keeps
   * uv_run() going, as with bare libuv, and alloc_cb gives no buffer, so
   * nothing is read until the next read is asked for. */
  bool reading;
  int handles_open;
  size_t ops;
  bool user_closed;
  /* The first handle lives here, next to what its callbacks read (one
   * allocation per connection, and a read callback's walk from the handle
   * to the read operation crosses one object less).  Only a connect by
   * name that moves on to the next address while this one is still
   * closing needs a handle of its own. */
  bool inline_busy;
  /* kept != NULL || end != 0, below: what a read start tests, here on the
   * line it reads anyway. */
  bool ahead;
  /* uvp_tcp_detach'ed (a pool's, idle): what is started on it is no
   * deadline's (op_new), until uvp_tcp_attach. */
  bool detached;
  uv_tcp_t inline_handle;
  /* Cold, after the handle so that the fields above keep their lines:
   * the watches, oldest first, and what their reads took ahead of the
   * program's (see the top of the file): bytes, in a block laid out as a
   * read's value, and the end of the stream (UV_EOF or an error; 0: not
   * seen).  A pending read implies neither kept bytes nor an end: a read
   * takes them first. */
  tcpop_t *watch, *watch_last;
  uvp_buf_t *kept;
  size_t kept_cap;
  int end;
};

struct tcpop_s {
  uvp__op_t op;
  uvp_tcp_t *t;
  int kind;
  /* read */
  uvp_buf_t *buf; /* one block: [uvp_buf_t][cap bytes + NUL] */
  size_t cap;
  size_t max;
  bool all;
  /* write: a buffer handed over, freed once libuv is done with it */
  void *wbuf;
  uvp_free_cb wbuf_free;
  /* connect_host */
  bool resolving;
  struct addrinfo *ai;
  struct addrinfo *next;
  int last_err;
  struct sockaddr_in6 to; /* where a connect goes (the task dump) */
  union {
    struct {
      tcpop_t *next, *prev;
    } watch; /* on the connection's list while pending */
    uv_connect_t connect;
    uv_write_t write;
    uv_shutdown_t shutdown;
    uv_getaddrinfo_t gai;
  } req;
};

_Static_assert(sizeof(tcpop_t) <= UVP__OP_SLOT, "a TCP operation fits a slot");

static void maybe_free(uvp_tcp_t *t) {
  if (t->user_closed && t->handles_open == 0 && t->ops == 0) {
    uvp_ctx_t *ctx = t->ctx;
    uvp__owner_t *o = t->owner;
    uvp__free(t);
    uvp__work_end(o);
    uvp__drop(ctx);
  }
}

static void handle_closed(uv_handle_t *h) {
  uvp_tcp_t *t = h->data;
  uvp_ctx_t *ctx = t->ctx;
  if (h == (uv_handle_t *)&t->inline_handle)
    t->inline_busy = false;
  else
    uvp__free(h);
  t->handles_open--;
  maybe_free(t);
  uvp__loop_work_end(ctx); /* last: may free the context */
}

static int open_handle(uvp_tcp_t *t) {
  uv_tcp_t *h = t->inline_busy ? uvp__malloc(sizeof(*h)) : &t->inline_handle;
  if (h == NULL)
    return UV_ENOMEM;
  int rc = uv_tcp_init(uvp__loop(t->ctx), h);
  if (rc != 0) {
    if (h != &t->inline_handle)
      uvp__free(h);
    return rc;
  }
  if (h == &t->inline_handle)
    t->inline_busy = true;
  h->data = t;
  t->handle = h;
  t->handles_open++;
  uvp__loop_work_begin(t->ctx);
  t->reading = false;
  return 0;
}

static tcpop_t *op_of(uvp__op_t *o) {
  return UVP__CONTAINER_OF(o, tcpop_t, op);
}

/* The operation is over: its memory and reference go, and the connection
 * may follow. */
static void op_done(tcpop_t *op) {
  uvp_tcp_t *t = op->t;
  if (op->wbuf_free != NULL)
    op->wbuf_free(op->wbuf);
  if (op->ai != NULL)
    uv_freeaddrinfo(op->ai);
  uvp__free(op->buf);
  uvp__op_finish(&op->op);
  t->ops--;
  maybe_free(t);
}

static void settle(tcpop_t *op, int status, void *value, uvp_free_cb free_cb) {
  uvp__op_settle(&op->op, status, value, free_cb);
}

static bool addr_name(const struct sockaddr_in6 *to, char *buf, size_t cap);

/* What a watch's end says to the race it decides (cause.h's notes): "peer
 * 127.0.0.1:54321 closed the connection".  The peer is the one the watch
 * saw at its start: once reset, a socket may no longer name it.  False for
 * an end that is the program's (its close) or uvp's (no memory). */
static bool end_note(const tcpop_t *w, int status, char *buf, size_t cap) {
  char peer[80] = "the peer";
  char addr[72];
  if (addr_name(&w->to, addr, sizeof(addr)))
    snprintf(peer, sizeof(peer), "peer %s", addr);
  if (status == UV_EOF)
    snprintf(buf, cap, "%s closed the connection", peer);
  else if (status == UV_ECONNRESET)
    snprintf(buf, cap, "%s reset the connection", peer);
  else if (status < 0 && status != UV_ECANCELED && status != UV_ENOMEM)
    snprintf(buf, cap, "the connection with %s failed: %s", peer,
             uvp_err_name(status));
  else
    return false;
  return true;
}

/* Settle watch w with the end of the stream (UV_EOF fulfils), with the
 * note saying what ended it, if any. */
static void watch_settle(tcpop_t *w, int status, const char *note) {
  uvp_promise_t *p = w->op.p;
  bool mine = uvp__is_pending(p);
  settle(w, status == UV_EOF ? 0 : status, NULL, NULL);
  if (mine && note != NULL)
    uvp__note_settled(p, note);
}

static void watch_unlink(uvp_tcp_t *t, tcpop_t *w) {
  tcpop_t *next = w->req.watch.next, *prev = w->req.watch.prev;
  *(prev != NULL ? &prev->req.watch.next : &t->watch) = next;
  *(next != NULL ? &next->req.watch.prev : &t->watch_last) = prev;
}

/* Settle every watch, oldest first, with `status`: UV_EOF fulfils, and
 * UV_ECANCELED (the program's own close) is not reported as unhandled,
 * as a cancellation is not. */
static void watch_end(uvp_tcp_t *t, int status) {
  char note[160];
  bool noted =
      t->watch != NULL && end_note(t->watch, status, note, sizeof(note));
  while (t->watch != NULL) {
    tcpop_t *w = t->watch;
    watch_unlink(t, w);
    uvp_promise_t *p = w->op.p;
    bool quiet = status == UV_ECANCELED && uvp__is_pending(p);
    watch_settle(w, status, noted ? note : NULL);
    if (quiet)
      p->flags |= UVP__F_QUIET;
    op_done(w);
  }
}

/* Close the current handle; what was pending on it fails, and what was
 * read ahead goes. */
static void close_handle(uvp_tcp_t *t) {
  uv_tcp_t *h = t->handle;
  if (h == NULL)
    return;
  t->handle = NULL;
  uv_close((uv_handle_t *)h, handle_closed);
  tcpop_t *rd = t->read_op;
  if (rd != NULL) {
    t->read_op = NULL;
    settle(rd, UV_ECANCELED, NULL, NULL);
    op_done(rd);
  }
  if (UVP__UNLIKELY(t->watch != NULL || t->kept != NULL)) {
    watch_end(t, UV_ECANCELED);
    uvp__free(t->kept);
    t->kept = NULL;
    t->kept_cap = 0;
  }
  t->end = 0;
  t->ahead = false;
}

/* libuv cannot cancel a connect, write or read half-way: the connection
 * closes, and what was pending on it fails. */
static void tcp_cancel(uvp__op_t *o) {
  tcpop_t *op = op_of(o);
  if (op->resolving)
    (void)uv_cancel((uv_req_t *)&op->req.gai);
  close_handle(op->t);
}

/* libuv refused synchronously: nothing is in flight. */
static void tcp_abort(uvp__op_t *o) {
  tcpop_t *op = op_of(o);
  op->t->ops--;
  maybe_free(op->t);
}

/* The connection tells its owner about its work until its last operation
 * is done (see maybe_free): operations are the connection's, whichever
 * group's work starts them, and follow it when it changes hands
 * (uvp_tcp_detach). */
/* The task dump: "tcp.read 127.0.0.1:8080" (the peer; for a connect, where
 * it goes). */
static void remember_to(tcpop_t *op, const struct sockaddr *addr) {
  size_t n = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                         : sizeof(struct sockaddr_in);
  memcpy(&op->to, addr, n);
}

/* The connection's peer, as an IPv4 or IPv6 address in *out. */
static bool peer_of(const uvp_tcp_t *t, struct sockaddr_in6 *out) {
  struct sockaddr_storage sa;
  int len = sizeof(sa);
  if (t->handle == NULL ||
      uv_tcp_getpeername(t->handle, (struct sockaddr *)&sa, &len) != 0 ||
      (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
    return false;
  memcpy(out, &sa,
         sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                  : sizeof(struct sockaddr_in));
  return true;
}

/* "127.0.0.1:8080", "[::1]:8080"; false for no address. */
static bool addr_name(const struct sockaddr_in6 *to, char *buf, size_t cap) {
  const struct sockaddr *addr = (const struct sockaddr *)(const void *)to;
  char ip[64] = "?";
  if (addr->sa_family == AF_INET6) {
    uv_ip6_name(to, ip, sizeof(ip));
    snprintf(buf, cap, "[%s]:%d", ip, ntohs(to->sin6_port));
    return true;
  }
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)to;
    uv_ip4_name(in, ip, sizeof(ip));
    snprintf(buf, cap, "%s:%d", ip, ntohs(in->sin_port));
    return true;
  }
  return false;
}

static void tcp_describe(const uvp__op_t *o, uvp__what_t *w) {
  static const char *const names[] = {"connect", "connect",  "write",
                                      "read",    "shutdown", "closed"};
  const tcpop_t *op = UVP__CONTAINER_OF(o, tcpop_t, op);
  snprintf(w->kind, sizeof(w->kind), "tcp.%s", names[op->kind]);
  w->owner = op->t->owner;
  if (op->kind == OP_CONNECT_HOST && op->resolving) {
    snprintf(w->target, sizeof(w->target), "(resolving its host)");
    return;
  }
  struct sockaddr_in6 peer;
  const struct sockaddr_in6 *addr = &op->to;
  if (op->kind != OP_CONNECT && op->kind != OP_CONNECT_HOST) {
    if (!peer_of(op->t, &peer))
      return;
    addr = &peer;
  }
  (void)addr_name(addr, w->target, sizeof(w->target));
}

static const uvp__op_kind_t tcp_kind = {tcp_cancel, NULL,         tcp_abort,
                                        true,       tcp_describe, false};

/* A watch cancelled (or torn down) stops watching, and only that: the
 * connection and what was read ahead stay.  With no watch and no read
 * left, alloc_cb gives libuv no buffer and reading stops, as it does
 * after a read. */
static void watch_cancel(uvp__op_t *o) {
  tcpop_t *w = op_of(o);
  watch_unlink(w->t, w);
  op_done(w);
}

static const uvp__op_kind_t watch_kind = {watch_cancel, NULL, tcp_abort, true,
                                          tcp_describe, true /* idle */};

static tcpop_t *op_new(uvp_tcp_t *t, int kind, uvp_promise_t **out,
                       const char *file, int line, int *rc) {
  /* The thread first: the handle and read_op are the loop thread's to look
   * at.  (A pending read implies an open handle: close_handle ends it.) */
  *rc = uvp__ctx_check(t->ctx);
  if (*rc == 0 && (t->handle == NULL || t->user_closed))
    *rc = UV_EBADF;
  else if (*rc == 0 && kind == OP_READ && t->read_op != NULL)
    *rc = UV_EBUSY; /* one read at a time */
  if (*rc != 0)
    return NULL;
  /* A detached connection's work is its pool's, not the request's that
   * happens to start it (a keep-alive pool's read, started as a response
   * ends): no deadline of that scope watches it, or the pooled connection
   * would close when that request's deadline passes. */
  uvp__scope_t *was = NULL;
  if (UVP__UNLIKELY(t->detached))
    was = uvp__scope_enter(t->ctx, NULL);
  tcpop_t *op = uvp__op_new(t->ctx, kind == OP_WATCH ? &watch_kind : &tcp_kind,
                            sizeof(tcpop_t), out, file, line, rc);
  if (UVP__UNLIKELY(t->detached))
    uvp__scope_leave(t->ctx, was);
  if (op == NULL)
    return NULL;
  memset((char *)op + sizeof(op->op), 0, sizeof(*op) - sizeof(op->op));
  op->t = t;
  op->kind = kind;
  t->ops++;
  return op;
}

/* ---- objects ------------------------------------------------------------- */

static int tcp_alloc(uvp_ctx_t *ctx, uvp_tcp_t **out) {
  int rc = out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp_tcp_t *t = uvp__malloc(sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  memset(t, 0, offsetof(uvp_tcp_t, inline_handle)); /* uv_tcp_init: rest */
  t->watch = t->watch_last = NULL;
  t->kept = NULL;
  t->kept_cap = 0;
  t->end = 0;
  t->ctx = ctx;
  rc = open_handle(t);
  if (rc != 0) {
    uvp__free(t);
    return rc;
  }
  uvp__hold(ctx);
  t->owner = uvp__work_begin(ctx);
  *out = t;
  return 0;
}

int uvp_tcp_new(uvp_ctx_t *ctx, uvp_tcp_t **out) { return tcp_alloc(ctx, out); }

/* Hand the connection to the current scope's owner (`current`, a group) or
 * to none: that owner waits for it from now on, the previous one no
 * longer. */
static int tcp_reown(uvp_tcp_t *t, bool current) {
  if (t == NULL)
    return UV_EINVAL;
  int rc = uvp__ctx_check(t->ctx);
  if (rc == 0 && t->user_closed)
    rc = UV_EBADF;
  if (rc != 0)
    return rc;
  t->detached = !current;
  uvp__owner_t *old = t->owner;
  uvp__owner_t *o = current ? uvp__scope_owner(t->ctx) : NULL;
  if (o == old)
    return 0;
  t->owner = current ? uvp__work_begin(t->ctx) : NULL;
  uvp__work_end(old); /* may settle its join: t is not its any more */
  return 0;
}

int uvp_tcp_detach(uvp_tcp_t *t) { return tcp_reown(t, false); }

int uvp_tcp_attach(uvp_tcp_t *t) { return tcp_reown(t, true); }

int uvp_tcp_accept(uvp_ctx_t *ctx, uv_stream_t *server, uvp_tcp_t **out) {
  /* out before uv_accept: the connection is taken off the backlog there. */
  if (server == NULL || out == NULL)
    return UV_EINVAL;
  uvp_tcp_t *t;
  int rc = tcp_alloc(ctx, &t);
  if (rc != 0)
    return rc;
  rc = uv_accept(server, (uv_stream_t *)t->handle);
  if (rc != 0) {
    uvp_tcp_close(t);
    return rc;
  }
  *out = t;
  return 0;
}

int uvp_tcp_close(uvp_tcp_t *t) {
  if (t == NULL)
    return UV_EINVAL;
  /* Not uvp__ctx_check: closing works after uvp_ctx_close too. */
  if (uvp__refused_thread(t->ctx))
    return UVP_ETHREAD;
  if (t->user_closed)
    return UV_EINVAL;
  t->user_closed = true;
  close_handle(t);
  maybe_free(t);
  return 0;
}

uv_tcp_t *uvp_tcp_handle(uvp_tcp_t *t) { return t != NULL ? t->handle : NULL; }

/* ---- connect ------------------------------------------------------------- */

static void connect_cb(uv_connect_t *req, int status) {
  tcpop_t *op = UVP__CONTAINER_OF(req, tcpop_t, req);
  settle(op, status, NULL, NULL);
  op_done(op);
}

int uvp_tcp_connect_at(uvp_tcp_t *t, const struct sockaddr *addr,
                       uvp_promise_t **out, const char *file, int line) {
  if (t == NULL || addr == NULL || out == NULL)
    return UV_EINVAL;
  int rc;
  tcpop_t *op = op_new(t, OP_CONNECT, out, file, line, &rc);
  if (op == NULL)
    return rc;
  remember_to(op, addr);
  return uvp__op_started(
      &op->op, uv_tcp_connect(&op->req.connect, t->handle, addr, connect_cb),
      out);
}

static void host_connect_cb(uv_connect_t *req, int status);

/* Try the next address; each attempt after a failed one gets a fresh
 * handle. */
static void try_next(tcpop_t *op) {
  uvp_tcp_t *t = op->t;
  while (op->next != NULL) {
    struct addrinfo *ai = op->next;
    op->next = ai->ai_next;
    if (op->last_err != 0) {
      close_handle(t);
      int rc = open_handle(t);
      if (rc != 0) {
        op->last_err = rc;
        break;
      }
    }
    remember_to(op, ai->ai_addr);
    int rc = uv_tcp_connect(&op->req.connect, t->handle, ai->ai_addr,
                            host_connect_cb);
    if (rc == 0)
      return;
    op->last_err = rc;
  }
  settle(op, op->last_err != 0 ? op->last_err : UV_ECONNREFUSED, NULL, NULL);
  op_done(op);
}

static void host_connect_cb(uv_connect_t *req, int status) {
  tcpop_t *op = UVP__CONTAINER_OF(req, tcpop_t, req);
  if (status == 0 || !uvp__op_wanted(&op->op) || op->t->user_closed) {
    settle(op, status, NULL, NULL);
    op_done(op);
    return;
  }
  op->last_err = status;
  try_next(op);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  tcpop_t *op = UVP__CONTAINER_OF(req, tcpop_t, req);
  op->resolving = false;
  op->ai = op->next = res; /* freed in op_done, whatever happens */
  if (status == 0 && (op->t->handle == NULL || !uvp__op_wanted(&op->op)))
    status = UV_ECANCELED; /* closed or cancelled while resolving */
  if (status < 0) {
    settle(op, status == UV_EAI_CANCELED ? UV_ECANCELED : status, NULL, NULL);
    op_done(op);
    return;
  }
  try_next(op);
}

int uvp_tcp_connect_host_at(uvp_tcp_t *t, const char *host, int port,
                            uvp_promise_t **out, const char *file, int line) {
  if (t == NULL || host == NULL || out == NULL || port < 0 || port > 65535)
    return UV_EINVAL;
  int rc;
  tcpop_t *op = op_new(t, OP_CONNECT_HOST, out, file, line, &rc);
  if (op == NULL)
    return rc;
  char service[8];
  snprintf(service, sizeof(service), "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  /* A literal address needs no lookup: getaddrinfo would only echo it
   * back, after a round trip through the shared thread pool. */
  struct sockaddr_storage lit;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&lit) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&lit) == 0) {
    remember_to(op, (const struct sockaddr *)&lit);
    return uvp__op_started(&op->op,
                           uv_tcp_connect(&op->req.connect, t->handle,
                                          (const struct sockaddr *)&lit,
                                          host_connect_cb),
                           out);
  }
  op->resolving = true;
  uvp__getaddrinfo_fn resolve =
      uvp__tcp_getaddrinfo != NULL ? uvp__tcp_getaddrinfo : uv_getaddrinfo;
  return uvp__op_started(
      &op->op,
      resolve(uvp__loop(t->ctx), &op->req.gai, gai_cb, host, service, &hints),
      out);
}

/* ---- write / shutdown ---------------------------------------------------- */

static void write_cb(uv_write_t *req, int status) {
  tcpop_t *op = UVP__CONTAINER_OF(req, tcpop_t, req);
  settle(op, status, NULL, NULL);
  op_done(op);
}

int uvp_tcp_write_full_at(uvp_tcp_t *t, const void *buf, size_t len,
                          uvp_free_cb buf_free, uvp_promise_t **out,
                          const char *file, int line) {
  if (t == NULL || (buf == NULL && len > 0) || out == NULL || len > UINT32_MAX)
    return uvp__refuse(UV_EINVAL, (void *)buf, buf_free);
  int rc;
  tcpop_t *op = op_new(t, OP_WRITE, out, file, line, &rc);
  if (op == NULL)
    return uvp__refuse(rc, (void *)buf, buf_free);
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned int)len);
  /* Straight to the kernel when nothing is queued ahead (uv_try_write
   * checks): a small write usually goes out whole, which spares libuv's
   * write queue and the epoll_ctl pair it makes per queued write.  The
   * promise still settles now and its handlers run later, as always.
   * What did not fit, and every error, takes uv_write's path. */
  int sent = len <= INT_MAX ? uv_try_write((uv_stream_t *)t->handle, &b, 1) : 0;
  if (sent == (int)len) {
    settle(op, 0, NULL, NULL);
    *out = op->op.p;
    op->wbuf = (void *)buf;
    op->wbuf_free = buf_free;
    op_done(op);
    return 0;
  }
  if (sent > 0) {
    b.base += sent;
    b.len -= (unsigned int)sent;
  }
  rc = uvp__op_started(
      &op->op,
      uv_write(&op->req.write, (uv_stream_t *)t->handle, &b, 1, write_cb), out);
  if (rc == 0) {
    op->wbuf = (void *)buf;
    op->wbuf_free = buf_free;
  }
  return uvp__refuse(rc, (void *)buf, buf_free);
}

int uvp_tcp_write_at(uvp_tcp_t *t, const void *buf, size_t len,
                     uvp_promise_t **out, const char *file, int line) {
  return uvp_tcp_write_full_at(t, buf, len, NULL, out, file, line);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  tcpop_t *op = UVP__CONTAINER_OF(req, tcpop_t, req);
  settle(op, status, NULL, NULL);
  op_done(op);
}

int uvp_tcp_shutdown_at(uvp_tcp_t *t, uvp_promise_t **out, const char *file,
                        int line) {
  if (t == NULL || out == NULL)
    return UV_EINVAL;
  int rc;
  tcpop_t *op = op_new(t, OP_SHUTDOWN, out, file, line, &rc);
  if (op == NULL)
    return rc;
  return uvp__op_started(
      &op->op,
      uv_shutdown(&op->req.shutdown, (uv_stream_t *)t->handle, shutdown_cb),
      out);
}

/* ---- read ---------------------------------------------------------------- */

/* Room for `want` bytes (and the NUL) in a block laid out as a read's
 * value, [uvp_buf_t][cap bytes + NUL]: a read's buffer or the kept one. */
static bool buf_reserve(uvp_buf_t **bp, size_t *cap, size_t want) {
  if (*bp != NULL && *cap >= want)
    return true;
  uvp_buf_t *b = uvp__realloc(*bp, sizeof(uvp_buf_t) + want + 1);
  if (b == NULL)
    return false;
  if (*bp == NULL)
    b->len = 0;
  b->base = (char *)(b + 1);
  *bp = b;
  *cap = want;
  return true;
}

static bool reserve(tcpop_t *op, size_t want) {
  return buf_reserve(&op->buf, &op->cap, want);
}

/* A watch's read with no read pending: libuv reads into the kept block,
 * which grows geometrically up to KEEP_MAX.  No room (the block is full,
 * or no memory to grow it) is no buffer: libuv then reads nothing, and
 * what the peer sends waits in the kernel. */
static void keep_room(uvp_tcp_t *t, uv_buf_t *out) {
  size_t len = t->kept != NULL ? t->kept->len : 0;
  if (t->kept == NULL ||
      (t->kept_cap - len < KEEP_GRAIN && t->kept_cap < KEEP_MAX)) {
    size_t cap = t->kept != NULL ? 2 * t->kept_cap : KEEP_GRAIN;
    if (!buf_reserve(&t->kept, &t->kept_cap, cap < KEEP_MAX ? cap : KEEP_MAX))
      return;
  }
  t->ahead = true;
  *out = uv_buf_init(t->kept->base + len, (unsigned int)(t->kept_cap - len));
}

/* Every read (but a watch's: keep_room) lands in the context's scratch
 * buffer and only what arrived is copied out, so a connection costs no
 * 64 KiB block of its own: one chunk becomes an exactly sized buffer,
 * read_all's body grows geometrically (capped by `max`). */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  uvp_tcp_t *t = h->data;
  tcpop_t *op = t->read_op;
  (void)suggested;
  *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
  if (op == NULL) {
    if (UVP__UNLIKELY(t->watch != NULL))
      keep_room(t, out);
    return;
  }
  size_t room = SCRATCH_LEN;
  if (op->max != 0) {
    size_t len = op->buf != NULL ? op->buf->len : 0;
    if (op->max - len < room)
      room = op->max - len;
  }
  char *scratch = uvp__op_data(t->ctx, UVP__OPDATA_TCP_SCRATCH, SCRATCH_LEN);
  if (scratch != NULL)
    *out = uv_buf_init(scratch, (unsigned int)room);
}

static bool append(tcpop_t *op, const char *data, size_t n) {
  size_t len = op->buf != NULL ? op->buf->len : 0;
  size_t want = len + n;
  if (op->all && op->buf != NULL && want > op->cap) {
    size_t grown = op->cap * 2;
    if (op->max != 0 && grown > op->max)
      grown = op->max;
    if (grown > want)
      want = grown;
  }
  if (!reserve(op, want))
    return false;
  memcpy(op->buf->base + len, data, n);
  op->buf->len = len + n;
  return true;
}

static void buf_free(void *b) { uvp__free(b); }

static void read_finish(uvp_tcp_t *t, tcpop_t *op, int status) {
  t->read_op = NULL;
  if (t->reading)
    uv_unref((uv_handle_t *)t->handle);
  uvp_buf_t *b = NULL;
  if (status == 0) {
    if (op->buf == NULL && !reserve(op, 0)) {
      status = UV_ENOMEM;
    } else {
      b = op->buf;
      op->buf = NULL;
      b->base[b->len] = '\0';
    }
  }
  settle(op, status, b, buf_free);
  op_done(op);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Keep libuv reading for the watches while no read is pending, unless the
 * kept block is full (the peer then waits: backpressure).  The handle
 * stays unreferenced, as an idle connection's: a watch does not keep
 * uv_run() going.  0, or uv_read_start's error. */
static int watch_read(uvp_tcp_t *t) {
  if (!t->reading && (t->kept == NULL || t->kept->len < KEEP_MAX)) {
    int rc = uv_read_start((uv_stream_t *)t->handle, alloc_cb, read_cb);
    if (rc != 0)
      return rc;
    t->reading = true;
  }
  if (t->read_op == NULL)
    uv_unref((uv_handle_t *)t->handle);
  return 0;
}

/* A read has ended while watches are pending: they go on reading. */
static void watch_resume(uvp_tcp_t *t) {
  int rc = watch_read(t);
  if (rc != 0)
    watch_end(t, rc);
}

/* A watch's read, no read pending (alloc_cb gave the kept block's room). */
static void kept_read(uvp_tcp_t *t, ssize_t nread) {
  if (nread > 0) {
    t->kept->len += (size_t)nread;
    if (t->kept->len >= KEEP_MAX) {
      uv_read_stop((uv_stream_t *)t->handle);
      t->reading = false;
    }
  } else if (nread == UV_ENOBUFS) {
    if (t->kept == NULL || t->kept->len < KEEP_MAX)
      watch_end(t, UV_ENOMEM); /* keep_room found no memory */
  } else {
    t->end = (int)nread; /* the next read's, after the bytes */
    t->ahead = true;
    watch_end(t, (int)nread);
  }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  uvp_tcp_t *t = s->data;
  tcpop_t *op = t->read_op;
  /* `buf` is the context's scratch or the kept block: nothing to free. */
  if (nread < 0) {
    /* libuv stops reading by itself at end of stream and on errors; an
     * empty buffer (no read pending, or no memory) is ours to stop.  With
     * no read pending alloc_cb gave no buffer, so libuv read nothing: the
     * bytes, an end of stream or a reset wait in the kernel for the next
     * read. */
    if (nread == UV_ENOBUFS)
      uv_read_stop(s);
    t->reading = false;
  }
  if (op == NULL) {
    if (UVP__UNLIKELY(t->watch != NULL) && nread != 0) {
      kept_read(t, nread);
    } else if (nread < 0 && nread != UV_ENOBUFS) {
      /* An end with no read pending: libuv for Windows, whose zero-byte
       * read sees a reset by itself (and then refuses to read on, with
       * UV_ENOTCONN).  It is the next read's, as a watch's end is. */
      t->end = (int)nread;
      t->ahead = true;
    }
    return;
  }
  if (nread == 0)
    return;
  if (nread > 0) {
    if (!append(op, buf->base, (size_t)nread))
      read_finish(t, op, UV_ENOMEM);
    else if (!op->all || (op->max != 0 && op->buf->len >= op->max))
      read_finish(t, op, 0);
    return;
  }
  if (nread == UV_EOF && op->all)
    read_finish(t, op, 0);
  else if (nread == UV_ENOBUFS) /* our alloc_cb could not get memory */
    read_finish(t, op, UV_ENOMEM);
  else
    read_finish(t, op, (int)nread);
  if (UVP__UNLIKELY(t->watch != NULL)) {
    if (nread == UV_ENOBUFS)
      watch_resume(t);
    else
      watch_end(t, (int)nread);
  }
}

/* What a watch read ahead is the read's first: the kept bytes (a chunk,
 * all of them, for uvp_tcp_read; the start of the body, or the first
 * `max` bytes, for read_all), then the end of the stream.  Settles op and
 * returns 0; 1 if op is to read on from the kernel (op->buf may hold the
 * body's start). */
static int read_ahead(uvp_tcp_t *t, tcpop_t *op) {
  uvp_buf_t *k = t->kept;
  size_t len = k != NULL ? k->len : 0;
  int status = 0;
  bool on = false; /* op reads on from the kernel */
  if (len == 0) {
    uvp__free(k);
    t->kept = NULL;
    t->kept_cap = 0;
    if (t->end == 0) {
      on = true;
    } else {
      status = t->end == UV_EOF && op->all ? 0 : t->end;
      t->end = 0;
    }
  } else if (op->max != 0 && len > op->max) {
    /* read_all's first max bytes: the rest stays for the next read. */
    if (!reserve(op, op->max)) {
      status = UV_ENOMEM;
    } else {
      memcpy(op->buf->base, k->base, op->max);
      op->buf->len = op->max;
      memmove(k->base, k->base + op->max, len - op->max);
      k->len = len - op->max;
    }
  } else {
    op->buf = k;
    op->cap = t->kept_cap;
    t->kept = NULL;
    t->kept_cap = 0;
    if (op->all && (op->max == 0 || len < op->max)) {
      if (t->end == 0) {
        on = true;
      } else {
        status = t->end == UV_EOF ? 0 : t->end;
        t->end = 0;
      }
    }
  }
  t->ahead = t->kept != NULL || t->end != 0;
  if (on)
    return 1;
  read_finish(t, op, status);
  if (t->watch != NULL)
    watch_resume(t); /* the block had filled up, or has room again */
  return 0;
}

static int start_read(uvp_tcp_t *t, bool all, size_t max, uvp_promise_t **out,
                      const char *file, int line) {
  if (t == NULL || out == NULL)
    return UV_EINVAL;
  int rc;
  tcpop_t *op = op_new(t, OP_READ, out, file, line, &rc);
  if (op == NULL)
    return rc;
  op->all = all;
  op->max = max;
  if (UVP__UNLIKELY(t->ahead)) {
    uvp_promise_t *p = op->op.p;
    if (read_ahead(t, op) == 0) {
      *out = p; /* settled: its handlers still run later, from the loop */
      return 0;
    }
  }
  t->read_op = op;
  rc = 0;
  if (!t->reading) {
    rc = uv_read_start((uv_stream_t *)t->handle, alloc_cb, read_cb);
    t->reading = rc == 0;
  }
  if (rc != 0) {
    t->read_op = NULL;
    if (op->buf != NULL) { /* read ahead: back to where it was */
      t->kept = op->buf;
      t->kept_cap = op->cap;
      t->ahead = true;
      op->buf = NULL;
    }
  } else {
    uv_ref((uv_handle_t *)t->handle);
  }
  return uvp__op_started(&op->op, rc, out);
}

int uvp_tcp_read_at(uvp_tcp_t *t, uvp_promise_t **out, const char *file,
                    int line) {
  return start_read(t, false, 0, out, file, line);
}

int uvp_tcp_read_all_at(uvp_tcp_t *t, size_t max, uvp_promise_t **out,
                        const char *file, int line) {
  return start_read(t, true, max, out, file, line);
}

/* ---- watch --------------------------------------------------------------- */

int uvp_tcp_closed_at(uvp_tcp_t *t, uvp_promise_t **out, const char *file,
                      int line) {
  if (t == NULL || out == NULL)
    return UV_EINVAL;
  int rc;
  tcpop_t *w = op_new(t, OP_WATCH, out, file, line, &rc);
  if (w == NULL)
    return rc;
  /* Its note names the peer (end_note): asked now, while the connection
   * can still say (a reset one may not). */
  (void)peer_of(t, &w->to);
  if (t->end != 0) { /* a watch's read saw it; no read has taken it yet */
    char note[160];
    *out = w->op.p;
    watch_settle(w, t->end,
                 end_note(w, t->end, note, sizeof(note)) ? note : NULL);
    op_done(w);
    return 0;
  }
  /* A pending read reads (and its end settles the watches). */
  rc = t->read_op != NULL ? 0 : watch_read(t);
  if (rc == 0) {
    w->req.watch.next = NULL;
    w->req.watch.prev = t->watch_last;
    *(t->watch_last != NULL ? &t->watch_last->req.watch.next : &t->watch) = w;
    t->watch_last = w;
  }
  return uvp__op_started(&w->op, rc, out);
}

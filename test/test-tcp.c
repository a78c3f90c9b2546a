/* TCP wrappers against real loopback servers started by the test
 * (127.0.0.1 only): success, refusal, a reset mid-read, a peer that never
 * answers, cancellation before and during, and 1000 concurrent connections;
 * a race lost to a peer that closed or reset, whose losers' cause names the
 * peer.  Nothing of libuv is mocked. */
#include <limits.h>
#include <netdb.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "../src/tcp.h"
#include "alloc-helpers.h"

/* ---- a small loopback server with a behaviour per test ------------------- */

typedef enum {
  SRV_ECHO_THEN_CLOSE, /* read one chunk, write a reply, close */
  SRV_RESET_MID_READ,  /* write half a reply, then reset */
  SRV_SILENT,          /* accept and never answer */
  SRV_HALF_CLOSE,      /* write a reply, shut down, keep reading */
  SRV_SINK             /* read to EOF, reply "<bytes> <fnv1a hash>", close */
} srv_mode_t;

typedef struct server_s {
  uv_tcp_t listener;
  srv_mode_t mode;
  int port;
  int accepted;
  fixture_t *f;
} server_t;

typedef struct conn_s {
  uv_tcp_t h;
  uv_timer_t reset_timer;
  int closes; /* handles still to close before the memory goes */
  uv_write_t w;
  uv_shutdown_t sd;
  server_t *srv;
  uint64_t sunk, hash; /* SRV_SINK */
  char summary[64];
  char buf[4096];
} conn_t;

/* FNV-1a, continued over successive chunks: order-sensitive. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *b = data;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define FNV_INIT 14695981039346656037ull

/* rd fulfilled with a SRV_SINK reply: "<bytes> <hash>". */
static void expect_sink_reply(uvp_promise_t *rd, uint64_t bytes,
                              uint64_t hash) {
  assert_int_equal(uvp_promise_state(rd), UVP_FULFILLED);
  const uvp_buf_t *got = uvp_promise_value(rd);
  char expect[64];
  snprintf(expect, sizeof(expect), "%llu %llx", (unsigned long long)bytes,
           (unsigned long long)hash);
  assert_int_equal(got->len, strlen(expect));
  assert_memory_equal(got->base, expect, got->len);
}

static const char REPLY[] = "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->closes == 0)
    free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->h))
    uv_close((uv_handle_t *)&c->h, conn_closed);
}

/* The reset comes after the client has consumed the first half: if data and
 * RST arrive together, libuv reports the hang-up as UV_EOF after the
 * partial read, which is a different (and also legitimate) case. */
static void reset_now(uv_timer_t *t) {
  conn_t *c = t->data;
  uv_close((uv_handle_t *)t, conn_closed);
  uv_tcp_close_reset(&c->h, conn_closed);
}

static void conn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)sz;
  *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void after_reply(uv_write_t *w, int status) {
  conn_t *c = w->data;
  (void)status;
  if (c->srv->mode == SRV_RESET_MID_READ) {
    uv_timer_init(c->h.loop, &c->reset_timer);
    c->reset_timer.data = c;
    c->closes++;
    uv_timer_start(&c->reset_timer, reset_now, 50, 0);
    return;
  }
  conn_close(c);
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (n == 0)
    return;
  if (c->srv->mode == SRV_SINK && n > 0) {
    c->sunk += (uint64_t)n;
    c->hash = fnv1a(c->hash, b->base, (size_t)n);
    return;
  }
  if (c->srv->mode == SRV_SINK && n == UV_EOF) {
    uv_read_stop(s);
    int len =
        snprintf(c->summary, sizeof(c->summary), "%llu %llx",
                 (unsigned long long)c->sunk, (unsigned long long)c->hash);
    uv_buf_t out = uv_buf_init(c->summary, (unsigned)len);
    c->w.data = c;
    uv_write(&c->w, s, &out, 1, after_reply);
    return;
  }
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (c->srv->mode == SRV_SILENT)
    return;
  uv_read_stop(s);
  size_t len = c->srv->mode == SRV_RESET_MID_READ ? 10 : strlen(REPLY);
  uv_buf_t out = uv_buf_init((char *)REPLY, (unsigned)len);
  c->w.data = c;
  uv_write(&c->w, s, &out, 1, after_reply);
}

static void on_connection(uv_stream_t *l, int status) {
  server_t *srv = l->data;
  assert_int_equal(status, 0);
  conn_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->srv = srv;
  c->hash = FNV_INIT;
  c->closes = 1;
  uv_tcp_init(l->loop, &c->h);
  c->h.data = c;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&c->h), 0);
  srv->accepted++;
  uv_read_start((uv_stream_t *)&c->h, conn_alloc, conn_read);
}

static void server_start(fixture_t *f, server_t *srv, srv_mode_t mode) {
  memset(srv, 0, sizeof(*srv));
  srv->mode = mode;
  srv->f = f;
  struct sockaddr_storage ss;
  listen_loopback(&f->loop, &srv->listener, 2048, on_connection, srv, &ss);
  srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* The listener lives on the test's stack: its close must complete before
 * the test returns. */
static void listener_closed(uv_handle_t *h) {
  ((server_t *)h->data)->port = -1;
}

static void server_stop(server_t *srv) {
  uv_close((uv_handle_t *)&srv->listener, listener_closed);
  while (srv->port != -1)
    uv_run(&srv->f->loop, UV_RUN_ONCE);
}

static void addr_of(server_t *srv, struct sockaddr_in *a) {
  uv_ip4_addr("127.0.0.1", srv->port, a);
}

/* ---- one request: connect, write, read until close ----------------------- */

typedef struct req_s {
  uvp_tcp_t *t;
  fixture_t *f;
  size_t max;
} req_t;

static uvp_ret_t after_connect(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  (void)in;
  uvp_promise_t *w, *rd;
  assert_int_equal(uvp_tcp_write(r->t, "GET / HTTP/1.0\r\n\r\n", 18, &w), 0);
  uvp_promise_release(w);
  assert_int_equal(uvp_tcp_read_all(r->t, r->max, &rd), 0);
  return uvp_ret_adopt(rd);
}

/* connect + write + read_all; returns the promise of the body. */
static uvp_promise_t *request(fixture_t *f, req_t *r, server_t *srv) {
  struct sockaddr_in a;
  addr_of(srv, &a);
  r->f = f;
  assert_int_equal(uvp_tcp_new(f->ctx, &r->t), 0);
  uvp_promise_t *c, *body;
  assert_int_equal(uvp_tcp_connect(r->t, (struct sockaddr *)&a, &c), 0);
  assert_int_equal(uvp_promise_then(c, after_connect, r, &body), 0);
  uvp_promise_release(c);
  return body;
}

static void test_request_reply(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  req_t r = {0};
  uvp_promise_t *body = request(f, &r, &srv);
  run_until_settled(f, body);
  assert_int_equal(uvp_promise_state(body), UVP_FULFILLED);
  uvp_buf_t *b = uvp_promise_value(body);
  assert_int_equal(b->len, strlen(REPLY));
  assert_memory_equal(b->base, REPLY, b->len);
  assert_int_equal(b->base[b->len], '\0');
  uvp_promise_release(body);
  assert_int_equal(uvp_tcp_close(r.t), 0);
  server_stop(&srv);
}

static void test_read_all_max_bytes(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  req_t r = {0};
  r.max = 8;
  uvp_promise_t *body = request(f, &r, &srv);
  run_until_settled(f, body);
  uvp_buf_t *b = uvp_promise_value(body);
  assert_non_null(b);
  assert_int_equal(b->len, 8);
  assert_memory_equal(b->base, REPLY, 8);
  uvp_promise_release(body);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

static void test_connect_host_localhost(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  uvp_promise_t *c;
  /* "localhost" may resolve to ::1 first: the server is IPv4-only, so this
   * also exercises trying each address in turn.  A bare debootstrap root
   * has no /etc/hosts: there the numeric name still goes through
   * getaddrinfo. */
  uv_getaddrinfo_t probe;
  const char *name = "localhost";
  if (uv_getaddrinfo(&f->loop, &probe, NULL, name, NULL, NULL) == 0)
    uv_freeaddrinfo(probe.addrinfo);
  else
    name = "127.0.0.1";
  assert_int_equal(uvp_tcp_connect_host(t, name, srv.port, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
  uvp_promise_release(c);
  uvp_tcp_close(t);
  server_stop(&srv);
}

/* A name that cannot exist: the lookup's UV_EAI_* code (which one depends
 * on the resolver), and no address is tried. */
static void test_connect_host_unknown_name(void **state) {
  fixture_t *f = *state;
  uvp_tcp_t *t;
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_tcp_connect_host(t, UNRESOLVABLE_NAME, 80, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_state(c), UVP_REJECTED);
  int code = uvp_promise_reason(c, NULL);
  assert_true(code <= UV_EAI_ADDRFAMILY && code >= UV_EAI_PROTOCOL);
  uvp_promise_release(c);
  uvp_tcp_close(t);
}

/* ---- a resolver answer with several addresses (see the top) -------------- */

static struct {
  int refusing; /* armed while > 0: this many refusing addresses first */
  int refused_port;
  uv_getaddrinfo_cb cb;
} multi;

/* One node as glibc's freeaddrinfo frees it: the node and its address in
 * one block, no canonical name. */
static struct addrinfo *refusing_node(const struct addrinfo *like,
                                      struct addrinfo *next) {
  struct node_s {
    struct addrinfo ai;
    struct sockaddr_in sin;
  } *n = calloc(1, sizeof(*n));
  assert_non_null(n);
  n->ai = *like;
  n->ai.ai_canonname = NULL;
  n->ai.ai_addr = (struct sockaddr *)&n->sin;
  n->ai.ai_addrlen = sizeof(n->sin);
  n->ai.ai_next = next;
  assert_int_equal(uv_ip4_addr("127.0.0.1", multi.refused_port, &n->sin), 0);
  return &n->ai;
}

static void multi_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  int k = multi.refusing;
  multi.refusing = 0;
  if (status == 0) {
    for (; k > 0; k--)
      res = refusing_node(res, res);
    req->addrinfo = res;
  }
  multi.cb(req, status, res);
}

/* The resolver connect_host asks (src/tcp.h), while the test runs. */
static int several_getaddrinfo(uv_loop_t *loop, uv_getaddrinfo_t *req,
                               uv_getaddrinfo_cb cb, const char *node,
                               const char *service,
                               const struct addrinfo *hints) {
  if (multi.refusing == 0 || cb == NULL)
    return uv_getaddrinfo(loop, req, cb, node, service, hints);
  multi.cb = cb;
  return uv_getaddrinfo(loop, req, multi_cb, "127.0.0.1", service, hints);
}

/* A port that was just free: bind, learn it, close it. */
static int refusing_port(fixture_t *f) {
  server_t srv;
  server_start(f, &srv, SRV_SILENT);
  int port = srv.port;
  server_stop(&srv);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return port;
}

/* connect_host tries each address in turn, each after a refusal on a fresh
 * handle (the first is embedded in the connection, later ones are
 * allocated while it is still closing); the connection then works on the
 * address that answered, and closing it frees every handle it had
 * (valgrind and ASan check that). */
static void test_connect_host_tries_each_address(void **state) {
  fixture_t *f = *state;
  uvp__tcp_getaddrinfo = several_getaddrinfo;
  int refused = refusing_port(f);
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  for (int k = 1; k <= 3; k++) {
    uvp_tcp_t *t;
    assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
    uv_tcp_t *first = uvp_tcp_handle(t);
    multi.refusing = k;
    multi.refused_port = refused;
    uvp_promise_t *c, *w, *rd;
    assert_int_equal(uvp_tcp_connect_host(t, "uvp-test-several", srv.port, &c),
                     0);
    run_until_settled(f, c);
    assert_int_equal(multi.refusing, 0); /* the wrapper answered */
    /* Fulfilled: the first k addresses refuse, so each was tried. */
    assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
    if (k == 1) /* the second attempt's handle opened while the first closed */
      assert_ptr_not_equal(uvp_tcp_handle(t), first);
    uvp_promise_release(c);
    assert_int_equal(uvp_tcp_write(t, "ping", 4, &w), 0);
    assert_int_equal(uvp_tcp_read_all(t, 0, &rd), 0);
    run_until_settled(f, rd);
    assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
    assert_int_equal(uvp_promise_state(rd), UVP_FULFILLED);
    const uvp_buf_t *b = uvp_promise_value(rd);
    assert_true(b->len > 0);
    uvp_promise_release(w);
    uvp_promise_release(rd);
    uvp_tcp_close(t);
  }
  /* Every address refuses: the last refusal is the reason. */
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  multi.refusing = 2;
  multi.refused_port = refused;
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_connect_host(t, "uvp-test-several", refused, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_reason(c, NULL), UV_ECONNREFUSED);
  uvp_promise_release(c);
  uvp_tcp_close(t);
  server_stop(&srv);
  uvp__tcp_getaddrinfo = NULL;
}

static void test_connection_refused(void **state) {
  fixture_t *f = *state;
  int port = refusing_port(f);
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_reason(c, NULL), UV_ECONNREFUSED);
  uvp_promise_release(c);
  uvp_tcp_close(t);
}

static void test_peer_resets_mid_read(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_RESET_MID_READ);
  req_t r = {0};
  uvp_promise_t *body = request(f, &r, &srv);
  run_until_settled(f, body);
  assert_int_equal(uvp_promise_reason(body, NULL), UV_ECONNRESET);
  uvp_promise_release(body);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

static void test_silent_server_times_out(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SILENT);
  req_t r = {0};
  uvp_promise_t *body = request(f, &r, &srv);
  uvp_promise_t *limited;
  assert_int_equal(uvp_timeout(body, 100, 0, &limited), 0);
  uint64_t t0 = uv_now(&f->loop);
  run_until_settled(f, limited);
  assert_int_equal(uvp_promise_reason(limited, NULL), UV_ETIMEDOUT);
  assert_true(uv_now(&f->loop) - t0 >= 100);
  /* The timeout cancelled the read, which closed the connection. */
  assert_int_equal(uvp_promise_reason(body, NULL), UV_ECANCELED);
  assert_null(uvp_tcp_handle(r.t));
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write(r.t, "x", 1, &w), UV_EBADF);
  uvp_promise_release(limited);
  uvp_promise_release(body);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

static void test_cancel_before_connect_completes(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  struct sockaddr_in a;
  addr_of(&srv, &a);
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &c), 0);
  assert_int_equal(uvp_promise_cancel(c), 0);
  assert_int_equal(uvp_promise_reason(c, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(c), UVP_ESETTLED);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uvp_promise_release(c);
  uvp_tcp_close(t);
  server_stop(&srv);
}

/* A request to a silent server, run until its read is pending: the read's
 * promise. */
static uvp_promise_t *read_pending(fixture_t *f, server_t *srv, req_t *r) {
  server_start(f, srv, SRV_SILENT);
  uvp_promise_t *body = request(f, r, srv);
  /* Let the connection and the write happen; the read stays pending. */
  for (int i = 0; i < 50 && srv->accepted == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_state(body), UVP_PENDING);
  return body;
}

static void test_cancel_during_read_and_close_with_pending(void **state) {
  fixture_t *f = *state;
  server_t srv;
  req_t r = {0};
  uvp_promise_t *body = read_pending(f, &srv, &r);
  uvp_promise_t *again;
  assert_int_equal(uvp_tcp_read(r.t, &again), UV_EBUSY);
  assert_int_equal(uvp_tcp_read_all(r.t, 0, &again), UV_EBUSY);
  assert_int_equal(uvp_promise_cancel(body), 0);
  assert_int_equal(uvp_promise_reason(body, NULL), UV_ECANCELED);
  uvp_promise_release(body);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

static void test_read_chunk_then_eof(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  req_t r = {0};
  struct sockaddr_in a;
  addr_of(&srv, &a);
  assert_int_equal(uvp_tcp_new(f->ctx, &r.t), 0);
  uvp_promise_t *c, *w, *rd;
  assert_int_equal(uvp_tcp_connect(r.t, (struct sockaddr *)&a, &c), 0);
#if defined(_WIN32)
  /* libuv for Windows refuses a write while the connect is in flight
   * (io.h, uvp_tcp_write): the write waits for the connect there. */
  assert_int_equal(uvp_tcp_write(r.t, "ping", 4, &w), UV_EPIPE);
  run_until_settled(f, c);
  assert_int_equal(uvp_tcp_write(r.t, "ping", 4, &w), 0);
#else
  assert_int_equal(uvp_tcp_write(r.t, "ping", 4, &w), 0); /* queued */
#endif
  run_until_settled(f, w);
  assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  size_t got = 0;
  for (;;) {
    assert_int_equal(uvp_tcp_read(r.t, &rd), 0);
    run_until_settled(f, rd);
    if (uvp_promise_state(rd) == UVP_REJECTED) {
      assert_int_equal(uvp_promise_reason(rd, NULL), UV_EOF);
      uvp_promise_release(rd);
      break;
    }
    uvp_buf_t *b = uvp_promise_value(rd);
    assert_true(b->len > 0);
    assert_memory_equal(b->base, REPLY + got, b->len);
    got += b->len;
    uvp_promise_release(rd);
  }
  assert_int_equal(got, strlen(REPLY));
  uvp_promise_t *sd;
  assert_int_equal(uvp_tcp_shutdown(r.t, &sd), 0);
  run_until_settled(f, sd);
  uvp_promise_release(sd);
  uvp_promise_release(c);
  uvp_promise_release(w);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

static void test_teardown_with_connection_in_flight(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SILENT);
  req_t r = {0};
  uvp_promise_t *body = request(f, &r, &srv);
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(body, NULL), UVP_ECLOSED);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write(r.t, "x", 1, &w), UVP_ECLOSED);
  uvp_promise_release(body);
  assert_int_equal(uvp_tcp_close(r.t), 0);
  server_stop(&srv);
}

/* ---- 1000 concurrent connections, collected with allSettled -------------- */

#define MANY 1000

static void test_thousand_concurrent_connections(void **state) {
  fixture_t *f = *state;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 4 * MANY) {
    rl.rlim_cur = rl.rlim_max < 4 * MANY ? rl.rlim_max : 4 * MANY;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  server_t srv;
  server_start(f, &srv, SRV_ECHO_THEN_CLOSE);
  static req_t reqs[MANY];
  static uvp_promise_t *bodies[MANY];
  memset(reqs, 0, sizeof(reqs));
  for (int i = 0; i < MANY; i++)
    bodies[i] = request(f, &reqs[i], &srv);
  uvp_promise_t *all;
  assert_int_equal(uvp_promise_all_settled(f->ctx, bodies, MANY, &all), 0);
  for (int i = 0; i < MANY; i++)
    uvp_promise_release(bodies[i]);
  run_until_settled(f, all);
  const uvp_settled_list_t *l = uvp_promise_value(all);
  assert_int_equal(l->count, MANY);
  assert_int_equal(l->fulfilled, MANY);
  for (int i = 0; i < MANY; i++) {
    uvp_buf_t *b = l->items[i].value;
    assert_int_equal(b->len, strlen(REPLY));
  }
  assert_int_equal(srv.accepted, MANY);
  uvp_promise_release(all);
  for (int i = 0; i < MANY; i++)
    uvp_tcp_close(reqs[i].t);
  server_stop(&srv);
}

static void test_tcp_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  uvp_tcp_t *t, *other = NULL;
  uv_tcp_t listener;
  assert_int_equal(uvp_tcp_new(NULL, &t), UV_EINVAL);
  assert_int_equal(uvp_tcp_new(f->ctx, NULL), UV_EINVAL);
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uv_tcp_init(&f->loop, &listener), 0);
  assert_int_equal(uvp_tcp_accept(NULL, (uv_stream_t *)&listener, &other),
                   UV_EINVAL);
  assert_int_equal(uvp_tcp_accept(f->ctx, NULL, &other), UV_EINVAL);
  /* Not listening: uv_accept's own answer. */
  assert_int_equal(uvp_tcp_accept(f->ctx, (uv_stream_t *)&listener, &other),
                   UV_EAGAIN);
  assert_null(other);
  assert_int_equal(uvp_tcp_connect(t, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_tcp_connect_host(t, "localhost", 70000, &p), UV_EINVAL);
  assert_int_equal(uvp_tcp_write(NULL, "x", 1, &p), UV_EINVAL);
  assert_int_equal(uvp_tcp_write(t, NULL, 1, &p), UV_EINVAL);
  assert_int_equal(uvp_tcp_read(t, NULL), UV_EINVAL);
  assert_null(p);
  assert_int_equal(uvp_tcp_closed(NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_tcp_closed(t, NULL), UV_EINVAL);
  assert_null(p);
  /* Reading or watching an unconnected stream fails synchronously, nothing
   * leaks. */
  assert_int_equal(uvp_tcp_read(t, &p), UV_ENOTCONN);
  assert_int_equal(uvp_tcp_closed(t, &p), UV_ENOTCONN);
  assert_int_equal(uvp_tcp_close(NULL), UV_EINVAL);
  assert_int_equal(uvp_tcp_close(t), 0);
  /* A second close before the loop ran is refused and changes nothing. */
  assert_int_equal(uvp_tcp_close(t), UV_EINVAL);
  uv_close((uv_handle_t *)&listener, NULL);
  run_loop(f);
}

/* More than one libuv buffer holds: refused before a byte is read. */
static void test_tcp_write_beyond_a_buffer(void **state) {
  fixture_t *f = *state;
#if SIZE_MAX <= UINT_MAX
  (void)f;
  SKIP_BECAUSE("a 32-bit size_t is never longer than a libuv buffer holds");
#else
  uvp_promise_t *p = NULL;
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_tcp_write(t, "x", (size_t)UINT_MAX + 1, &p), UV_EINVAL);
  assert_null(p);
  assert_int_equal(uvp_tcp_close(t), 0);
  run_loop(f);
#endif
}

/* Refused from another thread (with the check on), after uvp_tcp_close
 * (UV_EBADF) and after uvp_ctx_close (UVP_ECLOSED): nothing is started
 * and no promise handed out; uvp_tcp_close still works. */
typedef struct tforeign_s {
  uvp_ctx_t *ctx;
  uvp_tcp_t *t, *made;
  uvp_promise_t *out;
  int rc[9];
} tforeign_t;

static void tcp_calls(void *arg) {
  tforeign_t *x = arg;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 9, &a);
  int k = 0;
  x->rc[k++] = uvp_tcp_detach(x->t);
  x->rc[k++] = uvp_tcp_attach(x->t);
  x->rc[k++] = uvp_tcp_new(x->ctx, &x->made);
  x->rc[k++] = uvp_tcp_connect(x->t, (struct sockaddr *)&a, &x->out);
  x->rc[k++] = uvp_tcp_connect_host(x->t, "127.0.0.1", 9, &x->out);
  x->rc[k++] = uvp_tcp_write(x->t, "x", 1, &x->out);
  x->rc[k++] = uvp_tcp_read(x->t, &x->out);
  x->rc[k++] = uvp_tcp_shutdown(x->t, &x->out);
  x->rc[k++] = uvp_tcp_closed(x->t, &x->out);
}

static void assert_tcp_calls(const tforeign_t *x, int code) {
  for (int k = 0; k < 9; k++)
    if (x->rc[k] != code)
      fail_msg("call %d: %s, want %s", k, uvp_err_name(x->rc[k]),
               uvp_err_name(code));
  assert_null(x->made);
  assert_null(x->out);
}

static void tcp_close_elsewhere(void *arg) {
  tforeign_t *x = arg;
  x->rc[0] = uvp_tcp_close(x->t);
}

static void test_tcp_refused(void **state) {
  fixture_t *f = *state;
  tforeign_t x = {.ctx = f->ctx};
  uvp_tcp_t *closed;
  uv_tcp_t listener;
  assert_int_equal(uvp_tcp_new(f->ctx, &x.t), 0);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(tcp_calls, &x);
  assert_tcp_calls(&x, UVP_ETHREAD);
  run_on_other_thread(tcp_close_elsewhere, &x); /* x.t stays open */
  assert_int_equal(x.rc[0], UVP_ETHREAD);
  assert_non_null(uvp_tcp_handle(x.t));
  assert_int_equal(uvp_ctx_set_checks(f->ctx, 0), 0);
  /* A closed connection. */
  assert_int_equal(uvp_tcp_new(f->ctx, &closed), 0);
  assert_int_equal(uvp_tcp_close(closed), 0);
  assert_int_equal(uvp_tcp_detach(closed), UV_EBADF);
  assert_int_equal(uvp_tcp_attach(closed), UV_EBADF);
  assert_int_equal(uvp_tcp_closed(closed, &x.out), UV_EBADF);
  assert_null(x.out);
  /* From another thread, the thread is what is refused, closed or not. */
  tforeign_t y = {.ctx = f->ctx, .t = closed};
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(tcp_calls, &y);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, 0), 0);
  assert_tcp_calls(&y, UVP_ETHREAD);
  run_loop(f);
  /* The context closed: its connections, and new ones, refused. */
  assert_int_equal(uv_tcp_init(&f->loop, &listener), 0);
  uvp_ctx_t *ctx = close_ctx(f);
  tcp_calls(&x);
  assert_tcp_calls(&x, UVP_ECLOSED);
  assert_int_equal(uvp_tcp_accept(ctx, (uv_stream_t *)&listener, &x.made),
                   UVP_ECLOSED);
  assert_null(x.made);
  assert_int_equal(uvp_tcp_close(x.t), 0);
  uv_close((uv_handle_t *)&listener, NULL);
  run_loop(f); /* the listener is on this stack */
}

/* A read pending: another thread's read is refused for the thread (with
 * the check on), not answered UV_EBUSY from state it may not read. */
static void tcp_read_elsewhere(void *arg) {
  tforeign_t *x = arg;
  x->rc[0] = uvp_tcp_read(x->t, &x->out);
  x->rc[1] = uvp_tcp_read_all(x->t, 0, &x->out);
}

static void test_tcp_read_refused_off_thread(void **state) {
  fixture_t *f = *state;
  server_t srv;
  req_t r = {0};
  uvp_promise_t *body = read_pending(f, &srv, &r);
  tforeign_t x = {.ctx = f->ctx, .t = r.t};
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(tcp_read_elsewhere, &x);
  assert_int_equal(uvp_ctx_set_checks(f->ctx, 0), 0);
  assert_int_equal(x.rc[0], UVP_ETHREAD);
  assert_int_equal(x.rc[1], UVP_ETHREAD);
  assert_null(x.out);
  /* On the loop thread: the read in flight makes it UV_EBUSY. */
  assert_int_equal(uvp_tcp_read(r.t, &x.out), UV_EBUSY);
  assert_int_equal(uvp_promise_cancel(body), 0);
  uvp_promise_release(body);
  uvp_tcp_close(r.t);
  server_stop(&srv);
}

/* ---- reads between reads: uvp on both ends of one connection ------------- */

typedef struct pair_s {
  uv_tcp_t listener;
  uvp_ctx_t *ctx;
  uvp_tcp_t *server; /* the accepted end */
} pair_t;

static void pair_accept(uv_stream_t *l, int status) {
  pair_t *pr = l->data;
  assert_int_equal(status, 0);
  assert_int_equal(uvp_tcp_accept(pr->ctx, l, &pr->server), 0);
}

/* A connected client/server pair of uvp_tcp_t, the server's end accepted
 * by `on_conn`; the listener is closed, so nothing but the two ends is
 * left on the loop. */
static uvp_tcp_t *pair_open_with(fixture_t *f, pair_t *pr,
                                 uv_connection_cb on_conn) {
  memset(pr, 0, sizeof(*pr));
  pr->ctx = f->ctx;
  struct sockaddr_storage ss;
  listen_loopback(&f->loop, &pr->listener, 8, on_conn, pr, &ss);
  uvp_tcp_t *c;
  uvp_promise_t *conn;
  assert_int_equal(uvp_tcp_new(f->ctx, &c), 0);
  assert_int_equal(uvp_tcp_connect(c, (struct sockaddr *)&ss, &conn), 0);
  while (pr->server == NULL || uvp_promise_state(conn) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(conn), UVP_FULFILLED);
  uvp_promise_release(conn);
  uv_close((uv_handle_t *)&pr->listener, NULL);
  return c;
}

static uvp_tcp_t *pair_open(fixture_t *f, pair_t *pr) {
  return pair_open_with(f, pr, pair_accept);
}

/* Accepting with a NULL argument is refused before the connection is
 * taken off the backlog: the next, correct call still gets it. */
static void pair_accept_after_bad(uv_stream_t *l, int status) {
  pair_t *pr = l->data;
  assert_int_equal(status, 0);
  assert_int_equal(uvp_tcp_accept(pr->ctx, l, NULL), UV_EINVAL);
  assert_int_equal(uvp_tcp_accept(pr->ctx, NULL, &pr->server), UV_EINVAL);
  assert_null(pr->server);
  assert_int_equal(uvp_tcp_accept(pr->ctx, l, &pr->server), 0);
}

static void send_now(fixture_t *f, uvp_tcp_t *t, const char *text) {
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write(t, text, strlen(text), &w), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  uvp_promise_release(w);
}

/* Read once and expect `text` (NULL: expect a rejection with `code`). */
static void expect_read(fixture_t *f, uvp_tcp_t *t, const char *text,
                        int code) {
  uvp_promise_t *r;
  assert_int_equal(uvp_tcp_read(t, &r), 0);
  run_loop(f);
  if (text != NULL) {
    assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
    const uvp_buf_t *b = uvp_promise_value(r);
    assert_int_equal(b->len, strlen(text));
    assert_memory_equal(b->base, text, b->len);
  } else {
    assert_int_equal(uvp_promise_state(r), UVP_REJECTED);
    assert_int_equal(uvp_promise_reason(r, NULL), code);
  }
  uvp_promise_release(r);
}

static void test_accept_null_leaves_connection_pending(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open_with(f, &pr, pair_accept_after_bad);
  send_now(f, c, "ping");
  expect_read(f, pr.server, "ping", 0);
  uvp_tcp_close(c);
  uvp_tcp_close(pr.server);
}

/* Between two reads libuv keeps reading: bytes that arrive with no read
 * pending stay in the kernel for the next read, and the idle connection
 * does not keep the loop alive (as a bare idle libuv handle would not). */
/* Writes larger than the socket buffer: the first goes partly straight to
 * the kernel and the rest through libuv's queue; the ones issued right
 * behind it must queue up after it, never overtake it.  The server reports
 * how many bytes it got and an order-sensitive hash of them. */
static void test_large_writes_stay_in_order(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SINK);
  enum { BIG = 8 << 20, MID = 1 << 20 };
  char *big = malloc(BIG), *mid = malloc(MID);
  assert_non_null(big);
  assert_non_null(mid);
  for (size_t i = 0; i < BIG; i++)
    big[i] = (char)(i * 7 + i / 4096);
  for (size_t i = 0; i < MID; i++)
    mid[i] = (char)(i * 13 + 1);
  static const char tail[] = "the tail";
  uint64_t want = fnv1a(fnv1a(fnv1a(FNV_INIT, big, BIG), tail, 8), mid, MID);

  struct sockaddr_in a;
  addr_of(&srv, &a);
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  uvp_promise_t *c, *w[3], *sd, *rd;
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
  assert_int_equal(uvp_tcp_write(t, big, BIG, &w[0]), 0);
  /* Not all of 8 MiB fits in a loopback socket's buffer. */
  assert_int_equal(uvp_promise_state(w[0]), UVP_PENDING);
  assert_int_equal(uvp_tcp_write(t, tail, 8, &w[1]), 0);
  assert_int_equal(uvp_promise_state(w[1]), UVP_PENDING); /* queued */
  assert_int_equal(uvp_tcp_write(t, mid, MID, &w[2]), 0);
  assert_int_equal(uvp_tcp_shutdown(t, &sd), 0);
  assert_int_equal(uvp_tcp_read_all(t, 0, &rd), 0);
  run_until_settled(f, rd);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(uvp_promise_state(w[i]), UVP_FULFILLED);
    uvp_promise_release(w[i]);
  }
  assert_int_equal(uvp_promise_state(sd), UVP_FULFILLED);
  expect_sink_reply(rd, BIG + 8 + MID, want);
  uvp_promise_release(rd);
  uvp_promise_release(sd);
  uvp_promise_release(c);
  uvp_tcp_close(t);
  server_stop(&srv);
  free(big);
  free(mid);
}

/* A small write on an idle connection goes to the kernel at once: its
 * promise is already fulfilled when the call returns, and its handlers
 * still run only later, from the loop. */
static int small_write_handled;
static uvp_ret_t note_write(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  assert_int_equal(in->status, 0);
  small_write_handled++;
  return uvp_ret_pass();
}

static void test_small_write_settles_at_once(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SINK);
  struct sockaddr_in a;
  addr_of(&srv, &a);
  uvp_tcp_t *t;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  uvp_promise_t *c, *w, *sd, *rd;
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &c), 0);
  run_until_settled(f, c);
  small_write_handled = 0;
  assert_int_equal(uvp_tcp_write(t, "ping", 4, &w), 0);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  assert_int_equal(uvp_promise_on(w, UVP_ON_BOTH, note_write, NULL, NULL), 0);
  assert_int_equal(small_write_handled, 0);
  assert_int_equal(uvp_tcp_shutdown(t, &sd), 0);
  assert_int_equal(uvp_tcp_read_all(t, 0, &rd), 0);
  run_until_settled(f, rd);
  assert_int_equal(small_write_handled, 1);
  expect_sink_reply(rd, 4, fnv1a(FNV_INIT, "ping", 4));
  uvp_promise_release(rd);
  uvp_promise_release(sd);
  uvp_promise_release(w);
  uvp_promise_release(c);
  uvp_tcp_close(t);
  server_stop(&srv);
}

static void test_bytes_between_reads_wait_for_the_next(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  send_now(f, pr.server, "one");
  expect_read(f, c, "one", 0);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  send_now(f, pr.server, "two");
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT); /* "two" arrives with no read pending */
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  expect_read(f, c, "two", 0);
  send_now(f, pr.server, "three");
  expect_read(f, c, "three", 0);
  uvp_tcp_close(pr.server);
  uvp_tcp_close(c);
}

/* The end of the stream arrives while no read is pending: the next read
 * rejects with UV_EOF, and read_all fulfils with what is left (nothing). */
static void test_eof_between_reads(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled,
                           NULL); /* the EOF is expected */
  send_now(f, pr.server, "last");
  expect_read(f, c, "last", 0);
  uvp_tcp_close(pr.server);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  expect_read(f, c, NULL, UV_EOF);
  uvp_promise_t *all;
  assert_int_equal(uvp_tcp_read_all(c, 0, &all), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  assert_int_equal(((const uvp_buf_t *)uvp_promise_value(all))->len, 0);
  uvp_promise_release(all);
  uvp_tcp_close(c);
}

/* A reset that arrives while no read is pending is the next read's
 * outcome. */
static void test_reset_between_reads(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled,
                           NULL); /* the reset is expected */
  send_now(f, pr.server, "hi");
  expect_read(f, c, "hi", 0);
  /* A zero linger makes the close send RST instead of FIN. */
  uv_os_fd_t fd;
  assert_int_equal(uv_fileno((uv_handle_t *)uvp_tcp_handle(pr.server), &fd), 0);
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  uvp_tcp_close(pr.server);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  expect_read(f, c, NULL, UV_ECONNRESET);
  uvp_tcp_close(c);
}

/* ---- a buffer handed over: uvp_tcp_write_full ---------------------------- */

/* Buffers handed to uvp are malloc'd and freed only through this, so
 * valgrind and ASan see a missing or second call, or bytes read after. */
static int g_bufs_freed;

static void buf_release(void *b) {
  g_bufs_freed++;
  free(b);
}

static char *filled(size_t n, unsigned seed) {
  char *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++)
    b[i] = (char)(i * seed + i / 4096);
  return b;
}

static uvp_tcp_t *connect_to(fixture_t *f, server_t *srv) {
  struct sockaddr_in a;
  addr_of(srv, &a);
  uvp_tcp_t *t;
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &c), 0);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
  uvp_promise_release(c);
  return t;
}

/* Shut t's write side and expect the sink's summary of what it got. */
static void expect_sunk(fixture_t *f, uvp_tcp_t *t, uint64_t bytes,
                        uint64_t hash) {
  uvp_promise_t *sd, *rd;
  assert_int_equal(uvp_tcp_shutdown(t, &sd), 0);
  assert_int_equal(uvp_tcp_read_all(t, 0, &rd), 0);
  run_until_settled(f, rd);
  assert_int_equal(uvp_promise_state(sd), UVP_FULFILLED);
  expect_sink_reply(rd, bytes, hash);
  uvp_promise_release(sd);
  uvp_promise_release(rd);
}

/* Taken by the kernel at once: the promise is fulfilled when the call
 * returns, so libuv is done with the bytes and the buffer went inside the
 * call. */
static void test_write_full_small_taken_at_once(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SINK);
  uvp_tcp_t *t = connect_to(f, &srv);
  g_bufs_freed = 0;
  char *b = filled(16, 31);
  uint64_t want = fnv1a(FNV_INIT, b, 16);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write_full(t, b, 16, buf_release, &w), 0);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  assert_int_equal(g_bufs_freed, 1);
  expect_sunk(f, t, 16, want);
  assert_int_equal(g_bufs_freed, 1);
  uvp_promise_release(w);
  uvp_tcp_close(t);
  server_stop(&srv);
  assert_int_equal(g_bufs_freed, 1);
}

/* 8 MiB does not fit the socket at once: the rest is queued, the buffer
 * stays until libuv has written all of it, then goes once.  A small
 * buffer queued behind it waits its turn too. */
static void test_write_full_large_queued(void **state) {
  fixture_t *f = *state;
  server_t srv;
  server_start(f, &srv, SRV_SINK);
  uvp_tcp_t *t = connect_to(f, &srv);
  enum { BIG = 8 << 20, SMALL = 100 };
  g_bufs_freed = 0;
  char *big = filled(BIG, 7), *small = filled(SMALL, 13);
  uint64_t want = fnv1a(fnv1a(FNV_INIT, big, BIG), small, SMALL);
  uvp_promise_t *w1, *w2;
  assert_int_equal(uvp_tcp_write_full(t, big, BIG, buf_release, &w1), 0);
  assert_int_equal(uvp_promise_state(w1), UVP_PENDING);
  assert_int_equal(uvp_tcp_write_full(t, small, SMALL, buf_release, &w2), 0);
  assert_int_equal(uvp_promise_state(w2), UVP_PENDING);
  assert_int_equal(g_bufs_freed, 0);
  run_until_settled(f, w2);
  assert_int_equal(uvp_promise_state(w1), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(w2), UVP_FULFILLED);
  assert_int_equal(g_bufs_freed, 2);
  expect_sunk(f, t, BIG + SMALL, want);
  uvp_promise_release(w1);
  uvp_promise_release(w2);
  uvp_tcp_close(t);
  server_stop(&srv);
  assert_int_equal(g_bufs_freed, 2);
}

typedef enum { END_CLOSE, END_CANCEL, END_CTX_CLOSE } write_end_t;

/* A write stuck behind a peer that does not read, ended by closing the
 * connection, cancelling the write, or closing the context: the promise
 * rejects and the buffer goes once, when libuv gives the request back. */
static void pending_write_ended(fixture_t *f, write_end_t how) {
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
  enum { BIG = 16 << 20 };
  g_bufs_freed = 0;
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write_full(c, filled(BIG, 3), BIG, buf_release, &w),
                   0);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  /* The other end reads nothing: most of it is still queued. */
  assert_int_equal(uvp_promise_state(w), UVP_PENDING);
  assert_int_equal(g_bufs_freed, 0);
  int code = UV_ECANCELED;
  switch (how) {
  case END_CLOSE:
    assert_int_equal(uvp_tcp_close(c), 0);
    break;
  case END_CANCEL:
    assert_int_equal(uvp_promise_cancel(w), 0);
    assert_int_equal(uvp_promise_reason(w, NULL), UV_ECANCELED);
    /* libuv still holds the request until the close completes. */
    assert_int_equal(g_bufs_freed, 0);
    break;
  case END_CTX_CLOSE:
    assert_int_equal(uvp_ctx_close(f->ctx), 0);
    f->ctx = NULL;
    code = UVP_ECLOSED;
    assert_int_equal(uvp_promise_reason(w, NULL), UVP_ECLOSED);
    break;
  }
  if (how != END_CLOSE)
    assert_int_equal(uvp_tcp_close(c), 0);
  assert_int_equal(uvp_tcp_close(pr.server), 0);
  run_loop(f);
  assert_int_equal(g_bufs_freed, 1);
  assert_int_equal(uvp_promise_state(w), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(w, NULL), code);
  uvp_promise_release(w);
  assert_int_equal(g_bufs_freed, 1);
}

static void test_write_full_pending_at_close(void **state) {
  pending_write_ended(*state, END_CLOSE);
}
static void test_write_full_pending_cancelled(void **state) {
  pending_write_ended(*state, END_CANCEL);
}
static void test_write_full_pending_at_ctx_close(void **state) {
  pending_write_ended(*state, END_CTX_CLOSE);
}

/* Refused: nothing written, the buffer freed before the call returns
 * (uvp.h, "Handing over"), once each. */
static void test_write_full_refused(void **state) {
  fixture_t *f = *state;
  g_bufs_freed = 0;
  uvp_tcp_t *t;
  uvp_promise_t *w = NULL;
  assert_int_equal(uvp_tcp_write_full(NULL, filled(8, 5), 8, buf_release, &w),
                   UV_EINVAL);
  assert_int_equal(g_bufs_freed, 1);
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_tcp_write_full(t, filled(8, 5), 8, buf_release, NULL),
                   UV_EINVAL);
  assert_int_equal(g_bufs_freed, 2);
  /* libuv refuses a write on a stream never connected: for Unix, its
   * descriptor is not open yet; for Windows, the stream is not writable. */
#if defined(_WIN32)
  assert_int_equal(uvp_tcp_write_full(t, filled(8, 5), 8, buf_release, &w),
                   UV_EPIPE);
#else
  assert_int_equal(uvp_tcp_write_full(t, filled(8, 5), 8, buf_release, &w),
                   UV_EBADF);
#endif
  assert_int_equal(g_bufs_freed, 3);
  assert_int_equal(uvp_tcp_close(t), 0);
  run_loop(f);
  assert_null(w);
  assert_int_equal(g_bufs_freed, 3);
}

/* Refused for want of memory, with the k-th allocation failing for every k
 * (alloc-helpers.h): buf_free has run once, inside the call, and not again
 * once the loop has, and nothing reached the peer; accepted,
 * buf_free runs once and the peer gets the bytes.  uvp's end is accepted
 * from a plain libuv listener and its peer is a plain libuv client, so the
 * write is the context's first operation: it allocates the operations'
 * pool and its promise, each of which fails in some run. */
typedef struct wn_s {
  uv_tcp_t listener, client;
  uv_connect_t connect;
  uvp_ctx_t *ctx;
  uvp_tcp_t *t;  /* uvp's end, once accepted */
  int accept_rc; /* 1 until the connection came */
  bool connected, eof;
  size_t got;
  char buf[64];
} wn_t;

static long wn_enomem;

static void wn_accept(uv_stream_t *l, int status) {
  wn_t *w = l->data;
  assert_int_equal(status, 0);
  w->accept_rc = uvp_tcp_accept(w->ctx, l, &w->t);
}

static void wn_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  wn_t *w = h->data;
  (void)sz;
  *b = uv_buf_init(w->buf + w->got, (unsigned)(sizeof(w->buf) - w->got));
}

static void wn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  wn_t *w = s->data;
  (void)b;
  if (n > 0)
    w->got += (size_t)n;
  if (n < 0) {
    w->eof = true;
    uv_read_stop(s);
  }
}

static void wn_connected(uv_connect_t *c, int status) {
  wn_t *w = c->data;
  assert_int_equal(status, 0);
  w->connected = true;
  uv_read_start((uv_stream_t *)&w->client, wn_alloc, wn_read);
}

/* Write 16 bytes from the accepted end, close it, and read to EOF. */
static void wn_write(run_t *r, wn_t *w) {
  g_bufs_freed = 0;
  char *b = filled(16, 11);
  uvp_promise_t *p = NULL;
  int rc = uvp_tcp_write_full(w->t, b, 16, buf_release, &p);
  OK_OR_ENOMEM(rc);
  if (rc != 0) {
    wn_enomem++;
    assert_null(p);
    if (g_bufs_freed != 1)
      fail_msg("buf_free ran %d times on UV_ENOMEM, not once", g_bufs_freed);
  }
  if (p != NULL)
    loop_run_until(&r->loop, promise_is_settled, p);
  assert_int_equal(uvp_tcp_close(w->t), 0);
  for (int i = 0; i < 100000 && !w->eof; i++)
    uv_run(&r->loop, UV_RUN_ONCE);
  assert_true(w->eof);
  if (rc != 0) {
    assert_int_equal(g_bufs_freed, 1); /* by the refusal */
    assert_int_equal(w->got, 0);
    return;
  }
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(g_bufs_freed, 1);
  assert_int_equal(w->got, 16);
  char *want = filled(16, 11);
  assert_memory_equal(w->buf, want, 16);
  free(want);
  uvp_promise_release(p);
  assert_int_equal(g_bufs_freed, 1);
}

static void scenario_write_full(run_t *r) {
  wn_t w;
  memset(&w, 0, sizeof(w));
  w.ctx = r->ctx;
  w.accept_rc = 1;
  struct sockaddr_storage ss;
  listen_loopback(&r->loop, &w.listener, 8, wn_accept, &w, &ss);
  uv_tcp_init(&r->loop, &w.client);
  w.client.data = w.connect.data = &w;
  assert_int_equal(uv_tcp_connect(&w.connect, &w.client, (struct sockaddr *)&ss,
                                  wn_connected),
                   0);
  /* A connection refused for memory stays in the listener's backlog,
   * which the client's connect does not wait for. */
  for (int i = 0; i < 100000 && (w.accept_rc == 1 || !w.connected); i++)
    uv_run(&r->loop, UV_RUN_ONCE);
  assert_true(w.connected);
  OK_OR_ENOMEM(w.accept_rc);
  if (w.accept_rc == 0)
    wn_write(r, &w);
  uv_close((uv_handle_t *)&w.client, NULL);
  uv_close((uv_handle_t *)&w.listener, NULL);
  uv_run(&r->loop, UV_RUN_DEFAULT); /* both are on this stack */
}

static void test_write_full_refused_for_memory(void **state) {
  (void)state;
  wn_enomem = 0;
  exhaust(scenario_write_full);
  assert_true(wn_enomem > 0);
}

/* ---- a handler returning a fresh request --------------------------------- */

/* As with files (test-fs): a handler that returns a read it has just
 * started hands the read to its derived promise (see take_over in
 * promise.c), and the read's own promise is freed at once instead of being
 * adopted.  What users observe must not change: the value, cancellation,
 * and a read promise the handler kept for itself. */
typedef struct handoff_s {
  uvp_tcp_t *t;
  uvp_promise_t *kept; /* the read's promise, if the handler keeps it */
  bool keep;
} handoff_t;

static uvp_ret_t handoff_read(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  (void)in;
  uvp_promise_t *rd;
  int rc = uvp_tcp_read_all(h->t, 0, &rd);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  if (h->keep)
    h->kept = uvp_promise_retain(rd);
  return uvp_ret_adopt(rd);
}

static size_t live_promises(fixture_t *f) {
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  return st.live;
}

/* start -> a handler that returns a fresh read_all of h->t.  Runs the
 * handler; returns the derived promise, and in *live how many promises
 * were alive beyond `base` right after. */
static uvp_promise_t *handoff_start(fixture_t *f, handoff_t *h, size_t base,
                                    size_t *live) {
  uvp_promise_t *start, *body;
  assert_int_equal(uvp_promise_new(f->ctx, &start), 0);
  assert_int_equal(uvp_promise_then(start, handoff_read, h, &body), 0);
  assert_int_equal(uvp_promise_resolve(start, NULL, NULL), 0);
  uvp_promise_release(start);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_state(body), UVP_PENDING);
  *live = live_promises(f) - base;
  return body;
}

/* Write `text` from the server's end and close it (the write reaches the
 * kernel within the call: nothing else is queued on that end). */
static void send_and_close(uvp_tcp_t *server, const char *text) {
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write(server, text, strlen(text), &w), 0);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  uvp_promise_release(w);
  assert_int_equal(uvp_tcp_close(server), 0);
}

static void expect_body(fixture_t *f, uvp_promise_t *p, const char *text) {
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  const uvp_buf_t *b = uvp_promise_value(p);
  assert_int_equal(b->len, strlen(text));
  assert_memory_equal(b->base, text, b->len);
}

static void test_handler_hands_read_on(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  size_t base = live_promises(f), live;
  handoff_t h = {.t = c};
  uvp_promise_t *body = handoff_start(f, &h, base, &live);
  /* The derived promise and nothing else: an adopted read would still be
   * alive, waiting to forward its value. */
  assert_int_equal(live, 1);
  send_and_close(pr.server, "handed");
  expect_body(f, body, "handed");
  uvp_promise_release(body);
  assert_int_equal(live_promises(f), base);
  uvp_tcp_close(c);
}

/* A handler that keeps the read's promise: that promise is adopted as
 * before, and both settle with the same bytes. */
static void test_handler_keeps_read(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  size_t base = live_promises(f), live;
  handoff_t h = {.t = c, .keep = true};
  uvp_promise_t *body = handoff_start(f, &h, base, &live);
  assert_int_equal(live, 2);
  send_and_close(pr.server, "kept");
  expect_body(f, body, "kept");
  expect_body(f, h.kept, "kept");
  assert_ptr_equal(uvp_promise_value(body), uvp_promise_value(h.kept));
  uvp_promise_release(h.kept);
  uvp_promise_release(body);
  uvp_tcp_close(c);
}

/* Cancelling the derived promise cancels the read it took over, as
 * cancelling the adopted read would have: the connection is closed. */
static void test_cancel_after_hand_off_closes(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  /* The cancelled promise has no handler: its report is expected. */
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
  size_t base = live_promises(f), live;
  handoff_t h = {.t = c};
  uvp_promise_t *body = handoff_start(f, &h, base, &live);
  assert_int_equal(live, 1);
  assert_int_equal(uvp_promise_cancel(body), 0);
  assert_int_equal(uvp_promise_state(body), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(body, NULL), UV_ECANCELED);
  assert_null(uvp_tcp_handle(c));
  uvp_promise_t *rd;
  assert_int_equal(uvp_tcp_read(c, &rd), UV_EBADF);
  uvp_promise_release(body);
  uvp_tcp_close(c);
  uvp_tcp_close(pr.server);
  run_loop(f);
  assert_int_equal(live_promises(f), base);
}

/* ---- connections changing hands between task groups ---------------------- */

/* A keep-alive pool's connection outlives the group whose work made it:
 * detached, the group's join no longer waits for it; attached by another
 * group's work, that group's join waits for its close.  Operations belong
 * to the connection, not to the group whose work starts them. */
typedef struct handover_s {
  fixture_t *f;
  pair_t *pr;
  uvp_tcp_t *t;
  struct sockaddr_storage to;
  uvp_promise_t *read; /* started by a member on a connection not its own */
} handover_t;

/* A member that makes the connection: the group's from then on. */
static int start_connect(void *arg, uvp_promise_t **out) {
  handover_t *h = arg;
  int rc = uvp_tcp_new(h->f->ctx, &h->t);
  return rc != 0 ? rc : uvp_tcp_connect(h->t, (struct sockaddr *)&h->to, out);
}

/* A member that takes the connection over. */
static int start_attach(void *arg, uvp_promise_t **out) {
  handover_t *h = arg;
  int rc = uvp_tcp_attach(h->t);
  return rc != 0 ? rc : uvp_promise_resolved(h->f->ctx, NULL, NULL, out);
}

/* A member that reads from a connection it does not own. */
static int start_foreign_read(void *arg, uvp_promise_t **out) {
  handover_t *h = arg;
  int rc = uvp_tcp_read(h->t, &h->read);
  return rc != 0 ? rc : uvp_promise_resolved(h->f->ctx, NULL, NULL, out);
}

/* A closed group with one member started; returns its join. */
static uvp_promise_t *group_of(fixture_t *f, uvp_group_start_cb start,
                               handover_t *h, uvp_group_t **g) {
  uvp_promise_t *join;
  assert_int_equal(uvp_group_new(f->ctx, NULL, g), 0);
  assert_int_equal(uvp_group_start(*g, start, h, NULL), 0);
  assert_int_equal(uvp_group_close(*g), 0);
  assert_int_equal(uvp_group_join(*g, &join), 0);
  return join;
}

static void spin(fixture_t *f, int n) {
  for (int i = 0; i < n; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* A pool's connection idles under no deadline: what is started on it
 * while it is detached is not watched by the deadline of the scope that
 * starts it (the request that gave it back, whose deadline passes while
 * it idles); attached again, its pending read is watched once asked. */
static void test_detached_connection_outlives_deadline(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  assert_int_equal(uvp_deadline_set(f->ctx, 30), 0);
  assert_int_equal(uvp_tcp_detach(c), 0);
  uvp_promise_t *idle, *delay;
  assert_int_equal(uvp_tcp_read(c, &idle), 0);
  assert_int_equal(uvp_delay(f->ctx, 10000, NULL, NULL, 0, &delay), 0);
  run_until_settled(f, delay);
  assert_int_equal(uvp_promise_reason(delay, NULL), UV_ETIMEDOUT);
  spin(f, 3);
  assert_int_equal(uvp_promise_state(idle), UVP_PENDING);
  /* Attached under the deadline, which has passed: the read is stopped
   * once the program has it watched. */
  assert_int_equal(uvp_tcp_attach(c), 0);
  spin(f, 3);
  assert_int_equal(uvp_promise_state(idle), UVP_PENDING);
  assert_int_equal(uvp_deadline_watch(f->ctx, idle), 0);
  run_until_settled(f, idle);
  assert_int_equal(uvp_promise_reason(idle, NULL), UV_ETIMEDOUT);
  uvp_promise_release(idle);
  uvp_promise_release(delay);
  uvp_tcp_close(c);
  uvp_tcp_close(pr.server);
}

static void test_connection_changes_groups(void **state) {
  fixture_t *f = *state;
  pair_t pr = {.ctx = f->ctx};
  handover_t h = {.f = f, .pr = &pr};
  listen_loopback(&f->loop, &pr.listener, 8, pair_accept, &pr, &h.to);

  /* Group A makes the connection: its join waits for it... */
  uvp_group_t *ga, *gb, *gc;
  uvp_promise_t *ja = group_of(f, start_connect, &h, &ga);
  while (pr.server == NULL || uvp_group_size(ga) != 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&pr.listener, NULL);
  spin(f, 5);
  assert_int_equal(uvp_promise_state(ja), UVP_PENDING);
  /* ... until the connection is detached (a pool takes it). */
  assert_int_equal(uvp_tcp_detach(h.t), 0);
  spin(f, 2);
  assert_int_equal(uvp_promise_state(ja), UVP_FULFILLED);

  /* A read started by group C's work on a connection that is not C's is
   * the connection's: C joins while it is pending. */
  uvp_promise_t *jc = group_of(f, start_foreign_read, &h, &gc);
  spin(f, 2);
  assert_int_equal(uvp_promise_state(jc), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(h.read), UVP_PENDING);

  /* Group B's work attaches it: B's join waits for its close, the pending
   * read included, and settles once the handle is closed. */
  uvp_promise_t *jb = group_of(f, start_attach, &h, &gb);
  send_now(f, pr.server, "data");
  assert_int_equal(uvp_promise_state(h.read), UVP_FULFILLED);
  spin(f, 5);
  assert_int_equal(uvp_promise_state(jb), UVP_PENDING);
  assert_int_equal(uvp_tcp_close(h.t), 0);
  assert_int_equal(uvp_tcp_attach(h.t), UV_EBADF);      /* closed */
  assert_int_equal(uvp_promise_state(jb), UVP_PENDING); /* closing */
  spin(f, 3);
  assert_int_equal(uvp_promise_state(jb), UVP_FULFILLED);

  assert_int_equal(uvp_tcp_detach(NULL), UV_EINVAL);
  assert_int_equal(uvp_tcp_attach(NULL), UV_EINVAL);
  uvp_promise_t *js[] = {ja, jb, jc, h.read};
  for (size_t i = 0; i < 4; i++)
    uvp_promise_release(js[i]);
  uvp_group_release(ga);
  uvp_group_release(gb);
  uvp_group_release(gc);
  uvp_tcp_close(pr.server);
}

/* ---- watching for the peer's close: uvp_tcp_closed ----------------------- */

/* A watch keeps nothing alive, nor does an idle connection (uv_run then
 * returns at once, without polling): while a test waits for one, a timer
 * keeps the loop turning for `ms`. */
static void stop_loop(uv_timer_t *tm) { uv_stop(tm->loop); }

static void run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t tm;
  assert_int_equal(uv_timer_init(loop, &tm), 0);
  assert_int_equal(uv_timer_start(&tm, stop_loop, ms, 0), 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&tm, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* the timer is on this stack */
}

/* Until p settles, for 10 s at most. */
static void poll_until_settled(uv_loop_t *loop, const uvp_promise_t *p) {
  uint64_t deadline = uv_hrtime() + 10 * (uint64_t)1000000000;
  while (uvp_promise_state(p) == UVP_PENDING) {
    if (uv_hrtime() > deadline)
      fail_msg("still pending after 10 s");
    run_for(loop, 1);
  }
}

/* Let what was sent arrive and the watch read it ahead. */
static void poll_a_while(fixture_t *f) { run_for(&f->loop, 20); }

/* A read whose value is there when the call returns: bytes read ahead. */
static void expect_read_at_once(uvp_tcp_t *t, const char *text) {
  uvp_promise_t *r;
  assert_int_equal(uvp_tcp_read(t, &r), 0);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  const uvp_buf_t *b = uvp_promise_value(r);
  assert_int_equal(b->len, strlen(text));
  assert_memory_equal(b->base, text, b->len);
  assert_int_equal(b->base[b->len], '\0');
  uvp_promise_release(r);
}

/* The peer sends two pipelined requests and closes while the program
 * reads nothing: the watch fulfils, and the reads that follow get both
 * requests, in order, then UV_EOF.  The watch kept nothing alive. */
static void test_watch_sees_close_and_keeps_bytes(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  assert_int_equal(uv_has_ref((uv_handle_t *)uvp_tcp_handle(c)), 0);
  send_now(f, pr.server, "GET /a\r\n");
  poll_a_while(f);
  assert_int_equal(uvp_promise_state(w), UVP_PENDING);
  assert_int_equal(uv_loop_alive(&f->loop), 0);
  send_now(f, pr.server, "GET /b\r\n");
  assert_int_equal(uvp_tcp_close(pr.server), 0);
  poll_until_settled(&f->loop, w);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  assert_null(uvp_promise_value(w));
  expect_read_at_once(c, "GET /a\r\nGET /b\r\n");
  expect_read(f, c, NULL, UV_EOF);
  /* A watch after the program read the end: learnt again from libuv. */
  uvp_promise_t *again;
  assert_int_equal(uvp_tcp_closed(c, &again), 0);
  poll_until_settled(&f->loop, again);
  assert_int_equal(uvp_promise_state(again), UVP_FULFILLED);
  uvp_promise_release(again);
  uvp_promise_release(w);
  uvp_tcp_close(c);
}

/* read_all with bytes read ahead and the end not yet seen: the body
 * begins with them and goes on with what the kernel brings; the end it
 * meets settles the watch too. */
static void test_watch_then_read_all_goes_on(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_promise_t *w, *all;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  send_now(f, pr.server, "abc");
  poll_a_while(f);
  assert_int_equal(uvp_tcp_read_all(c, 0, &all), 0);
  assert_int_equal(uvp_promise_state(all), UVP_PENDING);
  send_and_close(pr.server, "def");
  expect_body(f, all, "abcdef");
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  uvp_promise_release(all);
  uvp_promise_release(w);
  uvp_tcp_close(c);
}

/* read_all after a watch saw the end: what was kept, and the end, at once;
 * with a `max` below what was kept, its first bytes, and the rest stays
 * for the next read. */
static void test_watch_then_read_all(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_promise_t *w, *all;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  send_now(f, pr.server, "0123456789");
  assert_int_equal(uvp_tcp_close(pr.server), 0);
  poll_until_settled(&f->loop, w);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  assert_int_equal(uvp_tcp_read_all(c, 4, &all), 0);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  const uvp_buf_t *b = uvp_promise_value(all);
  assert_int_equal(b->len, 4);
  assert_memory_equal(b->base, "0123", 4);
  uvp_promise_release(all);
  assert_int_equal(uvp_tcp_read_all(c, 0, &all), 0);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  b = uvp_promise_value(all);
  assert_int_equal(b->len, 6);
  assert_memory_equal(b->base, "456789", 6);
  uvp_promise_release(all);
  uvp_promise_release(w);
  uvp_tcp_close(c);
}

/* Zero linger: the peer's close sends RST.  Bytes that came before it are
 * still the next read's, then the reset. */
static void test_watch_sees_reset(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  send_now(f, pr.server, "partial");
  poll_a_while(f); /* read ahead before the RST comes */
  uv_os_fd_t fd;
  assert_int_equal(uv_fileno((uv_handle_t *)uvp_tcp_handle(pr.server), &fd), 0);
  struct linger lg = {1, 0};
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  uvp_tcp_close(pr.server);
  poll_until_settled(&f->loop, w);
  assert_int_equal(uvp_promise_reason(w, NULL), UV_ECONNRESET);
  expect_read_at_once(c, "partial");
  expect_read(f, c, NULL, UV_ECONNRESET);
  uvp_promise_release(w);
  uvp_tcp_close(c);
}

/* ---- a race lost to a closed peer: the losers' cause says so ------------ */

/* c's line, as uvp_cause_format writes it. */
static const char *said_of(const uvp_cause_t *c) {
  static char buf[512];
  int n = uvp_cause_format(c, buf, sizeof(buf));
  assert_true(n >= 0 && (size_t)n < sizeof(buf));
  return buf;
}

/* "127.0.0.1:54321": where t's end is (the peer of the connection's other
 * end). */
static void local_name(uvp_tcp_t *t, char *buf, size_t cap) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  char ip[64];
  assert_int_equal(
      uv_tcp_getsockname(uvp_tcp_handle(t), (struct sockaddr *)&ss, &len), 0);
  assert_int_equal(ss.ss_family, AF_INET);
  const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
  assert_int_equal(uv_ip4_name(in, ip, sizeof(ip)), 0);
  snprintf(buf, cap, "%s:%d", ip, ntohs(in->sin_port));
}

/* A server's request (a 10 s delay stands in for the work) raced against
 * the watch on its client's connection, with UVP_CANCEL_LOSERS; the client
 * goes away (`reset`: with RST).  The work is cut, and its cause says what
 * decided the race: the client's address and what it did, after the sites
 * of the race and of the watch.  The watch itself was cut by nothing: no
 * cause, whether it fulfilled or rejected. */
static void race_lost_to_peer(fixture_t *f, bool reset) {
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  char client[80], want[512];
  local_name(c, client, sizeof(client));
  uvp_promise_t *work, *watch, *r;
  assert_int_equal(uvp_delay(f->ctx, 10000, NULL, NULL, 0, &work), 0);
  int wline = __LINE__ + 1;
  assert_int_equal(uvp_tcp_closed(pr.server, &watch), 0);
  uvp_promise_t *in[] = {work, watch};
  int rline = __LINE__ + 1;
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  if (reset) {
    uv_os_fd_t fd;
    assert_int_equal(uv_fileno((uv_handle_t *)uvp_tcp_handle(c), &fd), 0);
    struct linger lg = {1, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  }
  assert_int_equal(uvp_tcp_close(c), 0);
  run_until_settled(f, r);
  assert_int_equal(uvp_promise_reason(r, NULL), reset ? UV_ECONNRESET : 0);
  assert_null(uvp_promise_cause(r)); /* it settled like the watch */
  assert_null(uvp_promise_cause(watch));
  assert_int_equal(uvp_promise_reason(work, NULL), UV_ECANCELED);
  const uvp_cause_t *cause = uvp_promise_cause(work);
  assert_non_null(cause);
  assert_int_equal(cause->kind, UVP_CAUSE_LOSER);
  assert_int_equal(cause->line, rline);
  assert_int_equal(cause->peer_line, wline);
  assert_int_equal(cause->peer_code, reset ? UV_ECONNRESET : 0);
  snprintf(want, sizeof(want),
           "lost a race decided at %s:%d (by the input created at %s:%d): "
           "peer %s %s the connection",
           __FILE__, rline, __FILE__, wline, client,
           reset ? "reset" : "closed");
  assert_string_equal(said_of(cause), want);
  snprintf(want, sizeof(want), "peer %s %s the connection", client,
           reset ? "reset" : "closed");
  assert_non_null(cause->message);
  assert_string_equal(cause->message, want);
  uvp_promise_release(r);
  uvp_promise_release(work);
  uvp_promise_release(watch);
  uvp_tcp_close(pr.server);
}

static void test_race_lost_to_closed_peer(void **state) {
  race_lost_to_peer(*state, false);
}

static void test_race_lost_to_reset_peer(void **state) {
  race_lost_to_peer(*state, true);
}

/* A watch made after another one saw the end settles inside the call: the
 * race it decides says the same.  A race decided by anything else (the
 * work finishing first) keeps the plain line. */
static void test_race_note_only_from_the_watch(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  char client[80], want[256];
  local_name(c, client, sizeof(client));
  uvp_promise_t *first, *watch, *work, *r;
  assert_int_equal(uvp_tcp_closed(pr.server, &first), 0);
  assert_int_equal(uvp_tcp_close(c), 0);
  poll_until_settled(&f->loop, first);
  assert_int_equal(uvp_tcp_closed(pr.server, &watch), 0);
  assert_int_equal(uvp_promise_state(watch), UVP_FULFILLED);
  assert_int_equal(uvp_delay(f->ctx, 10000, NULL, NULL, 0, &work), 0);
  uvp_promise_t *in[] = {work, watch};
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  run_until_settled(f, r);
  snprintf(want, sizeof(want), "peer %s closed the connection", client);
  assert_non_null(strstr(said_of(uvp_promise_cause(work)), want));
  uvp_promise_release(r);
  uvp_promise_release(work);
  uvp_promise_release(first);
  uvp_promise_release(watch);
  uvp_tcp_close(pr.server);

  /* The work wins: the watch, cut as the loser, says the plain line. */
  uvp_tcp_t *c2 = pair_open(f, &pr);
  uvp_promise_t *quick;
  assert_int_equal(uvp_tcp_closed(pr.server, &watch), 0);
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, &quick), 0);
  uvp_promise_t *in2[] = {quick, watch};
  assert_int_equal(uvp_promise_race(f->ctx, in2, 2, UVP_CANCEL_LOSERS, &r), 0);
  run_until_settled(f, r);
  const uvp_cause_t *cause = uvp_promise_cause(watch);
  assert_non_null(cause);
  assert_null(cause->message);
  assert_non_null(strstr(said_of(cause), "(by the input created at "));
  assert_null(strstr(said_of(cause), "peer"));
  uvp_promise_release(r);
  uvp_promise_release(quick);
  uvp_promise_release(watch);
  uvp_tcp_close(c2);
  uvp_tcp_close(pr.server);
}

/* A peer writing far more than the watch keeps: uvp reads 64 KiB ahead
 * and stops, so the peer's write waits and bytes wait in the kernel; a
 * read takes the 64 KiB at once, and the watch reads ahead again.  Every
 * byte comes, in order, and the watch fulfils once the peer's end is
 * seen. */
static void test_watch_bound_stops_reading(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  enum { BIG = 16 << 20, KEPT = 64 * 1024 };
  char *big = filled(BIG, 7);
  uvp_promise_t *w, *wr, *sd;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  assert_int_equal(uvp_tcp_write(pr.server, big, BIG, &wr), 0);
  assert_int_equal(uvp_tcp_shutdown(pr.server, &sd), 0);
  poll_a_while(f);
  assert_int_equal(uvp_promise_state(w), UVP_PENDING);
  assert_int_equal(uvp_promise_state(wr), UVP_PENDING);
  uv_os_fd_t fd;
  assert_int_equal(uv_fileno((uv_handle_t *)uvp_tcp_handle(c), &fd), 0);
  int waiting = 0;
  assert_int_equal(ioctl(fd, FIONREAD, &waiting), 0);
  assert_true(waiting > 0);
  size_t got = 0;
  for (int round = 0; round < 2; round++) {
    uvp_promise_t *r;
    assert_int_equal(uvp_tcp_read(c, &r), 0);
    assert_int_equal(uvp_promise_state(r), UVP_FULFILLED); /* read ahead */
    const uvp_buf_t *b = uvp_promise_value(r);
    assert_int_equal(b->len, KEPT);
    assert_memory_equal(b->base, big + got, b->len);
    got += b->len;
    uvp_promise_release(r);
    poll_a_while(f); /* reading ahead again, to the bound */
    assert_int_equal(uvp_promise_state(w), UVP_PENDING);
  }
  for (;;) {
    uvp_promise_t *r;
    assert_int_equal(uvp_tcp_read(c, &r), 0);
    run_until_settled(f, r);
    if (uvp_promise_state(r) == UVP_REJECTED) {
      assert_int_equal(uvp_promise_reason(r, NULL), UV_EOF);
      uvp_promise_release(r);
      break;
    }
    const uvp_buf_t *b = uvp_promise_value(r);
    assert_true(got + b->len <= BIG);
    assert_memory_equal(b->base, big + got, b->len);
    got += b->len;
    uvp_promise_release(r);
  }
  assert_int_equal(got, BIG);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(wr), UVP_FULFILLED);
  uvp_promise_t *ps[] = {w, wr, sd};
  for (size_t i = 0; i < 3; i++)
    uvp_promise_release(ps[i]);
  uvp_tcp_close(c);
  uvp_tcp_close(pr.server);
  run_loop(f);
  free(big);
}

/* Cancelling one of two watches stops that one: the connection stays
 * open, the bytes read ahead stay for the next read, and the other watch
 * still settles. */
static void test_watch_cancel_keeps_connection(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  count_unhandled_on(f->ctx);
  /* The only watch cancelled: nothing is read ahead any more. */
  uvp_promise_t *w0, *r, *w1, *w2;
  assert_int_equal(uvp_tcp_closed(c, &w0), 0);
  assert_int_equal(uvp_promise_cancel(w0), 0);
  assert_int_equal(uvp_promise_reason(w0, NULL), UV_ECANCELED);
  uvp_promise_release(w0);
  send_now(f, pr.server, "zero");
  poll_a_while(f);
  assert_int_equal(uvp_tcp_read(c, &r), 0);
  assert_int_equal(uvp_promise_state(r), UVP_PENDING);
  uvp_promise_release(r);
  run_loop(f);
  assert_int_equal(uvp_tcp_closed(c, &w1), 0);
  assert_int_equal(uvp_tcp_closed(c, &w2), 0);
  send_now(f, pr.server, "one");
  poll_a_while(f);
  assert_int_equal(uvp_promise_cancel(w1), 0);
  assert_int_equal(uvp_promise_reason(w1, NULL), UV_ECANCELED);
  uvp_promise_release(w1);
  assert_non_null(uvp_tcp_handle(c));
  expect_read_at_once(c, "one");
  send_now(f, pr.server, "two");
  expect_read(f, c, "two", 0);
  assert_int_equal(uvp_promise_state(w2), UVP_PENDING);
  assert_int_equal(uvp_tcp_close(pr.server), 0);
  poll_until_settled(&f->loop, w2);
  assert_int_equal(uvp_promise_state(w2), UVP_FULFILLED);
  uvp_promise_release(w2);
  assert_int_equal(g_unhandled, 0); /* the cancelled watches are quiet */
  expect_read(f, c, NULL, UV_EOF);  /* a rejection nobody handled */
  assert_int_equal(g_unhandled, 1);
  uvp_tcp_close(c);
}

/* A watch while a read is pending: the read gets the bytes, the watch
 * reads on after it; the end that a pending read meets settles the watch
 * too, after the read. */
static void test_watch_with_read_pending(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL);
  uvp_promise_t *r, *w;
  assert_int_equal(uvp_tcp_read(c, &r), 0);
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  send_now(f, pr.server, "x");
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  assert_memory_equal(((const uvp_buf_t *)uvp_promise_value(r))->base, "x", 1);
  uvp_promise_release(r);
  send_now(f, pr.server, "y");
  poll_a_while(f); /* no read pending: read ahead for the watch */
  expect_read_at_once(c, "y");
  assert_int_equal(uvp_tcp_read(c, &r), 0);
  assert_int_equal(uvp_tcp_close(pr.server), 0);
  run_until_settled(f, r);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EOF);
  assert_int_equal(uvp_promise_state(w), UVP_FULFILLED);
  uvp_promise_release(r);
  uvp_promise_release(w);
  uvp_tcp_close(c);
}

/* Closing the connection, or tearing the context down, with a watch
 * pending and bytes read ahead: the watch rejects (UV_ECANCELED, not
 * reported; UVP_ECLOSED), the bytes go, nothing is left on the loop. */
static void watch_ended(fixture_t *f, bool ctx_close) {
  pair_t pr;
  uvp_tcp_t *c = pair_open(f, &pr);
  count_unhandled_on(f->ctx);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_closed(c, &w), 0);
  send_now(f, pr.server, "unread");
  poll_a_while(f);
  if (ctx_close) {
    assert_int_equal(uvp_ctx_close(f->ctx), 0);
    f->ctx = NULL;
    assert_int_equal(uvp_promise_reason(w, NULL), UVP_ECLOSED);
    assert_non_null(uvp_tcp_handle(c)); /* still the program's to close */
  }
  assert_int_equal(uvp_tcp_close(c), 0);
  if (!ctx_close)
    assert_int_equal(uvp_promise_reason(w, NULL), UV_ECANCELED);
  uvp_promise_release(w);
  uvp_tcp_close(pr.server);
  run_loop(f);
  assert_int_equal(g_unhandled, 0);
}

static void test_watch_pending_at_close(void **state) {
  watch_ended(*state, false);
}

static void test_watch_pending_at_ctx_close(void **state) {
  watch_ended(*state, true);
}

/* A group's member watching its connection: cancelling the group cancels
 * the watch, not the connection, and the join waits for the connection's
 * close as it does without a watch. */
static int start_watch(void *arg, uvp_promise_t **out) {
  handover_t *h = arg;
  int rc = uvp_tcp_attach(h->t);
  return rc != 0 ? rc : uvp_tcp_closed(h->t, out);
}

static void test_watch_in_group(void **state) {
  fixture_t *f = *state;
  pair_t pr;
  handover_t h = {.f = f, .pr = &pr};
  h.t = pair_open(f, &pr);
  uvp_group_t *g;
  uvp_promise_t *join = group_of(f, start_watch, &h, &g);
  spin(f, 3);
  assert_int_equal(uvp_group_size(g), 1);
  assert_int_equal(uvp_group_cancel(g), 0);
  spin(f, 3);
  assert_int_equal(uvp_group_size(g), 0);
  assert_non_null(uvp_tcp_handle(h.t));
  send_now(f, pr.server, "still open");
  expect_read(f, h.t, "still open", 0);
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  assert_int_equal(uvp_tcp_close(h.t), 0);
  spin(f, 3);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
  uvp_tcp_close(pr.server);
}

/* The watch and the reads after it, with the k-th allocation failing for
 * every k (alloc-helpers.h): each call either works or says UV_ENOMEM, a
 * watch that found no memory to read into rejects with UV_ENOMEM, and in
 * every run the reads still get every byte the peer sent, in order.  uvp
 * accepts from a plain libuv listener; the peer is a plain libuv client
 * that writes once the watch is on, then closes. */
typedef struct wa_s {
  uv_tcp_t listener, client;
  uv_connect_t connect;
  uvp_ctx_t *ctx;
  uvp_tcp_t *t;
  int accept_rc; /* 1 until the connection came */
  bool connected;
} wa_t;

static long wa_watch_enomem; /* runs whose watch found no memory to read */

static const char WA_SENT[] = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";

static void wa_accept(uv_stream_t *l, int status) {
  wa_t *a = l->data;
  assert_int_equal(status, 0);
  a->accept_rc = uvp_tcp_accept(a->ctx, l, &a->t);
}

static void wa_connected(uv_connect_t *c, int status) {
  wa_t *a = c->data;
  assert_int_equal(status, 0);
  a->connected = true;
}

static void wa_watch_and_read(run_t *r, wa_t *a) {
  uvp_promise_t *w = NULL;
  OK_OR_ENOMEM(uvp_tcp_closed(a->t, &w));
  uv_buf_t b = uv_buf_init((char *)WA_SENT, sizeof(WA_SENT) - 1);
  assert_int_equal(uv_try_write((uv_stream_t *)&a->client, &b, 1), (int)b.len);
  uv_close((uv_handle_t *)&a->client, NULL); /* the peer's end: FIN */
  if (w != NULL) {
    poll_until_settled(&r->loop, w);
    expect_ok_or_enomem(w, 0);
    if (uvp_promise_state(w) == UVP_REJECTED)
      wa_watch_enomem++; /* what was sent waits in the kernel */
  }
  char got[sizeof(WA_SENT)];
  size_t n = 0;
  for (int i = 0; i < 100; i++) {
    uvp_promise_t *rd;
    int rc = uvp_tcp_read(a->t, &rd);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      continue; /* the failure is spent: the next call works */
    loop_run_until(&r->loop, promise_is_settled, rd);
    int code = uvp_promise_state(rd) == UVP_REJECTED
                   ? uvp_promise_reason(rd, NULL)
                   : 0;
    if (code == 0) {
      const uvp_buf_t *v = uvp_promise_value(rd);
      assert_true(n + v->len < sizeof(got));
      memcpy(got + n, v->base, v->len);
      n += v->len;
    }
    uvp_promise_release(rd);
    if (code == UV_EOF)
      break;
    if (code != 0)
      fail_msg("read rejected with %s", uvp_err_name(code));
  }
  assert_int_equal(n, sizeof(WA_SENT) - 1);
  assert_memory_equal(got, WA_SENT, n);
  uvp_promise_release(w);
}

static void scenario_watch(run_t *r) {
  wa_t a;
  memset(&a, 0, sizeof(a));
  a.ctx = r->ctx;
  a.accept_rc = 1;
  struct sockaddr_storage ss;
  listen_loopback(&r->loop, &a.listener, 8, wa_accept, &a, &ss);
  uv_tcp_init(&r->loop, &a.client);
  a.connect.data = &a;
  assert_int_equal(uv_tcp_connect(&a.connect, &a.client, (struct sockaddr *)&ss,
                                  wa_connected),
                   0);
  for (int i = 0; i < 100000 && (a.accept_rc == 1 || !a.connected); i++)
    uv_run(&r->loop, UV_RUN_ONCE);
  assert_true(a.connected);
  OK_OR_ENOMEM(a.accept_rc);
  if (a.accept_rc == 0) {
    wa_watch_and_read(r, &a);
    assert_int_equal(uvp_tcp_close(a.t), 0);
  } else {
    uv_close((uv_handle_t *)&a.client, NULL);
  }
  uv_close((uv_handle_t *)&a.listener, NULL);
  uv_run(&r->loop, UV_RUN_DEFAULT); /* both are on this stack */
}

static void test_watch_refused_for_memory(void **state) {
  (void)state;
  wa_watch_enomem = 0;
  long sites = exhaust(scenario_watch);
  printf("watch: %ld allocations failed one by one\n", sites);
  assert_true(sites > 4);
  assert_true(wa_watch_enomem > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_request_reply),
      FIXTURE_TEST(test_read_all_max_bytes),
      FIXTURE_TEST(test_connect_host_localhost),
      FIXTURE_TEST(test_connect_host_unknown_name),
      FIXTURE_TEST(test_connect_host_tries_each_address),
      FIXTURE_TEST(test_connection_refused),
      FIXTURE_TEST(test_peer_resets_mid_read),
      FIXTURE_TEST(test_silent_server_times_out),
      FIXTURE_TEST(test_cancel_before_connect_completes),
      FIXTURE_TEST(test_cancel_during_read_and_close_with_pending),
      FIXTURE_TEST(test_read_chunk_then_eof),
      FIXTURE_TEST(test_teardown_with_connection_in_flight),
      FIXTURE_TEST(test_thousand_concurrent_connections),
      FIXTURE_TEST(test_tcp_bad_input),
      FIXTURE_TEST(test_tcp_write_beyond_a_buffer),
      FIXTURE_TEST(test_accept_null_leaves_connection_pending),
      FIXTURE_TEST(test_tcp_refused),
      FIXTURE_TEST(test_tcp_read_refused_off_thread),
      FIXTURE_TEST(test_large_writes_stay_in_order),
      FIXTURE_TEST(test_small_write_settles_at_once),
      FIXTURE_TEST(test_write_full_small_taken_at_once),
      FIXTURE_TEST(test_write_full_large_queued),
      FIXTURE_TEST(test_write_full_pending_at_close),
      FIXTURE_TEST(test_write_full_pending_cancelled),
      FIXTURE_TEST(test_write_full_pending_at_ctx_close),
      FIXTURE_TEST(test_write_full_refused),
      cmocka_unit_test(test_write_full_refused_for_memory),
      FIXTURE_TEST(test_bytes_between_reads_wait_for_the_next),
      FIXTURE_TEST(test_eof_between_reads),
      FIXTURE_TEST(test_reset_between_reads),
      FIXTURE_TEST(test_handler_hands_read_on),
      FIXTURE_TEST(test_handler_keeps_read),
      FIXTURE_TEST(test_cancel_after_hand_off_closes),
      FIXTURE_TEST(test_connection_changes_groups),
      QUIET_TEST(test_detached_connection_outlives_deadline),
      FIXTURE_TEST(test_watch_sees_close_and_keeps_bytes),
      FIXTURE_TEST(test_watch_then_read_all_goes_on),
      FIXTURE_TEST(test_watch_then_read_all),
      FIXTURE_TEST(test_watch_sees_reset),
      QUIET_TEST(test_race_lost_to_closed_peer),
      QUIET_TEST(test_race_lost_to_reset_peer),
      FIXTURE_TEST(test_race_note_only_from_the_watch),
      FIXTURE_TEST(test_watch_bound_stops_reading),
      FIXTURE_TEST(test_watch_cancel_keeps_connection),
      FIXTURE_TEST(test_watch_with_read_pending),
      FIXTURE_TEST(test_watch_pending_at_close),
      FIXTURE_TEST(test_watch_pending_at_ctx_close),
      FIXTURE_TEST(test_watch_in_group),
      cmocka_unit_test(test_watch_refused_for_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* httpc's connection pool, in-process, against real servers on
 * 127.0.0.1: the demo server (which counts the connections it accepted:
 * /stats) and a TLS nginx.  Connections are reused; the per-host and
 * overall caps close the least recently used; an idle connection expires
 * after idle_timeout_ms, and one the server closes while it is idle (EOF,
 * or a TLS close_notify) is dropped then, not found out at reuse.  The
 * idle connections keep uv_run going only until they end.  In a task
 * group, a connection is the group's only while a request uses it. */
#include "e2e-nginx.h"

#include "httpc.h"

/* GETs of `urls` at once; the loop runs until all of them settled (not
 * longer: idle connections would keep it going).  Each must answer 200. */
static void get_all(fixture_t *f, httpc_opts_t *o, char **urls, int n) {
  uvp_promise_t *p[16];
  assert_true(n <= 16);
  for (int i = 0; i < n; i++)
    assert_int_equal(httpc_get(f->ctx, urls[i], o, &p[i]), 0);
  for (int i = 0; i < n; i++) {
    while (uvp_promise_state(p[i]) == UVP_PENDING)
      uv_run(&f->loop, UV_RUN_ONCE);
    void *why = NULL;
    if (uvp_promise_state(p[i]) != UVP_FULFILLED) {
      int code = uvp_promise_reason(p[i], &why);
      fail_msg("%s: %s %s", urls[i], httpc_err_name(code),
               why != NULL ? (char *)why : "");
    }
    const httpc_response_t *res = uvp_promise_value(p[i]);
    assert_int_equal(res->status, 200);
    uvp_promise_release(p[i]);
  }
}

/* The demo server's count of connections accepted so far (its /stats,
 * asked on a connection of its own). */
static int server_connections(fixture_t *f, const char *base) {
  char u[96];
  snprintf(u, sizeof(u), "%s/stats", base);
  httpc_opts_t o = {.keep = 256, .timeout_ms = 5000};
  uvp_promise_t *p;
  assert_int_equal(httpc_get(f->ctx, u, &o, &p), 0);
  while (uvp_promise_state(p) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  const httpc_response_t *res = uvp_promise_value(p);
  int conns = -1;
  assert_int_equal(sscanf(res->body, "{\"connections\":%d", &conns), 1);
  uvp_promise_release(p);
  return conns;
}

/* Step the loop until the pool has no idle connection (5 s at most: a
 * server still listens, so the loop would not end by itself); returns
 * how long it took, in ms, with the stats in *st. */
static void tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until the pool holds no idle connection, 5 s at most: a
 * ticking timer bounds each turn, so that a peer that never closes (a
 * server on the port that is not the test's) fails the test instead of
 * holding a turn, and the test, for good. */
static double wait_no_idle(fixture_t *f, httpc_pool_t *pool,
                           httpc_pool_stats_t *st) {
  uv_timer_t t;
  uv_timer_init(&f->loop, &t);
  uv_timer_start(&t, tick, 50, 50);
  uint64_t t0 = uv_hrtime();
  httpc_pool_stats(pool, st);
  while (st->idle > 0 && uv_hrtime() - t0 < 5000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    httpc_pool_stats(pool, st);
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return (double)(uv_hrtime() - t0) / 1e6;
}

static void close_all(fixture_t *f, httpc_pool_t *pool, demo_server_t **servers,
                      int n) {
  httpc_pool_close(pool);
  for (int i = 0; i < n; i++)
    demo_server_stop(servers[i], NULL, NULL);
  run_loop(f);
}

/* Sequential requests share one connection; concurrent ones each open
 * one, and what comes back is kept up to the per-host cap, then up to
 * the overall cap across hosts, the least recently used going first. */
static void test_reuse_and_caps(void **state) {
  fixture_t *f = *state;
  demo_server_t *s[2];
  char base[2][64], fast[2][128];
  for (int i = 0; i < 2; i++) {
    assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &s[i]), 0);
    int port = demo_server_port(s[i]);
    snprintf(base[i], sizeof(base[i]), "http://127.0.0.1:%d", port);
    /* Not "%s/fast" of base[i]: gcc 12 on i386 takes base[i] for up to
     * 128 bytes, and -Wformat-truncation fails the build. */
    snprintf(fast[i], sizeof(fast[i]), "http://127.0.0.1:%d/fast", port);
  }
  httpc_pool_opts_t po = {.max_idle_per_host = 2, .max_idle = 3};
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new_with(f->ctx, &po, &pool), 0);
  httpc_opts_t o = {.timeout_ms = 5000, .pool = pool};
  httpc_pool_stats_t st;

  char *one[] = {fast[0]};
  for (int i = 0; i < 3; i++)
    get_all(f, &o, one, 1);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.reused, 2);
  assert_int_equal(st.idle, 1);
  /* The server agrees: one connection for the three, one for /stats. */
  assert_int_equal(server_connections(f, base[0]), 2);

  char *four_a[] = {fast[0], fast[0], fast[0], fast[0]};
  get_all(f, &o, four_a, 4);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 4); /* the idle one and three new */
  assert_int_equal(st.idle, 2);   /* per-host cap */
  assert_int_equal(st.evicted, 2);

  char *four_b[] = {fast[1], fast[1], fast[1], fast[1]};
  get_all(f, &o, four_b, 4);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 8);
  /* Overall cap 3: B's first two push out A's older one; B's last two
   * replace B's older ones (per-host cap). */
  assert_int_equal(st.idle, 3);
  assert_int_equal(st.evicted, 5);
  assert_int_equal(st.expired, 0);
  /* A kept its most recently used connection: reused, nothing opened. */
  get_all(f, &o, one, 1);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 8);
  close_all(f, pool, s, 2);
}

/* An idle connection is closed idle_timeout_ms after its last use (the
 * pool's timer, not the server: peer_closed stays 0). */
static void test_idle_expiry(void **state) {
  fixture_t *f = *state;
  demo_server_t *s;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &s), 0);
  char base[64], fast[96];
  snprintf(base, sizeof(base), "http://127.0.0.1:%d", demo_server_port(s));
  snprintf(fast, sizeof(fast), "%s/fast", base);
  httpc_pool_opts_t po = {.idle_timeout_ms = 200};
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new_with(f->ctx, &po, &pool), 0);
  httpc_opts_t o = {.timeout_ms = 5000, .pool = pool};
  char *one[] = {fast};
  get_all(f, &o, one, 1);
  httpc_pool_stats_t st;
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.idle, 1);
  /* Nothing happens on the connection: the pool's timer ends it. */
  double ms = wait_no_idle(f, pool, &st);
  assert_int_equal(st.idle, 0);
  assert_int_equal(st.expired, 1);
  assert_int_equal(st.peer_closed, 0);
  assert_true(ms >= 150 && ms < 3000);
  /* Its pending read was the pool's last hold on the loop: with the server
   * stopped, the loop ends. */
  demo_server_stop(s, NULL, NULL);
  run_loop(f);
  httpc_pool_close(pool);
  run_loop(f);
}

/* The demo's /close-after answers, then closes the connection without
 * saying so (a server whose keep-alive timeout ran out): the pool sees
 * the EOF while the connection is idle and drops it; the next request
 * opens a new one without a failed attempt first. */
static void test_server_closes_idle(void **state) {
  fixture_t *f = *state;
  demo_server_t *s;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &s), 0);
  char base[64], close_after[96], fast[96];
  snprintf(base, sizeof(base), "http://127.0.0.1:%d", demo_server_port(s));
  snprintf(close_after, sizeof(close_after), "%s/close-after", base);
  snprintf(fast, sizeof(fast), "%s/fast", base);
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new(f->ctx, 4, &pool), 0);
  httpc_opts_t o = {.timeout_ms = 5000, .pool = pool};
  char *first[] = {close_after};
  get_all(f, &o, first, 1);
  httpc_pool_stats_t st;
  wait_no_idle(f, pool, &st);
  assert_int_equal(st.idle, 0);
  assert_int_equal(st.peer_closed, 1);
  char *next[] = {fast};
  get_all(f, &o, next, 1);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 2);
  assert_int_equal(st.reused, 0);
  assert_int_equal(st.retried, 0);
  close_all(f, pool, &s, 1);
}

/* Step the loop until p settles (5 s at most: the server keeps the loop
 * going, and an idle connection's pending read would block a UV_RUN_ONCE
 * for as long as the pool keeps it). */
static void run_until_settled_5s(fixture_t *f, uvp_promise_t *p) {
  uint64_t t0 = uv_hrtime();
  while (uvp_promise_state(p) == UVP_PENDING &&
         uv_hrtime() - t0 < 5000000000ull)
    if (uv_run(&f->loop, UV_RUN_NOWAIT) != 0 &&
        uvp_promise_state(p) == UVP_PENDING)
      uv_sleep(1);
  assert_int_not_equal(uvp_promise_state(p), UVP_PENDING);
}

/* A body with no length ends at the server's close (/until-close): the
 * response is complete, not a protocol error, and the connection is not
 * pooled. */
static void test_body_until_close(void **state) {
  fixture_t *f = *state;
  demo_server_t *s;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &s), 0);
  char u[96];
  snprintf(u, sizeof(u), "http://127.0.0.1:%d/until-close",
           demo_server_port(s));
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new(f->ctx, 4, &pool), 0);
  httpc_opts_t o = {.keep = 256, .timeout_ms = 5000, .pool = pool};
  uvp_promise_t *p;
  assert_int_equal(httpc_get(f->ctx, u, &o, &p), 0);
  run_until_settled_5s(f, p);
  void *why = NULL;
  if (uvp_promise_state(p) != UVP_FULFILLED)
    fail_msg("%s", httpc_err_name(uvp_promise_reason(p, &why)));
  const httpc_response_t *res = uvp_promise_value(p);
  assert_int_equal(res->status, 200);
  assert_int_equal(res->bytes, strlen(DEMO_UNTIL_CLOSE_BODY));
  assert_string_equal(res->body, DEMO_UNTIL_CLOSE_BODY);
  uvp_promise_release(p);
  httpc_pool_stats_t st;
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.idle, 0);
  close_all(f, pool, &s, 1);
}

/* Over TLS: requests reuse the session's connection; nginx closing it at
 * its keepalive_timeout (close_notify, then FIN) is seen while idle, and
 * the loop, kept going by the idle read, ends then. */
static void test_tls_idle_close(void **state) {
  fixture_t *f = *state;
  if (access(NGINX, X_OK) != 0 || access("/usr/bin/openssl", X_OK) != 0)
    SKIP_BECAUSE("%s or /usr/bin/openssl not installed", NGINX);
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  nginx_t n;
  nginx_init(&n);
  nginx_make_certs(&n);
  nginx_write_file(&n, "www/hello.txt", 0, "hello\n");
  int port = free_port();
  char servers[512];
  snprintf(servers, sizeof(servers),
           "  server {\n"
           "    listen 127.0.0.1:%d ssl;\n"
           "    ssl_certificate %%1$s/good.pem;\n"
           "    ssl_certificate_key %%1$s/good.key;\n"
           "    keepalive_timeout 300ms;\n"
           "    root %%1$s/www;\n"
           "  }\n",
           port);
  int ports[] = {port, 0};
  nginx_start(f, &n, servers, ports);
  char ca[128], hello[96];
  snprintf(ca, sizeof(ca), "%s/ca.pem", n.dir);
  snprintf(hello, sizeof(hello), "https://127.0.0.1:%d/hello.txt", port);
  httpc_tls_opts_t to = {.cafile = ca};
  httpc_tls_t *tls;
  assert_int_equal(httpc_tls_new(&to, &tls, NULL), 0);
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new(f->ctx, 4, &pool), 0);
  httpc_opts_t o = {.timeout_ms = 5000, .pool = pool, .tls = tls};
  char *one[] = {hello};
  get_all(f, &o, one, 1);
  get_all(f, &o, one, 1);
  httpc_pool_stats_t st;
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.reused, 1);
  assert_int_equal(st.idle, 1);
  double ms = wait_no_idle(f, pool, &st);
  assert_int_equal(st.idle, 0);
  assert_int_equal(st.peer_closed, 1);
  assert_int_equal(st.expired, 0);
  assert_true(ms >= 200 && ms < 4000);
  int conns = 0;
  assert_int_equal(nginx_access_log(&n, "/hello.txt", &conns), 2);
  assert_int_equal(conns, 1);
  httpc_pool_close(pool);
  httpc_tls_free(tls);
  nginx_stop(f, &n);
  nginx_cleanup(&n);
}

/* ---- task groups -------------------------------------------------------- */

/* A GET made in a task group's work (a member's start callback). */
typedef struct member_get_s {
  uvp_ctx_t *ctx;
  const char *url;
  httpc_opts_t *o;
  uvp_promise_t *p; /* its outcome, kept */
} member_get_t;

static int start_get(void *arg, uvp_promise_t **out) {
  member_get_t *m = arg;
  int rc = httpc_get(m->ctx, m->url, m->o, out);
  if (rc == 0)
    m->p = uvp_promise_retain(*out);
  return rc;
}

/* A closed group of one GET per member; returns its join. */
static uvp_promise_t *group_get(fixture_t *f, member_get_t *m, int n,
                                uvp_group_t **g) {
  uvp_promise_t *join;
  assert_int_equal(uvp_group_new(f->ctx, NULL, g), 0);
  for (int i = 0; i < n; i++)
    assert_int_equal(uvp_group_start(*g, start_get, &m[i], NULL), 0);
  assert_int_equal(uvp_group_close(*g), 0);
  assert_int_equal(uvp_group_join(*g, &join), 0);
  return join;
}

static void count_closing_tcp(uv_handle_t *h, void *arg) {
  if (h->type == UV_TCP && uv_is_closing(h))
    ++*(int *)arg;
}

/* When a group's join settles, nothing its members started is still being
 * closed: count the TCP handles the loop is closing then. */
static uvp_ret_t on_join_count_closing(void *arg, const uvp_outcome_t *in) {
  fixture_t *f = *(fixture_t **)arg;
  int *closing = (int *)((fixture_t **)arg + 1);
  (void)in;
  *closing = 0;
  uv_walk(&f->loop, count_closing_tcp, closing);
  return uvp_ret_value(NULL, NULL);
}

/* Requests in task groups: a connection is the group's while a request
 * uses it and the pool's after.  A group whose request ended joins while
 * the connection sits idle in the pool; a group whose request took that
 * connection from the pool, cancelled, joins only once it is closed.  (No
 * timeout: the request's timer would hold the group too.) */
static void test_groups(void **state) {
  fixture_t *f = *state;
  demo_server_t *s;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &s), 0);
  char fast[96], hang[96];
  snprintf(fast, sizeof(fast), "http://127.0.0.1:%d/fast", demo_server_port(s));
  snprintf(hang, sizeof(hang), "http://127.0.0.1:%d/hang", demo_server_port(s));
  httpc_pool_t *pool;
  assert_int_equal(httpc_pool_new(f->ctx, 4, &pool), 0);
  httpc_opts_t o = {.pool = pool};
  httpc_pool_stats_t st;

  member_get_t a = {f->ctx, fast, &o, NULL};
  uvp_group_t *g1, *g2;
  uvp_promise_t *j1 = group_get(f, &a, 1, &g1);
  run_until_settled_5s(f, j1);
  assert_int_equal(uvp_promise_state(j1), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(a.p), UVP_FULFILLED);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.idle, 1);

  member_get_t b = {f->ctx, hang, &o, NULL};
  uvp_promise_t *j2 = group_get(f, &b, 1, &g2);
  for (int i = 0; i < 20; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT); /* /hang sent and waiting */
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.reused, 1);
  assert_int_equal(st.idle, 0);
  assert_int_equal(uvp_promise_state(b.p), UVP_PENDING);
  assert_int_equal(uvp_promise_state(j2), UVP_PENDING);
  struct {
    fixture_t *f;
    int closing;
  } seen = {f, -1};
  assert_int_equal(
      uvp_promise_on(j2, UVP_ON_BOTH, on_join_count_closing, &seen, NULL), 0);
  assert_int_equal(uvp_group_cancel(g2), 0);
  assert_int_equal(uvp_promise_reason(b.p, NULL), UV_ECANCELED);
  /* The connection is g2's now, and closing: the join waits until libuv
   * has closed it. */
  run_until_settled_5s(f, j2);
  assert_int_equal(uvp_promise_state(j2), UVP_FULFILLED);
  while (seen.closing < 0)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(seen.closing, 0);
  httpc_pool_stats(pool, &st);
  assert_int_equal(st.opened, 1);
  assert_int_equal(st.idle, 0);

  uvp_promise_t *all[] = {j1, j2, a.p, b.p};
  for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++)
    uvp_promise_release(all[i]);
  uvp_group_release(g1);
  uvp_group_release(g2);
  close_all(f, pool, &s, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_reuse_and_caps),
      FIXTURE_TEST(test_idle_expiry),
      FIXTURE_TEST(test_server_closes_idle),
      FIXTURE_TEST(test_body_until_close),
      FIXTURE_TEST(test_tls_idle_close),
      FIXTURE_TEST(test_groups),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

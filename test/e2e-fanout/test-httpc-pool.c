/* httpc's connection pool, in-process, against real servers on
 * 127.0.0.1: the demo server (which counts the connections it accepted:
 * /stats) and a TLS nginx.  Connections are reused; the per-host and
 * overall caps close the least recently used; an idle connection expires
 * after idle_timeout_ms, and one the server closes while it is idle (EOF,
 * or a TLS close_notify) is dropped then, not found out at reuse.  The
 * idle connections keep uv_run going only until they end. */
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
static double wait_no_idle(fixture_t *f, httpc_pool_t *pool,
                           httpc_pool_stats_t *st) {
  uint64_t t0 = uv_hrtime();
  httpc_pool_stats(pool, st);
  while (st->idle > 0 && uv_hrtime() - t0 < 5000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    httpc_pool_stats(pool, st);
  }
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
    snprintf(base[i], sizeof(base[i]), "http://127.0.0.1:%d",
             demo_server_port(s[i]));
    snprintf(fast[i], sizeof(fast[i]), "%s/fast", base[i]);
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

/* Over TLS: requests reuse the session's connection; nginx closing it at
 * its keepalive_timeout (close_notify, then FIN) is seen while idle, and
 * the loop, kept going by the idle read, ends then. */
static void test_tls_idle_close(void **state) {
  fixture_t *f = *state;
  if (access(NGINX, X_OK) != 0 || access("/usr/bin/openssl", X_OK) != 0)
    skip();
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

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_reuse_and_caps),
      FIXTURE_TEST(test_idle_expiry),
      FIXTURE_TEST(test_server_closes_idle),
      FIXTURE_TEST(test_tls_idle_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

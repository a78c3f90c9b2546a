/* The libcurl binding against real servers the test starts on 127.0.0.1:
 * nginx (Debian's 1.22) over plain HTTP/1.1 with gzip and Basic
 * authentication, over TLS with HTTP/1.1, and over TLS with HTTP/2
 * (`listen ... ssl http2`, certificates made by gen-certs.sh), and
 * tinyproxy as a forward proxy (plain requests and CONNECT tunnels).
 * What each transfer did is checked on the servers' side too (nginx's
 * access log: one line per request, naming its connection and what the
 * proxy added).  Exits 77 (skipped) when nginx, tinyproxy or the openssl
 * tool is absent. */
#include "curl-env.h"

#include "response.h"

/* Options of a test's own, set on every fetch. */
typedef struct how_s {
  const char *ca;
  long version;
  int pipewait;
  const char *proxy;
  const char *userpwd;
  int compressed;
} how_t;

static int setup(void *arg, CURL *easy) {
  const how_t *h = arg;
  if (h->ca != NULL)
    curl_easy_setopt(easy, CURLOPT_CAINFO, h->ca);
  if (h->version != 0)
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, h->version);
  if (h->pipewait)
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
  if (h->proxy != NULL)
    curl_easy_setopt(easy, CURLOPT_PROXY, h->proxy);
  if (h->userpwd != NULL)
    curl_easy_setopt(easy, CURLOPT_USERPWD, h->userpwd);
  if (h->compressed)
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
  return 0;
}

/* `n` fetches of url at once; every promise in out[]. */
static void fetch_all(fixture_t *f, uvp_curl_t *c, const char *u, how_t *h,
                      const uvp_curl_fetch_opts_t *base, uvp_promise_t **out,
                      int n) {
  uvp_curl_fetch_opts_t o = {.timeout_ms = 20000};
  if (base != NULL)
    o = *base;
  o.setup = setup;
  o.setup_arg = h;
  for (int i = 0; i < n; i++) {
    assert_int_equal(uvp_curl_fetch(c, u, &o, &out[i]), 0);
    assert_int_equal(uvp_promise_mark_handled(out[i]), 0);
  }
  for (int i = 0; i < n; i++)
    run_until_settled(f, out[i]);
}

static void release_all(uvp_promise_t **p, int n) {
  for (int i = 0; i < n; i++)
    uvp_promise_release(p[i]);
}

static void close_curl(fixture_t *f, uvp_curl_t *c) {
  assert_int_equal(uvp_curl_close(c), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* HTTP/1.1, plain and over TLS: 30 requests, at most 10 at once per
 * host, on connections kept alive. */
static void test_http1(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  curl_multi_setopt(uvp_curl_multi(c), CURLMOPT_MAX_HOST_CONNECTIONS, 10L);
  char *ca = cafile();
  how_t h = {.ca = ca, .version = CURL_HTTP_VERSION_1_1};
  char *plain = url("http", e.plain, "/hello.txt");
  char *tls = url("https", e.tls1, "/hello.txt");
  uvp_promise_t *p[30];
  for (int round = 0; round < 2; round++) {
    fetch_all(f, c, round ? tls : plain, &h, NULL, p, 30);
    for (int i = 0; i < 30; i++) {
      const uvp_curl_response_t *r = response_of(p[i]);
      assert_int_equal(r->status, 200);
      assert_string_equal(r->body.base, HELLO);
      long v = 0;
      curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &v);
      assert_int_equal(v, CURL_HTTP_VERSION_1_1);
    }
    release_all(p, 30);
  }
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  close_curl(f, c);
  env_stop(f, &e);
  int conns = 0;
  assert_int_equal(via_log(&e, e.plain, "/hello.txt", "HTTP/1.1", &conns), 30);
  assert_true(conns >= 1 && conns <= 10);
  int tconns = 0;
  assert_int_equal(via_log(&e, e.tls1, "/hello.txt", "HTTP/1.1", &tconns), 30);
  assert_true(tconns >= 1 && tconns <= 10);
  /* What libcurl opened is what nginx saw. */
  assert_int_equal(st.connects, (uint64_t)(conns + tconns));
  free(ca);
  free(plain);
  free(tls);
  nginx_cleanup(&e.n);
}

static bool got_bytes(void *arg) {
  curl_off_t got = 0;
  curl_easy_getinfo(arg, CURLINFO_SIZE_DOWNLOAD_T, &got);
  return got > 0;
}

static size_t count_body(char *ptr, size_t size, size_t n, void *arg) {
  (void)ptr;
  *(size_t *)arg += size * n;
  return size * n;
}

/* HTTP/2 over TLS: 60 requests multiplexed on one connection (PIPEWAIT:
 * they wait for it rather than open others); a stream cancelled in the
 * middle of its body is reset, and the connection goes on serving. */
static void test_http2_multiplexed(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  curl_multi_setopt(uvp_curl_multi(c), CURLMOPT_MAX_CONCURRENT_STREAMS, 100L);
  char *ca = cafile();
  how_t h = {.ca = ca, .version = CURL_HTTP_VERSION_2TLS, .pipewait = 1};
  char *hello = url("https", e.tls2, "/hello.txt");
  uvp_promise_t *p[60];
  fetch_all(f, c, hello, &h, NULL, p, 60);
  for (int i = 0; i < 60; i++) {
    const uvp_curl_response_t *r = response_of(p[i]);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body.base, HELLO);
    long v = 0;
    curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &v);
    assert_int_equal(v, CURL_HTTP_VERSION_2_0);
    /* HTTP/2 names its headers in lower case. */
    assert_string_equal(uvp_curl_response_header(r, "content-length"), "17");
  }
  release_all(p, 60);

  /* A slow body (64 KiB/s) on the same connection, cancelled once some
   * arrived, while three short ones run beside it. */
  char *slow = url("https", e.tls2, "/slow.bin");
  size_t got = 0;
  CURL *se = curl_easy_init();
  curl_easy_setopt(se, CURLOPT_URL, slow);
  curl_easy_setopt(se, CURLOPT_CAINFO, ca);
  curl_easy_setopt(se, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(se, CURLOPT_WRITEFUNCTION, count_body);
  curl_easy_setopt(se, CURLOPT_WRITEDATA, &got);
  uvp_promise_t *sp;
  assert_int_equal(uvp_curl_perform(c, se, &sp), 0);
  run_until_true(f, got_bytes, se);
  uvp_promise_t *q[3];
  fetch_all(f, c, hello, &h, NULL, q, 3);
  assert_int_equal(uvp_promise_state(sp), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(sp), 0);
  assert_true(got > 0 && got < 4 * 1024 * 1024);
  fetch_all(f, c, hello, &h, NULL, p, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(response_of(q[i])->status, 200);
    assert_int_equal(response_of(p[i])->status, 200);
  }
  release_all(q, 3);
  release_all(p, 3);
  uvp_promise_release(sp);
  curl_easy_cleanup(se);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 1);
  close_curl(f, c);
  env_stop(f, &e);
  int conns = 0;
  assert_int_equal(via_log(&e, e.tls2, "/hello.txt", "HTTP/2.0", &conns), 66);
  assert_int_equal(conns, 1);
  assert_int_equal(st.connects, 1);
  free(ca);
  free(hello);
  free(slow);
  nginx_cleanup(&e.n);
}

/* Through tinyproxy: a plain request (the proxy adds its Via), a CONNECT
 * tunnel to the HTTP/2 server (the headers are the server's, not the
 * proxy's "Connection established"), and a proxy nobody listens on. */
static void test_proxy(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  start_tinyproxy(f, &e);
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  char *ca = cafile(), *proxy = url("http", e.proxy, "");
  how_t h = {.ca = ca, .proxy = proxy};
  char *plain = url("http", e.plain, "/hello.txt");
  char *tls = url("https", e.tls2, "/hello.txt");
  uvp_promise_t *p[4];
  fetch_all(f, c, plain, &h, NULL, p, 2);
  fetch_all(f, c, tls, &h, NULL, p + 2, 2);
  for (int i = 0; i < 4; i++) {
    const uvp_curl_response_t *r = response_of(p[i]);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body.base, HELLO);
    assert_null(uvp_curl_response_header(r, "Proxy-agent"));
  }
  long v = 0;
  curl_easy_getinfo(response_of(p[2])->easy, CURLINFO_HTTP_VERSION, &v);
  assert_int_equal(v, CURL_HTTP_VERSION_2_0); /* end to end, in the tunnel */
  release_all(p, 4);

  char *nobody = url("http", free_port(), "");
  how_t gone = {.proxy = nobody};
  fetch_all(f, c, plain, &gone, NULL, p, 1);
  assert_int_equal(uvp_promise_reason(p[0], NULL), UV_ECONNREFUSED);
  release_all(p, 1);
  close_curl(f, c);
  env_stop(f, &e);
  /* nginx saw the plain ones come through the proxy, the tunnelled ones
   * without it (the proxy only relays their bytes). */
  assert_int_equal(via_log(&e, e.plain, "/hello.txt", "uvp-test-proxy", NULL),
                   2);
  assert_int_equal(via_log(&e, e.tls2, "/hello.txt", "[-]", NULL), 2);
  free(ca);
  free(proxy);
  free(nobody);
  free(plain);
  free(tls);
  nginx_cleanup(&e.n);
}

/* Basic authentication (CURLOPT_USERPWD): 401 without, or with a wrong
 * password; 200 with the right one. */
static void test_auth(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  char *u = url("http", e.plain, "/private/secret.txt");
  how_t none = {0}, wrong = {.userpwd = "user:nope"},
        right = {.userpwd = "user:letmein"};
  uvp_promise_t *p[3];
  fetch_all(f, c, u, &none, NULL, p, 1);
  fetch_all(f, c, u, &wrong, NULL, p + 1, 1);
  fetch_all(f, c, u, &right, NULL, p + 2, 1);
  assert_int_equal(response_of(p[0])->status, 401);
  assert_non_null(
      uvp_curl_response_header(response_of(p[0]), "WWW-Authenticate"));
  assert_int_equal(response_of(p[1])->status, 401);
  assert_int_equal(response_of(p[2])->status, 200);
  assert_string_equal(response_of(p[2])->body.base, "secret\n");
  release_all(p, 3);
  close_curl(f, c);
  env_stop(f, &e);
  free(u);
  nginx_cleanup(&e.n);
}

/* gzip from nginx: the body arrives decoded, and the cap counts the
 * decoded bytes (256 KiB of text compress to about 1 KiB). */
static void test_compressed(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  char *u = url("http", e.plain, "/big.txt");
  how_t gz = {.compressed = 1};
  uvp_promise_t *p[1];
  fetch_all(f, c, u, &gz, NULL, p, 1);
  const uvp_curl_response_t *r = response_of(p[0]);
  assert_string_equal(uvp_curl_response_header(r, "Content-Encoding"), "gzip");
  assert_int_equal(r->bytes, BIG_BYTES);
  curl_off_t wire = 0;
  curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &wire);
  assert_true(wire > 0 && wire < BIG_BYTES / 10);
  release_all(p, 1);
  uvp_curl_fetch_opts_t capped = {.max_body = BIG_BYTES / 2,
                                  .timeout_ms = 20000};
  fetch_all(f, c, u, &gz, &capped, p, 1);
  assert_int_equal(uvp_promise_reason(p[0], NULL), UV_EFBIG);
  release_all(p, 1);
  close_curl(f, c);
  env_stop(f, &e);
  free(u);
  nginx_cleanup(&e.n);
}

int main(void) {
  if (access(NGINX, X_OK) != 0 || access(TINYPROXY, X_OK) != 0 ||
      access("/usr/bin/openssl", X_OK) != 0) {
    fprintf(stderr, "nginx, tinyproxy or openssl not installed: skipped\n");
    return 77;
  }
  signal(SIGPIPE, SIG_IGN);
  nginx_init(&certs);
  nginx_make_certs(&certs);
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_http1),      FIXTURE_TEST(test_http2_multiplexed),
      FIXTURE_TEST(test_proxy),      FIXTURE_TEST(test_auth),
      FIXTURE_TEST(test_compressed),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nginx_cleanup(&certs);
  return rc;
}

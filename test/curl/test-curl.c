/* The libcurl binding against servers this test runs on its own loop
 * (servers.h: well-behaved and hostile HTTP/1.1, a TLS server that never
 * answers, a listener whose accept queue is full) and uvp-fanout's demo
 * server: values and rejections, the caps, a transfer cancelled in every
 * phase (resolving, connecting, TLS handshake, mid-body, and from inside
 * a libcurl callback), a descriptor reused while its old poll handle
 * closes, fibers, groups, combinators and timeouts, the dump, and
 * teardown with transfers in flight.  Every test ends with
 * uv_loop_close() == 0 (the fixture's teardown). */
#include <fcntl.h>

#include "servers.h"

#include "h2-flood.h"

#include "demo-server.h"
#include "response.h"

/* ---- scaffolding --------------------------------------------------------- */

static char *url_of(int port, const char *path) {
  char *u = NULL;
  assert_true(asprintf(&u, "http://127.0.0.1:%d%s", port, path) > 0);
  return u;
}

static uvp_curl_t *curl_new(fixture_t *f) {
  uvp_curl_t *c;
  assert_int_equal(uvp_curl_new(f->ctx, &c), 0);
  return c;
}

static const uvp_curl_error_t *error_of(uvp_promise_t *p) {
  void *payload = NULL;
  assert_true(uvp_promise_reason(p, &payload) < 0);
  assert_non_null(payload);
  return payload;
}

/* Fetch url with opts and run the loop until it settles; *ms, if not
 * NULL, gets how long that took.  The rejection, if any, is inspected by
 * the caller, not reported. */
static uvp_promise_t *fetch_wait(fixture_t *f, uvp_curl_t *c, const char *url,
                                 const uvp_curl_fetch_opts_t *o, double *ms) {
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_curl_fetch(c, url, o, &p), 0);
  assert_int_equal(uvp_promise_mark_handled(p), 0);
  run_until_settled(f, p);
  if (ms != NULL)
    *ms = (double)(uv_hrtime() - t0) / 1e6;
  return p;
}

static void expect_rejection(uvp_promise_t *p, int code, const char *words) {
  if (uvp_promise_state(p) != UVP_REJECTED)
    fail_msg("expected %s, got a value", uvp_curl_err_name(code));
  void *payload = NULL;
  int got = uvp_promise_reason(p, &payload);
  const uvp_curl_error_t *e = payload;
  if (got != code)
    fail_msg("expected %s, got %s (%s)", uvp_curl_err_name(code),
             uvp_curl_err_name(got), e != NULL ? e->message : "-");
  if (words != NULL) {
    assert_non_null(e);
    if (strstr(e->message, words) == NULL)
      fail_msg("message '%s' lacks '%s'", e->message, words);
  }
}

typedef struct accepted_s {
  const hostile_t *s;
  int n;
} accepted_t;

static bool accepted_enough(void *arg) {
  const accepted_t *a = arg;
  return a->s->accepted >= a->n;
}

/* Run the loop until the hostile server has accepted `n` in all. */
static void wait_accepted(fixture_t *f, const hostile_t *s, int n) {
  accepted_t a = {s, n};
  run_until_true(f, accepted_enough, &a);
}

/* Run the loop until the hostile server has seen `n` clients go. */
static void wait_client_closed(fixture_t *f, hostile_t *s, int n) {
  uint64_t deadline = uv_hrtime() + 10 * (uint64_t)1000000000;
  while (s->client_closed < n) {
    if (uv_hrtime() > deadline)
      fail_msg("the client closed %d of %d connections", s->client_closed, n);
    uv_run(&f->loop, UV_RUN_ONCE);
  }
}

/* Run the loop for `ms` (what it does meanwhile is the test's). */
static void run_for(fixture_t *f, uint64_t ms) { loop_run_for(&f->loop, ms); }

/* Close the binding and the server; the fixture's teardown runs the loop
 * and checks that it closes. */
static void finish(fixture_t *f, uvp_curl_t *c, hostile_t *s) {
  assert_int_equal(uvp_curl_close(c), 0);
  if (s != NULL)
    hostile_stop(s);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* ---- values -------------------------------------------------------------- */

static void test_fetch_response(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/fast");
  uvp_promise_t *p = fetch_wait(f, c, u, NULL, NULL);
  const uvp_curl_response_t *r = response_of(p);
  assert_int_equal(r->status, 200);
  assert_string_equal(r->body.base, "fast\n");
  assert_int_equal(r->body.len, 5);
  assert_int_equal(r->bytes, 5);
  assert_int_equal(r->nheaders, 4);
  assert_string_equal(r->headers[0].name, "Content-Type");
  assert_string_equal(r->headers[0].value, "text/plain");
  assert_string_equal(uvp_curl_response_header(r, "x-TEST"), "yes");
  assert_string_equal(uvp_curl_response_header(r, "content-length"), "5");
  assert_null(uvp_curl_response_header(r, "X-Absent"));
  long code = 0;
  char *eff = NULL;
  assert_int_equal(curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code),
                   CURLE_OK);
  assert_int_equal(code, 200);
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &eff);
  assert_string_equal(eff, u);
  uvp_curl_stats_t st;
  assert_int_equal(uvp_curl_stats(c, &st), 0);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.started, 1);
  assert_int_equal(st.finished, 1);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(st.connects, 1);
  /* A 404 is a response. */
  char *missing = url_of(s.port, "/nope");
  uvp_promise_t *q = fetch_wait(f, c, missing, NULL, NULL);
  assert_int_equal(response_of(q)->status, 404);
  assert_int_equal(response_of(q)->body.len, 0);
  assert_string_equal(response_of(q)->body.base, "");
  uvp_promise_release(p);
  uvp_promise_release(q);
  free(u);
  free(missing);
  finish(f, c, &s);
}

/* The program's own easy handle: its options and callbacks apply, the
 * value is the handle, CURLOPT_PRIVATE is left alone, and the handle can
 * be performed again once the promise has settled (not before). */
typedef struct sink_s {
  size_t bytes;
  int calls;
} sink_t;

static size_t sink_write(char *ptr, size_t size, size_t n, void *arg) {
  sink_t *s = arg;
  (void)ptr;
  s->bytes += size * n;
  s->calls++;
  return size * n;
}

static void test_perform_own_easy(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/fast");
  CURL *e = curl_easy_init();
  sink_t sink = {0, 0};
  int marker;
  curl_easy_setopt(e, CURLOPT_URL, u);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(e, CURLOPT_PRIVATE, &marker);
  uvp_promise_t *p, *again;
  assert_int_equal(uvp_curl_perform(c, e, &p), 0);
  /* In flight: the same handle cannot be performed twice. */
  assert_int_equal(uvp_curl_perform(c, e, &again), UV_EBUSY);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(p), e);
  assert_int_equal(sink.bytes, 5);
  void *priv = NULL;
  curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
  assert_ptr_equal(priv, &marker);
  long code = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  assert_int_equal(code, 200);
  uvp_promise_release(p);
  /* Settled: the handle is the program's again, for another transfer. */
  char *u2 = url_of(s.port, "/close");
  curl_easy_setopt(e, CURLOPT_URL, u2);
  assert_int_equal(uvp_curl_perform(c, e, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(sink.bytes, 5 + 7);
  uvp_promise_release(p);
  /* Bad arguments. */
  assert_int_equal(uvp_curl_perform(NULL, e, &p), UV_EINVAL);
  assert_int_equal(uvp_curl_perform(c, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_curl_perform(c, e, NULL), UV_EINVAL);
  assert_int_equal(uvp_curl_fetch(c, NULL, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_curl_new(NULL, NULL), UV_EINVAL);
  assert_null(uvp_curl_multi(NULL));
  assert_non_null(uvp_curl_multi(c));
  curl_easy_cleanup(e);
  free(u);
  free(u2);
  finish(f, c, &s);
}

/* ---- rejections ---------------------------------------------------------- */

static void test_errors(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  demo_server_t *demo;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &demo), 0);
  int dport = demo_server_port(demo);
  uvp_curl_t *c = curl_new(f);
  /* Each case fails at once; the timeout only bounds a hang.  Valgrind on
   * a loaded machine took over 9 s for the TLS case's handshake. */
  uvp_curl_fetch_opts_t o = {.timeout_ms = 60000};
  struct {
    char *url;
    int code;
    CURLcode curl;
    const char *words;
  } cases[] = {
    {url_of(demo_server_refused_port("127.0.0.1"), "/"), UV_ECONNREFUSED,
     CURLE_COULDNT_CONNECT, "Failed to connect"},
    {url_of(s.port, "/garbage"), UV_EPROTO, CURLE_UNSUPPORTED_PROTOCOL,
     "HTTP/0.9"},
#if defined(_WIN32)
    /* Under wine (.ci/mingw) a reset reaches libcurl as the end of the
     * stream: what is missing is what it reports. */
    {url_of(s.port, "/reset-mid"), UV_EPROTO, CURLE_PARTIAL_FILE,
     "bytes remaining"},
#else
    {url_of(s.port, "/reset-mid"), UV_ECONNRESET, CURLE_RECV_ERROR,
     "Connection reset by peer"},
#endif
    {url_of(dport, "/half"), UV_EPROTO, CURLE_PARTIAL_FILE,
     "990 bytes remaining"},
#if defined(_WIN32)
    {url_of(dport, "/reset"), UV_EPROTO, CURLE_GOT_NOTHING, "Empty reply"},
#else
    {url_of(dport, "/reset"), UV_ECONNRESET, CURLE_RECV_ERROR, "reset"},
#endif
    {strdup("nope://127.0.0.1:1/"), UV_EINVAL, CURLE_UNSUPPORTED_PROTOCOL,
     "\"nope\" not supported"},
    {strdup("http://[::1"), UV_EINVAL, CURLE_URL_MALFORMAT, NULL},
#if defined(_WIN32) /* (Schannel's words, not OpenSSL's) */
    {NULL, UVP_CURL_ETLS, CURLE_SSL_CONNECT_ERROR,
     "failed to receive handshake"},
#else
    {NULL, UVP_CURL_ETLS, CURLE_SSL_CONNECT_ERROR, "wrong version number"},
#endif
    {strdup("http://" UNRESOLVABLE_NAME "/"), UV_EAI_NONAME,
     CURLE_COULDNT_RESOLVE_HOST, "resolve"},
  };
  assert_true(asprintf(&cases[7].url, "https://127.0.0.1:%d/fast", dport) > 0);
  size_t n = sizeof(cases) / sizeof(*cases);
  for (size_t i = 0; i < n; i++) {
    uvp_promise_t *p = fetch_wait(f, c, cases[i].url, &o, NULL);
    expect_rejection(p, cases[i].code, cases[i].words);
    const uvp_curl_error_t *e = error_of(p);
    if (e->code != cases[i].curl)
      fail_msg("%s: CURLcode %d, wanted %d (%s)", cases[i].url, e->code,
               cases[i].curl, e->message);
    assert_true(strlen(e->message) > 0);
    uvp_promise_release(p);
    free(cases[i].url);
  }
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.finished, n);
  assert_int_equal(st.running, 0);
  demo_server_stop(demo, NULL, NULL);
  finish(f, c, &s);
}

/* Hostile servers: each ends with its own code within its bound, and the
 * connection is closed (the server sees the client go). */
static void test_hostile(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  double ms;

  /* An endless chunked body: the cap ends it, as the bytes arrive. */
  char *endless = url_of(s.port, "/endless");
  uvp_curl_fetch_opts_t capped = {.max_body = 1 << 20, .timeout_ms = 10000};
  uvp_promise_t *p = fetch_wait(f, c, endless, &capped, &ms);
  expect_rejection(p, UV_EFBIG, "response body larger than 1048576 bytes");
  assert_int_equal(error_of(p)->code, CURLE_WRITE_ERROR);
  assert_true(ms < 5000);
  uvp_promise_release(p);
  wait_client_closed(f, &s, 1);

  /* The same without a cap: the timeout ends it. */
  uvp_curl_fetch_opts_t timed = {
      .max_body = SIZE_MAX, .timeout_ms = 300, .flags = UVP_CURL_DISCARD_BODY};
  p = fetch_wait(f, c, endless, &timed, &ms);
  expect_rejection(p, UV_ETIMEDOUT, "timed out");
  assert_true(ms >= 290 && ms < 5000);
  uvp_promise_release(p);
  wait_client_closed(f, &s, 2);

  /* One byte a second. */
  char *slow = url_of(s.port, "/slow1");
  uvp_curl_fetch_opts_t slow_o = {.timeout_ms = 1500};
  p = fetch_wait(f, c, slow, &slow_o, &ms);
  expect_rejection(p, UV_ETIMEDOUT, "timed out");
  assert_true(ms >= 1490 && ms < 6000);
  uvp_promise_release(p);
  wait_client_closed(f, &s, 3);

  /* 256 KiB of headers: the header cap (64 KiB by default). */
  char *huge = url_of(s.port, "/huge-headers");
  uvp_curl_fetch_opts_t hdr_o = {.timeout_ms = 10000};
  p = fetch_wait(f, c, huge, &hdr_o, &ms);
  expect_rejection(p, UV_EMSGSIZE, "response header larger than 65536 bytes");
  assert_true(ms < 5000);
  uvp_promise_release(p);
  wait_client_closed(f, &s, 4);
  /* With a larger cap, the same headers all arrive, in order. */
  hdr_o.max_header = 512 * 1024;
  p = fetch_wait(f, c, huge, &hdr_o, NULL);
  const uvp_curl_response_t *r = response_of(p);
  assert_string_equal(r->body.base, "ok");
  assert_int_equal(r->nheaders, 257);
  assert_string_equal(r->headers[255].name, "X-Pad-256");
  assert_int_equal(strlen(r->headers[255].value), 1024);
  uvp_promise_release(p);

  free(endless);
  free(slow);
  free(huge);
  finish(f, c, &s);
}

/* The cap counts the body as decoded: 200 000 bytes gzip-compressed to a
 * few hundred on the wire. */
static int accept_encoding(void *arg, CURL *e) {
  (void)arg;
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  return 0;
}

static void test_cap_counts_decoded(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/gzip?n=200000");
  /* Decoded: 200 000 bytes, over a cap of 100 000. */
  uvp_curl_fetch_opts_t o = {.max_body = 100000, .setup = accept_encoding};
  uvp_promise_t *p = fetch_wait(f, c, u, &o, NULL);
  expect_rejection(p, UV_EFBIG, "larger than 100000 bytes");
  uvp_promise_release(p);
  /* Under a cap of 300 000 it arrives whole. */
  o.max_body = 300000;
  p = fetch_wait(f, c, u, &o, NULL);
  const uvp_curl_response_t *r = response_of(p);
  assert_int_equal(r->bytes, 200000);
  assert_int_equal(r->body.len, 200000);
  assert_int_equal(strspn(r->body.base, "a"), 200000);
  assert_string_equal(uvp_curl_response_header(r, "Content-Encoding"), "gzip");
  curl_off_t wire = 0;
  curl_easy_getinfo(r->easy, CURLINFO_SIZE_DOWNLOAD_T, &wire);
  assert_true(wire > 0 && wire < 100000);
  uvp_promise_release(p);
  /* Not decoded (no Accept-Encoding asked): the cap counts what the
   * write callback gets, the compressed bytes, far under it. */
  o.max_body = 100000;
  o.setup = NULL;
  p = fetch_wait(f, c, u, &o, NULL);
  r = response_of(p);
  assert_true(r->bytes > 0 && r->bytes < 100000);
  assert_int_equal((curl_off_t)r->bytes, wire);
  uvp_promise_release(p);
  /* UVP_CURL_DISCARD_BODY counts without keeping. */
  o.max_body = 0;
  o.setup = accept_encoding;
  o.flags = UVP_CURL_DISCARD_BODY;
  p = fetch_wait(f, c, u, &o, NULL);
  r = response_of(p);
  assert_int_equal(r->bytes, 200000);
  assert_int_equal(r->body.len, 0);
  assert_string_equal(r->body.base, "");
  uvp_promise_release(p);
  free(u);
  finish(f, c, &s);
}

/* POST and other methods: what the server received. */
static void test_post(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/echo");
  const char *hdrs[] = {"X-Hello: 1", "Content-Type: text/plain", NULL};
  uvp_curl_fetch_opts_t o = {
      .body = "a=1&b=2", .body_len = 7, .headers = hdrs, .timeout_ms = 5000};
  uvp_promise_t *p = fetch_wait(f, c, u, &o, NULL);
  const uvp_curl_response_t *r = response_of(p);
  assert_int_equal(strncmp(r->body.base, "POST /echo HTTP/1.1\r\n", 21), 0);
  assert_non_null(strstr(r->body.base, "\r\nX-Hello: 1\r\n"));
  assert_non_null(strstr(r->body.base, "\r\nContent-Type: text/plain\r\n"));
  assert_non_null(strstr(r->body.base, "\r\nContent-Length: 7\r\n"));
  assert_int_equal(strcmp(r->body.base + r->body.len - 11, "\r\n\r\na=1&b=2"),
                   0);
  uvp_promise_release(p);
  /* A binary body with NUL bytes, by PUT. */
  char bin[] = {'x', '\0', 'y'};
  uvp_curl_fetch_opts_t put = {.method = "PUT", .body = bin, .body_len = 3};
  p = fetch_wait(f, c, u, &put, NULL);
  r = response_of(p);
  assert_int_equal(strncmp(r->body.base, "PUT /echo HTTP/1.1\r\n", 20), 0);
  assert_memory_equal(r->body.base + r->body.len - 3, bin, 3);
  uvp_promise_release(p);
  /* HEAD: the answer's headers, no body. */
  uvp_curl_fetch_opts_t head = {.method = "HEAD"};
  char *fast = url_of(s.port, "/fast");
  p = fetch_wait(f, c, fast, &head, NULL);
  r = response_of(p);
  assert_int_equal(r->status, 200);
  assert_int_equal(r->bytes, 0);
  uvp_promise_release(p);
  free(fast);
  free(u);
  finish(f, c, &s);
}

/* How many times `what` is in s. */
static int count_of(const char *s, const char *what) {
  int n = 0;
  for (const char *at = s; (at = strstr(at, what)) != NULL; at++)
    n++;
  return n;
}

typedef struct capture_s {
  char buf[4096];
  size_t len;
} capture_t;

static size_t capture_write(char *d, size_t size, size_t n, void *arg) {
  capture_t *k = arg;
  size_t len = size * n;
  size_t room = sizeof(k->buf) - 1 - k->len;
  memcpy(k->buf + k->len, d, len < room ? len : room);
  k->len += len < room ? len : room;
  k->buf[k->len] = '\0';
  return len;
}

/* W3C trace context (issue 72): a fetch under one sends its CLIENT span's
 * traceparent (same trace, a new span id, the flags) and the scope's
 * tracestate; none without one, or with the program's own traceparent
 * (sent alone); uvp_curl_perform adds nothing (its list is the
 * program's). */
static void test_trace_context(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1u << 20, UVP_RECORD_SPANS), 0);
  char *u = url_of(s.port, "/echo");
  uvp_promise_t *p = fetch_wait(f, c, u, NULL, NULL);
  assert_int_equal(count_of(response_of(p)->body.base, "trace"), 0);
  uvp_promise_release(p);

  uvp_tracectx_t tc = {{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3,
                        0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
                       {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
                       UVP_TRACE_SAMPLED};
  assert_int_equal(uvp_tracectx_set(f->ctx, &tc, "congo=t61rcWkgMzE"), 0);
  p = fetch_wait(f, c, u, NULL, NULL);
  const char *req = response_of(p)->body.base;
  const char *tp = strstr(req, "\r\ntraceparent: 00-");
  assert_non_null(tp);
  tp += 2 + 13;
  uvp_tracectx_t sent;
  assert_int_equal(uvp_tracectx_parse(tp, UVP_TRACEPARENT_LEN, &sent), 0);
  assert_memory_equal(sent.trace_id, tc.trace_id, 16);
  assert_memory_not_equal(sent.span_id, tc.span_id, 8); /* the span's own */
  assert_int_equal(sent.flags, UVP_TRACE_SAMPLED);
  assert_int_equal(strncmp(tp + UVP_TRACEPARENT_LEN, "\r\n", 2), 0);
  assert_int_equal(count_of(req, "\r\ntracestate: congo=t61rcWkgMzE\r\n"), 1);
  assert_int_equal(count_of(req, "traceparent"), 1);
  uvp_promise_release(p);

  /* A second fetch: a span of its own. */
  p = fetch_wait(f, c, u, NULL, NULL);
  tp = strstr(response_of(p)->body.base, "\r\ntraceparent: 00-");
  assert_non_null(tp);
  uvp_tracectx_t again;
  assert_int_equal(uvp_tracectx_parse(tp + 2 + 13, UVP_TRACEPARENT_LEN, &again),
                   0);
  assert_memory_equal(again.trace_id, tc.trace_id, 16);
  assert_memory_not_equal(again.span_id, sent.span_id, 8);
  uvp_promise_release(p);

  /* The program's own traceparent wins, alone. */
  const char *mine[] = {
      "TraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
      NULL};
  uvp_curl_fetch_opts_t o = {.headers = mine};
  p = fetch_wait(f, c, u, &o, NULL);
  req = response_of(p)->body.base;
  assert_int_equal(count_of(req, "raceParent: 00-0af7651916cd43dd8448eb211c8"
                                 "0319c-b7ad6b7169203331-00\r\n"),
                   1);
  assert_int_equal(count_of(req, "traceparent"), 0);
  assert_int_equal(count_of(req, "tracestate"), 0);
  uvp_promise_release(p);

  /* The program's own tracestate goes with the span's traceparent,
   * instead of the scope's. */
  const char *own_state[] = {"tracestate: mine=1", NULL};
  uvp_curl_fetch_opts_t so = {.headers = own_state};
  p = fetch_wait(f, c, u, &so, NULL);
  req = response_of(p)->body.base;
  assert_int_equal(count_of(req, "\r\ntraceparent: 00-4bf92f3577b34da6a3ce"),
                   1);
  assert_int_equal(count_of(req, "tracestate"), 1);
  assert_int_equal(count_of(req, "\r\ntracestate: mine=1\r\n"), 1);
  uvp_promise_release(p);

  /* uvp_curl_perform: the handle's header list is the program's. */
  CURL *e = curl_easy_init();
  capture_t k = {{0}, 0};
  curl_easy_setopt(e, CURLOPT_URL, u);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, capture_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &k);
  assert_int_equal(uvp_curl_perform(c, e, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_non_null(strstr(k.buf, "GET /echo HTTP/1.1\r\n"));
  assert_int_equal(count_of(k.buf, "trace"), 0);
  uvp_promise_release(p);
  curl_easy_cleanup(e);

  /* A fetch that fails: its span ends with the rejection's code. */
  char *refused = url_of(demo_server_refused_port("127.0.0.1"), "/");
  p = fetch_wait(f, c, refused, NULL, NULL);
  expect_rejection(p, UV_ECONNREFUSED, NULL);
  uvp_promise_release(p);
  free(refused);

  /* No trace context again: nothing sent. */
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  p = fetch_wait(f, c, u, NULL, NULL);
  assert_int_equal(count_of(response_of(p)->body.base, "trace"), 0);
  uvp_promise_release(p);

  /* The recorder: four CLIENT spans (the three fetches that sent the
   * header, the refused one), each ended, three fulfilled. */
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  uvp_record_opts_t ro = {UVP_RECORD_JSON, 0, m, NULL, NULL};
  assert_true(uvp_ctx_recorder_write(f->ctx, &ro) > 0);
  fclose(m);
  assert_int_equal(count_of(text, "\"kind\":\"client\""), 4);
  assert_int_equal(count_of(text, "\"ph\":\"e\""), 4);
  assert_int_equal(count_of(text, "\"status\":\"fulfilled\""), 3);
  assert_int_equal(count_of(text, "\"status\":\"ECONNREFUSED\""), 1);
  free(text);
  free(u);
  finish(f, c, &s);
}

static int refuse_setup(void *arg, CURL *e) {
  (void)e;
  *(int *)arg += 1;
  return UV_EPERM;
}

static void test_setup_refused(void **state) {
  fixture_t *f = *state;
  uvp_curl_t *c = curl_new(f);
  int calls = 0;
  uvp_curl_fetch_opts_t o = {.setup = refuse_setup, .setup_arg = &calls};
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_curl_fetch(c, "http://127.0.0.1:1/", &o, &p), UV_EPERM);
  assert_null(p);
  assert_int_equal(calls, 1);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.started, 0);
  finish(f, c, NULL);
}

/* ---- cancellation in every phase ----------------------------------------- */

typedef struct phase_s {
  uvp_promise_t *p;
  sink_t sink;
  int cancel_in_callback; /* from the write or resolver-start callback */
  int resolver_started;
} phase_t;

static curl_off_t info_off(CURL *e, CURLINFO what) {
  curl_off_t v = -1;
  assert_int_equal(curl_easy_getinfo(e, what, &v), CURLE_OK);
  return v;
}

static CURL *phase_easy(const char *url, phase_t *ph) {
  CURL *e = curl_easy_init();
  assert_non_null(e);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &ph->sink);
  return e;
}

static void expect_cancelled(fixture_t *f, uvp_curl_t *c, phase_t *ph) {
  assert_int_equal(uvp_promise_state(ph->p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(ph->p, NULL), UV_ECANCELED);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.cancelled, 1);
  assert_int_equal(st.finished, 0);
  (void)f;
}

static bool got_client_hello(void *arg) {
  const silent_t *s = arg;
  return s->bytes >= 5;
}

static bool silent_saw_close(void *arg) {
  return ((const silent_t *)arg)->client_closed > 0;
}

/* Resolving, deterministically: the name is looked up over DNS-over-HTTPS
 * (CURLOPT_DOH_URL) at a TLS server of the test's that never answers, so
 * libcurl's lookup stays in flight (its probes are transfers of their own
 * in the same multi handle) until the transfer is cancelled, and nothing
 * connects to the host.  libcurl 7.88 may leave the probes in the multi
 * handle when their transfer is removed (reusing or cleaning up the
 * handle need not end them): uvp_curl_close does, and the DoH server sees
 * them go by then. */
static void doh_easy(CURL *e, const silent_t *doh) {
  char doh_url[64];
  snprintf(doh_url, sizeof(doh_url), "https://127.0.0.1:%d/dns-query",
           doh->port);
  curl_easy_setopt(e, CURLOPT_DOH_URL, doh_url);
}

static void test_cancel_resolving(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  silent_t doh;
  silent_start(&f->loop, &doh);
  uvp_curl_t *c = curl_new(f);
  char *u = NULL;
  assert_true(asprintf(&u, "http://uvp-test.invalid:%d/hold", s.port) > 0);
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  doh_easy(e, &doh);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  run_until_true(f, got_client_hello, &doh); /* the lookup is under way */
  assert_int_equal(uvp_promise_state(ph.p), UVP_PENDING);
  assert_int_equal(info_off(e, CURLINFO_NAMELOOKUP_TIME_T), 0);
  assert_int_equal(uvp_promise_cancel(ph.p), 0);
  expect_cancelled(f, c, &ph);
  assert_int_equal(info_off(e, CURLINFO_CONNECT_TIME_T), 0);
  /* The handle is the program's at once.  (Not performed again: libcurl
   * 7.88 would lose the cancelled lookup's state, 1.2 KB, which
   * curl_easy_cleanup frees.)  The binding goes on with others. */
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  char *fast = url_of(s.port, "/fast");
  e = phase_easy(fast, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  run_until_settled(f, ph.p);
  assert_int_equal(uvp_promise_state(ph.p), UVP_FULFILLED);
  assert_int_equal(s.accepted, 1); /* only this one connected */
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.running, 0);
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  /* libcurl's probes may linger until now: they go with the binding. */
  assert_int_equal(uvp_curl_close(c), 0);
  run_until_true(f, silent_saw_close, &doh);
  free(u);
  free(fast);
  silent_stop(&doh);
  hostile_stop(&s);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* The same from inside libcurl: the resolver-start callback cancels its
 * own transfer.  The removal waits until libcurl has returned. */
static int cancel_at_resolve(void *resolver, void *reserved, void *arg) {
  phase_t *ph = arg;
  (void)resolver;
  (void)reserved;
  ph->resolver_started++;
  assert_int_equal(uvp_promise_cancel(ph->p), 0);
  /* Rejected at once, even though still in the multi handle. */
  assert_int_equal(uvp_promise_reason(ph->p, NULL), UV_ECANCELED);
  return 0;
}

static void test_cancel_resolving_in_callback(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  silent_t doh;
  silent_start(&f->loop, &doh);
  uvp_curl_t *c = curl_new(f);
  char *u = NULL;
  assert_true(asprintf(&u, "http://uvp-test.invalid:%d/hold", s.port) > 0);
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  doh_easy(e, &doh);
  curl_easy_setopt(e, CURLOPT_RESOLVER_START_FUNCTION, cancel_at_resolve);
  curl_easy_setopt(e, CURLOPT_RESOLVER_START_DATA, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  assert_int_equal(ph.resolver_started, 1);
  expect_cancelled(f, c, &ph);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.deferred, 1);
  assert_int_equal(info_off(e, CURLINFO_NAMELOOKUP_TIME_T), 0);
  assert_int_equal(info_off(e, CURLINFO_CONNECT_TIME_T), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(s.accepted, 0);
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  silent_stop(&doh);
  finish(f, c, &s);
}

/* libcurl's threaded resolver: a name getaddrinfo looks up on a thread
 * (the machine's own: "localhost" libcurl answers itself), the transfer
 * cancelled right after the call.  Natively the lookup is then still
 * running, and the removal joins its thread (libcurl 7.88); under
 * valgrind, which runs one thread at a time, the lookup may finish and
 * the connect begin inside the call: either way the transfer ends
 * cancelled, and its connection, if any, is closed. */
static void test_cancel_resolving_thread(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  char host[256];
  size_t len = sizeof(host);
  assert_int_equal(uv_os_gethostname(host, &len), 0);
  uvp_curl_t *c = curl_new(f);
  char *u = NULL;
  assert_true(asprintf(&u, "http://%s:%d/hold", host, s.port) > 0);
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  assert_int_equal(uvp_promise_cancel(ph.p), 0);
  expect_cancelled(f, c, &ph);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  if (s.accepted > 0)
    wait_client_closed(f, &s, s.accepted);
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  finish(f, c, &s);
}

static uvp_ret_t cancel_it(void *arg, const uvp_outcome_t *in) {
  (void)in;
  uvp_promise_cancel(arg);
  return uvp_ret_value(NULL, NULL);
}

/* Cancel p after `ms` (a timer of uvp's, not a libcurl callback). */
static void cancel_after(fixture_t *f, uvp_promise_t *p, uint64_t ms) {
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, ms, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_promise_then(d, cancel_it, p, NULL), 0);
  uvp_promise_release(d);
}

/* Connecting: the SYN is never answered (the listener's queue is full). */
static void test_cancel_connecting(void **state) {
  fixture_t *f = *state;
  backlog_full_t b;
  backlog_full_start(&b);
  uvp_curl_t *c = curl_new(f);
  int fds = open_fds();
  char *u = url_of(b.port, "/");
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  cancel_after(f, ph.p, 200);
  run_until_settled(f, ph.p);
  expect_cancelled(f, c, &ph);
  assert_int_equal(info_off(e, CURLINFO_CONNECT_TIME_T), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);   /* the poll handle's close */
  assert_int_equal(open_fds(), fds); /* the connecting socket is closed */
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  backlog_full_stop(&b);
  finish(f, c, NULL);
}

/* TLS handshake: connected, ClientHello sent, no answer. */
static void test_cancel_tls_handshake(void **state) {
  fixture_t *f = *state;
  silent_t s;
  silent_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = NULL;
  assert_true(asprintf(&u, "https://127.0.0.1:%d/", s.port) > 0);
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  run_until_true(f, got_client_hello, &s);
  assert_int_equal(s.first, 0x16); /* a TLS handshake record */
  assert_int_equal(uvp_promise_state(ph.p), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(ph.p), 0);
  expect_cancelled(f, c, &ph);
  assert_int_equal(info_off(e, CURLINFO_APPCONNECT_TIME_T), 0);
  run_until_true(f, silent_saw_close, &s); /* the connection is closed */
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  silent_stop(&s);
  finish(f, c, NULL);
}

static bool got_body(void *arg) { return ((phase_t *)arg)->sink.bytes > 0; }

/* Mid-body: 4096 of 1 000 000 bytes arrived. */
static void test_cancel_mid_body(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/partial");
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  run_until_true(f, got_body, &ph);
  assert_int_equal(uvp_promise_cancel(ph.p), 0);
  expect_cancelled(f, c, &ph);
  assert_true(info_off(e, CURLINFO_SIZE_DOWNLOAD_T) > 0);
  wait_client_closed(f, &s, 1);
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  finish(f, c, &s);
}

/* From inside the write callback, mid-body of an endless response: the
 * removal is deferred (libcurl 7.88 would refuse it there). */
static size_t cancel_in_write(char *ptr, size_t size, size_t n, void *arg) {
  phase_t *ph = arg;
  (void)ptr;
  ph->sink.bytes += size * n;
  if (ph->sink.calls++ == 0)
    assert_int_equal(uvp_promise_cancel(ph->p), 0);
  return size * n;
}

static void test_cancel_in_write_callback(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/endless");
  phase_t ph = {0};
  CURL *e = phase_easy(u, &ph);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cancel_in_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &ph);
  assert_int_equal(uvp_curl_perform(c, e, &ph.p), 0);
  run_until_settled(f, ph.p);
  expect_cancelled(f, c, &ph);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.deferred, 1);
  /* Until libcurl returned it went on reading (its callbacks may run
   * meanwhile); after that, nothing more. */
  assert_true(ph.sink.calls >= 1);
  wait_client_closed(f, &s, 1);
  int calls = ph.sink.calls;
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(ph.sink.calls, calls);
  uvp_promise_release(ph.p);
  curl_easy_cleanup(e);
  free(u);
  finish(f, c, &s);
}

/* ---- a descriptor reused at once ----------------------------------------- */

/* Transfer A's server closes the connection after its answer; A's write
 * callback starts B (an add deferred until libcurl has returned).  By
 * then libcurl has closed A's socket and the binding has begun closing
 * its poll handle; B's socket gets the same descriptor number, and must
 * wait for that close: libuv forbids two poll handles on one descriptor,
 * and the old one's close would remove the new one's epoll watch. */
typedef struct reuse_s {
  uvp_curl_t *c;
  CURL *b;
  uvp_promise_t *pb;
  int rc;
} reuse_t;

static size_t start_b(char *ptr, size_t size, size_t n, void *arg) {
  reuse_t *r = arg;
  (void)ptr;
  if (r->pb == NULL)
    r->rc = uvp_curl_perform(r->c, r->b, &r->pb);
  return size * n;
}

static void test_descriptor_reused(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *ua = url_of(s.port, "/close"), *ub = url_of(s.port, "/fast");
  sink_t sb = {0, 0};
  reuse_t r = {c, curl_easy_init(), NULL, -1};
  CURL *a = curl_easy_init();
  curl_easy_setopt(a, CURLOPT_URL, ua);
  curl_easy_setopt(a, CURLOPT_WRITEFUNCTION, start_b);
  curl_easy_setopt(a, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(r.b, CURLOPT_URL, ub);
  curl_easy_setopt(r.b, CURLOPT_WRITEFUNCTION, sink_write);
  curl_easy_setopt(r.b, CURLOPT_WRITEDATA, &sb);
  /* B must not wait for its own timeout if it were never watched. */
  curl_easy_setopt(r.b, CURLOPT_TIMEOUT_MS, 3000L);
  uvp_promise_t *pa;
  assert_int_equal(uvp_curl_perform(c, a, &pa), 0);
  run_until_settled(f, pa);
  assert_int_equal(uvp_promise_state(pa), UVP_FULFILLED);
  assert_int_equal(r.rc, 0);
  assert_non_null(r.pb);
  run_until_settled(f, r.pb);
  if (uvp_promise_state(r.pb) != UVP_FULFILLED)
    fail_msg("B: %s", uvp_curl_err_name(uvp_promise_reason(r.pb, NULL)));
  assert_int_equal(sb.bytes, 5);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.deferred, 1);
#if !defined(_WIN32) /* (under wine: 0, B served all the same; unexplained) */
  assert_true(st.reopened >= 1);
#endif
  uvp_promise_release(pa);
  uvp_promise_release(r.pb);
  curl_easy_cleanup(a);
  curl_easy_cleanup(r.b);
  free(ua);
  free(ub);
  finish(f, c, &s);
}

/* ---- with the rest of uvp ------------------------------------------------ */

/* uvp_timeout cancels the transfer (the server sees it go); race with
 * UVP_CANCEL_LOSERS cancels the slower one. */
static void test_timeout_and_race(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *hold = url_of(s.port, "/hold"), *fast = url_of(s.port, "/fast");
  uvp_promise_t *p, *t;
  assert_int_equal(uvp_curl_get(c, hold, &p), 0);
  assert_int_equal(uvp_timeout(p, 200, 0, &t), 0);
  assert_int_equal(uvp_promise_mark_handled(t), 0);
  run_until_settled(f, t);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  wait_client_closed(f, &s, 1);
  uvp_promise_release(p);
  uvp_promise_release(t);

  uvp_promise_t *in[2], *won;
  assert_int_equal(uvp_curl_get(c, hold, &in[0]), 0);
  assert_int_equal(uvp_curl_get(c, fast, &in[1]), 0);
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &won), 0);
  run_until_settled(f, won);
  assert_int_equal(response_of(won)->status, 200);
  assert_int_equal(uvp_promise_reason(in[0], NULL), UV_ECANCELED);
  wait_client_closed(f, &s, 2);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 2);
  assert_int_equal(st.running, 0);
  uvp_promise_release(in[0]);
  uvp_promise_release(in[1]);
  uvp_promise_release(won);
  free(hold);
  free(fast);
  finish(f, c, &s);
}

/* On a virtual clock moving by itself (UVP_CLOCK_AUTO), a transfer holds
 * the clock to the loop's pace: an answer 300 ms away beats a virtual
 * timeout of 5 s, as in real time, and a server that never answers still
 * times out, after 200 ms of real time.  With the binding's hold taken
 * out, the clock jumps 5 s at once and the first times out. */
static void test_virtual_clock(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *later = url_of(s.port, "/later"), *hold = url_of(s.port, "/hold");
  uvp_promise_t *p, *t;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_curl_get(c, later, &p), 0);
  assert_int_equal(uvp_timeout(p, 5000, 0, &t), 0);
  run_until_settled(f, t);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(response_of(t)->status, 200);
  assert_true(ms >= 290);
  uvp_promise_release(p);
  uvp_promise_release(t);

  t0 = uv_hrtime();
  uint64_t v0 = uvp_clock_now(f->ctx);
  assert_int_equal(uvp_curl_get(c, hold, &p), 0);
  assert_int_equal(uvp_timeout(p, 200, 0, &t), 0);
  assert_int_equal(uvp_promise_mark_handled(t), 0);
  run_until_settled(f, t);
  ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  assert_true(ms >= 190);
  assert_true(uvp_clock_now(f->ctx) - v0 >= 200);
  wait_client_closed(f, &s, 1); /* the answered one the server closed */
  uvp_promise_release(p);
  uvp_promise_release(t);

  /* Nothing in flight: the clock jumps over an hour at once. */
  uvp_promise_t *hour;
  t0 = uv_hrtime();
  assert_int_equal(uvp_delay(f->ctx, 3600 * 1000, NULL, NULL, 0, &hour), 0);
  run_until_settled(f, hour);
  assert_true((double)(uv_hrtime() - t0) / 1e6 < 1000);
  uvp_promise_release(hour);
  free(later);
  free(hold);
  finish(f, c, &s);
}

/* Transfers one after the other, each started by a fiber as the last one
 * ends, on one binding that reuses its connection, on UVP_CLOCK_AUTO,
 * each bounded by a virtual timeout of 700 ms, against a server on a
 * thread of its own that answers 600 ms after each request (nothing else
 * wakes the loop meanwhile): every one succeeds, and the virtual clock
 * moves as real time does, within a few ms over each transfer.  (Real
 * time read afresh, not uv_now: that is the time the loop's turn began,
 * and the fiber runs after the poll's callbacks, which take ms under
 * valgrind; the clock counts them since issue 62.)
 * Issue 51: the clock caught up with the real time only in the loop's
 * prepare phase, so the fiber, resumed after the poll that brought the
 * answer, started the next transfer's timeout from the time before that
 * poll (400 ms early here: libcurl's own timer woke the loop once, 200 ms
 * in), and every other transfer timed out. */
/* (Under valgrind, and a loaded machine, a transfer's own work takes
 * tens of ms: a wider margin there.) */
#define IN_A_ROW_TIMEOUT (RUNNING_ON_VALGRIND ? 1000 : 700)

typedef struct in_a_row_s {
  uvp_ctx_t *ctx;
  uvp_curl_t *c;
  const char *url;
  int ok;
  uint64_t worst_ms; /* |virtual - real time| of one transfer, at most */
} in_a_row_t;

static uint64_t absdiff(uint64_t a, uint64_t b) {
  return a > b ? a - b : b - a;
}

static uvp_ret_t fetch_in_a_row(void *arg) {
  in_a_row_t *r = arg;
  uv_loop_t *loop = uvp_ctx_loop(r->ctx);
  for (int i = 0; i < 6; i++) {
    uvp_promise_t *p, *t;
    uvp_outcome_t o;
    if (uvp_curl_get(r->c, r->url, &p) != 0)
      return uvp_ret_reject(UV_EINVAL, NULL, NULL);
    /* From the transfer's start (the first is the clock's pace's too) */
    uint64_t h0 = uv_hrtime(), l0 = uv_now(loop), v0 = uvp_clock_now(r->ctx);
    if (uvp_timeout(p, IN_A_ROW_TIMEOUT, 0, &t) != 0)
      return uvp_ret_reject(UV_EINVAL, NULL, NULL);
    int rc = uvp_await(t, &o);
    uint64_t virt = uvp_clock_now(r->ctx) - v0,
             real = (uv_hrtime() - h0 + 500000u) / 1000000u;
    printf("transfer %d: %s after %llu ms (loop: %llu ms, virtual: %llu "
           "ms)\n",
           i, rc == 0 ? "ok" : uvp_curl_err_name(rc), (unsigned long long)real,
           (unsigned long long)(uv_now(loop) - l0), (unsigned long long)virt);
    r->ok += rc == 0;
    if (absdiff(virt, real) > r->worst_ms)
      r->worst_ms = absdiff(virt, real);
    uvp_promise_release(p);
    uvp_promise_release(t);
  }
  return uvp_ret_value(NULL, NULL);
}

static void test_virtual_clock_in_a_row(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  thread_server_t srv;
  thread_server_start_n(&srv, 600, 6);
  uvp_curl_t *c = curl_new(f);
  char *url = url_of(srv.port, "/later");
  in_a_row_t r = {f->ctx, c, url, 0, 0};
  uvp_promise_t *done;
  uv_update_time(&f->loop);
  uint64_t l0 = uv_now(&f->loop), v0 = uvp_clock_now(f->ctx);
  assert_int_equal(uvp_fiber_spawn(f->ctx, fetch_in_a_row, &r, NULL, &done), 0);
  run_until_settled(f, done);
  uint64_t real = uv_now(&f->loop) - l0, virt = uvp_clock_now(f->ctx) - v0;
  printf("all: loop %llu ms, virtual %llu ms; worst transfer off by %llu "
         "ms\n",
         (unsigned long long)real, (unsigned long long)virt,
         (unsigned long long)r.worst_ms);
  assert_int_equal(uvp_promise_state(done), UVP_FULFILLED);
  assert_int_equal(r.ok, 6);
  /* Over each transfer; the whole also counts the loop's first turn, before
   * anything held the clock (not virtual time: 17 ms under valgrind). */
  assert_true(r.worst_ms <= 5);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.connects, 1); /* one connection, reused */
  uvp_promise_release(done);
  free(url);
  assert_int_equal(uvp_curl_close(c), 0);
  thread_server_join(&srv);
  assert_int_equal(srv.answered, 6);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* A virtual timeout started right after a call that took long: each
 * fetch's setup callback (code the call runs, as libcurl's first call in
 * a process runs for 110 to 480 ms under valgrind) takes SLOW_CALL_MS,
 * then the fetch starts a transfer that the server answers 300 ms after
 * its request, under a virtual timeout of SLOW_CALL_TIMEOUT (200 ms to
 * spare, 300 under valgrind: a machine loaded with other builds delays
 * the server's thread and the loop by that much), on UVP_CLOCK_AUTO.  The
 * timeout starts once the call has returned, so the answer comes first,
 * and the virtual time from there to the answer is no more than the real
 * time: the clock never runs ahead of a transfer it waits for.  Three in
 * a row from a fiber on one connection: the first starts while nothing
 * was in flight (the clock not yet at the loop's pace), the others as the
 * last one ended (at its pace).
 * Issue 62: the timer started from the time the loop's turn began, before
 * the call (uv_now, cached), so the call's time counted against the
 * timeout: every transfer timed out, after 200 ms of real time and 500 of
 * virtual time (350 and 350 with a call of 150 ms and a timeout of
 * 350 ms); six GETs in a row against uvp-fanout's /slow, each under a
 * timeout of 350 ms, timed out 3 times in 6 under valgrind. */
#define SLOW_CALL_MS (RUNNING_ON_VALGRIND ? 400 : 300)
#define SLOW_CALL_TIMEOUT (RUNNING_ON_VALGRIND ? 600 : 500)

static int slow_setup(void *arg, CURL *e) {
  (void)arg;
  (void)e;
  uint64_t t0 = uv_hrtime();
  while (uv_hrtime() - t0 < SLOW_CALL_MS * (uint64_t)1000000)
    ;
  return 0;
}

typedef struct slow_call_s {
  uvp_ctx_t *ctx;
  uvp_curl_t *c;
  const char *url;
  int ok;
  int64_t worst_ahead_ms; /* virtual less real time, at most */
} slow_call_t;

static uvp_ret_t fetch_after_slow_call(void *arg) {
  slow_call_t *r = arg;
  uvp_curl_fetch_opts_t o = {.setup = slow_setup};
  for (int i = 0; i < 3; i++) {
    uvp_promise_t *p, *t;
    uvp_outcome_t out;
    if (uvp_curl_fetch(r->c, r->url, &o, &p) != 0)
      return uvp_ret_reject(UV_EINVAL, NULL, NULL);
    /* Real time from before the timeout's start, virtual from after it:
     * the virtual time that passed since the start is no more. */
    uint64_t h0 = uv_hrtime();
    if (uvp_timeout(p, SLOW_CALL_TIMEOUT, 0, &t) != 0)
      return uvp_ret_reject(UV_EINVAL, NULL, NULL);
    uint64_t v0 = uvp_clock_now(r->ctx);
    int rc = uvp_await(t, &out);
    int64_t real = (int64_t)((uv_hrtime() - h0) / 1000000u),
            virt = (int64_t)(uvp_clock_now(r->ctx) - v0);
    printf("transfer %d: %s after %lld ms of real time, %lld ms of virtual "
           "time\n",
           i, rc == 0 ? "ok" : uvp_curl_err_name(rc), (long long)real,
           (long long)virt);
    r->ok += rc == 0;
    if (virt - real > r->worst_ahead_ms)
      r->worst_ahead_ms = virt - real;
    uvp_promise_release(p);
    uvp_promise_release(t);
  }
  return uvp_ret_value(NULL, NULL);
}

static void test_virtual_clock_slow_call(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  thread_server_t srv;
  thread_server_start_n(&srv, 300, 3);
  uvp_curl_t *c = curl_new(f);
  char *url = url_of(srv.port, "/later");
  slow_call_t r = {f->ctx, c, url, 0, INT64_MIN};
  uvp_promise_t *done;
  assert_int_equal(
      uvp_fiber_spawn(f->ctx, fetch_after_slow_call, &r, NULL, &done), 0);
  run_until_settled(f, done);
  assert_int_equal(uvp_promise_state(done), UVP_FULFILLED);
  assert_int_equal(r.ok, 3);
  /* (1 ms: the two clocks' milliseconds are cut at different instants) */
  assert_true(r.worst_ahead_ms <= 1);
  uvp_promise_release(done);
  free(url);
  assert_int_equal(uvp_curl_close(c), 0);
  thread_server_join(&srv);
  assert_int_equal(srv.answered, 3);
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* A hostile HTTP/2 server (h2-flood.h: nothing but WINDOW_UPDATE frames,
 * or PING frames, as fast as it can, for 10 s) kept libcurl 7.88 inside
 * one curl_multi_socket_action, and the loop with it, for as long as it
 * flooded (issue 51): a deadline of 2.5 s (6 s under valgrind, whose
 * reading is slower) ended the transfer after 10 s, and a transfer to a
 * well-behaved server waited as long.  The binding's busy limit (100 ms
 * by default) ends the flooded connection: the transfer rejects with
 * UV_ETIMEDOUT, the loop held 120-150 ms at most on a quiet machine (a
 * timer of its own, every 5 ms, says how long, and how much CPU time the
 * loop thread spent meanwhile: the bound is on that, FLOOD_HELD below;
 * 0.4-1.3 s under valgrind, which takes that long to read the 4 MiB the
 * watchdog waits for), the other one, answered after 300 ms, completes
 * as the loop comes back, and the flood stops when the client is gone.
 * (Issue 62: with a limit of 1 s the loop was held 1.02 s, and every
 * other transfer waited as long.)  The same with PING frames, which the
 * client answers.
 * (PINGs alone, over 1000 in one of libcurl's reads, nghttp2 stops by
 * itself: NGHTTP2_ERR_FLOODED, EPROTO.)  With the limit off (0) a
 * WINDOW_UPDATE flood holds the call as long as the server floods (2 s
 * here): nothing else bounds it. */
static int h2_prior_knowledge(void *arg, CURL *e) {
  (void)arg;
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                   (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
  return 0;
}

/* The flooded transfer's deadline (the other one has none: it waits for
 * the loop, as long as that takes), and how long the server floods at
 * most: both transfers must end in half of that, long before the flood
 * would have ended by itself (issue 51), at any load (the hold is what a
 * load stretches: 0.8-2.2 s at a load of 20-30 with ASan).
 *
 * FLOOD_HELD: the most CPU time the loop thread may spend in one hold,
 * 2.5 times the default limit of 100 ms.  The hold is the limit (real
 * time, in which the thread reads at whatever share of a core it gets),
 * then the reading the watchdog waits for: 4 MiB and a look of 20 ms, and
 * what the socket had queued.  On a quiet machine it lasts 120-150 ms in
 * real time and in CPU time alike (ASan too); on a loaded one the real
 * time stretches with the load (an ASan build at a load of 20-30 on two
 * cores held the loop over 250 ms), the thread's CPU time does not: the
 * limit costs it at most 100 ms, the reading the same work at any load.
 * So the bound is on the CPU time, and still fails on the bugs it is
 * for: with a limit of 1 s (issue 62) the thread reads a second on a
 * quiet machine (1.02 s), with none (issue 51) for as long as the flood
 * lasts.  Under valgrind the reading is ten times slower (the 4 MiB took
 * 0.4 to 1.3 s): there the check is only that the hold is bounded. */
#define FLOOD_DEADLINE (RUNNING_ON_VALGRIND ? 6000 : 2500)
#define FLOOD_SECS 20
#define FLOOD_HELD (RUNNING_ON_VALGRIND ? 2500.0 : 250.0)

static double ms_since(uint64_t t0) { return (double)(uv_hrtime() - t0) / 1e6; }

/* The loop thread's CPU time, in ns. */
static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  assert_int_equal(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A timer of the loop's, every 5 ms: the longest the loop went without
 * running it is the longest it was held, in real time (worst) and in the
 * loop thread's CPU time (worst_cpu: the most it worked between two
 * runs). */
typedef struct ticker_s {
  uv_timer_t timer;
  uint64_t last, worst;         /* uv_hrtime() */
  uint64_t last_cpu, worst_cpu; /* thread_cpu_ns() */
} ticker_t;

static void tick(uv_timer_t *t) {
  ticker_t *k = t->data;
  uint64_t now = uv_hrtime(), cpu = thread_cpu_ns();
  if (now - k->last > k->worst)
    k->worst = now - k->last;
  if (cpu - k->last_cpu > k->worst_cpu)
    k->worst_cpu = cpu - k->last_cpu;
  k->last = now;
  k->last_cpu = cpu;
}

/* *held_ms: the longest hold in real time, *held_cpu_ms in the loop
 * thread's CPU time. */
static void h2_flood_round(fixture_t *f, uvp_curl_t *c, int kind, unsigned secs,
                           double *flood_ms, double *ok_ms, double *held_ms,
                           double *held_cpu_ms, uvp_promise_t **flooded) {
  ticker_t k = {.worst = 0, .worst_cpu = 0};
  assert_int_equal(uv_timer_init(&f->loop, &k.timer), 0);
  k.timer.data = &k;
  uv_unref((uv_handle_t *)&k.timer);
  h2_flood_t fl;
  assert_int_equal(h2_flood_start(&fl, kind, secs), 0);
  thread_server_t good;
  thread_server_start(&good, 300);
  char *fu = url_of(fl.port, "/"), *gu = url_of(good.port, "/");
  uvp_curl_fetch_opts_t o = {.setup = h2_prior_knowledge};
  uvp_promise_t *pf, *pg;
  uint64_t t0 = uv_hrtime();
  k.last = t0;
  k.last_cpu = thread_cpu_ns();
  assert_int_equal(uv_timer_start(&k.timer, tick, 5, 5), 0);
  assert_int_equal(uvp_deadline_set(f->ctx, FLOOD_DEADLINE), 0);
  assert_int_equal(uvp_curl_fetch(c, fu, &o, &pf), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(uvp_curl_get(c, gu, &pg), 0);
  assert_int_equal(uvp_promise_mark_handled(pf), 0);
  run_until_settled(f, pg);
  *ok_ms = ms_since(t0);
  run_until_settled(f, pf);
  *flood_ms = ms_since(t0);
  tick(&k.timer);
  *held_ms = (double)k.worst / 1e6;
  *held_cpu_ms = (double)k.worst_cpu / 1e6;
  uv_close((uv_handle_t *)&k.timer, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* k is on this stack */
  h2_flood_join(&fl);
  thread_server_join(&good);
  void *payload = NULL;
  int code = uvp_promise_state(pf) == UVP_REJECTED
                 ? uvp_promise_reason(pf, &payload)
                 : 0;
  const uvp_curl_error_t *e = payload;
  printf("%s flood: %s after %.1f ms (%s); the server flooded %.1f MB in "
         "%.0f ms; the good one: %s after %.1f ms; the loop held at most "
         "%.1f ms (the loop thread's CPU time: %.1f ms at most)\n",
         kind == FLOOD_PING ? "PING" : "WINDOW_UPDATE",
         code != 0 ? uvp_curl_err_name(code) : "value", *flood_ms,
         e != NULL ? e->message : "no payload: the deadline",
         (double)fl.flooded / 1e6, fl.flood_ms,
         uvp_promise_state(pg) == UVP_FULFILLED ? "200" : "rejected", *ok_ms,
         *held_ms, *held_cpu_ms);
  assert_true(fl.connected);
  assert_int_equal(uvp_promise_state(pg), UVP_FULFILLED);
  assert_int_equal(response_of(pg)->status, 200);
  uvp_promise_release(pg);
  free(fu);
  free(gu);
  *flooded = pf;
}

/* A call into libcurl that takes long without reading much is not the
 * busy limit's: a write callback of the program's blocks 1.5 s on an
 * endless body (its first chunk), then reads on, and stops the transfer
 * itself after 1 MB: the rejection is its own (UV_EIO), not the binding's
 * (UV_ETIMEDOUT, had the watchdog ended the connection). */
static size_t slow_write(char *ptr, size_t size, size_t n, void *arg) {
  sink_t *s = arg;
  (void)ptr;
  if (s->calls++ == 0)
    usleep(1500 * 1000);
  s->bytes += size * n;
  return s->bytes > 1000000 ? 0 : size * n;
}

static void test_busy_limit_spares_slow_callback(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/endless");
  sink_t sink = {0, 0};
  CURL *e = curl_easy_init();
  curl_easy_setopt(e, CURLOPT_URL, u);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, slow_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &sink);
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_curl_perform(c, e, &p), 0);
  assert_int_equal(uvp_promise_mark_handled(p), 0);
  run_until_settled(f, p);
  assert_true(ms_since(t0) >= 1400);
  expect_rejection(p, UV_EIO, NULL);
  assert_true(sink.bytes > 1000000);
  uvp_promise_release(p);
  curl_easy_cleanup(e);
  free(u);
  wait_client_closed(f, &s, 1);
  finish(f, c, &s);
}

/* The busy limit's cut.  Under valgrind, which runs one of the process's
 * threads at a time, the client now and then reads the whole socket while
 * the flooding thread waits for its turn, so a call into libcurl returns
 * before the limit and the flood may last until the deadline (CI on
 * f422126: ETIMEDOUT by the deadline after 6.5 s, 47.8 MB read): there the
 * deadline's cut, on time, is accepted too.  So it is for a PING flood
 * (deadline_too) in any build: the client answers each PING, and a call
 * returns when an answer would block, the server being busy writing (CI's
 * clang run on 5a2ddbc: every call under the limit, the loop's longest
 * hold 114 ms of CPU, 968 MB read, the deadline's cut at 2.6 s).  The loop
 * was not held then either: the caller's bound on the hold
 * (FLOOD_HELD, which no flood without the limit meets: test_h2_flood_no_limit)
 * is what fails if the limit stops cutting.  The WINDOW_UPDATE flood, which
 * the client only reads, keeps the busy limit's cut in the plain, ASan and
 * clang runs, where the server floods in parallel. */
static void expect_flood_cut(uvp_promise_t *p, bool deadline_too) {
  void *payload = NULL;
  if ((deadline_too || RUNNING_ON_VALGRIND) &&
      uvp_promise_state(p) == UVP_REJECTED &&
      uvp_promise_reason(p, &payload) == UV_ETIMEDOUT && payload == NULL) {
    const uvp_cause_t *why = uvp_promise_cause(p);
    assert_non_null(why);
    assert_int_equal(why->kind, UVP_CAUSE_DEADLINE);
    assert_int_equal(why->ms, FLOOD_DEADLINE);
    return;
  }
  expect_rejection(p, UV_ETIMEDOUT, "the binding ended the connection");
}

/* (Each in a test of its own: the fixture's scope keeps its deadline.) */
static void test_h2_flood_window_update(void **state) {
  H2_FLOOD_SKIP();
  fixture_t *f = *state;
  uvp_curl_t *c = curl_new(f);
  double ms, ok_ms, held_ms, held_cpu_ms;
  uvp_promise_t *p;
  h2_flood_round(f, c, FLOOD_WINDOW_UPDATE, FLOOD_SECS, &ms, &ok_ms, &held_ms,
                 &held_cpu_ms, &p);
  expect_flood_cut(p, false);
  assert_true(held_cpu_ms < FLOOD_HELD);
  assert_true(ms < FLOOD_SECS * 1000.0 / 2);
  assert_true(ok_ms < FLOOD_SECS * 1000.0 / 2);
  uvp_promise_release(p);
  assert_int_equal(uvp_curl_set_busy_limit(NULL, 0), UV_EINVAL);
  finish(f, c, NULL);
}

/* PING frames (among ignored ones, fewer than nghttp2's 1000 unanswered
 * per read): the client answers each, the server reads the answers, and
 * the call holds as with WINDOW_UPDATE. */
static void test_h2_flood_ping(void **state) {
  H2_FLOOD_SKIP();
  fixture_t *f = *state;
  uvp_curl_t *c = curl_new(f);
  double ms, ok_ms, held_ms, held_cpu_ms;
  uvp_promise_t *p;
  h2_flood_round(f, c, FLOOD_PING, FLOOD_SECS, &ms, &ok_ms, &held_ms,
                 &held_cpu_ms, &p);
  expect_flood_cut(p, true);
  assert_true(held_cpu_ms < FLOOD_HELD);
  assert_true(ms < FLOOD_SECS * 1000.0 / 2);
  assert_true(ok_ms < FLOOD_SECS * 1000.0 / 2);
  uvp_promise_release(p);
  finish(f, c, NULL);
}

/* The limit off: the transfer lasts as long as the flood, 2 s (the other
 * one waits until the loop gets control back, which it may now and then
 * when the client catches up on a busy machine). */
static void test_h2_flood_no_limit(void **state) {
  H2_FLOOD_SKIP();
  fixture_t *f = *state;
  uvp_curl_t *c = curl_new(f);
  assert_int_equal(uvp_curl_set_busy_limit(c, 0), 0);
  double ms, ok_ms, held_ms, held_cpu_ms;
  uvp_promise_t *p;
  h2_flood_round(f, c, FLOOD_WINDOW_UPDATE, 2, &ms, &ok_ms, &held_ms,
                 &held_cpu_ms, &p);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_true(ms >= 1500);
  /* What the limit bounds, in real time: a loaded machine only makes it
   * longer (the thread's share of the 2 s may be less than 250 ms). */
  assert_true(held_ms >= 250.0);
  uvp_promise_release(p);
  finish(f, c, NULL);
}

static void test_all_settled(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u[3] = {url_of(s.port, "/fast"), url_of(s.port, "/garbage"),
                url_of(demo_server_refused_port("127.0.0.1"), "/")};
  uvp_promise_t *in[3], *all;
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_curl_get(c, u[i], &in[i]), 0);
  assert_int_equal(uvp_promise_all_settled(f->ctx, in, 3, &all), 0);
  run_until_settled(f, all);
  const uvp_settled_list_t *l = uvp_promise_value(all);
  assert_int_equal(l->count, 3);
  assert_int_equal(l->fulfilled, 1);
  assert_int_equal(((uvp_curl_response_t *)l->items[0].value)->status, 200);
  assert_int_equal(l->items[1].status, UV_EPROTO);
  assert_int_equal(l->items[2].status, UV_ECONNREFUSED);
  assert_int_equal(((uvp_curl_error_t *)l->items[2].value)->code,
                   CURLE_COULDNT_CONNECT);
  for (int i = 0; i < 3; i++) {
    uvp_promise_release(in[i]);
    free(u[i]);
  }
  uvp_promise_release(all);
  finish(f, c, &s);
}

typedef struct fib_s {
  uvp_curl_t *c;
  const char *fast, *hold;
  long status;
  int held;
} fib_t;

static uvp_ret_t fetch_in_fiber(void *arg) {
  fib_t *fb = arg;
  uvp_promise_t *p;
  uvp_outcome_t o;
  if (uvp_curl_get(fb->c, fb->fast, &p) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  if (uvp_await(p, &o) == 0)
    fb->status = ((uvp_curl_response_t *)o.value)->status;
  uvp_promise_release(p);
  /* Then one that never answers: the fiber is cancelled meanwhile. */
  if (uvp_curl_get(fb->c, fb->hold, &p) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  fb->held = uvp_await(p, &o);
  uvp_promise_release(p);
  return uvp_ret_value(NULL, NULL);
}

static bool fiber_saw_end(void *arg) { return ((fib_t *)arg)->held != 1; }

static void test_fiber(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *fast = url_of(s.port, "/fast"), *hold = url_of(s.port, "/hold");
  fib_t fb = {c, fast, hold, 0, 1};
  uvp_promise_t *done;
  assert_int_equal(uvp_fiber_spawn(f->ctx, fetch_in_fiber, &fb, NULL, &done),
                   0);
  wait_accepted(f, &s, 2); /* the second fetch is under way */
  assert_int_equal(fb.status, 200);
  assert_int_equal(uvp_promise_cancel(done), 0);
  run_until_true(f, fiber_saw_end, &fb);   /* it runs on to its end */
  assert_int_equal(fb.held, UV_ECANCELED); /* the await, and the transfer */
  wait_client_closed(f, &s, 1);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 1);
  uvp_promise_release(done);
  free(fast);
  free(hold);
  finish(f, c, &s);
}

typedef struct member_s {
  uvp_curl_t *c;
  const char *url;
} member_t;

static int start_member(void *arg, uvp_promise_t **out) {
  member_t *m = arg;
  return uvp_curl_get(m->c, m->url, out);
}

/* A group of four fetches, two at a time, joins; a group of transfers
 * that never end is cancelled as a whole and still joins. */
static void test_group(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *fast = url_of(s.port, "/fast"), *hold = url_of(s.port, "/hold");
  member_t mf = {c, fast}, mh = {c, hold};
  uvp_group_t *g;
  uvp_group_opts_t go = {.limit = 2, .flags = UVP_GROUP_DISCARD_SETTLED};
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(uvp_group_start(g, start_member, &mf, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  assert_int_equal(s.accepted, 4);
  uvp_promise_release(join);
  uvp_group_release(g);

  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_group_start(g, start_member, &mh, NULL), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  wait_accepted(f, &s, 4 + 3);
  assert_int_equal(uvp_group_cancel(g), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  wait_client_closed(f, &s, 3);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 3);
  assert_int_equal(st.running, 0);
  uvp_promise_release(join);
  uvp_group_release(g);
  free(fast);
  free(hold);
  finish(f, c, &s);
}

/* A transfer a member starts and leaves running (the member settles at
 * once) is the group's work all the same: the join waits for it, the
 * group's deadline cuts it, and the task dump shows it under the group. */
typedef struct leaver_s {
  uvp_curl_t *c;
  const char *url;
  uvp_promise_t *xfer;  /* the transfer's promise (the test's reference) */
  uvp_promise_t *after; /* a handler on it: what waits on it */
} leaver_t;

static uvp_ret_t after_xfer(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

static int start_and_leave(void *arg, uvp_promise_t **out) {
  leaver_t *l = arg;
  int rc = uvp_curl_get(l->c, l->url, &l->xfer);
  if (rc == 0)
    rc = uvp_promise_then(l->xfer, after_xfer, NULL, &l->after);
  if (rc == 0)
    rc = uvp_promise_mark_handled(l->after);
  return rc != 0
             ? rc
             : uvp_promise_resolved(uvp_promise_ctx(l->xfer), NULL, NULL, out);
}

static void test_group_waits_for_transfer(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *hold = url_of(s.port, "/hold");
  leaver_t l = {c, hold, NULL, NULL};
  uvp_group_t *g;
  uvp_promise_t *join;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "leavers"), 0);
  assert_int_equal(uvp_group_start(g, start_and_leave, &l, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  wait_accepted(f, &s, 1);
  /* The member has settled; its transfer holds the join. */
  run_for(f, 200);
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  assert_true(uvp_ctx_inflight(f->ctx) >= 1);
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  assert_non_null(m);
  uvp_dump_opts_t o = {0, m, NULL, NULL, 0};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 1);
  fclose(m);
  char want[200];
  snprintf(want, sizeof(want), "for HTTP GET %s; in group \"leavers\"", hold);
  if (strstr(text, want) == NULL)
    fail_msg("'%s' expected in: %s", want, text);
  free(text);
  /* The transfer ends: then the join settles. */
  assert_int_equal(uvp_promise_cancel(l.xfer), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
  uvp_promise_release(l.after);
  uvp_promise_release(l.xfer);

  /* The group's deadline cuts such a transfer: the join rejects with
   * UV_ETIMEDOUT once it has left the multi. */
  uvp_group_opts_t go = {.deadline_ms = 300};
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  assert_int_equal(uvp_group_start(g, start_and_leave, &l, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(l.xfer, NULL), UV_ETIMEDOUT);
  wait_client_closed(f, &s, 2);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.running, 0);
  uvp_promise_release(join);
  uvp_group_release(g);
  uvp_promise_release(l.after);
  uvp_promise_release(l.xfer);
  free(hold);
  finish(f, c, &s);
}

/* ---- inspection ---------------------------------------------------------- */

static void test_dump(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *hold = url_of(s.port, "/hold");
  uvp_curl_fetch_opts_t post = {.body = "x", .body_len = 1};
  uvp_promise_t *p[2];
  assert_int_equal(uvp_curl_fetch(c, hold, NULL, &p[0]), 0);
  assert_int_equal(uvp_curl_fetch(c, hold, &post, &p[1]), 0);
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  assert_non_null(m);
  assert_int_equal(uvp_curl_dump(c, m), 2);
  fclose(m);
  char want[160];
  snprintf(want, sizeof(want), "HTTP GET %s for ", hold);
  assert_non_null(strstr(text, want));
  snprintf(want, sizeof(want), "HTTP POST %s for ", hold);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "(promise at "));
  assert_non_null(strstr(text, "test-curl.c:"));
  /* Oldest first. */
  assert_true(strstr(text, "HTTP GET") < strstr(text, "HTTP POST"));
  free(text);
  assert_int_equal(uvp_curl_dump(c, NULL), UV_EINVAL);
  for (int i = 0; i < 2; i++) {
    uvp_promise_cancel(p[i]);
    uvp_promise_release(p[i]);
  }
  free(hold);
  finish(f, c, &s);
}

/* The core's task dump names each transfer (its described cancel hook),
 * and a group's deadline reaches transfers its members started: they
 * reject with UV_ETIMEDOUT, leave the multi and close their connections. */
static void test_task_dump_and_deadline(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *hold = url_of(s.port, "/hold");
  member_t mh = {c, hold};
  uvp_group_t *g;
  uvp_group_opts_t go = {.limit = 0, .flags = 0, .deadline_ms = 400};
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uvp_group_start(g, start_member, &mh, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  uint64_t t0 = uv_hrtime();
  wait_accepted(f, &s, 2);
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  assert_non_null(m);
  uvp_dump_opts_t o = {0, m, NULL, NULL, 0};
  /* The two members (the join is no task: nothing waits on it yet). */
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &o), 2);
  fclose(m);
  char want[200];
  snprintf(want, sizeof(want), "for HTTP GET %s; in group at ", hold);
  const char *first = strstr(text, want);
  if (first == NULL || strstr(first + 1, want) == NULL)
    fail_msg("two members waiting for '%s' expected: %s", want, text);
  assert_non_null(strstr(first, "; deadline in "));
  free(text);
  run_until_settled(f, join);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_true(ms < 5000);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  wait_client_closed(f, &s, 2);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 2);
  assert_int_equal(st.running, 0);
  uvp_promise_release(join);
  uvp_group_release(g);
  /* No group: the scope's deadline watches the transfer itself. */
  assert_int_equal(uvp_deadline_set(f->ctx, 200), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_curl_fetch(c, hold, NULL, &p), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(uvp_promise_mark_handled(p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ETIMEDOUT);
  wait_client_closed(f, &s, 3);
  uvp_curl_stats(c, &st);
  assert_int_equal(st.cancelled, 3);
  uvp_promise_release(p);
  free(hold);
  finish(f, c, &s);
}

static void test_codes(void **state) {
  (void)state;
  assert_int_equal(uvp_curl_code(CURLE_OK, NULL), 0);
  assert_int_equal(uvp_curl_code(CURLE_OPERATION_TIMEDOUT, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_curl_code(CURLE_COULDNT_CONNECT, NULL), UV_ECONNREFUSED);
  assert_int_equal(uvp_curl_code(CURLE_RECV_ERROR, NULL), UV_EPROTO);
  assert_int_equal(uvp_curl_code(CURLE_PEER_FAILED_VERIFICATION, NULL),
                   UVP_CURL_ETLS);
  assert_int_equal(uvp_curl_code(CURLE_TOO_MANY_REDIRECTS, NULL), UV_ELOOP);
  assert_int_equal(uvp_curl_code(CURLE_UNSUPPORTED_PROTOCOL, NULL), UV_EINVAL);
  assert_int_equal(uvp_curl_code(CURLE_HTTP_RETURNED_ERROR, NULL),
                   UVP_CURL_EHTTP);
  assert_int_equal(uvp_curl_code(CURLE_TFTP_NOTFOUND, NULL), UVP_CURL_ECURL);
  assert_string_equal(uvp_curl_err_name(UVP_CURL_ETLS), "ETLS");
  assert_string_equal(uvp_curl_err_name(UVP_CURL_ECURL), "ECURL");
  assert_string_equal(uvp_curl_err_name(UV_ECONNRESET), "ECONNRESET");
  assert_string_equal(uvp_curl_err_name(UVP_ECLOSED), "ECLOSED");
  assert_non_null(strstr(uvp_curl_strerror(UVP_CURL_ETLS), "TLS"));
  assert_string_equal(uvp_curl_strerror(UV_ETIMEDOUT),
                      uvp_strerror(UV_ETIMEDOUT));
}

/* ---- teardown ------------------------------------------------------------ */

/* uvp_ctx_close with transfers in every state rejects them with
 * UVP_ECLOSED and removes them; uvp_curl_close after it closes the rest,
 * and the loop closes (the teardown checks). */
static void test_ctx_close_in_flight(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  silent_t tls;
  silent_start(&f->loop, &tls);
  backlog_full_t b;
  backlog_full_start(&b);
  uvp_curl_t *c = curl_new(f);
  char *u[4] = {url_of(s.port, "/hold"), url_of(s.port, "/partial"),
                url_of(b.port, "/"), NULL};
  assert_true(asprintf(&u[3], "https://127.0.0.1:%d/", tls.port) > 0);
  uvp_promise_t *p[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(uvp_curl_get(c, u[i], &p[i]), 0);
  run_until_true(f, got_client_hello, &tls);
  uvp_ctx_t *ctx = close_ctx(f);
  (void)ctx;
  for (int i = 0; i < 4; i++)
    assert_int_equal(uvp_promise_reason(p[i], NULL), UVP_ECLOSED);
  uvp_curl_stats_t st;
  uvp_curl_stats(c, &st);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.cancelled, 4);
  /* The binding refuses new work now; closing it closes the rest. */
  uvp_promise_t *q;
  assert_int_equal(uvp_curl_get(c, u[0], &q), UVP_ECLOSED);
  assert_int_equal(uvp_curl_close(c), 0);
  assert_int_equal(uvp_curl_close(c), UV_EINVAL); /* still closing */
  for (int i = 0; i < 4; i++) {
    uvp_promise_release(p[i]);
    free(u[i]);
  }
  hostile_stop(&s);
  silent_stop(&tls);
  backlog_full_stop(&b);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* the servers' handles: on this stack */
}

/* uvp_curl_close first: the transfers reject with UV_ECANCELED. */
static void test_close_in_flight(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/partial");
  uvp_promise_t *p[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_curl_get(c, u, &p[i]), 0);
  wait_accepted(f, &s, 3);
  assert_int_equal(uvp_curl_close(c), 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(uvp_promise_reason(p[i], NULL), UV_ECANCELED);
    uvp_promise_release(p[i]);
  }
  hostile_stop(&s);
  run_loop(f); /* nothing of the binding's keeps it going */
  free(u);
}

/* A binding with nothing in flight keeps nothing alive, whatever
 * connections libcurl caches (the demo server keeps them open). */
static void test_idle_keeps_nothing_alive(void **state) {
  fixture_t *f = *state;
  demo_server_t *demo;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &demo), 0);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(demo_server_port(demo), "/fast");
  uvp_promise_t *p = fetch_wait(f, c, u, NULL, NULL);
  assert_int_equal(response_of(p)->status, 200);
  uvp_promise_release(p);
  demo_server_stop(demo, NULL, NULL);
  run_loop(f); /* returns: the binding's handles do not hold it */
  /* The cached connection (closed by the server meanwhile) is not used:
   * a new request still works. */
  uvp_curl_t *c2 = c;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &demo), 0);
  free(u);
  u = url_of(demo_server_port(demo), "/fast");
  p = fetch_wait(f, c2, u, NULL, NULL);
  assert_int_equal(response_of(p)->status, 200);
  uvp_promise_release(p);
  demo_server_stop(demo, NULL, NULL);
  free(u);
  finish(f, c, NULL);
}

/* A transfer in flight keeps uv_run() going by itself (the server is on
 * another thread: nothing else holds the loop), and nothing more once it
 * has settled. */
static void test_in_flight_keeps_loop_alive(void **state) {
  fixture_t *f = *state;
  thread_server_t t;
  thread_server_start(&t, 150);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(t.port, "/");
  uvp_promise_t *p;
  assert_int_equal(uvp_curl_get(c, u, &p), 0);
  uint64_t t0 = uv_hrtime();
  run_loop(f); /* returns once the transfer is done, not before */
  assert_true(uv_hrtime() - t0 >= 140 * (uint64_t)1000000);
  assert_string_equal(response_of(p)->body.base, "late\n");
  uvp_promise_release(p);
  thread_server_join(&t);
  free(u);
  finish(f, c, NULL);
}

/* Redirects followed (a libcurl option of the program's): the headers are
 * the final response's only. */
static int follow(void *arg, CURL *e) {
  (void)arg;
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  return 0;
}

static void test_headers_of_final_response(void **state) {
  fixture_t *f = *state;
  hostile_t s;
  hostile_start(&f->loop, &s);
  uvp_curl_t *c = curl_new(f);
  char *u = url_of(s.port, "/redirect");
  uvp_curl_fetch_opts_t o = {.setup = follow};
  uvp_promise_t *p = fetch_wait(f, c, u, &o, NULL);
  const uvp_curl_response_t *r = response_of(p);
  assert_int_equal(r->status, 200);
  assert_string_equal(r->body.base, "fast\n");
  assert_int_equal(r->nheaders, 4);
  assert_null(uvp_curl_response_header(r, "Location"));
  assert_null(uvp_curl_response_header(r, "X-Hop"));
  assert_string_equal(uvp_curl_response_header(r, "X-Test"), "yes");
  uvp_promise_release(p);
  /* Not followed: the 302 and its own headers. */
  p = fetch_wait(f, c, u, NULL, NULL);
  r = response_of(p);
  assert_int_equal(r->status, 302);
  assert_string_equal(uvp_curl_response_header(r, "Location"), "/fast");
  uvp_promise_release(p);
  free(u);
  finish(f, c, &s);
}

static void test_closed_ctx(void **state) {
  fixture_t *f = *state;
  uvp_ctx_t *ctx = close_ctx(f);
  uvp_curl_t *c = NULL;
  assert_int_equal(uvp_curl_new(ctx, &c), UVP_ECLOSED);
  assert_null(c);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_fetch_response),
      FIXTURE_TEST(test_perform_own_easy),
      FIXTURE_TEST(test_errors),
      FIXTURE_TEST(test_hostile),
      FIXTURE_TEST(test_cap_counts_decoded),
      FIXTURE_TEST(test_post),
      FIXTURE_TEST(test_trace_context),
      FIXTURE_TEST(test_setup_refused),
      FIXTURE_TEST(test_cancel_resolving),
      FIXTURE_TEST(test_cancel_resolving_in_callback),
      FIXTURE_TEST(test_cancel_resolving_thread),
      FIXTURE_TEST(test_cancel_connecting),
      FIXTURE_TEST(test_cancel_tls_handshake),
      FIXTURE_TEST(test_cancel_mid_body),
      FIXTURE_TEST(test_cancel_in_write_callback),
      FIXTURE_TEST(test_descriptor_reused),
      FIXTURE_TEST(test_timeout_and_race),
      FIXTURE_TEST(test_virtual_clock),
      FIXTURE_TEST(test_virtual_clock_in_a_row),
      FIXTURE_TEST(test_virtual_clock_slow_call),
      QUIET_TEST(test_h2_flood_window_update),
      QUIET_TEST(test_h2_flood_ping),
      QUIET_TEST(test_h2_flood_no_limit),
      FIXTURE_TEST(test_busy_limit_spares_slow_callback),
      FIXTURE_TEST(test_all_settled),
      FIXTURE_TEST(test_fiber),
      FIXTURE_TEST(test_group),
      FIXTURE_TEST(test_group_waits_for_transfer),
      FIXTURE_TEST(test_dump),
      FIXTURE_TEST(test_task_dump_and_deadline),
      cmocka_unit_test(test_codes),
      FIXTURE_TEST(test_ctx_close_in_flight),
      FIXTURE_TEST(test_close_in_flight),
      FIXTURE_TEST(test_idle_keeps_nothing_alive),
      FIXTURE_TEST(test_in_flight_keeps_loop_alive),
      FIXTURE_TEST(test_headers_of_final_response),
      FIXTURE_TEST(test_closed_ctx),
  };
  if (getenv("UVP_TEST_FILTER") != NULL) /* one test: UVP_TEST_FILTER=name */
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The NATS binding against peers that misbehave (nats-peer.h: a server
 * that never sends INFO, never answers the first PING, or announces TLS
 * and never speaks it) and against a real nats-server's refusals: every
 * wait is bounded, every failure says why.
 *
 * nats.c 3.4's connect waits for ever on the second and third (its read
 * of the PONG loops past its own deadline; its TLS handshake blocks): the
 * binding bounds it and abandons it, and the loop, uv_loop_close and
 * nats_CloseAndWait (once the peer has let the thread go) end. */
#include "nats-peer.h"

#include "uvp-nats-js.h"
#include "uvp-nats.h"

/* What "at once" and "within its bound" may take beyond it: slack for a
 * loaded machine, more under valgrind (without the bound it is never). */
#define SLACK_MS (RUNNING_ON_VALGRIND ? 20000u : 3000u)

static uint64_t ms_since(uint64_t t0) { return (uv_hrtime() - t0) / 1000000; }

/* Connect to a peer in `mode`, with `timeout_ms` a server (0: the
 * default); the connect rejects with UV_ETIMEDOUT and the binding's words
 * within its bound, and the loop ends at once after. */
static void connect_held(fixture_t *f, peer_mode_t mode, uint64_t timeout_ms) {
  nats_peer_t peer;
  nats_peer_start(&peer, mode);
  uvp_nats_connect_opts_t co = {.url = peer.url};
  uvp_nats_connect_more_t more = {.connect_timeout_ms = timeout_ms};
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_connect_more(f->ctx, &co, &more, &p), 0);
  run_until_settled(f, p);
  uint64_t took = ms_since(t0);
  void *words = NULL;
  int rc = uvp_promise_reason(p, &words);
  uint64_t bound =
      (timeout_ms > 0 ? timeout_ms : 2000) + UVP_NATS_CONNECT_SLACK_MS;
  if (mode == PEER_SILENT) /* nats.c's own deadline holds there */
    assert_true(rc == UV_ETIMEDOUT || rc == UVP_NATS_ENATS);
  else
    assert_int_equal(rc, UV_ETIMEDOUT);
  bool said = mode == PEER_SILENT ||
              (words != NULL &&
               strstr(words, "did not complete the NATS handshake") != NULL);
  uvp_promise_release(p);
  t0 = uv_hrtime();
  bool ended = fixture_drain(f, 5000); /* nothing waits for the thread */
  uint64_t end_took = ms_since(t0);
  nats_peer_stop(&peer); /* its thread's read ends: it frees what it made */
  /* slack for valgrind: without the bound it is never */
  assert_true(took < bound + SLACK_MS);
  assert_true(said);
  assert_true(ended);
  assert_true(end_took < SLACK_MS);
}

static void test_connect_nopong(void **state) {
  connect_held(*state, PEER_NOPONG, 0);
}

static void test_connect_tlsstall(void **state) {
  connect_held(*state, PEER_TLSSTALL, 300);
}

static void test_connect_silent(void **state) {
  connect_held(*state, PEER_SILENT, 300);
}

/* Cancelled while nats.c waits for the PONG: rejected at once, and the
 * loop ends at once, not when nats.c lets go. */
static void test_connect_cancel_held(void **state) {
  fixture_t *f = *state;
  nats_peer_t peer;
  nats_peer_start(&peer, PEER_NOPONG);
  uvp_nats_connect_opts_t co = {.url = peer.url};
  uvp_nats_connect_more_t more = {.connect_timeout_ms = 600000}; /* not it */
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_connect_more(f->ctx, &co, &more, &p), 0);
  assert_true(fixture_drain(f, 300) == false); /* connecting */
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  uvp_promise_release(p);
  bool ended = fixture_drain(f, 5000);
  uint64_t took = ms_since(t0);
  nats_peer_stop(&peer);
  assert_true(ended);
  assert_true(took < SLACK_MS);
}

/* uvp_nats_open's connection closed while nats.c waits for the PONG: the
 * loop ends at once (what was asked meanwhile: test-nats's
 * test_open_closed_while_connecting).  Its connect failing on its own says why
 * (uvp_nats_connect_error). */
static void test_open_held(void **state) {
  fixture_t *f = *state;
  nats_peer_t peer;
  nats_peer_start(&peer, PEER_NOPONG);
  uvp_nats_connect_opts_t co = {.url = peer.url};
  uvp_nats_t *nc, *nc2;
  uvp_promise_t *r2;
  uvp_nats_connect_more_t slow = {.connect_timeout_ms = 600000}; /* not it */
  assert_int_equal(uvp_nats_open_more(f->ctx, &co, &slow, &nc), 0);
  assert_true(fixture_drain(f, 300) == false);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_close(nc), 0);
  bool ended = fixture_drain(f, 5000);
  uint64_t took = ms_since(t0);
  if (!ended || took >= SLACK_MS)
    nats_peer_stop(&peer);
  assert_true(ended);
  assert_true(took < SLACK_MS);

  uvp_nats_connect_more_t more = {.connect_timeout_ms = 200};
  assert_int_equal(uvp_nats_open_more(f->ctx, &co, &more, &nc2), 0);
  assert_null(uvp_nats_connect_error(nc2));
  assert_int_equal(uvp_nats_request(nc2, "a", "x", 1, NULL, &r2), 0);
  run_until_settled(f, r2);
  assert_int_equal(uvp_promise_reason(r2, NULL), UV_ETIMEDOUT);
  uvp_promise_release(r2);
  const char *why = uvp_nats_connect_error(nc2);
  assert_non_null(why);
  assert_non_null(strstr(why, "within 5200 ms"));
  assert_int_equal(uvp_nats_close(nc2), 0);
  assert_true(fixture_drain(f, 5000));
  nats_peer_stop(&peer);
}

static void test_bad_timeout(void **state) {
  fixture_t *f = *state;
  uvp_nats_connect_more_t more = {.connect_timeout_ms =
                                      UVP_NATS_CONNECT_TIMEOUT_MAX + 1};
  uvp_nats_connect_opts_t co = {.url = "nats://127.0.0.1:9"};
  uvp_promise_t *p;
  uvp_nats_t *nc;
  assert_int_equal(uvp_nats_connect_more(f->ctx, &co, &more, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_open_more(f->ctx, &co, &more, &nc), UV_EINVAL);
  assert_int_equal(uvp_nats_open_more(NULL, &co, &more, &nc), UV_EINVAL);
  assert_null(uvp_nats_connect_error(NULL));
}

/* ---- a real server's refusals --------------------------------------- */

/* User "lim": may publish and subscribe only to "ok.>"
 * and its own inbox prefix "_INBOX_lim.>" (password "pw"). */
static const char *const limited_conf =
    "authorization { users: [ {user: lim, password: pw, permissions: {\n"
    "  publish: [\"ok.>\", \"_INBOX_lim.>\"], subscribe: [\"ok.>\", "
    "\"_INBOX_lim.>\"]}} ] }\n";

typedef struct denied_s {
  int events;
} denied_t;

static void count_denied(void *arg, uvp_nats_t *nc, uvp_nats_event_t event) {
  (void)nc;
  if (event == UVP_NATS_DENIED)
    ((denied_t *)arg)->events++;
}

static uvp_nats_t *connect_limited(fixture_t *f, const nats_server_t *srv,
                                   const char *prefix, denied_t *d) {
  natsOptions *no;
  assert_int_equal(natsOptions_Create(&no), NATS_OK);
  assert_int_equal(natsOptions_SetUserInfo(no, "lim", "pw"), NATS_OK);
  uvp_nats_connect_opts_t co = {
      .url = srv->url, .options = no, .on_event = count_denied, .arg = d};
  uvp_nats_connect_more_t more = {.inbox_prefix = prefix};
  uvp_nats_t *nc;
  assert_int_equal(uvp_nats_open_more(f->ctx, &co, &more, &nc), 0);
  return nc;
}

/* A publish and a subscription the server refuses end at once with
 * UV_EACCES and its words (the subject), not at their timeouts; what is
 * allowed goes on, on the same connection. */
static void test_permission_violation(void **state) {
  fixture_t *f = *state;
  if (!nats_server_available())
    SKIP_BECAUSE("no nats-server (UVP_NATS_SERVER)");
  nats_server_t srv = {0};
  nats_server_config(&srv, limited_conf);
  nats_server_start(&srv);
  denied_t d = {0};
  uvp_nats_t *nc = connect_limited(f, &srv, "_INBOX_lim", &d);
  uvp_nats_request_opts_t ro = {.timeout_ms = 60000};
  uvp_promise_t *r, *next, *ok;
  uvp_nats_sub_t *sub, *oksub;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_request(nc, "secret.x", "x", 1, &ro, &r), 0);
  run_until_settled(f, r);
  void *why = NULL;
  assert_int_equal(uvp_promise_reason(r, &why), UV_EACCES);
  assert_true(ms_since(t0) < SLACK_MS); /* not its 60 s */
  assert_non_null(why);
  assert_non_null(strstr(natsMsg_GetData(why), "Publish to \"secret.x\""));
  assert_non_null(strstr(uvp_nats_denied(nc), "secret.x"));
  uvp_promise_release(r);

  assert_int_equal(uvp_nats_subscribe(nc, "hidden.y", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &next), 0);
  run_until_settled(f, next);
  assert_int_equal(uvp_promise_reason(next, NULL), UV_EACCES);
  assert_non_null(strstr(uvp_nats_denied(nc), "Subscription to \"hidden.y\""));
  uvp_promise_release(next);
  assert_int_equal(d.events, 2);

  /* allowed: a request answered on its own inbox prefix */
  assert_int_equal(uvp_nats_subscribe(nc, "ok.echo", NULL, &oksub), 0);
  uvp_promise_t *fl, *in;
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_reason(fl, NULL), 0);
  uvp_promise_release(fl);
  assert_int_equal(uvp_nats_request(nc, "ok.echo", "hi", 2, &ro, &ok), 0);
  assert_int_equal(uvp_nats_next(oksub, &in), 0);
  run_until_settled(f, in);
  natsMsg *m = uvp_promise_value(in);
  assert_non_null(m);
  assert_int_equal(strncmp(natsMsg_GetReply(m), "_INBOX_lim.", 11), 0);
  assert_int_equal(
      uvp_nats_publish(nc, natsMsg_GetReply(m), NULL, "yo", 2, NULL), 0);
  uvp_promise_release(in);
  run_until_settled(f, ok);
  assert_int_equal(uvp_promise_reason(ok, NULL), 0);
  uvp_promise_release(ok);
  assert_int_equal(d.events, 2);
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_true(fixture_drain(f, 10000));
  nats_server_kill(&srv);
}

/* uvp_nats_open without its user's inbox prefix: the server refuses the
 * inbox's subscription, and every request ends UV_EACCES at once with
 * those words (before: each waited out its timeout in silence). */
static void test_inbox_refused(void **state) {
  fixture_t *f = *state;
  if (!nats_server_available())
    SKIP_BECAUSE("no nats-server (UVP_NATS_SERVER)");
  nats_server_t srv = {0};
  nats_server_config(&srv, limited_conf);
  nats_server_start(&srv);
  denied_t d = {0};
  uvp_nats_t *nc = connect_limited(f, &srv, NULL, &d);
  uvp_nats_request_opts_t ro = {.timeout_ms = 60000};
  uvp_promise_t *r;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_request(nc, "ok.nobody", "x", 1, &ro, &r), 0);
  run_until_settled(f, r);
  void *why = NULL;
  int rc = uvp_promise_reason(r, &why);
  uint64_t took = ms_since(t0);
  assert_int_equal(rc, UV_EACCES);
  assert_true(took < SLACK_MS);
  assert_non_null(strstr(natsMsg_GetData(why), "Subscription to \"_INBOX."));
  uvp_promise_release(r);
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_true(fixture_drain(f, 10000));
  nats_server_kill(&srv);
}

/* ---- a JetStream reply shaped to be slow ------------------------------ */

static void plant_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                        void *closure) {
  (void)sub;
  const char *body = closure;
  if (natsMsg_GetReply(msg) != NULL)
    assert_int_equal(natsConnection_Publish(nc, natsMsg_GetReply(msg), body,
                                            (int)strlen(body)),
                     NATS_OK);
  natsMsg_Destroy(msg);
}

static double loop_cpu_ms(void) {
  struct timespec t;
  assert_int_equal(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t), 0);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* A reply under the 1 MiB cap but of half a million values (jansson's
 * time goes by values: 41-110 ms of the loop before) is refused
 * UV_EMSGSIZE after a scan: the loop thread's CPU for the whole call
 * stays under 25 ms (a planted responder answers $JS.API.STREAM.INFO). */
static void test_js_reply_costly(void **state) {
  fixture_t *f = *state;
  if (!nats_server_available())
    SKIP_BECAUSE("no nats-server (UVP_NATS_SERVER)");
  nats_server_t srv = {0};
  nats_server_start(&srv);
  size_t n = ((size_t)1 << 20) - 64, o = 0;
  char *body = malloc(n + 1);
  assert_non_null(body);
  body[o++] = '[';
  while (o + 3 < n) {
    body[o++] = '0';
    body[o++] = ',';
  }
  body[o - 1] = ']';
  body[o] = '\0';
  natsConnection *planted;
  natsSubscription *ps;
  assert_int_equal(natsConnection_ConnectTo(&planted, srv.url), NATS_OK);
  assert_int_equal(natsConnection_Subscribe(&ps, planted,
                                            "$JS.API.STREAM.INFO.s",
                                            plant_reply, body),
                   NATS_OK);
  assert_int_equal(natsConnection_Flush(planted), NATS_OK);
  uvp_nats_connect_opts_t co = {.url = srv.url};
  uvp_promise_t *cp, *p;
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &cp), 0);
  run_until_settled(f, cp);
  uvp_nats_t *nc = uvp_promise_value(cp);
  assert_non_null(nc);
  uvp_promise_release(cp);
  uvp_nats_js_t *js;
  assert_int_equal(uvp_nats_js_new(nc, NULL, &js), 0);
  double t0 = loop_cpu_ms();
  assert_int_equal(uvp_nats_js_stream_info(js, "s", &p), 0);
  run_until_settled(f, p);
  double cpu = loop_cpu_ms() - t0;
  void *why = NULL;
  int rc = uvp_promise_reason(p, &why);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_free(js), 0);
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_true(fixture_drain(f, 10000));
  natsSubscription_Destroy(ps);
  natsConnection_Destroy(planted);
  free(body);
  nats_server_kill(&srv);
  printf("the loop's CPU for a reply of half a million values: %.1f ms\n", cpu);
  assert_int_equal(rc, UV_EMSGSIZE);
  if (!RUNNING_ON_VALGRIND)
    assert_true(cpu < 25.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_connect_nopong),
      QUIET_TEST(test_connect_tlsstall),
      QUIET_TEST(test_connect_silent),
      QUIET_TEST(test_connect_cancel_held),
      QUIET_TEST(test_open_held),
      QUIET_TEST(test_bad_timeout),
      QUIET_TEST(test_permission_violation),
      QUIET_TEST(test_inbox_refused),
      QUIET_TEST(test_js_reply_costly),
  };
  if (getenv("UVP_TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  /* every abandoned connect's thread lets go once its peer closed */
  for (int i = 0; i < 500 && uvp_nats_connects_abandoned() > 0; i++)
    usleep(10000);
  if (uvp_nats_connects_abandoned() > 0) {
    fprintf(stderr, "%zu connects still in nats.c\n",
            uvp_nats_connects_abandoned());
    return 1;
  }
  natsStatus s = nats_CloseAndWait(5000); /* or something is left behind */
  if (s != NATS_OK) {
    fprintf(stderr, "nats_CloseAndWait: %s\n", natsStatus_GetText(s));
    return 1;
  }
  return rc;
}

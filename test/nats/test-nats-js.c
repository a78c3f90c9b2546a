/* The NATS binding's JetStream part against a real nats-server with
 * JetStream (nats-env.h: -js -sd on a fresh store directory) that the
 * group starts on a port of its own: streams and consumers, publishes
 * with acknowledgement and their dedupe.  Each case uses streams of its
 * own names on the group's server; a case that stops its server starts
 * one of its own.  The fixture (JS_TEST) connects and makes a JetStream
 * context, and tears them down; every case ends with uv_loop_close() == 0
 * (fixture_teardown). */
#include <inttypes.h>

#include "nats-env.h"

#include "uvp-nats-js.h"

/* ---- scaffolding --------------------------------------------------------- */

static uvp_nats_t *connect_url(fixture_t *f, uvp_ctx_t *ctx, const char *url) {
  uvp_promise_t *p;
  uvp_nats_connect_opts_t co = {.url = url};
  assert_int_equal(uvp_nats_connect(ctx, &co, &p), 0);
  run_until_settled(f, p);
  if (uvp_promise_state(p) != UVP_FULFILLED)
    fail_msg("connect: %s", uvp_nats_err_name(uvp_promise_reason(p, NULL)));
  uvp_nats_t *nc = uvp_promise_value(p);
  uvp_promise_release(p);
  return nc;
}

static int reason(uvp_promise_t *p) { return uvp_promise_reason(p, NULL); }

/* Run until p settles; fail, naming the code, unless it fulfilled. */
static void *must(fixture_t *f, uvp_promise_t *p) {
  run_until_settled(f, p);
  if (uvp_promise_state(p) != UVP_FULFILLED) {
    void *payload = NULL;
    int rc = uvp_promise_reason(p, &payload);
    const uvp_nats_js_error_t *e = payload;
    fail_msg("rejected: %s%s%s", uvp_nats_err_name(rc), e != NULL ? ": " : "",
             e != NULL ? e->description : "");
  }
  return uvp_promise_value(p);
}

/* The code p rejects with (after running until it settles). */
static int rejection(fixture_t *f, uvp_promise_t *p) {
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  return reason(p);
}

/* ---- the fixture --------------------------------------------------------- */

static nats_server_t group_server;

typedef struct js_case_s {
  nats_server_t *s;  /* the case's server: &group_server, or &own */
  nats_server_t own; /* a server of the case's own (pid 0: none) */
  uvp_nats_t *nc;    /* the case's connection (NULL: none, or closed) */
  uvp_nats_js_t *js; /* its JetStream context */
} js_case_t;

static js_case_t T;

static int group_setup(void **state) {
  (void)state;
  if (nats_server_available()) {
    nats_server_jetstream(&group_server);
    nats_server_start(&group_server);
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  nats_server_kill(&group_server);
  nats_server_remove_store(&group_server);
  return 0;
}

static int setup_conn(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  T.s = &group_server;
  if (nats_server_available()) {
    T.nc = connect_url(*state, ((fixture_t *)*state)->ctx, T.s->url);
    assert_int_equal(uvp_nats_js_new(T.nc, NULL, &T.js), 0);
  }
  return 0;
}

static int js_teardown(void **state) {
  fixture_t *f = *state;
  if (f->returned && !fixture_skipped) {
    if (T.js != NULL)
      assert_int_equal(uvp_nats_js_free(T.js), 0);
    if (T.nc != NULL)
      assert_int_equal(uvp_nats_close(T.nc), 0);
    assert_true(fixture_drain(f, 10000));
  }
  nats_server_kill(&T.own);
  nats_server_remove_store(&T.own);
  return fixture_teardown(state);
}

static void js_run(void **state) {
  if (!nats_server_available())
    SKIP_BECAUSE("nats-server is not installed (UVP_NATS_SERVER)");
  fixture_run(state);
}

#define JS_TEST(fn, setup)                                                     \
  {                                                                            \
    .name = #fn, .test_func = js_run, .setup_func = (setup),                   \
    .teardown_func = js_teardown, .initial_state = &(fixture_fn_t) {           \
      .test = (fn)                                                             \
    }                                                                          \
  }

/* A work-queue stream NAME on NAME.> */
static void workqueue(fixture_t *f, const char *name, int replicas) {
  char subj[64];
  snprintf(subj, sizeof(subj), "%s.>", name);
  uvp_nats_js_stream_config_t c = {.name = name,
                                   .subjects = (const char *[]){subj, NULL},
                                   .retention = UVP_NATS_JS_WORKQUEUE,
                                   .replicas = replicas};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
}

/* ---- streams and consumers ----------------------------------------------- */

static void test_stream_and_consumer(void **state) {
  fixture_t *f = *state;
  uvp_nats_js_stream_config_t c = {.name = "ORDERS",
                                   .subjects =
                                       (const char *[]){"orders.*", NULL},
                                   .retention = UVP_NATS_JS_WORKQUEUE,
                                   .max_age_ms = 3600000,
                                   .duplicate_window_ms = 60000};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), 0);
  const uvp_nats_js_stream_info_t *si = must(f, p);
  assert_string_equal(si->name, "ORDERS");
  assert_int_equal(si->messages, 0);
  assert_int_equal(si->replicas, 1);
  assert_null(si->leader); /* one server: no cluster */
  uvp_promise_release(p);

  /* the same again: found, not made twice */
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  /* another configuration under that name */
  c.max_age_ms = 60000;
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), 0);
  assert_int_equal(rejection(f, p), UV_EEXIST);
  void *payload;
  uvp_promise_reason(p, &payload);
  const uvp_nats_js_error_t *e = payload;
  assert_non_null(e);
  assert_int_equal(e->err_code, 10058);
  print_message("another configuration: %d %d %s\n", e->code, e->err_code,
                e->description);
  uvp_promise_release(p);

  uvp_nats_js_consumer_config_t cc = {.durable = "workers",
                                      .ack_wait_ms = 2000,
                                      .max_deliver = 5,
                                      .max_ack_pending = 8};
  assert_int_equal(uvp_nats_js_consumer_add(T.js, "ORDERS", &cc, &p), 0);
  const uvp_nats_js_consumer_info_t *ci = must(f, p);
  assert_string_equal(ci->stream, "ORDERS");
  assert_string_equal(ci->name, "workers");
  assert_int_equal(ci->ack_wait_ms, 2000);
  assert_int_equal(ci->max_ack_pending, 8);
  assert_int_equal(ci->max_deliver, 5);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_consumer_add(T.js, "ORDERS", &cc, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  /* a second unfiltered consumer on a work queue: the server refuses */
  cc.durable = "others";
  assert_int_equal(uvp_nats_js_consumer_add(T.js, "ORDERS", &cc, &p), 0);
  assert_int_equal(rejection(f, p), UVP_NATS_EJETSTREAM);
  uvp_promise_release(p);

  assert_int_equal(uvp_nats_js_consumer_info(T.js, "ORDERS", "workers", &p), 0);
  ci = must(f, p);
  assert_int_equal(ci->num_pending, 0);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_consumer_delete(T.js, "ORDERS", "workers", &p),
                   0);
  assert_null(must(f, p));
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_consumer_info(T.js, "ORDERS", "workers", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_consumer_info(T.js, "NOPE", "workers", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);

  assert_int_equal(uvp_nats_js_stream_info(T.js, "ORDERS", &p), 0);
  si = must(f, p);
  assert_int_equal(si->consumers, 0);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_stream_delete(T.js, "ORDERS", &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_stream_info(T.js, "ORDERS", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_stream_delete(T.js, "ORDERS", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);
}

/* ---- publish with acknowledgement ---------------------------------------- */

static const uvp_nats_js_ack_t *publish(fixture_t *f, uvp_promise_t **p,
                                        const char *subject, const char *data,
                                        const uvp_nats_js_publish_opts_t *o) {
  assert_int_equal(uvp_nats_js_publish(T.js, subject, data, strlen(data), o, p),
                   0);
  return must(f, *p);
}

static void test_publish_and_dedupe(void **state) {
  fixture_t *f = *state;
  workqueue(f, "PUB", 0);
  uvp_promise_t *p;
  const uvp_nats_js_ack_t *a = publish(f, &p, "PUB.a", "one", NULL);
  assert_string_equal(a->stream, "PUB");
  assert_int_equal(a->seq, 1);
  assert_false(a->duplicate);
  uvp_promise_release(p);

  /* the same Nats-Msg-Id twice: stored once */
  uvp_nats_js_publish_opts_t o = {.msg_id = "job-1"};
  a = publish(f, &p, "PUB.a", "two", &o);
  assert_int_equal(a->seq, 2);
  assert_false(a->duplicate);
  uvp_promise_release(p);
  a = publish(f, &p, "PUB.a", "two again", &o);
  assert_int_equal(a->seq, 2);
  assert_true(a->duplicate);
  uvp_promise_release(p);

  /* ten at once, each its own id, then all ten again: ten stored */
  enum { N = 10 };
  uvp_promise_t *ps[2 * N];
  char ids[N][16];
  for (int i = 0; i < 2 * N; i++) {
    snprintf(ids[i % N], sizeof(ids[0]), "burst-%d", i % N);
    uvp_nats_js_publish_opts_t bo = {.msg_id = ids[i % N]};
    assert_int_equal(uvp_nats_js_publish(T.js, "PUB.b", "x", 1, &bo, &ps[i]),
                     0);
  }
  int dups = 0;
  for (int i = 0; i < 2 * N; i++) {
    a = must(f, ps[i]);
    dups += a->duplicate;
    assert_true(a->seq >= 3 && a->seq < 3 + N);
    uvp_promise_release(ps[i]);
  }
  assert_int_equal(dups, N);

  /* the subject's last sequence, expected */
  o = (uvp_nats_js_publish_opts_t){.flags = UVP_NATS_JS_EXPECT_LAST,
                                   .expect_last_subject_seq = 0};
  a = publish(f, &p, "PUB.c", "first", &o);
  uint64_t last = a->seq;
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_publish(T.js, "PUB.c", "x", 1, &o, &p), 0);
  assert_int_equal(rejection(f, p), UVP_NATS_EREVISION);
  uvp_promise_release(p);
  o.expect_last_subject_seq = last;
  (void)publish(f, &p, "PUB.c", "second", &o);
  uvp_promise_release(p);
  o = (uvp_nats_js_publish_opts_t){.expect_stream = "OTHER"};
  assert_int_equal(uvp_nats_js_publish(T.js, "PUB.c", "x", 1, &o, &p), 0);
  assert_int_equal(rejection(f, p), UV_EEXIST);
  uvp_promise_release(p);

  /* no stream takes the subject */
  assert_int_equal(uvp_nats_js_publish(T.js, "nostream.x", "x", 1, NULL, &p),
                   0);
  assert_int_equal(rejection(f, p), UVP_NATS_ENORESPONDERS);
  uvp_promise_release(p);

  assert_int_equal(uvp_nats_js_stream_info(T.js, "PUB", &p), 0);
  const uvp_nats_js_stream_info_t *si = must(f, p);
  assert_int_equal(si->messages, 2 + N + 2);
  uvp_promise_release(p);

  /* a stored message carries no Uvp-Timeout-Ms, but Uvp-Deadline */
  o = (uvp_nats_js_publish_opts_t){.deadline_ms = 60000};
  (void)publish(f, &p, "PUB.d", "job", &o);
  uvp_promise_release(p);
}

/* ---- bad input, closed connection ---------------------------------------- */

static void test_js_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  uvp_nats_js_t *js;
  assert_int_equal(uvp_nats_js_new(NULL, NULL, &js), UV_EINVAL);
  assert_int_equal(uvp_nats_js_new(T.nc, NULL, NULL), UV_EINVAL);
  uvp_nats_js_opts_t jo = {.domain = "a.b"};
  assert_int_equal(uvp_nats_js_new(T.nc, &jo, &js), UV_EINVAL);
  assert_int_equal(uvp_nats_js_free(NULL), UV_EINVAL);
  uvp_nats_js_stream_config_t c = {.name = "bad name"};
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), UV_EINVAL);
  c.name = "GOOD";
  c.subjects = (const char *[]){"a b", NULL};
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), UV_EINVAL);
  c.subjects = NULL;
  c.retention = (uvp_nats_js_retention_t)7;
  assert_int_equal(uvp_nats_js_stream_add(T.js, &c, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_js_stream_add(T.js, NULL, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_js_stream_info(T.js, "a.b", &p), UV_EINVAL);
  uvp_nats_js_consumer_config_t cc = {.durable = NULL};
  assert_int_equal(uvp_nats_js_consumer_add(T.js, "S", &cc, &p), UV_EINVAL);
  cc.durable = "d";
  cc.nbackoff = 2;
  assert_int_equal(uvp_nats_js_consumer_add(T.js, "S", &cc, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_js_publish(T.js, "a.*", "x", 1, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_nats_js_publish(T.js, "a", NULL, 1, NULL, &p),
                   UV_EINVAL);
  uvp_nats_js_publish_opts_t o = {.msg_id = "a\r\nb"};
  assert_int_equal(uvp_nats_js_publish(T.js, "a", "x", 1, &o, &p), UV_EINVAL);
  assert_null(p);

  /* the connection closes: what waits rejects, later calls UVP_ECLOSED,
   * and the context is freed after the connection */
  assert_int_equal(uvp_nats_js_stream_info(T.js, "WAITS", &p), 0);
  assert_int_equal(uvp_nats_close(T.nc), 0);
  T.nc = NULL;
  assert_int_equal(rejection(f, p), UV_ECANCELED);
  uvp_promise_release(p);
  assert_true(fixture_drain(f, 10000));
  assert_int_equal(uvp_nats_js_stream_info(T.js, "WAITS", &p), UVP_ECLOSED);
  assert_int_equal(uvp_nats_js_free(T.js), 0);
  T.js = NULL;
}

/* A call cut by the scope's deadline, and one in flight at uvp_ctx_close:
 * the record ends, nothing leaks. */
static uvp_ret_t cut_fiber(void *arg) {
  uvp_promise_t *p;
  uvp_deadline_set(arg, 100);
  assert_int_equal(uvp_nats_js_stream_info(T.js, "CUT", &p), 0);
  int rc = uvp_await(p, NULL);
  uvp_promise_release(p);
  return uvp_ret_value((void *)(intptr_t)rc, NULL);
}

static void test_js_cut(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  /* freeze the server: the answer cannot come */
  kill(T.s->pid, SIGSTOP);
  assert_int_equal(uvp_fiber_spawn(f->ctx, cut_fiber, f->ctx, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal((int)(intptr_t)uvp_promise_value(p), UV_ETIMEDOUT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_publish(T.js, "CUT.x", "x", 1, NULL, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(reason(p), UV_ECANCELED);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_publish(T.js, "CUT.x", "x", 1, NULL, &p), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  assert_non_null(fp);
  uvp_dump_opts_t o = {.stream = fp};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 1);
  fclose(fp);
  print_message("%s", buf);
  assert_non_null(strstr(buf, "for JetStream publish CUT.x"));
  free(buf);
  uvp_promise_release(p);
  kill(T.s->pid, SIGCONT);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      JS_TEST(test_stream_and_consumer, setup_conn),
      JS_TEST(test_publish_and_dedupe, setup_conn),
      JS_TEST(test_js_bad_input, setup_conn),
      JS_TEST(test_js_cut, setup_conn),
  };
  if (getenv("UVP_TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
  nats_CloseAndWait(rc == 0 ? 0 : 2000);
  return rc;
}

/* The NATS binding's JetStream part against a real nats-server with
 * JetStream (nats-env.h: -js -sd on a fresh store directory) that the
 * group starts on a port of its own: streams and consumers, publishes
 * with acknowledgement and their dedupe, cuts and the task dump; pulls
 * bounded by max_ack_pending, redelivery after ack_wait, +WPI by the
 * binding and by hand, nak with a delay, term, back-off; serving a pull
 * and draining it with a deadline; KV reads, writes, compare-and-set
 * races and watches (and a server restarted under one); durable promises
 * (their states and JSON, timeouts, two processes racing to complete the
 * same 1 000, one killed and started again: nats-js-helper.c), the
 * virtual clock; and a 3-node cluster on 127.0.0.1 whose stream leader
 * is killed during a durable fan-out.  Each case uses streams and
 * buckets of its own names on the group's server; a case that stops its
 * server starts one of its own.  The fixture (JS_TEST) connects and
 * makes a JetStream context, and tears them down; every case ends with
 * uv_loop_close() == 0 (fixture_teardown). */
#include <inttypes.h>
#include <poll.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "nats-env.h"
#include "nats-suite.h"

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
  if (T.s != NULL && T.s->pid > 0) /* a case that froze it */
    kill(T.s->pid, SIGCONT);
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
  nats_server_freeze(T.s);
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

/* ---- pulling --------------------------------------------------------------
 */

/* Run the loop for ms of real time. */
static void run_for(fixture_t *f, uint64_t ms) {
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, ms, NULL, NULL, 0, &d), 0);
  run_until_settled(f, d);
  uvp_promise_release(d);
}

static double ms_since(uint64_t t0) { return (double)(uv_hrtime() - t0) / 1e6; }

static void consumer(fixture_t *f, const char *stream,
                     const uvp_nats_js_consumer_config_t *c) {
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_consumer_add(T.js, stream, c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
}

static uvp_nats_js_pull_t *pull_open(fixture_t *f, const char *stream,
                                     const char *name,
                                     const uvp_nats_js_pull_opts_t *o) {
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_pull(T.js, stream, name, o, &p), 0);
  uvp_nats_js_pull_t *pull = must(f, p);
  uvp_promise_release(p);
  return pull;
}

static void publish_n(fixture_t *f, const char *subject, int n) {
  for (int i = 0; i < n; i++) {
    char body[16];
    snprintf(body, sizeof(body), "m%d", i);
    uvp_promise_t *p;
    assert_int_equal(
        uvp_nats_js_publish(T.js, subject, body, strlen(body), NULL, &p), 0);
    (void)must(f, p);
    uvp_promise_release(p);
  }
}

static uvp_nats_js_msg_t *msg_of(uvp_promise_t *p) {
  return uvp_promise_value(p);
}

static int settled_count(uvp_promise_t **ps, int n) {
  int k = 0;
  for (int i = 0; i < n; i++)
    k += uvp_promise_state(ps[i]) != UVP_PENDING;
  return k;
}

/* 10 messages, max_ack_pending 4: ten waits get four, and the consumer has
 * four out; each ack lets one more in, in order. */
static void test_pull_bounded(void **state) {
  fixture_t *f = *state;
  workqueue(f, "BOUND", 0);
  consumer(
      f, "BOUND",
      &(uvp_nats_js_consumer_config_t){.durable = "w", .max_ack_pending = 4});
  publish_n(f, "BOUND.x", 10);
  uvp_nats_js_pull_t *pull = pull_open(f, "BOUND", "w", NULL);
  enum { N = 10 };
  uvp_promise_t *ps[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_nats_js_next(pull, &ps[i]), 0);
  for (int i = 0; i < 4; i++)
    (void)must(f, ps[i]);
  run_for(f, 300); /* nothing more comes */
  assert_int_equal(settled_count(ps, N), 4);
  uvp_nats_js_pull_stats_t st;
  assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
  assert_int_equal(st.held, 4);
  assert_int_equal(st.asked, 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_consumer_info(T.js, "BOUND", "w", &p), 0);
  const uvp_nats_js_consumer_info_t *ci = must(f, p);
  assert_int_equal(ci->num_ack_pending, 4);
  assert_int_equal(ci->num_pending, 6);
  uvp_promise_release(p);
  for (int i = 0; i < N; i++) {
    uvp_nats_js_msg_t *m = must(f, ps[i]);
    char want[16];
    snprintf(want, sizeof(want), "m%d", i);
    assert_memory_equal(natsMsg_GetData(m->msg), want, strlen(want));
    assert_string_equal(m->stream, "BOUND");
    assert_string_equal(m->consumer, "w");
    assert_int_equal(m->stream_seq, (uint64_t)i + 1);
    assert_int_equal(m->delivered, 1);
    assert_int_equal(uvp_nats_js_ack(m), 0);
    assert_int_equal(uvp_nats_js_ack(m), UV_EALREADY);
    uvp_promise_release(ps[i]);
    assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
    assert_true(st.held + st.asked <= 4);
  }
  /* the acks were heard: a work queue keeps nothing acknowledged */
  for (int tries = 0; tries < 100; tries++) {
    assert_int_equal(uvp_nats_js_stream_info(T.js, "BOUND", &p), 0);
    uint64_t left = ((const uvp_nats_js_stream_info_t *)must(f, p))->messages;
    uvp_promise_release(p);
    if (left == 0)
      break;
    run_for(f, 20);
  }
  assert_int_equal(uvp_nats_js_stream_info(T.js, "BOUND", &p), 0);
  assert_int_equal(((const uvp_nats_js_stream_info_t *)must(f, p))->messages,
                   0);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
  print_message("%llu pull requests for %llu messages\n",
                (unsigned long long)st.requests,
                (unsigned long long)st.received);
  assert_int_equal(st.received, N);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  assert_int_equal(uvp_nats_js_pull_close(pull), UV_EINVAL);
}

/* Not acknowledged within ack_wait (no WPI): redelivered, counted. */
static void test_pull_redelivery(void **state) {
  fixture_t *f = *state;
  workqueue(f, "REDO", 0);
  consumer(
      f, "REDO",
      &(uvp_nats_js_consumer_config_t){.durable = "w", .ack_wait_ms = 500});
  publish_n(f, "REDO.x", 1);
  uvp_nats_js_pull_opts_t o = {.flags = UVP_NATS_JS_NO_AUTO_WPI};
  uvp_nats_js_pull_t *pull = pull_open(f, "REDO", "w", &o);
  uvp_promise_t *a, *b;
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  uvp_nats_js_msg_t *m = must(f, a);
  assert_int_equal(m->delivered, 1);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  uvp_nats_js_msg_t *m2 = must(f, b);
  double ms = ms_since(t0);
  print_message("redelivered after %.0f ms (ack_wait 500)\n", ms);
  assert_true(ms >= 450);
  assert_int_equal(m2->stream_seq, m->stream_seq);
  assert_int_equal(m2->delivered, 2);
  assert_int_equal(uvp_nats_js_ack(m2), 0);
  /* the first copy's ack comes late: the message is gone already */
  assert_int_equal(uvp_nats_js_ack(m), 0);
  uvp_promise_release(a);
  uvp_promise_release(b);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
}

/* A message held past its ack_wait while marked in progress, by the
 * binding (every half ack_wait) or by hand: not redelivered. */
static void in_progress_case(fixture_t *f, const char *stream, bool by_hand) {
  workqueue(f, stream, 0);
  consumer(
      f, stream,
      &(uvp_nats_js_consumer_config_t){.durable = "w", .ack_wait_ms = 600});
  char subj[32];
  snprintf(subj, sizeof(subj), "%s.x", stream);
  publish_n(f, subj, 1);
  uvp_nats_js_pull_opts_t o = {.flags = by_hand ? UVP_NATS_JS_NO_AUTO_WPI : 0};
  uvp_nats_js_pull_t *pull = pull_open(f, stream, "w", &o);
  uvp_nats_js_pull_t *other = pull_open(f, stream, "w", NULL);
  uvp_promise_t *a, *b;
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  uvp_nats_js_msg_t *m = must(f, a);
  assert_int_equal(uvp_nats_js_next(other, &b), 0);
  for (int i = 0; i < 8; i++) { /* 2 s: over three ack_waits */
    run_for(f, 250);
    if (by_hand)
      assert_int_equal(uvp_nats_js_in_progress(m), 0);
  }
  assert_int_equal(uvp_promise_state(b), UVP_PENDING);
  uvp_nats_js_pull_stats_t st;
  assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
  print_message("%s: %llu +WPI by the binding in 2 s (ack_wait 600 ms)\n",
                by_hand ? "by hand" : "auto", (unsigned long long)st.wpi);
  assert_true(by_hand ? st.wpi == 0 : st.wpi >= 5);
  assert_int_equal(uvp_nats_js_ack(m), 0);
  assert_int_equal(uvp_nats_js_in_progress(m), UV_EALREADY);
  uvp_promise_release(a);
  assert_int_equal(uvp_nats_js_pull_close(other), 0);
  assert_int_equal(rejection(f, b), UV_ECANCELED);
  uvp_promise_release(b);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
}

static void test_pull_auto_wpi(void **state) {
  in_progress_case(*state, "WPIA", false);
}

static void test_pull_wpi_by_hand(void **state) {
  in_progress_case(*state, "WPIH", true);
}

/* -NAK with a delay: not before it; +TERM: never again; the consumer's
 * back-off spaces unacknowledged redeliveries, up to max_deliver. */
static void test_pull_nak_term_backoff(void **state) {
  fixture_t *f = *state;
  workqueue(f, "NAK", 0);
  consumer(f, "NAK",
           &(uvp_nats_js_consumer_config_t){
               .durable = "w", .filter_subject = "NAK.a", .ack_wait_ms = 5000});
  publish_n(f, "NAK.a", 2);
  uvp_nats_js_pull_t *pull = pull_open(f, "NAK", "w", NULL);
  uvp_promise_t *a, *b, *c;
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  uvp_nats_js_msg_t *m = must(f, a);
  assert_int_equal(m->stream_seq, 1);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_js_nak(m, 400), 0);
  assert_int_equal(uvp_nats_js_nak(m, 400), UV_EALREADY);
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  uvp_nats_js_msg_t *m2 = must(f, b); /* the second message, at once */
  assert_int_equal(m2->stream_seq, 2);
  assert_int_equal(uvp_nats_js_term(m2), 0);
  assert_int_equal(uvp_nats_js_next(pull, &c), 0);
  uvp_nats_js_msg_t *m3 = must(f, c); /* the first again, after 400 ms */
  double ms = ms_since(t0);
  print_message("naked with 400 ms: back after %.0f ms\n", ms);
  assert_true(ms >= 380);
  assert_int_equal(m3->stream_seq, 1);
  assert_int_equal(m3->delivered, 2);
  assert_int_equal(uvp_nats_js_ack(m3), 0);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_promise_release(c);
  /* the termed one never comes back */
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  run_for(f, 600);
  assert_int_equal(uvp_promise_state(a), UVP_PENDING);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  assert_int_equal(rejection(f, a), UV_ECANCELED);
  uvp_promise_release(a);

  /* back-off 300, 600 ms, max_deliver 3, nothing acknowledged */
  const uint64_t backoff[] = {300, 600};
  consumer(f, "NAK",
           &(uvp_nats_js_consumer_config_t){.durable = "b",
                                            .filter_subject = "NAK.b",
                                            .max_deliver = 3,
                                            .backoff_ms = backoff,
                                            .nbackoff = 2});
  publish_n(f, "NAK.b", 1);
  uvp_nats_js_pull_opts_t o = {.flags = UVP_NATS_JS_NO_AUTO_WPI};
  pull = pull_open(f, "NAK", "b", &o);
  double at[3];
  uvp_promise_t *ps[4];
  t0 = uv_hrtime();
  for (int i = 0; i < 3; i++) {
    assert_int_equal(uvp_nats_js_next(pull, &ps[i]), 0);
    uvp_nats_js_msg_t *bm = must(f, ps[i]);
    at[i] = ms_since(t0);
    assert_int_equal(bm->delivered, (uint64_t)i + 1);
  }
  print_message("back-off: delivered at %.0f, %.0f, %.0f ms\n", at[0], at[1],
                at[2]);
  assert_true(at[1] - at[0] >= 280);
  assert_true(at[2] - at[1] >= 580);
  assert_int_equal(uvp_nats_js_next(pull, &ps[3]), 0);
  run_for(f, 900); /* max_deliver: no fourth */
  assert_int_equal(uvp_promise_state(ps[3]), UVP_PENDING);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(uvp_nats_js_ack(msg_of(ps[i])) == 0 ||
                         uvp_nats_js_ack(msg_of(ps[i])) == UV_EALREADY,
                     1);
    uvp_promise_release(ps[i]);
  }
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  assert_int_equal(rejection(f, ps[3]), UV_ECANCELED);
  uvp_promise_release(ps[3]);
}

/* A cancelled wait's message waits for the next one; at close, one that
 * nobody took is given back; a message whose promise goes unfinished
 * too. */
static void test_pull_cancel_and_give_back(void **state) {
  fixture_t *f = *state;
  workqueue(f, "BACK", 0);
  consumer(
      f, "BACK",
      &(uvp_nats_js_consumer_config_t){.durable = "w", .ack_wait_ms = 30000});
  uvp_nats_js_pull_t *pull = pull_open(f, "BACK", "w", NULL);
  uvp_promise_t *a, *b;
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  run_for(f, 50); /* the pull request is at the server */
  assert_int_equal(uvp_promise_cancel(a), 0);
  uvp_promise_release(a);
  publish_n(f, "BACK.x", 1);
  run_for(f, 100); /* it arrives for no wait */
  uvp_nats_js_pull_stats_t st;
  assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
  assert_int_equal(st.held, 1);
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  uvp_nats_js_msg_t *m = must(f, b);
  assert_int_equal(m->delivered, 1);
  uvp_promise_release(b); /* unfinished: given back */
  assert_int_equal(uvp_nats_js_pull_stats(pull, &st), 0);
  assert_int_equal(st.given_back, 1);
  assert_int_equal(st.held, 0);
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  m = must(f, b); /* at once, not after ack_wait */
  assert_int_equal(m->delivered, 2);
  assert_int_equal(uvp_nats_js_ack(m), 0);
  uvp_promise_release(b);
  /* one arrives for no wait, and the pull closes: given back */
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  run_for(f, 50);
  assert_int_equal(uvp_promise_cancel(a), 0);
  uvp_promise_release(a);
  publish_n(f, "BACK.x", 1);
  run_for(f, 100);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  pull = pull_open(f, "BACK", "w", NULL);
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  m = must(f, b);
  assert_int_equal(m->delivered, 2);
  assert_int_equal(uvp_nats_js_ack(m), 0);
  uvp_promise_release(b);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  /* no such consumer */
  assert_int_equal(uvp_nats_js_pull(T.js, "BACK", "nobody", NULL, &a), 0);
  assert_int_equal(rejection(f, a), UV_ENOENT);
  uvp_promise_release(a);
}

/* The consumer deleted under a waiting pull: its waits reject UV_ENOENT;
 * the connection closed under one: UV_ECANCELED, and later calls
 * UVP_ECLOSED; a message held past the close cannot be acked. */
static void test_pull_consumer_deleted_and_closed(void **state) {
  fixture_t *f = *state;
  workqueue(f, "GONE", 0);
  consumer(f, "GONE", &(uvp_nats_js_consumer_config_t){.durable = "w"});
  uvp_nats_js_pull_t *pull = pull_open(f, "GONE", "w", NULL);
  uvp_promise_t *a, *b, *d;
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  run_for(f, 50);
  assert_int_equal(uvp_nats_js_consumer_delete(T.js, "GONE", "w", &d), 0);
  (void)must(f, d);
  uvp_promise_release(d);
  assert_int_equal(rejection(f, a), UV_ENOENT);
  uvp_promise_release(a);
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  assert_int_equal(rejection(f, a), UV_ENOENT);
  uvp_promise_release(a);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);

  consumer(f, "GONE", &(uvp_nats_js_consumer_config_t){.durable = "w"});
  publish_n(f, "GONE.x", 1);
  pull = pull_open(f, "GONE", "w", NULL);
  assert_int_equal(uvp_nats_js_next(pull, &a), 0);
  uvp_nats_js_msg_t *m = must(f, a);
  assert_int_equal(uvp_nats_js_next(pull, &b), 0);
  assert_int_equal(uvp_nats_close(T.nc), 0);
  T.nc = NULL;
  assert_int_equal(rejection(f, b), UV_ECANCELED);
  uvp_promise_release(b);
  assert_int_equal(uvp_nats_js_next(pull, &b), UVP_ECLOSED);
  assert_true(fixture_drain(f, 10000));
  assert_int_equal(uvp_nats_js_ack(m), UVP_ECLOSED);
  assert_int_equal(uvp_nats_js_ack(m), UV_EALREADY);
  uvp_promise_release(a);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
}

/* ---- serving from a stream ------------------------------------------------
 */

/* A member, by its message's body:
 *   "ok"       fulfils
 *   "retry"    rejects UV_ETIMEDOUT on its first delivery, then fulfils
 *   "fatal"    rejects UV_EINVAL
 *   "sleep:N"  waits N ms, then fulfils (a cut: counts the cause) */
typedef struct served_log_s {
  int started, max_running, running, cut;
  char cause[128];
  uvp_ctx_t *ctx;
} served_log_t;

static uvp_ret_t served_fiber(void *arg) {
  uvp_nats_js_served_t *req = arg;
  served_log_t *log = req->arg;
  const char *body = natsMsg_GetData(req->msg->msg);
  log->started++;
  if (++log->running > log->max_running)
    log->max_running = log->running;
  int rc = 0;
  if (strncmp(body, "sleep:", 6) == 0) {
    uvp_promise_t *d;
    assert_int_equal(
        uvp_delay(log->ctx, strtoull(body + 6, NULL, 10), NULL, NULL, 0, &d),
        0);
    rc = uvp_await(d, NULL);
    if (rc == UV_ECANCELED && uvp_promise_cause(d) != NULL) {
      log->cut++;
      uvp_cause_format(uvp_promise_cause(d), log->cause, sizeof(log->cause));
    }
    uvp_promise_release(d);
  } else if (strcmp(body, "retry") == 0 && req->msg->delivered == 1) {
    rc = UV_ETIMEDOUT;
  } else if (strcmp(body, "fatal") == 0) {
    rc = UV_EINVAL;
  }
  log->running--;
  return rc == 0 ? uvp_ret_value(NULL, NULL) : uvp_ret_reject(rc, NULL, NULL);
}

static void publish_body(fixture_t *f, const char *subject, const char *body,
                         uint64_t deadline_ms) {
  uvp_promise_t *p;
  uvp_nats_js_publish_opts_t o = {.deadline_ms = deadline_ms};
  assert_int_equal(
      uvp_nats_js_publish(T.js, subject, body, strlen(body) + 1, &o, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
}

static bool served_all(void *arg) {
  uvp_nats_js_svc_t *svc = arg;
  uvp_nats_js_serve_stats_t st;
  uvp_nats_js_serve_stats(svc, &st);
  return st.acked + st.termed + st.expired >= 24 && st.running == 0;
}

static void drain_and_close(fixture_t *f, uvp_nats_js_svc_t *svc,
                            uvp_nats_js_pull_t *pull, uint64_t deadline) {
  uvp_promise_t *d;
  assert_int_equal(uvp_nats_js_serve_drain(svc, deadline, &d), 0);
  assert_int_equal(uvp_nats_js_serve_drain(svc, deadline, &d), UV_EALREADY);
  (void)must(f, d);
  uvp_promise_release(d);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
}

static void test_js_serve(void **state) {
  fixture_t *f = *state;
  workqueue(f, "SRV", 0);
  consumer(
      f, "SRV",
      &(uvp_nats_js_consumer_config_t){.durable = "w", .ack_wait_ms = 2000});
  for (int i = 0; i < 20; i++)
    publish_body(f, "SRV.job", "sleep:50", 0);
  publish_body(f, "SRV.job", "ok", 0);
  publish_body(f, "SRV.job", "retry", 0);
  publish_body(f, "SRV.job", "fatal", 0);
  publish_body(f, "SRV.job", "ok", 1); /* expired before it starts */
  run_for(f, 20);
  uvp_nats_js_pull_t *pull =
      pull_open(f, "SRV", "w", &(uvp_nats_js_pull_opts_t){.limit = 4});
  served_log_t log = {.ctx = f->ctx};
  const uint64_t backoff[] = {100};
  uvp_nats_js_serve_opts_t so = {
      .fiber = served_fiber, .arg = &log, .backoff_ms = backoff, .nbackoff = 1};
  uvp_nats_js_svc_t *svc;
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_next(pull, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), UV_EINVAL);
  uint64_t t0 = uv_hrtime();
  run_until_true(f, served_all, svc);
  uvp_nats_js_serve_stats_t st;
  assert_int_equal(uvp_nats_js_serve_stats(svc, &st), 0);
  print_message("served 24 jobs in %.0f ms: %llu acked, %llu naked, %llu "
                "termed, %llu expired, at most %d at once (limit 4)\n",
                ms_since(t0), (unsigned long long)st.acked,
                (unsigned long long)st.naked, (unsigned long long)st.termed,
                (unsigned long long)st.expired, log.max_running);
  assert_int_equal(st.acked, 22); /* 20 sleeps, ok, retry at its second */
  assert_int_equal(st.naked, 1);
  assert_int_equal(st.termed, 1);
  assert_int_equal(st.expired, 1);
  assert_int_equal(st.received, 25);
  assert_true(log.max_running <= 4);
  assert_int_equal(log.started, 24); /* retry twice, not the expired one */
  assert_int_equal(uvp_nats_js_consumer_info(T.js, "SRV", "w", &p), 0);
  const uvp_nats_js_consumer_info_t *ci = must(f, p);
  assert_int_equal(ci->num_pending, 0);
  uvp_promise_release(p);
  drain_and_close(f, svc, pull, 0);
}

/* Draining with a deadline: what runs past it is cut ("worker draining")
 * and given back; another worker serves it all, each job once. */
static void test_js_serve_drain(void **state) {
  fixture_t *f = *state;
  workqueue(f, "DRN", 0);
  consumer(
      f, "DRN",
      &(uvp_nats_js_consumer_config_t){.durable = "w", .ack_wait_ms = 5000});
  for (int i = 0; i < 8; i++)
    publish_body(f, "DRN.job", "sleep:1500", 0);
  uvp_nats_js_pull_opts_t po = {.limit = 4};
  uvp_nats_js_pull_t *pull = pull_open(f, "DRN", "w", &po);
  served_log_t log = {.ctx = f->ctx};
  const uint64_t backoff[] = {50};
  uvp_nats_js_serve_opts_t so = {
      .fiber = served_fiber, .arg = &log, .backoff_ms = backoff, .nbackoff = 1};
  uvp_nats_js_svc_t *svc;
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), 0);
  run_for(f, 200);
  assert_int_equal(log.running, 4);
  uint64_t t0 = uv_hrtime();
  uvp_promise_t *d;
  assert_int_equal(uvp_nats_js_serve_drain(svc, 300, &d), 0);
  (void)must(f, d);
  double ms = ms_since(t0);
  uvp_promise_release(d);
  print_message("drained in %.0f ms (deadline 300): %d cut, cause \"%s\"\n", ms,
                log.cut, log.cause);
  assert_true(ms >= 290 && ms < 1200);
  assert_int_equal(log.cut, 4);
  assert_non_null(strstr(log.cause, "worker draining"));
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);

  /* another worker: the 4 given back and the 4 never taken */
  served_log_t log2 = {.ctx = f->ctx};
  pull = pull_open(f, "DRN", "w", &(uvp_nats_js_pull_opts_t){.limit = 8});
  so.arg = &log2;
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), 0);
  uvp_nats_js_serve_stats_t st;
  t0 = uv_hrtime();
  do {
    run_for(f, 50);
    assert_int_equal(uvp_nats_js_serve_stats(svc, &st), 0);
    assert_true(ms_since(t0) < 8000);
  } while (st.acked < 8);
  assert_int_equal(st.received, 8);
  assert_int_equal(log2.cut, 0);
  drain_and_close(f, svc, pull, 0);
}

/* The connection closes under a service with members running: they are
 * cut, the service ends with its group; the context is let go first, the
 * pull after, and nothing leaks. */
static void test_js_serve_connection_closed(void **state) {
  fixture_t *f = *state;
  workqueue(f, "CUTS", 0);
  consumer(f, "CUTS", &(uvp_nats_js_consumer_config_t){.durable = "w"});
  for (int i = 0; i < 3; i++)
    publish_body(f, "CUTS.job", "sleep:5000", 0);
  uvp_nats_js_pull_t *pull =
      pull_open(f, "CUTS", "w", &(uvp_nats_js_pull_opts_t){.limit = 2});
  served_log_t log = {.ctx = f->ctx};
  uvp_nats_js_serve_opts_t so = {.fiber = served_fiber, .arg = &log};
  uvp_nats_js_svc_t *svc;
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), 0);
  run_for(f, 200);
  assert_int_equal(log.running, 2);
  assert_int_equal(uvp_nats_js_free(T.js), 0);
  T.js = NULL;
  assert_int_equal(uvp_nats_close(T.nc), 0);
  T.nc = NULL;
  assert_true(fixture_drain(f, 10000));
  assert_int_equal(log.running, 0);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
}

/* ---- key-value ------------------------------------------------------------
 */

static void bucket(fixture_t *f, const char *name, int history) {
  uvp_nats_kv_config_t c = {.bucket = name, .history = history};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_kv_bucket_add(T.js, &c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
}

/* kv write: its revision (or fail with the code). */
static uint64_t revision_of(fixture_t *f, uvp_promise_t *p) {
  uint64_t rev = ((const uvp_nats_js_ack_t *)must(f, p))->seq;
  uvp_promise_release(p);
  return rev;
}

static void test_kv_ops(void **state) {
  fixture_t *f = *state;
  bucket(f, "cfg", 5);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);

  assert_int_equal(uvp_nats_kv_create(T.js, "cfg", "a", "1", 1, &p), 0);
  uint64_t r1 = revision_of(f, p);
  assert_int_equal(uvp_nats_kv_create(T.js, "cfg", "a", "2", 1, &p), 0);
  assert_int_equal(rejection(f, p), UV_EEXIST);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a", &p), 0);
  const uvp_nats_kv_entry_t *e = must(f, p);
  assert_string_equal(e->bucket, "cfg");
  assert_string_equal(e->key, "a");
  assert_string_equal(e->value, "1");
  assert_int_equal(e->len, 1);
  assert_int_equal(e->revision, r1);
  assert_int_equal(e->op, UVP_NATS_KV_PUT);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  assert_true(e->time_ns > now_ns - 60000000000ll &&
              e->time_ns <= now_ns + 1000000000ll);
  uvp_promise_release(p);

  /* compare-and-set on the revision */
  assert_int_equal(uvp_nats_kv_update(T.js, "cfg", "a", "22", 2, r1, &p), 0);
  uint64_t r2 = revision_of(f, p);
  assert_true(r2 > r1);
  assert_int_equal(uvp_nats_kv_update(T.js, "cfg", "a", "33", 2, r1, &p), 0);
  assert_int_equal(rejection(f, p), UVP_NATS_EREVISION);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_put(T.js, "cfg", "a", "44", 2, &p), 0);
  uint64_t r3 = revision_of(f, p);

  /* deleted: gone for get, and create works again over the marker */
  assert_int_equal(uvp_nats_kv_delete(T.js, "cfg", "a", r2, &p), 0);
  assert_int_equal(rejection(f, p), UVP_NATS_EREVISION);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_delete(T.js, "cfg", "a", r3, &p), 0);
  (void)revision_of(f, p);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_create(T.js, "cfg", "a", "new", 3, &p), 0);
  (void)revision_of(f, p);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a", &p), 0);
  assert_string_equal(((const uvp_nats_kv_entry_t *)must(f, p))->value, "new");
  uvp_promise_release(p);
  /* a key with tokens, an empty value */
  assert_int_equal(uvp_nats_kv_put(T.js, "cfg", "jobs.x-1/=_", "", 0, &p), 0);
  (void)revision_of(f, p);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "jobs.x-1/=_", &p), 0);
  assert_int_equal(((const uvp_nats_kv_entry_t *)must(f, p))->len, 0);
  uvp_promise_release(p);

  /* bad input, no bucket */
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a b", &p), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", "a.*", &p), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_get(T.js, "cfg", ".a", &p), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_get(T.js, "c.fg", "a", &p), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_put(T.js, "cfg", "a", NULL, 1, &p), UV_EINVAL);
  uvp_nats_kv_config_t bad = {.bucket = "x", .history = 65};
  assert_int_equal(uvp_nats_kv_bucket_add(T.js, &bad, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_put(T.js, "nobucket", "a", "x", 1, &p), 0);
  assert_int_equal(rejection(f, p), UVP_NATS_ENORESPONDERS);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_bucket_delete(T.js, "cfg", &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
}

/* Two connections (two contexts) update one key from the same revision,
 * 100 rounds: exactly one of each pair wins. */
static void test_kv_cas_race(void **state) {
  fixture_t *f = *state;
  bucket(f, "race", 1);
  uvp_ctx_t *ctx2;
  assert_int_equal(uvp_ctx_new(&f->loop, &ctx2), 0);
  uvp_nats_t *nc2 = connect_url(f, ctx2, T.s->url);
  uvp_nats_js_t *js2;
  assert_int_equal(uvp_nats_js_new(nc2, NULL, &js2), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_kv_put(T.js, "race", "k", "0", 1, &p), 0);
  uint64_t rev = revision_of(f, p);
  int wins[2] = {0, 0};
  enum { ROUNDS = 100 };
  for (int i = 0; i < ROUNDS; i++) {
    uvp_promise_t *a, *b;
    assert_int_equal(uvp_nats_kv_update(T.js, "race", "k", "a", 1, rev, &a), 0);
    assert_int_equal(uvp_nats_kv_update(js2, "race", "k", "b", 1, rev, &b), 0);
    uvp_promise_mark_handled(a);
    uvp_promise_mark_handled(b);
    run_until_settled(f, a);
    run_until_settled(f, b);
    bool wa = uvp_promise_state(a) == UVP_FULFILLED;
    bool wb = uvp_promise_state(b) == UVP_FULFILLED;
    assert_true(wa != wb);
    uvp_promise_t *w = wa ? a : b, *l = wa ? b : a;
    assert_int_equal(reason(l), UVP_NATS_EREVISION);
    rev = ((const uvp_nats_js_ack_t *)uvp_promise_value(w))->seq;
    wins[wb]++;
    uvp_promise_release(a);
    uvp_promise_release(b);
  }
  print_message("100 rounds: %d won by the first, %d by the second\n", wins[0],
                wins[1]);
  assert_int_equal(uvp_nats_js_free(js2), 0);
  assert_int_equal(uvp_nats_close(nc2), 0);
  assert_true(fixture_drain(f, 10000));
  assert_int_equal(uvp_ctx_close(ctx2), 0);
}

static const uvp_nats_kv_entry_t *watched(fixture_t *f, uvp_nats_kv_watch_t *w,
                                          uvp_promise_t **p) {
  assert_int_equal(uvp_nats_kv_watch_next(w, p), 0);
  return must(f, *p);
}

static void expect_entry(fixture_t *f, uvp_nats_kv_watch_t *w, const char *key,
                         const char *value, uvp_nats_kv_op_t op) {
  uvp_promise_t *p;
  const uvp_nats_kv_entry_t *e = watched(f, w, &p);
  if (key == NULL) {
    assert_null(e);
  } else {
    assert_non_null(e);
    assert_string_equal(e->key, key);
    assert_string_equal(e->value, value);
    assert_int_equal(e->op, op);
  }
  uvp_promise_release(p);
}

static void kv_put(fixture_t *f, const char *b, const char *k, const char *v) {
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_kv_put(T.js, b, k, v, strlen(v), &p), 0);
  (void)revision_of(f, p);
}

static uvp_nats_kv_watch_t *watch_open(fixture_t *f, const char *b,
                                       const char *keys,
                                       const uvp_nats_kv_watch_opts_t *o) {
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_kv_watch(T.js, b, keys, o, &p), 0);
  uvp_nats_kv_watch_t *w = must(f, p);
  uvp_promise_release(p);
  return w;
}

static void test_kv_watch(void **state) {
  fixture_t *f = *state;
  bucket(f, "w", 3);
  kv_put(f, "w", "jobs.a", "1");
  kv_put(f, "w", "jobs.a", "2");
  kv_put(f, "w", "jobs.b", "1");
  kv_put(f, "w", "other", "1");
  uvp_nats_kv_watch_t *all = watch_open(f, "w", ">", NULL);
  uvp_nats_kv_watch_t *jobs = watch_open(f, "w", "jobs.*", NULL);
  uvp_nats_kv_watch_opts_t uo = {.flags = UVP_NATS_KV_UPDATES_ONLY};
  uvp_nats_kv_watch_t *upd = watch_open(f, "w", "jobs.a", &uo);
  uvp_nats_kv_watch_t *none = watch_open(f, "w", "nothing.>", NULL);
  /* the last entry of each key, in the stream's order, then caught up */
  expect_entry(f, all, "jobs.a", "2", UVP_NATS_KV_PUT);
  expect_entry(f, all, "jobs.b", "1", UVP_NATS_KV_PUT);
  expect_entry(f, all, "other", "1", UVP_NATS_KV_PUT);
  expect_entry(f, all, NULL, NULL, 0);
  expect_entry(f, jobs, "jobs.a", "2", UVP_NATS_KV_PUT);
  expect_entry(f, jobs, "jobs.b", "1", UVP_NATS_KV_PUT);
  expect_entry(f, jobs, NULL, NULL, 0);
  expect_entry(f, none, NULL, NULL, 0);
  /* then each write as it comes */
  uvp_promise_t *pending;
  assert_int_equal(uvp_nats_kv_watch_next(upd, &pending), 0);
  kv_put(f, "w", "jobs.a", "3");
  const uvp_nats_kv_entry_t *e = must(f, pending);
  assert_string_equal(e->value, "3");
  assert_int_equal(e->delta, 0);
  uvp_promise_release(pending);
  uvp_promise_t *d;
  assert_int_equal(uvp_nats_kv_delete(T.js, "w", "jobs.b", 0, &d), 0);
  (void)revision_of(f, d);
  expect_entry(f, all, "jobs.a", "3", UVP_NATS_KV_PUT);
  expect_entry(f, all, "jobs.b", "", UVP_NATS_KV_DEL);
  expect_entry(f, jobs, "jobs.a", "3", UVP_NATS_KV_PUT);
  expect_entry(f, jobs, "jobs.b", "", UVP_NATS_KV_DEL);
  /* a wait cancelled loses nothing */
  assert_int_equal(uvp_nats_kv_watch_next(all, &pending), 0);
  assert_int_equal(uvp_promise_cancel(pending), 0);
  uvp_promise_release(pending);
  kv_put(f, "w", "other", "2");
  expect_entry(f, all, "other", "2", UVP_NATS_KV_PUT);
  /* 2 000 writes while nobody reads: all kept, in order */
  enum { N = 2000 };
  uvp_promise_t *ps[N];
  for (int i = 0; i < N; i++) {
    char k[16];
    snprintf(k, sizeof(k), "many.%d", i);
    assert_int_equal(
        uvp_nats_kv_put(T.js, "w", k, k + 5, strlen(k + 5), &ps[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    (void)must(f, ps[i]);
    uvp_promise_release(ps[i]);
  }
  for (int i = 0; i < N; i++) {
    char k[16];
    snprintf(k, sizeof(k), "many.%d", i);
    expect_entry(f, all, k, k + 5, UVP_NATS_KV_PUT);
  }
  uvp_nats_kv_watch_stats_t st;
  assert_int_equal(uvp_nats_kv_watch_stats(all, &st), 0);
  assert_int_equal(st.consumers, 1);
  assert_int_equal(st.restarts, 0);
  assert_int_equal(uvp_nats_kv_watch_next(upd, &pending), 0);
  assert_int_equal(uvp_nats_kv_watch_close(upd), 0);
  assert_int_equal(rejection(f, pending), UV_ECANCELED);
  uvp_promise_release(pending);
  assert_int_equal(uvp_nats_kv_watch_close(upd), UV_EINVAL);
  assert_int_equal(uvp_nats_kv_watch_close(all), 0);
  assert_int_equal(uvp_nats_kv_watch_close(jobs), 0);
  assert_int_equal(uvp_nats_kv_watch_close(none), 0);
  /* no such bucket */
  assert_int_equal(uvp_nats_kv_watch(T.js, "nobucket", ">", NULL, &pending), 0);
  assert_int_equal(rejection(f, pending), UV_ENOENT);
  uvp_promise_release(pending);
  assert_int_equal(uvp_nats_kv_watch(T.js, "w", "a.>.b", NULL, &pending),
                   UV_EINVAL);
}

/* The server restarted under a watch: its memory consumer is gone, the
 * heartbeats stop; the watch makes a new one from where it was: nothing
 * lost, nothing twice. */
static int setup_own_js_server(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  T.s = &T.own;
  if (nats_server_available()) {
    nats_server_jetstream(&T.own);
    nats_server_start(&T.own);
    T.nc = connect_url(*state, ((fixture_t *)*state)->ctx, T.s->url);
    assert_int_equal(uvp_nats_js_new(T.nc, NULL, &T.js), 0);
  }
  return 0;
}

static void test_kv_watch_restart(void **state) {
  fixture_t *f = *state;
  bucket(f, "rw", 1);
  kv_put(f, "rw", "a", "1");
  uvp_nats_kv_watch_opts_t o = {.heartbeat_ms = 300};
  uvp_nats_kv_watch_t *w = watch_open(f, "rw", ">", &o);
  expect_entry(f, w, "a", "1", UVP_NATS_KV_PUT);
  expect_entry(f, w, NULL, NULL, 0);
  nats_server_kill(T.s);
  nats_server_start(T.s); /* the same port and store */
  uint64_t t0 = uv_hrtime();
  uvp_promise_t *p;
  for (;;) { /* until the connection is back */
    assert_int_equal(uvp_nats_kv_put(T.js, "rw", "b", "2", 1, &p), 0);
    run_until_settled(f, p);
    bool ok = uvp_promise_state(p) == UVP_FULFILLED;
    uvp_promise_release(p);
    if (ok)
      break;
    assert_true(ms_since(t0) < 15000);
    run_for(f, 100);
  }
  kv_put(f, "rw", "a", "3");
  expect_entry(f, w, "b", "2", UVP_NATS_KV_PUT);
  expect_entry(f, w, "a", "3", UVP_NATS_KV_PUT);
  uvp_nats_kv_watch_stats_t st;
  assert_int_equal(uvp_nats_kv_watch_stats(w, &st), 0);
  print_message("server restarted: %llu restarts, %llu consumers, back after "
                "%.0f ms\n",
                (unsigned long long)st.restarts,
                (unsigned long long)st.consumers, ms_since(t0));
  assert_true(st.restarts >= 1);
  assert_int_equal(uvp_nats_kv_watch_next(w, &p), 0);
  run_for(f, 300); /* nothing more */
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_nats_kv_watch_close(w), 0);
  assert_int_equal(rejection(f, p), UV_ECANCELED);
  uvp_promise_release(p);
}

static void run_until_all_settled_js(fixture_t *f, uvp_promise_t **ps,
                                     size_t n) {
  for (size_t i = 0; i < n; i++)
    run_until_settled(f, ps[i]);
}

/* ---- durable promises ---------------------------------------------------- */

static const uvp_nats_dpromise_t *payload_of(uvp_promise_t *p) {
  void *payload = NULL;
  uvp_promise_reason(p, &payload);
  return payload;
}

static void test_dpromise(void **state) {
  fixture_t *f = *state;
  bucket(f, "dp", 1);
  uvp_promise_t *a, *p;
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "a", 60000, &a), 0);
  /* the record exists once the create's write is acknowledged */
  for (int i = 0;; i++) {
    assert_int_equal(uvp_nats_dpromise_get(T.js, "dp", "a", &p), 0);
    run_until_settled(f, p);
    bool ok = uvp_promise_state(p) == UVP_FULFILLED;
    if (ok) {
      const uvp_nats_dpromise_t *r = uvp_promise_value(p);
      assert_string_equal(r->id, "a");
      assert_int_equal(r->state, UVP_NATS_DPROMISE_PENDING);
      uint64_t now = (uint64_t)time(NULL) * 1000;
      assert_true(r->timeout > now + 50000 && r->timeout < now + 70000);
      assert_int_equal(r->completed_on, 0);
    }
    uvp_promise_release(p);
    if (ok)
      break;
    assert_true(i < 100);
  }
  char *buf = NULL;
  size_t blen = 0;
  FILE *fp = open_memstream(&buf, &blen);
  uvp_dump_opts_t dopts = {.stream = fp};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &dopts) >= 1);
  fclose(fp);
  assert_non_null(strstr(buf, "for JetStream dpromise dp/a"));
  free(buf);

  assert_int_equal(uvp_nats_dpromise_resolve(T.js, "dp", "a", "hi", 2, &p), 0);
  const uvp_nats_dpromise_t *r = must(f, p);
  assert_int_equal(r->state, UVP_NATS_DPROMISE_RESOLVED);
  assert_string_equal(r->data, "hi");
  assert_true(r->completed_on > 0 && r->revision > 0);
  uvp_promise_release(p);
  r = must(f, a); /* the await */
  assert_int_equal(r->state, UVP_NATS_DPROMISE_RESOLVED);
  assert_string_equal(r->data, "hi");
  uvp_promise_release(a);
  /* only a pending one completes */
  assert_int_equal(uvp_nats_dpromise_resolve(T.js, "dp", "a", "x", 1, &p), 0);
  assert_int_equal(rejection(f, p), UVP_ESETTLED);
  assert_int_equal(payload_of(p)->state, UVP_NATS_DPROMISE_RESOLVED);
  assert_string_equal(payload_of(p)->data, "hi");
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_dpromise_cancel(T.js, "dp", "a", &p), 0);
  assert_int_equal(rejection(f, p), UVP_ESETTLED);
  uvp_promise_release(p);
  /* created again: the outcome stored, at once */
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "a", 60000, &a), 0);
  assert_string_equal(((const uvp_nats_dpromise_t *)must(f, a))->data, "hi");
  uvp_promise_release(a);
  /* the stored JSON is Resonate's */
  assert_int_equal(uvp_nats_kv_get(T.js, "dp", "a", &p), 0);
  const uvp_nats_kv_entry_t *e = must(f, p);
  print_message("%s\n", e->value);
  assert_non_null(strstr(e->value, "\"state\":\"RESOLVED\""));
  assert_non_null(
      strstr(e->value, "\"value\":{\"headers\":{},\"data\":\"hi\"}"));
  assert_non_null(strstr(e->value, "\"completedOn\":"));
  uvp_promise_release(p);

  /* rejected with a code, and canceled */
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "b", 60000, &a), 0);
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "c", 60000, &p), 0);
  run_for(f, 200);
  uvp_promise_t *q;
  assert_int_equal(
      uvp_nats_dpromise_reject(T.js, "dp", "b", UV_EIO, "bad \xc3\xa9", 6, &q),
      0);
  assert_int_equal(((const uvp_nats_dpromise_t *)must(f, q))->state,
                   UVP_NATS_DPROMISE_REJECTED);
  uvp_promise_release(q);
  assert_int_equal(rejection(f, a), UV_EIO);
  assert_int_equal(payload_of(a)->code, UV_EIO);
  assert_string_equal(payload_of(a)->data, "bad \xc3\xa9");
  uvp_promise_release(a);
  assert_int_equal(uvp_nats_kv_get(T.js, "dp", "b", &q), 0);
  assert_non_null(strstr(((const uvp_nats_kv_entry_t *)must(f, q))->value,
                         "\"Uvp-Error\":\"EIO\""));
  uvp_promise_release(q);
  assert_int_equal(uvp_nats_dpromise_cancel(T.js, "dp", "c", &q), 0);
  (void)must(f, q);
  uvp_promise_release(q);
  assert_int_equal(rejection(f, p), UV_ECANCELED);
  assert_int_equal(payload_of(p)->state, UVP_NATS_DPROMISE_REJECTED_CANCELED);
  uvp_promise_release(p);

  /* none */
  assert_int_equal(uvp_nats_dpromise_resolve(T.js, "dp", "none", "", 0, &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_dpromise_await(T.js, "dp", "none", &p), 0);
  assert_int_equal(rejection(f, p), UV_ENOENT);
  assert_null(payload_of(p));
  uvp_promise_release(p);

  /* its timeout: completed as timed out by the awaiting process */
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "t", 300, &p), 0);
  assert_int_equal(rejection(f, p), UV_ETIMEDOUT);
  double ms = ms_since(t0);
  print_message("timed out after %.0f ms (timeout 300)\n", ms);
  assert_true(ms >= 290);
  assert_int_equal(payload_of(p)->state, UVP_NATS_DPROMISE_REJECTED_TIMEDOUT);
  uvp_promise_release(p);
  /* ... or by whoever reads or completes it first, with nobody awaiting */
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "t2", 200, &p), 0);
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "t3", 200, &q), 0);
  run_for(f, 100);
  assert_int_equal(uvp_promise_cancel(p), 0); /* the awaits only */
  assert_int_equal(uvp_promise_cancel(q), 0);
  uvp_promise_release(p);
  uvp_promise_release(q);
  run_for(f, 250);
  assert_int_equal(uvp_nats_dpromise_get(T.js, "dp", "t2", &p), 0);
  assert_int_equal(((const uvp_nats_dpromise_t *)must(f, p))->state,
                   UVP_NATS_DPROMISE_REJECTED_TIMEDOUT);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_dpromise_resolve(T.js, "dp", "t3", "", 0, &p), 0);
  assert_int_equal(rejection(f, p), UVP_ESETTLED);
  assert_int_equal(payload_of(p)->state, UVP_NATS_DPROMISE_REJECTED_TIMEDOUT);
  uvp_promise_release(p);

  /* bad input */
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "a b", 1, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_nats_dpromise_create(T.js, "dp", "a", 0, &p), UV_EINVAL);
  assert_int_equal(uvp_nats_dpromise_resolve(T.js, "dp", "a", "\xff", 1, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_nats_dpromise_reject(T.js, "dp", "a", 0, "", 0, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_nats_dpromise_get(T.js, "d p", "a", &p), UV_EINVAL);
  assert_string_equal(
      uvp_nats_dpromise_state_name(UVP_NATS_DPROMISE_REJECTED_TIMEDOUT),
      "REJECTED_TIMEDOUT");
  assert_string_equal(uvp_nats_dpromise_state_name(9), "UNKNOWN");
}

/* ---- a second process ---- */

typedef struct helper_s {
  pid_t pid;
  int in, out; /* its stdin (ours to write), its stdout (ours to read) */
} helper_t;

static void helper_start(helper_t *h, const char *const *argv) {
  const char *bin = getenv("UVP_NATS_JS_HELPER");
  assert_non_null(bin);
  int in[2], out[2]; /* close-on-exec: another helper must not hold them */
  assert_int_equal(pipe2(in, O_CLOEXEC), 0);
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    const char *args[8] = {bin};
    for (int i = 0; argv[i] != NULL && i < 6; i++)
      args[i + 1] = argv[i];
    execv(bin, (char *const *)args);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  h->pid = pid;
  h->in = in[1];
  h->out = out[0];
}

/* Its next line (without the newline), waiting at most ms. */
static void helper_line(helper_t *h, char *buf, size_t cap, int ms) {
  size_t n = 0;
  uint64_t t0 = uv_hrtime();
  for (;;) {
    struct pollfd pfd = {h->out, POLLIN, 0};
    int left = ms - (int)ms_since(t0);
    if (left <= 0 || poll(&pfd, 1, left) <= 0)
      fail_msg("nats-js-helper said nothing within %d ms", ms);
    char c;
    ssize_t r = read(h->out, &c, 1);
    if (r <= 0)
      fail_msg("nats-js-helper ended its output ('%.*s')", (int)n, buf);
    if (c == '\n')
      break;
    if (n + 1 < cap)
      buf[n++] = c;
  }
  buf[n] = '\0';
}

static int helper_wait(helper_t *h) {
  int st = 0;
  assert_int_equal(waitpid(h->pid, &st, 0), h->pid);
  if (h->in >= 0)
    close(h->in);
  close(h->out);
  return st;
}

/* Two processes complete the same N durable promises, one resolving, one
 * rejecting, each promise by both at the same moment (in lockstep, so
 * both read it pending before either writes: without the
 * compare-and-set both would win): exactly one wins each, and this
 * process's awaits see the winner's outcome. */
static void test_dpromise_race_two_processes(void **state) {
  fixture_t *f = *state;
  const size_t n = 1000;
  bucket(f, "race2", 1);
  uvp_promise_t **aw = calloc(n, sizeof(*aw));
  assert_non_null(aw);
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof(id), "r-%zu", i);
    assert_int_equal(
        uvp_nats_dpromise_create(T.js, "race2", id, 120000, &aw[i]), 0);
  }
  /* every record exists: read them all at once, again until they do */
  uvp_promise_t **gets = calloc(n, sizeof(*gets));
  assert_non_null(gets);
  for (int tries = 0;; tries++) {
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
      if (gets[i] != NULL && uvp_promise_state(gets[i]) == UVP_FULFILLED)
        continue;
      uvp_promise_release(gets[i]);
      char id[32];
      snprintf(id, sizeof(id), "r-%zu", i);
      assert_int_equal(uvp_nats_dpromise_get(T.js, "race2", id, &gets[i]), 0);
      uvp_promise_mark_handled(gets[i]);
      missing++;
    }
    if (missing == 0)
      break;
    assert_true(tries < 100);
    run_until_all_settled_js(f, gets, n);
  }
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(gets[i]);
  free(gets);
  print_message("%zu durable promises created and awaited in %.0f ms\n", n,
                ms_since(t0));
  helper_t h[2];
  char count[16];
  snprintf(count, sizeof(count), "%zu", n);
  const char *kinds[2] = {"resolve", "reject"};
  for (int k = 0; k < 2; k++) {
    helper_start(&h[k], (const char *[]){"race", T.s->url, "race2", count,
                                         kinds[k], NULL});
    char line[32];
    helper_line(&h[k], line, sizeof(line), 20000);
    assert_string_equal(line, "ready");
  }
  /* round i: both complete r-i at the same moment */
  char *marks[2];
  for (int k = 0; k < 2; k++) {
    marks[k] = calloc(n + 1, 1);
    assert_non_null(marks[k]);
  }
  t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++) {
    char go[32];
    int len = snprintf(go, sizeof(go), "%zu\n", i);
    for (int k = 0; k < 2; k++)
      assert_int_equal(write(h[k].in, go, (size_t)len), len);
    for (int k = 0; k < 2; k++) {
      char line[8];
      helper_line(&h[k], line, sizeof(line), 20000);
      marks[k][i] = line[0];
    }
  }
  double race_ms = ms_since(t0);
  int won[2] = {0, 0};
  for (size_t i = 0; i < n; i++) {
    char a = marks[0][i], b = marks[1][i];
    if (!((a == 'W' && b == 'L') || (a == 'L' && b == 'W')))
      fail_msg("r-%zu: %c and %c", i, a, b);
    won[b == 'W']++;
  }
  print_message("%zu races in %.0f ms: %d won by resolve, %d by reject, "
                "each by exactly one\n",
                n, race_ms, won[0], won[1]);
  for (int k = 0; k < 2; k++) {
    close(h[k].in);
    h[k].in = -1;
    char line[16];
    helper_line(&h[k], line, sizeof(line), 20000);
    assert_string_equal(line, "done");
    int st = helper_wait(&h[k]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  for (size_t i = 0; i < n; i++) {
    run_until_settled(f, aw[i]);
    if (marks[0][i] == 'W') {
      assert_int_equal(uvp_promise_state(aw[i]), UVP_FULFILLED);
    } else {
      assert_int_equal(reason(aw[i]), UV_EIO);
      assert_int_equal(payload_of(aw[i])->state, UVP_NATS_DPROMISE_REJECTED);
    }
    uvp_promise_release(aw[i]);
  }
  free(marks[0]);
  free(marks[1]);
  free(aw);
}

/* A process creates and awaits a durable promise and is killed; another
 * completes it; the first, started again, creates the same id and gets
 * the outcome stored.  And one awaiting while another completes it. */
static void test_dpromise_restart(void **state) {
  fixture_t *f = *state;
  bucket(f, "rs", 1);
  helper_t h;
  char line[128];
  helper_start(
      &h, (const char *[]){"create", T.s->url, "rs", "job", "60000", NULL});
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "created");
  kill(h.pid, SIGKILL);
  int st = helper_wait(&h);
  assert_true(WIFSIGNALED(st));
  uvp_promise_t *p;
  assert_int_equal(
      uvp_nats_dpromise_resolve(T.js, "rs", "job", "the answer", 10, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  helper_start(
      &h, (const char *[]){"create", T.s->url, "rs", "job", "60000", NULL});
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "resolved the answer"); /* at once */
  st = helper_wait(&h);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

  /* awaited in the other process, completed here */
  helper_start(
      &h, (const char *[]){"create", T.s->url, "rs", "job2", "60000", NULL});
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "created");
  run_for(f, 200); /* its watch is up */
  assert_int_equal(uvp_nats_dpromise_reject(T.js, "rs", "job2", UV_ECONNRESET,
                                            "lost", 4, &p),
                   0);
  (void)must(f, p);
  uvp_promise_release(p);
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "rejected ECONNRESET lost");
  st = helper_wait(&h);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

  /* created there with 300 ms, awaited here: timed out by one of us */
  helper_start(&h,
               (const char *[]){"create", T.s->url, "rs", "job3", "300", NULL});
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "created");
  assert_int_equal(uvp_nats_dpromise_await(T.js, "rs", "job3", &p), 0);
  assert_int_equal(rejection(f, p), UV_ETIMEDOUT);
  uvp_promise_release(p);
  helper_line(&h, line, sizeof(line), 20000);
  assert_string_equal(line, "rejected ETIMEDOUT ");
  st = helper_wait(&h);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- the virtual clock, the task dump -------------------------------------
 */

/* Under UVP_CLOCK_AUTO and a virtual deadline of 5 s: publishes and a KV
 * read hold the clock, so they are answered; a pull's next and a durable
 * promise's await are idle (they wait for other processes), so the clock
 * jumps past them to the deadline at once. */
typedef struct jsclock_s {
  uvp_ctx_t *ctx;
  int published, read, next_rc, await_rc;
  double idle_ms;
  uvp_nats_js_pull_t *pull;
} jsclock_t;

static uvp_ret_t jsclock_fiber(void *arg) {
  jsclock_t *c = arg;
  uvp_deadline_set(c->ctx, 5000);
  enum { N = 20 };
  uvp_promise_t *ps[N], *p, *q;
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_nats_js_publish(T.js, "CLK.x", "x", 1, NULL, &ps[i]),
                     0);
  for (int i = 0; i < N; i++) {
    c->published += uvp_await(ps[i], NULL) == 0;
    uvp_promise_release(ps[i]);
  }
  assert_int_equal(uvp_nats_kv_get(T.js, "clk", "k", &p), 0);
  c->read = uvp_await(p, NULL) == 0;
  uvp_promise_release(p);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_js_next(c->pull, &p), 0); /* nothing comes */
  assert_int_equal(uvp_nats_dpromise_create(T.js, "clk", "never", 60000, &q),
                   0);
  c->next_rc = uvp_await(p, NULL);
  c->await_rc = uvp_await(q, NULL);
  c->idle_ms = ms_since(t0);
  uvp_promise_release(p);
  uvp_promise_release(q);
  return uvp_ret_value(NULL, NULL);
}

static bool dump_has(fixture_t *f, const char *what) {
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  assert_non_null(fp);
  uvp_dump_opts_t o = {.stream = fp};
  (void)uvp_ctx_dump_tasks(f->ctx, &o);
  fclose(fp);
  bool has = strstr(buf, what) != NULL;
  if (!has)
    print_message("no \"%s\" in:\n%s", what, buf);
  free(buf);
  return has;
}

static void test_js_clock_and_dump(void **state) {
  fixture_t *f = *state;
  /* before any promise: the clock changes only then */
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  workqueue(f, "CLK", 0);
  consumer(f, "CLK",
           &(uvp_nats_js_consumer_config_t){.durable = "w",
                                            .filter_subject = "CLK.y"});
  bucket(f, "clk", 1);
  kv_put(f, "clk", "k", "v");
  jsclock_t c = {.ctx = f->ctx};
  c.pull = pull_open(f, "CLK", "w", NULL);

  /* what each wait is called in the task dump */
  uvp_promise_t *p, *q, *r;
  assert_int_equal(uvp_nats_js_next(c.pull, &p), 0);
  uvp_nats_kv_watch_t *w = watch_open(f, "clk", "k", NULL);
  assert_int_equal(uvp_nats_kv_watch_next(w, &r), 0);
  (void)must(f, r); /* k's entry */
  uvp_promise_release(r);
  assert_int_equal(uvp_nats_kv_watch_next(w, &r), 0);
  (void)must(f, r); /* caught up */
  uvp_promise_release(r);
  assert_int_equal(uvp_nats_kv_watch_next(w, &r), 0);
  assert_int_equal(uvp_nats_kv_get(T.js, "clk", "k", &q), 0);
  assert_true(dump_has(f, "for JetStream next CLK/w"));
  assert_true(dump_has(f, "for JetStream kv watch clk/k"));
  assert_true(dump_has(f, "for JetStream kv get clk/k"));
  (void)must(f, q);
  uvp_promise_release(q);
  assert_int_equal(uvp_promise_cancel(p), 0);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_kv_watch_close(w), 0);
  assert_int_equal(rejection(f, r), UV_ECANCELED);
  uvp_promise_release(r);

  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, jsclock_fiber, &c, NULL, &fp), 0);
  settle_ticking(f, fp);
  uvp_promise_release(fp);
  print_message("virtual deadline 5 s: %d of 20 publishes acknowledged, KV "
                "read %s; an idle next and await cut (%s, %s) after %.0f ms "
                "of real time\n",
                c.published, c.read ? "answered" : "not answered",
                uvp_nats_err_name(c.next_rc), uvp_nats_err_name(c.await_rc),
                c.idle_ms);
  assert_int_equal(c.published, 20);
  assert_true(c.read);
  assert_int_equal(c.next_rc, UV_ETIMEDOUT);
  assert_int_equal(c.await_rc, UV_ETIMEDOUT);
  assert_true(c.idle_ms < 2000); /* not the 5 s of the deadline */
  assert_int_equal(uvp_nats_js_pull_close(c.pull), 0);
}

/* ---- a 3-node cluster: the stream's leader killed mid-run ---------------- */

static nats_cluster_t cluster;

/* The three nodes (natsOptions_SetServers: nats.c 3.4.1 finds no server
 * in a comma-separated natsOptions_SetURL), reconnecting every 100 ms. */
static natsOptions *quick_reconnect(void) {
  natsOptions *o;
  const char *servers[3] = {cluster.node[0].url, cluster.node[1].url,
                            cluster.node[2].url};
  assert_int_equal(natsOptions_Create(&o), NATS_OK);
  assert_int_equal(natsOptions_SetServers(o, servers, 3), NATS_OK);
  assert_int_equal(natsOptions_SetReconnectWait(o, 100), NATS_OK);
  assert_int_equal(natsOptions_SetMaxReconnect(o, 600), NATS_OK);
  return o;
}

static uvp_nats_t *connect_cluster(fixture_t *f, uvp_ctx_t *ctx) {
  uvp_promise_t *p;
  uvp_nats_connect_opts_t co = {.options = quick_reconnect()};
  assert_int_equal(uvp_nats_connect(ctx, &co, &p), 0);
  run_until_settled(f, p);
  if (uvp_promise_state(p) != UVP_FULFILLED)
    fail_msg("connect to %s: %s", cluster.urls, uvp_nats_err_name(reason(p)));
  uvp_nats_t *nc = uvp_promise_value(p);
  uvp_promise_release(p);
  return nc;
}

static int setup_cluster(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  memset(&cluster, 0, sizeof(cluster));
  if (nats_server_available()) {
    nats_cluster_start(&cluster);
    T.s = &cluster.node[0];
    T.nc = connect_cluster(*state, ((fixture_t *)*state)->ctx);
    uvp_nats_js_opts_t jo = {.timeout_ms = 2000, .heartbeat_ms = 500};
    assert_int_equal(uvp_nats_js_new(T.nc, &jo, &T.js), 0);
  }
  return 0;
}

static int cluster_teardown(void **state) {
  int rc = js_teardown(state);
  nats_cluster_stop(&cluster);
  return rc;
}

/* Run until every promise of ps has settled, ms at most. */
static void run_until_all(fixture_t *f, uvp_promise_t **ps, size_t n,
                          uint64_t ms) {
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++)
    while (uvp_promise_state(ps[i]) == UVP_PENDING) {
      if (ms_since(t0) > (double)ms)
        fail_msg("%zu of %zu still pending after %llu ms", n - i, n,
                 (unsigned long long)ms);
      uv_run(&f->loop, UV_RUN_ONCE);
    }
}

/* A call retried while the cluster elects (no leader, a timeout). */
typedef int (*js_call_fn)(void *arg, uvp_promise_t **out);

static void *until_done(fixture_t *f, js_call_fn call, void *arg,
                        uvp_promise_t **out, uint64_t ms) {
  uint64_t t0 = uv_hrtime();
  for (;;) {
    assert_int_equal(call(arg, out), 0);
    uvp_promise_mark_handled(*out);
    run_until_settled(f, *out);
    if (uvp_promise_state(*out) == UVP_FULFILLED)
      return uvp_promise_value(*out);
    int rc = reason(*out);
    if (ms_since(t0) > (double)ms)
      fail_msg("still %s after %llu ms", uvp_nats_err_name(rc),
               (unsigned long long)ms);
    uvp_promise_release(*out);
    run_for(f, 100);
  }
}

static int stream_info_call(void *arg, uvp_promise_t **out) {
  return uvp_nats_js_stream_info(T.js, arg, out);
}

static int add_fan_stream(void *arg, uvp_promise_t **out) {
  (void)arg;
  uvp_nats_js_stream_config_t c = {.name = "FAN",
                                   .subjects = (const char *[]){"FAN.>", NULL},
                                   .retention = UVP_NATS_JS_WORKQUEUE,
                                   .replicas = 3};
  return uvp_nats_js_stream_add(T.js, &c, out);
}

static int add_fan_bucket(void *arg, uvp_promise_t **out) {
  (void)arg;
  uvp_nats_kv_config_t c = {.bucket = "fan", .replicas = 3, .history = 8};
  return uvp_nats_kv_bucket_add(T.js, &c, out);
}

static int add_fan_consumer(void *arg, uvp_promise_t **out) {
  (void)arg;
  uvp_nats_js_consumer_config_t c = {.durable = "workers", .ack_wait_ms = 3000};
  return uvp_nats_js_consumer_add(T.js, "FAN", &c, out);
}

typedef struct pub_arg_s {
  char id[32];
} pub_arg_t;

static int publish_job(void *arg, uvp_promise_t **out) {
  pub_arg_t *a = arg;
  uvp_nats_js_publish_opts_t o = {.msg_id = a->id};
  return uvp_nats_js_publish(T.js, "FAN.job", a->id, strlen(a->id) + 1, &o,
                             out);
}

typedef struct fan_worker_s {
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  uvp_nats_js_t *js;
  uvp_nats_js_pull_t *pull;
  uvp_nats_js_svc_t *svc;
  char name[8];
  int won, settled_already, failed;
} fan_worker_t;

/* A job: work 200 ms, then resolve its durable promise; a redelivered job
 * whose promise another run resolved is done too. */
static uvp_ret_t fan_job(void *arg) {
  uvp_nats_js_served_t *req = arg;
  fan_worker_t *w = req->arg;
  const char *id = natsMsg_GetData(req->msg->msg);
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(w->ctx, 200, NULL, NULL, 0, &d), 0);
  int rc = uvp_await(d, NULL);
  uvp_promise_release(d);
  if (rc == 0) {
    uvp_promise_t *p;
    rc = uvp_nats_dpromise_resolve(w->js, "fan", id, w->name, strlen(w->name),
                                   &p);
    if (rc == 0) {
      rc = uvp_await(p, NULL);
      uvp_promise_release(p);
    }
  }
  if (rc == 0)
    w->won++;
  else if (rc == UVP_ESETTLED)
    w->settled_already++;
  else
    w->failed++;
  return rc == 0 || rc == UVP_ESETTLED ? uvp_ret_value(NULL, NULL)
                                       : uvp_ret_reject(rc, NULL, NULL);
}

static bool always(int code) {
  (void)code;
  return true;
}

static void fan_worker_start(fixture_t *f, fan_worker_t *w, int i) {
  memset(w, 0, sizeof(*w));
  snprintf(w->name, sizeof(w->name), "w%d", i);
  assert_int_equal(uvp_ctx_new(&f->loop, &w->ctx), 0);
  w->nc = connect_cluster(f, w->ctx);
  uvp_nats_js_opts_t jo = {.timeout_ms = 2000};
  assert_int_equal(uvp_nats_js_new(w->nc, &jo, &w->js), 0);
  uvp_promise_t *p;
  uvp_nats_js_pull_opts_t po = {.limit = 4, .expires_ms = 1000};
  assert_int_equal(uvp_nats_js_pull(w->js, "FAN", "workers", &po, &p), 0);
  w->pull = must(f, p);
  uvp_promise_release(p);
  const uint64_t backoff[] = {200};
  uvp_nats_js_serve_opts_t so = {.fiber = fan_job,
                                 .arg = w,
                                 .backoff_ms = backoff,
                                 .nbackoff = 1,
                                 .retryable = always};
  assert_int_equal(uvp_nats_js_serve(w->pull, &so, &w->svc), 0);
}

static void fan_worker_stop(fixture_t *f, fan_worker_t *w) {
  uvp_promise_t *d;
  assert_int_equal(uvp_nats_js_serve_drain(w->svc, 5000, &d), 0);
  run_until_settled(f, d);
  uvp_promise_release(d);
  assert_int_equal(uvp_nats_js_pull_close(w->pull), 0);
  assert_int_equal(uvp_nats_js_free(w->js), 0);
  assert_int_equal(uvp_nats_close(w->nc), 0);
  assert_true(fixture_drain(f, 20000) || true);
  assert_int_equal(uvp_ctx_close(w->ctx), 0);
}

/* Durable fan-out on a 3-node cluster: a coordinator creates N durable
 * promises and publishes N jobs (R3 stream and bucket), two workers serve
 * them, and the stream's leader is killed with SIGKILL a third of the way
 * in.  Every promise completes, each exactly once (the bucket holds one
 * completion for each), though some jobs run twice (their acks died with
 * the leader) and some completions are retried (their acknowledgement
 * died with it, or no leader answered). */
static void test_cluster_durable_fanout(void **state) {
  fixture_t *f = *state;
  enum { N = 30 };
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  (void)until_done(f, add_fan_stream, NULL, &p, 30000);
  uvp_promise_release(p);
  print_message("cluster up, stream made in %.0f ms\n", ms_since(t0));
  (void)until_done(f, add_fan_bucket, NULL, &p, 30000);
  uvp_promise_release(p);
  (void)until_done(f, add_fan_consumer, NULL, &p, 30000);
  uvp_promise_release(p);
  uvp_promise_t *aw[N];
  for (int i = 0; i < N; i++) {
    pub_arg_t a;
    snprintf(a.id, sizeof(a.id), "job-%d", i);
    assert_int_equal(
        uvp_nats_dpromise_create(T.js, "fan", a.id, 120000, &aw[i]), 0);
    (void)until_done(f, publish_job, &a, &p, 30000);
    uvp_promise_release(p);
  }
  fan_worker_t w[2];
  fan_worker_start(f, &w[0], 1);
  fan_worker_start(f, &w[1], 2);
  /* a third done: kill the stream's leader */
  t0 = uv_hrtime();
  run_until_all(f, aw, N / 3, 30000);
  /* Asked again while it says ENOENT: the server that answers may not
   * have the stream's assignment yet (a cluster's metadata is replicated
   * too). */
  const uvp_nats_js_stream_info_t *si =
      until_done(f, stream_info_call, "FAN", &p, 30000);
  nats_server_t *leader = nats_cluster_node(&cluster, si->leader);
  assert_non_null(leader);
  int done = settled_count(aw, N);
  print_message("%d of %d done in %.0f ms; killing the stream's leader %s\n",
                done, N, ms_since(t0), si->leader);
  assert_true(done < N);
  uvp_promise_release(p);
  uint64_t t_kill = uv_hrtime();
  kill(leader->pid, SIGKILL);
  waitpid(leader->pid, NULL, 0);
  leader->pid = 0;
  run_until_all(f, aw, N, 90000);
  double after = ms_since(t_kill);
  int won = 0, again = 0, failed = 0;
  for (int i = 0; i < N; i++) {
    const uvp_nats_dpromise_t *r = must(f, aw[i]);
    assert_int_equal(r->state, UVP_NATS_DPROMISE_RESOLVED);
    assert_true(strcmp(r->data, "w1") == 0 || strcmp(r->data, "w2") == 0);
    uvp_promise_release(aw[i]);
  }
  /* a worker may hear of its completion after the awaits did */
  fan_worker_stop(f, &w[0]);
  fan_worker_stop(f, &w[1]);
  for (int k = 0; k < 2; k++) {
    won += w[k].won;
    again += w[k].settled_already;
    failed += w[k].failed;
  }
  print_message("all %d resolved %.0f ms after the kill: %d completions "
                "won, %d runs found theirs resolved already, %d failed and "
                "were retried\n",
                N, after, won, again, failed);
  /* a completion whose acknowledgement died with the leader is stored
   * but not counted by its worker */
  assert_true(won <= N && won + failed >= N);
  /* exactly one completion each: the bucket keeps every write (history
   * 8), and holds two per promise, its creation and its completion */
  si = until_done(f, stream_info_call, "KV_fan", &p, 30000);
  print_message("KV_fan holds %llu writes for %d promises\n",
                (unsigned long long)si->messages, N);
  assert_int_equal(si->messages, 2 * N);
  uvp_promise_release(p);
  T.s = NULL; /* the teardown thaws no node */
}

/* ---- a hostile reply ------------------------------------------------------
 */

/* A responder planted on $JS.API.> (a user allowed to subscribe there, or
 * a hostile server) answers every API request with 32 MiB of JSON, on a
 * server whose max_payload lets it through.  Before issue 71, jansson
 * parsed it on the loop thread: 7.5 s held, 0.73 s of CPU.  Now the call
 * rejects with UV_EMSGSIZE, unparsed, and the loop thread works far less
 * than a parse between two runs of a 5 ms timer: its CPU time, not the
 * real time, which a loaded machine stretches (under valgrind, which
 * copies 32 MiB ten times slower, only the rejection is checked).  The
 * bound is not the guides' stall threshold (50 ms): the loop thread still
 * spends 37-44 ms of CPU on the rejected 32 MiB message here (57 ms on a
 * cold machine, which failed a CI run), what is not yet found; 150 ms
 * still tells it from a parse (730 ms). */
#define HOSTILE_BYTES ((size_t)32 << 20)
#define HOSTILE_HELD_MS 150.0

static char *hostile_body;

static void hostile_cb(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                       void *closure) {
  (void)sub;
  (void)closure;
  if (natsMsg_GetReply(m) != NULL)
    (void)natsConnection_Publish(nc, natsMsg_GetReply(m), hostile_body,
                                 (int)HOSTILE_BYTES);
  natsMsg_Destroy(m);
}

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  assert_int_equal(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct ticker_s {
  uv_timer_t t;
  uint64_t last_cpu, worst_cpu;
} ticker_t;

static void tick(uv_timer_t *t) {
  ticker_t *k = (ticker_t *)t;
  uint64_t cpu = thread_cpu_ns();
  if (cpu - k->last_cpu > k->worst_cpu)
    k->worst_cpu = cpu - k->last_cpu;
  k->last_cpu = cpu;
}

/* The call p's rejection, with the loop thread's most CPU time between
 * two ticks meanwhile (*held_ms). */
static int hostile_call(fixture_t *f, uvp_promise_t *p, double *held_ms) {
  static ticker_t k; /* closed before it is used again */
  k.worst_cpu = 0;
  assert_int_equal(uv_timer_init(&f->loop, &k.t), 0);
  k.last_cpu = thread_cpu_ns();
  assert_int_equal(uv_timer_start(&k.t, tick, 5, 5), 0);
  uint64_t t0 = uv_hrtime();
  int rc = rejection(f, p);
  tick(&k.t);
  uv_close((uv_handle_t *)&k.t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  *held_ms = (double)k.worst_cpu / 1e6;
  print_message("rejected %s after %.0f ms; the loop thread worked %.1f ms "
                "at most between two ticks\n",
                uvp_nats_err_name(rc), (double)(uv_hrtime() - t0) / 1e6,
                *held_ms);
  return rc;
}

static int setup_hostile(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  T.s = &T.own;
  if (nats_server_available()) {
    nats_server_config(&T.own, "max_payload: 67108864\n");
    nats_server_start(&T.own);
    T.nc = connect_url(*state, ((fixture_t *)*state)->ctx, T.s->url);
    assert_int_equal(uvp_nats_js_new(T.nc, NULL, &T.js), 0);
  }
  return 0;
}

static void test_js_hostile_reply(void **state) {
  fixture_t *f = *state;
  hostile_body = malloc(HOSTILE_BYTES);
  assert_non_null(hostile_body);
  /* {"config":{"name":"a"},"pad":"xxx...x"}: JSON that parses */
  memset(hostile_body, 'x', HOSTILE_BYTES);
  const char *head = "{\"config\":{\"name\":\"a\"},\"pad\":\"";
  memcpy(hostile_body, head, strlen(head));
  memcpy(hostile_body + HOSTILE_BYTES - 2, "\"}", 2);
  natsConnection *evil = NULL;
  natsSubscription *sub = NULL;
  assert_int_equal(natsConnection_ConnectTo(&evil, T.s->url), NATS_OK);
  assert_int_equal(
      natsConnection_Subscribe(&sub, evil, "$JS.API.>", hostile_cb, NULL),
      NATS_OK);
  assert_int_equal(natsConnection_Flush(evil), NATS_OK);

  /* an API reply: under max_payload, over what the binding parses */
  uvp_promise_t *p;
  double held;
  assert_int_equal(uvp_nats_js_stream_info(T.js, "S", &p), 0);
  assert_int_equal(hostile_call(f, p, &held), UV_EMSGSIZE);
  void *payload = NULL;
  (void)uvp_promise_reason(p, &payload);
  const uvp_nats_js_error_t *e = payload;
  assert_non_null(e);
  assert_non_null(strstr(e->description, "33554432 bytes"));
  uvp_promise_release(p);
  if (!RUNNING_ON_VALGRIND)
    assert_true(held < HOSTILE_HELD_MS);

  /* a key's value over the context's own cap, never copied */
  uvp_nats_js_t *capped;
  uvp_nats_js_opts_t o = {.max_reply = 1 << 20};
  assert_int_equal(uvp_nats_js_new(T.nc, &o, &capped), 0);
  assert_int_equal(uvp_nats_kv_get(capped, "B", "k", &p), 0);
  assert_int_equal(hostile_call(f, p, &held), UV_EMSGSIZE);
  uvp_promise_release(p);
  if (!RUNNING_ON_VALGRIND)
    assert_true(held < HOSTILE_HELD_MS);
  assert_int_equal(uvp_nats_js_free(capped), 0);

  natsSubscription_Destroy(sub);
  natsConnection_Destroy(evil);
  free(hostile_body);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      JS_TEST(test_stream_and_consumer, setup_conn),
      JS_TEST(test_publish_and_dedupe, setup_conn),
      JS_TEST(test_js_bad_input, setup_conn),
      JS_TEST(test_js_cut, setup_conn),
      JS_TEST(test_pull_bounded, setup_conn),
      JS_TEST(test_pull_redelivery, setup_conn),
      JS_TEST(test_pull_auto_wpi, setup_conn),
      JS_TEST(test_pull_wpi_by_hand, setup_conn),
      JS_TEST(test_pull_nak_term_backoff, setup_conn),
      JS_TEST(test_pull_cancel_and_give_back, setup_conn),
      JS_TEST(test_pull_consumer_deleted_and_closed, setup_conn),
      JS_TEST(test_js_serve, setup_conn),
      JS_TEST(test_js_serve_drain, setup_conn),
      JS_TEST(test_js_serve_connection_closed, setup_conn),
      JS_TEST(test_kv_ops, setup_conn),
      JS_TEST(test_kv_cas_race, setup_conn),
      JS_TEST(test_kv_watch, setup_conn),
      JS_TEST(test_kv_watch_restart, setup_own_js_server),
      JS_TEST(test_dpromise, setup_conn),
      JS_TEST(test_dpromise_race_two_processes, setup_conn),
      JS_TEST(test_dpromise_restart, setup_conn),
      JS_TEST(test_js_clock_and_dump, setup_conn),
      JS_TEST(test_js_hostile_reply, setup_hostile),
      {.name = "test_cluster_durable_fanout",
       .test_func = js_run,
       .setup_func = setup_cluster,
       .teardown_func = cluster_teardown,
       .initial_state = &(fixture_fn_t){.test = test_cluster_durable_fanout}},
  };
  if (getenv("UVP_TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  return nats_suite_end(
      cmocka_run_group_tests(tests, group_setup, group_teardown));
}

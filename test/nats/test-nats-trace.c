/* W3C trace context through NATS (uvp-nats.h's "Trace context") against a
 * real nats-server with JetStream that the group starts on a port of its
 * own (nats-env.h): a request made under a trace context arrives with a
 * traceparent whose trace-id is the caller's and whose parent-id is the
 * caller's CLIENT span, and is served under a SERVER span, child of it,
 * with the caller's tracestate; both sides' flight recorders (JSON) hold
 * the spans with those ids.  Without a trace context nothing is added:
 * no header, no span.  The W3C spec's invalid traceparent examples (and a
 * repeated header, a malformed or oversized tracestate) are ignored, the
 * request served as if they were absent.  A JetStream publish under a
 * trace context is a PRODUCER span whose message carries it; each
 * delivery of it (a first one failed and given back, then its
 * redelivery) is served under a CONSUMER span of the same trace, child of
 * the producer.  A durable promise keeps its creator's context in its
 * record's param headers, through its completion.  The caller and the
 * service are two contexts on the
 * test's loop, each with a connection of its own; every case ends with
 * uv_loop_close() == 0 (fixture_teardown). */
#include <inttypes.h>
#include <jansson.h>

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

static void *must(fixture_t *f, uvp_promise_t *p) {
  run_until_settled(f, p);
  if (uvp_promise_state(p) != UVP_FULFILLED)
    fail_msg("rejected: %s", uvp_nats_err_name(uvp_promise_reason(p, NULL)));
  return uvp_promise_value(p);
}

static void hex(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++)
    snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* What the serving side saw of one request or delivery. */
typedef struct seen_s {
  int n;                  /* requests served */
  char traceparent[128];  /* its header ("" if none) */
  char tracestate[1024];  /* its header ("" if none) */
  int get_rc;             /* uvp_tracectx_get's in the fiber */
  uvp_tracectx_t tc;      /* ... its context */
  char scope_state[1024]; /* ... and tracestate ("" if none) */
  uint64_t delivered;     /* JetStream: the delivery */
  uvp_tracectx_t tcs[2];  /* JetStream: each delivery's context */
  char parents[2][128];   /* JetStream: each delivery's traceparent */
} seen_t;

static void seen_msg(seen_t *s, uvp_ctx_t *ctx, natsMsg *m) {
  const char *tp = uvp_nats_msg_header(m, UVP_NATS_TRACEPARENT_HEADER);
  const char *ts = uvp_nats_msg_header(m, UVP_NATS_TRACESTATE_HEADER);
  snprintf(s->traceparent, sizeof(s->traceparent), "%s", tp ? tp : "");
  snprintf(s->tracestate, sizeof(s->tracestate), "%s", ts ? ts : "");
  const char *state = NULL;
  memset(&s->tc, 0, sizeof(s->tc));
  s->get_rc = uvp_tracectx_get(ctx, &s->tc, &state);
  snprintf(s->scope_state, sizeof(s->scope_state), "%s", state ? state : "");
  s->n++;
}

/* The case's service: a second context on the loop, its own connection,
 * serving trace.* with a fiber that notes what it saw and replies "ok". */
typedef struct case_s {
  nats_server_t *s;
  uvp_nats_t *nc;  /* the caller's, on the fixture's context */
  uvp_ctx_t *sctx; /* the service's */
  uvp_nats_t *snc;
  uvp_nats_svc_t *svc;
  seen_t seen;
} case_t;

static nats_server_t group_server;
static case_t T;

static uvp_ret_t seen_fiber(void *arg) {
  uvp_nats_served_t *req = arg;
  seen_msg(&T.seen, T.sctx, req->msg);
  return uvp_ret_value("ok", NULL);
}

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

/* Both contexts record (spans included), the service serves. */
static int setup_case(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  T.s = &group_server;
  if (!nats_server_available())
    return 0;
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1u << 20, UVP_RECORD_ALL), 0);
  T.nc = connect_url(f, f->ctx, T.s->url);
  assert_int_equal(uvp_ctx_new(&f->loop, &T.sctx), 0);
  assert_int_equal(uvp_ctx_set_recorder(T.sctx, 1u << 20, UVP_RECORD_ALL), 0);
  T.snc = connect_url(f, T.sctx, T.s->url);
  uvp_nats_serve_opts_t so = {.fiber = seen_fiber};
  assert_int_equal(uvp_nats_serve(T.snc, "trace.*", NULL, &so, &T.svc), 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(T.snc, &fl), 0);
  (void)must(f, fl);
  uvp_promise_release(fl);
  return 0;
}

static int case_teardown(void **state) {
  fixture_t *f = *state;
  if (f->returned && !fixture_skipped) {
    assert_int_equal(uvp_nats_close(T.nc), 0);
    assert_int_equal(uvp_nats_close(T.snc), 0);
    assert_true(fixture_drain(f, 10000));
    assert_int_equal(uvp_ctx_close(T.sctx), 0);
    assert_true(fixture_drain(f, 10000));
  }
  return fixture_teardown(state);
}

static void case_run(void **state) {
  if (!nats_server_available())
    SKIP_BECAUSE("nats-server is not installed (UVP_NATS_SERVER)");
  fixture_run(state);
}

#define TRACE_TEST(fn)                                                         \
  {                                                                            \
    .name = #fn, .test_func = case_run, .setup_func = setup_case,              \
    .teardown_func = case_teardown, .initial_state = &(fixture_fn_t) {         \
      .test = (fn)                                                             \
    }                                                                          \
  }

/* ctx's recorder as JSON (the caller's to json_decref). */
static json_t *recorded(uvp_ctx_t *ctx) {
  char *text = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&text, &len);
  assert_non_null(fp);
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, fp, NULL, NULL};
  assert_true(uvp_ctx_recorder_write(ctx, &o) >= 0);
  fclose(fp);
  json_error_t je;
  json_t *doc = json_loadb(text, len, 0, &je);
  if (doc == NULL)
    fail_msg("recorder JSON: %s (line %d)", je.text, je.line);
  free(text);
  return doc;
}

static const char *arg(json_t *args, const char *key) {
  const char *v = json_string_value(json_object_get(args, key));
  return v != NULL ? v : "";
}

/* The begin ("b") and end ("e") events of the spans named `name`, in
 * order: how many begins, and the first begin's args in *b, its end's
 * status in *status ("fulfilled", a code's name, "error N"; "" if it has
 * not ended). */
static int spans_named(json_t *doc, const char *name, json_t **b,
                       const char **status) {
  json_t *evs = json_object_get(doc, "traceEvents");
  size_t i;
  json_t *e;
  int n = 0;
  const char *id = NULL;
  *b = NULL;
  *status = "";
  json_array_foreach(evs, i, e) {
    const char *cat = json_string_value(json_object_get(e, "cat"));
    const char *ph = json_string_value(json_object_get(e, "ph"));
    const char *nm = json_string_value(json_object_get(e, "name"));
    const char *eid = json_string_value(json_object_get(e, "id"));
    if (cat == NULL || strcmp(cat, "span") != 0 || ph == NULL)
      continue;
    if (strcmp(ph, "b") == 0 && nm != NULL && strcmp(nm, name) == 0) {
      if (n++ == 0) {
        *b = json_object_get(e, "args");
        id = eid;
      }
    } else if (strcmp(ph, "e") == 0 && id != NULL && eid != NULL &&
               strcmp(eid, id) == 0 && **status == '\0') {
      *status = arg(json_object_get(e, "args"), "status");
    }
  }
  return n;
}

/* Every span event of doc. */
static int span_events(json_t *doc) {
  json_t *evs = json_object_get(doc, "traceEvents");
  size_t i;
  json_t *e;
  int n = 0;
  json_array_foreach(evs, i, e) {
    const char *cat = json_string_value(json_object_get(e, "cat"));
    n += cat != NULL && strcmp(cat, "span") == 0;
  }
  return n;
}

static void request_ok(fixture_t *f, const char *const *headers) {
  uvp_promise_t *p;
  uvp_nats_request_opts_t o = {.timeout_ms = 10000, .headers = headers};
  assert_int_equal(uvp_nats_request(T.nc, "trace.echo", "x", 1, &o, &p), 0);
  natsMsg *m = must(f, p);
  assert_string_equal(natsMsg_GetData(m), "ok");
  uvp_promise_release(p);
}

/* ---- requests and services ----------------------------------------------- */

static void test_request_traced(void **state) {
  fixture_t *f = *state;
  uvp_span_t root;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "root", UVP_SPAN_INTERNAL,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_tracectx_set(f->ctx, &root.tc, "congo=t61rcWkgMzE"), 0);
  request_ok(f, NULL);
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);

  /* the wire: the caller's trace, a parent that is not the root (its
   * CLIENT span), the tracestate */
  seen_t *s = &T.seen;
  assert_int_equal(s->n, 1);
  assert_int_equal(strlen(s->traceparent), UVP_TRACEPARENT_LEN);
  uvp_tracectx_t wire;
  assert_int_equal(
      uvp_tracectx_parse(s->traceparent, strlen(s->traceparent), &wire), 0);
  assert_memory_equal(wire.trace_id, root.tc.trace_id, 16);
  assert_memory_not_equal(wire.span_id, root.tc.span_id, 8);
  assert_int_equal(wire.flags, root.tc.flags);
  assert_string_equal(s->tracestate, "congo=t61rcWkgMzE");
  /* the served fiber: in the trace, in a span of its own (the SERVER's),
   * with the tracestate */
  assert_int_equal(s->get_rc, 0);
  assert_memory_equal(s->tc.trace_id, root.tc.trace_id, 16);
  assert_memory_not_equal(s->tc.span_id, wire.span_id, 8);
  assert_string_equal(s->scope_state, "congo=t61rcWkgMzE");

  char trace[33], root_id[17], client_id[17], server_id[17];
  hex(root.tc.trace_id, 16, trace);
  hex(root.tc.span_id, 8, root_id);
  hex(wire.span_id, 8, client_id);
  hex(s->tc.span_id, 8, server_id);
  print_message("traceparent %s, served in span %s\n", s->traceparent,
                server_id);
  /* the recorders: the caller's CLIENT span (child of the root, ended 0
   * by the reply), the service's SERVER span (child of the CLIENT span) */
  json_t *doc = recorded(f->ctx), *b;
  const char *status;
  assert_int_equal(spans_named(doc, "request trace.echo", &b, &status), 1);
  assert_string_equal(arg(b, "kind"), "client");
  assert_string_equal(arg(b, "trace_id"), trace);
  assert_string_equal(arg(b, "span_id"), client_id);
  assert_string_equal(arg(b, "parent_id"), root_id);
  assert_string_equal(status, "fulfilled");
  json_decref(doc);
  doc = recorded(T.sctx);
  assert_int_equal(spans_named(doc, "serve trace.echo", &b, &status), 1);
  assert_string_equal(arg(b, "kind"), "server");
  assert_string_equal(arg(b, "trace_id"), trace);
  assert_string_equal(arg(b, "span_id"), server_id);
  assert_string_equal(arg(b, "parent_id"), client_id);
  assert_string_equal(status, "fulfilled");
  json_decref(doc);
}

/* A request that fails (no responders) ends its span with the code. */
static void test_request_traced_fails(void **state) {
  fixture_t *f = *state;
  uvp_span_t root;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "root", UVP_SPAN_INTERNAL,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_span_enter(f->ctx, &root), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_request(T.nc, "nobody.here", "x", 1, NULL, &p), 0);
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_NATS_ENORESPONDERS);
  uvp_promise_release(p);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);
  json_t *doc = recorded(f->ctx), *b;
  const char *status;
  assert_int_equal(spans_named(doc, "request nobody.here", &b, &status), 1);
  assert_string_equal(status, "error -33001"); /* ENORESPONDERS */
  json_decref(doc);
}

/* No trace context: nothing on the wire, no span on either side. */
static void test_request_untraced(void **state) {
  fixture_t *f = *state;
  request_ok(f, NULL);
  seen_t *s = &T.seen;
  assert_int_equal(s->n, 1);
  assert_string_equal(s->traceparent, "");
  assert_string_equal(s->tracestate, "");
  assert_int_equal(s->get_rc, UV_ENOENT);
  json_t *doc = recorded(f->ctx);
  assert_int_equal(span_events(doc), 0);
  json_decref(doc);
  doc = recorded(T.sctx);
  assert_int_equal(span_events(doc), 0);
  json_decref(doc);
}

/* The W3C spec's invalid traceparent values (its test suite's), sent as
 * the program's own header: each request is served, as if it had none. */
static void test_malformed_ignored(void **state) {
  fixture_t *f = *state;
  static const char *const bad[] = {
      /* version ff, a version not hex, uppercase */
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
      /* all-zero trace-id, all-zero parent-id */
      "00-00000000000000000000000000000000-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
      /* short, long, not hex, wrong delimiters */
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
      "00-0af7651916cd43dd8448eb211c80319c0-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c8031xc-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
      "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
      /* version 00 is 55 characters exactly; a later one goes on with '-' */
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what",
      "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01.what",
      "garbage",
  };
  size_t nbad = sizeof(bad) / sizeof(bad[0]);
  for (size_t i = 0; i < nbad; i++) {
    char h[160];
    snprintf(h, sizeof(h), "traceparent: %s", bad[i]);
    request_ok(f, (const char *const[]){h, "tracestate: a=b", NULL});
    if (T.seen.get_rc != UV_ENOENT)
      fail_msg("continued: %s", bad[i]);
  }
  /* twice: which one? neither */
  request_ok(f, (const char *const[]){
                    "traceparent: "
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "traceparent: "
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01",
                    NULL});
  assert_int_equal(T.seen.get_rc, UV_ENOENT);
  assert_int_equal(T.seen.n, (int)nbad + 1);
  json_t *doc = recorded(T.sctx);
  assert_int_equal(span_events(doc), 0);
  json_decref(doc);

  /* valid ones are continued: the spec's example, a later version with
   * more after it; a malformed or oversized tracestate is dropped alone */
  request_ok(f, (const char *const[]){"traceparent: "
                                      "00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                      "00f067aa0ba902b7-01",
                                      "tracestate: Bad Key=1", NULL});
  assert_int_equal(T.seen.get_rc, 0);
  char trace[33];
  hex(T.seen.tc.trace_id, 16, trace);
  assert_string_equal(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
  assert_string_equal(T.seen.scope_state, "");
  char big[700] = "tracestate: a=";
  memset(big + strlen(big), 'x', 600);
  big[sizeof(big) - 1] = '\0';
  request_ok(f, (const char *const[]){
                    "traceparent: cc-0af7651916cd43dd8448eb211c80319c-"
                    "b7ad6b7169203331-01-what-the-future-will-be-like",
                    big, NULL});
  assert_int_equal(T.seen.get_rc, 0);
  hex(T.seen.tc.trace_id, 16, trace);
  assert_string_equal(trace, "0af7651916cd43dd8448eb211c80319c");
  assert_string_equal(T.seen.scope_state, "");
  doc = recorded(T.sctx);
  json_t *b;
  const char *status;
  assert_int_equal(spans_named(doc, "serve trace.echo", &b, &status), 2);
  assert_string_equal(arg(b, "parent_id"), "00f067aa0ba902b7");
  json_decref(doc);
}

/* ---- JetStream ----------------------------------------------------------- */

static uvp_ret_t consume_fiber(void *arg) {
  uvp_nats_js_served_t *req = arg;
  seen_t *s = &T.seen;
  seen_msg(s, T.sctx, req->msg->msg);
  if (req->msg->delivered <= 2) {
    s->tcs[req->msg->delivered - 1] = s->tc;
    snprintf(s->parents[req->msg->delivered - 1], sizeof(s->parents[0]), "%s",
             s->traceparent);
  }
  s->delivered = req->msg->delivered;
  /* the first delivery fails (given back, retryable), the second is done */
  return req->msg->delivered == 1 ? uvp_ret_reject(UV_ETIMEDOUT, NULL, NULL)
                                  : uvp_ret_value(NULL, NULL);
}

static bool redelivered(void *arg) {
  uvp_nats_js_svc_t *svc = arg;
  uvp_nats_js_serve_stats_t st;
  uvp_nats_js_serve_stats(svc, &st);
  return st.acked == 1 && st.running == 0;
}

static void test_jetstream_redelivery(void **state) {
  fixture_t *f = *state;
  uvp_nats_js_t *js, *sjs;
  assert_int_equal(uvp_nats_js_new(T.nc, NULL, &js), 0);
  assert_int_equal(uvp_nats_js_new(T.snc, NULL, &sjs), 0);
  uvp_nats_js_stream_config_t c = {.name = "TRC",
                                   .subjects = (const char *[]){"trc.>", NULL},
                                   .retention = UVP_NATS_JS_WORKQUEUE};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_js_stream_add(js, &c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  uvp_nats_js_consumer_config_t cc = {.durable = "w", .ack_wait_ms = 5000};
  assert_int_equal(uvp_nats_js_consumer_add(js, "TRC", &cc, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);

  /* published under a trace context: a PRODUCER span */
  uvp_span_t root;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "root", UVP_SPAN_INTERNAL,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_span_enter(f->ctx, &root), 0);
  assert_int_equal(uvp_nats_js_publish(js, "trc.job", "x", 1, NULL, &p), 0);
  uvp_promise_t *info; /* an API call: no span, nothing on the wire */
  assert_int_equal(uvp_nats_js_stream_info(js, "TRC", &info), 0);
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  (void)must(f, info);
  uvp_promise_release(info);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);

  assert_int_equal(uvp_nats_js_pull(sjs, "TRC", "w", NULL, &p), 0);
  uvp_nats_js_pull_t *pull = must(f, p);
  uvp_promise_release(p);
  const uint64_t backoff[] = {50};
  uvp_nats_js_serve_opts_t so = {
      .fiber = consume_fiber, .backoff_ms = backoff, .nbackoff = 1};
  uvp_nats_js_svc_t *svc;
  assert_int_equal(uvp_nats_js_serve(pull, &so, &svc), 0);
  run_until_true(f, redelivered, svc);
  seen_t *s = &T.seen;
  assert_int_equal(s->delivered, 2);
  /* both deliveries carry the producer's context, and run in the trace */
  assert_string_equal(s->parents[0], s->parents[1]);
  uvp_tracectx_t wire;
  assert_int_equal(
      uvp_tracectx_parse(s->parents[0], strlen(s->parents[0]), &wire), 0);
  assert_memory_equal(wire.trace_id, root.tc.trace_id, 16);
  for (int i = 0; i < 2; i++)
    assert_memory_equal(s->tcs[i].trace_id, root.tc.trace_id, 16);
  assert_memory_not_equal(s->tcs[0].span_id, s->tcs[1].span_id, 8);

  char trace[33], root_id[17], producer_id[17];
  hex(root.tc.trace_id, 16, trace);
  hex(root.tc.span_id, 8, root_id);
  hex(wire.span_id, 8, producer_id);
  json_t *doc = recorded(f->ctx), *b;
  const char *status;
  assert_int_equal(spans_named(doc, "publish trc.job", &b, &status), 1);
  assert_string_equal(arg(b, "kind"), "producer");
  assert_string_equal(arg(b, "span_id"), producer_id);
  assert_string_equal(arg(b, "parent_id"), root_id);
  assert_string_equal(status, "fulfilled"); /* the stream's acknowledgement */
  /* JetStream's API calls carry nothing: the publish is the only span
   * besides the root */
  assert_int_equal(span_events(doc), 4);
  json_decref(doc);
  doc = recorded(T.sctx);
  assert_int_equal(spans_named(doc, "consume trc.job", &b, &status), 2);
  assert_string_equal(arg(b, "kind"), "consumer");
  assert_string_equal(arg(b, "trace_id"), trace);
  assert_string_equal(arg(b, "parent_id"), producer_id);
  assert_string_equal(status, "ETIMEDOUT"); /* the first: given back */
  json_decref(doc);

  assert_int_equal(uvp_nats_js_serve_drain(svc, 0, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_pull_close(pull), 0);
  assert_int_equal(uvp_nats_js_stream_delete(js, "TRC", &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  assert_int_equal(uvp_nats_js_free(sjs), 0);
  assert_int_equal(uvp_nats_js_free(js), 0);
}

/* A durable promise made under a trace context keeps it in its record's
 * param headers (Resonate's place), and its completion, by another
 * context with none, keeps them. */
static void test_dpromise_param(void **state) {
  fixture_t *f = *state;
  uvp_nats_js_t *js, *sjs;
  assert_int_equal(uvp_nats_js_new(T.nc, NULL, &js), 0);
  assert_int_equal(uvp_nats_js_new(T.snc, NULL, &sjs), 0);
  uvp_nats_kv_config_t c = {.bucket = "dptrace"};
  uvp_promise_t *p, *d, *r;
  assert_int_equal(uvp_nats_kv_bucket_add(js, &c, &p), 0);
  (void)must(f, p);
  uvp_promise_release(p);
  uvp_span_t root;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "root", UVP_SPAN_INTERNAL,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_tracectx_set(f->ctx, &root.tc, "k=v"), 0);
  assert_int_equal(uvp_nats_dpromise_create(js, "dptrace", "job1", 60000, &d),
                   0);
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);
  char tp[UVP_TRACEPARENT_LEN + 1];
  assert_int_equal(uvp_tracectx_format(&root.tc, tp), 0);
  for (int round = 0; round < 2; round++) {
    if (round == 1) { /* completed by the other side: param kept */
      assert_int_equal(
          uvp_nats_dpromise_resolve(sjs, "dptrace", "job1", "ok", 2, &r), 0);
      (void)must(f, r);
      uvp_promise_release(r);
      (void)must(f, d);
    }
    /* until the create is written (the await started it) */
    for (int tries = 0;; tries++) {
      assert_int_equal(uvp_nats_kv_get(sjs, "dptrace", "job1", &p), 0);
      run_until_settled(f, p);
      if (uvp_promise_state(p) == UVP_FULFILLED || tries > 1000)
        break;
      assert_int_equal(uvp_promise_reason(p, NULL), UV_ENOENT);
      uvp_promise_release(p);
    }
    const uvp_nats_kv_entry_t *e = must(f, p);
    json_t *rec = json_loadb(e->value, e->len, 0, NULL);
    json_t *h = json_object_get(json_object_get(rec, "param"), "headers");
    assert_string_equal(arg(h, "traceparent"), tp);
    assert_string_equal(arg(h, "tracestate"), "k=v");
    assert_string_equal(arg(rec, "state"), round ? "RESOLVED" : "PENDING");
    json_decref(rec);
    uvp_promise_release(p);
  }
  uvp_promise_release(d);
  assert_int_equal(uvp_nats_js_free(sjs), 0);
  assert_int_equal(uvp_nats_js_free(js), 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      TRACE_TEST(test_request_traced),
      TRACE_TEST(test_request_traced_fails),
      TRACE_TEST(test_request_untraced),
      TRACE_TEST(test_malformed_ignored),
      TRACE_TEST(test_jetstream_redelivery),
      TRACE_TEST(test_dpromise_param),
  };
  if (getenv("UVP_TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  return nats_suite_end(
      cmocka_run_group_tests(tests, group_setup, group_teardown));
}

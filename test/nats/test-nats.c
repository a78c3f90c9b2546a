/* The NATS binding against a real nats-server (nats-env.h) that each test
 * starts on a port of its own: requests answered by a worker (a second
 * connection, on a context of its own on the same loop, serving with
 * fibers), no responders, timeouts, the deadline carried in
 * Uvp-Timeout-Ms to a nested request, cancellation, late replies, the
 * task dump, the virtual clock with and without the hold, teardown with
 * requests in flight, bad input, subscriptions (next, unsubscribe,
 * drain), the server killed and started again, and the server frozen
 * (SIGSTOP) past a short PING interval, a server's max_payload and a full
 * reconnect buffer; services (uvp_nats_serve): hostile Uvp-Timeout-Ms
 * headers, the limit, a caller's cancel cutting the job it started (in
 * this process and in a worker process), the bound answered EBUSY, a
 * drain's deadline and a second SIGTERM.  One server serves the group
 * (started by the group's setup); a case that stops, freezes or
 * configures its server starts one of its own.  The fixture (NATS_TEST)
 * connects, starts the worker and tears them down, so a case states only
 * what it tests; every case ends
 * with uv_loop_close() == 0 (fixture_teardown). */
#include <inttypes.h>

#include "nats-env.h"
#include "nats-suite.h"

#include "uvp-nats.h"

/* bindings/nats (nats-internal.h): whether the binding frees a message in
 * the thread that destroys it, not on nats.c's collector, and how it
 * destroys one; whether it writes a request's header as bytes, a request's
 * message, and a reply's Uvp-Error. */
int uvp_nats__msg_frees_here(const void *m);
void uvp_nats__msg_free(void *m);
bool uvp_nats__msg_raw_headers(void);
int uvp_nats__msg_make_request(natsMsg **out, const char *subject,
                               const char *reply, const void *data, size_t len,
                               const char *const *headers, uint64_t timeout_ms,
                               const char *token, bool sealed);
const char *uvp_nats__error_header(natsMsg *m);

/* ---- scaffolding --------------------------------------------------------- */

static uvp_nats_t *connect_opts(fixture_t *f, uvp_ctx_t *ctx, const char *url,
                                natsOptions *o, int flags) {
  uvp_promise_t *p;
  uvp_nats_connect_opts_t co = {.url = url, .options = o, .flags = flags};
  assert_int_equal(uvp_nats_connect(ctx, &co, &p), 0);
  run_until_settled(f, p);
  if (uvp_promise_state(p) != UVP_FULFILLED)
    fail_msg("connect: %s", uvp_nats_err_name(uvp_promise_reason(p, NULL)));
  uvp_nats_t *nc = uvp_promise_value(p);
  uvp_promise_release(p);
  return nc;
}

static uvp_nats_t *connect_to(fixture_t *f, const nats_server_t *s) {
  return connect_opts(f, f->ctx, s->url, NULL, 0);
}

/* Close nc and run the loop until its memory is gone: nothing else of the
 * test's may keep the loop going then. */
static void close_and_run(fixture_t *f, uvp_nats_t *nc);

static int reason(uvp_promise_t *p) { return uvp_promise_reason(p, NULL); }

static const char *body(uvp_promise_t *p) {
  natsMsg *m = uvp_promise_value(p);
  assert_non_null(m);
  return natsMsg_GetData(m);
}

static void run_until_all_settled(fixture_t *f, uvp_promise_t **ps, size_t n) {
  for (size_t i = 0; i < n; i++)
    run_until_settled(f, ps[i]);
}

/* ---- the worker: a connection of its own serving "svc.*" ----------------- *
 * On a context of its own (real clock, whatever the test's), on the same
 * loop.  Each message is served by a fiber; the body says what to do:
 *   "sleep:N"  wait N ms (real), then answer
 *   "nest"     make a request to svc.echo under the deadline the header
 *              gives, less 10 ms, and answer with both headers
 *   anything   answer at once
 * The answer is "hdr=<Uvp-Timeout-Ms>" (or "hdr=<outer> nested=<inner>"). */
typedef struct worker_s {
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  uvp_nats_sub_t *sub;
  uvp_promise_t *fiber;
  int served;
  bool closed; /* its connection is closed: handlers must not touch it */
} worker_t;

typedef struct job_s {
  worker_t *w;
  uvp_promise_t *msgp;
} job_t;

static void job_free(void *arg) {
  job_t *j = arg;
  uvp_promise_release(j->msgp);
  free(j);
}

static uvp_ret_t serve_one(void *arg) {
  job_t *j = arg;
  natsMsg *m = uvp_promise_value(j->msgp);
  const char *hdr = uvp_nats_msg_header(m, UVP_NATS_TIMEOUT_HEADER);
  const char *data = natsMsg_GetData(m);
  char out[256];
  snprintf(out, sizeof(out), "hdr=%s", hdr != NULL ? hdr : "none");
  if (strncmp(data, "sleep:", 6) == 0) {
    uvp_promise_t *d;
    assert_int_equal(
        uvp_delay(j->w->ctx, strtoull(data + 6, NULL, 10), NULL, NULL, 0, &d),
        0);
    uvp_await(d, NULL);
    uvp_promise_release(d);
  } else if (strcmp(data, "nest") == 0 && hdr != NULL && !j->w->closed) {
    uvp_deadline_set(j->w->ctx, strtoull(hdr, NULL, 10) - 10);
    uvp_promise_t *p;
    assert_int_equal(uvp_nats_request(j->w->nc, "svc.echo", "x", 1, NULL, &p),
                     0);
    if (uvp_await(p, NULL) == 0)
      snprintf(out, sizeof(out), "hdr=%s nested=%s", hdr, body(p));
    uvp_promise_release(p);
  }
  const char *reply = natsMsg_GetReply(m);
  if (reply != NULL && !j->w->closed)
    (void)uvp_nats_publish(j->w->nc, reply, NULL, out, strlen(out) + 1, NULL);
  j->w->served++;
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t worker_main(void *arg) {
  worker_t *w = arg;
  for (;;) {
    uvp_promise_t *p, *f;
    if (uvp_nats_next(w->sub, &p) != 0)
      break;
    if (uvp_await(p, NULL) != 0) {
      uvp_promise_release(p);
      break;
    }
    job_t *j = malloc(sizeof(*j));
    assert_non_null(j);
    *j = (job_t){w, p};
    uvp_fiber_opts_t o = {.arg_free = job_free};
    assert_int_equal(uvp_fiber_spawn(w->ctx, serve_one, j, &o, &f), 0);
    uvp_promise_mark_handled(f);
    uvp_promise_release(f);
  }
  return uvp_ret_value(NULL, NULL);
}

static void worker_start(fixture_t *f, worker_t *w, const nats_server_t *s,
                         natsOptions *o) {
  memset(w, 0, sizeof(*w));
  assert_int_equal(uvp_ctx_new(&f->loop, &w->ctx), 0);
  w->nc = connect_opts(f, w->ctx, s->url, o, 0);
  assert_int_equal(uvp_nats_subscribe(w->nc, "svc.*", "workers", &w->sub), 0);
  assert_int_equal(uvp_fiber_spawn(w->ctx, worker_main, w, NULL, &w->fiber), 0);
  uvp_promise_t *fl; /* the SUB has reached the server */
  assert_int_equal(uvp_nats_flush(w->nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_promise_release(fl);
}

static void worker_stop(fixture_t *f, worker_t *w) {
  w->closed = true;
  assert_int_equal(uvp_nats_close(w->nc), 0);
  assert_true(fixture_drain(f, 20000));
  assert_int_not_equal(uvp_promise_state(w->fiber), UVP_PENDING);
  uvp_promise_release(w->fiber);
  assert_int_equal(uvp_ctx_close(w->ctx), 0);
  w->ctx = NULL;
}

/* ---- a service on a context of its own (uvp_nats_serve) ----------------- */

typedef struct svc_case_s {
  uvp_ctx_t *ctx; /* the service's own; NULL: not started */
  uvp_nats_t *nc;
  uvp_nats_svc_t *svc;
  /* what svc_fiber's "wait:N" jobs saw: how many started, and the last
   * one whose wait was cut (its code, when, and why) */
  int started, cuts;
  int cut_rc;
  uint64_t cut_ns;
  char cut_why[256];
} svc_case_t;

static void svc_case_start(fixture_t *f, svc_case_t *c, const nats_server_t *s,
                           const uvp_nats_serve_opts_t *o) {
  assert_int_equal(uvp_ctx_new(&f->loop, &c->ctx), 0);
  c->nc = connect_opts(f, c->ctx, s->url, NULL, 0);
  uvp_nats_serve_opts_t so = *o;
  so.arg = c;
  assert_int_equal(uvp_nats_serve(c->nc, "svc.*", "workers", &so, &c->svc), 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(c->nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_promise_release(fl);
}

static void svc_case_stop(fixture_t *f, svc_case_t *c) {
  assert_int_equal(uvp_nats_close(c->nc), 0);
  assert_true(fixture_drain(f, 20000));
  assert_int_equal(uvp_ctx_close(c->ctx), 0);
  c->ctx = NULL;
}

/* ---- the fixture --------------------------------------------------------- *
 * The group's server, and what a case has running besides the fixture's
 * loop and context: its server (the group's, or one of its own), its
 * connection (T.nc), the worker, a service.  The teardown closes what is
 * still open, in that order, runs the loop until it is all gone, kills a
 * server of the case's own, and then is fixture_teardown.  After a failed
 * assertion only the server is killed: the loop is abandoned as
 * fixture_teardown says. */
static nats_server_t group_server;

typedef struct nats_case_s {
  nats_server_t *s;  /* the case's server: &group_server, or &own */
  nats_server_t own; /* a server of the case's own (pid 0: none) */
  uvp_nats_t *nc;    /* the case's connection (NULL: none, or closed) */
  worker_t w;        /* the worker (w.ctx NULL: not running) */
  svc_case_t svc;    /* a service (svc.ctx NULL: not running) */
  pid_t procs[4];    /* worker processes not reaped yet (proc_start) */
} nats_case_t;

static nats_case_t T;

static void close_and_run(fixture_t *f, uvp_nats_t *nc) {
  if (nc == T.nc)
    T.nc = NULL;
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_true(fixture_drain(f, 10000));
}

static int group_setup(void **state) {
  (void)state;
  if (nats_server_available())
    nats_server_start(&group_server);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  nats_server_kill(&group_server);
  return 0;
}

/* The case's fixture: the loop, a quiet context, the group's server. */
static int setup_server(void **state) {
  fixture_setup_quiet(state);
  memset(&T, 0, sizeof(T));
  T.s = &group_server;
  return 0;
}

/* ... and a connection to it, T.nc. */
static int setup_conn(void **state) {
  setup_server(state);
  if (nats_server_available())
    T.nc = connect_to(*state, T.s);
  return 0;
}

/* ... and the worker serving svc.* first. */
static int setup_worker(void **state) {
  setup_server(state);
  if (nats_server_available()) {
    worker_start(*state, &T.w, T.s, NULL);
    T.nc = connect_to(*state, T.s);
  }
  return 0;
}

/* A server of the case's own, that the case may stop or freeze; nothing
 * connected. */
static int setup_own_server(void **state) {
  setup_server(state);
  T.s = &T.own;
  if (nats_server_available())
    nats_server_start(&T.own);
  return 0;
}

static int nats_teardown(void **state) {
  fixture_t *f = *state;
  if (f->returned && !fixture_skipped) {
    if (T.nc != NULL)
      assert_int_equal(uvp_nats_close(T.nc), 0);
    if (T.w.ctx != NULL)
      worker_stop(f, &T.w);
    if (T.svc.ctx != NULL)
      svc_case_stop(f, &T.svc);
    assert_true(fixture_drain(f, 10000));
  }
  for (size_t i = 0; i < sizeof(T.procs) / sizeof(T.procs[0]); i++)
    if (T.procs[i] > 0) { /* left by a failed case: it must not linger */
      kill(T.procs[i], SIGKILL);
      waitpid(T.procs[i], NULL, 0);
    }
  nats_server_kill(&T.own);
  return fixture_teardown(state);
}

/* Runs the case, or skips it without nats-server. */
static void nats_run(void **state) {
  if (!nats_server_available())
    SKIP_BECAUSE("nats-server is not installed (UVP_NATS_SERVER)");
  fixture_run(state);
}

#define NATS_TEST(fn, setup)                                                   \
  {                                                                            \
    .name = #fn, .test_func = nats_run, .setup_func = (setup),                 \
    .teardown_func = nats_teardown, .initial_state = &(fixture_fn_t) {         \
      .test = (fn)                                                             \
    }                                                                          \
  }

/* ---- requests ------------------------------------------------------------ */

static void test_request(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;

  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "hi", 2, NULL, &p), 0);
  run_until_settled(f, p);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  /* 30 s by default, less what the way there took */
  unsigned long hdr = strtoul(body(p) + 4, NULL, 10);
  assert_true(hdr <= 30000 && hdr > 25000);
  natsMsg *m = uvp_promise_value(p);
  assert_non_null(strstr(natsMsg_GetSubject(m), "_INBOX."));
  uvp_promise_release(p);
  print_message("one round trip: %.3f ms\n", ms);

  /* 200 at once, each matched to its own reply */
  enum { N = 200 };
  uvp_promise_t *ps[N];
  for (int i = 0; i < N; i++) {
    uvp_nats_request_opts_t o = {.timeout_ms = 5000};
    assert_int_equal(uvp_nats_request(nc, "svc.echo", "x", 1, &o, &ps[i]), 0);
  }
  run_until_all_settled(f, ps, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp_promise_state(ps[i]), UVP_FULFILLED);
    unsigned long h = strtoul(body(ps[i]) + 4, NULL, 10);
    assert_true(h <= 5000 && h > 1000);
    uvp_promise_release(ps[i]);
  }
  uvp_nats_stats_t st;
  assert_int_equal(uvp_nats_stats(nc, &st), 0);
  assert_int_equal(st.requests, N + 1);
  assert_int_equal(st.replies, N + 1);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.late, 0);
  assert_int_equal(st.polls, 1);
  assert_int_equal(T.w.served, N + 1);
  /* With nats.c 3's message layout (a natsGCItem first, natsMsg_free its
   * callback) the requests and replies above were freed on the loop, not
   * handed to nats.c's collector thread (uvp-nats.c, "messages"). */
#if NATS_VERSION_MAJOR == 3
  natsMsg *made = NULL;
  assert_int_equal(natsMsg_Create(&made, "a.b", NULL, "x", 1), NATS_OK);
  assert_int_equal(uvp_nats__msg_frees_here(made), 1);
  uvp_nats__msg_free(made);
  /* and the requests' headers were written as bytes, which nats.c reads
   * back as its own; a reply's bytes showed it had no Uvp-Error */
  static const char tok[] = "0123456789abcdef0123456789abcdef";
  assert_true(uvp_nats__msg_raw_headers());
  assert_int_equal(uvp_nats__msg_make_request(&made, "a.b", "c.d", "xy", 2,
                                              NULL, 1234, tok, true),
                   0);
  assert_null(uvp_nats__error_header(made));
  assert_string_equal(uvp_nats_msg_header(made, UVP_NATS_TIMEOUT_HEADER),
                      "1234");
  assert_string_equal(uvp_nats_msg_header(made, UVP_NATS_CANCEL_TOKEN_HEADER),
                      tok);
  assert_int_equal(natsMsg_GetDataLength(made), 2);
  assert_memory_equal(natsMsg_GetData(made), "xy", 2);
  uvp_nats__msg_free(made);
#endif
}

/* Requests kept 192 in flight, each new one published from the loop as a
 * reply comes in, while nats.c's delivery thread queues the next replies:
 * nats.c's requests to stop polling for writing then wait in the queue
 * behind them.  nats.c 3.4.1 took the write event that came meanwhile,
 * with nothing to write, for a closed socket, and dropped the connection
 * every 150 ms or so (uvp-fanout --nats, 10 000 URLs); none may drop. */
static int burst_start(void *arg, size_t index, uvp_promise_t **out) {
  (void)index;
  uvp_nats_request_opts_t o = {.timeout_ms = 4000};
  return uvp_nats_request(arg, "svc.echo", "x", 1, &o, out);
}

static void test_burst_keeps_connection(void **state) {
  fixture_t *f = *state;
  const size_t n = RUNNING_ON_VALGRIND ? 3000 : 10000;
  uvp_map_opts_t mo = {.limit = 192};
  uvp_promise_t *all;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_promise_map(f->ctx, n, burst_start, T.nc, &mo, &all), 0);
  run_until_settled(f, all);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  const uvp_settled_list_t *l = uvp_promise_value(all);
  size_t ok = l->fulfilled;
  assert_int_equal(l->count, n);
  uvp_nats_stats_t st;
  assert_int_equal(uvp_nats_stats(T.nc, &st), 0);
  print_message("%zu requests, 192 in flight: %zu answered in %.0f ms, %llu "
                "disconnects\n",
                n, ok, (double)(uv_hrtime() - t0) / 1e6,
                (unsigned long long)st.disconnects);
  assert_int_equal(st.disconnects, 0);
  assert_int_equal(ok, n);
  assert_int_equal(st.replies, n);
  uvp_promise_release(all);
}

static void test_no_responders(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  enum { N = 100 };
  uvp_promise_t *ps[N];
  /* runs of three requests to one subject, a short one and two longer
   * than the binding's small blocks: each request names its own */
  char a[96], b[48];
  snprintf(a, sizeof(a), "nobody.%075d", 1);
  snprintf(b, sizeof(b), "nobody.%036d", 2);
  const char *subjects[3] = {"nobody.here", a, b};
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < N; i++)
    assert_int_equal(
        uvp_nats_request(nc, subjects[i / 3 % 3], "x", 1, NULL, &ps[i]), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  assert_non_null(fp);
  assert_int_equal(uvp_nats_dump(nc, fp), N);
  fclose(fp);
  for (int i = 0; i < N; i++) {
    char line[160];
    snprintf(line, sizeof(line), "NATS request %s #%d for ",
             subjects[i / 3 % 3], i + 1);
    assert_non_null(strstr(buf, line));
  }
  free(buf);
  run_until_all_settled(f, ps, N);
  assert_int_equal(uvp_nats_dump(nc, stderr), 0); /* none in flight */
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  for (int i = 0; i < N; i++) {
    assert_int_equal(reason(ps[i]), UVP_NATS_ENORESPONDERS);
    uvp_promise_release(ps[i]);
  }
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.no_responders, N);
  assert_int_equal(st.in_flight, 0);
  print_message("%d no-responders in %.1f ms\n", N, ms);
  assert_true(ms < 5000); /* at once, not at the 30 s timeout */
}

/* A timeout, then the worker's reply to it comes and is counted late. */
static void test_timeout_and_late_reply(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p;
  uvp_nats_request_opts_t o = {.timeout_ms = 100};
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "sleep:400", 10, &o, &p),
                   0);
  run_until_settled(f, p);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(reason(p), UV_ETIMEDOUT);
  assert_true(ms >= 99 && ms < 400);
  uvp_promise_release(p);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.timeouts, 1);
  assert_int_equal(st.in_flight, 0);
  /* the reply arrives later: dropped, counted */
  while (st.late == 0 && uv_hrtime() - t0 < 10000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_stats(nc, &st);
  }
  assert_int_equal(st.late, 1);
  assert_int_equal(st.replies, 0);
}

/* The deadline travels: the caller's scope deadline (2 s) is the header,
 * and the worker's nested request carries what is left of it, less the
 * margin. */
typedef struct deadline_case_s {
  uvp_nats_t *nc;
  uvp_ctx_t *ctx;
  int rc;
  char out[256];
  double ms;
} deadline_case_t;

static uvp_ret_t deadline_fiber(void *arg) {
  deadline_case_t *c = arg;
  uvp_deadline_set(c->ctx, 2000);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_request(c->nc, "svc.nest", "nest", 5, NULL, &p), 0);
  c->rc = uvp_await(p, NULL);
  if (c->rc == 0)
    snprintf(c->out, sizeof(c->out), "%s", body(p));
  uvp_promise_release(p);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t deadline_cut_fiber(void *arg) {
  deadline_case_t *c = arg;
  uvp_deadline_set(c->ctx, 150);
  uvp_promise_t *p;
  uint64_t t0 = uv_hrtime();
  assert_int_equal(
      uvp_nats_request(c->nc, "svc.echo", "sleep:2000", 11, NULL, &p), 0);
  c->rc = uvp_await(p, NULL);
  c->ms = (double)(uv_hrtime() - t0) / 1e6;
  uvp_promise_release(p);
  return uvp_ret_value(NULL, NULL);
}

static void test_deadline(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  deadline_case_t c = {.nc = nc, .ctx = f->ctx, .rc = 1};
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, deadline_fiber, &c, NULL, &fp), 0);
  run_until_settled(f, fp);
  uvp_promise_release(fp);
  assert_int_equal(c.rc, 0);
  unsigned long outer = 0, inner = 0;
  assert_int_equal(sscanf(c.out, "hdr=%lu nested=hdr=%lu", &outer, &inner), 2);
  print_message("outer header %lu ms, nested %lu ms\n", outer, inner);
  assert_true(outer <= 2000 && outer > 1000);
  assert_true(inner <= outer - 10 && inner > 500);

  /* a deadline that passes first rejects with UV_ETIMEDOUT */
  c.rc = 1;
  assert_int_equal(uvp_fiber_spawn(f->ctx, deadline_cut_fiber, &c, NULL, &fp),
                   0);
  run_until_settled(f, fp);
  uvp_promise_release(fp);
  assert_int_equal(c.rc, UV_ETIMEDOUT);
  assert_true(c.ms >= 140 && c.ms < 1900);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.cancelled, 1);
}

static void test_cancel(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "sleep:200", 10, NULL, &p),
                   0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(reason(p), UV_ECANCELED);
  uvp_promise_release(p);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(st.cancelled, 1);
  uint64_t t0 = uv_hrtime();
  while (st.late == 0 && uv_hrtime() - t0 < 10000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_stats(nc, &st);
  }
  assert_int_equal(st.late, 1); /* its reply found no entry */
}

/* The task dump names a request "NATS request <subject> #<id>";
 * uvp_nats_dump lists them oldest first (the second expires first) with
 * their promises' sites. */
static void test_dump(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p[2];
  uvp_nats_request_opts_t sooner = {.timeout_ms = 5000};
  int line = __LINE__ + 2;
  assert_int_equal(
      uvp_nats_request(nc, "svc.echo", "sleep:300", 10, NULL, &p[0]), 0);
  assert_int_equal(
      uvp_nats_request(nc, "svc.other", "sleep:300", 10, &sooner, &p[1]), 0);
  /* in a group with a deadline: the dump names group and deadline too */
  uvp_group_t *g;
  uvp_group_opts_t go = {.deadline_ms = 5000};
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uvp_group_add(g, p[i]), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  assert_non_null(fp);
  uvp_dump_opts_t o = {.stream = fp};
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &o), 2);
  assert_int_equal(uvp_nats_dump(nc, fp), 2);
  fclose(fp);
  print_message("%s", buf);
  assert_non_null(strstr(buf, "for NATS request svc.echo #1; in group at "));
  assert_non_null(strstr(buf, "for NATS request svc.other #2; in group at "));
  const char *first = strstr(buf, "NATS request svc.echo #1 for ");
  const char *second = strstr(buf, "NATS request svc.other #2 for ");
  assert_non_null(first);
  assert_true(second > first);
  char site[64];
  snprintf(site, sizeof(site), "test-nats.c:%d)\n", line);
  assert_non_null(strstr(first, site));
  assert_true(strstr(first, site) < second);
  free(buf);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
  run_until_all_settled(f, p, 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(uvp_promise_state(p[i]), UVP_FULFILLED);
    uvp_promise_release(p[i]);
  }
}

/* UVP_CLOCK_AUTO, a virtual deadline of 5 s, a worker answering in 100 ms
 * of real time (its own context, real clock): with the hold every request
 * is answered; without it the clock jumps to the deadline at once. */
typedef struct vclock_case_s {
  uvp_nats_t *nc;
  uvp_ctx_t *ctx;
  int flags;
  int ok, timedout;
} vclock_case_t;

static uvp_ret_t vclock_fiber(void *arg) {
  vclock_case_t *c = arg;
  uvp_deadline_set(c->ctx, 5000);
  enum { N = 20 };
  uvp_promise_t *ps[N];
  uvp_nats_request_opts_t o = {.flags = c->flags};
  for (int i = 0; i < N; i++)
    assert_int_equal(
        uvp_nats_request(c->nc, "svc.echo", "sleep:100", 10, &o, &ps[i]), 0);
  for (int i = 0; i < N; i++) {
    int rc = uvp_await(ps[i], NULL);
    c->ok += rc == 0;
    c->timedout += rc == UV_ETIMEDOUT;
    uvp_promise_release(ps[i]);
  }
  return uvp_ret_value(NULL, NULL);
}

static void test_virtual_clock(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
  for (int round = 0; round < 2; round++) {
    vclock_case_t c = {.nc = nc, .ctx = f->ctx};
    c.flags = round == 0 ? 0 : UVP_NATS_REQUEST_NO_HOLD;
    uvp_promise_t *fp;
    uint64_t t0 = uv_hrtime();
    assert_int_equal(uvp_fiber_spawn(f->ctx, vclock_fiber, &c, NULL, &fp), 0);
    settle_ticking(f, fp);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    uvp_promise_release(fp);
    print_message("%s: %d answered, %d timed out, in %.1f ms\n",
                  round == 0 ? "held" : "not held", c.ok, c.timedout, ms);
    if (round == 0) {
      assert_int_equal(c.ok, 20);
    } else {
      assert_int_equal(c.timedout, 20);
      assert_true(ms < 90); /* before any answer could come */
    }
  }
  /* the unanswered ones' replies come late */
  uvp_nats_stats_t st;
  uint64_t t0 = uv_hrtime();
  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_stats(nc, &st);
  } while (st.late < 20 && uv_hrtime() - t0 < 10000000000ull);
  assert_int_equal(st.late, 20);
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_REAL), 0);
}

/* Closing with 50 requests in flight: each rejects UV_ECANCELED at once,
 * the loop ends, and uv_loop_close() == 0 (the teardown).  Then the same
 * with uvp_ctx_close first (UVP_ECLOSED), the connection closed after. */
static void test_teardown_in_flight(void **state) {
  fixture_t *f = *state;
  enum { N = 50 };
  uvp_promise_t *ps[N];
  uvp_nats_t *nc = T.nc;
  T.nc = NULL; /* the case closes it */
  for (int i = 0; i < N; i++)
    assert_int_equal(
        uvp_nats_request(nc, "svc.echo", "sleep:1000", 11, NULL, &ps[i]), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_int_equal(uvp_nats_close(nc), UV_EINVAL); /* closing already */
  for (int i = 0; i < N; i++) {
    assert_int_equal(reason(ps[i]), UV_ECANCELED);
    uvp_promise_release(ps[i]);
  }
  (void)t0;

  nc = connect_to(f, T.s);
  uvp_nats_sub_t *sub;
  uvp_promise_t *nx;
  assert_int_equal(uvp_nats_subscribe(nc, "idle.subject", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &nx), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(
        uvp_nats_request(nc, "svc.echo", "sleep:1000", 11, NULL, &ps[i]), 0);
  uvp_ctx_t *ctx = close_ctx(f);
  (void)ctx;
  for (int i = 0; i < N; i++) {
    assert_int_equal(reason(ps[i]), UVP_ECLOSED);
    uvp_promise_release(ps[i]);
  }
  assert_int_equal(reason(nx), UVP_ECLOSED);
  uvp_promise_release(nx);
  assert_int_equal(uvp_nats_close(nc), 0); /* after the context: allowed */
}

/* ---- bad input (issue 53, point 5) --------------------------------------- */

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p;
  const char *bad[] = {"",     "a b", "a..b", ".a", "a.",
                       "a\tb", "a.*", "a.>",  "*",  ">"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(uvp_nats_publish(nc, bad[i], NULL, "x", 1, NULL),
                     UV_EINVAL);
    assert_int_equal(uvp_nats_request(nc, bad[i], "x", 1, NULL, &p), UV_EINVAL);
  }
  assert_int_equal(uvp_nats_publish(nc, "ok", "bad reply", "x", 1, NULL),
                   UV_EINVAL);
  const char *nocolon[] = {"NoColon", NULL};
  assert_int_equal(uvp_nats_publish(nc, "ok", NULL, "x", 1, nocolon),
                   UV_EINVAL);
  uvp_nats_sub_t *sub;
  assert_int_equal(uvp_nats_subscribe(nc, "a..b", NULL, &sub), UV_EINVAL);
  assert_int_equal(uvp_nats_subscribe(nc, "a.>.b", NULL, &sub), UV_EINVAL);
  assert_int_equal(uvp_nats_subscribe(nc, "ok", "bad queue", &sub), UV_EINVAL);
  /* over the server's max payload (1 MB by default): nothing sent */
  int64_t max = natsConnection_GetMaxPayload(uvp_nats_connection(nc));
  assert_true(max > 0);
  char *big = calloc(1, (size_t)max + 1);
  assert_non_null(big);
  assert_int_equal(uvp_nats_publish(nc, "ok", NULL, big, (size_t)max + 1, NULL),
                   UV_EMSGSIZE);
  assert_int_equal(
      uvp_nats_request(nc, "svc.x", big, (size_t)max + 1, NULL, &p),
      UV_EMSGSIZE);
  free(big);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.requests, 0);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(uvp_nats_close(NULL), UV_EINVAL);
  assert_int_equal(uvp_nats_stats(NULL, &st), UV_EINVAL);
  assert_string_equal(uvp_nats_err_name(UVP_NATS_ENORESPONDERS),
                      "ENORESPONDERS");
  assert_string_equal(uvp_nats_err_name(UV_ETIMEDOUT), "ETIMEDOUT");
  close_and_run(f, nc);

  /* nobody listens: UV_ECONNREFUSED, and nothing left behind */
  char url[64];
  snprintf(url, sizeof(url), "nats://127.0.0.1:%d", nats_free_port());
  uvp_nats_connect_opts_t co = {.url = url};
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(reason(p), UV_ECONNREFUSED);
  uvp_promise_release(p);
  assert_true(fixture_drain(f, 10000));
}

/* A server without headers (before 2.2): Debian has none to run, so a
 * thread plays one for the handshake only: INFO without "headers", then
 * PONG to the client's PING, then it waits for the client to go. */
typedef struct old_server_s {
  int listen_fd, port;
} old_server_t;

static void old_server_run(void *arg) {
  old_server_t *o = arg;
  int fd = accept(o->listen_fd, NULL, NULL);
  if (fd < 0)
    return;
  const char *info = "INFO {\"server_id\":\"old\",\"version\":\"2.1.0\","
                     "\"proto\":1,\"max_payload\":1048576}\r\n";
  (void)!write(fd, info, strlen(info));
  char buf[4096];
  size_t have = 0;
  ssize_t n;
  bool ponged = false;
  while ((n = read(fd, buf + have, sizeof(buf) - 1 - have)) > 0) {
    have += (size_t)n;
    buf[have] = '\0';
    if (!ponged && strstr(buf, "PING\r\n") != NULL) {
      (void)!write(fd, "PONG\r\n", 6);
      ponged = true;
    }
    if (have > sizeof(buf) / 2)
      have = 0;
  }
  close(fd);
}

static void test_server_without_headers(void **state) {
  fixture_t *f = *state;
  old_server_t o;
  o.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(o.listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(o.listen_fd, (struct sockaddr *)&a, &len), 0);
  assert_int_equal(listen(o.listen_fd, 1), 0);
  uv_thread_t t;
  assert_int_equal(uv_thread_create(&t, old_server_run, &o), 0);
  char url[64];
  snprintf(url, sizeof(url), "nats://127.0.0.1:%d", ntohs(a.sin_port));
  uvp_nats_connect_opts_t co = {.url = url};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(reason(p), UV_ENOTSUP);
  uvp_promise_release(p);
  assert_true(fixture_drain(f, 10000)); /* closed: the thread's read ends */
  assert_int_equal(uv_thread_join(&t), 0);
  close(o.listen_fd);
}

/* A connect cancelled while nats.c connects on its pool thread: rejected
 * at once; the connection it makes is closed and freed by the binding. */
static void test_connect_cancelled(void **state) {
  fixture_t *f = *state;
  uvp_nats_connect_opts_t co = {.url = T.s->url};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(reason(p), UV_ECANCELED);
  uvp_promise_release(p);
  assert_true(fixture_drain(f, 10000)); /* connected, closed, freed */
}

/* ---- uvp_nats_open: used before it is up --------------------------------- */

static uvp_ret_t count_served(void *arg) {
  uvp_nats_served_t *req = arg;
  (void)req;
  return uvp_ret_value(strdup("served"), free);
}

/* Everything asked while it connects is taken and goes once it is up, in
 * order: the subscription first, then the requests (one to the test's own
 * subscription, which must be there to get it), then the flush; a request
 * cancelled meanwhile (between the two others) never goes; publish and
 * drain say UV_ENOTCONN. */
static void test_open_before_connected(void **state) {
  fixture_t *f = *state;
  uvp_nats_connect_opts_t co = {.url = T.s->url};
  uvp_nats_t *nc;
  assert_int_equal(uvp_nats_close(T.nc), 0); /* the fixture's: not used */
  assert_int_equal(uvp_nats_open(f->ctx, &co, &nc), 0);
  T.nc = nc;
  assert_null(uvp_nats_connection(nc));
  uvp_nats_sub_t *sub;
  uvp_promise_t *next, *own, *echo, *cut, *fl, *d;
  assert_int_equal(uvp_nats_subscribe(nc, "own.x", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &next), 0);
  uvp_nats_request_opts_t ro = {.timeout_ms = 3000};
  assert_int_equal(uvp_nats_request(nc, "own.x", "me", 3, &ro, &own), 0);
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "y", 1, &ro, &cut), 0);
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "x", 1, &ro, &echo), 0);
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  assert_int_equal(uvp_nats_publish(nc, "own.x", NULL, "p", 1, NULL),
                   UV_ENOTCONN);
  assert_int_equal(uvp_nats_drain(sub, &d), UV_ENOTCONN);
  assert_int_equal(uvp_nats_close(NULL), UV_EINVAL);
  assert_int_equal(uvp_promise_cancel(cut), 0);
  assert_int_equal(reason(cut), UV_ECANCELED);
  assert_int_equal(uvp_promise_state(next), UVP_PENDING);

  /* the request to its own subscription arrives there: it was made first */
  run_until_settled(f, next);
  assert_non_null(uvp_nats_connection(nc));
  natsMsg *m = uvp_promise_value(next);
  assert_non_null(m);
  assert_string_equal(natsMsg_GetData(m), "me");
  const char *hdr = uvp_nats_msg_header(m, UVP_NATS_TIMEOUT_HEADER);
  assert_non_null(hdr);
  unsigned long left = strtoul(hdr, NULL, 10);
  assert_true(left <= 3000 && left > 1000); /* what was left when sent */
  assert_int_equal(
      uvp_nats_publish(nc, natsMsg_GetReply(m), NULL, "ok", 3, NULL), 0);
  run_until_settled(f, own);
  assert_string_equal(body(own), "ok");
  run_until_settled(f, echo);
  assert_int_equal(strncmp(body(echo), "hdr=", 4), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_nats_stats_t st;
  assert_int_equal(uvp_nats_stats(nc, &st), 0);
  assert_int_equal(st.requests, 3);
  assert_int_equal(st.replies, 2);
  assert_int_equal(st.cancelled, 1);
  assert_int_equal(st.in_flight, 0);
  assert_int_equal(T.w.served, 1); /* "y" never went */
  uvp_promise_t *ps[] = {next, own, echo, cut, fl};
  for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
    uvp_promise_release(ps[i]);
  /* nats_teardown closes it (T.nc), with the worker */
}

/* A comma-separated url is several servers: nats.c tries each (a closed
 * port first or second) until one answers; a list of nothing is refused
 * at the call. */
static void test_url_list(void **state) {
  fixture_t *f = *state;
  char list[300];
  snprintf(list, sizeof(list), "nats://127.0.0.1:1, %s", T.s->url);
  uvp_nats_t *nc = connect_opts(f, f->ctx, list, NULL, 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_promise_release(fl);
  close_and_run(f, nc);
  uvp_promise_t *p = NULL;
  uvp_nats_connect_opts_t co = {.url = " , ,"};
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &p), UV_EINVAL);
  assert_null(p);
}

/* A connect that fails: what was asked meanwhile (a request, a wait, a
 * service, a flush) rejects with its code, and the connection takes
 * nothing new until the program closes it, once. */
static void test_open_refused(void **state) {
  fixture_t *f = *state;
  natsOptions *o = NULL;
  assert_int_equal(natsOptions_Create(&o), NATS_OK);
  assert_int_equal(natsOptions_SetTimeout(o, 500), NATS_OK);
  uvp_nats_connect_opts_t co = {.url = "nats://127.0.0.1:1", .options = o};
  uvp_nats_t *nc;
  assert_int_equal(uvp_nats_open(f->ctx, &co, &nc), 0);
  uvp_nats_sub_t *sub;
  uvp_nats_svc_t *svc;
  uvp_promise_t *r, *next, *fl;
  uvp_nats_serve_opts_t so = {.fiber = count_served};
  assert_int_equal(uvp_nats_request(nc, "a.b", "x", 1, NULL, &r), 0);
  assert_int_equal(uvp_nats_subscribe(nc, "a.>", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &next), 0);
  assert_int_equal(uvp_nats_serve(nc, "jobs", "q", &so, &svc), 0);
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(reason(fl), UV_ECONNREFUSED);
  assert_int_equal(reason(r), UV_ECONNREFUSED);
  assert_int_equal(reason(next), UV_ECONNREFUSED);
  uvp_promise_t *late;
  assert_int_equal(uvp_nats_request(nc, "a.b", "x", 1, NULL, &late),
                   UVP_ECLOSED);
  assert_int_equal(uvp_nats_publish(nc, "a.b", NULL, "x", 1, NULL),
                   UVP_ECLOSED);
  uvp_promise_release(r);
  uvp_promise_release(next);
  uvp_promise_release(fl);
  /* uv_run() returns, the connection not closed yet: so a worker's loop
   * ends when it cannot connect */
  assert_true(fixture_drain(f, 10000));
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_int_equal(uvp_nats_close(nc), UV_EINVAL);
  assert_true(fixture_drain(f, 10000)); /* its memory goes */
}

/* Closed while it connects: what was asked rejects UV_ECANCELED at once,
 * and the connection made is closed when the connect returns.  The same
 * when its context closes meanwhile (UVP_ECLOSED then). */
static void test_open_closed_while_connecting(void **state) {
  fixture_t *f = *state;
  uvp_nats_connect_opts_t co = {.url = T.s->url};
  uvp_nats_t *nc;
  uvp_promise_t *r;
  assert_int_equal(uvp_nats_open(f->ctx, &co, &nc), 0);
  assert_int_equal(uvp_nats_request(nc, "a.b", "x", 1, NULL, &r), 0);
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_int_equal(reason(r), UV_ECANCELED);
  assert_int_equal(uvp_nats_close(nc), UV_EINVAL);
  uvp_promise_release(r);
  assert_true(fixture_drain(f, 10000));

  uvp_ctx_t *ctx;
  assert_int_equal(uvp_ctx_new(&f->loop, &ctx), 0);
  assert_int_equal(uvp_nats_open(ctx, &co, &nc), 0);
  assert_int_equal(uvp_nats_request(nc, "a.b", "x", 1, NULL, &r), 0);
  uvp_ctx_close(ctx);
  assert_int_equal(reason(r), UVP_ECLOSED); /* as all a context had */
  uvp_promise_release(r);
  /* The connect is abandoned (its thread closes what it makes: the
   * connection never has one), or, when nats.c returned before the close,
   * the connection it made is closed on libuv's pool: either way the
   * binding lets go of it, which the pool's close may take a while to do
   * on a loaded machine (20 turns of the loop were not always enough). */
  uint64_t until = uv_hrtime() + 10 * UINT64_C(1000000000);
  while (uvp_nats_connection(nc) != NULL && uv_hrtime() < until) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  assert_null(uvp_nats_connection(nc));
  assert_int_equal(uvp_nats_request(nc, "a.b", "x", 1, NULL, &r), UVP_ECLOSED);
  assert_int_equal(uvp_nats_close(nc), 0);
  assert_true(fixture_drain(f, 10000));
}

/* ---- subscriptions ------------------------------------------------------- */

static void test_subscribe(void **state) {
  fixture_t *f = *state;
  uvp_nats_t *a = T.nc, *b = connect_to(f, T.s);
  uvp_nats_sub_t *sub;
  assert_int_equal(uvp_nats_subscribe(b, "ev.>", "q", &sub), 0);
  uvp_promise_t *fl, *n[3];
  assert_int_equal(uvp_nats_flush(b, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_promise_release(fl);
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_nats_next(sub, &n[i]), 0);
  /* the second wait cancelled: the others get messages 1 and 2, in order */
  assert_int_equal(uvp_promise_cancel(n[1]), 0);
  /* a task waiting on the next (the dump names it), and a next nobody
   * awaits yet: started work, a task of its own */
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_add(g, n[0]), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&buf, &len);
  uvp_dump_opts_t o = {.stream = fp};
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &o), 2);
  fclose(fp);
  print_message("%s", buf);
  const char *member = strstr(buf, "member ");
  const char *alone = strstr(buf, "\npromise ");
  assert_non_null(member);
  assert_non_null(alone);
  assert_non_null(strstr(member, "for NATS next ev.> [queue q]"));
  assert_non_null(strstr(alone, "for NATS next ev.> [queue q]"));
  free(buf);
  uvp_group_close(g);
  uvp_group_release(g);
  for (int i = 1; i <= 4; i++) {
    char m[8];
    snprintf(m, sizeof(m), "m%d", i);
    assert_int_equal(uvp_nats_publish(a, "ev.x.y", NULL, m, 3, NULL), 0);
  }
  run_until_settled(f, n[0]);
  run_until_settled(f, n[2]);
  assert_string_equal(body(n[0]), "m1");
  assert_string_equal(body(n[2]), "m2");
  for (int i = 0; i < 3; i++)
    uvp_promise_release(n[i]);
  /* drain: m3 and m4 are still handed out, then it completes */
  uvp_promise_t *d, *m3, *m4, *after;
  assert_int_equal(uvp_nats_drain(sub, &d), 0);
  assert_int_equal(uvp_nats_drain(sub, &fl), UV_EALREADY);
  assert_int_equal(uvp_nats_next(sub, &m3), 0);
  assert_int_equal(uvp_nats_next(sub, &m4), 0);
  run_until_settled(f, m4);
  assert_string_equal(body(m3), "m3");
  assert_string_equal(body(m4), "m4");
  assert_int_equal(uvp_nats_next(sub, &after), 0);
  run_until_settled(f, d);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  assert_int_equal(reason(after), UV_EOF);
  uvp_promise_release(d);
  uvp_promise_release(m3);
  uvp_promise_release(m4);
  uvp_promise_release(after);

  /* unsubscribe: a wait rejects UV_ECANCELED */
  assert_int_equal(uvp_nats_subscribe(b, "other", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &n[0]), 0);
  assert_int_equal(uvp_nats_unsubscribe(sub), 0);
  assert_int_equal(reason(n[0]), UV_ECANCELED);
  uvp_promise_release(n[0]);
  close_and_run(f, b);
}

static int events_seen[8];

static void on_event(void *arg, uvp_nats_t *nc, uvp_nats_event_t ev) {
  (void)arg;
  (void)nc;
  events_seen[ev]++;
}

/* A flood past a subscription's pending limits (nats.c's 65 536
 * messages): nats.c drops the rest and says NATS_SLOW_CONSUMER on its
 * asynchronous thread; the binding counts the dropped messages and tells
 * on_event, and what was kept is still handed out, in order. */
static void test_slow_consumer(void **state) {
  fixture_t *f = *state;
  memset(events_seen, 0, sizeof(events_seen));
  uvp_promise_t *cp;
  uvp_nats_connect_opts_t co = {.url = T.s->url, .on_event = on_event};
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &cp), 0);
  run_until_settled(f, cp);
  uvp_nats_t *b = uvp_promise_value(cp);
  assert_non_null(b);
  uvp_promise_release(cp);
  uvp_nats_t *a = T.nc;
  uvp_nats_sub_t *sub;
  assert_int_equal(uvp_nats_subscribe(b, "flood", NULL, &sub), 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(b, &fl), 0);
  run_until_settled(f, fl);
  uvp_promise_release(fl);
  enum { N = 70000 };
  for (int i = 0; i < N; i++) {
    char m[16];
    int len = snprintf(m, sizeof(m), "%d", i) + 1;
    assert_int_equal(uvp_nats_publish(a, "flood", NULL, m, (size_t)len, NULL),
                     0);
  }
  assert_int_equal(uvp_nats_flush(a, &fl), 0);
  run_until_settled(f, fl);
  uvp_promise_release(fl);
  uvp_nats_stats_t st;
  uint64_t t0 = uv_hrtime();
  uv_timer_t tick; /* nothing waits on the subscription: keep the loop
                      reading (its poll handle is unreferenced) */
  uv_timer_init(&f->loop, &tick);
  uv_timer_start(&tick, settle_tick, 5, 5);
  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_stats(b, &st);
  } while (
      (st.dropped < N - 65536 || events_seen[UVP_NATS_SLOW_CONSUMER] == 0) &&
      uv_hrtime() - t0 < 30000000000ull);
  print_message("%d published, %" PRIu64 " dropped by nats.c, %d slow-consumer "
                "events\n",
                N, st.dropped, events_seen[UVP_NATS_SLOW_CONSUMER]);
  uv_close((uv_handle_t *)&tick, NULL);
  assert_int_equal(st.dropped, N - 65536); /* all it could not keep */
  assert_true(events_seen[UVP_NATS_SLOW_CONSUMER] >= 1);
  uvp_promise_t *first;
  assert_int_equal(uvp_nats_next(sub, &first), 0);
  run_until_settled(f, first);
  assert_string_equal(body(first), "0"); /* the oldest kept */
  uvp_promise_release(first);
  close_and_run(f, b);
}

/* ---- a server that goes away --------------------------------------------- */

static natsOptions *quick_reconnect(int ping_ms) {
  natsOptions *o;
  assert_int_equal(natsOptions_Create(&o), NATS_OK);
  natsOptions_SetReconnectWait(o, 100);
  natsOptions_SetMaxReconnect(o, 100);
  if (ping_ms > 0) {
    natsOptions_SetPingInterval(o, ping_ms);
    natsOptions_SetMaxPingsOut(o, 2);
  }
  return o;
}

/* Sleep ms in the running fiber: what uvp_await of a delay gives (0, or
 * the cut's code). */
static int fiber_sleep(uvp_ctx_t *ctx, uint64_t ms) {
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(ctx, ms, NULL, NULL, 0, &d), 0);
  int rc = uvp_await(d, NULL);
  uvp_promise_release(d);
  return rc;
}

typedef struct restart_s {
  nats_server_t *s;
  uvp_ctx_t *ctx;
  int mode; /* 0: kill and start again; 1: SIGSTOP, then SIGCONT */
} restart_t;

static uvp_ret_t restart_fiber(void *arg) {
  restart_t *r = arg;
  (void)fiber_sleep(r->ctx, 50);
  if (r->mode == 0)
    nats_server_kill(r->s);
  else
    kill(r->s->pid, SIGSTOP);
  (void)fiber_sleep(r->ctx, r->mode == 0 ? 300 : 1500);
  if (r->mode == 0)
    nats_server_start(r->s); /* the same port */
  else
    kill(r->s->pid, SIGCONT);
  return uvp_ret_value(NULL, NULL);
}

/* On a server of the case's own (setup_own_server). */
static void server_away(fixture_t *f, int mode) {
  worker_start(f, &T.w, T.s, quick_reconnect(mode == 1 ? 200 : 0));
  uvp_nats_t *nc = T.nc = connect_opts(f, f->ctx, T.s->url,
                                       quick_reconnect(mode == 1 ? 200 : 0), 0);
  enum { N = 50 };
  uvp_promise_t *ps[N], *fp;
  for (int i = 0; i < N; i++) {
    uvp_nats_request_opts_t o = {.timeout_ms = 4000};
    assert_int_equal(uvp_nats_request(nc, "svc.echo",
                                      mode == 0 ? "sleep:800" : "sleep:200", 10,
                                      &o, &ps[i]),
                     0);
  }
  restart_t r = {T.s, f->ctx, mode};
  assert_int_equal(uvp_fiber_spawn(f->ctx, restart_fiber, &r, NULL, &fp), 0);
  uint64_t t0 = uv_hrtime();
  run_until_all_settled(f, ps, N);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  int ok = 0, timedout = 0;
  for (int i = 0; i < N; i++) {
    int rc = reason(ps[i]);
    ok += uvp_promise_state(ps[i]) == UVP_FULFILLED;
    timedout += rc == UV_ETIMEDOUT;
    uvp_promise_release(ps[i]);
  }
  run_until_settled(f, fp);
  uvp_promise_release(fp);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  print_message("%s: %d answered, %d timed out in %.0f ms; %" PRIu64
                " disconnects, %" PRIu64 " reconnects, %" PRIu64
                " polls, %" PRIu64 " events queued from nats.c's threads\n",
                mode == 0 ? "restarted" : "frozen", ok, timedout, ms,
                st.disconnects, st.reconnects, st.polls, st.queued_events);
  assert_int_equal(ok + timedout, N); /* every request ended, once */
  assert_int_equal(st.in_flight, 0);
  /* and once it is back, requests are answered again */
  uvp_promise_t *p;
  for (int tries = 0; tries < 100; tries++) {
    uvp_nats_request_opts_t o = {.timeout_ms = 1000};
    assert_int_equal(uvp_nats_request(nc, "svc.echo", "x", 1, &o, &p), 0);
    run_until_settled(f, p);
    bool done = uvp_promise_state(p) == UVP_FULFILLED;
    uvp_promise_release(p);
    if (done)
      break;
    assert_true(tries < 99);
  }
}

static void test_server_restarted(void **state) { server_away(*state, 0); }

static void test_server_frozen(void **state) { server_away(*state, 1); }

/* UVP_NATS_FAIL_ON_DISCONNECT: requests in flight reject at once with
 * UVP_NATS_EDISCONNECTED when the server goes; a connection whose
 * reconnect attempts run out is closed for good: UVP_ECLOSED, and its
 * event handler hears UVP_NATS_CLOSED. */

static void test_disconnect_and_closed(void **state) {
  fixture_t *f = *state;
  worker_start(f, &T.w, T.s, quick_reconnect(0));
  memset(events_seen, 0, sizeof(events_seen));
  uvp_promise_t *cp;
  natsOptions *once = quick_reconnect(0);
  natsOptions_SetMaxReconnect(once, 1);
  uvp_nats_connect_opts_t co = {.url = T.s->url,
                                .options = once,
                                .flags = UVP_NATS_FAIL_ON_DISCONNECT,
                                .on_event = on_event};
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &cp), 0);
  run_until_settled(f, cp);
  uvp_nats_t *nc = T.nc = uvp_promise_value(cp);
  assert_non_null(nc);
  uvp_promise_release(cp);
  enum { N = 10 };
  uvp_promise_t *ps[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(
        uvp_nats_request(nc, "svc.echo", "sleep:3000", 11, NULL, &ps[i]), 0);
  uvp_nats_sub_t *sub;
  uvp_promise_t *nx;
  assert_int_equal(uvp_nats_subscribe(nc, "quiet", NULL, &sub), 0);
  assert_int_equal(uvp_nats_next(sub, &nx), 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  uvp_promise_release(fl);
  uint64_t t0 = uv_hrtime();
  nats_server_kill(T.s);
  run_until_all_settled(f, ps, N);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  for (int i = 0; i < N; i++) {
    assert_int_equal(reason(ps[i]), UVP_NATS_EDISCONNECTED);
    uvp_promise_release(ps[i]);
  }
  print_message("%d requests UVP_NATS_EDISCONNECTED %.1f ms after the kill\n",
                N, ms);
  assert_true(ms < 2500);   /* at once, not at 3 s */
  run_until_settled(f, nx); /* one reconnect attempt, then closed */
  assert_int_equal(reason(nx), UVP_ECLOSED);
  uvp_promise_release(nx);
  assert_true(events_seen[UVP_NATS_DISCONNECTED] >= 1);
  assert_int_equal(events_seen[UVP_NATS_CLOSED], 1);
  assert_int_equal(uvp_nats_request(nc, "svc.echo", "x", 1, NULL, &cp),
                   UVP_ECLOSED);
}

/* ---- a server's limits: max_payload, the reconnect buffer ---------------- */

/* A server of the case's own whose config says max_payload: 1024. */
static int setup_small_server(void **state) {
  setup_server(state);
  T.s = &T.own;
  if (nats_server_available()) {
    nats_server_config(&T.own, "max_payload: 1024\n");
    nats_server_start(&T.own);
  }
  return 0;
}

static uvp_nats_t *nc_of_stats; /* the connection disconnected() watches */

static bool disconnected(void *arg) {
  (void)arg;
  uvp_nats_stats_t st;
  uvp_nats_stats(nc_of_stats, &st);
  return st.disconnects > 0;
}

static bool reconnected(void *arg) {
  (void)arg;
  uvp_nats_stats_t st;
  uvp_nats_stats(nc_of_stats, &st);
  return st.reconnects > 0;
}

/* Publishes and requests over the server's max_payload (1 KiB from its
 * config) are UV_EMSGSIZE with nothing sent, and the connection goes on:
 * 1 KiB exactly is delivered.  Then the server goes: publishes are held in
 * nats.c's reconnect buffer (4 KiB here) until one does not fit,
 * UV_ENOBUFS (a request too, with nothing left in flight); the server
 * comes back (on the same port) and what was held is delivered, in order,
 * and the connection goes on. */
static void test_max_payload_and_reconnect_buffer(void **state) {
  fixture_t *f = *state;
  natsOptions *o = quick_reconnect(0);
  natsOptions_SetReconnectBufSize(o, 4096);
  uvp_nats_t *nc = T.nc = connect_opts(f, f->ctx, T.s->url, o, 0);
  assert_int_equal(natsConnection_GetMaxPayload(uvp_nats_connection(nc)), 1024);
  uvp_nats_sub_t *sub;
  uvp_promise_t *p, *fl;
  assert_int_equal(uvp_nats_subscribe(nc, "big", NULL, &sub), 0);
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  assert_int_equal(uvp_promise_state(fl), UVP_FULFILLED);
  uvp_promise_release(fl);
  static char data[2048];
  memset(data, 'd', sizeof(data));
  assert_int_equal(uvp_nats_publish(nc, "big", NULL, data, 1025, NULL),
                   UV_EMSGSIZE);
  assert_int_equal(uvp_nats_request(nc, "big", data, 1025, NULL, &p),
                   UV_EMSGSIZE);
  assert_int_equal(uvp_nats_publish(nc, "big", NULL, data, 1024, NULL), 0);
  assert_int_equal(uvp_nats_next(sub, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_int_equal(natsMsg_GetDataLength(uvp_promise_value(p)), 1024);
  uvp_promise_release(p);
  uvp_nats_stats_t st;
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.requests, 0);

  nats_server_kill(T.s);
  nc_of_stats = nc;
  uv_timer_t tick; /* nothing waits: keep the loop turning */
  uv_timer_init(&f->loop, &tick);
  uv_timer_start(&tick, settle_tick, 5, 5);
  run_until_true(f, disconnected, NULL);
  int held = 0, rc = 0;
  for (int i = 0; i < 10 && rc == 0; i++) {
    char m[1000];
    memset(m, '0' + i, sizeof(m));
    rc = uvp_nats_publish(nc, "big", NULL, m, sizeof(m), NULL);
    held += rc == 0;
  }
  print_message("%d publishes of 1000 bytes held, then %s\n", held,
                uvp_nats_err_name(rc));
  assert_int_equal(rc, UV_ENOBUFS);
  assert_true(held >= 1 && held <= 5); /* 4096 bytes, give or take one */
  assert_int_equal(uvp_nats_request(nc, "big", data, 100, NULL, &p),
                   UV_ENOBUFS);
  uvp_nats_stats(nc, &st);
  assert_int_equal(st.in_flight, 0);
  nats_server_start(T.s); /* the same port, without the config now */
  for (int i = 0; i < held; i++) {
    assert_int_equal(uvp_nats_next(sub, &p), 0);
    run_until_settled(f, p);
    assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
    natsMsg *m = uvp_promise_value(p);
    assert_int_equal(natsMsg_GetDataLength(m), 1000);
    assert_int_equal(natsMsg_GetData(m)[0], '0' + i);
    uvp_promise_release(p);
  }
  /* nats.c's reconnected callback runs on a thread of its own: its event
   * may reach the loop after the messages the reconnect let through. */
  run_until_true(f, reconnected, NULL);
  uv_close((uv_handle_t *)&tick, NULL);
  assert_int_equal(uvp_nats_publish(nc, "big", NULL, "after", 6, NULL), 0);
  assert_int_equal(uvp_nats_next(sub, &p), 0);
  run_until_settled(f, p);
  assert_string_equal(body(p), "after");
  uvp_promise_release(p);
  uvp_nats_stats(nc, &st);
  assert_true(st.reconnects >= 1);
}

/* ---- credentials from the environment (uvp_nats_options_auth) ----------- */

/* A server of the case's own that wants a user and password. */
static int setup_auth_server(void **state) {
  setup_server(state);
  T.s = &T.own;
  if (nats_server_available()) {
    nats_server_config(&T.own,
                       "authorization { user: uvp, password: s3cret }\n");
    nats_server_start(&T.own);
  }
  return 0;
}

static const char *const auth_vars[] = {
    "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS",   "NATS_NKEY",
    "NATS_CA",   "NATS_CERT",     "NATS_KEY",   "NATS_TLS_NAME"};

static void auth_unsetenv(void) {
  for (size_t i = 0; i < sizeof(auth_vars) / sizeof(auth_vars[0]); i++)
    unsetenv(auth_vars[i]);
}

/* A connect with options from uvp_nats_options_auth(a): 0 or the code the
 * connect rejected with. */
static int connect_auth(fixture_t *f, const uvp_nats_auth_t *a) {
  natsOptions *o = NULL;
  const char *what = "unset";
  assert_int_equal(natsOptions_Create(&o), NATS_OK);
  assert_int_equal(uvp_nats_options_auth(o, a, &what), 0);
  assert_null(what);
  uvp_nats_connect_opts_t co = {.url = T.s->url, .options = o};
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_connect(f->ctx, &co, &p), 0);
  run_until_settled(f, p);
  int rc = 0;
  if (uvp_promise_state(p) == UVP_FULFILLED)
    close_and_run(f, uvp_promise_value(p));
  else
    rc = reason(p);
  uvp_promise_release(p);
  return rc;
}

/* One option's error: its code, and the name *what gets. */
static void auth_refused(const uvp_nats_auth_t *a, int code, const char *name) {
  natsOptions *o = NULL;
  const char *what = NULL;
  assert_int_equal(natsOptions_Create(&o), NATS_OK);
  assert_int_equal(uvp_nats_options_auth(o, a, &what), code);
  assert_non_null(what);
  assert_string_equal(what, name);
  natsOptions_Destroy(o);
}

/* The user and password from NATS_USER and NATS_PASSWORD connect to a
 * server that wants them; a wrong password (the environment's, or the
 * field's over a right one in the environment) is refused, UV_EACCES.  A
 * .creds or nkey file that is not there is said before any connect,
 * UV_ENOENT, naming the variable or the field; half a certificate pair,
 * UV_EINVAL naming the half missing. */
static void test_options_auth(void **state) {
  fixture_t *f = *state;
  auth_unsetenv();
  assert_int_equal(connect_auth(f, NULL), UV_EACCES); /* none: refused */
  setenv("NATS_USER", "uvp", 1);
  setenv("NATS_PASSWORD", "s3cret", 1);
  assert_int_equal(connect_auth(f, NULL), 0);
  assert_int_equal(connect_auth(f, &(uvp_nats_auth_t){.password = ""}), 0);
  assert_int_equal(connect_auth(f, &(uvp_nats_auth_t){.password = "wrong"}),
                   UV_EACCES);
  setenv("NATS_PASSWORD", "wrong", 1);
  assert_int_equal(connect_auth(f, NULL), UV_EACCES);
  assert_int_equal(connect_auth(f, &(uvp_nats_auth_t){.password = "s3cret"}),
                   0);

  setenv("NATS_CREDS", "/nonexistent/uvp.creds", 1);
  auth_refused(NULL, UV_ENOENT, "NATS_CREDS");
  auth_refused(&(uvp_nats_auth_t){.creds = "/nonexistent/a.creds"}, UV_ENOENT,
               "creds");
  unsetenv("NATS_CREDS");
  auth_refused(&(uvp_nats_auth_t){.nkey = "/nonexistent/a.nk"}, UV_ENOENT,
               "nkey");
  setenv("NATS_CERT", "/nonexistent/client.pem", 1);
  auth_refused(NULL, UV_EINVAL, "NATS_KEY");
  auth_refused(&(uvp_nats_auth_t){.key = "/nonexistent/client.key", .cert = ""},
               UV_EPROTO, "NATS_CERT"); /* nats.c cannot load them */
  assert_int_equal(uvp_nats_options_auth(NULL, NULL, NULL), UV_EINVAL);
  auth_unsetenv();
}

/* ---- serving (uvp_nats_serve) -------------------------------------------- */

static uvp_ret_t svc_fiber(void *arg) {
  uvp_nats_served_t *req = arg;
  svc_case_t *c = req->arg;
  const char *body = natsMsg_GetData(req->msg);
  if (strncmp(body, "sleep:", 6) == 0) {
    int rc = fiber_sleep(c->ctx, strtoull(body + 6, NULL, 10));
    if (rc != 0)
      return uvp_ret_reject(rc, NULL, NULL);
  }
  if (strncmp(body, "wait:", 5) == 0) { /* sleep, saying how it was cut */
    c->started++;
    uvp_promise_t *d;
    assert_int_equal(
        uvp_delay(c->ctx, strtoull(body + 5, NULL, 10), NULL, NULL, 0, &d), 0);
    int rc = uvp_await(d, NULL);
    if (rc != 0) {
      c->cut_ns = uv_hrtime();
      c->cut_rc = rc;
      c->cuts++;
      uvp_cause_format(uvp_promise_cause(d), c->cut_why, sizeof(c->cut_why));
    }
    uvp_promise_release(d);
    if (rc != 0)
      return uvp_ret_reject(rc, NULL, NULL);
  }
  if (strcmp(body, "fail") == 0)
    return uvp_ret_reject(UV_EIO, NULL, NULL);
  if (strcmp(body, "left") == 0) { /* the deadline it was given */
    char *out = malloc(64);
    snprintf(out, 64, "%" PRIu64 " %" PRIu64, req->timeout_ms,
             uvp_deadline_left(c->ctx));
    return uvp_ret_value(out, free);
  }
  return uvp_ret_value("served", NULL);
}

static int svc_start_cb(uvp_nats_served_t *req, uvp_promise_t **out) {
  svc_case_t *c = req->arg;
  return uvp_delay(c->ctx, 10, "started", NULL, 0, out);
}

/* A request's reply, sent by hand with `headers` to a subject the test
 * subscribes to: the raw reply, to read Uvp-Error. */
static natsMsg *raw_request(fixture_t *f, uvp_nats_t *nc, uvp_nats_sub_t *sub,
                            const char *body, const char *const *headers,
                            uvp_promise_t **keep) {
  assert_int_equal(uvp_nats_publish(nc, "svc.raw", "raw.reply", body,
                                    strlen(body) + 1, headers),
                   0);
  assert_int_equal(uvp_nats_next(sub, keep), 0);
  uv_timer_t t; /* a reply that never comes fails in 10 s, not hangs */
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  uv_timer_start(&t, settle_tick, 10, 10);
  run_until_settled(f, *keep);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* its close, before t goes */
  assert_int_equal(uvp_promise_state(*keep), UVP_FULFILLED);
  return uvp_promise_value(*keep);
}

static void test_serve(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber, .margin_ms = 20};
  svc_case_start(f, &T.svc, T.s, &o);
  uvp_nats_t *nc = T.nc;

  uvp_promise_t *p;
  assert_int_equal(uvp_nats_request(nc, "svc.a", "hello", 6, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  natsMsg *m = uvp_promise_value(p);
  assert_memory_equal(natsMsg_GetData(m), "served", 6);
  const char *worker = uvp_nats_msg_header(m, UVP_NATS_WORKER_HEADER);
  char want[32];
  snprintf(want, sizeof(want), ":%ld", (long)getpid());
  assert_non_null(worker);
  assert_non_null(strstr(worker, want));
  assert_null(uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER));
  uvp_promise_release(p);

  /* the deadline the fiber got: the header less the margin */
  uvp_nats_request_opts_t ro = {.timeout_ms = 3000};
  assert_int_equal(uvp_nats_request(nc, "svc.a", "left", 5, &ro, &p), 0);
  run_until_settled(f, p);
  unsigned long hdr = 0, left = 0;
  assert_int_equal(sscanf(body(p), "%lu %lu", &hdr, &left), 2);
  print_message("Uvp-Timeout-Ms %lu, the fiber's deadline in %lu ms\n", hdr,
                left);
  assert_true(hdr <= 3000 && hdr > 2000);
  assert_true(left <= hdr - 20 && left > hdr - 1000);
  uvp_promise_release(p);

  /* a failing handler: Uvp-Error and its message */
  assert_int_equal(uvp_nats_request(nc, "svc.a", "fail", 5, NULL, &p), 0);
  run_until_settled(f, p);
  void *payload = NULL;
  assert_int_equal(uvp_promise_reason(p, &payload), UV_EIO);
  m = payload;
  assert_non_null(uvp_nats_msg_header(m, UVP_NATS_WORKER_HEADER));
  assert_string_equal(uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER), "EIO");
  assert_memory_equal(natsMsg_GetData(m), "i/o error", 9);
  uvp_promise_release(p);

  /* bad Uvp-Timeout-Ms: answered, unserved */
  uvp_nats_sub_t *raw;
  assert_int_equal(uvp_nats_subscribe(nc, "raw.reply", NULL, &raw), 0);
  uvp_promise_t *fl;
  assert_int_equal(uvp_nats_flush(nc, &fl), 0);
  run_until_settled(f, fl);
  uvp_promise_release(fl);
  struct {
    const char *hdr, *err;
  } bad[] = {{"Uvp-Timeout-Ms: abc", "EPROTO"},
             {"Uvp-Timeout-Ms: -5", "EPROTO"},
             {"Uvp-Timeout-Ms: 86400001", "EPROTO"},
             {"Uvp-Timeout-Ms: 0", "ETIMEDOUT"},
             /* an empty value is absent (nats.c 3.4 cannot read a
              * header block with one): served, with the default */
             {"Uvp-Timeout-Ms:", NULL},
             {"traceparent:", NULL},
             /* at or below the margin (20 here): nothing left to serve
              * it in, answered at once rather than dropped unanswered */
             {"Uvp-Timeout-Ms: 1", "ETIMEDOUT"},
             {"Uvp-Timeout-Ms: 20", "ETIMEDOUT"},
             {"Uvp-Timeout-Ms: 60", NULL},
             {"Other: x", NULL}}; /* absent: the default, served */
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char *h[] = {bad[i].hdr, NULL};
    m = raw_request(f, nc, raw, "x", h, &p);
    const char *e = uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER);
    if (bad[i].err == NULL)
      assert_null(e);
    else if (e == NULL)
      fail_msg("%s: served, not answered %s", bad[i].hdr, bad[i].err);
    else
      assert_string_equal(e, bad[i].err);
    uvp_promise_release(p);
  }
  /* no reply subject: served, counted */
  assert_int_equal(uvp_nats_publish(nc, "svc.a", NULL, "x", 2, NULL), 0);
  uvp_nats_serve_stats_t st;
  uint64_t t0 = uv_hrtime();
  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_serve_stats(T.svc.svc, &st);
  } while (st.no_reply == 0 && uv_hrtime() - t0 < 10000000000ull);
  assert_int_equal(st.no_reply, 1);
  assert_int_equal(st.bad, 6);
  assert_int_equal(st.failed, 1);
  assert_int_equal(st.received, 14);
  assert_int_equal(st.served, 8);
  assert_int_equal(uvp_nats_unsubscribe(raw), 0);
}

/* opts.limit 1, requests of 300 ms with a 400 ms timeout: the second waits
 * and is served too late for its caller, the third's deadline passes while
 * it waits: dropped unserved, counted.  Then a start callback. */
static void test_serve_limit_and_start(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber, .limit = 1};
  svc_case_start(f, &T.svc, T.s, &o);
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *ps[3];
  for (int i = 0; i < 3; i++) {
    uvp_nats_request_opts_t ro = {.timeout_ms = 400};
    assert_int_equal(
        uvp_nats_request(nc, "svc.a", "sleep:300", 10, &ro, &ps[i]), 0);
  }
  run_until_all_settled(f, ps, 3);
  assert_int_equal(uvp_promise_state(ps[0]), UVP_FULFILLED);
  assert_int_equal(reason(ps[1]), UV_ETIMEDOUT);
  assert_int_equal(reason(ps[2]), UV_ETIMEDOUT);
  for (int i = 0; i < 3; i++)
    uvp_promise_release(ps[i]);
  uvp_nats_serve_stats_t st;
  uint64_t t0 = uv_hrtime();
  do {
    uv_run(&f->loop, UV_RUN_ONCE);
    uvp_nats_serve_stats(T.svc.svc, &st);
  } while (st.expired + st.replied < 3 && uv_hrtime() - t0 < 10000000000ull);
  print_message("served %" PRIu64 ", replied %" PRIu64 ", expired %" PRIu64
                "\n",
                st.served, st.replied, st.expired);
  assert_true(st.expired >= 1);
  assert_int_equal(st.served + st.expired, 3);
  svc_case_stop(f, &T.svc);

  /* a start callback's promise: its value is the reply */
  uvp_nats_serve_opts_t o2 = {.start = svc_start_cb};
  svc_case_start(f, &T.svc, T.s, &o2);
  uvp_promise_t *p;
  assert_int_equal(uvp_nats_request(nc, "svc.b", "x", 2, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_memory_equal(body(p), "started", 7);
  uvp_promise_release(p);
}

/* ---- cancels and backpressure (uvp_nats_serve) -------------------------- */

static void tick(uv_timer_t *t) { (void)t; }

/* Run the loop for ms of real time. */
static void run_ms(fixture_t *f, uint64_t ms) { loop_run_for(&f->loop, ms); }

/* Run the loop until *n >= want (10 s at most). */
static void run_until_count(fixture_t *f, const int *n, int want) {
  uint64_t t0 = uv_hrtime();
  uv_timer_t t; /* a turn every 5 ms, whatever else the loop waits for */
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  uv_timer_start(&t, tick, 5, 5);
  while (*n < want && uv_hrtime() - t0 < 10000000000ull)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(*n, want);
}

/* How long a cancel may take to cut the fiber serving its request: a
 * publish, the server, the worker's read (one process here). */
static double cut_bound_ms(void) {
#if defined(T_ASAN)
  return 150;
#else
  return RUNNING_ON_VALGRIND ? 250 : 50;
#endif
}

/* The fiber of c's last "wait:" job was cut, as its cut number `n`, with
 * UV_ECANCELED and a cause that starts "cancelled by the caller" and
 * holds `why`, at most cut_bound_ms() after t0.  How long it took. */
static double expect_cut(fixture_t *f, svc_case_t *c, int n, uint64_t t0,
                         const char *why) {
  run_until_count(f, &c->cuts, n);
  double ms = (double)(c->cut_ns - t0) / 1e6;
  print_message("cut %.2f ms after the caller's: %s\n", ms, c->cut_why);
  assert_int_equal(c->cut_rc, UV_ECANCELED);
  assert_memory_equal(c->cut_why, "cancelled by the caller: ", 25);
  assert_non_null(strstr(c->cut_why, why));
  assert_true(ms >= 0 && ms < cut_bound_ms());
  return ms;
}

/* A request cut on the caller's side cuts the fiber serving it on the
 * worker's (where main ran the job to its end): uvp_promise_cancel 300 ms
 * in, a race's loser, a group's cancel, uvp_ctx_close of the caller's
 * context; each cause travels in Uvp-Cause, and none is replied to.  A
 * request cancelled while it waits under the limit never starts. */
static void test_serve_cancel(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber, .limit = 1};
  svc_case_start(f, &T.svc, T.s, &o);
  svc_case_t *c = &T.svc;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p, *q, *r;

  /* uvp_promise_cancel at 300 ms of a 2 s job */
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:2000", 10, NULL, &p), 0);
  run_ms(f, 300);
  assert_int_equal(c->started, 1);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_promise_cancel(p), 0);
  double first = expect_cut(f, c, 1, t0, "cancelled by the program");
  assert_int_equal(reason(p), UV_ECANCELED);
  uvp_promise_release(p);

  /* a race's loser */
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:2000", 10, NULL, &p), 0);
  run_until_count(f, &c->started, 2);
  assert_int_equal(uvp_delay(f->ctx, 100, NULL, NULL, 0, &q), 0);
  uvp_promise_t *in[2] = {p, q};
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  run_until_settled(f, r);
  t0 = uv_hrtime(); /* the race decided a moment before: an upper bound */
  expect_cut(f, c, 2, t0 - 5000000, "lost a race");
  uvp_promise_release(p);
  uvp_promise_release(q);
  uvp_promise_release(r);

  /* a group's cancel */
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:2000", 10, NULL, &p), 0);
  assert_int_equal(uvp_group_add(g, p), 0);
  run_until_count(f, &c->started, 3);
  t0 = uv_hrtime();
  assert_int_equal(uvp_group_cancel(g), 0);
  expect_cut(f, c, 3, t0, "group made at");
  uvp_promise_release(p);
  uvp_group_release(g);

  /* uvp_ctx_close of the caller's context (its connection stays open) */
  uvp_ctx_t *cctx;
  assert_int_equal(uvp_ctx_new(&f->loop, &cctx), 0);
  uvp_nats_t *cnc = connect_opts(f, cctx, T.s->url, NULL, 0);
  assert_int_equal(uvp_nats_request(cnc, "svc.a", "wait:2000", 10, NULL, &p),
                   0);
  uvp_promise_mark_handled(p);
  uvp_promise_release(p);
  run_until_count(f, &c->started, 4);
  t0 = uv_hrtime();
  assert_int_equal(uvp_ctx_close(cctx), 0);
  expect_cut(f, c, 4, t0, "context closed");
  assert_int_equal(uvp_nats_close(cnc), 0); /* its memory goes at teardown */

  /* none of them was replied to: nothing late at the caller */
  run_ms(f, 100);
  uvp_nats_stats_t ns;
  uvp_nats_stats(nc, &ns);
  assert_int_equal(ns.late, 0);

  /* cancelled while it waits under the limit: it never starts */
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:300", 9, NULL, &p), 0);
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:300", 9, NULL, &q), 0);
  run_until_count(f, &c->started, 5);
  run_ms(f, 50); /* q has reached the worker, and waits */
  assert_int_equal(uvp_promise_cancel(q), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  run_ms(f, 100);
  assert_int_equal(c->started, 5);
  uvp_promise_release(p);
  uvp_promise_release(q);

  uvp_nats_serve_stats_ex_t st;
  assert_int_equal(uvp_nats_serve_stats_ex(c->svc, &st), 0);
  print_message("cancels %" PRIu64 ", cancelled %" PRIu64 ", replied %" PRIu64
                "; first cut %.2f ms\n",
                st.cancels, st.cancelled, st.base.replied, first);
  assert_int_equal(st.cancels, 5);
  assert_int_equal(st.cancelled, 5);
  assert_int_equal(st.base.replied, 1);
  assert_int_equal(st.waiting + st.running, 0);
}

/* The reply subject's token: ".<UVP_NATS_CANCEL_TOKEN_LEN lowercase hex
 * digits>" at its end, or NULL. */
static const char *reply_token(const char *reply) {
  size_t n = strlen(reply), k = UVP_NATS_CANCEL_TOKEN_LEN;
  if (n <= k + 1 || reply[n - k - 1] != '.')
    return NULL;
  for (size_t i = n - k; i < n; i++)
    if (strchr("0123456789abcdef", reply[i]) == NULL || reply[i] == '\0')
      return NULL;
  return reply + n - k;
}

/* Publish a cancel of svc.a from `from`: `named` as its body, `token` in
 * UVP_NATS_CANCEL_TOKEN_HEADER (NULL: none). */
static void cancel_from(natsConnection *from, const char *named,
                        const char *token) {
  natsMsg *m = NULL;
  assert_int_equal(natsMsg_Create(&m, UVP_NATS_CANCEL_PREFIX "svc.a", NULL,
                                  named, (int)strlen(named)),
                   NATS_OK);
  if (token != NULL)
    assert_int_equal(natsMsgHeader_Set(m, UVP_NATS_CANCEL_TOKEN_HEADER, token),
                     NATS_OK);
  assert_int_equal(natsMsgHeader_Set(m, UVP_NATS_CAUSE_HEADER, "by hand"),
                   NATS_OK);
  assert_int_equal(natsConnection_PublishMsg(from, m), NATS_OK);
  natsMsg_Destroy(m);
  assert_int_equal(natsConnection_Flush(from), NATS_OK);
}

/* Run until the service has counted `forged` forged cancels (at most 5 s):
 * its stats then. */
static uvp_nats_serve_stats_ex_t forged_seen(fixture_t *f, svc_case_t *c,
                                             uint64_t forged) {
  uvp_nats_serve_stats_ex_t st;
  uint64_t t0 = uv_hrtime();
  do {
    assert_int_equal(uvp_nats_serve_stats_ex(c->svc, &st), 0);
    if (st.forged < forged)
      run_ms(f, 10);
  } while (st.forged < forged && uv_hrtime() - t0 < 5000000000ull);
  return st;
}

/* A stranger who learns a request's reply subject without its token
 * (what a user who may publish on _UVP.CANCEL.> but not read svc.a learns
 * from anything that names the request; the ids count up, too) cannot
 * cancel it: cancels naming it without a token, with another one in
 * UVP_NATS_CANCEL_TOKEN_HEADER, or with another at the reply subject's end
 * (the form of the unreleased versions after 0.3.0), are dropped and
 * counted (forged), and the request is served.  Before issue 71 the first
 * of them cut it. */
static void test_serve_cancel_forged(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber};
  svc_case_start(f, &T.svc, T.s, &o);
  svc_case_t *c = &T.svc;
  natsConnection *evil = NULL;
  natsSubscription *spy = NULL;
  assert_int_equal(natsConnection_ConnectTo(&evil, T.s->url), NATS_OK);
  assert_int_equal(natsConnection_SubscribeSync(&spy, evil, "svc.a"), NATS_OK);
  assert_int_equal(natsConnection_Flush(evil), NATS_OK);

  uvp_promise_t *p;
  uvp_nats_request_opts_t ro = {.timeout_ms = 3000};
  assert_int_equal(uvp_nats_request(T.nc, "svc.a", "wait:600", 9, &ro, &p), 0);
  natsMsg *seen = NULL; /* the loop sends the request: run it meanwhile */
  for (int i = 0; i < 1000 && seen == NULL; i++)
    if (natsSubscription_NextMsg(&seen, spy, 1) != NATS_OK)
      run_ms(f, 5);
  assert_non_null(seen);
  /* the token is in a header (the caller's, which the stranger lacks), the
   * reply subject plain */
  const char *token = uvp_nats_msg_header(seen, UVP_NATS_CANCEL_TOKEN_HEADER);
  assert_non_null(token);
  assert_int_equal(strlen(token), UVP_NATS_CANCEL_TOKEN_LEN);
  char named[256];
  snprintf(named, sizeof(named), "%s", natsMsg_GetReply(seen));
  assert_null(reply_token(named));
  static const char other[] = "00000000000000000000000000000000";
  char wrong[sizeof(named) + 1 + UVP_NATS_CANCEL_TOKEN_LEN];
  snprintf(wrong, sizeof(wrong), "%s.%s", named, other);
  cancel_from(evil, named, NULL);
  cancel_from(evil, named, other);
  cancel_from(evil, wrong, NULL);
  natsMsg_Destroy(seen);

  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
  /* the cancels were read before the reply */
  uvp_nats_serve_stats_ex_t st = forged_seen(f, c, 3);
  print_message("cancels %" PRIu64 ", forged %" PRIu64 ", cancelled %" PRIu64
                "\n",
                st.cancels, st.forged, st.cancelled);
  assert_int_equal(st.forged, 3);
  assert_int_equal(st.cancelled, 0);
  assert_int_equal(c->cuts, 0);
  natsSubscription_Destroy(spy);
  natsConnection_Destroy(evil);
}

/* A request from another client with its token where uvp puts it: in
 * UVP_NATS_CANCEL_TOKEN_HEADER (0.3.0's form, and this version's), or at
 * its reply subject's end (the unreleased versions after 0.3.0), sent by
 * hand.  Two
 * cancels with another token, or with the right one in the other form's
 * place, are forged; the caller's cuts the request. */
static void serve_cancel_form(fixture_t *f, bool in_subject) {
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber};
  svc_case_start(f, &T.svc, T.s, &o);
  svc_case_t *c = &T.svc;
  natsConnection *old = NULL;
  assert_int_equal(natsConnection_ConnectTo(&old, T.s->url), NATS_OK);
  static const char token[] = "0123456789abcdef0123456789abcdef";
  static const char other[] = "fedcba9876543210fedcba9876543210";
  static const char plain[] = "_INBOX.old030.7";
  char whole[64], other_whole[64];
  snprintf(whole, sizeof(whole), "%s.%s", plain, token);
  snprintf(other_whole, sizeof(other_whole), "%s.%s", plain, other);
  natsMsg *m = NULL;
  assert_int_equal(
      natsMsg_Create(&m, "svc.a", in_subject ? whole : plain, "wait:2000", 9),
      NATS_OK);
  assert_int_equal(natsMsgHeader_Set(m, UVP_NATS_TIMEOUT_HEADER, "3000"),
                   NATS_OK);
  if (!in_subject)
    assert_int_equal(natsMsgHeader_Set(m, UVP_NATS_CANCEL_TOKEN_HEADER, token),
                     NATS_OK);
  assert_int_equal(natsConnection_PublishMsg(old, m), NATS_OK);
  natsMsg_Destroy(m);
  assert_int_equal(natsConnection_Flush(old), NATS_OK);
  run_until_count(f, &c->started, 1);

  if (in_subject) {
    cancel_from(old, other_whole, NULL);
    cancel_from(old, plain, token);
  } else {
    cancel_from(old, plain, other);
    cancel_from(old, whole, NULL);
  }
  uvp_nats_serve_stats_ex_t st = forged_seen(f, c, 2);
  assert_int_equal(st.forged, 2);
  assert_int_equal(c->cuts, 0);
  uint64_t t0 = uv_hrtime();
  if (in_subject)
    cancel_from(old, whole, NULL);
  else
    cancel_from(old, plain, token);
  run_until_count(f, &c->cuts, 1);
  print_message("cut %.2f ms after the cancel: %s\n",
                (double)(c->cut_ns - t0) / 1e6, c->cut_why);
  assert_int_equal(c->cut_rc, UV_ECANCELED);
  assert_non_null(strstr(c->cut_why, "cancelled by the caller: by hand"));
  assert_int_equal(uvp_nats_serve_stats_ex(c->svc, &st), 0);
  assert_int_equal(st.forged, 2);
  assert_int_equal(st.cancelled, 1);
  natsConnection_Destroy(old);
}

static void test_serve_cancel_header_token(void **state) {
  serve_cancel_form(*state, false);
}

static void test_serve_cancel_subject_token(void **state) {
  serve_cancel_form(*state, true);
}

/* The caller's scope deadline passing first (a virtual clock on the
 * caller's side, the worker's real: the worker's own deadline is still
 * far) cuts the worker's fiber with the deadline as the cause.  With
 * UVP_NATS_REQUEST_NO_CANCEL nothing is told. */
static void test_serve_cancel_deadline(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber};
  svc_case_start(f, &T.svc, T.s, &o);
  svc_case_t *c = &T.svc;
  uvp_nats_t *nc = T.nc;
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_deadline_set(f->ctx, 3000), 0);
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:2000", 10, NULL, &p), 0);
  assert_int_equal(uvp_deadline_shield(f->ctx, UVP_NO_DEADLINE), 0);
  run_until_count(f, &c->started, 1);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_clock_advance(f->ctx, 3000), 0);
  expect_cut(f, c, 1, t0, "deadline 3000 ms set at");
  assert_int_equal(reason(p), UV_ETIMEDOUT);
  uvp_promise_release(p);

  uvp_nats_request_opts_t ro = {.flags = UVP_NATS_REQUEST_NO_CANCEL};
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:200", 9, &ro, &p), 0);
  run_until_count(f, &c->started, 2);
  assert_int_equal(uvp_promise_cancel(p), 0);
  uvp_promise_release(p);
  run_ms(f, 400);
  assert_int_equal(c->cuts, 1); /* it ran to its end */
  uvp_nats_stats_t ns;
  uvp_nats_stats(nc, &ns);
  assert_int_equal(ns.late, 1); /* and replied */
}

/* limit 1 and the default bound (2 x limit waiting): of 10 requests of
 * 1 s at once 3 are held and served, 7 answered EBUSY at once (before the
 * first job is done); with a bound of 0 only the one running is held. */
static void test_serve_busy(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber, .limit = 1};
  svc_case_start(f, &T.svc, T.s, &o);
  uvp_nats_t *nc = T.nc;
  enum { N = 10 };
  uvp_promise_t *ps[N];
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < N; i++) {
    uvp_nats_request_opts_t ro = {.timeout_ms = 5000};
    assert_int_equal(
        uvp_nats_request(nc, "svc.a", "wait:1000", 10, &ro, &ps[i]), 0);
  }
  /* the refused are answered before any of the held is done */
  uv_timer_t t;
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  uv_timer_start(&t, tick, 1, 1);
  int busy = 0, ok = 0;
  double busy_ms = 0;
  while (busy < 7 && uv_hrtime() - t0 < 10000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    busy = 0;
    for (int i = 0; i < N; i++)
      busy += uvp_promise_state(ps[i]) == UVP_REJECTED;
  }
  busy_ms = (double)(uv_hrtime() - t0) / 1e6;
  uv_close((uv_handle_t *)&t, NULL);
  for (int i = 0; i < N; i++) /* before any of the held is done */
    assert_int_not_equal(uvp_promise_state(ps[i]), UVP_FULFILLED);
  busy = 0;
  for (int i = 0; i < N; i++) {
    run_until_settled(f, ps[i]);
    void *payload = NULL;
    int rc = uvp_promise_reason(ps[i], &payload);
    if (rc == UV_EBUSY) {
      natsMsg *m = payload;
      assert_string_equal(uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER),
                          "EBUSY");
      assert_non_null(uvp_nats_msg_header(m, UVP_NATS_WORKER_HEADER));
      busy++;
    } else {
      assert_int_equal(uvp_promise_state(ps[i]), UVP_FULFILLED);
      ok++;
    }
  }
  print_message("%d served, %d EBUSY (all %.1f ms after the burst)\n", ok, busy,
                busy_ms);
  assert_int_equal(ok, 3);
  assert_int_equal(busy, 7);
  assert_true(busy_ms < 1000);
  for (int i = 0; i < N; i++)
    uvp_promise_release(ps[i]);
  uvp_nats_serve_stats_ex_t st;
  assert_int_equal(uvp_nats_serve_stats_ex(T.svc.svc, &st), 0);
  assert_int_equal(st.busy, 7);
  assert_int_equal(st.max_waiting, 2);

  assert_int_equal(uvp_nats_serve_set_max_waiting(T.svc.svc, 0), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:200", 9, NULL, &ps[i]),
                     0);
  run_until_all_settled(f, ps, 3);
  assert_int_equal(uvp_promise_state(ps[0]), UVP_FULFILLED);
  assert_int_equal(reason(ps[1]), UV_EBUSY);
  assert_int_equal(reason(ps[2]), UV_EBUSY);
  for (int i = 0; i < 3; i++)
    uvp_promise_release(ps[i]);
  assert_int_equal(uvp_nats_serve_set_max_waiting(NULL, 0), UV_EINVAL);
}

/* A drain within 300 ms of a service holding one 5 s job and two waiting:
 * at 300 ms the two are answered ECANCELED, the job's fiber is cut with
 * the cause "worker draining" and its caller answered ECANCELED, and the
 * drain fulfils.  A drain without a deadline, shortened to 0 by a second
 * call, ends at once. */
static void test_serve_drain_deadline(void **state) {
  fixture_t *f = *state;
  uvp_nats_serve_opts_t o = {.fiber = svc_fiber, .limit = 1};
  svc_case_start(f, &T.svc, T.s, &o);
  svc_case_t *c = &T.svc;
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *ps[3], *d, *d2;
  for (int i = 0; i < 3; i++)
    assert_int_equal(
        uvp_nats_request(nc, "svc.a", "wait:5000", 10, NULL, &ps[i]), 0);
  run_until_count(f, &c->started, 1);
  run_ms(f, 50); /* the other two have reached it */
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_nats_serve_drain_within(c->svc, 300, &d), 0);
  assert_int_equal(uvp_nats_serve_drain(c->svc, &d2), UV_EALREADY);
  run_until_settled(f, d);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  uvp_promise_release(d);
  print_message("drain within 300 ms ended in %.1f ms: %s\n", ms, c->cut_why);
  assert_true(ms >= 290 && ms < 1000);
  assert_int_equal(c->cuts, 1);
  assert_int_equal(c->cut_rc, UV_ECANCELED);
  assert_string_equal(c->cut_why, "worker draining");
  run_until_all_settled(f, ps, 3);
  for (int i = 0; i < 3; i++) {
    void *payload = NULL;
    assert_int_equal(uvp_promise_reason(ps[i], &payload), UV_ECANCELED);
    assert_non_null(payload); /* answered, not cut on the caller's side */
    assert_memory_equal(natsMsg_GetData(payload), "worker draining", 15);
    uvp_promise_release(ps[i]);
  }
  assert_int_equal(c->started, 1);
  svc_case_stop(f, c);

  /* no deadline, then a second call with 0: at once */
  svc_case_start(f, c, T.s, &o);
  assert_int_equal(uvp_nats_request(nc, "svc.a", "wait:5000", 10, NULL, &ps[0]),
                   0);
  run_until_count(f, &c->started, 2);
  assert_int_equal(uvp_nats_serve_drain_within(c->svc, UVP_NO_DEADLINE, &d), 0);
  run_ms(f, 100);
  assert_int_equal(uvp_promise_state(d), UVP_PENDING);
  t0 = uv_hrtime();
  assert_int_equal(uvp_nats_serve_drain_within(c->svc, 0, &d2), 0);
  assert_ptr_equal(d, d2);
  run_until_settled(f, d);
  ms = (double)(uv_hrtime() - t0) / 1e6;
  print_message("drained at once: %.1f ms\n", ms);
  assert_true(ms < 100);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  run_until_settled(f, ps[0]);
  assert_int_equal(reason(ps[0]), UV_ECANCELED);
  uvp_promise_release(ps[0]);
  uvp_promise_release(d);
  uvp_promise_release(d2);
}

/* ---- worker processes: SIGKILL and SIGTERM mid-run ----------------------- */

typedef struct proc_s {
  pid_t pid;
} proc_t;

/* Start test/nats/nats-worker and wait for its "ready" line; *out (NULL:
 * closed) keeps the read end of its stdout, non-blocking. */
static void proc_start_out(proc_t *w, const nats_server_t *s, const char *limit,
                           int *out);

static void proc_start(proc_t *w, const nats_server_t *s, const char *limit) {
  proc_start_out(w, s, limit, NULL);
}

static void proc_start_out(proc_t *w, const nats_server_t *s, const char *limit,
                           int *out) {
  const char *bin = getenv("UVP_NATS_WORKER");
  assert_non_null(bin);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(bin, bin, s->url, "svc.*", "workers", limit, (char *)NULL);
    _exit(127);
  }
  for (size_t i = 0; i < sizeof(T.procs) / sizeof(T.procs[0]); i++)
    if (T.procs[i] == 0) {
      T.procs[i] = pid;
      break;
    }
  close(fds[1]);
  char line[7] = {0}; /* "ready\n": nothing more is written before it */
  ssize_t n = read(fds[0], line, 6); /* blocks until ready */
  if (out != NULL) {
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    *out = fds[0];
  } else {
    close(fds[0]);
  }
  if (n < 5 || strncmp(line, "ready", 5) != 0)
    fail_msg("nats-worker did not start: '%s'", line);
  w->pid = pid;
}

static int proc_wait(proc_t *w) {
  int st = 0;
  assert_int_equal(waitpid(w->pid, &st, 0), w->pid);
  for (size_t i = 0; i < sizeof(T.procs) / sizeof(T.procs[0]); i++)
    if (T.procs[i] == w->pid)
      T.procs[i] = 0;
  return st;
}

typedef struct killer_s {
  uvp_ctx_t *ctx;
  proc_t *w;
  int sig;
} killer_t;

static uvp_ret_t killer_fiber(void *arg) {
  killer_t *k = arg;
  (void)fiber_sleep(k->ctx, 100);
  kill(k->w->pid, k->sig);
  return uvp_ret_value(NULL, NULL);
}

/* Two workers, 100 requests of 300 ms (a deadline of 1.5 s): one worker is
 * sent `sig` 100 ms in.  SIGKILL: its requests time out, the other's are
 * answered, each request exactly one record.  SIGTERM: it drains, every
 * request is answered, and it exits 0. */
static void workers_signal(fixture_t *f, int sig) {
  proc_t a, b;
  proc_start(&a, T.s, "0");
  proc_start(&b, T.s, "0");
  uvp_nats_t *nc = T.nc;
  enum { N = 100 };
  uvp_promise_t *ps[N], *fp, *all;
  for (int i = 0; i < N; i++) {
    uvp_nats_request_opts_t ro = {.timeout_ms = 1500};
    assert_int_equal(
        uvp_nats_request(nc, "svc.work", "sleep:300", 10, &ro, &ps[i]), 0);
  }
  assert_int_equal(uvp_promise_all_settled(f->ctx, ps, N, &all), 0);
  killer_t k = {f->ctx, &a, sig};
  assert_int_equal(uvp_fiber_spawn(f->ctx, killer_fiber, &k, NULL, &fp), 0);
  uint64_t t0 = uv_hrtime();
  run_until_settled(f, all);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  int ok = 0, timedout = 0;
  char wa[32], wb[32];
  snprintf(wa, sizeof(wa), ":%ld", (long)a.pid);
  snprintf(wb, sizeof(wb), ":%ld", (long)b.pid);
  int by_a = 0, by_b = 0;
  for (int i = 0; i < N; i++) {
    if (uvp_promise_state(ps[i]) == UVP_FULFILLED) {
      ok++;
      const char *w =
          uvp_nats_msg_header(uvp_promise_value(ps[i]), UVP_NATS_WORKER_HEADER);
      assert_non_null(w);
      by_a += strstr(w, wa) != NULL;
      by_b += strstr(w, wb) != NULL;
    } else {
      assert_int_equal(reason(ps[i]), UV_ETIMEDOUT);
      timedout++;
    }
    uvp_promise_release(ps[i]);
  }
  uvp_promise_release(all);
  run_until_settled(f, fp);
  uvp_promise_release(fp);
  print_message("%s: %d answered (%d by the signalled worker, %d by the "
                "other), %d timed out, in %.0f ms\n",
                sig == SIGKILL ? "SIGKILL" : "SIGTERM", ok, by_a, by_b,
                timedout, ms);
  assert_int_equal(ok + timedout, N);
  assert_int_equal(by_a + by_b, ok);
  int st = proc_wait(&a);
  if (sig == SIGKILL) {
    assert_true(WIFSIGNALED(st));
    assert_true(timedout > 0 && by_b > 0);
  } else {
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0); /* drained, uv_loop_close 0 */
    assert_int_equal(ok, N);
  }
  uvp_nats_stats_t ns;
  uvp_nats_stats(nc, &ns);
  assert_int_equal(ns.in_flight, 0);
  kill(b.pid, SIGTERM);
  st = proc_wait(&b);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A line of fd (non-blocking) into buf, the loop running meanwhile (5 s
 * at most); false if none came. */
static bool read_line(fixture_t *f, int fd, char *buf, size_t cap) {
  size_t n = 0;
  uint64_t t0 = uv_hrtime();
  uv_timer_t t;
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  uv_timer_start(&t, tick, 1, 1);
  bool got = false;
  while (!got && n + 1 < cap && uv_hrtime() - t0 < 5000000000ull) {
    uv_run(&f->loop, UV_RUN_ONCE);
    while (n + 1 < cap && read(fd, buf + n, 1) == 1)
      if (buf[n++] == '\n') {
        got = true;
        break;
      }
  }
  buf[n] = '\0';
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return got;
}

/* Across processes: a request cancelled 300 ms into a 2 s job cuts the
 * worker process's fiber (it prints when, on the machine's monotonic
 * clock, and why); then a worker draining a 5 s job without a deadline
 * gets a second SIGTERM, answers the job ECANCELED ("worker draining")
 * and exits 0 at once, its uv_loop_close() 0 (main's was killed by it). */
static void test_worker_cancel_and_second_sigterm(void **state) {
  fixture_t *f = *state;
  proc_t a;
  int out;
  proc_start_out(&a, T.s, "0", &out);
  uvp_nats_t *nc = T.nc;
  uvp_promise_t *p;
  uvp_nats_request_opts_t ro = {.timeout_ms = 5000};
  assert_int_equal(uvp_nats_request(nc, "svc.work", "sleep:2000", 11, &ro, &p),
                   0);
  run_ms(f, 300);
  uint64_t t0 = uv_hrtime();
  assert_int_equal(uvp_promise_cancel(p), 0);
  uvp_promise_release(p);
  char line[512];
  bool got = read_line(f, out, line, sizeof(line));
  unsigned long long ns = 0;
  int at = 0;
  if (!got || sscanf(line, "cut %llu %n", &ns, &at) != 1)
    fail_msg("the worker's fiber was not cut: '%s'", line);
  double ms = (double)(ns - t0) / 1e6;
  line[strcspn(line, "\n")] = '\0';
  print_message("cancel to the worker process's fiber cut: %.2f ms (%s)\n", ms,
                line + at);
  assert_non_null(
      strstr(line, "cancelled by the caller: cancelled by the program"));
  assert_true(ms >= 0 && ms < cut_bound_ms());

  /* the second SIGTERM */
  ro.timeout_ms = 10000;
  assert_int_equal(uvp_nats_request(nc, "svc.work", "sleep:5000", 11, &ro, &p),
                   0);
  run_ms(f, 200);
  kill(a.pid, SIGTERM);
  run_ms(f, 200);
  assert_int_equal(waitpid(a.pid, NULL, WNOHANG), 0); /* it drains */
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  uint64_t t1 = uv_hrtime();
  kill(a.pid, SIGTERM);
  run_until_settled(f, p);
  void *payload = NULL;
  assert_int_equal(uvp_promise_reason(p, &payload), UV_ECANCELED);
  assert_non_null(payload);
  assert_memory_equal(natsMsg_GetData(payload), "worker draining", 15);
  uvp_promise_release(p);
  int st = proc_wait(&a);
  double end_ms = (double)(uv_hrtime() - t1) / 1e6;
  print_message("second SIGTERM: answered and exited in %.1f ms\n", end_ms);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0); /* uv_loop_close() == 0 */
  assert_true(end_ms < 2000);
  assert_true(read_line(f, out, line, sizeof(line))); /* its cut, said */
  assert_non_null(strstr(line, "worker draining"));
  close(out);
}

static void test_worker_killed(void **state) {
  workers_signal(*state, SIGKILL);
}

static void test_worker_drained(void **state) {
  workers_signal(*state, SIGTERM);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      NATS_TEST(test_request, setup_worker),
      NATS_TEST(test_burst_keeps_connection, setup_worker),
      NATS_TEST(test_no_responders, setup_conn),
      NATS_TEST(test_timeout_and_late_reply, setup_worker),
      NATS_TEST(test_deadline, setup_worker),
      NATS_TEST(test_cancel, setup_worker),
      NATS_TEST(test_dump, setup_worker),
      NATS_TEST(test_virtual_clock, setup_worker),
      NATS_TEST(test_teardown_in_flight, setup_worker),
      NATS_TEST(test_bad_input, setup_conn),
      QUIET_TEST(test_server_without_headers),
      NATS_TEST(test_connect_cancelled, setup_server),
      NATS_TEST(test_open_before_connected, setup_worker),
      NATS_TEST(test_url_list, setup_server),
      NATS_TEST(test_open_refused, setup_server),
      NATS_TEST(test_open_closed_while_connecting, setup_server),
      NATS_TEST(test_subscribe, setup_conn),
      NATS_TEST(test_server_restarted, setup_own_server),
      NATS_TEST(test_server_frozen, setup_own_server),
      NATS_TEST(test_disconnect_and_closed, setup_own_server),
      NATS_TEST(test_slow_consumer, setup_conn),
      NATS_TEST(test_max_payload_and_reconnect_buffer, setup_small_server),
      NATS_TEST(test_options_auth, setup_auth_server),
      NATS_TEST(test_serve, setup_conn),
      NATS_TEST(test_serve_limit_and_start, setup_conn),
      NATS_TEST(test_serve_cancel_forged, setup_conn),
      NATS_TEST(test_serve_cancel_header_token, setup_conn),
      NATS_TEST(test_serve_cancel_subject_token, setup_conn),
      NATS_TEST(test_serve_cancel, setup_conn),
      NATS_TEST(test_serve_cancel_deadline, setup_conn),
      NATS_TEST(test_serve_busy, setup_conn),
      NATS_TEST(test_serve_drain_deadline, setup_conn),
      NATS_TEST(test_worker_killed, setup_conn),
      NATS_TEST(test_worker_drained, setup_conn),
      NATS_TEST(test_worker_cancel_and_second_sigterm, setup_conn),
  };
  if (getenv("UVP_TEST_FILTER") != NULL) /* one test: UVP_TEST_FILTER=name */
    cmocka_set_test_filter(getenv("UVP_TEST_FILTER"));
  return nats_suite_end(
      cmocka_run_group_tests(tests, group_setup, group_teardown));
}

/* Allocation failure everywhere: each scenario runs once per allocation it
 * makes, with the k-th allocation failing, for every k until the scenario
 * completes without meeting a failure.  Every run must end with no crash,
 * every failure surfacing as UV_ENOMEM (a returned code or a rejection),
 * nothing leaked (the counting allocator balances) and uv_loop_close()==0.
 * After each failure the scenario goes on, so the library is proven to
 * keep working. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc-helpers.h"

/* ---- scenarios ----------------------------------------------------------- */

static uvp_ret_t add_one(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  return uvp_ret_value((void *)((intptr_t)in->value + 1), NULL);
}

static uvp_ret_t adopt_new(void *arg, const uvp_outcome_t *in) {
  run_t *r = arg;
  uvp_promise_t *q;
  int rc = uvp_promise_resolved(r->ctx, in->value, NULL, &q);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  return uvp_ret_adopt(q);
}

static uvp_ret_t fin(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_value(NULL, NULL);
}

/* Many promises (several slabs), chains, adoption, finally, catch. */
static void scenario_core(run_t *r) {
  enum { N = 2100 }; /* > one 64 KiB slab of promises and of reactions */
  static uvp_promise_t *ps[N], *ds[N];
  memset(ps, 0, sizeof(ps));
  memset(ds, 0, sizeof(ds));
  for (int i = 0; i < N; i++) {
    int rc = uvp_promise_new(r->ctx, &ps[i]);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      continue;
    rc = i % 3 == 0   ? uvp_promise_then(ps[i], add_one, NULL, &ds[i])
         : i % 3 == 1 ? uvp_promise_then(ps[i], adopt_new, r, &ds[i])
                      : uvp_promise_finally(ps[i], fin, NULL, &ds[i]);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      ds[i] = NULL;
    if (i % 7 == 0)
      assert_int_equal(uvp_promise_reject(ps[i], UV_EIO, NULL, NULL), 0);
    else
      assert_int_equal(uvp_promise_resolve(ps[i], (void *)(intptr_t)i, NULL),
                       0);
  }
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    if (ds[i] != NULL) {
      assert_int_not_equal(uvp_promise_state(ds[i]), UVP_PENDING);
      expect_ok_or_enomem(ds[i], UV_EIO);
    }
    uvp_promise_release(ds[i]);
    uvp_promise_release(ps[i]);
  }
}

static void scenario_combinators(run_t *r) {
  enum { N = 2500 };
  static uvp_promise_t *in[N];
  size_t n = 0;
  for (int i = 0; i < N; i++) {
    int rc = i % 10 == 9 ? uvp_promise_rejected(r->ctx, UV_ECONNREFUSED, NULL,
                                                NULL, &in[n])
                         : uvp_promise_new(r->ctx, &in[n]);
    OK_OR_ENOMEM(rc);
    if (rc == 0)
      n++;
  }
  uvp_promise_t *res[4] = {NULL, NULL, NULL, NULL};
  OK_OR_ENOMEM(uvp_promise_all(r->ctx, in, n, 0, &res[0]));
  OK_OR_ENOMEM(uvp_promise_all_settled(r->ctx, in, n, &res[1]));
  OK_OR_ENOMEM(uvp_promise_race(r->ctx, in, n, 0, &res[2]));
  OK_OR_ENOMEM(uvp_promise_any(r->ctx, in, n, 0, &res[3]));
  for (size_t i = 0; i < n; i++)
    if (uvp_promise_state(in[i]) == UVP_PENDING)
      assert_int_equal(uvp_promise_resolve(in[i], (void *)(intptr_t)i, NULL),
                       0);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int k = 0; k < 4; k++) {
    if (res[k] != NULL && uvp_promise_state(res[k]) == UVP_PENDING)
      fail_msg("combinator %d still pending", k);
    uvp_promise_release(res[k]);
  }
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(in[i]);
}

/* The taking forms: whatever fails, the reference each call took goes (the
 * counting allocator balances), and chains of takes run to their end. */
static void scenario_take(run_t *r) {
  enum { N = 2100, M = 300 };
  static uvp_promise_t *ds[N], *in[M];
  memset(ds, 0, sizeof(ds));
  for (int i = 0; i < N; i++) {
    uvp_promise_t *p;
    int rc = i % 7 == 0 ? uvp_promise_rejected(r->ctx, UV_EIO, NULL, NULL, &p)
                        : uvp_promise_resolved(r->ctx, NULL, NULL, &p);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      continue;
    rc = i % 3 == 0   ? uvp_promise_then_take(p, add_one, NULL, &p)
         : i % 3 == 1 ? uvp_promise_catch_take(p, adopt_new, r, &p)
                      : uvp_promise_finally_take(p, fin, NULL, &p);
    OK_OR_ENOMEM(rc);
    if (rc == 0) /* a second link: the first's derived promise, taken */
      OK_OR_ENOMEM(uvp_promise_then_take(p, add_one, NULL, &ds[i]));
  }
  size_t n = 0;
  for (int i = 0; i < M; i++)
    if (uvp_promise_resolved(r->ctx, NULL, NULL, &in[n]) == 0)
      n++;
  uvp_promise_t *res[3] = {NULL, NULL, NULL};
  for (size_t i = 0; i < n; i++)
    uvp_promise_retain(in[i]); /* two references: two takes */
  OK_OR_ENOMEM(uvp_promise_all(r->ctx, in, n, UVP_TAKE_INPUTS, &res[0]));
  OK_OR_ENOMEM(
      uvp_promise_all_settled_ex(r->ctx, in, n, UVP_TAKE_INPUTS, &res[1]));
  if (n > 0) {
    uvp_promise_t *p;
    if (uvp_promise_resolved(r->ctx, NULL, NULL, &p) == 0)
      OK_OR_ENOMEM(uvp_timeout(p, 1, UVP_TAKE_INPUTS, &res[2]));
  }
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    if (ds[i] != NULL) {
      assert_int_not_equal(uvp_promise_state(ds[i]), UVP_PENDING);
      expect_ok_or_enomem(ds[i], UV_EIO);
    }
    uvp_promise_release(ds[i]);
  }
  for (int k = 0; k < 3; k++) {
    if (res[k] != NULL)
      assert_int_not_equal(uvp_promise_state(res[k]), UVP_PENDING);
    uvp_promise_release(res[k]);
  }
}

static int start_item(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  if (i % 5 == 4)
    return UV_ENOENT;
  return uvp_delay(r->ctx, 0, (void *)(intptr_t)i, NULL, UVP_KEEP_ALIVE, out);
}

static int attempt(void *arg, unsigned a, uvp_promise_t **out) {
  run_t *r = arg;
  if (a == 0)
    return uvp_promise_rejected(r->ctx, UV_ECONNREFUSED, NULL, NULL, out);
  return uvp_promise_resolved(r->ctx, NULL, NULL, out);
}

static int step(void *arg, size_t i, const uvp_outcome_t *prev,
                uvp_promise_t **next) {
  run_t *r = arg;
  (void)prev;
  if (i == 50)
    return 0;
  return uvp_promise_resolved(r->ctx, NULL, NULL, next);
}

static void scenario_time_map_flow(run_t *r) {
  uvp_promise_t *m = NULL, *t = NULL, *never = NULL, *re = NULL, *lo = NULL;
  uvp_map_opts_t o = {.limit = 3, .flags = 0, .on_settle = NULL};
  OK_OR_ENOMEM(uvp_promise_map(r->ctx, 40, start_item, r, &o, &m));
  if (uvp_promise_new(r->ctx, &never) == 0)
    OK_OR_ENOMEM(uvp_timeout(never, 1, UVP_KEEP_ALIVE, &t));
  uvp_retry_opts_t ro = {.attempts = 3,
                         .base_ms = 1,
                         .max_ms = 2,
                         .factor = 2.0,
                         .jitter = 0.0,
                         .retry_on = NULL,
                         .retry_on_count = 0,
                         .should_retry = NULL};
  OK_OR_ENOMEM(uvp_retry(r->ctx, attempt, r, &ro, &re));
  OK_OR_ENOMEM(uvp_promise_loop(r->ctx, step, r, &lo));
  uv_run(&r->loop, UV_RUN_DEFAULT);
  uvp_promise_t *all[] = {m, t, re, lo};
  for (int i = 0; i < 4; i++) {
    if (all[i] != NULL)
      assert_int_not_equal(uvp_promise_state(all[i]), UVP_PENDING);
    expect_ok_or_enomem(all[i], UV_ETIMEDOUT);
    uvp_promise_release(all[i]);
  }
  uvp_promise_release(never);
}

/* The same on the virtual clock, moving by itself: its state is one more
 * allocation that can fail (UV_ENOMEM; the context stays on the real
 * clock). */
static void scenario_time_virtual(run_t *r) {
  OK_OR_ENOMEM(uvp_ctx_set_clock(r->ctx, UVP_CLOCK_AUTO));
  scenario_time_map_flow(r);
}

static char tmpdir[64];

static void scenario_fs(run_t *r) {
  char path[128], missing[128];
  snprintf(path, sizeof(path), "%s/data.txt", tmpdir);
  snprintf(missing, sizeof(missing), "%s/missing", tmpdir);
  uvp_promise_t *p[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
  OK_OR_ENOMEM(uvp_fs_read_file(r->ctx, path, 0, &p[0]));
  OK_OR_ENOMEM(uvp_fs_stat(r->ctx, path, &p[1]));
  OK_OR_ENOMEM(uvp_fs_scandir(r->ctx, tmpdir, &p[2]));
  OK_OR_ENOMEM(uvp_fs_realpath(r->ctx, tmpdir, &p[3]));
  OK_OR_ENOMEM(uvp_fs_read_file(r->ctx, missing, 0, &p[4]));
  OK_OR_ENOMEM(uvp_fs_write_file(r->ctx, path, "0123456789", 10, &p[5]));
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 6; i++) {
    expect_ok_or_enomem(p[i], i == 4 ? UV_ENOENT : 0);
    uvp_promise_release(p[i]);
  }
}

/* A loopback echo: the server side uses uvp too. */
typedef struct {
  run_t *r;
  uv_tcp_t listener;
  int port;
} srv_t;

static uvp_ret_t srv_close(void *arg, const uvp_outcome_t *in) {
  (void)in;
  uvp_tcp_close(arg);
  return uvp_ret_value(NULL, NULL);
}

static void raw_closed(uv_handle_t *h) { free(h); }

static void on_conn(uv_stream_t *l, int status) {
  srv_t *s = l->data;
  uvp_tcp_t *c;
  if (status != 0)
    return;
  if (uvp_tcp_accept(s->r->ctx, l, &c) != 0) {
    /* uvp could not take it (injected ENOMEM): accept and close it by
     * hand so the client sees end of stream instead of waiting. */
    uv_tcp_t *raw = malloc(sizeof(*raw));
    assert_non_null(raw);
    uv_tcp_init(l->loop, raw);
    if (uv_accept(l, (uv_stream_t *)raw) != 0) {
      uv_close((uv_handle_t *)raw, raw_closed);
      return;
    }
    uv_close((uv_handle_t *)raw, raw_closed);
    return;
  }
  uvp_promise_t *w, *d;
  if (uvp_tcp_write(c, "pong", 4, &w) != 0) {
    uvp_tcp_close(c);
    return;
  }
  if (uvp_promise_finally(w, srv_close, c, &d) != 0)
    uvp_tcp_close(c);
  else
    uvp_promise_release(d);
  uvp_promise_release(w);
}

static uvp_ret_t then_read(void *arg, const uvp_outcome_t *in) {
  uvp_tcp_t *t = arg;
  uvp_promise_t *rd;
  (void)in;
  int rc = uvp_tcp_read_all(t, 0, &rd);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  return uvp_ret_adopt(rd);
}

static void guard_tick(uv_timer_t *t) { (void)t; }

static void scenario_tcp(run_t *r) {
  srv_t s = {r, {0}, 0};
  struct sockaddr_storage ss;
  listen_loopback(&r->loop, &s.listener, 16, on_conn, &s, &ss);
  int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);

  uvp_tcp_t *t[2] = {NULL, NULL};
  uvp_promise_t *body[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++) {
    int rc = uvp_tcp_new(r->ctx, &t[i]);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      continue;
    uvp_promise_t *c;
    rc = i == 0 ? uvp_tcp_connect(t[i], (struct sockaddr *)&a, &c)
                : uvp_tcp_connect_host(t[i], "127.0.0.1", port, &c);
    OK_OR_ENOMEM(rc);
    if (rc != 0)
      continue;
    OK_OR_ENOMEM(uvp_promise_then(c, then_read, t[i], &body[i]));
    uvp_promise_release(c);
  }
  uv_timer_t guard; /* so UV_RUN_ONCE never blocks on a stuck scenario */
  uv_timer_init(&r->loop, &guard);
  uv_timer_start(&guard, guard_tick, 5, 5);
  for (int i = 0; i < 2000; i++) {
    bool done = true;
    for (int j = 0; j < 2; j++)
      if (body[j] != NULL && uvp_promise_state(body[j]) == UVP_PENDING)
        done = false;
    if (done)
      break;
    uv_run(&r->loop, UV_RUN_ONCE);
  }
  for (int i = 0; i < 2; i++) {
    if (body[i] != NULL) {
      assert_int_not_equal(uvp_promise_state(body[i]), UVP_PENDING);
      expect_ok_or_enomem(body[i], 0);
      if (uvp_promise_state(body[i]) == UVP_FULFILLED) {
        /* Empty when the server side met the failure before writing. */
        uvp_buf_t *b = uvp_promise_value(body[i]);
        assert_true(b->len == 0 || b->len == 4);
        if (b->len == 4)
          assert_memory_equal(b->base, "pong", 4);
      }
    }
    uvp_promise_release(body[i]);
    if (t[i] != NULL)
      uvp_tcp_close(t[i]);
  }
  uv_close((uv_handle_t *)&guard, NULL);
  uv_close((uv_handle_t *)&s.listener, NULL);
  uv_run(&r->loop, UV_RUN_NOWAIT);
}

/* The other wrappers: a lookup, a thread-pool job, a child process. */
static int make_result(void *arg, void **result) {
  (void)arg;
  *result = malloc(16); /* the caller's memory: not the counted allocator's */
  return *result != NULL ? 0 : UV_ENOMEM;
}

static void scenario_dns_work_process(run_t *r) {
  uvp_promise_t *p[3] = {NULL, NULL, NULL};
  OK_OR_ENOMEM(uvp_getaddrinfo(r->ctx, "127.0.0.1", "80", NULL, &p[0]));
  OK_OR_ENOMEM(uvp_work(r->ctx, make_result, NULL, free, &p[1]));
  char *args[] = {"sh", "-c", "cat; echo err >&2", NULL};
  uvp_spawn_opts_t o = {.file = "/bin/sh",
                        .args = args,
                        .stdin_data = "to stdout",
                        .stdin_len = 9};
  OK_OR_ENOMEM(uvp_spawn(r->ctx, &o, &p[2]));
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 3; i++) {
    expect_ok_or_enomem(p[i], 0);
    if (i == 2 && p[i] != NULL && uvp_promise_state(p[i]) == UVP_FULFILLED) {
      const uvp_process_result_t *res = uvp_promise_value(p[i]);
      assert_int_equal(res->exit_status, 0);
      assert_string_equal(res->out.base, "to stdout");
      assert_string_equal(res->err.base, "err\n");
    }
    uvp_promise_release(p[i]);
  }
}

/* A binding's promise: its hook records that the deadline stopped it. */
static void binding_stopped(uvp_promise_t *p, void *arg) {
  (void)p;
  *(int *)arg = 1;
}

/* Deadlines: the scope's, a group's, a binding's promise watched.  Work
 * whose watch met no memory runs to its end (the delays: fulfilled), a
 * binding hears UV_ENOMEM (and settles its promise itself). */
static void scenario_deadlines(run_t *r) {
  enum { N = 12 };
  uvp_promise_t *d[N] = {NULL}, *b = NULL, *join = NULL;
  static int stopped;
  stopped = 0;
  int set = uvp_deadline_set(r->ctx, 5);
  OK_OR_ENOMEM(set);
  for (int i = 0; i < N; i++)
    OK_OR_ENOMEM(uvp_delay(r->ctx, 30, NULL, NULL, 0, &d[i]));
  int watched = UV_ENOMEM;
  if (uvp_promise_new(r->ctx, &b) == 0 &&
      uvp_promise_set_cancel_full(b, binding_stopped, &stopped, NULL) == 0) {
    watched = uvp_deadline_watch(r->ctx, b);
    OK_OR_ENOMEM(watched);
    if (watched != 0 || set != 0)
      assert_int_equal(uvp_promise_resolve(b, NULL, NULL), 0);
  }
  uvp_scope_clear(r->ctx);
  uvp_group_opts_t go = {0, 0, 5};
  uvp_group_t *g = NULL;
  OK_OR_ENOMEM(uvp_group_new(r->ctx, &go, &g));
  if (g != NULL) {
    uvp_promise_t *m;
    if (uvp_promise_new(r->ctx, &m) == 0) {
      OK_OR_ENOMEM(uvp_group_add(g, m));
      uvp_promise_release(m);
    }
    OK_OR_ENOMEM(uvp_group_close(g));
    OK_OR_ENOMEM(uvp_group_join(g, &join));
  }
  uv_run(&r->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < N; i++) {
    if (d[i] != NULL)
      assert_int_not_equal(uvp_promise_state(d[i]), UVP_PENDING);
    expect_ok_or_enomem(d[i], UV_ETIMEDOUT);
    uvp_promise_release(d[i]);
  }
  if (b != NULL) {
    assert_int_not_equal(uvp_promise_state(b), UVP_PENDING);
    if (set == 0 && watched == 0)
      assert_true(stopped && uvp_promise_reason(b, NULL) == UV_ETIMEDOUT);
    uvp_promise_release(b);
  }
  if (join != NULL) {
    /* The member nobody settles: only the deadline ends the group (or
     * its watch met no memory, and teardown does). */
    expect_ok_or_enomem(join, UV_ETIMEDOUT);
    uvp_promise_release(join);
  }
  if (g != NULL)
    uvp_group_release(g);
}

static void test_deadlines(void **state) {
  (void)state;
  long sites = exhaust(scenario_deadlines);
  printf("deadlines: %ld allocations failed one by one\n", sites);
  assert_true(sites > 5);
}

static void test_core(void **state) {
  (void)state;
  long sites = exhaust(scenario_core);
  printf("core: %ld allocations failed one by one\n", sites);
  assert_true(sites > 2);
}

static void test_combinators(void **state) {
  (void)state;
  long sites = exhaust(scenario_combinators);
  printf("combinators: %ld allocations failed one by one\n", sites);
  assert_true(sites > 4);
}

static void test_take(void **state) {
  (void)state;
  long sites = exhaust(scenario_take);
  printf("take: %ld allocations failed one by one\n", sites);
  assert_true(sites > 4);
}

static void test_time_map_flow(void **state) {
  (void)state;
  long sites = exhaust(scenario_time_map_flow);
  printf("time/map/flow: %ld allocations failed one by one\n", sites);
  assert_true(sites > 10);
}

static void test_time_virtual(void **state) {
  (void)state;
  long sites = exhaust(scenario_time_virtual);
  printf("time/map/flow, virtual clock: %ld allocations failed one by one\n",
         sites);
  assert_true(sites > 10);
}

static void test_fs(void **state) {
  (void)state;
  strcpy(tmpdir, "/tmp/uvp-allocfail-XXXXXX");
  assert_non_null(mkdtemp(tmpdir));
  char path[128];
  snprintf(path, sizeof(path), "%s/data.txt", tmpdir);
  int fd = open(path, O_CREAT | O_WRONLY, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "0123456789", 10), 10);
  close(fd);
  long sites = exhaust(scenario_fs);
  printf("fs: %ld allocations failed one by one\n", sites);
  assert_true(sites > 6);
  unlink(path);
  rmdir(tmpdir);
}

static void test_tcp(void **state) {
  (void)state;
  long sites = exhaust(scenario_tcp);
  printf("tcp: %ld allocations failed one by one\n", sites);
  assert_true(sites > 6);
}

static void test_dns_work_process(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_IGN); /* as the header asks of programs that spawn */
  long sites = exhaust(scenario_dns_work_process);
  printf("dns/work/process: %ld allocations failed one by one\n", sites);
  assert_true(sites > 3);
}

/* Reserving fails with UV_ENOMEM part way; the context works on. */
static long reserve_enomem, ops_enomem;

static void scenario_reserve(run_t *r) {
  int rc = uvp_ctx_reserve(r->ctx, 3000, 3000);
  OK_OR_ENOMEM(rc);
  reserve_enomem += rc == UV_ENOMEM;
  rc = uvp_ctx_reserve_ops(r->ctx, 100);
  OK_OR_ENOMEM(rc);
  ops_enomem += rc == UV_ENOMEM;
  uvp_promise_t *p, *d = NULL;
  if (uvp_promise_resolved(r->ctx, NULL, NULL, &p) == 0) {
    OK_OR_ENOMEM(uvp_promise_then(p, add_one, NULL, &d));
    uv_run(&r->loop, UV_RUN_DEFAULT);
    expect_ok_or_enomem(d, 0);
    uvp_promise_release(d);
    uvp_promise_release(p);
  }
}

static void test_reserve(void **state) {
  (void)state;
  reserve_enomem = ops_enomem = 0;
  long sites = exhaust(scenario_reserve);
  printf("reserve: %ld allocations failed one by one\n", sites);
  assert_true(reserve_enomem >= 1);
  assert_true(ops_enomem >= 1);
}

/* The scenarios again with async traces on (UVP_TRACES=1, read by
 * uvp_ctx_new): the trace cache and every frame interned can fail too. */
static void test_core_traced(void **state) {
  (void)state;
  assert_int_equal(setenv("UVP_TRACES", "1", 1), 0);
  long sites = exhaust(scenario_core);
  assert_int_equal(unsetenv("UVP_TRACES"), 0);
  printf("core, traced: %ld allocations failed one by one\n", sites);
  assert_true(sites > 0);
}

static void test_replace_allocator_rules(void **state) {
  (void)state;
  assert_int_equal(uvp_replace_allocator(NULL, realloc, calloc, free),
                   UV_EINVAL);
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uvp_ctx_new(&loop, &ctx), 0);
  /* Memory from one allocator must never reach another's free. */
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free),
                   UV_EBUSY);
  assert_int_equal(uvp_ctx_close(ctx), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_replace_allocator_rules),
      cmocka_unit_test(test_core),
      cmocka_unit_test(test_combinators),
      cmocka_unit_test(test_take),
      cmocka_unit_test(test_time_map_flow),
      cmocka_unit_test(test_time_virtual),
      cmocka_unit_test(test_deadlines),
      cmocka_unit_test(test_fs),
      cmocka_unit_test(test_tcp),
      cmocka_unit_test(test_dns_work_process),
      cmocka_unit_test(test_reserve),
      cmocka_unit_test(test_core_traced),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

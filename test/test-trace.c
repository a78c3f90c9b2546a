/* Async stack traces (uvp_ctx_set_traces): the frames a promise names, how
 * they chain through then(), handlers, combinators, groups and fibers, the
 * bounds on a chain, and where they are printed. */
#include <stdio.h>
#include <unistd.h>

#include "alloc-helpers.h"

/* Sites of our own: the _at functions take them explicitly, so a test can
 * say which line a frame must name without counting lines. */
static const char F[] = "trace-test.c";

static uvp_ret_t pass(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

/* Asserts p's trace is exactly `n` frames of (what, line), newest first. */
static void expect_trace(const uvp_promise_t *p, size_t n, const char *what[],
                         const int line[]) {
  uvp_trace_frame_t fr[16];
  size_t got = uvp_promise_trace(p, fr, 16);
  if (got != n) {
    uvp_promise_print_trace(p, stderr);
    fail_msg("%zu frames, expected %zu", got, n);
  }
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(fr[i].what, what[i]);
    assert_non_null(fr[i].file);
    assert_int_equal(fr[i].line, line[i]);
  }
}

static int traces_setup(void **state) {
  fixture_setup(state);
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_traces(f->ctx, 1), 0);
  return 0;
}
#define TRACE_TEST(fn) FIXTURE_TEST_WITH(fn, traces_setup, fixture_teardown)

/* ---- on, off ------------------------------------------------------------- */

static void test_off_by_default(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d;
  uvp_trace_frame_t fr[4];
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, pass, NULL, &d), 0);
  assert_int_equal(uvp_promise_trace(d, fr, 4), 0);
  assert_int_equal(uvp_promise_print_trace(d, stdout), UV_ENOENT);
  /* On from here: promises made before keep none. */
  assert_int_equal(uvp_ctx_set_traces(f->ctx, 1), 0);
  uvp_promise_t *e;
  assert_int_equal(uvp_promise_then(d, pass, NULL, &e), 0);
  assert_int_equal(uvp_promise_trace(d, fr, 4), 0);
  assert_int_equal(uvp_promise_trace(e, fr, 4), 1);
  assert_string_equal(fr[0].what, "then");
  /* And off again. */
  assert_int_equal(uvp_ctx_set_traces(f->ctx, 0), 0);
  uvp_promise_t *g;
  assert_int_equal(uvp_promise_then(e, pass, NULL, &g), 0);
  assert_int_equal(uvp_promise_trace(g, fr, 4), 0);
  uvp_promise_release(g);
  uvp_promise_release(e);
  uvp_promise_release(d);
  uvp_promise_release(p);
}

static void test_errors(void **state) {
  fixture_t *f = *state;
  uvp_trace_frame_t fr[1];
  assert_int_equal(uvp_ctx_set_traces(NULL, 1), UV_EINVAL);
  assert_int_equal(uvp_promise_trace(NULL, fr, 1), 0);
  assert_int_equal(uvp_promise_print_trace(NULL, stdout), UV_EINVAL);
  uvp_promise_t *p;
  assert_int_equal(uvp_ctx_set_traces(f->ctx, 1), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_print_trace(p, NULL), UV_EINVAL);
  /* Counting only; nowhere to put frames says nothing. */
  assert_int_equal(uvp_promise_trace(p, NULL, 0), 1);
  assert_int_equal(uvp_promise_trace(p, NULL, 4), 0);
  uvp_promise_release(p);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  assert_int_equal(uvp_ctx_set_traces(f->ctx, 1), UVP_ECLOSED);
  f->ctx = NULL;
}

/* From another thread, with the check on: refused, traces stay as they
 * were (off here). */
typedef struct tforeign_s {
  uvp_ctx_t *ctx;
  int rc;
} tforeign_t;

static void traces_on_elsewhere(void *arg) {
  tforeign_t *x = arg;
  x->rc = uvp_ctx_set_traces(x->ctx, 1);
}

static void test_other_thread(void **state) {
  fixture_t *f = *state;
  tforeign_t x = {f->ctx, 1};
  uvp_promise_t *p;
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(traces_on_elsewhere, &x);
  assert_int_equal(x.rc, UVP_ETHREAD);
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_trace(p, NULL, 0), 0);
  uvp_promise_release(p);
}

/* Turning traces on allocates the context's cache: failing, it is
 * UV_ENOMEM and traces stay off; the context works on. */
static long on_enomem;

static void scenario_traces_on(run_t *r) {
  uvp_promise_t *p;
  int rc = uvp_ctx_set_traces(r->ctx, 1);
  OK_OR_ENOMEM(rc);
  on_enomem += rc == UV_ENOMEM;
  if (uvp_promise_new(r->ctx, &p) == 0) {
    assert_int_equal(uvp_promise_trace(p, NULL, 0), rc == 0 ? 1 : 0);
    uvp_promise_release(p);
  }
}

static void test_alloc_fail(void **state) {
  (void)state;
  on_enomem = 0;
  long sites = exhaust(scenario_traces_on);
  print_message("%ld allocations; uvp_ctx_set_traces failed %ld times\n", sites,
                on_enomem);
  assert_true(on_enomem >= 1);
}

/* ---- chains -------------------------------------------------------------- */

/* then() of then() of a promise: the data path, newest first. */
static void test_then_chain(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a, *b, *c;
  assert_int_equal(uvp_promise_new_at(f->ctx, &a, F, 10), 0);
  assert_int_equal(
      uvp_promise_on_at(a, UVP_ON_FULFILLED, pass, NULL, &b, F, 11), 0);
  assert_int_equal(uvp_promise_on_at(b, UVP_ON_BOTH, pass, NULL, &c, F, 12), 0);
  expect_trace(c, 3, (const char *[]){"then", "then", "promise"},
               (const int[]){12, 11, 10});
  uvp_promise_release(c);
  uvp_promise_release(b);
  uvp_promise_release(a);
}

/* A promise created inside a handler follows the handler's then(). */
typedef struct {
  uvp_ctx_t *ctx;
  uvp_promise_t *made;
} maker_t;

static uvp_ret_t make_one(void *arg, const uvp_outcome_t *in) {
  maker_t *m = arg;
  (void)in;
  assert_int_equal(uvp_promise_new_at(m->ctx, &m->made, F, 30), 0);
  return uvp_ret_pass();
}

static void test_created_in_handler(void **state) {
  fixture_t *f = *state;
  maker_t m = {f->ctx, NULL};
  uvp_promise_t *a, *d;
  assert_int_equal(uvp_promise_new_at(f->ctx, &a, F, 20), 0);
  assert_int_equal(uvp_promise_on_at(a, UVP_ON_BOTH, make_one, &m, &d, F, 21),
                   0);
  assert_int_equal(uvp_promise_resolve(a, NULL, NULL), 0);
  run_loop(f);
  assert_non_null(m.made);
  expect_trace(m.made, 3, (const char *[]){"promise", "then", "promise"},
               (const int[]){30, 21, 20});
  /* Outside any handler again: a fresh chain. */
  uvp_promise_t *q;
  assert_int_equal(uvp_promise_new_at(f->ctx, &q, F, 40), 0);
  expect_trace(q, 1, (const char *[]){"promise"}, (const int[]){40});
  uvp_promise_release(q);
  uvp_promise_release(m.made);
  uvp_promise_release(d);
  uvp_promise_release(a);
}

/* Three hops: a then() of a combinator made by a group's member. */
typedef struct {
  uvp_ctx_t *ctx;
  uvp_promise_t *input; /* kept, to settle later */
  uvp_promise_t *all;
  uvp_promise_t *after;
} hops_t;

static int start_member(void *arg, uvp_promise_t **out) {
  hops_t *h = arg;
  int rc = uvp_promise_new_at(h->ctx, &h->input, F, 52);
  if (rc == 0)
    rc = uvp_promise_all_at(h->ctx, &h->input, 1, 0, &h->all, F, 53);
  if (rc == 0)
    rc = uvp_promise_on_at(h->all, UVP_ON_BOTH, pass, NULL, &h->after, F, 54);
  if (rc == 0)
    *out = uvp_promise_retain(h->after);
  return rc;
}

static void test_then_combinator_group(void **state) {
  fixture_t *f = *state;
  hops_t h = {.ctx = f->ctx};
  uvp_group_t *g;
  assert_int_equal(uvp_group_new_at(f->ctx, NULL, &g, F, 50), 0);
  assert_int_equal(uvp_group_start(g, start_member, &h, NULL), 0);
  run_loop(f);
  assert_non_null(h.after);
  expect_trace(h.after, 3, (const char *[]){"then", "promise", "group"},
               (const int[]){54, 53, 50});
  /* The group's own promise names the group. */
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  expect_trace(join, 1, (const char *[]){"group"}, (const int[]){50});
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_promise_resolve(h.input, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
  uvp_promise_release(h.after);
  uvp_promise_release(h.all);
  uvp_promise_release(h.input);
}

/* In a fiber: its spawn, then the await it last resumed from. */
typedef struct {
  uvp_ctx_t *ctx;
  uvp_promise_t *before, *after, *gate;
} fib_t;

static uvp_ret_t fiber_body(void *arg) {
  fib_t *t = arg;
  assert_int_equal(uvp_promise_new_at(t->ctx, &t->before, F, 61), 0);
  assert_int_equal(uvp_await_at(t->gate, NULL, F, 62), 0);
  assert_int_equal(uvp_promise_new_at(t->ctx, &t->after, F, 63), 0);
  return uvp_ret_pass();
}

static void test_fiber_frames(void **state) {
  fixture_t *f = *state;
  fib_t t = {.ctx = f->ctx};
  uvp_promise_t *fp;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &t.gate), 0);
  assert_int_equal(uvp_fiber_spawn_at(f->ctx, fiber_body, &t, NULL, &fp, F, 60),
                   0);
  expect_trace(fp, 1, (const char *[]){"fiber"}, (const int[]){60});
  run_loop(f);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  expect_trace(t.before, 2, (const char *[]){"promise", "fiber"},
               (const int[]){61, 60});
  expect_trace(t.after, 3, (const char *[]){"promise", "await", "fiber"},
               (const int[]){63, 62, 60});
  uvp_promise_release(t.after);
  uvp_promise_release(t.before);
  uvp_promise_release(t.gate);
  uvp_promise_release(fp);
}

/* ---- bounds -------------------------------------------------------------- */

/* One more step after p, created at line `line` of F; p's reference passes
 * to the step, whose reference is returned. */
static uvp_promise_t *step_at(uvp_promise_t *p, int line) {
  uvp_promise_t *n;
  assert_int_equal(uvp_promise_on_at(p, UVP_ON_BOTH, pass, NULL, &n, F, line),
                   0);
  uvp_promise_release(p);
  return n;
}

/* A chain built in a loop from one site shows that site once: a hundred
 * thousand steps neither lengthen the trace nor fill the table. */
static void test_loop_folds(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *root, *p;
  assert_int_equal(uvp_promise_new_at(f->ctx, &root, F, 70), 0);
  p = uvp_promise_retain(root);
  for (int i = 0; i < 100000; i++)
    p = step_at(p, 71);
  expect_trace(p, 2, (const char *[]){"then", "promise"},
               (const int[]){71, 70});
  /* Two sites alternating fold the same way. */
  for (int i = 0; i < 1000; i++)
    p = step_at(p, 72 + i % 2);
  uvp_trace_frame_t fr[8];
  size_t n = uvp_promise_trace(p, fr, 8);
  assert_true(n >= 3 && n <= 5);
  assert_int_equal(uvp_promise_resolve(root, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
  uvp_promise_release(root);
}

/* A chain through many different sites stops growing at 48 frames. */
static void test_depth_cap(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *root, *p;
  assert_int_equal(uvp_promise_new_at(f->ctx, &root, F, 1000), 0);
  p = uvp_promise_retain(root);
  for (int i = 1; i <= 100; i++)
    p = step_at(p, 1000 + i);
  uvp_trace_frame_t fr[64];
  size_t n = uvp_promise_trace(p, fr, 64);
  assert_int_equal(n, 48);
  /* The bottom of the chain is kept: where it all began. */
  assert_string_equal(fr[n - 1].what, "promise");
  assert_int_equal(fr[n - 1].line, 1000);
  /* Fewer slots than frames: the count is still the chain's. */
  assert_int_equal(uvp_promise_trace(p, fr, 2), 48);
  assert_int_equal(uvp_promise_resolve(root, NULL, NULL), 0);
  run_loop(f);
  uvp_promise_release(p);
  uvp_promise_release(root);
}

/* ---- printed ------------------------------------------------------------- */

/* What `fn(arg)` writes to a stream, as a string (caller frees). */
static char *captured(void (*fn)(void *arg, FILE *out), void *arg) {
  char *buf = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&buf, &len);
  assert_non_null(out);
  fn(arg, out);
  assert_int_equal(fclose(out), 0);
  return buf;
}

static void dump(void *arg, FILE *out) {
  assert_true(uvp_ctx_dump_pending(arg, out) >= 2);
}

static void test_dump_prints_traces(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a, *d;
  assert_int_equal(uvp_promise_new_at(f->ctx, &a, F, 80), 0);
  assert_int_equal(uvp_promise_on_at(a, UVP_ON_BOTH, pass, NULL, &d, F, 81), 0);
  char *s = captured(dump, f->ctx);
  /* d's line, then its chain indented under it. */
  assert_non_null(strstr(s, "created at trace-test.c:81"));
  assert_non_null(strstr(s, "    then at trace-test.c:81\n"
                            "    promise at trace-test.c:80\n"));
  free(s);
  uvp_promise_release(d);
  uvp_promise_release(a);
}

/* The default unhandled report, on stderr: swap stderr for a file. */
static void test_unhandled_report_prints_trace(void **state) {
  fixture_t *f = *state;
  char path[] = "/tmp/uvp-trace-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fd, 2), 2);

  uvp_promise_t *a, *d;
  assert_int_equal(uvp_promise_new_at(f->ctx, &a, F, 90), 0);
  assert_int_equal(
      uvp_promise_on_at(a, UVP_ON_FULFILLED, pass, NULL, &d, F, 91), 0);
  assert_int_equal(uvp_promise_reject(a, UV_EIO, NULL, NULL), 0);
  run_loop(f);
  uvp_promise_release(d); /* rejected, never observed: reported now */
  uvp_promise_release(a);

  fflush(stderr);
  assert_int_equal(dup2(saved, 2), 2);
  close(saved);
  char buf[1024];
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  close(fd);
  unlink(path);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_non_null(strstr(buf, "unhandled rejection EIO"));
  assert_non_null(strstr(buf, "    then at trace-test.c:91\n"
                              "    promise at trace-test.c:90\n"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* First: the allocator is replaced while no context exists. */
      cmocka_unit_test(test_alloc_fail),
      FIXTURE_TEST(test_off_by_default),
      FIXTURE_TEST(test_errors),
      FIXTURE_TEST(test_other_thread),
      TRACE_TEST(test_then_chain),
      TRACE_TEST(test_created_in_handler),
      TRACE_TEST(test_then_combinator_group),
      TRACE_TEST(test_fiber_frames),
      TRACE_TEST(test_loop_folds),
      TRACE_TEST(test_depth_cap),
      TRACE_TEST(test_dump_prints_traces),
      TRACE_TEST(test_unhandled_report_prints_trace),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

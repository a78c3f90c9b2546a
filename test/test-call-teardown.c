/* Calls between loops at teardown (include/uvp/calls.h, "Teardown" and
 * "Threads and lifetime"): a caller closing while the target still serves
 * its calls (the pair's link outlives the serving: the tests' seam in
 * call.h widens the window the race needs), a caller whose teardown reads
 * "target closed" answers (each call's promise ends once, before its
 * operation's memory goes), both sides closing at once with calls both
 * ways, a thread posting into a context that closes and is freed meanwhile
 * (refused, never read), and a call into a loop that does not run (the task
 * dump says so; a deadline bounds it).  UVP_TEST_ROUNDS sets the rounds
 * of the three that repeat. */
#include <stdatomic.h>

#include "../src/call.h"
#include "call-helpers.h"

/* Rounds of the randomized tests: UVP_TEST_ROUNDS, or `dflt`. */
static int rounds(int dflt) {
  const char *s = getenv("UVP_TEST_ROUNDS");
  int n = s != NULL ? atoi(s) : 0;
  return n > 0 ? n : dflt;
}

static uvp_ret_t fn_quick(uvp_ctx_t *target, void *arg) {
  (void)target;
  (void)arg;
  return uvp_ret_value(NULL, NULL);
}

/* ---- a caller closing while its target serves it ------------------------ */

/* The seam: a target that took a link's cuts (no calls) sleeps 5 ms
 * before serving them, one that took calls 0.5 ms: the caller, its calls
 * answered, closes and lets go of the link meanwhile. */
static void widen(bool with_calls) { uv_sleep(with_calls ? 0 : 5); }

#define NCALLERS 3
typedef struct caller_s {
  uv_thread_t th;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_timer_t stop;
  uvp_group_t *g;
  uvp_ctx_t *target;
  int ms; /* it closes after */
  int loop_rc;
} caller_t;
static uv_barrier_t callers_ready;
static atomic_long answered;

/* A fiber calling the target until its context closes, pausing on every
 * third answer (as a read from a socket would): the pause is what leaves
 * a cut alone in a message. */
static uvp_ret_t call_forever(void *arg) {
  caller_t *c = arg;
  for (;;) {
    uvp_promise_t *p;
    if (uvp_await_take(
            uvp_call_start(c->ctx, c->target, fn_quick, NULL, NULL, &p), &p,
            NULL) != 0)
      break;
    long n = ++answered;
    if (n % 3 == 0 &&
        uvp_await_take(uvp_delay(c->ctx, (uint64_t)(n % 2), NULL, NULL, 0, &p),
                       &p, NULL) != 0)
      break;
  }
  return uvp_ret_pass();
}

static void caller_stop(uv_timer_t *t) {
  caller_t *c = t->data;
  uvp_group_close(c->g);
  uvp_group_cancel(c->g);
  uvp_group_release(c->g);
  if (uvp_ctx_close(c->ctx) != 0)
    abort();
  uv_close((uv_handle_t *)t, NULL);
}

static void caller_main(void *arg) {
  caller_t *c = arg;
  uvp_group_opts_t go = {.flags = UVP_GROUP_DISCARD_SETTLED};
  if (uv_loop_init(&c->loop) != 0 || uvp_ctx_new(&c->loop, &c->ctx) != 0 ||
      uvp_group_new(c->ctx, &go, &c->g) != 0)
    abort();
  uv_barrier_wait(&callers_ready);
  for (int i = 0; i < 16; i++)
    if (uvp_group_spawn(c->g, call_forever, c, NULL) != 0)
      abort();
  uv_timer_init(&c->loop, &c->stop);
  c->stop.data = c;
  uv_timer_start(&c->stop, caller_stop, (uint64_t)c->ms, 0);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  c->loop_rc = uv_loop_close(&c->loop);
}

/* Three callers close at staggered moments while their calls are served;
 * the target stays open until all have ended.  The old link was freed by
 * the caller's end under serve()'s feet (ASan: heap-use-after-free). */
static void test_caller_closes_while_served(void **state) {
  (void)state;
  uvp__call_gap = widen;
  int n = rounds(40);
  for (int r = 0; r < n; r++) {
    target_t t;
    target_start(&t);
    caller_t cs[NCALLERS];
    assert_int_equal(uv_barrier_init(&callers_ready, NCALLERS + 1), 0);
    for (int i = 0; i < NCALLERS; i++) {
      memset(&cs[i], 0, sizeof(cs[i]));
      cs[i].target = t.ctx;
      cs[i].ms = 40 + 3 * i;
      cs[i].loop_rc = -1;
      assert_int_equal(uv_thread_create(&cs[i].th, caller_main, &cs[i]), 0);
    }
    uv_barrier_wait(&callers_ready);
    for (int i = 0; i < NCALLERS; i++) {
      assert_int_equal(uv_thread_join(&cs[i].th), 0);
      assert_int_equal(cs[i].loop_rc, 0);
    }
    uv_barrier_destroy(&callers_ready);
    target_join(&t);
  }
  uvp__call_gap = NULL;
  assert_true(answered > 0);
}

/* ---- a closing caller reading "target closed" answers -------------------- */

static atomic_int ended;
static uvp_ret_t count_end(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  ended++;
  return uvp_ret_pass();
}

/* The target, on a loop of this thread that never runs, is closed: its
 * answers (UVP_ECLOSED, naming it) are in the caller's mailbox when the
 * caller closes, whose teardown reads them after `closed` is set.  Each
 * promise ends once there; the old code left it pending, gave its
 * operation's slot back, and the sweep ran its hook on the freed slot
 * (ASan: use-after-poison). */
static void test_closing_caller_reads_answers(void **state) {
  fixture_t *f = *state;
  uv_loop_t tl;
  uvp_ctx_t *target;
  assert_int_equal(uv_loop_init(&tl), 0);
  assert_int_equal(uvp_ctx_new(&tl, &target), 0);
  ended = 0;
  enum { N = 8 };
  for (int i = 0; i < N; i++) {
    uvp_promise_t *p;
    assert_int_equal(uvp_call_start(f->ctx, target, fn_quick, NULL, NULL, &p),
                     0);
    assert_int_equal(
        uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, count_end, NULL, NULL), 0);
  }
  uv_run(&f->loop, UV_RUN_NOWAIT);            /* the calls leave */
  assert_int_equal(uvp_ctx_close(target), 0); /* answered: UVP_ECLOSED */
  close_ctx(f); /* its teardown reads the answers */
  assert_int_equal(uv_run(&tl, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&tl), 0);
  run_loop(f);
  /* A closed context runs no handler: none saw its end, and none ran on
   * memory given back. */
  assert_int_equal(ended, 0);
}

/* ---- both closing at once, calls both ways ------------------------------- */

static atomic_long fn_ran, args_freed;
static uvp_ret_t fn_mixed(uvp_ctx_t *target, void *arg) {
  long i = (long)(intptr_t)arg;
  fn_ran++;
  if (i == 0)
    uv_sleep(30); /* busy: the calls behind it wait in the mailbox */
  if (i % 2 == 0) {
    uvp_promise_t *q;
    if (uvp_delay(target, 10000, NULL, NULL, 0, &q) != 0)
      return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
    return uvp_ret_adopt(q);
  }
  return uvp_ret_value(malloc(16), free);
}
static void count_args(void *arg) {
  (void)arg;
  args_freed++;
}

static target_t *both[2];
static atomic_long both_started;
static uvp_ret_t start_mixed(uvp_ctx_t *ctx, void *arg) {
  int me = (int)(intptr_t)arg;
  for (long i = 0; i < 200; i++) {
    uvp_promise_t *p;
    if (uvp_call_start(ctx, both[!me]->ctx, fn_mixed, (void *)(intptr_t)i,
                       count_args, &p) != 0)
      break; /* the other is closed: refused, nothing started */
    both_started++;
    /* Held by its handler: a promise left pending is swept. */
    if (uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, count_end, NULL, NULL) !=
        0)
      uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

/* Two contexts with 200 calls each into the other (half followed on a
 * 10 s delay there, the first busy for 30 ms) close at the same moment,
 * 0 to 30 ms later: each call ends once (its arg freed once), both loops
 * close. */
static void test_both_close_with_calls_both_ways(void **state) {
  (void)state;
  int n = rounds(60);
  for (int r = 0; r < n; r++) {
    target_t a, b;
    fn_ran = args_freed = both_started = 0;
    target_start(&a);
    target_start(&b);
    both[0] = &a;
    both[1] = &b;
    uv_sem_t sem;
    assert_int_equal(uv_sem_init(&sem, 0), 0);
    assert_int_equal(
        uvp_call_post(a.ctx, start_mixed, (void *)0, NULL, sem_posted, &sem),
        0);
    assert_int_equal(
        uvp_call_post(b.ctx, start_mixed, (void *)1, NULL, sem_posted, &sem),
        0);
    uv_sem_wait(&sem);
    uv_sem_wait(&sem);
    uv_sem_destroy(&sem);
    /* Closes in every phase of the calls: the race wanted one side's
     * "closed" answers in the other's mailbox as its teardown begins. */
    uv_sleep((unsigned)(r % 31));
    uv_async_send(&a.stop);
    uv_async_send(&b.stop);
    assert_int_equal(uv_thread_join(&a.th), 0);
    assert_int_equal(uv_thread_join(&b.th), 0);
    assert_int_equal(a.close_rc, 0);
    assert_int_equal(b.close_rc, 0);
    assert_int_equal(a.loop_rc, 0);
    assert_int_equal(b.loop_rc, 0);
    assert_int_equal(args_freed, both_started);
  }
}

/* ---- a thread posting into a context that closes ------------------------- */

typedef struct poster_s {
  uvp_ctx_t *target;
  atomic_long accepted, done, refused;
  int last_rc;
} poster_t;
static void poster_done(void *arg, int code, void *value, uvp_free_cb free_cb) {
  poster_t *ps = arg;
  (void)code;
  if (free_cb != NULL && value != NULL)
    free_cb(value);
  ps->done++;
}
/* calls.h's rule: until a post is refused with UVP_ECLOSED, and not after
 * the program has made a context that may take the freed one's place. */
static void post_until_refused(void *arg) {
  poster_t *ps = arg;
  for (;;) {
    int rc = uvp_call_post(ps->target, fn_quick, NULL, NULL, poster_done, ps);
    if (rc != 0) {
      ps->last_rc = rc;
      return;
    }
    ps->accepted++;
    if (ps->accepted % 64 == 0)
      uv_sleep(0);
  }
}

/* A plain thread posts while the target closes and is freed: every post
 * is answered once or refused with UVP_ECLOSED; a post after the free is
 * refused too (the old code took the freed context's lock: an abort in
 * libuv, ASan's heap-use-after-free). */
static void test_post_racing_close(void **state) {
  (void)state;
  int n = rounds(20);
  for (int r = 0; r < n; r++) {
    target_t t;
    target_start(&t);
    poster_t ps = {.target = t.ctx, .last_rc = 0};
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, post_until_refused, &ps), 0);
    uv_sleep((unsigned)(r % 5));
    target_join(&t); /* closed and freed, the poster running */
    assert_int_equal(uv_thread_join(&th), 0);
    assert_int_equal(ps.last_rc, UVP_ECLOSED);
    assert_int_equal(ps.done, ps.accepted);
    /* Freed: refused, not read. */
    assert_int_equal(
        uvp_call_post(t.ctx, fn_quick, NULL, NULL, poster_done, &ps),
        UVP_ECLOSED);
  }
}

/* ---- a call into a loop that does not run -------------------------------- */

static char dump_text[8192];
static int into_text(void *arg, const char *text, size_t len) {
  size_t have = strlen(arg);
  if (have + len < sizeof(dump_text)) {
    memcpy((char *)arg + have, text, len);
    ((char *)arg)[have + len] = '\0';
  }
  return 0;
}

/* The target's loop never runs: the caller's dump says so after a second,
 * and a deadline (the bound calls.h shows) ends a call that waits for it. */
static void test_dump_names_loop_not_running(void **state) {
  fixture_t *f = *state;
  uv_loop_t tl;
  uvp_ctx_t *target;
  assert_int_equal(uv_loop_init(&tl), 0);
  assert_int_equal(uvp_ctx_new(&tl, &target), 0);
  uvp_promise_t *p, *bounded;
  assert_int_equal(uvp_call_start(f->ctx, target, fn_quick, NULL, NULL, &p), 0);
  assert_int_equal(uvp_deadline_set(f->ctx, 50), 0);
  assert_int_equal(
      uvp_call_start(f->ctx, target, fn_quick, NULL, NULL, &bounded), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  run_until_settled(f, bounded);
  assert_int_equal(uvp_promise_reason(bounded, NULL), UV_ETIMEDOUT);
  uvp_promise_release(bounded);
  uv_sleep(1100);
  dump_text[0] = '\0';
  uvp_dump_opts_t o = {0, NULL, into_text, dump_text, 0};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 1);
  char want[128];
  snprintf(want, sizeof(want),
           "for call into context %p whose loop has not "
           "run for 1.",
           (void *)target);
  if (strstr(dump_text, want) == NULL)
    fail_msg("no '%s' in the dump:\n%s", want, dump_text);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  assert_int_equal(uvp_ctx_close(target), 0);
  assert_int_equal(uv_run(&tl, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&tl), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  uvp_promise_release(p);
}

/* An argument: only the tests matching it (cmocka's pattern), one at a
 * time under a sanitizer that stops the process at its first report. */
int main(int argc, char **argv) {
  if (argc > 1)
    cmocka_set_test_filter(argv[1]);
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_caller_closes_while_served),
      FIXTURE_TEST(test_closing_caller_reads_answers),
      QUIET_TEST(test_both_close_with_calls_both_ways),
      FIXTURE_TEST(test_post_racing_close),
      QUIET_TEST(test_dump_names_loop_not_running),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

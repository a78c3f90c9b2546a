/* The structured rule (uvp.h "Task groups"): a group's join settles only
 * once every member has ended, whatever cut it, so a fiber can always wait
 * for the children it started and keep their state on its stack; cleanup
 * past a deadline runs under uvp_deadline_shield; uvp_group_spawn keeps
 * the fiber options' deadline.
 *
 * The four ways a parent fiber awaiting its group's join is cut: by
 * uvp_promise_cancel or by its deadline_ms, with the join consumed by the
 * parent alone or by a second consumer too.  In each, the members keep
 * their state in the parent's frame and write to it while they clean up
 * (slowly: a delay, under a deadline of their own); the parent's frame
 * must outlive every write (the ASan run sees a write into a dead frame).
 * Every test ends with uv_loop_close() == 0 (the fixture). */
#include "helpers.h"

enum { MEMBERS = 4 };

typedef struct frame_s frame_t;

typedef struct member_s {
  uvp_ctx_t *ctx;
  frame_t *frame;
  int i;
} member_t;

/* On the parent fiber's stack. */
struct frame_s {
  int ended;
  int cut_rc[MEMBERS];     /* what the member's wait said when it was cut */
  int cleanup_rc[MEMBERS]; /* its cleanup's shielded await */
  member_t m[MEMBERS];
};

typedef struct cell_s {
  uvp_ctx_t *ctx;
  bool by_deadline, second_consumer;
  uvp_promise_t *other; /* the second consumer of the join */
  uvp_promise_t *join;  /* kept by the test: its reason is checked */
  int parked;
  int rc_await, ended_at_await;
  int rc_shielded, ended_at_return;
  int cleanup_ok;
} cell_t;

static uvp_ret_t member_body(void *arg) {
  member_t *m = arg;
  uvp_promise_t *never, *d;
  int rc = UV_ENOMEM;
  if (uvp_promise_new(m->ctx, &never) == 0) {
    rc = uvp_await(never, NULL); /* until it is cut */
    uvp_promise_release(never);
  }
  /* Cut: clean up, which takes a while, under a deadline of its own (its
   * scope's has passed in the deadline cases). */
  int crc = uvp_deadline_shield(m->ctx, 5000);
  if (crc == 0 && (crc = uvp_delay(m->ctx, 20 + 10 * (uint64_t)m->i, NULL, NULL,
                                   0, &d)) == 0) {
    crc = uvp_await_shielded(d, NULL);
    uvp_promise_release(d);
  }
  m->frame->cut_rc[m->i] = rc;
  m->frame->cleanup_rc[m->i] = crc;
  m->frame->ended++;
  return uvp_ret_reject(rc != 0 ? rc : UV_EINVAL, NULL, NULL);
}

static uvp_ret_t parent_body(void *arg) {
  cell_t *c = arg;
  frame_t frame;
  memset(&frame, 0, sizeof(frame));
  uvp_group_t *g;
  if (uvp_group_new(c->ctx, NULL, &g) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  for (int i = 0; i < MEMBERS; i++) {
    frame.m[i] = (member_t){c->ctx, &frame, i};
    if (uvp_group_spawn(g, member_body, &frame.m[i], NULL) != 0)
      return uvp_ret_reject(UV_ENOMEM, NULL, NULL); /* the test fails */
  }
  (void)uvp_group_close(g);
  uvp_promise_t *join;
  (void)uvp_group_join(g, &join);
  c->join = uvp_promise_retain(join);
  if (c->second_consumer)
    (void)uvp_promise_then(join, NULL, NULL, &c->other);
  c->parked = 1;
  /* The pattern uvp.h gives. */
  c->rc_await = uvp_await(join, NULL);
  c->ended_at_await = frame.ended;
  c->rc_shielded = c->rc_await;
  if (c->rc_await != 0) {
    (void)uvp_group_cancel(g);
    c->rc_shielded = uvp_await_shielded(join, NULL);
  }
  c->ended_at_return = frame.ended;
  c->cleanup_ok = 1;
  for (int i = 0; i < MEMBERS; i++)
    if (frame.cleanup_rc[i] != 0)
      c->cleanup_ok = 0;
  uvp_promise_release(join);
  uvp_group_release(g);
  return uvp_ret_pass();
}

static void run_cell(fixture_t *f, bool by_deadline, bool second_consumer) {
  static cell_t c;
  c = (cell_t){
      f->ctx, by_deadline, second_consumer, NULL, NULL, 0, 1, -1, 1, -1, 0};
  uvp_fiber_opts_t fo = {0, NULL, by_deadline ? 40 : 0};
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, parent_body, &c, &fo, &fp), 0);
  /* Everyone parked: the parent on the join, the members on `never`. */
  for (int k = 0; k < 5; k++)
    (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(c.parked, 1);
  assert_int_equal(uvp_promise_state(fp), UVP_PENDING);
  if (!by_deadline)
    assert_int_equal(uvp_promise_cancel(fp), 0);
  settle_ticking(f, fp);
  run_loop(f); /* the parent returns */
  int cut = by_deadline ? UV_ETIMEDOUT : UV_ECANCELED;
  /* The join is cut when the parent's await was its only consumer, or by
   * the deadline it was made under; otherwise the parent's group_cancel
   * ended the group, and the join fulfils once the members have ended. */
  int joined = !second_consumer || by_deadline ? cut : 0;
  if (c.ended_at_return != MEMBERS)
    fail_msg("%s, %s: the parent returned with %d of %d members ended",
             by_deadline ? "deadline" : "cancel",
             second_consumer ? "two consumers" : "one consumer",
             c.ended_at_return, MEMBERS);
  assert_int_equal(c.rc_await, cut);
  assert_int_equal(c.rc_shielded, joined);
  /* Alone on the join, the parent's await waited for the members too. */
  if (!second_consumer)
    assert_int_equal(c.ended_at_await, MEMBERS);
  assert_int_equal(c.cleanup_ok, 1);
  assert_int_equal(uvp_promise_state(c.join),
                   joined != 0 ? UVP_REJECTED : UVP_FULFILLED);
  assert_int_equal(uvp_promise_reason(c.join, NULL), joined);
  assert_int_equal(uvp_promise_reason(fp, NULL), cut);
  if (c.other != NULL) {
    assert_int_equal(uvp_promise_reason(c.other, NULL), joined);
    uvp_promise_release(c.other);
  }
  uvp_promise_release(c.join);
  uvp_promise_release(fp);
}

static void test_cancel_one_consumer(void **state) {
  run_cell(*state, false, false);
}
static void test_cancel_two_consumers(void **state) {
  run_cell(*state, false, true);
}
static void test_deadline_one_consumer(void **state) {
  run_cell(*state, true, false);
}
static void test_deadline_two_consumers(void **state) {
  run_cell(*state, true, true);
}

/* A group of one member, parked, whose join is then cancelled: still
 * pending (the member cleans up first). */
static uvp_promise_t *cut_one_member_group(fixture_t *f, frame_t *frame,
                                           uvp_group_t **g) {
  memset(frame, 0, sizeof(*frame));
  assert_int_equal(uvp_group_new(f->ctx, NULL, g), 0);
  frame->m[0] = (member_t){f->ctx, frame, 0};
  assert_int_equal(uvp_group_spawn(*g, member_body, &frame->m[0], NULL), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(*g, &join), 0);
  for (int k = 0; k < 3; k++)
    (void)uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_cancel(join), 0);
  assert_int_equal(uvp_promise_state(join), UVP_PENDING);
  return join;
}

/* Cancelling the join itself: uvp_promise_cancel returns 0 at once, the
 * join stays pending while a member cleans up, then rejects. */
static void test_join_cancel_waits(void **state) {
  fixture_t *f = *state;
  static frame_t frame;
  uvp_group_t *g;
  uvp_promise_t *join = cut_one_member_group(f, &frame, &g);
  assert_int_equal(uvp_promise_cancel(join), 0); /* again: no change */
  assert_int_equal(uvp_group_size(g), 1);
  run_until_settled(f, join);
  assert_int_equal(frame.ended, 1);
  assert_int_equal(frame.cut_rc[0], UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ECANCELED);
  assert_int_equal(uvp_group_size(g), 0);
  uvp_promise_release(join);
  uvp_group_release(g);
  run_loop(f);
}

/* A join cut and then torn down: the teardown rejects it at once. */
static void test_cut_join_torn_down(void **state) {
  fixture_t *f = *state;
  static frame_t frame;
  uvp_group_t *g;
  uvp_promise_t *join = cut_one_member_group(f, &frame, &g);
  (void)close_ctx(f);
  assert_int_equal(uvp_promise_reason(join, NULL), UVP_ECLOSED);
  uvp_promise_release(join);
  uvp_group_release(g);
}

/* ---- cleanup past a deadline --------------------------------------------- */

typedef struct shield_s {
  uvp_ctx_t *ctx;
  int rc_cut, rc_plain, rc_set, rc_spawned, rc_cleanup, rc_bounded;
  uint64_t left_after_set, left_after_shield;
  uint64_t bounded_ms;
} shield_t;

static uvp_ret_t delay_body(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *d;
  int rc = uvp_delay(ctx, 10, NULL, NULL, 0, &d);
  if (rc == 0) {
    rc = uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return rc == 0 ? uvp_ret_pass() : uvp_ret_reject(rc, NULL, NULL);
}

static int shielded_delay(uvp_ctx_t *ctx, uint64_t ms) {
  uvp_promise_t *d;
  int rc = uvp_delay(ctx, ms, NULL, NULL, 0, &d);
  if (rc == 0) {
    rc = uvp_await_shielded(d, NULL);
    uvp_promise_release(d);
  }
  return rc;
}

static uvp_ret_t shield_body(void *arg) {
  shield_t *s = arg;
  uvp_promise_t *never, *fp;
  if (uvp_promise_new(s->ctx, &never) != 0)
    return uvp_ret_pass();
  s->rc_cut = uvp_await(never, NULL); /* the fiber's deadline passes */
  uvp_promise_release(never);
  /* Without a shield nothing can start: the passed deadline stops it, and
   * neither a new uvp_deadline_set nor a fiber's own deadline lifts it. */
  s->rc_plain = shielded_delay(s->ctx, 5);
  (void)uvp_deadline_set(s->ctx, 1000);
  s->left_after_set = uvp_deadline_left(s->ctx);
  s->rc_set = shielded_delay(s->ctx, 5);
  uvp_fiber_opts_t fo = {0, NULL, 1000};
  if (uvp_fiber_spawn(s->ctx, delay_body, s->ctx, &fo, &fp) == 0) {
    s->rc_spawned = uvp_await_shielded(fp, NULL);
    uvp_promise_release(fp);
  }
  /* With one: cleanup runs, bounded by the shield's own deadline. */
  if (uvp_deadline_shield(s->ctx, 1000) != 0)
    return uvp_ret_pass();
  s->left_after_shield = uvp_deadline_left(s->ctx);
  s->rc_cleanup = shielded_delay(s->ctx, 5);
  if (uvp_fiber_spawn(s->ctx, delay_body, s->ctx, &fo, &fp) == 0) {
    s->rc_spawned = uvp_await_shielded(fp, NULL);
    uvp_promise_release(fp);
  }
  /* On uvp's clock, the loop's time, which the shield counts from: the
   * real time since the loop last read it may be anything (a loaded
   * machine under valgrind: 12 ms). */
  (void)uvp_deadline_shield(s->ctx, 30);
  uint64_t t0 = uvp_clock_now(s->ctx);
  s->rc_bounded = shielded_delay(s->ctx, 5000);
  s->bounded_ms = uvp_clock_now(s->ctx) - t0;
  return uvp_ret_pass();
}

static void test_cleanup_past_deadline(void **state) {
  fixture_t *f = *state;
  static shield_t s;
  s = (shield_t){f->ctx, 1, 1, 1, 1, 1, 1, 0, 0, 0};
  uvp_fiber_opts_t fo = {0, NULL, 20};
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, shield_body, &s, &fo, &fp), 0);
  settle_ticking(f, fp);
  run_loop(f);
  assert_int_equal(s.rc_cut, UV_ETIMEDOUT);
  assert_int_equal(s.rc_plain, UV_ETIMEDOUT);
  assert_int_equal(s.left_after_set, 0); /* nearer-wins: the passed one */
  assert_int_equal(s.rc_set, UV_ETIMEDOUT);
  assert_int_equal(s.rc_spawned, 0); /* the second spawn, shielded */
  assert_true(s.left_after_shield > 900 && s.left_after_shield <= 1000);
  assert_int_equal(s.rc_cleanup, 0);
  assert_int_equal(s.rc_bounded, UV_ETIMEDOUT);
  if (!(s.bounded_ms >= 30 && s.bounded_ms < 2000))
    fail_msg("a 30 ms shield ended a 5 s delay after %llu ms",
             (unsigned long long)s.bounded_ms);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_ETIMEDOUT);
  uvp_promise_release(fp);
}

static void test_shield_errors_and_none(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_deadline_shield(NULL, 10), UV_EINVAL);
  /* No deadline to lift: nothing to do. */
  assert_int_equal(uvp_deadline_shield(f->ctx, UVP_NO_DEADLINE), 0);
  assert_true(uvp_deadline_left(f->ctx) == UVP_NO_DEADLINE);
  assert_int_equal(uvp_deadline_set(f->ctx, 10), 0);
  assert_true(uvp_deadline_left(f->ctx) <= 10);
  /* Farther than the one set: it replaces it, unlike uvp_deadline_set. */
  assert_int_equal(uvp_deadline_shield(f->ctx, 5000), 0);
  assert_true(uvp_deadline_left(f->ctx) > 4000);
  assert_int_equal(uvp_deadline_shield(f->ctx, UVP_NO_DEADLINE), 0);
  assert_true(uvp_deadline_left(f->ctx) == UVP_NO_DEADLINE);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_deadline_shield(ctx, 10), UVP_ECLOSED);
}

/* ---- uvp_group_spawn keeps the fiber options' deadline --------------------
 */

typedef struct spawned_s {
  uvp_ctx_t *ctx;
  uint64_t left;
  int rc;
} spawned_t;

static uvp_ret_t spawned_body(void *arg) {
  spawned_t *s = arg;
  s->left = uvp_deadline_left(s->ctx);
  uvp_promise_t *d;
  s->rc = uvp_delay(s->ctx, 2000, NULL, NULL, 0, &d);
  if (s->rc == 0) {
    s->rc = uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static void test_group_spawn_deadline(void **state) {
  fixture_t *f = *state;
  static spawned_t s;
  s = (spawned_t){f->ctx, 0, 1};
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  uvp_fiber_opts_t fo = {0, NULL, 20};
  assert_int_equal(uvp_group_spawn(g, spawned_body, &s, &fo), 0);
  assert_int_equal(uvp_group_close(g), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  uint64_t t0 = uv_hrtime();
  run_until_settled(f, join);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  assert_true(s.left <= 20);
  assert_int_equal(s.rc, UV_ETIMEDOUT);
  if (ms >= 1500)
    fail_msg("a member with a 20 ms deadline ran %llu ms",
             (unsigned long long)ms);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_cancel_one_consumer),
      QUIET_TEST(test_cancel_two_consumers),
      QUIET_TEST(test_deadline_one_consumer),
      QUIET_TEST(test_deadline_two_consumers),
      QUIET_TEST(test_join_cancel_waits),
      QUIET_TEST(test_cut_join_torn_down),
      QUIET_TEST(test_cleanup_past_deadline),
      QUIET_TEST(test_shield_errors_and_none),
      QUIET_TEST(test_group_spawn_deadline),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The fibers the live console's tests watch, shared by test-console.c
 * and e2e-console's tasks-demo.c: "worker" runs 30 ms on the CPU, then
 * parks; "root" awaits "mid", which awaits "leaf", which parks; "fan"
 * awaits uvp_promise_all of two fibers "input", which park (the async
 * stack through a combinator); parking
 * is awaiting a 600 s timer, kept in tasks_parked (pending while the
 * fiber waits) for the test to cancel.  tasks_never_runs is a call's
 * function for a target whose loop never runs.  Each takes its context
 * as its argument. */
#ifndef UVP_TEST_CONSOLE_TASKS_H
#define UVP_TEST_CONSOLE_TASKS_H

#include <uvp.h>

#define TASKS_PARKED_MAX 4
static uvp_promise_t *tasks_parked[TASKS_PARKED_MAX];
static int tasks_nparked;

static inline uvp_ret_t tasks_park(uvp_ctx_t *ctx) {
  uvp_promise_t *d;
  if (uvp_delay(ctx, 600000, NULL, NULL, 0, &d) == 0) {
    if (tasks_nparked < TASKS_PARKED_MAX)
      tasks_parked[tasks_nparked++] = d;
    (void)uvp_await(d, NULL); /* ends cancelled, as the test wants */
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static inline uvp_ret_t tasks_worker(void *arg) {
  uvp_fiber_set_name("worker");
  uint64_t end = uv_hrtime() + 30 * 1000000u;
  while (uv_hrtime() < end) {
  }
  return tasks_park(arg);
}

static inline uvp_ret_t tasks_leaf(void *arg) {
  uvp_fiber_set_name("leaf");
  return tasks_park(arg);
}

static inline uvp_ret_t tasks_spawn_and_await(uvp_ctx_t *ctx, uvp_fiber_fn fn) {
  uvp_promise_t *p;
  if (uvp_fiber_spawn(ctx, fn, ctx, NULL, &p) == 0) {
    (void)uvp_await(p, NULL); /* the leaf's end, whatever it was */
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static inline uvp_ret_t tasks_mid(void *arg) {
  uvp_fiber_set_name("mid");
  return tasks_spawn_and_await(arg, tasks_leaf);
}

static inline uvp_ret_t tasks_root(void *arg) {
  uvp_fiber_set_name("root");
  return tasks_spawn_and_await(arg, tasks_mid);
}

static inline uvp_ret_t tasks_input(void *arg) {
  uvp_fiber_set_name("input");
  return tasks_park(arg);
}

static inline uvp_ret_t tasks_fan(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_fiber_set_name("fan");
  uvp_promise_t *in[2] = {NULL, NULL}, *all;
  if (uvp_fiber_spawn(ctx, tasks_input, ctx, NULL, &in[0]) == 0 &&
      uvp_fiber_spawn(ctx, tasks_input, ctx, NULL, &in[1]) == 0 &&
      uvp_promise_all(ctx, in, 2, 0, &all) == 0) {
    (void)uvp_await(all, NULL);
    uvp_promise_release(all);
  }
  uvp_promise_release(in[0]);
  uvp_promise_release(in[1]);
  return uvp_ret_pass();
}

static inline uvp_ret_t tasks_never_runs(uvp_ctx_t *target, void *arg) {
  (void)target;
  (void)arg;
  return uvp_ret_pass();
}

#endif

/* A program for uvp-console's end-to-end test of a task's times, its
 * async stack and the stuck call's warning (test_tasks.py): it listens at
 * argv[1] and holds, parked,
 *   - fiber "worker", which ran 30 ms on the CPU before it parked;
 *   - fibers "root", "mid" and "leaf": root awaits mid, which awaits leaf,
 *     which awaits a timer;
 *   - a call into a second context whose loop is never run.
 * It prints "ready" once they are; on SIGUSR1 it prints its own task dump
 * (JSON lines) then "end of dump"; SIGTERM ends it (exit 0). */
#include <stdio.h>
#include <stdlib.h>

#include <uvp.h>

static uvp_promise_t *timers[2];

static uvp_ret_t park(uvp_ctx_t *ctx, int which) {
  uvp_promise_t *d;
  if (uvp_delay(ctx, 600000, NULL, NULL, 0, &d) == 0) {
    timers[which] = d;
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static uvp_ret_t worker(void *arg) {
  uvp_fiber_set_name("worker");
  uint64_t end = uv_hrtime() + 30 * 1000000u;
  while (uv_hrtime() < end) {
  }
  return park(arg, 0);
}

static uvp_ret_t leaf(void *arg) {
  uvp_fiber_set_name("leaf");
  return park(arg, 1);
}

static uvp_ret_t spawn_and_await(uvp_ctx_t *ctx, uvp_fiber_fn fn) {
  uvp_promise_t *p;
  if (uvp_fiber_spawn(ctx, fn, ctx, NULL, &p) == 0) {
    (void)uvp_await(p, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static uvp_ret_t mid(void *arg) {
  uvp_fiber_set_name("mid");
  return spawn_and_await(arg, leaf);
}

static uvp_ret_t root(void *arg) {
  uvp_fiber_set_name("root");
  return spawn_and_await(arg, mid);
}

static uvp_ret_t never_runs(uvp_ctx_t *target, void *arg) {
  (void)target;
  (void)arg;
  return uvp_ret_pass();
}

typedef struct demo_s {
  uvp_ctx_t *ctx, *other;
  uv_signal_t usr1, term;
  uvp_promise_t *fibers[2], *call;
} demo_t;

static void on_usr1(uv_signal_t *s, int signum) {
  demo_t *d = s->data;
  (void)signum;
  uvp_dump_opts_t o = {.flags = UVP_DUMP_JSON, .stream = stdout};
  if (uvp_ctx_dump_tasks(d->ctx, &o) < 0)
    fprintf(stderr, "tasks-demo: the dump failed\n");
  printf("end of dump\n");
  fflush(stdout);
}

static void on_term(uv_signal_t *s, int signum) {
  demo_t *d = s->data;
  (void)signum;
  uv_close((uv_handle_t *)&d->usr1, NULL);
  uv_close((uv_handle_t *)&d->term, NULL);
  for (int i = 0; i < 2; i++)
    if (timers[i] != NULL)
      (void)uvp_promise_cancel(timers[i]); /* pending: the fibers end */
  if (uvp_console_close(d->ctx) != 0)
    fprintf(stderr, "tasks-demo: the console was not open\n");
  /* The call's target goes: the call is answered UVP_ECLOSED. */
  if (uvp_ctx_close(d->other) != 0)
    fprintf(stderr, "tasks-demo: the target did not close\n");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: tasks-demo SOCKET\n");
    return 2;
  }
  uv_loop_t loop, idle;
  demo_t d = {0};
  if (uv_loop_init(&loop) != 0 || uv_loop_init(&idle) != 0 ||
      uvp_ctx_new(&loop, &d.ctx) != 0 || uvp_ctx_new(&idle, &d.other) != 0 ||
      uvp_console_listen(d.ctx, argv[1]) != 0 ||
      uvp_fiber_spawn(d.ctx, worker, d.ctx, NULL, &d.fibers[0]) != 0 ||
      uvp_fiber_spawn(d.ctx, root, d.ctx, NULL, &d.fibers[1]) != 0 ||
      uvp_call_start(d.ctx, d.other, never_runs, NULL, NULL, &d.call) != 0 ||
      uv_signal_init(&loop, &d.usr1) != 0 ||
      uv_signal_init(&loop, &d.term) != 0) {
    fprintf(stderr, "tasks-demo: cannot set up\n");
    return 1;
  }
  d.usr1.data = d.term.data = &d;
  if (uv_signal_start(&d.usr1, on_usr1, SIGUSR1) != 0 ||
      uv_signal_start(&d.term, on_term, SIGTERM) != 0) {
    fprintf(stderr, "tasks-demo: no signals\n");
    return 1;
  }
  uv_run(&loop, UV_RUN_NOWAIT); /* the fibers run, then park */
  printf("ready\n");
  fflush(stdout);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_run(&idle, UV_RUN_DEFAULT) != 0 || uv_loop_close(&idle) != 0;
  for (int i = 0; i < 2; i++)
    uvp_promise_release(d.fibers[i]);
  uvp_promise_release(d.call);
  rc |= uvp_ctx_close(d.ctx) != 0;
  uv_run(&loop, UV_RUN_DEFAULT);
  rc |= uv_loop_close(&loop) != 0;
  return rc;
}

/* A program for uvp-console's end-to-end test of a task's times, its
 * async stack and the stuck call's warning (test_tasks.py): it listens at
 * argv[1] and holds, parked (the fibers of test/console-tasks.h),
 *   - fiber "worker", which ran 30 ms on the CPU before it parked;
 *   - fibers "root", "mid" and "leaf": root awaits mid, which awaits leaf,
 *     which awaits a timer;
 *   - fiber "fan", which awaits uvp_promise_all of two fibers "input",
 *     each awaiting a timer;
 *   - a call into a second context whose loop is never run.
 * It prints "ready" once they are; on SIGUSR1 it prints its own task dump
 * (JSON lines) then "end of dump"; SIGTERM ends it (exit 0). */
#include <stdio.h>
#include <stdlib.h>

#include <uvp.h>

#include "../console-tasks.h"

typedef struct demo_s {
  uvp_ctx_t *ctx, *other;
  uv_signal_t usr1, term;
  uvp_promise_t *fibers[3], *call;
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
  for (int i = 0; i < tasks_nparked; i++)
    if (uvp_promise_cancel(tasks_parked[i]) != 0) /* their fibers end */
      fprintf(stderr, "tasks-demo: a timer was not pending\n");
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
      uvp_fiber_spawn(d.ctx, tasks_worker, d.ctx, NULL, &d.fibers[0]) != 0 ||
      uvp_fiber_spawn(d.ctx, tasks_root, d.ctx, NULL, &d.fibers[1]) != 0 ||
      uvp_fiber_spawn(d.ctx, tasks_fan, d.ctx, NULL, &d.fibers[2]) != 0 ||
      uvp_call_start(d.ctx, d.other, tasks_never_runs, NULL, NULL, &d.call) !=
          0 ||
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
  for (int i = 0; i < 3; i++)
    uvp_promise_release(d.fibers[i]);
  uvp_promise_release(d.call);
  rc |= uvp_ctx_close(d.ctx) != 0;
  uv_run(&loop, UV_RUN_DEFAULT);
  rc |= uv_loop_close(&loop) != 0;
  return rc;
}

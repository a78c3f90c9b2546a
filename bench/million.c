/* N tasks suspended at once, each awaiting its own timer, then joined
 * (bench/run-million): what a parked task costs.
 *
 *   fiber    N fibers, each awaiting its own uvp_delay(MS), joined with
 *            uvp_promise_all over their promises;
 *   compact  the same with the context in the compact fiber mode
 *            (uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT));
 *   promise  N uvp_delay(MS) promises, each with a handler (the task's
 *            continuation) whose promise is the task's, joined likewise;
 *   delay    N uvp_delay(MS) promises, the tasks themselves (the
 *            million-delays run: what a timer costs, issue 57), joined
 *            likewise.
 *
 * bench/million.js is the same in Node.  Prints one line: the resident set
 * before the tasks (after one task of the kind ran, so that the context's
 * first slabs and stacks exist), the peak (VmHWM) at the end, their
 * difference per task, VmPTE and the resident set once every task waits
 * and its growth per task (waiting_bytes_per_task: the tasks alone,
 * without the join's share),
 * the time to start them all (until every one waits), the whole run's,
 * and how late the run ended: its end less MS after the last task began
 * to wait (late_ms: firing the timers, resuming and ending the tasks, the
 * join, giving stacks back).
 * The guard of the fibers' stacks is the process's (UVP_FIBER_GUARD=
 * fallback forces the fallback).
 * Usage: million fiber|compact|promise|delay [N] [MS]
 *   (defaults 1000000, 10000), e.g. `build-bench/bench/million delay
 *   1000000 2000` for the million-delays figure
 * (docs/internals/fibers-2.md 13.10). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "fiber-common.h"
#include "uvp.h"

static uvp_ctx_t *ctx;
static uint64_t ms;
static size_t waiting, done, bad;

/* A field of /proc/self/status in KiB (-1 if missing). */
static long status_kb(const char *name) {
  char line[256];
  size_t len = strlen(name);
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, name, len) == 0 && line[len] == ':') {
      kb = strtol(line + len + 1, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

static uvp_ret_t task(void *arg) {
  uvp_promise_t *d;
  (void)arg;
  int rc = uvp_delay(ctx, ms, NULL, NULL, 0, &d);
  if (rc != 0) {
    bad++;
    return uvp_ret_reject(rc, NULL, NULL);
  }
  waiting++;
  rc = uvp_await(d, NULL);
  uvp_promise_release(d);
  bad += rc != 0;
  done++;
  return uvp_ret_pass();
}

static uvp_ret_t continuation(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  bad += in->status != 0;
  done++;
  return uvp_ret_pass();
}

static int delays; /* kind delay */

static int start(int fibers, uvp_promise_t **out) {
  if (fibers)
    return uvp_fiber_spawn(ctx, task, NULL, NULL, out);
  uvp_promise_t *d;
  int rc = uvp_delay(ctx, ms, NULL, NULL, 0, &d);
  if (rc != 0)
    return rc;
  if (delays) {
    *out = d;
    waiting++;
    done++; /* the join being fulfilled says that it settled */
    return 0;
  }
  rc = uvp_promise_then(d, continuation, NULL, out);
  uvp_promise_release(d);
  waiting += rc == 0;
  return rc;
}

int main(int argc, char **argv) {
  const char *kind = argc > 1 ? argv[1] : "fiber";
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
  ms = argc > 3 ? strtoull(argv[3], NULL, 10) : 10000;
  delays = strcmp(kind, "delay") == 0;
  int fibers = strcmp(kind, "promise") != 0 && !delays;
  uv_loop_t loop;
  uvp_promise_t *warm, *all;
  if (n == 0 ||
      (fibers && strcmp(kind, "fiber") != 0 && strcmp(kind, "compact") != 0)) {
    fprintf(stderr, "usage: %s fiber|compact|promise|delay [N] [MS]\n",
            argv[0]);
    return 2;
  }
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  if (strcmp(kind, "compact") == 0 &&
      uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0)
    return 1;
  /* One task of the kind first, so that what the context makes once is
   * not counted per task. */
  uint64_t keep = ms;
  ms = 0;
  if (start(fibers, &warm) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_promise_release(warm);
  ms = keep;
  waiting = done = 0;

  uvp_promise_t **ps = malloc(n * sizeof(*ps));
  if (ps == NULL)
    return 1;
  long rss0 = status_kb("VmRSS");
  uint64_t t0 = bench_now_ns();
  for (size_t i = 0; i < n; i++) {
    int rc = start(fibers, &ps[i]);
    if (rc != 0) {
      fprintf(stderr, "task %zu: %s\n", i, uvp_strerror(rc));
      return 1;
    }
  }
  /* Fibers start from the run queue: turn the loop until all wait. */
  while (waiting < n && bad == 0)
    uv_run(&loop, UV_RUN_NOWAIT);
  uint64_t t1 = bench_now_ns();
  long pte = status_kb("VmPTE"), rss_waiting = status_kb("VmRSS");
  if (uvp_promise_all(ctx, ps, n, 0, &all) != 0)
    return 1;
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(ps[i]);
  free(ps);
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t2 = bench_now_ns();
  bad += uvp_promise_state(all) != UVP_FULFILLED || done != n;
  uvp_promise_release(all);
  long hwm = status_kb("VmHWM");
  printf("uvp million kind=%s n=%zu ms=%llu ok=%d rss0_kb=%ld peak_kb=%ld "
         "bytes_per_task=%.0f waiting_rss_kb=%ld waiting_bytes_per_task=%.0f "
         "pte_kb=%ld start_ms=%.0f wall_ms=%.0f late_ms=%.0f\n",
         kind, n, (unsigned long long)ms, bad == 0, rss0, hwm,
         (double)(hwm - rss0) * 1024.0 / (double)n, rss_waiting,
         (double)(rss_waiting - rss0) * 1024.0 / (double)n, pte,
         (double)(t1 - t0) / 1e6, (double)(t2 - t0) / 1e6,
         (double)(t2 - t1) / 1e6 - (double)ms);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return bad == 0 ? 0 : 1;
}

/* The task dump at scale (issue 44): N live tasks, then each mode of
 * uvp_ctx_dump_tasks timed over R rounds.
 *
 *   mixed   N tasks of four kinds, a quarter each: fibers (compact mode,
 *           so a million fit) awaiting their own uvp_delay; promises the
 *           program settles, with a handler; uvp_delay promises with a
 *           handler; members of one group (promises the program settles);
 *   delays  N uvp_delay promises with a handler each (the figure the
 *           issue started from: the pending listing's over a million).
 *
 * For each mode (summary; full text; full JSON lines; and the listing of
 * every pending promise, UVP_DUMP_PROMISES) the output goes to /dev/null
 * through a FILE * (as a program would write it), and the line prints the
 * median, min and max of the rounds in ms, with the full modes' rate in
 * tasks and MB a second.
 *
 * Usage: dump [mixed|delays] [N] [R]   (defaults mixed, 1000000, 5) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "uvp.h"

static uvp_ctx_t *ctx;

static uvp_ret_t parked(void *arg) {
  uvp_promise_t *d;
  if (uvp_delay(ctx, 600000 + (uint64_t)(uintptr_t)arg, NULL, NULL, 0, &d) ==
      0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static uvp_ret_t ignore(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

static FILE *null;
static size_t bytes;

/* The full modes' sink: /dev/null, counting the bytes. */
static int count_bytes(void *arg, const char *text, size_t len) {
  (void)arg;
  bytes += len;
  return fwrite(text, 1, len, null) == len ? 0 : UV_EIO;
}

typedef struct mode_s {
  const char *name;
  int flags;
} mode_t_;

int main(int argc, char **argv) {
  int delays = argc > 1 && strcmp(argv[1], "delays") == 0;
  if (argc > 1 && !delays && strcmp(argv[1], "mixed") != 0) {
    fprintf(stderr, "usage: dump [mixed|delays] [N] [R]\n");
    return 2;
  }
  uint32_t n = bench_arg_n(argc, argv, 2, 1000000);
  int rounds = argc > 3 ? atoi(argv[3]) : 5;
  if (rounds < 1 || rounds > 100)
    rounds = 5;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0)
    return 1;
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  uvp_group_t *g;
  if (ps == NULL || uvp_group_new(ctx, NULL, &g) != 0)
    return 1;
  uint64_t t0 = uv_hrtime();
  for (uint32_t i = 0; i < n; i++) {
    int k = delays ? 2 : (int)(i % 4), rc = 0;
    uvp_promise_t *d;
    switch (k) {
    case 0:
      rc = uvp_fiber_spawn(ctx, parked, (void *)(uintptr_t)i, NULL, &ps[i]);
      break;
    case 1:
      rc = uvp_promise_new(ctx, &ps[i]);
      if (rc == 0)
        rc = uvp_promise_on(ps[i], UVP_ON_BOTH, ignore, NULL, NULL);
      break;
    case 2:
      rc = uvp_delay(ctx, 600000 + (uint64_t)i, NULL, NULL, 0, &d);
      if (rc == 0) {
        rc = uvp_promise_on(d, UVP_ON_BOTH, ignore, NULL, NULL);
        ps[i] = d;
      }
      break;
    default:
      rc = uvp_promise_new(ctx, &ps[i]);
      if (rc == 0)
        rc = uvp_group_add(g, ps[i]);
      break;
    }
    if (rc != 0) {
      fprintf(stderr, "dump: task %u: %s\n", i, uvp_strerror(rc));
      return 1;
    }
  }
  uv_run(&loop, UV_RUN_NOWAIT); /* the fibers start and park */
  double setup_ms = (double)(uv_hrtime() - t0) / 1e6;

  null = fopen("/dev/null", "w");
  if (null == NULL)
    return 1;
  static const mode_t_ modes[] = {{"summary", UVP_DUMP_SUMMARY},
                                  {"full text", 0},
                                  {"full JSON", UVP_DUMP_JSON},
                                  {"promises", UVP_DUMP_PROMISES}};
  printf("dump %s: %u tasks (set up in %.0f ms), %d rounds each\n",
         delays ? "delays" : "mixed", n, setup_ms, rounds);
  for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
    double ms[100];
    int tasks = 0;
    for (int r = 0; r < rounds; r++) {
      bytes = 0;
      uvp_dump_opts_t o = {modes[m].flags, null, NULL, NULL, 0};
      if (modes[m].flags == 0 || modes[m].flags == UVP_DUMP_JSON)
        o.write = count_bytes;
      uint64_t s = uv_hrtime();
      tasks = uvp_ctx_dump_tasks(ctx, &o);
      ms[r] = (double)(uv_hrtime() - s) / 1e6;
      if (tasks < 0) {
        fprintf(stderr, "dump: %s: %s\n", modes[m].name, uvp_strerror(tasks));
        return 1;
      }
    }
    double lo = ms[0], hi = ms[0];
    for (int r = 1; r < rounds; r++) {
      lo = ms[r] < lo ? ms[r] : lo;
      hi = ms[r] > hi ? ms[r] : hi;
    }
    double med = bench_median(ms, rounds);
    printf("  %-13s %8d tasks  median %7.1f ms (%.1f-%.1f)", modes[m].name,
           tasks, med, lo, hi);
    if (bytes > 0)
      printf("  %5.2f M tasks/s, %6.1f MB/s, %zu bytes", tasks / med / 1e3,
             (double)bytes / med / 1e3, bytes);
    printf("\n");
  }
  fclose(null);
  /* Teardown: every task rejects with UVP_ECLOSED, then the loop closes. */
  uvp_group_release(g);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (uint32_t i = 0; i < n; i++)
    uvp_promise_release(ps[i]);
  free(ps);
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}

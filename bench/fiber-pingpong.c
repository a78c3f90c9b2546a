/* Two fibers handing a step back and forth through promises, and the floor
 * under it.
 *
 * Ping-pong: fibers A and B each run N iterations; in each, the fiber
 * creates a pending promise of its own, resolves the other fiber's pending
 * promise (the one that fiber is suspended on), then awaits its own, still
 * pending: every await suspends, and is woken by the other fiber.  So a
 * round (one iteration of each) is two awaits, two promises, two settles
 * and two trips through uvp's run queue.  bench/fiber-pingpong.js is the
 * same with two async functions in Node.
 *
 * Floor: what one await cannot do without, measured in the same process:
 * one switch pair (into a fiber and back, src/fiber-switch.h directly: a
 * ping-pong of two contexts) plus one settle (uvp_promise_new,
 * uvp_promise_resolve, uvp_promise_release, in a loop).
 *
 * REPS repetitions of the three measurements interleaved, after a warm-up;
 * prints their medians on one line, in ns:
 *   per_await  the ping-pong's time over its 2N awaits
 *   per_round  the same over its N rounds
 *   switch, settle, floor (= switch + settle), floor_ratio (per_await over
 *   floor)
 * With "compact" after them, the two fibers run in the compact mode
 * (uvp_ctx_set_fiber_mode): each await then copies one fiber's frames out
 * and the other's back in.
 * Usage: fiber-pingpong [N] [REPS] [compact]   (defaults 1000000 and 5) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "fiber-common.h"
#include "recorder-probe.h"
#include "uvp.h"

#include "../src/fiber-stack.h"

#define MAX_REPS 101

/* ---- the ping-pong ------------------------------------------------------- */

static uvp_ctx_t *ctx;
static uvp_promise_t *pa, *pb; /* each fiber's current pending promise */
static size_t steps, awaits, bad;

static uvp_ret_t fiber_a(void *arg) {
  (void)arg;
  for (size_t i = 0; i < steps; i++) {
    if (uvp_promise_new(ctx, &pa) != 0) {
      bad++;
      break;
    }
    if (pb != NULL && uvp_promise_resolve(pb, NULL, NULL) != 0)
      bad++;
    bad += uvp_await(pa, NULL) != 0;
    awaits++;
    uvp_promise_release(pa);
    pa = NULL;
  }
  /* B waits for its last step. */
  if (pb != NULL && uvp_promise_resolve(pb, NULL, NULL) != 0)
    bad++;
  return uvp_ret_pass();
}

static uvp_ret_t fiber_b(void *arg) {
  (void)arg;
  for (size_t i = 0; i < steps; i++) {
    if (uvp_promise_new(ctx, &pb) != 0) {
      bad++;
      break;
    }
    if (pa == NULL || uvp_promise_resolve(pa, NULL, NULL) != 0)
      bad++;
    bad += uvp_await(pb, NULL) != 0;
    awaits++;
    uvp_promise_release(pb);
    pb = NULL;
  }
  return uvp_ret_pass();
}

/* ns per await of a ping-pong of n rounds. */
static double pingpong(uv_loop_t *loop, size_t n) {
  uvp_promise_t *a, *b;
  steps = n;
  awaits = 0;
  pa = pb = NULL;
  uint64_t t0 = bench_now_ns();
  if (uvp_fiber_spawn(ctx, fiber_a, NULL, NULL, &a) != 0 ||
      uvp_fiber_spawn(ctx, fiber_b, NULL, NULL, &b) != 0)
    exit(1);
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = bench_now_ns();
  bad += awaits != 2 * n || uvp_promise_state(a) != UVP_FULFILLED ||
         uvp_promise_state(b) != UVP_FULFILLED;
  uvp_promise_release(a);
  uvp_promise_release(b);
  return (double)(t1 - t0) / (double)(2 * n);
}

/* ---- the floor: a switch pair (fiber-common.h) plus a settle ------------- */

/* ns per settle: create, resolve, release.  Another promise stays alive
 * meanwhile, as the fibers' own do through the ping-pong: with none, each
 * release would empty the context's pool, which then rewinds (alloc.h),
 * a cost the ping-pong never pays. */
static double settles(size_t n) {
  uvp_promise_t *p, *keep;
  if (uvp_promise_new(ctx, &keep) != 0)
    exit(1);
  uint64_t t0 = bench_now_ns();
  for (size_t i = 0; i < n; i++) {
    if (uvp_promise_new(ctx, &p) != 0)
      exit(1);
    bad += uvp_promise_resolve(p, NULL, NULL) != 0;
    uvp_promise_release(p);
  }
  uint64_t t1 = bench_now_ns();
  uvp_promise_release(keep);
  return (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  double per_await[MAX_REPS], sw[MAX_REPS], st[MAX_REPS], fl[MAX_REPS];
  uvp__stack_pool_t pool;
  uvp__stack_t *stack;
  uv_loop_t loop;
  if (n == 0 || reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "usage: %s [N] [REPS <= %d]\n", argv[0], MAX_REPS);
    return 2;
  }
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  /* UVP_BENCH_STALL_MS=N: the stall detector on at N ms, for its cost
   * (docs/internals/diagnostics.md, "The stall detector"). */
  const char *stall_ms = getenv("UVP_BENCH_STALL_MS");
  if (stall_ms != NULL &&
      uvp_ctx_set_stall(ctx, strtoull(stall_ms, NULL, 10), NULL, NULL) != 0)
    return 1;
  if (bench_recorder(ctx) != 0)
    return 1;
  /* UVP_BENCH_CONSOLE=PATH: the live console listening there (no client):
   * every fiber switch then reads the clock for the fibers' busy times. */
  const char *console = getenv("UVP_BENCH_CONSOLE");
  if (console != NULL && uvp_console_listen(ctx, console) != 0)
    return 1;
  int compact = argc > 3 && strcmp(argv[3], "compact") == 0;
  if (compact && uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0)
    return 1;
  uvp__stack_pool_init(&pool, 0);
  if (uvp__stack_get(&pool, 0, &stack) != 0)
    return 1;
  bench_pair_init(stack->base, stack->size);

  /* Warm-up: stacks, slabs and caches touched once. */
  (void)pingpong(&loop, 10000);
  (void)bench_pair_ns(10000);
  (void)settles(10000);
  for (int r = 0; r < reps; r++) {
    per_await[r] = pingpong(&loop, n);
    sw[r] = bench_pair_ns(2 * n);
    st[r] = settles(2 * n);
    fl[r] = sw[r] + st[r];
  }
  double m = bench_median(per_await, reps), f = bench_median(fl, reps);
  printf("uvp fiber-pingpong n=%zu reps=%d mode=%s ok=%d per_await=%.1f "
         "per_round=%.1f switch=%.1f settle=%.1f floor=%.1f "
         "floor_ratio=%.2f\n",
         n, reps, compact ? "compact" : "default", bad == 0, m, 2 * m,
         bench_median(sw, reps), bench_median(st, reps), f, m / f);

  /* The floor's fiber stays suspended for good: its stack goes back. */
  uvp__fiber_destroy(&bench_pair_fib);
  uvp__stack_put(&pool, stack);
  uvp__stack_pool_close(&pool);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return bad == 0 ? 0 : 1;
}

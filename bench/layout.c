/* The then workload of core-then (create, register one then, resolve, for
 * N promises; then the drain), with its two phases timed apart, built by
 * bench/run-layout once per link layout: BENCH_CODE_PAD bytes of code and
 * BENCH_DATA_PAD bytes of data in front of libuvp.a's in the executable.
 * The same library code then runs at other addresses, so a figure that
 * moves with the padding belongs to the placement, not to the code
 * (docs/internals/core.md §12).
 * Prints one line: the medians over rounds 2..R of ns per promise for the
 * creation loop and for the drain.
 * Usage: layout [N] [--derived] [--rounds=R]   (defaults 1000000, 7) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "uvp.h"

#ifndef BENCH_CODE_PAD
#define BENCH_CODE_PAD 0
#endif
#ifndef BENCH_DATA_PAD
#define BENCH_DATA_PAD 0
#endif
#define BENCH_STR2(x) #x
#define BENCH_STR(x) BENCH_STR2(x)

/* Never called: they only take room, in .text and .data, ahead of the
 * library's. */
__attribute__((used)) char bench_data_pad[BENCH_DATA_PAD + 1] = {1};
__attribute__((used)) void bench_code_pad(void) {
  __asm__ volatile(".fill " BENCH_STR(BENCH_CODE_PAD) ",1,0x90");
}

typedef struct {
  uint64_t ran, sum;
} count_t;

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  count_t *c = arg;
  c->ran++;
  c->sum += (uintptr_t)in->value;
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uint32_t n = bench_arg_n(argc, argv, 1, 1000000);
  int derived = 0, rounds = 7;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--derived") == 0)
      derived = 1;
    else if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }
  if (rounds < 2)
    return fprintf(stderr, "--rounds must be at least 2\n"), 2;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  count_t c = {0, 0};
  double create[BENCH_MAX_ROUNDS], drain[BENCH_MAX_ROUNDS];
  for (int r = 0; r < rounds; r++) {
    uint64_t t0 = uv_hrtime();
    for (uint32_t i = 0; i < n; i++) {
      uvp_promise_t *p, *d;
      if (uvp_promise_new(ctx, &p) != 0 ||
          uvp_promise_then(p, on_value, &c, derived ? &d : NULL) != 0 ||
          uvp_promise_resolve(p, (void *)(uintptr_t)i, NULL) != 0)
        return 1;
      uvp_promise_release(p);
      if (derived)
        uvp_promise_release(d);
    }
    uint64_t t1 = uv_hrtime();
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t t2 = uv_hrtime();
    create[r] = (double)(t1 - t0) / n;
    drain[r] = (double)(t2 - t1) / n;
  }
  int ok = c.ran == (uint64_t)rounds * n &&
           c.sum == (uint64_t)rounds * ((uint64_t)n * (n - 1) / 2);
  printf("name=layout impl=uvp%s n=%u ok=%d code_pad=%d data_pad=%d "
         "create_ns=%.1f drain_ns=%.1f\n",
         derived ? "-derived" : "", n, ok, BENCH_CODE_PAD, BENCH_DATA_PAD,
         bench_median(create + 1, rounds - 1),
         bench_median(drain + 1, rounds - 1));
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 && ok ? 0 : 1;
}

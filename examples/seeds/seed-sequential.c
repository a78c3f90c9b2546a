/* Seed 6: await in a loop (sequential) against a parallel fan-out.
 *
 *   for (const path of paths) results.push(await fetch(path)); // one by one
 *   const results = await Promise.all(paths.map(fetch));       // all at once
 *
 * "Running independent async ops in parallel instead of sequentially can
 * cut total time from the sum of latencies to the max."  Four GETs of the
 * demo server, /slow (300 ms), /trickle (~200 ms), /fast and /slow again,
 * are made both ways; the program prints the sum and the max of their
 * latencies next to the time each way took, and the ratio.
 *
 *   seed-sequential fibers|handlers */
#include <stdio.h>

#include "seed.h"

enum { N = 4 };
static const char *const paths[N] = {"/slow", "/trickle", "/fast", "/slow"};

static void fetch_all(seed_t *s, uvp_promise_t **results) {
  for (size_t i = 0; i < N; i++)
    must(seed_fetch(s, 0, paths[i], &results[i]));
}

/* Print the responses and the times; returns the time taken. */
static double report(const char *how, uvp_promise_t **results, uint64_t start) {
  double ms = seed_ms_since(start), sum = 0, max = 0;
  printf("%s:", how);
  for (size_t i = 0; i < N; i++) {
    void *value = NULL;
    int status = uvp_promise_reason(results[i], &value);
    const httpc_response_t *res = uvp_promise_value(results[i]);
    char what[64];
    printf("%s %s", i > 0 ? "," : "",
           seed_describe(status, status ? value : res, what, sizeof(what)));
    if (res != NULL) {
      double latency = (double)res->latency_us / 1000;
      sum += latency;
      max = latency > max ? latency : max;
    }
    uvp_promise_release(results[i]);
    results[i] = NULL;
  }
  printf("\ntiming: %s took %.1f ms; latencies: sum %.1f ms, max %.1f ms\n",
         how, ms, sum, max);
  return ms;
}

static void compare(double sequential_ms, double parallel_ms) {
  printf("timing: parallel took %.2f of the sequential time (%.1fx faster)\n",
         parallel_ms / sequential_ms, sequential_ms / parallel_ms);
}

/* ==== with fibers ======================================================== */

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  uvp_promise_t *results[N], *all;

  uint64_t start = seed_start(s);
  for (size_t i = 0; i < N; i++) {
    must(seed_fetch(s, 0, paths[i], &results[i]));
    uvp_await(results[i], NULL);
  }
  double sequential_ms = report("sequential", results, start);

  start = seed_start(s);
  fetch_all(s, results);
  uvp_await_take(uvp_promise_all(s->ctx, results, N, 0, &all), &all, NULL);
  compare(sequential_ms, report("parallel", results, start));
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  uvp_promise_t *results[N];
  uint64_t start;
  double sequential_ms;
} run;

/* The loop body: uvp_promise_reduce calls it once per path, each time the
 * previous request has settled. */
static int next_request(void *arg, size_t i, const uvp_outcome_t *prev,
                        uvp_promise_t **next) {
  (void)arg;
  (void)prev;
  int rc = seed_fetch(run.s, 0, paths[i], &run.results[i]);
  if (rc == 0)
    *next = uvp_promise_retain(run.results[i]); /* reduce takes it */
  return rc;
}

static uvp_ret_t on_parallel(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  compare(run.sequential_ms, report("parallel", run.results, run.start));
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t on_sequential(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  run.sequential_ms = report("sequential", run.results, run.start);
  run.start = seed_start(run.s);
  fetch_all(run.s, run.results);
  uvp_promise_t *all;
  must(uvp_promise_all(run.s->ctx, run.results, N, 0, &all));
  must(uvp_promise_on(all, UVP_ON_BOTH | UVP_ON_TAKE, on_parallel, NULL, &all));
  return uvp_ret_adopt(all);
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  run.start = seed_start(run.s);
  uvp_promise_t *sequential;
  must(uvp_promise_reduce(s->ctx, N, next_request, NULL, NULL, &sequential));
  return uvp_promise_on(sequential, UVP_ON_BOTH | UVP_ON_TAKE, on_sequential,
                        NULL, done);
}

/* ========================================================================= */

int main(int argc, char **argv) {
  return seed_main(argc, argv, NULL, run_with_fibers, run_with_handlers);
}

/* Seed 3: Promise.all and Promise.allSettled on the same inputs.
 *
 *   const promises = [fetch('/fast'), fetch('/reset'), fetch('/slow')];
 *   try {
 *     const results = await Promise.all(promises);
 *   } catch (error) {
 *     console.log('Promise.all caught:', error.message);  // the rest is lost
 *   }
 *   const results = await Promise.allSettled(promises);   // you get everything
 *   results.forEach((r, i) => ...`  ${i}: success - ${r.value}` ...);
 *
 * all fails fast: it rejects as soon as /reset does, without waiting for
 * /slow (300 ms), and the results of /fast and /slow are lost to it.
 * allSettled waits for all three and reports each.  The inputs are shared:
 * neither combinator cancels them, as in JavaScript.
 *
 *   seed-all-vs-allsettled fibers|handlers */
#include <stdio.h>

#include "seed.h"

enum { N = 3 };
static const char *const paths[N] = {"/fast", "/reset", "/slow"};

static void fetch_all(seed_t *s, uvp_promise_t **promises) {
  for (size_t i = 0; i < N; i++)
    must(seed_fetch(s, 0, paths[i], &promises[i]));
}

static void report_all(const uvp_outcome_t *o) {
  char why[64];
  if (o->status != 0)
    printf("Promise.all caught: %s\n",
           seed_describe(o->status, o->value, why, sizeof(why)));
  else
    printf("Promise.all: %zu results\n",
           ((const uvp_values_t *)o->value)->count);
}

static void report_settled(const uvp_settled_list_t *results, double all_ms,
                           double settled_ms) {
  printf("Promise.allSettled results:\n");
  for (size_t i = 0; i < results->count; i++) {
    const uvp_settled_t *r = &results->items[i];
    char what[64];
    printf("  %zu: %s - %s\n", i, r->status == 0 ? "success" : "failed",
           seed_describe(r->status, r->value, what, sizeof(what)));
  }
  printf("timing: Promise.all settled after %.1f ms, "
         "Promise.allSettled after %.1f ms\n",
         all_ms, settled_ms);
}

/* ==== with fibers ======================================================== */

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  uint64_t start = seed_start(s);
  uvp_promise_t *promises[N], *all, *settled;
  fetch_all(s, promises);

  uvp_outcome_t o; /* the try/catch: o says which */
  uvp_await_take(uvp_promise_all(s->ctx, promises, N, 0, &all), &all, &o);
  report_all(&o);
  double all_ms = seed_ms_since(start);

  if (uvp_await_take(uvp_promise_all_settled_ex(s->ctx, promises, N,
                                                UVP_TAKE_INPUTS, &settled),
                     &settled, &o) == 0) /* the inputs' last use: taken */
    report_settled(o.value, all_ms, seed_ms_since(start));
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  uint64_t start;
  double all_ms;
  uvp_promise_t *promises[N];
} run;

static uvp_ret_t on_settled(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  report_settled(in->value, run.all_ms, seed_ms_since(run.start));
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t on_all(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  report_all(in);
  run.all_ms = seed_ms_since(run.start);
  uvp_promise_t *p; /* allSettled, the inputs' last use, takes them */
  must(uvp_promise_all_settled_ex(run.s->ctx, run.promises, N, UVP_TAKE_INPUTS,
                                  &p));
  must(uvp_promise_then_take(p, on_settled, NULL, &p));
  return uvp_ret_adopt(p);
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  run.start = seed_start(run.s);
  fetch_all(s, run.promises);
  uvp_promise_t *all;
  must(uvp_promise_all(s->ctx, run.promises, N, 0, &all));
  return uvp_promise_on(all, UVP_ON_BOTH | UVP_ON_TAKE, on_all, NULL, done);
}

/* ========================================================================= */

int main(int argc, char **argv) {
  return seed_main(argc, argv, NULL, run_with_fibers, run_with_handlers);
}

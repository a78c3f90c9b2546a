/* Seed 4: Promise.race as a timeout.
 *
 *   const timeout = ms => new Promise((_, reject) =>
 *     setTimeout(() => reject(new Error('timeout')), ms));
 *   const data = await Promise.race([fetchData(), timeout(5000)]);
 *
 * fetchData is a GET of /slow (answered after 300 ms) or /hang (never
 * answered), raced against timeouts of 1000 and 100 ms.  Unlike
 * JavaScript, which lets the loser run on, UVP_CANCEL_LOSERS cancels it:
 * a request that timed out closes its connection, a timeout that lost
 * stops its timer.  (uvp_timeout(p, ms, 0, &out) is this race in one
 * call.)
 *
 * On uvp's virtual clock (a third argument, virtual-clock) it prints the
 * same: every wait here has a request in flight, and the clock does not
 * jump over one (uvp_ctx_set_clock), so the 300 ms reply still beats the
 * 1000 ms timeout and loses to the 100 ms one.
 *
 *   seed-race-timeout fibers|handlers [virtual-clock] */
#include <stdio.h>

#include "seed.h"

enum { NCASES = 3 };
static const struct {
  const char *path;
  uint64_t ms;
} cases[NCASES] = {{"/slow", 1000}, {"/slow", 100}, {"/hang", 100}};

static uvp_ret_t time_is_up(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_reject(UV_ETIMEDOUT, NULL, NULL);
}

/* timeout(ms) */
static int timeout(seed_t *s, uint64_t ms, uvp_promise_t **out) {
  uvp_promise_t *timer;
  int rc = uvp_delay(s->ctx, ms, NULL, NULL, 0, &timer);
  return rc != 0 ? rc : uvp_promise_then_take(timer, time_is_up, NULL, out);
}

/* Start Promise.race([fetchData(), timeout(ms)]) of case i. */
static int start_race(seed_t *s, int i, uvp_promise_t **racers,
                      uvp_promise_t **winner) {
  must(seed_fetch(s, 0, cases[i].path, &racers[0]));
  must(timeout(s, cases[i].ms, &racers[1]));
  return uvp_promise_race(s->ctx, racers, 2, UVP_CANCEL_LOSERS, winner);
}

static void report(int i, const uvp_outcome_t *o, uvp_promise_t **racers,
                   double ms) {
  static const char *const names[2] = {"fetch", "timeout"};
  char what[64];
  printf("race([fetch %s, timeout(%d)]): %s", cases[i].path, (int)cases[i].ms,
         seed_describe(o->status, o->value, what, sizeof(what)));
  for (int k = 0; k < 2; k++) {
    if (uvp_promise_reason(racers[k], NULL) == UV_ECANCELED)
      printf(" (%s cancelled)", names[k]);
    uvp_promise_release(racers[k]);
  }
  printf("\ntiming: case %d settled after %.1f ms\n", i + 1, ms);
}

/* ==== with fibers ======================================================== */

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  for (int i = 0; i < NCASES; i++) {
    uint64_t start = seed_start(s);
    uvp_promise_t *racers[2], *winner;
    uvp_outcome_t o;
    uvp_await_take(start_race(s, i, racers, &winner), &winner, &o);
    report(i, &o, racers, seed_ms_since(start));
  }
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  uint64_t start;
  uvp_promise_t *racers[2];
} run;

static uvp_ret_t on_winner(void *arg, const uvp_outcome_t *in) {
  int i = (int)(intptr_t)arg;
  report(i, in, run.racers, seed_ms_since(run.start));
  return uvp_ret_value(NULL, NULL);
}

/* The loop's body: uvp_promise_reduce calls it for case i once case i - 1
 * has been reported. */
static int next_case(void *arg, size_t i, const uvp_outcome_t *prev,
                     uvp_promise_t **next) {
  (void)arg;
  (void)prev;
  uvp_promise_t *winner;
  run.start = seed_start(run.s);
  must(start_race(run.s, (int)i, run.racers, &winner));
  return uvp_promise_on(winner, UVP_ON_BOTH | UVP_ON_TAKE, on_winner,
                        (void *)(intptr_t)i, next);
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  return uvp_promise_reduce(s->ctx, NCASES, next_case, NULL, NULL, done);
}

/* ========================================================================= */

int main(int argc, char **argv) {
  return seed_main(argc, argv, NULL, run_with_fibers, run_with_handlers);
}

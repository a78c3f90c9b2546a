/* Seed 2: a dashboard of independent cards; the failed ones are retried.
 *
 *   const results = await Promise.allSettled(cardLoaders.map(load => load()));
 *   const cards = results.map((r, i) =>
 *     r.status === "fulfilled"
 *       ? { ok: true, data: r.value }
 *       : { ok: false, error: r.reason, retryFn: cardLoaders[i] });
 *   // render each card; retry where it failed
 *
 * Each card is a GET.  The news service is down at first (nothing listens
 * on its port: ECONNREFUSED) and comes back before the retry; the ads
 * service answers 500 every time.  One failed card never blanks the
 * others, and only the failed ones are loaded again.
 *
 *   seed-dashboard fibers|handlers */
#include <stdio.h>

#include "seed.h"

enum { NCARDS = 4, ROUNDS = 2 };

static int news_port; /* where the news service listens once it is back */

static struct card_s {
  const char *name;
  int *port; /* NULL: the demo server */
  const char *path;
  int ok;
} cards[NCARDS] = {
    {"profile", NULL, "/fast", 0},
    {"news", &news_port, "/fast", 0},
    {"orders", NULL, "/slow", 0},
    {"ads", NULL, "/error", 0},
};

/* cardLoaders[i]() */
static int load_card(seed_t *s, size_t i, uvp_promise_t **out) {
  return seed_fetch(s, cards[i].port ? *cards[i].port : 0, cards[i].path, out);
}

/* Render the cards of one round (todo[k] is the card of results item k),
 * then keep in todo the ones to retry; returns how many. */
static size_t render(int round, const uvp_settled_list_t *results,
                     size_t *todo) {
  printf("round %d: %zu cards, %zu failed\n", round, results->count,
         results->rejected);
  size_t nfailed = 0;
  for (size_t k = 0; k < results->count; k++) {
    const uvp_settled_t *r = &results->items[k];
    char what[64];
    seed_describe(r->status, r->value, what, sizeof(what));
    cards[todo[k]].ok = r->status == 0;
    if (r->status == 0) {
      printf("  %s: %s\n", cards[todo[k]].name, what);
    } else {
      printf("  %s: failed (%s), retry offered\n", cards[todo[k]].name, what);
      todo[nfailed++] = todo[k];
    }
  }
  return nfailed;
}

/* Between the rounds, the outage ends. */
static void news_is_back(seed_t *s) {
  seed_serve(s, news_port);
  printf("the news service is back\n");
}

static void summary(void) {
  int shown = 0;
  for (size_t i = 0; i < NCARDS; i++)
    shown += cards[i].ok;
  printf("dashboard: %d of %d cards shown\n", shown, NCARDS);
}

/* ==== with fibers ======================================================== */

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  size_t todo[NCARDS] = {0, 1, 2, 3}, n = NCARDS;
  for (int round = 1; round <= ROUNDS && n > 0; round++) {
    if (round > 1)
      news_is_back(s);
    uvp_promise_t *loads[NCARDS], *results;
    for (size_t k = 0; k < n; k++)
      must(load_card(s, todo[k], &loads[k]));
    int rc = uvp_promise_all_settled_ex(s->ctx, loads, n, UVP_TAKE_INPUTS,
                                        &results); /* takes the loads */
    uvp_outcome_t o;
    if (uvp_await_take(rc, &results, &o) == 0)
      n = render(round, o.value, todo);
  }
  summary();
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  size_t todo[NCARDS], n;
} run;

static uvp_ret_t on_round(void *arg, const uvp_outcome_t *in) {
  run.n = render((int)(intptr_t)arg, in->value, run.todo);
  return uvp_ret_value(NULL, NULL);
}

/* The loop's body: uvp_promise_loop calls it for round i + 1 once round i
 * has been rendered, until it stops. */
static int next_round(void *arg, size_t i, const uvp_outcome_t *prev,
                      uvp_promise_t **next) {
  (void)arg;
  (void)prev;
  if (i == ROUNDS || run.n == 0) {
    summary();
    return 0; /* *next stays NULL: the loop is over */
  }
  if (i > 0)
    news_is_back(run.s);
  uvp_promise_t *loads[NCARDS], *results;
  for (size_t k = 0; k < run.n; k++)
    must(load_card(run.s, run.todo[k], &loads[k]));
  must(uvp_promise_all_settled_ex(run.s->ctx, loads, run.n, UVP_TAKE_INPUTS,
                                  &results));
  return uvp_promise_then_take(results, on_round, (void *)(intptr_t)(i + 1),
                               next);
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  run.n = NCARDS;
  for (size_t i = 0; i < NCARDS; i++)
    run.todo[i] = i;
  return uvp_promise_loop(s->ctx, next_round, NULL, done);
}

/* ========================================================================= */

static void setup(seed_t *s) {
  (void)s;
  news_port = demo_server_refused_port("127.0.0.1");
  must(news_port < 0 ? news_port : 0);
}

int main(int argc, char **argv) {
  return seed_main(argc, argv, setup, run_with_fibers, run_with_handlers);
}

/* Seed 5: Promise.any over mirrors: the first that works.
 *
 *   const file = await Promise.any([fetchFromMirror1(), fetchFromMirror2()]);
 *   // rejections are ignored until all reject: AggregateError
 *
 * The mirrors: a port nobody listens on (ECONNREFUSED), /missing (404),
 * /slow (answers after 300 ms), /fast, /reset (a reset connection).  With
 * UVP_CANCEL_LOSERS the mirrors still running once one has answered are
 * cancelled (JavaScript would let them run).  When every mirror fails,
 * any rejects with UVP_EAGGREGATE and every reason, in input order.
 *
 *   seed-any-mirrors fibers|handlers */
#include <stdio.h>

#include "seed.h"

enum { NCASES = 2, MAX_MIRRORS = 4 };

static int refused_port; /* a mirror that is down */

static const struct {
  size_t n;
  struct {
    int *port; /* NULL: the demo server */
    const char *path;
  } mirrors[MAX_MIRRORS];
} cases[NCASES] = {
    {4,
     {{&refused_port, "/fast"},
      {NULL, "/missing"},
      {NULL, "/slow"},
      {NULL, "/fast"}}},
    {2, {{&refused_port, "/fast"}, {NULL, "/reset"}}},
};

/* Start Promise.any over the mirrors of case i. */
static int start_any(seed_t *s, int i, uvp_promise_t **mirrors,
                     uvp_promise_t **first) {
  for (size_t k = 0; k < cases[i].n; k++) {
    int *port = cases[i].mirrors[k].port;
    must(
        seed_fetch(s, port ? *port : 0, cases[i].mirrors[k].path, &mirrors[k]));
  }
  return uvp_promise_any(s->ctx, mirrors, cases[i].n, UVP_CANCEL_LOSERS, first);
}

static void report(int i, const uvp_outcome_t *o, uvp_promise_t **mirrors) {
  char what[64];
  printf("case %d: ", i + 1);
  if (o->status == 0) {
    for (size_t k = 0; k < cases[i].n; k++)
      if (uvp_promise_value(mirrors[k]) == o->value)
        printf("first working mirror: %zu (%s)\n", k + 1,
               seed_describe(0, o->value, what, sizeof(what)));
    for (size_t k = 0; k < cases[i].n; k++) {
      void *value = NULL;
      int status = uvp_promise_reason(mirrors[k], &value);
      if (status == 0)
        value = uvp_promise_value(mirrors[k]);
      printf("  mirror %zu: %s\n", k + 1,
             seed_describe(status, value, what, sizeof(what)));
    }
  } else {
    printf("no mirror works (%s):", uvp_err_name(o->status));
    const uvp_settled_list_t *errors = o->value; /* AggregateError.errors */
    for (size_t k = 0; errors != NULL && k < errors->count; k++)
      printf("%s %s", k > 0 ? "," : "",
             seed_describe(errors->items[k].status, errors->items[k].value,
                           what, sizeof(what)));
    printf("\n");
  }
  for (size_t k = 0; k < cases[i].n; k++)
    uvp_promise_release(mirrors[k]);
}

/* ==== with fibers ======================================================== */

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  for (int i = 0; i < NCASES; i++) {
    uvp_promise_t *mirrors[MAX_MIRRORS], *first;
    uvp_outcome_t o;
    uvp_await_take(start_any(s, i, mirrors, &first), &first, &o);
    report(i, &o, mirrors);
  }
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  uvp_promise_t *mirrors[MAX_MIRRORS];
} run;

static uvp_ret_t on_first(void *arg, const uvp_outcome_t *in) {
  report((int)(intptr_t)arg, in, run.mirrors);
  return uvp_ret_value(NULL, NULL);
}

/* The loop's body: uvp_promise_reduce calls it for case i once case i - 1
 * has been reported. */
static int next_case(void *arg, size_t i, const uvp_outcome_t *prev,
                     uvp_promise_t **next) {
  (void)arg;
  (void)prev;
  uvp_promise_t *first;
  must(start_any(run.s, (int)i, run.mirrors, &first));
  return uvp_promise_on(first, UVP_ON_BOTH | UVP_ON_TAKE, on_first,
                        (void *)(intptr_t)i, next);
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  return uvp_promise_reduce(s->ctx, NCASES, next_case, NULL, NULL, done);
}

/* ========================================================================= */

static void setup(seed_t *s) {
  (void)s;
  refused_port = demo_server_refused_port("127.0.0.1");
  must(refused_port < 0 ? refused_port : 0);
}

int main(int argc, char **argv) {
  return seed_main(argc, argv, setup, run_with_fibers, run_with_handlers);
}

/* A pile of requests for a worker to hold, for the end-to-end tests of
 * backpressure (test-e2e-fanout-nats-pile.sh): N requests on SUBJECT, each
 * with BODY and Uvp-Timeout-Ms TIMEOUT_MS (86400000, a day, the most a
 * service accepts: nothing expires while it waits), published at once.  It
 * waits until every request but at most HELD has an answer (or 2 s pass
 * with none once all are published, or MAX_MS in all, default 60 s),
 * prints
 *   pile N busy B other O pending P answered_ms MS
 * (B answered EBUSY, O any other way, P still waiting: held by the
 * worker; MS from the first publish to the last answer), and exits with
 * its requests still pending: uvp_nats_close sends no cancel, so the
 * worker keeps what it took, as after a client that went away.
 * Usage: nats-pile URL SUBJECT N TIMEOUT_MS HELD BODY [MAX_MS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uvp-nats.h"

/* No answer for this long: the rest will not come. */
#define QUIET_NS 2000000000ull

typedef struct pile_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  size_t n, held, busy, other;
  uint64_t t0, sent, last, max_ns;
  uv_timer_t quiet;
} pile_t;

static void quiet_check(uv_timer_t *t) {
  pile_t *p = t->data;
  uint64_t now = uv_hrtime();
  bool done = p->n - p->busy - p->other <= p->held;
  /* quiet since the last answer, or since the last publish: a loaded
   * machine may take seconds to publish the pile, and the answers wait in
   * nats.c's queue until the loop runs (from t0, a pile published in more
   * than the quiet time would end before it read a single one) */
  bool stalled = now - (p->last ? p->last : p->sent) > QUIET_NS;
  if (done || stalled || now - p->t0 > p->max_ns)
    uv_stop(&p->loop);
}

static uvp_ret_t answered(void *arg, const uvp_outcome_t *in) {
  pile_t *p = arg;
  if (in->status == UV_EBUSY)
    p->busy++;
  else
    p->other++;
  p->last = uv_hrtime();
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  if (argc != 7 && argc != 8) {
    fprintf(stderr,
            "usage: nats-pile URL SUBJECT N TIMEOUT_MS HELD BODY [MAX_MS]\n");
    return 2;
  }
  uint64_t max_ms = argc == 8 ? strtoull(argv[7], NULL, 10) : 60000;
  pile_t p = {.n = strtoull(argv[3], NULL, 10),
              .held = strtoull(argv[5], NULL, 10),
              .max_ns = max_ms * 1000000};
  uvp_nats_request_opts_t ro = {.timeout_ms = strtoull(argv[4], NULL, 10),
                                .flags = UVP_NATS_REQUEST_NO_HOLD};
  const char *body = argv[6];
  uv_loop_init(&p.loop);
  uvp_nats_connect_opts_t co = {.url = argv[1]};
  if (uvp_ctx_new(&p.loop, &p.ctx) != 0 ||
      uvp_nats_open(p.ctx, &co, &p.nc) != 0)
    return 1;
  uvp_promise_t *f;
  if (uvp_nats_flush(p.nc, &f) != 0)
    return 1;
  while (uvp_promise_state(f) == UVP_PENDING)
    uv_run(&p.loop, UV_RUN_ONCE);
  int rc = uvp_promise_reason(f, NULL);
  uvp_promise_release(f);
  if (rc != 0) {
    fprintf(stderr, "nats-pile: %s: %s\n", argv[1], uvp_nats_strerror(rc));
    return 1;
  }
  p.t0 = uv_hrtime();
  for (size_t i = 0; i < p.n; i++) {
    uvp_promise_t *r;
    if (uvp_nats_request(p.nc, argv[2], body, strlen(body), &ro, &r) != 0 ||
        uvp_promise_on(r, UVP_ON_BOTH | UVP_ON_TAKE, answered, &p, NULL) != 0)
      return 1;
  }
  p.sent = uv_hrtime();
  uv_timer_init(&p.loop, &p.quiet);
  p.quiet.data = &p;
  uv_timer_start(&p.quiet, quiet_check, 10, 10);
  uv_run(&p.loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&p.quiet, NULL);
  printf("pile %zu busy %zu other %zu pending %zu answered_ms %.0f\n", p.n,
         p.busy, p.other, p.n - p.busy - p.other,
         (double)((p.last ? p.last : p.t0) - p.t0) / 1e6);
  fflush(stdout);
  uvp_nats_close(p.nc); /* the pending reject ECANCELED: no cancel sent */
  uvp_ctx_close(p.ctx);
  uv_run(&p.loop, UV_RUN_DEFAULT);
  nats_CloseAndWait(0);
  return uv_loop_close(&p.loop) == 0 ? 0 : 3;
}

/* A worker process for test-nats: serves SUBJECT in queue group QUEUE with
 * uvp_nats_serve, LIMIT requests at once (0: no limit), each in a fiber:
 *   "sleep:N"  waits N ms, then answers "done sleep:N"; a wait cut prints
 *              "cut NS CAUSE" (NS: uv_hrtime() then, the machine's
 *              monotonic clock) and rejects with the cut's code
 *   "fail"     rejects with UV_EIO (replied Uvp-Error: EIO)
 *   anything   answers "done <body>"
 * It prints "ready" once its subscription has reached the server, and on
 * SIGTERM drains within DRAIN_MS (default: no deadline; what it took is
 * still answered), on a second SIGTERM at once, then closes and exits 0,
 * after checking uv_loop_close() == 0.
 * Usage: nats-worker URL SUBJECT QUEUE LIMIT [DRAIN_MS] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uvp-nats.h"

static uvp_ctx_t *ctx;
static uvp_nats_t *nc;
static uvp_nats_svc_t *svc;
static uv_signal_t sigterm;
static uint64_t drain_ms = UVP_NO_DEADLINE;
static int terms;

static uvp_ret_t serve(void *arg) {
  uvp_nats_served_t *req = arg;
  const char *body = natsMsg_GetData(req->msg);
  if (strncmp(body, "sleep:", 6) == 0) {
    uvp_promise_t *d;
    uvp_delay(ctx, strtoull(body + 6, NULL, 10), NULL, NULL, 0, &d);
    int rc = uvp_await(d, NULL);
    if (rc != 0) {
      char why[256];
      uint64_t now = uv_hrtime();
      uvp_cause_format(uvp_promise_cause(d), why, sizeof(why));
      printf("cut %llu %s\n", (unsigned long long)now, why);
      fflush(stdout);
    }
    uvp_promise_release(d);
    if (rc != 0)
      return uvp_ret_reject(rc, NULL, NULL);
  } else if (strcmp(body, "fail") == 0) {
    return uvp_ret_reject(UV_EIO, NULL, NULL);
  }
  char *out = malloc(strlen(body) + 8);
  sprintf(out, "done %s", body);
  return uvp_ret_value(out, free);
}

static uvp_ret_t drained(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  fprintf(stderr, "nats-worker: drained (%s)\n", uvp_nats_err_name(in->status));
  svc = NULL; /* freed */
  if (!uv_is_closing((uv_handle_t *)&sigterm))
    uv_close((uv_handle_t *)&sigterm, NULL);
  uvp_nats_close(nc);
  return uvp_ret_value(NULL, NULL);
}

/* The first SIGTERM drains within drain_ms, the second at once. */
static void on_sigterm(uv_signal_t *s, int signum) {
  (void)signum;
  if (svc == NULL)
    return;
  uvp_promise_t *p, *d;
  if (uvp_nats_serve_drain_within(svc, terms++ == 0 ? drain_ms : 0, &p) != 0) {
    uv_close((uv_handle_t *)s, NULL);
    uvp_nats_close(nc);
    return;
  }
  if (terms > 1) { /* the first's handler waits for it */
    uvp_promise_release(p);
    return;
  }
  uvp_promise_on(p, UVP_ON_BOTH, drained, NULL, &d);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

static uvp_ret_t flushed(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  if (in->status != 0) {
    fprintf(stderr, "nats-worker: flush: %s\n", uvp_nats_err_name(in->status));
    exit(1);
  }
  printf("ready\n");
  fflush(stdout);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t connected(void *arg, const uvp_outcome_t *in) {
  char **argv = arg;
  if (in->status != 0) {
    fprintf(stderr, "nats-worker: connect: %s\n",
            uvp_nats_err_name(in->status));
    exit(1);
  }
  nc = in->value;
  uvp_nats_serve_opts_t o = {.fiber = serve, .limit = strtoul(argv[4], 0, 10)};
  if (uvp_nats_serve(nc, argv[2], argv[3], &o, &svc) != 0)
    exit(1);
  uvp_promise_t *p, *d;
  uvp_nats_flush(nc, &p);
  uvp_promise_on(p, UVP_ON_BOTH, flushed, NULL, &d);
  uvp_promise_release(p);
  uvp_promise_release(d);
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: nats-worker URL SUBJECT QUEUE LIMIT [DRAIN_MS]\n");
    return 2;
  }
  if (argc == 6)
    drain_ms = strtoull(argv[5], NULL, 10);
  signal(SIGPIPE, SIG_IGN); /* a test that stopped reading stdout */
  uv_loop_t loop;
  uv_loop_init(&loop);
  uvp_ctx_new(&loop, &ctx);
  uv_signal_init(&loop, &sigterm);
  uv_signal_start(&sigterm, on_sigterm, SIGTERM);
  uv_unref((uv_handle_t *)&sigterm);
  uvp_promise_t *p, *d;
  uvp_nats_connect_opts_t co = {.url = argv[1]};
  if (uvp_nats_connect(ctx, &co, &p) != 0)
    return 1;
  uvp_promise_on(p, UVP_ON_BOTH, connected, argv, &d);
  uvp_promise_release(p);
  uvp_promise_release(d);
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  nats_CloseAndWait(0);
  fprintf(stderr, "nats-worker: exit, uv_loop_close %d\n", rc);
  return rc == 0 ? 0 : 3;
}

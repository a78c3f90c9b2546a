/* A second process for test-nats-js's durable promises.
 *
 *   nats-js-helper race URL BUCKET N resolve|reject
 *     prints "ready", then for each line I it reads (0 <= I < N), in
 *     lockstep with the other racer, completes durable promise r-I of
 *     BUCKET and prints W (it won), L (UVP_ESETTLED: the other had
 *     completed it) or E (anything else); at end of input, "done".
 *   nats-js-helper create URL BUCKET ID TIMEOUT_MS
 *     creates durable promise ID and awaits it: prints "created" once the
 *     record exists, pending (not if it had completed), then its outcome
 * ("resolved DATA", "rejected NAME DATA") when it completes, and exits 0.
 *
 * Each checks uv_loop_close() == 0 at the end (exit 3 otherwise). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uvp-nats-js.h"

static uvp_ctx_t *ctx;
static uvp_nats_t *nc;
static uvp_nats_js_t *js;
static char **args;
static bool stopped;

static void stop(void) {
  stopped = true;
  uvp_nats_js_free(js);
  uvp_nats_close(nc);
}

/* ---- race ---- */

static uv_poll_t in;

static void on_round(uv_poll_t *h, int status, int events);

static uvp_ret_t raced(void *arg, const uvp_outcome_t *in_) {
  (void)arg;
  int rc = in_->status;
  if (rc != 0 && rc != UVP_ESETTLED)
    fprintf(stderr, "nats-js-helper: %s\n", uvp_nats_err_name(rc));
  printf("%c\n", rc == 0 ? 'W' : rc == UVP_ESETTLED ? 'L' : 'E');
  fflush(stdout);
  uv_poll_start(&in, UV_READABLE, on_round); /* the next round */
  return uvp_ret_value(NULL, NULL);
}

static void on_round(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  char line[32];
  if (fgets(line, sizeof(line), stdin) == NULL) {
    uv_close((uv_handle_t *)h, NULL);
    printf("done\n");
    fflush(stdout);
    stop();
    return;
  }
  uv_poll_stop(h); /* one round at a time */
  char id[48], data[64];
  snprintf(id, sizeof(id), "r-%lu", strtoul(line, NULL, 10));
  snprintf(data, sizeof(data), "by %ld", (long)getpid());
  uvp_promise_t *p, *d;
  int rc =
      strcmp(args[5], "resolve") == 0
          ? uvp_nats_dpromise_resolve(js, args[3], id, data, strlen(data), &p)
          : uvp_nats_dpromise_reject(js, args[3], id, UV_EIO, data,
                                     strlen(data), &p);
  if (rc != 0)
    exit(1);
  uvp_promise_on(p, UVP_ON_BOTH, raced, NULL, &d);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

/* ---- create ---- */

static uvp_ret_t settled(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  const uvp_nats_dpromise_t *r = in->value;
  if (in->status == 0) {
    printf("resolved %s\n", r->data);
  } else {
    void *payload = NULL;
    uvp_promise_reason(in->promise, &payload);
    r = payload;
    printf("rejected %s %s\n", uvp_nats_err_name(in->status),
           r != NULL ? r->data : "(no record)");
  }
  fflush(stdout);
  stop();
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t seen(void *arg, const uvp_outcome_t *in);

static void look(void) {
  uvp_promise_t *p, *d;
  if (uvp_nats_dpromise_get(js, args[3], args[4], &p) != 0)
    exit(1);
  uvp_promise_on(p, UVP_ON_BOTH, seen, NULL, &d);
  uvp_promise_release(p);
  uvp_promise_release(d);
}

/* Until the record exists (the create is on its way meanwhile). */
static uvp_ret_t seen(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  if (stopped)
    return uvp_ret_value(NULL, NULL);
  const uvp_nats_dpromise_t *r = in->value;
  if (in->status == 0) { /* completed already: the await says how */
    if (r->state == UVP_NATS_DPROMISE_PENDING) {
      printf("created\n");
      fflush(stdout);
    }
  } else {
    look();
  }
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  bool race = argc == 6 && strcmp(argv[1], "race") == 0;
  bool create = argc == 6 && strcmp(argv[1], "create") == 0;
  if (!race && !create) {
    fprintf(stderr, "usage: nats-js-helper race URL BUCKET N resolve|reject\n"
                    "       nats-js-helper create URL BUCKET ID TIMEOUT_MS\n");
    return 2;
  }
  args = argv;
  uv_loop_t loop;
  uv_loop_init(&loop);
  uvp_ctx_new(&loop, &ctx);
  uvp_nats_connect_opts_t co = {.url = argv[2]};
  if (uvp_nats_open(ctx, &co, &nc) != 0 || uvp_nats_js_new(nc, NULL, &js) != 0)
    return 1;
  uvp_promise_t *p, *d;
  if (race) {
    setvbuf(stdin, NULL, _IONBF, 0); /* a line at a time: the poll says */
    uv_poll_init(&loop, &in, 0);
    uv_poll_start(&in, UV_READABLE, on_round);
    printf("ready\n");
    fflush(stdout);
  } else {
    if (uvp_nats_dpromise_create(js, argv[3], argv[4],
                                 strtoull(argv[5], NULL, 10), &p) != 0)
      return 1;
    uvp_promise_on(p, UVP_ON_BOTH, settled, NULL, &d);
    uvp_promise_release(p);
    uvp_promise_release(d);
    look();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  nats_CloseAndWait(0);
  return rc == 0 ? 0 : 3;
}

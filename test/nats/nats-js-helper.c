/* A second process for test-nats-js's durable promises.
 *
 *   nats-js-helper race URL BUCKET N resolve|reject
 *     prints "ready", waits for a line on its input, then completes the
 *     durable promises r-0 ... r-(N-1) of BUCKET, 64 at a time, and
 *     prints one character for each: W (it won), L (UVP_ESETTLED: another
 *     had completed it), E (anything else); then "done".
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
static char *marks;
static bool stopped;

static void stop(void) {
  stopped = true;
  uvp_nats_js_free(js);
  uvp_nats_close(nc);
}

/* ---- race ---- */

static int complete_one(void *arg, size_t i, uvp_promise_t **out) {
  (void)arg;
  char id[32], data[64];
  snprintf(id, sizeof(id), "r-%zu", i);
  snprintf(data, sizeof(data), "by %ld", (long)getpid());
  if (strcmp(args[5], "resolve") == 0)
    return uvp_nats_dpromise_resolve(js, args[3], id, data, strlen(data), out);
  return uvp_nats_dpromise_reject(js, args[3], id, UV_EIO, data, strlen(data),
                                  out);
}

static uvp_ret_t raced(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  const uvp_settled_list_t *l = in->value;
  for (size_t i = 0; l != NULL && i < l->count; i++) {
    int rc = l->items[i].status;
    marks[i] = rc == 0 ? 'W' : rc == UVP_ESETTLED ? 'L' : 'E';
    if (marks[i] == 'E')
      fprintf(stderr, "nats-js-helper: r-%zu: %s\n", i, uvp_nats_err_name(rc));
  }
  printf("%s\ndone\n", marks);
  fflush(stdout);
  stop();
  return uvp_ret_value(NULL, NULL);
}

static void on_go(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  char line[16];
  if (fgets(line, sizeof(line), stdin) == NULL)
    line[0] = '\0';
  uv_close((uv_handle_t *)h, NULL);
  size_t n = strtoul(args[4], NULL, 10);
  marks = calloc(n + 1, 1);
  uvp_map_opts_t mo = {.limit = 64};
  uvp_promise_t *all, *d;
  if (uvp_promise_map(ctx, n, complete_one, NULL, &mo, &all) != 0)
    exit(1);
  uvp_promise_on(all, UVP_ON_BOTH, raced, NULL, &d);
  uvp_promise_release(all);
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
  uv_poll_t in;
  uvp_promise_t *p, *d;
  if (race) {
    uv_poll_init(&loop, &in, 0);
    uv_poll_start(&in, UV_READABLE, on_go);
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
  free(marks);
  return rc == 0 ? 0 : 3;
}

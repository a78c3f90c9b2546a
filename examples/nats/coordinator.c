/* A coordinator: three jobs to whichever workers listen, every outcome.
 * ./coordinator nats://127.0.0.1:4222 (credentials and TLS from the
 * environment: NATS_USER, NATS_CREDS, NATS_CA..., uvp_nats_options_auth;
 * the inbox prefix: NATS_INBOX_PREFIX) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvp-nats.h>

int main(int argc, char **argv) {
  const char *jobs[3] = {"alpha", "beta", "gamma"};
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  uvp_promise_t *r[3] = {NULL}, *all = NULL;
  if (argc != 2) {
    fprintf(stderr, "usage: coordinator URL\n");
    return 2;
  }
  natsOptions *no = NULL; /* credentials and TLS: the environment's */
  const char *what = "natsOptions";
  int err = natsOptions_Create(&no) != NATS_OK
                ? UV_ENOMEM
                : uvp_nats_options_auth(no, NULL, &what);
  if (err != 0) { /* e.g. "NATS_CREDS: no such file or directory" */
    fprintf(stderr, "%s: %s\n", what, uvp_nats_strerror(err));
    return 2;
  }
  uvp_nats_connect_opts_t o = {.url = argv[1], .options = no}; /* given */
  uvp_nats_request_opts_t ro = {.timeout_ms = 2000}; /* Uvp-Timeout-Ms */
  /* its replies' subjects: a prefix the server lets this user alone read */
  uvp_nats_connect_more_t more = {.inbox_prefix = getenv("NATS_INBOX_PREFIX")};
  if (uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx) ||
      uvp_nats_open_more(ctx, &o, &more, &nc)) /* connects while we go on */
    return 2;
  for (int i = 0; i < 3; i++) /* sent as soon as the connection is up */
    uvp_nats_request(nc, "jobs", jobs[i], strlen(jobs[i]) + 1, &ro, &r[i]);
  if (uvp_promise_all_settled_ex(ctx, r, 3, UVP_TAKE_INPUTS, &all))
    return 1;                    /* a request refused; either way r is taken */
  uv_run(&loop, UV_RUN_DEFAULT); /* until every job has its record */

  const uvp_settled_list_t *l = uvp_promise_value(all);
  int failed = 0;
  for (int i = 0; i < 3; i++) {
    int rc = l->items[i].status; /* 0, or why not: ENORESPONDERS... */
    failed += rc != 0;
    printf("%s -> %s\n", jobs[i],
           rc == 0 ? natsMsg_GetData(l->items[i].value)
                   : uvp_nats_err_name(rc));
  }
  uvp_promise_release(all);
  if (uvp_nats_connect_error(nc) != NULL) /* why it could not connect */
    fprintf(stderr, "%s\n", uvp_nats_connect_error(nc));
  uvp_nats_close(nc);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connection's close */
  nats_CloseAndWait(1000); /* bounded: an abandoned connect holds nats.c */
  return uv_loop_close(&loop) != 0 || failed > 0; /* 0: all answered */
}

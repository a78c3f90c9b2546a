/* A worker: serves "jobs" in queue group "workers", each job in a fiber,
 * 100 at once, WAITING more waiting for a slot (default 200), and answers
 * the rest EBUSY at once.  ./worker nats://127.0.0.1:4222 [WAITING] */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvp-nats.h>

static uvp_ret_t job(void *arg) { /* a job: its body in capitals */
  uvp_nats_served_t *req = arg;
  char *out = strdup(natsMsg_GetData(req->msg));
  for (char *c = out; *c != '\0'; c++)
    *c = (char)toupper((unsigned char)*c);
  return uvp_ret_value(out, free); /* the reply's body */
}

static uvp_ret_t ready(void *arg, const uvp_outcome_t *flush) {
  int rc = flush->status; /* 0: the server has our subscription */
  const char *why = uvp_nats_connect_error(arg); /* nats.c's words */
  printf("%s%s%s\n", rc == 0 ? "serving" : uvp_nats_err_name(rc),
         why != NULL ? ": " : "", why != NULL ? why : "");
  fflush(stdout);
  return uvp_ret_pass();
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  uvp_nats_svc_t *svc;
  uvp_promise_t *f;
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: worker URL [WAITING]\n");
    return 2;
  }
  natsOptions *no = NULL; /* credentials, TLS: NATS_USER, NATS_CREDS... */
  const char *what = "natsOptions";
  int err = natsOptions_Create(&no) != NATS_OK
                ? UV_ENOMEM
                : uvp_nats_options_auth(no, NULL, &what);
  if (err != 0) {
    fprintf(stderr, "%s: %s\n", what, uvp_nats_strerror(err));
    return 2;
  }
  uvp_nats_connect_opts_t o = {.url = argv[1], .options = no}; /* given */
  uvp_nats_serve_opts_t so = {.fiber = job, .limit = 100};
  /* its replies' subjects: a prefix the server lets this user alone read */
  uvp_nats_connect_more_t more = {.inbox_prefix = getenv("NATS_INBOX_PREFIX")};
  if (uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx) ||
      uvp_nats_open_more(ctx, &o, &more, &nc) ||
      uvp_nats_serve(nc, "jobs", "workers", &so, &svc) ||
      (argc == 3 &&
       uvp_nats_serve_set_max_waiting(svc, strtoull(argv[2], NULL, 10))) ||
      uvp_nats_flush(nc, &f) ||
      uvp_promise_on(f, UVP_ON_BOTH | UVP_ON_TAKE, ready, nc, NULL))
    return 2;
  uv_run(&loop, UV_RUN_DEFAULT); /* serves until killed, or cannot connect */
  uvp_nats_close(nc);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connection's close */
  nats_CloseAndWait(1000); /* bounded: an abandoned connect holds nats.c */
  uv_loop_close(&loop);
  return 1;
}

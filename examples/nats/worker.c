/* A worker: serves "jobs" in queue group "workers", each job in a fiber.
 * cc -o worker worker.c $(pkg-config --cflags --libs uvp-nats)
 * ./worker nats://127.0.0.1:4222 */
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

static void settle(uv_loop_t *loop, uvp_promise_t *p) {
  while (uvp_promise_state(p) == UVP_PENDING)
    uv_run(loop, UV_RUN_ONCE);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *c, *f;
  uvp_nats_svc_t *svc;
  uvp_nats_connect_opts_t o = {.url = argv[1]};
  if (argc != 2 || uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx) ||
      uvp_nats_connect(ctx, &o, &c))
    return 2;
  settle(&loop, c);
  uvp_nats_t *nc = uvp_promise_value(c); /* NULL if it failed */
  uvp_nats_serve_opts_t so = {.fiber = job, .limit = 100};
  if (nc != NULL && uvp_nats_serve(nc, "jobs", "workers", &so, &svc) == 0 &&
      uvp_nats_flush(nc, &f) == 0) {
    settle(&loop, f); /* the server has our subscription */
    printf("serving\n");
    fflush(stdout);
    uv_run(&loop, UV_RUN_DEFAULT); /* until it is killed */
  }
  printf("connect: %s\n", uvp_nats_err_name(uvp_promise_reason(c, NULL)));
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the failed connection's close */
  return 1;
}

/* A coordinator: three jobs to whichever workers listen, every outcome.
 * cc -o coordinator coordinator.c $(pkg-config --cflags --libs uvp-nats)
 * ./coordinator nats://127.0.0.1:4222 */
#include <stdio.h>
#include <string.h>
#include <uvp-nats.h>

static void settle(uv_loop_t *loop, uvp_promise_t *p) {
  while (uvp_promise_state(p) == UVP_PENDING)
    uv_run(loop, UV_RUN_ONCE);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *c, *r[3], *all;
  const char *jobs[3] = {"alpha", "beta", "gamma"};
  uvp_nats_connect_opts_t o = {.url = argv[1]};
  if (argc != 2 || uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx) ||
      uvp_nats_connect(ctx, &o, &c))
    return 2;
  settle(&loop, c);
  uvp_nats_t *nc = uvp_promise_value(c); /* NULL if it failed */
  if (nc == NULL)
    printf("connect: %s\n", uvp_nats_err_name(uvp_promise_reason(c, NULL)));
  for (int i = 0; nc != NULL && i < 3; i++) {
    uvp_nats_request_opts_t ro = {.timeout_ms = 2000}; /* Uvp-Timeout-Ms */
    uvp_nats_request(nc, "jobs", jobs[i], strlen(jobs[i]) + 1, &ro, &r[i]);
  }
  if (nc != NULL && uvp_promise_all_settled(ctx, r, 3, &all) == 0) {
    settle(&loop, all);
    const uvp_settled_list_t *l = uvp_promise_value(all);
    for (int i = 0; i < 3; i++) {
      if (l->items[i].status == 0)
        printf("%s -> %s\n", jobs[i], natsMsg_GetData(l->items[i].value));
      else
        printf("%s: %s\n", jobs[i], uvp_nats_err_name(l->items[i].status));
      uvp_promise_release(r[i]);
    }
    uvp_promise_release(all);
    uvp_nats_close(nc);
  }
  uvp_promise_release(c);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connection's close */
  nats_CloseAndWait(0);          /* nats.c's threads, after the last one */
  return uv_loop_close(&loop) != 0 || nc == NULL; /* 0: all is well */
}

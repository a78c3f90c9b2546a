/* A durable promise: await one, or complete it, from any process.
 *   ./durable nats://127.0.0.1:4222 order-42           create and await
 *   ./durable nats://127.0.0.1:4222 order-42 shipped   resolve it */
#include <stdio.h>
#include <string.h>
#include <uvp-nats-js.h>

static char **args;
static int status = 1;

static uvp_ret_t run(void *arg) {
  uvp_nats_js_t *js = arg;
  const char *id = args[2], *value = args[3];
  uvp_nats_kv_config_t bucket = {.bucket = "orders"}; /* R1; a cluster: 3 */
  uvp_promise_t *p = NULL;
  uvp_outcome_t out = {0}; /* read below even if the bucket add failed */
  /* the bucket: made once, found after */
  int rc = uvp_await_take(uvp_nats_kv_bucket_add(js, &bucket, &p), &p, NULL);
  if (rc == 0 && value == NULL) /* pending until someone completes it */
    rc = uvp_await_take(uvp_nats_dpromise_create(js, "orders", id, 60000, &p),
                        &p, &out);
  else if (rc == 0)
    rc = uvp_await_take(
        uvp_nats_dpromise_resolve(js, "orders", id, value, strlen(value), &p),
        &p, &out);
  void *payload = NULL; /* a rejection's record, if it carries one */
  if (rc != 0 && out.promise != NULL)
    uvp_promise_reason(out.promise, &payload);
  const uvp_nats_dpromise_t *r = rc == 0 ? out.value : payload;
  if (value != NULL && rc == 0)
    printf("%s resolved by this process\n", id);
  else if (r != NULL)
    printf("%s%s: %s \"%s\"\n", id,
           rc == UVP_ESETTLED ? " was settled already" : "",
           uvp_nats_dpromise_state_name(r->state), r->data);
  status = rc == 0 || r != NULL ? 0 : 1;
  if (status != 0) /* no server, no such promise yet (ENOENT)... */
    fprintf(stderr, "%s: %s\n", id, uvp_nats_err_name(rc));
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_nats_t *nc;
  uvp_nats_js_t *js;
  uvp_promise_t *f;
  uvp_nats_connect_opts_t o = {.url = argv[1]};
  args = argv;
  if ((argc != 3 && argc != 4) || uv_loop_init(&loop) ||
      uvp_ctx_new(&loop, &ctx) || uvp_nats_open(ctx, &o, &nc) ||
      uvp_nats_js_new(nc, NULL, &js) || uvp_fiber_spawn(ctx, run, js, NULL, &f))
    return 2;
  uv_run(&loop, UV_RUN_DEFAULT); /* until the fiber is done */
  uvp_promise_release(f);
  uvp_nats_js_free(js);
  uvp_nats_close(nc);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connection's close */
  nats_CloseAndWait(0);
  return uv_loop_close(&loop) != 0 ? 3 : status;
}

/* A durable promise: await one, or complete it, from any process.
 *   ./durable nats://127.0.0.1:4222 order-42           create and await
 *   ./durable nats://127.0.0.1:4222 order-42 shipped   resolve it
 * A server not up yet is tried again, 1 s apart, 10 times. */
#include <stdio.h>
#include <string.h>
#include <uvp-nats-js.h>

static char **args;
static int status = 1;

/* The bucket, made once and found after, on a connection of its own.
 * uvp_nats_open connects while the call waits for it, and the call's
 * timeout (the context's: 5 s) counts from the call, the connect
 * included.  If the connect fails, the call rejects with the connect's
 * code: UV_ECONNREFUSED (nobody listens), UV_ETIMEDOUT, UV_EPROTO (not a
 * NATS server, a failed TLS handshake), and the connection takes nothing
 * new: a try again needs another. */
static int bucket(uvp_ctx_t *ctx, uvp_nats_t **nc, uvp_nats_js_t **js) {
  uvp_nats_connect_opts_t o = {.url = args[1]};
  uvp_nats_kv_config_t b = {.bucket = "orders"}; /* R1; a cluster: 3 */
  uvp_promise_t *p;
  const char *what = NULL; /* credentials, TLS: NATS_USER, NATS_CREDS... */
  int rc = natsOptions_Create(&o.options) != NATS_OK
               ? UV_ENOMEM
               : uvp_nats_options_auth(o.options, NULL, &what);
  if (rc != 0) {
    fprintf(stderr, "%s: %s\n", what != NULL ? what : "options",
            uvp_nats_strerror(rc));
    natsOptions_Destroy(o.options);
    return rc;
  }
  rc = uvp_nats_open(ctx, &o, nc); /* takes o.options */
  if (rc == 0 && (rc = uvp_nats_js_new(*nc, NULL, js)) != 0) {
    uvp_nats_close(*nc);
    *nc = NULL;
  }
  if (rc == 0)
    rc = uvp_await_take(uvp_nats_kv_bucket_add(*js, &b, &p), &p, NULL);
  return rc;
}

static uvp_ret_t run(void *arg) {
  uvp_ctx_t *ctx = arg;
  const char *id = args[2], *value = args[3];
  uvp_nats_t *nc = NULL;
  uvp_nats_js_t *js = NULL;
  uvp_promise_t *p = NULL;
  uvp_outcome_t out = {0}; /* read below even if the bucket add failed */
  int rc = bucket(ctx, &nc, &js);
  /* ECONNREFUSED comes only from the connect: nothing was sent */
  for (int i = 0; i < 10 && rc == UV_ECONNREFUSED; i++) {
    uvp_nats_js_free(js);
    uvp_nats_close(nc);
    js = NULL;
    nc = NULL;
    uvp_await_take(uvp_delay(ctx, 1000, NULL, NULL, 0, &p), &p, NULL);
    rc = bucket(ctx, &nc, &js);
  }
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
  if (js != NULL)
    uvp_nats_js_free(js);
  if (nc != NULL)
    uvp_nats_close(nc); /* its memory goes as the loop runs on */
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *f;
  args = argv;
  if ((argc != 3 && argc != 4) || uv_loop_init(&loop) ||
      uvp_ctx_new(&loop, &ctx) || uvp_fiber_spawn(ctx, run, ctx, NULL, &f))
    return 2;
  uv_run(&loop, UV_RUN_DEFAULT); /* until the fiber is done */
  uvp_promise_release(f);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the connection's close */
  nats_CloseAndWait(1000); /* bounded: an abandoned connect holds nats.c */
  return uv_loop_close(&loop) != 0 ? 3 : status;
}

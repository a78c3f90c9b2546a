/* Three URLs at once through libcurl on uvp, every outcome (allSettled).
 * cc -o fetch3 fetch3.c $(pkg-config --cflags --libs uvp-curl)
 * ./fetch3 URL URL URL */
#include <stdio.h>
#include <uvp-curl.h>

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_curl_t *curl;
  uvp_promise_t *p[3] = {NULL}, *all = NULL;
  if (argc != 4 || uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx) ||
      uvp_curl_new(ctx, &curl))
    return 2;
  for (int i = 0; i < 3; i++)
    uvp_curl_get(curl, argv[i + 1], &p[i]);
  uvp_promise_all_settled_ex(ctx, p, 3, UVP_TAKE_INPUTS, &all); /* takes p */
  uv_run(&loop, UV_RUN_DEFAULT); /* until the three transfers are done */

  const uvp_settled_list_t *l = uvp_promise_value(all);
  for (int i = 0; i < 3; i++) {
    const uvp_curl_response_t *res = l->items[i].value; /* if fulfilled */
    const uvp_curl_error_t *err = l->items[i].value;    /* if rejected */
    if (l->items[i].status == 0)
      printf("%s: HTTP %ld, %zu bytes\n", argv[i + 1], res->status, res->bytes);
    else
      printf("%s: %s (%s)\n", argv[i + 1],
             uvp_curl_err_name(l->items[i].status), err->message);
  }
  uvp_promise_release(all);
  uvp_curl_close(curl);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
  return uv_loop_close(&loop);   /* 0: nothing left behind */
}

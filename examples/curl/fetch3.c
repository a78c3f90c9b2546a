/* Three URLs at once through libcurl on uvp, every outcome (allSettled).
 * cc -o fetch3 fetch3.c $(pkg-config --cflags --libs uvp-curl)
 * ./fetch3 URL URL URL */
#include <stdio.h>
#include <uvp-curl.h>

static uvp_ret_t fetch3(uvp_ctx_t *ctx, void *arg) {
  char **urls = arg;
  uvp_curl_t *curl;
  uvp_promise_t *p[3] = {NULL}, *all = NULL;
  uvp_outcome_t o;
  if (uvp_curl_new(ctx, &curl) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  for (int i = 0; i < 3; i++)
    uvp_curl_get(curl, urls[i], &p[i]);
  uvp_await_take(uvp_promise_all_settled_ex(ctx, p, 3, UVP_TAKE_INPUTS, &all),
                 &all, &o); /* takes p; until the three transfers are done */
  const uvp_settled_list_t *l = o.value; /* NULL if it could not start */
  for (int i = 0; l != NULL && i < 3; i++) {
    const uvp_curl_response_t *res = l->items[i].value; /* if fulfilled */
    const uvp_curl_error_t *err = l->items[i].value;    /* if rejected */
    if (l->items[i].status == 0)
      printf("%s: HTTP %ld, %zu bytes\n", urls[i], res->status, res->bytes);
    else
      printf("%s: %s (%s)\n", urls[i], uvp_curl_err_name(l->items[i].status),
             err->message);
  }
  uvp_curl_close(curl);
  return uvp_ret_pass();
}

int main(int argc, char **argv) { /* the loop, the context, the teardown */
  return argc == 4 ? uvp_main_run(fetch3, argv + 1, NULL) : 2;
}

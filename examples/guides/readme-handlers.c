/* README's handler example: a chain of handlers on two timers, one of
 * them cut short by a timeout. */
#include <stdio.h>
#include <uvp.h>

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  printf("%s: %s\n", (const char *)arg, (const char *)in->value);
  return uvp_ret_value(NULL, NULL); /* fulfil the derived promise */
}

static uvp_ret_t on_error(void *arg, const uvp_outcome_t *in) {
  printf("%s: %s (%s)\n", (const char *)arg, uvp_err_name(in->status),
         uvp_strerror(in->status));
  return uvp_ret_value(NULL, NULL); /* handled: the chain goes on */
}

int main(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *quick, *slow, *bounded, *p[4];
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;

  /* Promises that fulfil after 10 ms and 1000 ms; the second is bounded
   * by a 100 ms timeout, which cancels it (its timer stops) when it
   * fires, so the loop does not wait the full second. */
  uvp_delay(ctx, 10, "done after 10 ms", NULL, 0, &quick);
  uvp_delay(ctx, 1000, "done after 1000 ms", NULL, 0, &slow);
  uvp_timeout(slow, 100, 0, &bounded);
  uvp_promise_then(quick, on_value, "quick", &p[0]);
  uvp_promise_catch(p[0], on_error, "quick", &p[1]);
  uvp_promise_then(bounded, on_value, "slow", &p[2]);
  uvp_promise_catch(p[2], on_error, "slow", &p[3]);

  uv_run(&loop, UV_RUN_DEFAULT); /* you run the loop: about 100 ms */

  uvp_promise_release(quick);
  uvp_promise_release(slow);
  uvp_promise_release(bounded);
  for (int i = 0; i < 4; i++)
    uvp_promise_release(p[i]);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* uvp's handles close */
  return uv_loop_close(&loop);   /* 0: nothing left behind */
}

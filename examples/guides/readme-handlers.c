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

static int start(uvp_ctx_t *ctx, void *arg, uvp_promise_t **out) {
  uvp_promise_t *quick, *slow, *bounded, *p;
  (void)arg;
  (void)out; /* no promise to wait for: the program ends with the loop's work */

  /* Promises that fulfil after 10 ms and 1000 ms; the second is bounded
   * by a 100 ms timeout, which cancels it (its timer stops) when it
   * fires, so the loop does not wait the full second. */
  uvp_delay(ctx, 10, "done after 10 ms", NULL, 0, &quick);
  uvp_delay(ctx, 1000, "done after 1000 ms", NULL, 0, &slow);
  uvp_timeout(slow, 100, UVP_TAKE_INPUTS, &bounded); /* takes slow */
  /* The _take forms take the promise they are given: each chain lives on
   * by itself, and there is nothing left to release. */
  uvp_promise_then_take(quick, on_value, "quick", &p);
  uvp_promise_catch_take(p, on_error, "quick", NULL);
  uvp_promise_then_take(bounded, on_value, "slow", &p);
  return uvp_promise_catch_take(p, on_error, "slow", NULL);
}

int main(void) { /* the loop runs about 100 ms, then all is torn down */
  return uvp_main_run_promise(start, NULL, NULL);
}

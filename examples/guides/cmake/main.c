/* The CMake guide's application (docs/guide-cmake.md): a fiber awaits a
 * promise that fulfils on the loop after 10 ms. */
#include <stdio.h>
#include <uvp.h>

static uvp_ret_t run(uvp_ctx_t *ctx, void *arg) {
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc = uvp_await_take(
      uvp_delay(ctx, 10, "fulfilled after 10 ms", NULL, 0, &p), &p, &o);
  if (rc == 0)
    printf("%s\n", (const char *)o.value);
  (void)arg;
  return rc == 0 ? uvp_ret_pass() : uvp_ret_reject(rc, NULL, NULL);
}

int main(void) { return uvp_main_run(run, NULL, NULL); }

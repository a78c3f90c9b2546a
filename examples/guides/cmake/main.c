/* The CMake guide's application (docs/guide-cmake.md): a promise that
 * fulfils on the loop after 10 ms. */
#include <stdio.h>
#include <uvp.h>

int main(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_delay(ctx, 10, "fulfilled after 10 ms", NULL, 0, &p) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT); /* until the delay has fulfilled p */
  printf("%s\n", (const char *)uvp_promise_value(p));
  uvp_promise_release(p);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* uvp's handles close */
  return uv_loop_close(&loop);   /* 0: nothing left behind */
}

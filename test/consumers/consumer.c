/* A program outside uvp's tree, built against an installed uvp by
 * .ci/run: with pkg-config as C and as C++ (the header must be usable
 * from both), and by test/consumers/cmake as a CMake user would.  It
 * exits 0 only if the header and the library it linked agree on the
 * version, so a stale uvp found elsewhere on the machine fails it. */
#include <uvp.h>

int main(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) || uvp_promise_resolved(ctx, NULL, NULL, &p))
    return 1;
  uvp_promise_release(p);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) || uvp_version() != UVP_VERSION_HEX;
}

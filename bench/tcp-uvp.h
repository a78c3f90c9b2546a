/* What the two uvp TCP fan-outs (tcp-fanout, tcp-fanout-fiber) share around
 * their timed uvp_promise_map: the context's setup, the settled list's
 * check, the result line and the teardown. */
#ifndef UVP_BENCH_TCP_UVP_H
#define UVP_BENCH_TCP_UVP_H

#include "tcp-common.h"
#include "uvp.h"

static inline void tcp_uvp_open(uv_loop_t *loop, uvp_ctx_t **ctx) {
  uv_loop_init(loop);
  uvp_ctx_new(loop, ctx);
}

/* Counts the good replies in res (the map's settled list), prints the
 * result line, releases res and closes ctx and its loop.  Returns the exit
 * status. */
static inline int tcp_uvp_close(const char *impl, uvp_promise_t *res, size_t n,
                                size_t k, uint64_t wall_ns, double user_us) {
  const uvp_settled_list_t *l = uvp_promise_value(res);
  size_t good = 0;
  for (size_t i = 0; l != NULL && i < l->count; i++) {
    uvp_buf_t *b = l->items[i].value;
    good +=
        l->items[i].status == 0 && b != NULL && tcp_reply_ok(b->base, b->len);
  }
  int rc = tcp_report(impl, n, k, good, wall_ns, user_us);
  uvp_ctx_t *ctx = uvp_promise_ctx(res);
  uv_loop_t *loop = uvp_ctx_loop(ctx);
  uvp_promise_release(res);
  uvp_ctx_close(ctx);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return rc;
}

#endif

/* The TCP fan-out of bench/tcp-fanout.c with one fiber per request: N
 * requests to a loopback server (bench/io-server), at most K in flight
 * (uvp_promise_map, whose start callback spawns the fiber), collected
 * allSettled-style.  Each fiber connects, writes the request and reads the
 * reply until the server closes, awaiting each step, then closes the
 * connection and returns the reply.  Prints wall ms and user CPU us per
 * request.  Usage: tcp-fanout-fiber PORT [N] [K] */
#include "tcp-uvp.h"

static const char REQ[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
static struct sockaddr_in addr;
static uvp_ctx_t *ctx;

static uvp_ret_t request(void *arg) {
  uvp_tcp_t *t;
  uvp_promise_t *c, *w, *r = NULL;
  (void)arg;
  int rc = uvp_tcp_new(ctx, &t);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  if ((rc = uvp_tcp_connect(t, (struct sockaddr *)&addr, &c)) == 0) {
    rc = uvp_await(c, NULL);
    uvp_promise_release(c);
  }
  if (rc == 0 && (rc = uvp_tcp_write(t, REQ, sizeof(REQ) - 1, &w)) == 0) {
    rc = uvp_await(w, NULL);
    uvp_promise_release(w);
  }
  if (rc == 0 && (rc = uvp_tcp_read_all(t, 0, &r)) == 0)
    rc = uvp_await(r, NULL);
  uvp_tcp_close(t);
  if (rc != 0) {
    uvp_promise_release(r);
    return uvp_ret_reject(rc, NULL, NULL);
  }
  return uvp_ret_adopt(r); /* the reply, owned by r */
}

static int start(void *arg, size_t i, uvp_promise_t **out) {
  (void)arg;
  (void)i;
  return uvp_fiber_spawn(ctx, request, NULL, NULL, out);
}

int main(int argc, char **argv) {
  size_t n, k;
  tcp_args(argc, argv, &n, &k, &addr);
  uv_loop_t loop;
  tcp_uvp_open(&loop, &ctx);
  double u0 = tcp_user_us();
  uint64_t t0 = uv_hrtime();
  uvp_promise_t *res;
  uvp_map_opts_t o = {.limit = k, .flags = 0, .on_settle = NULL};
  if (uvp_promise_map(ctx, n, start, NULL, &o, &res) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  double u1 = tcp_user_us();
  return tcp_uvp_close("uvp-fiber", res, n, k, t1 - t0, u1 - u0);
}

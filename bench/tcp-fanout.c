/* TCP fan-out with uvp: N requests (connect, write a small request, read
 * the reply until the server closes) to a loopback server, at most K in
 * flight (uvp_promise_map), collected allSettled-style.  Prints wall ms and
 * user CPU µs per request.  Usage: tcp-fanout PORT [N] [K] */
#include "tcp-uvp.h"

static const char REQ[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
static struct sockaddr_in addr;
static uvp_ctx_t *ctx;

static uvp_ret_t send_and_read(void *arg, const uvp_outcome_t *in) {
  uvp_tcp_t *t = arg;
  uvp_promise_t *w, *r;
  (void)in;
  int rc = uvp_tcp_write(t, REQ, sizeof(REQ) - 1, &w);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  uvp_promise_release(w); /* a failed write shows up as a failed read */
  rc = uvp_tcp_read_all(t, 0, &r);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  return uvp_ret_adopt(r);
}

static uvp_ret_t close_conn(void *arg, const uvp_outcome_t *in) {
  (void)in;
  uvp_tcp_close(arg);
  return uvp_ret_value(NULL, NULL);
}

static int start(void *arg, size_t i, uvp_promise_t **out) {
  uvp_tcp_t *t;
  uvp_promise_t *c, *body;
  (void)arg;
  (void)i;
  int rc = uvp_tcp_new(ctx, &t);
  if (rc != 0)
    return rc;
  if ((rc = uvp_tcp_connect(t, (struct sockaddr *)&addr, &c)) != 0 ||
      (rc = uvp_promise_then(c, send_and_read, t, &body)) != 0) {
    uvp_tcp_close(t);
    return rc;
  }
  uvp_promise_release(c);
  rc = uvp_promise_finally(body, close_conn, t, out);
  uvp_promise_release(body);
  return rc;
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
  return tcp_uvp_close("uvp", res, n, k, t1 - t0, u1 - u0);
}

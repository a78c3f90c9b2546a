/* TCP fan-out with uvp: N requests (connect, write a small request, read
 * the reply until the server closes) to a loopback server, at most K in
 * flight (uvp_promise_map), collected allSettled-style.  Prints wall ms and
 * user CPU µs per request.  Usage: tcp-fanout PORT [N] [K] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "uvp.h"

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

static double user_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [N] [K]\n", argv[0]);
    return 2;
  }
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000;
  size_t k = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  uv_loop_t loop;
  uv_loop_init(&loop);
  uvp_ctx_new(&loop, &ctx);
  double u0 = user_us();
  uint64_t t0 = uv_hrtime();
  uvp_promise_t *res;
  uvp_map_opts_t o = {.limit = k, .flags = 0, .on_settle = NULL};
  if (uvp_promise_map(ctx, n, start, NULL, &o, &res) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  double u1 = user_us();
  const uvp_settled_list_t *l = uvp_promise_value(res);
  size_t good = 0;
  for (size_t i = 0; l != NULL && i < l->count; i++) {
    uvp_buf_t *b = l->items[i].value;
    good += l->items[i].status == 0 && b != NULL && b->len > 12 &&
            memcmp(b->base, "HTTP/1.0 200", 12) == 0;
  }
  printf(
      "uvp tcp-fanout n=%zu k=%zu ok=%zu wall_ms=%.1f user_us_per_req=%.2f\n",
      n, k, good, (t1 - t0) / 1e6, (u1 - u0) / (double)n);
  uvp_promise_release(res);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return good == n ? 0 : 1;
}

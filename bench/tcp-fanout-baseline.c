/* The same TCP fan-out written by hand on libuv callbacks, as a C programmer
 * would without uvp: one struct per request, a counter of requests in
 * flight, outcomes kept per index (status + body) like allSettled.
 * Usage: tcp-fanout-baseline PORT [N] [K] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp-common.h"
#include <uv.h>

static const char REQ[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";

typedef struct {
  int status;
  char *body;
  size_t len;
} outcome_t;

typedef struct {
  uv_tcp_t h;
  uv_connect_t c;
  uv_write_t w;
  size_t index;
  char *buf;
  size_t len, cap;
} req_t;

static struct sockaddr_in addr;
static uv_loop_t loop;
static outcome_t *outcomes;
static size_t n, k, next, inflight;

static void start_next(void);

static void closed(uv_handle_t *h) {
  free(h);
  inflight--;
  start_next();
}

static void finish(req_t *r, int status) {
  outcome_t *o = &outcomes[r->index];
  o->status = status;
  if (status == 0) {
    o->body = r->buf;
    o->len = r->len;
  } else {
    free(r->buf);
  }
  r->buf = NULL;
  uv_close((uv_handle_t *)&r->h, closed);
}

/* Every read lands in one static buffer (alloc and read callbacks run back
 * to back on the loop thread) and only what arrived is appended: what a
 * careful hand-written client does, and what uvp's reads do. */
static char scratch[65536];

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h;
  (void)s;
  *b = uv_buf_init(scratch, sizeof(scratch));
}

static void on_read(uv_stream_t *s, ssize_t nr, const uv_buf_t *b) {
  req_t *r = (req_t *)s;
  if (nr > 0) {
    if (r->cap - r->len < (size_t)nr) {
      size_t cap = r->cap ? r->cap * 2 : 256;
      while (cap - r->len < (size_t)nr)
        cap *= 2;
      r->buf = realloc(r->buf, cap + 1);
      r->cap = cap;
    }
    memcpy(r->buf + r->len, b->base, (size_t)nr);
    r->len += (size_t)nr;
  } else if (nr == UV_EOF) {
    uv_read_stop(s);
    if (r->buf == NULL)
      r->buf = calloc(1, 1);
    r->buf[r->len] = '\0';
    finish(r, 0);
  } else if (nr < 0) {
    uv_read_stop(s);
    finish(r, (int)nr);
  }
}

static void on_write(uv_write_t *w, int status) {
  (void)w;
  (void)status; /* a failed write shows up as a failed read */
}

static void on_connect(uv_connect_t *c, int status) {
  req_t *r = c->data;
  if (status != 0) {
    finish(r, status);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)REQ, sizeof(REQ) - 1);
  uv_write(&r->w, (uv_stream_t *)&r->h, &b, 1, on_write);
  uv_read_start((uv_stream_t *)&r->h, on_alloc, on_read);
}

static void start_next(void) {
  while (next < n && inflight < k) {
    req_t *r = calloc(1, sizeof(*r));
    r->index = next++;
    inflight++;
    uv_tcp_init(&loop, &r->h);
    r->c.data = r;
    int rc = uv_tcp_connect(&r->c, &r->h, (struct sockaddr *)&addr, on_connect);
    if (rc != 0)
      finish(r, rc);
  }
}

int main(int argc, char **argv) {
  tcp_args(argc, argv, &n, &k, &addr);
  uv_loop_init(&loop);
  outcomes = calloc(n, sizeof(*outcomes));
  double u0 = tcp_user_us();
  uint64_t t0 = uv_hrtime();
  start_next();
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  double u1 = tcp_user_us();
  size_t good = 0;
  for (size_t i = 0; i < n; i++) {
    good += outcomes[i].status == 0 &&
            tcp_reply_ok(outcomes[i].body, outcomes[i].len);
    free(outcomes[i].body);
  }
  free(outcomes);
  uv_loop_close(&loop);
  return tcp_report("baseline", n, k, good, t1 - t0, u1 - u0);
}

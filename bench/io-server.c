/* Loopback server for the I/O benchmarks, run as its own process so client
 * and server do not share a loop: reads a request up to the blank line,
 * answers a small HTTP/1.0 reply and closes.  Prints its port, then serves
 * until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char REPLY[] =
    "HTTP/1.0 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
    "hello world\n";

typedef struct {
  uv_tcp_t h;
  uv_write_t w;
  char buf[1024];
  size_t len;
} conn_t;

static void closed(uv_handle_t *h) { free(h); }

static void written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, closed);
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  conn_t *c = (conn_t *)h;
  (void)s;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = (conn_t *)s;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)s, closed);
    return;
  }
  c->len += (size_t)n;
  if (c->len >= 4 && memmem(c->buf, c->len, "\r\n\r\n", 4) != NULL) {
    uv_read_stop(s);
    uv_buf_t out = uv_buf_init((char *)REPLY, sizeof(REPLY) - 1);
    uv_write(&c->w, s, &out, 1, written);
  } else if (c->len == sizeof(c->buf)) {
    uv_close((uv_handle_t *)s, closed);
  }
}

static void on_conn(uv_stream_t *l, int status) {
  if (status != 0)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  uv_tcp_init(l->loop, &c->h);
  if (uv_accept(l, (uv_stream_t *)&c->h) != 0) {
    uv_close((uv_handle_t *)&c->h, closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t l;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_init(loop, &l);
  if (uv_tcp_bind(&l, (struct sockaddr *)&a, 0) != 0 ||
      uv_listen((uv_stream_t *)&l, 4096, on_conn) != 0) {
    fprintf(stderr, "io-server: cannot listen\n");
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_tcp_getsockname(&l, (struct sockaddr *)&ss, &len);
  printf("%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}

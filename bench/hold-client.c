/* The client of bench/hold-server.c, in a process of its own (libuv only):
 * opens N connections to 127.0.0.1:PORT from source addresses spread over
 * 127.0.0.2-127.0.0.9, prints "connected=N" once all are up, then waits
 * for a line on its standard input; then writes "ping I" on connection I,
 * reads the answers and prints how many were "pong I".
 * Usage: hold-client PORT N */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
  uv_tcp_t h;
  uv_connect_t c;
  uv_write_t w;
  size_t id;
  char out[32], in[32];
  size_t got;
} conn_t;

static size_t n, connected, answered, failed;
static conn_t *conns;
static uv_pipe_t in;

static void check_done(void) {
  if (answered + failed == n) {
    printf("hold-client answered=%zu failed=%zu\n", answered, failed);
    fflush(stdout);
    exit(failed == 0 ? 0 : 1);
  }
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  conn_t *c = (conn_t *)h;
  (void)s;
  *b = uv_buf_init(c->in + c->got, (unsigned)(sizeof(c->in) - 1 - c->got));
}

static void on_read(uv_stream_t *s, ssize_t nr, const uv_buf_t *b) {
  conn_t *c = (conn_t *)s;
  char want[32];
  (void)b;
  if (nr < 0 || c->got + (size_t)nr >= sizeof(c->in) - 1) {
    failed++;
    uv_close((uv_handle_t *)s, NULL);
    check_done();
    return;
  }
  c->got += (size_t)nr;
  c->in[c->got] = '\0';
  if (strchr(c->in, '\n') == NULL)
    return;
  snprintf(want, sizeof(want), "pong %zu\n", c->id);
  if (strcmp(c->in, want) == 0)
    answered++;
  else
    failed++;
  uv_close((uv_handle_t *)s, NULL);
  check_done();
}

static void written(uv_write_t *w, int status) {
  if (status != 0) {
    failed++;
    check_done();
  }
  (void)w;
}

static void on_go(uv_stream_t *s, ssize_t nr, const uv_buf_t *b) {
  (void)nr;
  free(b->base);
  uv_read_stop(s);
  uv_close((uv_handle_t *)s, NULL);
  for (size_t i = 0; i < n; i++) {
    conn_t *c = &conns[i];
    int len = snprintf(c->out, sizeof(c->out), "ping %zu\n", c->id);
    uv_buf_t buf = uv_buf_init(c->out, (unsigned)len);
    uv_read_start((uv_stream_t *)&c->h, on_alloc, on_read);
    if (uv_write(&c->w, (uv_stream_t *)&c->h, &buf, 1, written) != 0)
      failed++;
  }
}

static void go_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h;
  *b = uv_buf_init(malloc(s), (unsigned)s);
}

static void on_connect(uv_connect_t *req, int status) {
  if (status != 0) {
    fprintf(stderr, "hold-client: connect %zu: %s\n", ((conn_t *)req->data)->id,
            uv_strerror(status));
    exit(1);
  }
  if (++connected == n) {
    printf("hold-client connected=%zu\n", connected);
    fflush(stdout);
    uv_pipe_init(uv_default_loop(), &in, 0);
    uv_pipe_open(&in, 0);
    uv_read_start((uv_stream_t *)&in, go_alloc, on_go);
  }
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  n = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_in dst, src;
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  conns = calloc(n, sizeof(*conns));
  if (port == 0 || n == 0 || conns == NULL)
    return 2;
  uv_ip4_addr("127.0.0.1", port, &dst);
  for (size_t i = 0; i < n; i++) {
    char ip[16];
    conn_t *c = &conns[i];
    c->id = i;
    c->c.data = c;
    snprintf(ip, sizeof(ip), "127.0.0.%zu", 2 + i % 8);
    uv_ip4_addr(ip, 0, &src);
    if (uv_tcp_init(loop, &c->h) != 0 ||
        uv_tcp_bind(&c->h, (struct sockaddr *)&src, 0) != 0 ||
        uv_tcp_connect(&c->c, &c->h, (struct sockaddr *)&dst, on_connect) !=
            0) {
      fprintf(stderr, "hold-client: connection %zu could not start\n", i);
      return 1;
    }
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}

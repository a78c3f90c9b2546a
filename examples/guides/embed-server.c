/* uvp inside a libuv server (docs/guide-embedding.md).
 *
 * The server is plain libuv: a listening uv_tcp_t, uv_read_start per
 * client, uv_write for the answer and a uv_signal_t for SIGINT.  uvp does
 * one step of each request: it stats the path the client sent, bounded
 * by a timeout.  So that the demo ends by itself it is its own client: a
 * fiber connects twice, prints the answers and raises SIGINT, and the
 * server tears down in the order the guide gives. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uvp.h>

static uv_loop_t loop;
static uv_tcp_t server;
static uv_signal_t sigint;
static uvp_ctx_t *ctx;
static int port;

typedef struct conn_s {
  uv_tcp_t tcp; /* first: a conn_t * is its handle's address */
  char line[256];
  size_t len;
  uvp_promise_t *step; /* NULL until a request came */
  uv_write_t req;
  char answer[300];
} conn_t;

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = (conn_t *)h;
  /* A NULL promise is ignored; release works after uvp_ctx_close too. */
  uvp_promise_release(c->step);
  free(c);
}

static void close_conn(conn_t *c) {
  if (c->step != NULL) /* a request in flight: its handler must not run */
    uvp_promise_cancel(c->step); /* and up the chain: the stat, the timer */
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  close_conn(req->data);
}

static void answer(conn_t *c, const char *text) {
  snprintf(c->answer, sizeof(c->answer), "%s: %s\n", c->line, text);
  uv_buf_t b = uv_buf_init(c->answer, (unsigned)strlen(c->answer));
  c->req.data = c;
  if (uv_write(&c->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
    close_conn(c);
}

/* uvp's part: one handler for both outcomes of the bounded stat. */
static uvp_ret_t on_stat(void *arg, const uvp_outcome_t *in) {
  conn_t *c = arg;
  if (in->status == 0) {
    const uv_stat_t *s = in->value;
    answer(c, S_ISDIR(s->st_mode) ? "a directory" : "not a directory");
  } else {
    answer(c, uvp_err_name(in->status)); /* ENOENT, ETIMEDOUT, ... */
  }
  return uvp_ret_value(NULL, NULL);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  conn_t *c = (conn_t *)h;
  (void)size;
  *b = uv_buf_init(c->line + c->len, (unsigned)(sizeof(c->line) - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = (conn_t *)s;
  (void)b;
  if (n < 0) {
    close_conn(c);
    return;
  }
  c->len += (size_t)n;
  char *nl = memchr(c->line, '\n', c->len);
  if (nl == NULL) {
    if (c->len == sizeof(c->line) - 1)
      close_conn(c);
    return;
  }
  *nl = '\0';
  uv_read_stop(s);
  uvp_promise_t *p; /* the stat; the timeout takes it, the handler that */
  if (uvp_fs_stat(ctx, c->line, &p) != 0 ||
      uvp_timeout(p, 1000, UVP_TAKE_INPUTS, &p) != 0 ||
      uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, on_stat, c, &c->step) != 0)
    answer(c, "no memory");
}

static void on_connection(uv_stream_t *srv, int status) {
  conn_t *c = calloc(1, sizeof(*c));
  if (status < 0 || c == NULL) {
    free(c);
    return;
  }
  uv_tcp_init(&loop, &c->tcp);
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    close_conn(c);
}

/* The demo's client: a fiber of the same context. */
static uvp_ret_t client(void *arg) {
  static const char *const asks[] = {"/\n", "/no/such/file\n"};
  (void)arg;
  for (int i = 0; i < 2; i++) {
    uvp_tcp_t *t;
    uvp_promise_t *p;
    uvp_outcome_t o;
    if (uvp_tcp_new(ctx, &t) != 0)
      break;
    /* Each step started and awaited in one call, which lets go of it. */
    int rc = uvp_await_take(uvp_tcp_connect_host(t, "127.0.0.1", port, &p), &p,
                            NULL);
    if (rc == 0)
      rc = uvp_await_take(uvp_tcp_write(t, asks[i], strlen(asks[i]), &p), &p,
                          NULL);
    if (rc == 0 &&
        (rc = uvp_await_take(uvp_tcp_read_all(t, 0, &p), &p, &o)) == 0)
      fputs(((const uvp_buf_t *)o.value)->base, stdout);
    if (rc != 0)
      printf("client: %s\n", uvp_err_name(rc));
    uvp_tcp_close(t);
  }
  uv_kill(uv_os_getpid(), SIGINT); /* as an operator would */
  return uvp_ret_value(NULL, NULL);
}

static void close_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) /* uvp's, closing since uvp_ctx_close */
    return;
  int conn = h->type == UV_TCP && h != (uv_handle_t *)&server;
  uv_close(h, conn ? on_conn_closed : NULL);
}

/* Teardown, in this order: uvp first, then every handle of the program's.
 * uv_run then returns, once the close callbacks have run. */
static void on_sigint(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  printf("SIGINT: closing\n");
  uvp_ctx_close(ctx); /* pending promises reject with UVP_ECLOSED */
  uv_walk(&loop, close_handle, NULL);
}

int main(void) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  if (uv_tcp_init(&loop, &server) != 0 ||
      uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 128, on_connection) != 0 ||
      uv_tcp_getsockname(&server, (struct sockaddr *)&bound, &len) != 0)
    return 1;
  port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  uv_signal_init(&loop, &sigint);
  uv_signal_start(&sigint, on_sigint, SIGINT);
  if (uvp_fiber_spawn(ctx, client, NULL, NULL, NULL) != 0)
    return 1; /* nobody awaits the client: it ends the demo itself */

  uv_run(&loop, UV_RUN_DEFAULT); /* until on_sigint has closed everything */
  int rc = uv_loop_close(&loop);
  printf("uv_loop_close: %d\n", rc);
  return rc != 0;
}

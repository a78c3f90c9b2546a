/* Servers the binding's tests run on the test's own loop, on 127.0.0.1:
 * plain libuv, no uvp and no HTTP library, so that each answers exactly
 * as written here, hostile ones included.
 *
 * hostile_t serves HTTP/1.1 by path, one request per connection:
 *   /fast          200, "fast\n", with X-Test: yes
 *   /close         200, "closed\n", then closes (Connection: close)
 *   /redirect      302 to /fast, with headers of its own
 *   /echo          200, the request as received (head and body) as body
 *   /gzip?n=N      200, N bytes of 'a' gzip-compressed, Content-Encoding:
 *                  gzip, Content-Length the compressed size
 *   /garbage       bytes that are no HTTP response, then closes
 *   /reset-mid     Content-Length 100000, 1000 bytes, then a reset (RST)
 *   /endless       a chunked body that never ends (16 KiB chunks as fast
 *                  as the client reads)
 *   /slow1         Content-Length 10, one byte a second
 *   /huge-headers  256 header lines of 1 KiB (256 KiB), then a body
 *   /partial       Content-Length 1000000, 4096 bytes, then nothing
 *   /hold          nothing, ever
 * It counts connections accepted, and those the client closed (an end of
 * stream or an error on read, or a failed write).
 *
 * silent_t accepts and reads but never answers (a TLS server that never
 * finishes the handshake); it counts the bytes and connections the
 * client closed.  backlog_full_t is a listener whose accept queue is
 * full, so that a connect to it stays in SYN-SENT. */
#ifndef UVP_TEST_CURL_SERVERS_H
#define UVP_TEST_CURL_SERVERS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include "../helpers.h"
#include "sock.h" /* examples/common: sockets on POSIX and Windows */

typedef struct hostile_s hostile_t;

typedef struct hconn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  hostile_t *srv;
  struct hconn_s *next;
  char req[16384];
  size_t len;
  int answered;
  int closing;
  int closes; /* of its two handles, closed so far */
  int mode;
  unsigned sent; /* /slow1's bytes, /huge-headers' lines */
} hconn_t;

struct hostile_s {
  uv_tcp_t listener;
  int port;
  hconn_t *conns;
  int accepted;
  int client_closed; /* connections whose client went first */
  int open;          /* connections not yet closed */
};

enum { H_ENDLESS = 1, H_SLOW1, H_HUGE };

/* Freed once both its handles are closed (in either order). */
static void hconn_closed(uv_handle_t *h) {
  hconn_t *c = h->data;
  if (++c->closes < 2)
    return;
  hostile_t *s = c->srv;
  for (hconn_t **pp = &s->conns; *pp != NULL; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  s->open--;
  free(c);
}

static void hconn_close(hconn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->timer, hconn_closed);
  uv_close((uv_handle_t *)&c->tcp, hconn_closed);
}

typedef struct hwrite_s {
  uv_write_t req;
  hconn_t *c;
  int then; /* 0 nothing, 1 close, 2 continue the mode */
  char bytes[];
} hwrite_t;

static void hconn_more(hconn_t *c);

static void hwritten(uv_write_t *w, int status) {
  hwrite_t *hw = (hwrite_t *)w;
  hconn_t *c = hw->c;
  if (status < 0 && !c->closing) {
    c->srv->client_closed++;
    hconn_close(c);
  } else if (!c->closing && hw->then == 1) {
    hconn_close(c);
  } else if (!c->closing && hw->then == 2) {
    hconn_more(c);
  }
  free(hw);
}

static void hsend(hconn_t *c, const void *bytes, size_t len, int then) {
  if (c->closing)
    return;
  hwrite_t *hw = malloc(sizeof(*hw) + len);
  assert_non_null(hw);
  hw->c = c;
  hw->then = then;
  memcpy(hw->bytes, bytes, len);
  uv_buf_t b = uv_buf_init(hw->bytes, (unsigned)len);
  if (uv_write(&hw->req, (uv_stream_t *)&c->tcp, &b, 1, hwritten) != 0) {
    free(hw);
    hconn_close(c);
  }
}

static void hsendf(hconn_t *c, int then, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  assert_true(n > 0 && (size_t)n < sizeof(buf));
  hsend(c, buf, (size_t)n, then);
}

/* /later's answer, 300 ms after the request. */
static void hlater_tick(uv_timer_t *t) {
  hsendf(t->data, 1,
         "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n"
         "\r\nlater\n");
}

static void hslow_tick(uv_timer_t *t) {
  hconn_t *c = t->data;
  hsend(c, "x", 1, 0);
  if (++c->sent == 10)
    uv_timer_stop(t);
}

/* The next piece of an endless or huge answer, once the last is written. */
static void hconn_more(hconn_t *c) {
  if (c->mode == H_ENDLESS) {
    static char chunk[16384 + 16];
    int h = snprintf(chunk, 16, "%x\r\n", 16384);
    memset(chunk + h, 'e', 16384);
    memcpy(chunk + h + 16384, "\r\n", 2);
    hsend(c, chunk, (size_t)h + 16384 + 2, 2);
  } else if (c->mode == H_HUGE) {
    if (c->sent++ < 256) {
      char line[1100];
      int h = snprintf(line, 32, "X-Pad-%03u: ", c->sent);
      memset(line + h, 'p', 1024);
      memcpy(line + h + 1024, "\r\n", 2);
      hsend(c, line, (size_t)h + 1024 + 2, 2);
    } else {
      hsendf(c, 1, "Content-Length: 2\r\n\r\nok");
    }
  }
}

static void hgzip(hconn_t *c, size_t n) {
  char *raw = malloc(n), *gz = malloc(n / 100 + 1024);
  assert_non_null(raw);
  assert_non_null(gz);
  memset(raw, 'a', n);
  z_stream z;
  memset(&z, 0, sizeof(z));
  assert_int_equal(
      deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)raw;
  z.avail_in = (uInt)n;
  z.next_out = (Bytef *)gz;
  z.avail_out = (uInt)(n / 100 + 1024);
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t glen = z.total_out;
  deflateEnd(&z);
  hsendf(c, 0,
         "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
         "Content-Length: %zu\r\nConnection: close\r\n\r\n",
         glen);
  hsend(c, gz, glen, 1);
  free(raw);
  free(gz);
}

/* A whole request is in c->req: answer it by its path. */
static void hanswer(hconn_t *c) {
  char path[256];
  if (sscanf(c->req, "%*s %255s", path) != 1) {
    hconn_close(c);
    return;
  }
  c->answered = 1;
  if (strcmp(path, "/fast") == 0) {
    hsendf(c, 1,
           "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: yes\r\n"
           "Content-Length: 5\r\nConnection: close\r\n\r\nfast\n");
  } else if (strcmp(path, "/redirect") == 0) {
    hsendf(c, 1,
           "HTTP/1.1 302 Found\r\nLocation: /fast\r\nX-Hop: 1\r\n"
           "Content-Length: 0\r\nConnection: close\r\n\r\n");
  } else if (strcmp(path, "/close") == 0) {
    hsendf(c, 1,
           "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n"
           "\r\nclosed\n");
  } else if (strcmp(path, "/echo") == 0) {
    hsendf(c, 0,
           "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n"
           "\r\n",
           c->len);
    hsend(c, c->req, c->len, 1);
  } else if (strncmp(path, "/gzip?n=", 8) == 0) {
    hgzip(c, (size_t)strtoul(path + 8, NULL, 10));
  } else if (strcmp(path, "/garbage") == 0) {
    hsendf(c, 1, "\x16\x03 this is no HTTP response\r\n\r\n");
  } else if (strcmp(path, "/reset-mid") == 0) {
    static char body[1000];
    memset(body, 'r', sizeof(body));
    hsendf(c, 0, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    hsend(c, body, sizeof(body), 0);
    c->closing = 1;
    uv_close((uv_handle_t *)&c->timer, hconn_closed);
    uv_tcp_close_reset(&c->tcp, hconn_closed);
  } else if (strcmp(path, "/endless") == 0) {
    c->mode = H_ENDLESS;
    hsendf(c, 2, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  } else if (strcmp(path, "/slow1") == 0) {
    c->mode = H_SLOW1;
    hsendf(c, 0, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
    uv_timer_start(&c->timer, hslow_tick, 1000, 1000);
  } else if (strcmp(path, "/later") == 0) {
    uv_timer_start(&c->timer, hlater_tick, 300, 0);
  } else if (strcmp(path, "/huge-headers") == 0) {
    c->mode = H_HUGE;
    hsendf(c, 2, "HTTP/1.1 200 OK\r\n");
  } else if (strcmp(path, "/partial") == 0) {
    static char body[4096];
    memset(body, 'p', sizeof(body));
    hsendf(c, 0, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
    hsend(c, body, sizeof(body), 0);
  } else if (strcmp(path, "/hold") == 0) {
    /* nothing */
  } else {
    hsendf(c, 1,
           "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
           "Connection: close\r\n\r\n");
  }
}

static void halloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  hconn_t *c = h->data;
  (void)size;
  if (c->answered || c->len >= sizeof(c->req) - 1) {
    static char sink[65536]; /* read and dropped: only the end matters */
    *b = uv_buf_init(sink, sizeof(sink));
  } else {
    *b = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
  }
}

/* The request is whole: its head, and a body of its Content-Length. */
static int hcomplete(hconn_t *c) {
  c->req[c->len] = '\0';
  char *end = strstr(c->req, "\r\n\r\n");
  if (end == NULL)
    return 0;
  size_t head = (size_t)(end + 4 - c->req);
  const char *cl = strcasestr(c->req, "\r\nContent-Length:");
  size_t body = cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
  return c->len >= head + body;
}

static void hread(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  hconn_t *c = st->data;
  (void)b;
  if (n < 0) {
    if (!c->closing)
      c->srv->client_closed++;
    hconn_close(c);
    return;
  }
  if (c->answered || n == 0)
    return;
  c->len += (size_t)n;
  if (hcomplete(c))
    hanswer(c);
}

static void haccept(uv_stream_t *l, int status) {
  hostile_t *s = l->data;
  if (status < 0)
    return;
  hconn_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->srv = s;
  assert_int_equal(uv_tcp_init(l->loop, &c->tcp), 0);
  assert_int_equal(uv_timer_init(l->loop, &c->timer), 0);
  c->tcp.data = c->timer.data = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->timer, NULL);
    uv_close((uv_handle_t *)&c->tcp, NULL);
    return;
  }
  c->next = s->conns;
  s->conns = c;
  s->accepted++;
  s->open++;
  uv_read_start((uv_stream_t *)&c->tcp, halloc, hread);
}

static void hostile_start(uv_loop_t *loop, hostile_t *s) {
  memset(s, 0, sizeof(*s));
  struct sockaddr_storage to;
  listen_loopback(loop, &s->listener, 128, haccept, s, &to);
  s->port = ntohs(((struct sockaddr_in *)&to)->sin_port);
}

/* Close the listener and every connection; run the loop afterwards. */
static void hostile_stop(hostile_t *s) {
  uv_close((uv_handle_t *)&s->listener, NULL);
  for (hconn_t *c = s->conns; c != NULL; c = c->next)
    hconn_close(c);
}

/* ---- silent: accepts, reads, never answers ----------------------------- */

typedef struct silent_s {
  uv_tcp_t listener;
  int port;
  uv_tcp_t conn;
  int have_conn;
  size_t bytes;
  unsigned char first;
  int client_closed;
} silent_t;

static void salloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  static char buf[65536];
  (void)h;
  (void)size;
  *b = uv_buf_init(buf, sizeof(buf));
}

static void sread(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  silent_t *s = st->data;
  if (n < 0) {
    s->client_closed++;
    uv_read_stop(st);
    return;
  }
  if (n > 0 && s->bytes == 0)
    s->first = (unsigned char)b->base[0];
  s->bytes += (size_t)n;
}

static void saccept(uv_stream_t *l, int status) {
  silent_t *s = l->data;
  if (status < 0 || s->have_conn)
    return;
  assert_int_equal(uv_tcp_init(l->loop, &s->conn), 0);
  s->conn.data = s;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
  s->have_conn = 1;
  uv_read_start((uv_stream_t *)&s->conn, salloc, sread);
}

static void silent_start(uv_loop_t *loop, silent_t *s) {
  memset(s, 0, sizeof(*s));
  struct sockaddr_storage to;
  listen_loopback(loop, &s->listener, 16, saccept, s, &to);
  s->port = ntohs(((struct sockaddr_in *)&to)->sin_port);
}

static void silent_stop(silent_t *s) {
  uv_close((uv_handle_t *)&s->listener, NULL);
  if (s->have_conn)
    uv_close((uv_handle_t *)&s->conn, NULL);
}

/* ---- a listener whose accept queue is full ------------------------------ */

typedef struct backlog_full_s {
  uv_os_sock_t listen_fd, filler_fd;
  int port;
} backlog_full_t;

/* listen(fd, 0) queues one connection; the filler takes that place, and
 * the kernel drops the SYNs of every later connect, which then waits. */
static void backlog_full_start(backlog_full_t *b) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  b->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(b->listen_fd != SOCK_NONE);
  assert_int_equal(bind(b->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(b->listen_fd, 0), 0);
  socklen_t alen = sizeof(a);
  assert_int_equal(getsockname(b->listen_fd, (struct sockaddr *)&a, &alen), 0);
  b->port = ntohs(a.sin_port);
  b->filler_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_int_equal(connect(b->filler_fd, (struct sockaddr *)&a, sizeof(a)), 0);
}

static void backlog_full_stop(backlog_full_t *b) {
  sock_close(b->filler_fd);
  sock_close(b->listen_fd);
}

/* ---- a server on a thread of its own ----------------------------------- */

/* One connection on a plain thread, outside the test's loop: it reads a
 * request and answers "late\n" after `delay_ms`, `requests` times on the
 * same connection (keep-alive; the last answer says Connection: close),
 * then closes it.  Nothing of it keeps the loop alive: only what the
 * client has in flight does, and nothing of it wakes the loop but the
 * answers.  A client silent for 10 s ends it. */
typedef struct thread_server_s {
  uv_os_sock_t fd;
  int port;
  unsigned delay_ms;
  int requests;
  int answered;
  uv_thread_t tid;
} thread_server_t;

static void thread_server_run(void *arg) {
  thread_server_t *t = arg;
  uv_os_sock_t c = accept(t->fd, NULL, NULL);
  if (c == SOCK_NONE)
    return;
#ifdef _WIN32
  DWORD tv = 10000; /* (milliseconds there) */
#else
  struct timeval tv = {10, 0};
#endif
  (void)setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, (const void *)&tv, sizeof(tv));
  char buf[4096] = "";
  size_t len = 0;
  while (t->answered < t->requests) {
    char *end;
    while ((end = strstr(buf, "\r\n\r\n")) == NULL) {
      if (len >= sizeof(buf) - 1)
        goto out;
      ssize_t n = recv(c, buf + len, (int)(sizeof(buf) - 1 - len), 0);
      if (n <= 0)
        goto out;
      len += (size_t)n;
      buf[len] = '\0';
    }
    size_t used = (size_t)(end + 4 - buf);
    memmove(buf, buf + used, len - used + 1);
    len -= used;
    usleep(t->delay_ms * 1000);
    bool last = ++t->answered == t->requests;
    char answer[128];
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n%s\r\nlate\n",
                     last ? "Connection: close\r\n" : "");
    if (send(c, answer, n, 0) < 0) {
      perror("thread server");
      break;
    }
  }
out:
  sock_close(c);
}

static void thread_server_start_n(thread_server_t *t, unsigned delay_ms,
                                  int requests) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  t->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(t->fd != SOCK_NONE);
  assert_int_equal(bind(t->fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(t->fd, 4), 0);
  socklen_t alen = sizeof(a);
  assert_int_equal(getsockname(t->fd, (struct sockaddr *)&a, &alen), 0);
  t->port = ntohs(a.sin_port);
  t->delay_ms = delay_ms;
  t->requests = requests;
  t->answered = 0;
  assert_int_equal(uv_thread_create(&t->tid, thread_server_run, t), 0);
}

static void thread_server_start(thread_server_t *t, unsigned delay_ms) {
  thread_server_start_n(t, delay_ms, 1);
}

static void thread_server_join(thread_server_t *t) {
  assert_int_equal(uv_thread_join(&t->tid), 0);
  sock_close(t->fd);
}

/* Open descriptors of this process. */
static int open_fds(void) {
#if defined(_WIN32)
  return -1; /* none to count (under wine, /proc is wine's own process) */
#endif
  int n = 0;
  uv_fs_t req;
  if (uv_fs_scandir(NULL, &req, "/proc/self/fd", 0, NULL) < 0)
    return -1;
  uv_dirent_t ent;
  while (uv_fs_scandir_next(&req, &ent) != UV_EOF)
    n++;
  uv_fs_req_cleanup(&req);
  return n - 1; /* scandir's own */
}

#endif

/* The demo server: plain libuv, one llhttp request parser per connection.
 *
 * Every connection owns two handles (its socket and a timer for the slow
 * endpoints) and is freed when both have closed; the server counts open
 * handles so that stop can report when the loop holds nothing of it.
 *
 * Input is appended to the connection's `pending` bytes and parsed from
 * there one request at a time: the parser pauses at the end of each
 * request, which is answered before the bytes after it (a pipelined next
 * request) are looked at.  A response that keeps the connection alive
 * makes it idle again; the last one ends with uv_shutdown, so the client
 * sees the whole body before end of stream rather than a reset. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>

#include "demo-server.h"

/* Unparsed input kept per connection while a request is being answered;
 * beyond it, reading pauses until the answer is out. */
#define MAX_PENDING (64 * 1024)

typedef struct conn_s conn_t;

struct demo_server_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  int open_handles;
  int stopping;
  conn_t *conns; /* doubly linked, for stop */
  unsigned long accepted;
  unsigned long requests;
  void (*done)(void *);
  void *done_arg;
};

struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t timer;
  demo_server_t *srv;
  conn_t *prev, *next;
  llhttp_t parser;
  char path[256];
  size_t path_len;
  int message_done; /* the parser paused at the end of a request */
  int keep_alive;   /* the client allows a request after this one */
  int busy;         /* a request is being answered: input waits */
  int last;         /* no request after this one: ignore further input */
  int dispatching;  /* inside dispatch(): conn_continue's loop goes on */
  int reading;
  int closing;
  int handles; /* open handles of the two; freed at 0 */
  size_t trickled;
  char *pending; /* input not parsed yet */
  size_t pending_len, pending_cap;
};

/* A write request carrying its own bytes. */
typedef struct {
  uv_write_t req;
  char data[];
} wbuf_t;

static void conn_continue(conn_t *c);

/* ---- teardown ------------------------------------------------------------ */

static void server_handle_closed(demo_server_t *s) {
  if (--s->open_handles == 0 && s->stopping) {
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    free(s);
    if (done != NULL)
      done(arg);
  }
}

static void conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  demo_server_t *s = c->srv;
  /* libuv runs close callbacks in no promised order: count them. */
  if (--c->handles == 0) {
    free(c->pending);
    free(c);
  }
  server_handle_closed(s);
}

static void conn_close(conn_t *c, int reset) {
  if (c->closing)
    return;
  c->closing = 1;
  demo_server_t *s = c->srv;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  /* A reset needs a socket with no shutdown queued, which only /reset,
   * the one caller asking for it, guarantees. */
  if (!reset || uv_tcp_close_reset(&c->tcp, conn_handle_closed) != 0)
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  free(req);
  conn_close(c, 0);
}

/* End the connection: the kernel sends FIN after the queued bytes. */
static void conn_end(conn_t *c) {
  uv_shutdown_t *req = malloc(sizeof(*req));
  if (req == NULL) {
    conn_close(c, 0);
    return;
  }
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
    free(req);
    conn_close(c, 0);
  }
}

/* ---- writing ------------------------------------------------------------- */

static void write_cb(uv_write_t *req, int status) {
  (void)status; /* a failed write shows as a read error or end of stream */
  free(req);
}

/* Send `head` then `body` (may be NULL): at once if the socket takes
 * them, else what is left is copied and queued after what is queued. */
static void conn_write2(conn_t *c, const char *head, size_t hlen,
                        const char *body, size_t blen) {
  if (c->closing)
    return;
  /* Written at once, a response needs no write request, and libuv 1.44
   * then has no epoll_ctl to make afterwards (it re-arms the watcher of a
   * reading stream after every completed uv_write): the backend's CPU is
   * the benchmarked gateways' CPU. */
  uv_buf_t bufs[2] = {uv_buf_init((char *)head, (unsigned int)hlen),
                      uv_buf_init((char *)body, (unsigned int)blen)};
  int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, blen > 0 ? 2 : 1);
  if (n == UV_EAGAIN || n == UV_ENOSYS)
    n = 0;
  if (n < 0) {
    conn_close(c, 0);
    return;
  }
  size_t done = (size_t)n;
  if (done == hlen + blen)
    return;
  /* The rest of head, then the rest of body. */
  size_t hdone = done < hlen ? done : hlen;
  size_t bdone = done - hdone;
  head += hdone;
  hlen -= hdone;
  body += bdone;
  blen -= bdone;
  wbuf_t *w = malloc(sizeof(*w) + hlen + blen);
  if (w == NULL) {
    conn_close(c, 0);
    return;
  }
  memcpy(w->data, head, hlen);
  if (blen > 0)
    memcpy(w->data + hlen, body, blen);
  uv_buf_t b = uv_buf_init(w->data, (unsigned int)(hlen + blen));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
    free(w);
    conn_close(c, 0);
  }
}

static void conn_write(conn_t *c, const char *data, size_t len) {
  conn_write2(c, data, len, NULL, 0);
}

/* The response's bytes are all queued.  libuv writes a stream's queue in
 * order, so the next request may be answered at once: its bytes go out
 * after these. */
static void response_done(conn_t *c) {
  if (c->last) {
    conn_end(c);
    return;
  }
  c->busy = 0;
  if (!c->dispatching)
    conn_continue(c); /* answered later (a timer): look at what waited */
}

/* The value of the Connection header for a well-behaved response; decides
 * whether the connection serves another request after it. */
static const char *connection_header(conn_t *c) {
  if (!c->keep_alive || c->srv->stopping)
    c->last = 1;
  return c->last ? "close" : "keep-alive";
}

/* One whole response in one write.  `connection` is the Connection
 * header's value, or NULL for none. */
static void respond_with(conn_t *c, int status, const char *reason,
                         const char *body, const char *connection) {
  char head[256];
  size_t blen = strlen(body);
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n"
                   "%s%s%s"
                   "\r\n",
                   status, reason, blen, connection ? "Connection: " : "",
                   connection ? connection : "", connection ? "\r\n" : "");
  conn_write2(c, head, (size_t)n, body, blen);
  response_done(c);
}

static void respond(conn_t *c, int status, const char *reason,
                    const char *body) {
  respond_with(c, status, reason, body, connection_header(c));
}

/* ---- endpoints ----------------------------------------------------------- */

static void slow_fire(uv_timer_t *t) {
  respond(t->data, 200, "OK", "slow\n");
}

static const char trickle_body[DEMO_TRICKLE_BYTES + 1] = "one byte at a time.\n";

static void trickle_fire(uv_timer_t *t) {
  conn_t *c = t->data;
  conn_write(c, &trickle_body[c->trickled++], 1);
  if (c->trickled == DEMO_TRICKLE_BYTES) {
    uv_timer_stop(t);
    conn_end(c);
  }
}

static void big(conn_t *c) {
  enum { CHUNK = 4096 };
  char head[160];
  int hn = snprintf(head, sizeof(head),
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Transfer-Encoding: chunked\r\n"
                    "Connection: %s\r\n"
                    "\r\n",
                    connection_header(c));
  char chunk[16 + CHUNK + 2];
  conn_write(c, head, (size_t)hn);
  for (size_t sent = 0; sent < DEMO_BIG_BYTES; sent += CHUNK) {
    size_t n = DEMO_BIG_BYTES - sent < CHUNK ? DEMO_BIG_BYTES - sent : CHUNK;
    int h = snprintf(chunk, 16, "%zx\r\n", n);
    for (size_t i = 0; i < n; i++) /* a pattern a client can check */
      chunk[h + i] = (char)('a' + (sent + i) % 26);
    memcpy(chunk + h + n, "\r\n", 2);
    conn_write(c, chunk, (size_t)h + n + 2);
  }
  conn_write(c, "0\r\n\r\n", 5);
  response_done(c);
}

static void stats(conn_t *c) {
  char body[96];
  snprintf(body, sizeof(body), "{\"connections\":%lu,\"requests\":%lu}\n",
           c->srv->accepted, c->srv->requests);
  respond(c, 200, "OK", body);
}

static void dispatch(conn_t *c) {
  c->path[strcspn(c->path, "?")] = '\0';
  const char *p = c->path;
  c->busy = 1;
  c->srv->requests++;
  if (strcmp(p, "/") == 0) {
    respond(c, 200, "OK",
            "/fast /slow /big /missing /error /stats /close-after /reset "
            "/hang /trickle /half /malformed\n");
  } else if (strcmp(p, "/fast") == 0) {
    respond(c, 200, "OK", DEMO_FAST_BODY);
  } else if (strcmp(p, "/slow") == 0) {
    uv_timer_start(&c->timer, slow_fire, DEMO_SLOW_MS, 0);
  } else if (strcmp(p, "/big") == 0) {
    big(c);
  } else if (strcmp(p, "/missing") == 0) {
    respond(c, 404, "Not Found", "not found\n");
  } else if (strcmp(p, "/error") == 0) {
    respond(c, 500, "Internal Server Error", "something broke\n");
  } else if (strcmp(p, "/stats") == 0) {
    stats(c);
  } else if (strcmp(p, "/close-after") == 0) {
    /* A well-formed keep-alive answer, then FIN: what the client sees when
     * a server's keep-alive timeout runs out just after a response. */
    c->last = 1;
    respond_with(c, 200, "OK", DEMO_FAST_BODY, NULL);
  } else if (strcmp(p, "/reset") == 0) {
    c->last = 1;
    conn_close(c, 1);
  } else if (strcmp(p, "/hang") == 0) {
    /* Nothing: the client's timeout, its close, or stop ends it. */
    c->last = 1;
  } else if (strcmp(p, "/trickle") == 0) {
    char head[128];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n",
                     DEMO_TRICKLE_BYTES);
    c->last = 1;
    conn_write(c, head, (size_t)n);
    uv_timer_start(&c->timer, trickle_fire, DEMO_TRICKLE_MS, DEMO_TRICKLE_MS);
  } else if (strcmp(p, "/half") == 0) {
    char msg[128];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%.*s",
                     DEMO_HALF_PROMISED, DEMO_HALF_SENT, "0123456789");
    c->last = 1;
    conn_write(c, msg, (size_t)n);
    conn_end(c);
  } else if (strcmp(p, "/malformed") == 0) {
    static const char junk[] = "SPDY/9 banana\r\n\r\n";
    c->last = 1;
    conn_write(c, junk, sizeof(junk) - 1);
    conn_end(c);
  } else {
    respond(c, 404, "Not Found", "no such endpoint\n");
  }
}

/* ---- reading ------------------------------------------------------------- */

static int on_message_begin(llhttp_t *parser) {
  conn_t *c = parser->data;
  c->path_len = 0;
  c->path[0] = '\0';
  return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len) {
  conn_t *c = parser->data;
  size_t room = sizeof(c->path) - 1 - c->path_len;
  if (len > room)
    len = room; /* a truncated path is just an unknown endpoint */
  memcpy(c->path + c->path_len, at, len);
  c->path_len += len;
  c->path[c->path_len] = '\0';
  return 0;
}

/* Stop at the end of each request: the bytes after it belong to the next
 * one, which must wait for this one's answer. */
static int on_message_complete(llhttp_t *parser) {
  conn_t *c = parser->data;
  c->message_done = 1;
  c->keep_alive = llhttp_should_keep_alive(parser);
  return HPE_PAUSED;
}

static const llhttp_settings_t request_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_message_complete = on_message_complete,
};

/* Parse from `pending`; returns how many bytes were used: up to the end of
 * a request (then answered), all of them, or all after a parse error
 * (answered 400, the connection's last answer). */
static size_t conn_parse(conn_t *c) {
  const char *data = c->pending;
  llhttp_errno_t e = llhttp_execute(&c->parser, data, c->pending_len);
  if (e == HPE_OK)
    return c->pending_len;
  if (e == HPE_PAUSED && c->message_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
    c->message_done = 0;
    llhttp_resume(&c->parser);
    c->dispatching = 1;
    dispatch(c);
    c->dispatching = 0;
    return used;
  }
  c->busy = 1;
  c->last = 1;
  respond_with(c, 400, "Bad Request", "bad request\n", "close");
  return c->pending_len;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* One buffer for every connection: read_cb copies what arrived into the
   * connection's pending bytes right after this. */
  static char slab[64 * 1024];
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread < 0) {
    /* The client went away (after its responses, or while /hang waited). */
    conn_close(c, 0);
    return;
  }
  if (nread == 0 || c->last)
    return; /* nothing, or nothing we will answer */
  size_t len = (size_t)nread;
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_cap ? c->pending_cap : 1024;
    while (cap < c->pending_len + len)
      cap *= 2;
    char *p = realloc(c->pending, cap);
    if (p == NULL) {
      conn_close(c, 0);
      return;
    }
    c->pending = p;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, buf->base, len);
  c->pending_len += len;
  conn_continue(c);
}

/* Answer the requests waiting in `pending`, in order, for as long as each
 * is answered at once; then read more unless too much is waiting. */
static void conn_continue(conn_t *c) {
  while (!c->busy && !c->last && !c->closing && c->pending_len > 0) {
    size_t used = conn_parse(c);
    if (c->closing)
      return;
    memmove(c->pending, c->pending + used, c->pending_len - used);
    c->pending_len -= used;
  }
  if (c->closing)
    return;
  int want = !c->last && c->pending_len < MAX_PENDING;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
      conn_close(c, 0);
      return;
    }
    c->reading = 1;
  } else if (!want && c->reading && !c->last) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

static void on_connection(uv_stream_t *server, int status) {
  demo_server_t *s = server->data;
  if (status < 0 || s->stopping)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = s;
  c->handles = 2;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  s->open_handles += 2;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
  c->parser.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c, 0);
    return;
  }
  s->accepted++;
  /* /big is many small writes: on a kept-alive connection Nagle would
   * hold them back until the client's delayed ACK (~40 ms). */
  uv_tcp_nodelay(&c->tcp, 1);
  conn_continue(c);
}

/* ---- the server ---------------------------------------------------------- */

static void listener_closed(uv_handle_t *h) { server_handle_closed(h->data); }

int demo_server_start(uv_loop_t *loop, const char *ip, int port,
                      demo_server_t **out) {
  if (loop == NULL || ip == NULL || out == NULL || port < 0 || port > 65535)
    return UV_EINVAL;
  struct sockaddr_storage addr;
  int rc = strchr(ip, ':') != NULL
               ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&addr)
               : uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;
  demo_server_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  s->loop = loop;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->open_handles = 1;
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc == 0) {
    int len = sizeof(addr);
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len);
  }
  if (rc != 0) {
    demo_server_stop(s, NULL, NULL);
    return rc;
  }
  s->port = ntohs(addr.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&addr)->sin6_port
                      : ((struct sockaddr_in *)&addr)->sin_port);
  *out = s;
  return 0;
}

int demo_server_port(const demo_server_t *s) { return s->port; }

void demo_server_stop(demo_server_t *s, void (*done)(void *), void *arg) {
  s->stopping = 1;
  s->done = done;
  s->done_arg = arg;
  while (s->conns != NULL)
    conn_close(s->conns, 0);
  uv_close((uv_handle_t *)&s->listener, listener_closed);
}

int demo_server_refused_port(const char *ip) {
  struct sockaddr_in addr;
  socklen_t len = sizeof(addr);
  int rc = uv_ip4_addr(ip, 0, &addr);
  if (rc != 0)
    return rc;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    rc = uv_translate_sys_error(errno);
    close(fd);
    return rc;
  }
  /* Never listened on: once closed, a connect gets RST, i.e. refused. */
  close(fd);
  return ntohs(addr.sin_port);
}

/* httpd: one llhttp request parser per connection.
 *
 * While a connection is idle, input is parsed straight from the read
 * buffer; whatever follows the end of a request (a pipelined next one), or
 * arrives while a request is being answered, is kept in `pending` and
 * parsed once the answer is written.  The parser pauses at the end of
 * every request for that.  The request line's target and the headers are
 * copied as they come (llhttp hands them over in pieces when they span two
 * reads) into `head`, one buffer per connection reused from request to
 * request.
 *
 * A connection's memory is freed once its handle is closed and its request,
 * if any, finished: an aborted request may be finished later (the gateway's
 * after its cancelled fan-out settles).  The server goes when the listener
 * and every connection have. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "httpd.h"

#define MAX_PENDING (64 * 1024) /* unparsed input kept per connection */
#define MAX_HEAD (16 * 1024)    /* target and headers; offsets fit 16 bits */
#define MAX_HEADERS 64

typedef struct conn_s conn_t;

struct httpd_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int listening; /* the listener is not closed yet */
  int port;
  httpd_handler_cb handler;
  void *arg;
  conn_t *conns;   /* open connections, for httpd_stop */
  size_t nconns;   /* connections not freed yet */
  int stopping;    /* 0, 1 draining, 2 closing */
  httpd_stats_t stats;
  void (*done)(void *);
  void *done_arg;
};

struct conn_s {
  httpd_req_t req; /* first: a request's address is its connection's */
  uv_tcp_t tcp;
  httpd_t *srv;
  conn_t *prev, *next;
  llhttp_t parser;
  /* The target, then each header's name and value, NUL-terminated; `mark`
   * is where the piece being received starts. */
  char *head;
  size_t head_len, head_cap, mark;
  uint16_t offsets[MAX_HEADERS][2];
  httpd_header_t headers[MAX_HEADERS];
  size_t nheaders;
  int in_body;      /* headers done: what comes now are trailers */
  int too_large;    /* the head went over a limit */
  int message_done; /* the parser paused at the end of a request */
  int head_only;    /* the request is a HEAD */
  int in_flight;    /* handed to the handler and not finished */
  int dispatching;  /* inside the handler, called from the parse loop */
  int last;         /* no request after the current one */
  int reading;
  int ending;  /* shutdown requested: close once it is done */
  int closing; /* uv_close called */
  int closed;  /* ... and its callback has run */
  size_t writes; /* write requests not completed */
  char *pending; /* input not parsed yet */
  size_t pending_len, pending_cap;
};

/* A write request carrying its bytes. */
typedef struct wbuf_s {
  uv_write_t req;
  conn_t *conn;
  char data[];
} wbuf_t;

static void conn_continue(conn_t *c);

/* ---- teardown ------------------------------------------------------------ */

static void server_maybe_done(httpd_t *s) {
  if (!s->stopping || s->listening || s->nconns > 0)
    return;
  if (s->done != NULL)
    s->done(s->done_arg);
  free(s);
}

static void conn_free_if_done(conn_t *c) {
  if (!c->closed || c->in_flight)
    return;
  httpd_t *s = c->srv;
  free(c->head);
  free(c->pending);
  free(c);
  s->nconns--;
  server_maybe_done(s);
}

/* The abort is told from here, a libuv callback, rather than from
 * conn_close, which may run inside the handler's own httpd_write. */
static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->in_flight && c->req.on_abort != NULL)
    c->req.on_abort(&c->req); /* may finish it: freed below, not there */
  c->closed = 1;
  conn_free_if_done(c);
}

static void conn_close(conn_t *c, int reset) {
  if (c->closing)
    return;
  c->closing = 1;
  httpd_t *s = c->srv;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  /* A reset is refused while a shutdown is queued: then a plain close. */
  if (!reset || uv_tcp_close_reset(&c->tcp, conn_closed) != 0)
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  free(req);
  conn_close(c, 0);
}

/* The connection's last response is written or queued: the kernel sends
 * FIN after it (uv_shutdown waits for the queue), then we close.  Nothing
 * is read any more, so that a client's end of input cannot cut the
 * response short. */
static void conn_end(conn_t *c) {
  c->last = 1;
  if (c->ending || c->closing)
    return;
  c->ending = 1;
  if (c->reading)
    uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
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

static void write_cb(uv_write_t *w, int status) {
  wbuf_t *b = (wbuf_t *)w;
  conn_t *c = b->conn;
  free(b);
  c->writes--;
  if (c->closing)
    return; /* status is UV_ECANCELED: conn_closed does the rest */
  if (status < 0) {
    conn_close(c, 0);
    return;
  }
  if (c->writes == 0 && !c->in_flight && !c->ending)
    conn_continue(c); /* the answer is out: on to the next request */
}

/* Send `a` then `b` (may be empty).  Usually the socket takes them at
 * once (uv_try_write): then no write request is needed, and libuv 1.44
 * has no epoll_ctl to make afterwards (it re-arms the watcher of a reading
 * stream after every completed uv_write).  What it does not take is copied
 * into a write request, queued after the earlier ones. */
static void conn_send(conn_t *c, const char *a, size_t alen, const char *b,
                      size_t blen) {
  if (c->closing || c->ending)
    return;
  size_t done = 0;
  if (c->writes == 0) {
    uv_buf_t bufs[2] = {uv_buf_init((char *)a, (unsigned int)alen),
                        uv_buf_init((char *)b, (unsigned int)blen)};
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, blen > 0 ? 2 : 1);
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
      conn_close(c, 0);
      return;
    }
    done = n > 0 ? (size_t)n : 0;
  }
  if (done == alen + blen)
    return;
  size_t adone = done < alen ? done : alen;
  size_t bdone = done - adone;
  wbuf_t *w = malloc(sizeof(*w) + (alen - adone) + (blen - bdone));
  if (w == NULL) {
    conn_close(c, 0);
    return;
  }
  memcpy(w->data, a + adone, alen - adone);
  if (blen > bdone)
    memcpy(w->data + (alen - adone), b + bdone, blen - bdone);
  w->conn = c;
  uv_buf_t buf = uv_buf_init(
      w->data, (unsigned int)((alen - adone) + (blen - bdone)));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb) != 0) {
    free(w);
    conn_close(c, 0);
    return;
  }
  c->writes++;
}

/* ---- answering ----------------------------------------------------------- */

int httpd_req_keep_alive(const httpd_req_t *req) {
  const conn_t *c = (const conn_t *)req;
  return !c->last && !c->srv->stopping && !c->closing;
}

void httpd_write(httpd_req_t *req, const void *data, size_t len) {
  conn_t *c = (conn_t *)req;
  if (c->in_flight)
    conn_send(c, data, len, NULL, 0);
}

void httpd_end(httpd_req_t *req, httpd_end_t how) {
  conn_t *c = (conn_t *)req;
  if (!c->in_flight)
    return;
  c->in_flight = 0;
  if (c->closing)
    conn_free_if_done(c); /* aborted: nothing else to do */
  else if (how == HTTPD_RESET)
    conn_close(c, 1);
  else if (how == HTTPD_CLOSE || !httpd_req_keep_alive(req))
    conn_end(c);
  else if (!c->dispatching && c->writes == 0)
    conn_continue(c); /* answered later (a timer, a fan-out) */
}

static int format_head(char *dst, size_t cap, int status,
                       const char *headers, size_t len, int keep_alive) {
  return snprintf(dst, cap,
                  "HTTP/1.1 %d %s\r\n"
                  "%s"
                  "Content-Length: %zu\r\n"
                  "Connection: %s\r\n"
                  "\r\n",
                  status, httpd_reason(status), headers ? headers : "", len,
                  keep_alive ? "keep-alive" : "close");
}

void httpd_respond(httpd_req_t *req, int status, const char *headers,
                   const void *body, size_t len) {
  conn_t *c = (conn_t *)req;
  int keep = httpd_req_keep_alive(req);
  if (c->in_flight && !c->closing) {
    char buf[512], *head = buf;
    int n = format_head(buf, sizeof(buf), status, headers, len, keep);
    if (n >= (int)sizeof(buf) && (head = malloc((size_t)n + 1)) != NULL)
      format_head(head, (size_t)n + 1, status, headers, len, keep);
    if (n < 0 || head == NULL)
      conn_close(c, 0);
    else
      conn_send(c, head, (size_t)n, body, c->head_only ? 0 : len);
    if (head != buf)
      free(head);
  }
  httpd_end(req, keep ? HTTPD_KEEP : HTTPD_CLOSE);
}

const char *httpd_reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

/* ---- parsing ------------------------------------------------------------- */

/* Room for `need` bytes in *buf, whose capacity doubles from `first`. */
static int reserve(char **buf, size_t *cap, size_t need, size_t first) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : first;
  while (n < need)
    n *= 2;
  char *p = realloc(*buf, n);
  if (p == NULL)
    return UV_ENOMEM;
  *buf = p;
  *cap = n;
  return 0;
}

static int head_append(conn_t *c, const char *at, size_t len) {
  if (c->in_body)
    return 0;
  if (c->head_len + len > MAX_HEAD) {
    c->too_large = 1;
    return -1;
  }
  if (reserve(&c->head, &c->head_cap, c->head_len + len, 256) != 0)
    return -1;
  memcpy(c->head + c->head_len, at, len);
  c->head_len += len;
  return 0;
}

/* The piece being received is complete: terminate it.  Returns where it
 * starts, or -1. */
static long head_piece_end(conn_t *c) {
  size_t start = c->mark;
  if (head_append(c, "", 1) != 0)
    return -1;
  c->mark = c->head_len;
  return (long)start;
}

static int on_message_begin(llhttp_t *p) {
  conn_t *c = p->data;
  c->head_len = c->mark = c->nheaders = 0;
  c->in_body = c->too_large = 0;
  return 0;
}

static int on_piece(llhttp_t *p, const char *at, size_t len) {
  return head_append(p->data, at, len);
}

static int on_url_complete(llhttp_t *p) {
  return head_piece_end(p->data) < 0 ? -1 : 0;
}

static int on_header_field_complete(llhttp_t *p) {
  conn_t *c = p->data;
  if (c->in_body)
    return 0;
  if (c->nheaders == MAX_HEADERS) {
    c->too_large = 1;
    return -1;
  }
  long at = head_piece_end(c);
  c->offsets[c->nheaders][0] = (uint16_t)at;
  return at < 0 ? -1 : 0;
}

static int on_header_value_complete(llhttp_t *p) {
  conn_t *c = p->data;
  if (c->in_body)
    return 0;
  long at = head_piece_end(c);
  c->offsets[c->nheaders++][1] = (uint16_t)at;
  return at < 0 ? -1 : 0;
}

static int on_headers_complete(llhttp_t *p) {
  ((conn_t *)p->data)->in_body = 1;
  return 0;
}

/* Stop at the end of each request: the bytes after it belong to the next
 * one, which must wait for this one's answer. */
static int on_message_complete(llhttp_t *p) {
  ((conn_t *)p->data)->message_done = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_piece,
    .on_url_complete = on_url_complete,
    .on_header_field = on_piece,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_piece,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* Hand the request just parsed (or, with `error`, the one that could not
 * be) to the handler. */
static void dispatch(conn_t *c, int error) {
  httpd_t *s = c->srv;
  httpd_req_t *r = &c->req;
  memset(r, 0, sizeof(*r));
  c->message_done = 0;
  c->head_only = 0;
  r->error = error;
  r->method = r->path = r->query = "";
  if (error != 0) {
    c->last = 1;
  } else {
    if (!llhttp_should_keep_alive(&c->parser))
      c->last = 1;
    int method = llhttp_get_method(&c->parser);
    c->head_only = method == HTTP_HEAD;
    r->method = llhttp_method_name(method);
    r->path = c->head;
    char *q = strchr(c->head, '?');
    if (q != NULL) {
      *q = '\0';
      r->query = q + 1;
    }
    for (size_t i = 0; i < c->nheaders; i++) {
      c->headers[i].name = c->head + c->offsets[i][0];
      c->headers[i].value = c->head + c->offsets[i][1];
    }
    r->headers = c->headers;
    r->nheaders = c->nheaders;
  }
  c->in_flight = 1;
  s->stats.requests++;
  c->dispatching = 1;
  s->handler(r, s->arg);
  c->dispatching = 0;
}

/* Feed `data` to the parser.  Returns how many bytes it used: up to the
 * end of a request (dispatched before returning), or all of them (after a
 * parse error too: the 400 is the connection's last answer). */
static size_t conn_parse(conn_t *c, const char *data, size_t len) {
  llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
  if (e == HPE_OK)
    return len;
  if (e == HPE_PAUSED && c->message_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
    llhttp_resume(&c->parser);
    dispatch(c, 0);
    return used;
  }
  dispatch(c, c->too_large ? 431 : 400);
  return len;
}

static int conn_busy(const conn_t *c) {
  return c->in_flight || c->writes > 0 || c->last || c->closing;
}

static int keep_pending(conn_t *c, const char *data, size_t len) {
  if (reserve(&c->pending, &c->pending_cap, c->pending_len + len, 1024) != 0)
    return UV_ENOMEM;
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  /* One buffer for every connection: the read callback runs right after
   * this and keeps whatever it does not parse. */
  static char slab[64 * 1024];
  (void)h;
  (void)size;
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* The client is done or gone.  A request in flight is abandoned (as
     * nginx does by default, a half-close counts); a response being
     * written is let out first. */
    if (nread == UV_EOF && !c->in_flight && c->writes > 0)
      conn_end(c);
    else
      conn_close(c, 0);
    return;
  }
  if (c->last)
    return; /* nothing more will be parsed */
  const char *data = buf->base;
  size_t len = (size_t)nread;
  if (!conn_busy(c) && c->pending_len == 0) {
    size_t used = conn_parse(c, data, len);
    if (c->closing)
      return;
    data += used;
    len -= used;
  }
  if (len > 0 && !c->last && keep_pending(c, data, len) != 0) {
    conn_close(c, 0);
    return;
  }
  conn_continue(c);
}

/* Parse what waited, as long as each request is answered at once; then
 * read on unless too much is waiting. */
static void conn_continue(conn_t *c) {
  while (!conn_busy(c) && c->pending_len > 0) {
    size_t used = conn_parse(c, c->pending, c->pending_len);
    if (c->closing)
      return;
    memmove(c->pending, c->pending + used, c->pending_len - used);
    c->pending_len -= used;
  }
  if (c->closing || c->ending)
    return;
  if (!conn_busy(c) && c->srv->stopping) {
    conn_close(c, 0); /* idle while the server stops */
    return;
  }
  int want = c->pending_len < MAX_PENDING;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      conn_close(c, 0);
      return;
    }
    c->reading = 1;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* ---- the server ---------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status) {
  httpd_t *s = listener->data;
  if (status < 0)
    return;
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c, 0);
    return;
  }
  s->stats.connections++;
  /* Responses written in pieces (chunked ones) must not wait for the
   * client's delayed ACK. */
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  conn_continue(c);
}

static void listener_closed(uv_handle_t *h) {
  httpd_t *s = h->data;
  s->listening = 0;
  server_maybe_done(s);
}

int httpd_start(uv_loop_t *loop, const char *ip, int port,
                httpd_handler_cb handler, void *arg, httpd_t **out) {
  if (loop == NULL || ip == NULL || handler == NULL || out == NULL ||
      port < 0 || port > 65535)
    return UV_EINVAL;
  struct sockaddr_storage addr;
  int rc = strchr(ip, ':') != NULL
               ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&addr)
               : uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;
  httpd_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  s->loop = loop;
  s->handler = handler;
  s->arg = arg;
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->listening = 1;
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, on_connection);
  if (rc == 0) {
    int len = sizeof(addr);
    rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len);
  }
  if (rc != 0) {
    httpd_stop(s, 0, NULL, NULL);
    return rc;
  }
  s->port = ntohs(addr.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&addr)->sin6_port
                      : ((struct sockaddr_in *)&addr)->sin_port);
  *out = s;
  return 0;
}

int httpd_port(const httpd_t *s) { return s->port; }

const httpd_stats_t *httpd_stats(const httpd_t *s) { return &s->stats; }

void httpd_stop(httpd_t *s, int drain, void (*done)(void *), void *arg) {
  if (!s->stopping) {
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->listener, listener_closed);
  }
  if (s->stopping != 2)
    s->stopping = drain ? 1 : 2;
  if (s->stopping == 2) {
    while (s->conns != NULL) /* each close unlinks its connection */
      conn_close(s->conns, 0);
    return;
  }
  for (conn_t *c = s->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (!conn_busy(c))
      conn_close(c, 0);
  }
}

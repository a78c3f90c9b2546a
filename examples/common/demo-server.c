/* The demo server: one handler on httpd.  The well-behaved endpoints
 * answer with httpd_respond; the others write their bytes themselves
 * (httpd_write) and end the connection their own way (httpd_end).  /slow
 * and /trickle keep a timer per request; an abort (the client gone, or
 * demo_server_stop) closes it before the request is finished, so that
 * stop's callback comes after the last timer has closed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "demo-server.h"
#include "httpd.h"
#include "sock.h"

struct demo_server_s {
  uv_loop_t *loop;
  httpd_t *httpd;
  void (*done)(void *);
  void *done_arg;
  unsigned long long hanging; /* /hang requests whose client is still there */
};

#define TEXT_PLAIN "Content-Type: text/plain\r\n"

static void respond(httpd_req_t *req, int status, const char *body) {
  httpd_respond(req, status, TEXT_PLAIN, body, strlen(body));
}

/* Bytes as they are, then the end of the connection. */
static void write_and_close(httpd_req_t *req, const char *data, size_t len) {
  httpd_write(req, data, len);
  httpd_end(req, HTTPD_CLOSE);
}

/* ---- endpoints on a timer ------------------------------------------------ */

typedef struct timed_s {
  uv_timer_t timer;
  httpd_req_t *req; /* NULL once finished */
  size_t sent;
} timed_t;

static void timed_closed(uv_handle_t *h) {
  timed_t *t = h->data;
  if (t->req != NULL) /* aborted: finished now that the timer is gone */
    httpd_end(t->req, HTTPD_CLOSE);
  free(t);
}

/* The request is finished: the timer goes. */
static void timed_done(timed_t *t) {
  t->req = NULL;
  uv_close((uv_handle_t *)&t->timer, timed_closed);
}

static void timed_abort(httpd_req_t *req) {
  timed_t *t = req->data;
  uv_close((uv_handle_t *)&t->timer, timed_closed);
}

static void timed_start(demo_server_t *s, httpd_req_t *req, uint64_t ms,
                        uint64_t repeat, uv_timer_cb cb) {
  timed_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    httpd_end(req, HTTPD_RESET);
    return;
  }
  t->req = req;
  uv_timer_init(s->loop, &t->timer);
  t->timer.data = t;
  req->data = t;
  req->on_abort = timed_abort;
  uv_timer_start(&t->timer, cb, ms, repeat);
}

static void slow_fire(uv_timer_t *h) {
  timed_t *t = h->data;
  respond(t->req, 200, "slow\n");
  timed_done(t);
}

static const char trickle_body[DEMO_TRICKLE_BYTES + 1] =
    "one byte at a time.\n";

static void trickle_fire(uv_timer_t *h) {
  timed_t *t = h->data;
  httpd_write(t->req, &trickle_body[t->sent++], 1);
  if (t->sent == DEMO_TRICKLE_BYTES) {
    httpd_end(t->req, HTTPD_CLOSE);
    timed_done(t);
  }
}

/* ---- other endpoints ----------------------------------------------------- */

static void big(httpd_req_t *req) {
  enum { CHUNK = 4096 };
  char head[160];
  int keep = httpd_req_keep_alive(req);
  int hn = snprintf(head, sizeof(head),
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Type: application/octet-stream\r\n"
                    "Transfer-Encoding: chunked\r\n"
                    "Connection: %s\r\n"
                    "\r\n",
                    keep ? "keep-alive" : "close");
  char chunk[16 + CHUNK + 2];
  httpd_write(req, head, (size_t)hn);
  for (size_t sent = 0; sent < DEMO_BIG_BYTES; sent += CHUNK) {
    size_t n = DEMO_BIG_BYTES - sent < CHUNK ? DEMO_BIG_BYTES - sent : CHUNK;
    int h = snprintf(chunk, 16, "%zx\r\n", n);
    for (size_t i = 0; i < n; i++) /* a pattern a client can check */
      chunk[h + i] = (char)('a' + (sent + i) % 26);
    memcpy(chunk + h + n, "\r\n", 2);
    httpd_write(req, chunk, (size_t)h + n + 2);
  }
  httpd_write(req, "0\r\n\r\n", 5);
  httpd_end(req, keep ? HTTPD_KEEP : HTTPD_CLOSE);
}

static void stats(demo_server_t *s, httpd_req_t *req) {
  const httpd_stats_t *st = httpd_stats(s->httpd);
  char body[128];
  snprintf(body, sizeof(body),
           "{\"connections\":%llu,\"requests\":%llu,\"hanging\":%llu}\n",
           st->connections, st->requests, s->hanging);
  respond(req, 200, body);
}

static void hang_abort(httpd_req_t *req) {
  demo_server_t *s = req->data;
  s->hanging--;
  httpd_end(req, HTTPD_CLOSE);
}

static void handle(httpd_req_t *req, void *arg) {
  demo_server_t *s = arg;
  const char *p = req->path;
  if (req->error != 0) {
    respond(req, req->error, "bad request\n");
  } else if (strcmp(p, "/") == 0) {
    respond(req, 200,
            "/fast /slow /big /missing /error /stats /close-after "
            "/until-close /reset /hang /trickle /half /malformed\n");
  } else if (strcmp(p, "/fast") == 0) {
    respond(req, 200, DEMO_FAST_BODY);
  } else if (strcmp(p, "/slow") == 0) {
    timed_start(s, req, DEMO_SLOW_MS, 0, slow_fire);
  } else if (strcmp(p, "/big") == 0) {
    big(req);
  } else if (strcmp(p, "/missing") == 0) {
    respond(req, 404, "not found\n");
  } else if (strcmp(p, "/error") == 0) {
    respond(req, 500, "something broke\n");
  } else if (strcmp(p, "/stats") == 0) {
    stats(s, req);
  } else if (strcmp(p, "/close-after") == 0) {
    /* A well-formed keep-alive answer, then FIN: what the client sees when
     * a server's keep-alive timeout runs out just after a response. */
    static const char msg[] = "HTTP/1.1 200 OK\r\n" TEXT_PLAIN
                              "Content-Length: 5\r\n\r\n" DEMO_FAST_BODY;
    write_and_close(req, msg, sizeof(msg) - 1);
  } else if (strcmp(p, "/until-close") == 0) {
    /* No Content-Length, no chunks: the body ends where the connection
     * does (RFC 9112 6.3, the last rule). */
    static const char msg[] = "HTTP/1.1 200 OK\r\n" TEXT_PLAIN
                              "Connection: close\r\n\r\n" DEMO_UNTIL_CLOSE_BODY;
    write_and_close(req, msg, sizeof(msg) - 1);
  } else if (strcmp(p, "/reset") == 0) {
    httpd_end(req, HTTPD_RESET);
  } else if (strcmp(p, "/hang") == 0) {
    /* Nothing: the client's timeout, its close, or stop ends it. */
    s->hanging++;
    req->data = s;
    req->on_abort = hang_abort;
  } else if (strcmp(p, "/trickle") == 0) {
    char head[128];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n",
                     DEMO_TRICKLE_BYTES);
    httpd_write(req, head, (size_t)n);
    timed_start(s, req, DEMO_TRICKLE_MS, DEMO_TRICKLE_MS, trickle_fire);
  } else if (strcmp(p, "/half") == 0) {
    char msg[128];
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n\r\n%.*s",
                     DEMO_HALF_PROMISED, DEMO_HALF_SENT, "0123456789");
    write_and_close(req, msg, (size_t)n);
  } else if (strcmp(p, "/malformed") == 0) {
    static const char junk[] = "SPDY/9 banana\r\n\r\n";
    write_and_close(req, junk, sizeof(junk) - 1);
  } else {
    respond(req, 404, "no such endpoint\n");
  }
}

/* ---- the server ---------------------------------------------------------- */

int demo_server_start(uv_loop_t *loop, const char *ip, int port,
                      demo_server_t **out) {
  if (out == NULL)
    return UV_EINVAL;
  demo_server_t *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  s->loop = loop;
  /* A backend for clients under test: end of input is the client gone, so
   * that /hang ends when its client gives up, and /slow does not answer a
   * client that closed. */
  httpd_opts_t opts;
  httpd_opts_init(&opts);
  opts.abort_on_eof = 1;
  int rc = httpd_start(loop, ip, port, &opts, handle, s, &s->httpd);
  if (rc != 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int demo_server_port(const demo_server_t *s) { return httpd_port(s->httpd); }

static void stopped(void *arg) {
  demo_server_t *s = arg;
  void (*done)(void *) = s->done;
  void *done_arg = s->done_arg;
  free(s);
  if (done != NULL)
    done(done_arg);
}

void demo_server_stop(demo_server_t *s, void (*done)(void *), void *arg) {
  s->done = done;
  s->done_arg = arg;
  httpd_stop(s->httpd, 0, stopped, s);
}

int demo_server_refused_port(const char *ip) {
  struct sockaddr_in addr;
  socklen_t len = sizeof(addr);
  int rc = uv_ip4_addr(ip, 0, &addr);
  if (rc != 0)
    return rc;
  uv_os_sock_t fd = SOCK_NONE;
  rc = sock_open(AF_INET, &fd);
  if (rc != 0)
    return rc;
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    rc = sock_err();
    sock_close(fd);
    return rc;
  }
  /* Never listened on: once closed, a connect gets RST, i.e. refused. */
  sock_close(fd);
  return ntohs(addr.sin_port);
}

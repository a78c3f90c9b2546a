/* httpd — the server side of HTTP/1.1 for the examples, on plain libuv:
 * accept on ip:port, parse requests with llhttp, hand each to a handler,
 * write its answer.
 *
 * The requests of one connection are answered one at a time, in order:
 * the next one (pipelined, or sent after this one) is not parsed before
 * this one has been answered and its answer written.  Meanwhile the
 * connection goes on reading (up to 64 KiB of input, then it waits), so
 * that a client that goes away is noticed.  A connection is kept alive
 * after a response unless the request said otherwise
 * (llhttp_should_keep_alive), the handler ended it, or the server is
 * stopping.
 *
 * Every request must be finished exactly once, with httpd_respond or
 * httpd_end, at once in the handler or later (after a timer, a fan-out).
 * If the connection goes away first (the client closed or reset it, a
 * write failed, or httpd_stop closed it), the request's on_abort runs,
 * once, from a libuv callback (never inside an httpd call); the request
 * must still be finished, then or later, and what is written for it is
 * dropped.  Everything here runs on the loop's thread. */
#ifndef HTTPD_H
#define HTTPD_H

#include <stddef.h>

#include <uv.h>

typedef struct httpd_s httpd_t;
typedef struct httpd_req_s httpd_req_t;

typedef struct httpd_header_s {
  const char *name; /* as sent (any case) */
  const char *value;
} httpd_header_t;

struct httpd_req_s {
  /* Set by httpd; valid until the request is finished. */
  const char *method; /* "GET", "HEAD", ... */
  const char *path;   /* the target up to '?', as sent */
  const char *query;  /* what follows '?' ("" if nothing) */
  const httpd_header_t *headers;
  size_t nheaders;
  /* 0, or the status to answer a request httpd could not parse with: 400
   * (malformed) or 431 (request line and headers over 16 KiB, or more
   * than 64 headers).  Method, path and query are "" then, and the
   * answer is the connection's last. */
  int error;
  /* The handler's. */
  void (*on_abort)(httpd_req_t *req);
  void *data;
};

/* Called for each request.  `arg` is httpd_start's. */
typedef void (*httpd_handler_cb)(httpd_req_t *req, void *arg);

/* Listen on ip:port (IPv4 or IPv6; port 0: any free one) on `loop`, which
 * must run for the server to serve.  Errors: UV_EINVAL, UV_ENOMEM, the
 * errors of uv_ip4_addr / uv_ip6_addr / uv_tcp_bind / uv_listen
 * (UV_EADDRINUSE...). */
int httpd_start(uv_loop_t *loop, const char *ip, int port,
                httpd_handler_cb handler, void *arg, httpd_t **out);

/* The port listened on. */
int httpd_port(const httpd_t *s);

/* Connections accepted and requests handed to the handler so far. */
typedef struct httpd_stats_s {
  unsigned long long connections;
  unsigned long long requests;
} httpd_stats_t;

const httpd_stats_t *httpd_stats(const httpd_t *s);

/* Stop listening.  `drain` non-zero: idle connections are closed, those
 * answering a request close after their answer ("Connection: close").
 * `drain` 0: every connection is closed now, requests in flight are
 * aborted.  A later call may turn a drain into a close; `done` and `arg`
 * are the first call's.  `done` (may be NULL) runs once every connection
 * is closed and every request finished; the server is freed when it
 * returns (httpd_stats may be read in it).  After that the loop holds
 * nothing of the server's. */
void httpd_stop(httpd_t *s, int drain, void (*done)(void *), void *arg);

/* Whether the connection stays open after this request's answer.  For
 * httpd_respond's Connection header, or a hand-made response's. */
int httpd_req_keep_alive(const httpd_req_t *req);

/* Answer and finish the request: status line (with the usual reason
 * phrase), `headers` (NULL, or lines each ending in "\r\n"),
 * Content-Length, Connection (keep-alive or close), then `len` bytes of
 * `body` (none for HEAD).  Everything is copied or written before it
 * returns. */
void httpd_respond(httpd_req_t *req, int status, const char *headers,
                   const void *body, size_t len);

/* Bytes of a response httpd does not frame (chunked, deliberately broken,
 * slow...), written as they are after what was written before.  Copied or
 * written before it returns. */
void httpd_write(httpd_req_t *req, const void *data, size_t len);

typedef enum {
  HTTPD_KEEP,  /* the response is complete; next request, if allowed */
  HTTPD_CLOSE, /* end the connection once what was written is out (FIN) */
  HTTPD_RESET  /* reset the connection now (RST), dropping what is queued */
} httpd_end_t;

/* Finish the request after httpd_write.  HTTPD_KEEP closes anyway where
 * httpd_req_keep_alive is 0. */
void httpd_end(httpd_req_t *req, httpd_end_t how);

/* "OK", "Not Found"... for the statuses the examples use; "Unknown" for
 * others. */
const char *httpd_reason(int status);

#endif

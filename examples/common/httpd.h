/* httpd — the server side of HTTP/1.1 for the examples, on plain libuv:
 * accept on ip:port, parse requests with llhttp, hand each to a handler,
 * write its answer.
 *
 * The requests of one connection are answered one at a time, in order:
 * the next one (pipelined, or sent after this one) is not parsed before
 * this one has been answered and its answer written.  While the handler
 * works on a request the connection goes on reading (up to 16 KiB of
 * input, then it waits), so that a client that resets it is noticed.
 *
 * Backpressure: an answer the kernel does not take whole waits in the
 * connection's queue; the kernel takes no more than max_output bytes it
 * has not sent (TCP_NOTSENT_LOWAT), however large its send buffer has
 * grown.  While anything waits there, the connection reads nothing and
 * parses nothing: a client that pipelines requests and does not read the
 * answers gets about max_output of them (plus what its receive window
 * holds), then waits; reading resumes once the queue has drained, and
 * the send timeout runs from when the queue stopped moving.  The input
 * kept unparsed meanwhile (16 KiB at most) is freed once parsed.
 *
 * A connection is kept alive
 * after a response unless the request said otherwise
 * (llhttp_should_keep_alive), the handler ended it, the client has sent
 * all it will send, or the server is stopping.
 *
 * Every request must be finished exactly once, with httpd_respond or
 * httpd_end, at once in the handler or later (after a timer, a fan-out).
 * If the connection goes away first (the client reset it, a write failed
 * or timed out, httpd_stop closed it, or with abort_on_eof the client
 * closed it), the request's on_abort runs,
 * once, from a libuv callback (never inside an httpd call); the request
 * must still be finished, then or later, and what is written for it is
 * dropped.  Everything here runs on the loop's thread; servers on other
 * loops (one per thread, sharing a port with reuse_port) are independent.
 *
 * Parsing is strict where llhttp, built lenient as Debian builds it for
 * every user, is not: a request line without a version (HTTP/0.9), a
 * version other than 1.x, whitespace or any other non-token byte in a
 * header name (before its colon), a folded header line (obs-fold), a bare
 * CR or LF, a control byte in a header value, no Host header in HTTP/1.1,
 * more than one Host or one that is not a host[:port], and
 * Transfer-Encoding in HTTP/1.0 are refused (req->error 400, 505 for
 * HTTP/2 and later).
 *
 * Timeouts, named and meant as nginx's:
 *  - header: a request (line, headers and body if any) must arrive within
 *    it, counted from its first byte, or from the accept for a
 *    connection's first request.  Then, if some of it came, the handler
 *    gets it with req->error 408; if nothing came, the connection is
 *    closed.
 *  - keep-alive: a connection idle between requests is closed.
 *  - send: an answer that makes no progress (the client does not read)
 *    for that long is dropped with a reset.
 * While the handler works on a request, no timeout of httpd's runs.
 *
 * End of input (the client half-closed its side, as `nc -N` or a health
 * checker does) means no more requests: those received are answered, in
 * order, then the connection closes.  (With abort_on_eof, end of input
 * with a request in flight is the client gone instead: on_abort.)
 *
 * Connections are accepted by httpd itself, not by uv_listen: when accept
 * fails for want of descriptors (EMFILE, ENFILE) or memory, libuv 1.44
 * would accept and close every waiting client without a word.  For
 * descriptors, httpd first makes room as nginx does: it closes idle
 * connections, those idle between requests (keep-alive) first, then those
 * waiting for a request (a silent client, one sending its head slowly),
 * each kind the longest waiting first, an eighth of them at a time (2 to
 * 32), and accepts again.  A connection whose answers have stopped moving
 * (waiting in its queue, no write progress for stall_ms: a client that
 * pipelines requests and reads nothing) counts as idle too, and goes
 * first, with a reset; a line says so (at most one a second), and
 * httpd_stats counts them.  When no connection is idle (every one has a
 * request in flight or an answer still moving), or for memory, it logs
 * it once per burst, stops accepting (the clients wait in the backlog),
 * tries again when one of its connections closes, or after 500 ms, and
 * logs the burst's end once every client that waited is accepted.
 *
 * With max_body, a request whose body is longer (its Content-Length, or a
 * chunked body as it arrives) is refused with 413 as soon as that is
 * known; its body is not read. */
#ifndef HTTPD_H
#define HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct httpd_s httpd_t;
typedef struct httpd_req_s httpd_req_t;

/* nginx's defaults: client_header_timeout 60s, keepalive_timeout 75s,
 * send_timeout 60s. */
#define HTTPD_HEADER_TIMEOUT_MS 60000
#define HTTPD_KEEPALIVE_TIMEOUT_MS 75000
#define HTTPD_SEND_TIMEOUT_MS 60000
/* Answers not yet sent past which a connection stops reading (below). */
#define HTTPD_MAX_OUTPUT (16 * 1024)
/* Answers waiting and not moving for this long: at the descriptor limit,
 * the connection may be closed for room, as an idle one (below). */
#define HTTPD_STALL_MS 1000

typedef struct httpd_opts_s {
  uint64_t header_timeout_ms;    /* 0: none */
  uint64_t keepalive_timeout_ms; /* 0: none */
  uint64_t send_timeout_ms;      /* 0: none */
  size_t max_output;             /* answers' bytes not yet sent (the kernel's
                                    unsent queue, TCP_NOTSENT_LOWAT, then
                                    httpd's) past which a connection is not
                                    read; 0: HTTPD_MAX_OUTPUT */
  uint64_t max_body;             /* request body bytes past which the request
                                    gets 413; 0: no limit */
  uint64_t stall_ms; /* answers waiting in the queue with no write progress
                        for this long: the client reads nothing, and at the
                        descriptor limit its connection is closed for room
                        as an idle one is; 0: HTTPD_STALL_MS */
  int reuse_port;    /* SO_REUSEPORT: several servers (threads, processes)
                        listen on one port, the kernel spreading clients */
  int abort_on_eof;  /* end of input aborts a request in flight */
  /* Where httpd reports what a server must not keep silent about (accept
   * failing, then working again): one line, no newline.  NULL: stderr. */
  void (*log)(const char *line, void *arg);
  void *log_arg;
} httpd_opts_t;

/* The defaults: the three timeouts above, the rest 0 or NULL. */
void httpd_opts_init(httpd_opts_t *opts);

typedef struct httpd_header_s {
  const char *name;  /* as sent (any case) */
  const char *value; /* without the whitespace around it */
} httpd_header_t;

struct httpd_req_s {
  /* Set by httpd; valid until the request is finished. */
  const char *method; /* "GET", "HEAD", ... */
  const char *path;   /* the target up to '?', as sent */
  const char *query;  /* what follows '?' ("" if nothing) */
  const httpd_header_t *headers;
  size_t nheaders;
  /* 0, or the status to answer a request httpd could not take with: 400
   * (malformed, or refused by the strict checks above), 408 (the header
   * timeout ran out), 413 (a body over max_body), 431 (request line and
   * headers over 16 KiB, or more than 64 headers) or 505 (not HTTP/1.x).
   * Method, path and query are
   * "" then, and the answer is the connection's last. */
  int error;
  /* The handler's. */
  void (*on_abort)(httpd_req_t *req);
  void *data;
};

/* Called for each request.  `arg` is httpd_start's. */
typedef void (*httpd_handler_cb)(httpd_req_t *req, void *arg);

/* Listen on ip:port (IPv4 or IPv6; port 0: any free one) on `loop`, which
 * must run for the server to serve.  `opts` (NULL: the defaults) is
 * copied.  Errors: UV_EINVAL, UV_ENOMEM, the errors of uv_ip4_addr /
 * uv_ip6_addr, socket, bind, listen (UV_EADDRINUSE...) and
 * uv_poll_init_socket. */
int httpd_start(uv_loop_t *loop, const char *ip, int port,
                const httpd_opts_t *opts, httpd_handler_cb handler, void *arg,
                httpd_t **out);

/* The port listened on. */
int httpd_port(const httpd_t *s);

/* Connections accepted and requests handed to the handler so far (those
 * with req->error too); connections closed by each timeout; bursts of
 * accept failures; connections closed to make room for new ones; request
 * bodies refused; and the connections open now. */
typedef struct httpd_stats_s {
  unsigned long long connections;
  unsigned long long requests;
  unsigned long long header_timeouts;
  unsigned long long keepalive_timeouts;
  unsigned long long send_timeouts;
  unsigned long long accept_pauses;
  /* Closed at the descriptor limit to accept new clients: idle between
   * requests, waiting for a request, and not reading their answers (no
   * write progress for stall_ms). */
  unsigned long long idle_closed;
  unsigned long long waiting_closed;
  unsigned long long stalled_closed;
  unsigned long long bodies_refused; /* request bodies over max_body: 413 */
  size_t open;                       /* connections open now */
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

/* The request's W3C Trace Context headers, as sent: *traceparent is the
 * value of its `traceparent` header, NULL if it has none or more than one
 * (ambiguous: ignored); `tracestate` (cap bytes) gets the values of its
 * `tracestate` headers joined with ',' (RFC 9110's way to combine them),
 * "" if there is none or they do not fit in cap (W3C: a tracestate too
 * long to keep is dropped).  Whether they are valid is the caller's to
 * check (uvp_tracectx_parse, uvp_tracestate_check). */
void httpd_req_trace_headers(const httpd_req_t *req, const char **traceparent,
                             char *tracestate, size_t cap);

/* "OK", "Not Found"... for the statuses the examples use; "Unknown" for
 * others. */
const char *httpd_reason(int status);

#endif

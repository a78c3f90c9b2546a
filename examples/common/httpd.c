/* httpd: one llhttp request parser per connection.
 *
 * While a connection is idle, input is parsed straight from the read
 * buffer; whatever follows the end of a request (a pipelined next one), or
 * arrives while a request is being answered, is kept in `pending` and
 * parsed once the answer is written.  The parser pauses at the end of
 * every request for that.  The request line's target and the headers are
 * copied as they come (llhttp hands them over in pieces when they span two
 * reads) into `head`, one buffer per connection reused from request to
 * request.  Before llhttp sees a request's head, head_scan checks its
 * lines for what the lenient llhttp lets through.
 *
 * Each connection has one timer, armed lazily: a connection records when
 * its current wait began (head_since, idle_since, send_since), and the
 * timer, once it fires, works out what the connection waits for now and
 * either acts or re-arms for the rest.  A keep-alive connection under load
 * thus costs no timer call per request.
 *
 * A connection's memory is freed once its handles are closed and its
 * request, if any, finished: an aborted request may be finished later (the
 * gateway's after its cancelled fan-out settles).  The server goes when its
 * own handles and every connection have. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifndef _WIN32
#include <sys/resource.h>
#endif

#include <llhttp.h>

#include "compat.h"
#include "httpd.h"
#include "pieces.h"
#include "sock.h"

/* Unparsed input kept per connection, and so the most one read takes. */
#define MAX_PENDING (16 * 1024)
#define MAX_HEAD (16 * 1024) /* target and headers; offsets fit 16 bits */
#define MAX_HEADERS 64
#define ACCEPTS_PER_WAKEUP 256 /* then the loop serves what it accepted */
#define ACCEPT_RETRY_MS 500    /* while descriptors are short (as nginx) */
/* At the descriptor limit: idle connections closed at once (nginx's
 * figures: an eighth of those that could be, 1 to 32).  At least 2, so
 * that the client accepted finds a descriptor for what it asks (a
 * gateway's backend connection). */
#define SHED_MIN 2
#define SHED_MAX 32
/* Descriptors kept free for what accepted clients ask (a gateway's
 * backend connections): at most this many, an eighth of the limit. */
#define SHED_HEADROOM 16
/* How long a connection must have been idle, or waiting for a request,
 * before it may be closed for room: one accepted a moment ago has not had
 * the time to send its request, nor a keep-alive client to send its next
 * one. */
#define SHED_MIN_AGE_MS 250
#define SHED_LOG_MS 1000 /* at most one line a second about it */

typedef struct conn_s conn_t;

struct httpd_s {
  uv_loop_t *loop;
  httpd_opts_t opts;
  uv_os_sock_t fd;    /* the listening socket */
  uv_poll_t listener; /* readable: clients to accept */
  uv_timer_t retry;   /* accept again, after it failed for descriptors */
  uv_timer_t note;    /* says what was shed while the line was held */
  int handles;        /* listener, retry and note, until all are closed */
  int paused;         /* accept failed; clients may still wait */
  uint64_t paused_at;
  size_t accepted_paused; /* ... and accepted since */
  int port;
  httpd_handler_cb handler;
  void *arg;
  conn_t *conns; /* open connections, for httpd_stop */
  size_t nconns; /* connections not freed yet */
  int stopping;  /* 0, 1 draining, 2 closing */
  httpd_stats_t stats;
  void (*done)(void *);
  void *done_arg;
  /* A client accepted on a descriptor numbered this or above leaves fewer
   * than the headroom free (descriptors are handed out lowest first); 0:
   * no limit known. */
  int fd_low, fd_limit;
  int shed_young; /* the last shed found only connections too young */
  /* Connections closed to make room, since the last line saying so. */
  unsigned long long shed_idle, shed_waiting, shed_stalled;
  uint64_t shed_logged; /* when that line was (loop time, ms; 0: never) */
  char shed_why[64];    /* why the last shed was, for the held line */
  /* One read buffer for every connection: the read callback runs right
   * after the allocation and keeps whatever it does not parse. */
  char slab[MAX_PENDING];
};

/* Where head_scan is in a request's head. */
enum {
  SCAN_START,    /* before the request line: empty lines allowed */
  SCAN_START_CR, /* ... CR of one */
  SCAN_LINE,     /* request line */
  SCAN_LINE_SP,  /* ... just after a space */
  SCAN_BOL,      /* start of a header line, or of the empty one */
  SCAN_NAME,     /* header name */
  SCAN_VALUE,    /* header value */
  SCAN_CR,       /* CR ending a line */
  SCAN_END_CR,   /* CR of the empty line */
  SCAN_DONE      /* the head is over: llhttp alone from here */
};

struct conn_s {
  httpd_req_t req; /* first: a request's address is its connection's */
  uv_tcp_t tcp;
  uv_timer_t timer;
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
  int scan;         /* head_scan's state */
  int spaces;       /* ... and the request line's spaces so far */
  int reject;       /* status for a request the strict checks refused */
  int hosts;        /* Host headers in this request */
  int in_host;      /* the value being received is a Host's */
  int in_body;      /* headers done: what comes now are trailers */
  uint64_t body;    /* body bytes of this request so far */
  int too_large;    /* the head went over a limit */
  int message_done; /* the parser paused at the end of a request */
  int head_only;    /* the request is a HEAD */
  int in_flight;    /* handed to the handler and not finished */
  int dispatching;  /* inside the handler, called from the parse loop */
  int last;         /* no request after the current one */
  int eof;          /* the client will send nothing more */
  int reading;
  int ending;  /* shutdown requested: close once it is done */
  int closing; /* uv_close called */
  int handles; /* tcp and timer, until both are closed */
  /* Timeouts: when each wait began (loop time, ms). */
  int in_head; /* waiting for a request: since accept or its first byte */
  int begun;   /* ... and some of it came */
  int idle;    /* between requests, nothing received */
  uint64_t head_since, idle_since, send_since;
  size_t send_mark;   /* write queue size when send_since was set */
  uint64_t timer_due; /* when the timer fires; 0: not armed */
  size_t writes;      /* write requests not completed */
  char *pending;      /* input not parsed yet */
  size_t pending_len, pending_cap;
};

/* A write request carrying its bytes. */
typedef struct wbuf_s {
  uv_write_t req;
  conn_t *conn;
  char data[];
} wbuf_t;

static void conn_continue(conn_t *c);
static void conn_arm(conn_t *c);
static void accept_retry(uv_timer_t *t);

static void httpd_log(httpd_t *s, const char *fmt, ...) COMPAT_PRINTF(2, 3);

static void httpd_log(httpd_t *s, const char *fmt, ...) {
  char line[320];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (s->opts.log != NULL)
    s->opts.log(line, s->opts.log_arg);
  else
    fprintf(stderr, "httpd: %s\n", line);
}

/* ---- teardown ------------------------------------------------------------ */

static void server_maybe_done(httpd_t *s) {
  if (!s->stopping || s->handles > 0 || s->nconns > 0)
    return;
  if (s->done != NULL)
    s->done(s->done_arg);
  free(s);
}

static void conn_free_if_done(conn_t *c) {
  if (c->handles > 0 || c->in_flight)
    return;
  httpd_t *s = c->srv;
  free(c->head);
  free(c->pending);
  free(c);
  s->nconns--;
  s->stats.open = s->nconns;
  server_maybe_done(s);
}

/* The abort is told from here, a libuv callback, rather than from
 * conn_close, which may run inside the handler's own httpd_write. */
static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (c->handles > 1) {
    c->handles--;
    return;
  }
  if (c->in_flight && c->req.on_abort != NULL)
    c->req.on_abort(&c->req); /* may finish it: freed below, not there */
  c->handles = 0;
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
  uv_close((uv_handle_t *)&c->timer, conn_closed);
  /* A reset is refused while a shutdown is queued: then a plain close. */
  if (!reset || uv_tcp_close_reset(&c->tcp, conn_closed) != 0)
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
  /* uv_close has closed the descriptor already: accept may have one. */
  if (s->paused && !s->stopping)
    uv_timer_start(&s->retry, accept_retry, 0, 0);
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
  /* Progress, for the send timeout. */
  c->send_since = uv_now(c->srv->loop);
  c->send_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
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
  uv_buf_t buf =
      uv_buf_init(w->data, (unsigned int)((alen - adone) + (blen - bdone)));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb) != 0) {
    free(w);
    conn_close(c, 0);
    return;
  }
  if (c->writes++ == 0) { /* the client is not keeping up: send timeout */
    c->send_since = uv_now(c->srv->loop);
    c->send_mark = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    conn_arm(c);
  }
}

/* ---- answering ----------------------------------------------------------- */

int httpd_req_keep_alive(const httpd_req_t *req) {
  const conn_t *c = (const conn_t *)req;
  /* After end of input, only a request already received can follow. */
  return !c->last && !c->srv->stopping && !c->closing &&
         !(c->eof && c->pending_len == 0);
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
  else if (!c->dispatching)
    conn_continue(c); /* answered later (a timer, a fan-out): the next
                         request, or stop reading while the answer waits */
}

/* The response's head, with snprintf's contract (pieces.h): once a
 * request. */
static int format_head(char *dst, size_t cap, int status, const char *headers,
                       size_t len, int keep_alive) {
  char code[PIECE_DIGITS], length[PIECE_DIGITS];
  const piece_t p[] = {
      status < 0 ? PIECE_LIT("HTTP/1.1 -") : PIECE_LIT("HTTP/1.1 "),
      piece_u64(code, status < 0 ? 0 - (uint64_t)status : (uint64_t)status),
      PIECE_LIT(" "),
      piece_str(httpd_reason(status)),
      PIECE_LIT("\r\n"),
      piece_str(headers != NULL ? headers : ""),
      PIECE_LIT("Content-Length: "),
      piece_u64(length, len),
      PIECE_LIT("\r\nConnection: "),
      keep_alive ? PIECE_LIT("keep-alive") : PIECE_LIT("close"),
      PIECE_LIT("\r\n\r\n")};
  size_t n = pieces_join(dst, cap, p, sizeof(p) / sizeof(p[0]));
  return n <= INT_MAX ? (int)n : -1;
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
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  case 505:
    return "HTTP Version Not Supported";
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

/* ---- strict checks ------------------------------------------------------- */

/* Each byte's classes, a table made by the compiler: head_scan looks at
 * every byte of every head, and a value's bytes are most of them. */
enum { BYTE_CTL = 1, BYTE_TCHAR = 2 }; /* (TCHAR is Windows's) */
#define BYTE_CLASS(ch)                                                         \
  (((ch) < 0x20 || (ch) == 0x7f ? BYTE_CTL : 0) |                              \
   (((ch) >= 'a' && (ch) <= 'z') || ((ch) >= 'A' && (ch) <= 'Z') ||            \
            ((ch) >= '0' && (ch) <= '9') || (ch) == '!' || (ch) == '#' ||      \
            (ch) == '$' || (ch) == '%' || (ch) == '&' || (ch) == '\'' ||       \
            (ch) == '*' || (ch) == '+' || (ch) == '-' || (ch) == '.' ||        \
            (ch) == '^' || (ch) == '_' || (ch) == '`' || (ch) == '|' ||        \
            (ch) == '~'                                                        \
        ? BYTE_TCHAR                                                           \
        : 0))
#define BYTE_CLASS4(c)                                                         \
  BYTE_CLASS(c), BYTE_CLASS((c) + 1), BYTE_CLASS((c) + 2), BYTE_CLASS((c) + 3)
#define BYTE_CLASS16(c)                                                        \
  BYTE_CLASS4(c), BYTE_CLASS4((c) + 4), BYTE_CLASS4((c) + 8),                  \
      BYTE_CLASS4((c) + 12)
#define BYTE_CLASS64(c)                                                        \
  BYTE_CLASS16(c), BYTE_CLASS16((c) + 16), BYTE_CLASS16((c) + 32),             \
      BYTE_CLASS16((c) + 48)
static const unsigned char byte_class[256] = {
    BYTE_CLASS64(0), BYTE_CLASS64(64), BYTE_CLASS64(128), BYTE_CLASS64(192)};

static int is_ctl(unsigned char ch) { return byte_class[ch] & BYTE_CTL; }

/* RFC 9110's tchar: what a header name is made of. */
static int is_tchar(unsigned char ch) { return byte_class[ch] & BYTE_TCHAR; }

/* What llhttp, built lenient, lets through in a head and a strict server
 * refuses: a folded line (obs-fold), whitespace or another non-token byte
 * in a header name (a space before the colon: "Host :"), an empty name, a
 * bare CR or LF, control bytes in the request line or a value, a request
 * line that is not three parts with one space between them (HTTP/0.9's
 * "GET /" has no version: refused at its CRLF, where llhttp would wait for
 * headers).  Runs over the head's bytes ahead of llhttp, from read to
 * read, up to the empty line that ends the head.  Returns 0, or -1 for a
 * head to refuse. */
static int head_scan(conn_t *c, const char *data, size_t len) {
  int st = c->scan;
  for (size_t i = 0; i < len && st != SCAN_DONE; i++) {
    unsigned char ch = (unsigned char)data[i];
    switch (st) {
    case SCAN_START: /* empty lines before a request are allowed */
      if (ch == '\r') {
        st = SCAN_START_CR;
      } else if (ch == ' ' || is_ctl(ch)) {
        return -1;
      } else {
        st = SCAN_LINE;
        c->spaces = 0;
      }
      break;
    case SCAN_START_CR:
    case SCAN_CR:
    case SCAN_END_CR:
      if (ch != '\n')
        return -1;
      st = st == SCAN_START_CR ? SCAN_START
           : st == SCAN_CR     ? SCAN_BOL
                               : SCAN_DONE;
      break;
    case SCAN_LINE:
    case SCAN_LINE_SP:
      if (ch == '\r' && c->spaces != 2) /* HTTP/0.9: no version */
        return -1;
      else if (ch == '\r')
        st = SCAN_CR;
      else if (ch == ' ' && st == SCAN_LINE_SP)
        return -1;
      else if (ch == ' ' && ++c->spaces > 2)
        return -1;
      else if (ch == ' ')
        st = SCAN_LINE_SP;
      else if (is_ctl(ch))
        return -1;
      else
        st = SCAN_LINE;
      break;
    case SCAN_BOL: /* SP or HT here is obs-fold */
      if (ch == '\r')
        st = SCAN_END_CR;
      else if (is_tchar(ch))
        st = SCAN_NAME;
      else
        return -1;
      break;
    case SCAN_NAME:
      while (is_tchar(ch) && i + 1 < len) /* the name's bytes at once */
        ch = (unsigned char)data[++i];
      if (ch == ':')
        st = SCAN_VALUE;
      else if (!is_tchar(ch))
        return -1;
      break;
    case SCAN_VALUE:
      while (!is_ctl(ch) && i + 1 < len) /* the value's bytes at once */
        ch = (unsigned char)data[++i];
      if (ch == '\r')
        st = SCAN_CR;
      else if (is_ctl(ch) && ch != '\t')
        return -1;
      break;
    }
  }
  c->scan = st;
  return 0;
}

/* A Host value is host[:port] (a name, an IPv4 address or a bracketed
 * IPv6 one), or empty: no whitespace, no '/', '?', '#' or '@'. */
static int host_valid(const char *v) {
  for (; *v != '\0'; v++) {
    unsigned char ch = (unsigned char)*v;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || strchr("-._~!$&'()*+,;=:[]%", ch)))
      return 0;
  }
  return 1;
}

/* ---- llhttp's callbacks -------------------------------------------------- */

static int on_message_begin(llhttp_t *p) {
  conn_t *c = p->data;
  c->head_len = c->mark = c->nheaders = 0;
  c->in_body = c->too_large = 0;
  c->hosts = c->in_host = c->reject = 0;
  c->body = 0;
  /* The header timeout counts from the first byte, or from the accept. */
  if (!c->in_head) {
    c->in_head = 1;
    c->head_since = uv_now(c->srv->loop);
  }
  c->begun = 1;
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
  if (at < 0)
    return -1;
  c->offsets[c->nheaders][0] = (uint16_t)at;
  c->in_host = (c->head[at] | 0x20) == 'h' && /* (most: one compare) */
               strcasecmp(c->head + at, "host") == 0;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  conn_t *c = p->data;
  if (c->in_body)
    return 0;
  /* llhttp drops the whitespace before a value, not after it. */
  while (c->head_len > c->mark &&
         (c->head[c->head_len - 1] == ' ' || c->head[c->head_len - 1] == '\t'))
    c->head_len--;
  long at = head_piece_end(c);
  if (at < 0)
    return -1;
  c->offsets[c->nheaders++][1] = (uint16_t)at;
  if (c->in_host) {
    c->in_host = 0;
    if (++c->hosts > 1 || !host_valid(c->head + at)) {
      c->reject = 400;
      return -1;
    }
  }
  return 0;
}

/* A request body of `len` bytes is over max_body (counted once). */
static int body_over(conn_t *c, uint64_t len) {
  httpd_t *s = c->srv;
  if (s->opts.max_body == 0 || len <= s->opts.max_body)
    return 0;
  s->stats.bodies_refused++;
  return 1;
}

/* What the head as a whole must be: HTTP/1.x; for 1.1, a Host (RFC 9112
 * 3.2: a server MUST answer 400 without one); for 1.0, no
 * Transfer-Encoding (RFC 9112 6.1: its framing is faulty). */
static int on_headers_complete(llhttp_t *p) {
  conn_t *c = p->data;
  c->in_body = 1;
  if (p->http_major != 1)
    c->reject = p->http_major == 0 ? 400 : 505;
  else if (p->http_minor >= 1 ? c->hosts == 0
                              : (p->flags & F_TRANSFER_ENCODING) != 0)
    c->reject = 400;
  else if (body_over(c, (p->flags & F_CONTENT_LENGTH) ? p->content_length : 0))
    c->reject = 413; /* said at once, before a byte of it is read */
  return c->reject != 0 ? -1 : 0;
}

/* A chunked body (or one longer than its Content-Length said, which
 * llhttp refuses anyway) is counted as it comes. */
static int on_body(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  (void)at;
  c->body += len;
  if (!body_over(c, c->body))
    return 0;
  c->reject = 413;
  return -1;
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
    .on_body = on_body,
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
  c->in_head = c->begun = 0;
  c->scan = SCAN_START;
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
  if (c->scan != SCAN_DONE && head_scan(c, data, len) != 0) {
    dispatch(c, 400);
    return len;
  }
  llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
  if (e == HPE_OK)
    return len;
  if (e == HPE_PAUSED && c->message_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
    llhttp_resume(&c->parser);
    dispatch(c, 0);
    return used;
  }
  dispatch(c, c->too_large ? 431 : c->reject != 0 ? c->reject : 400);
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

/* No more than `pending` can keep: what is read and not parsed at once
 * goes there, so a connection holds no more than MAX_PENDING of input
 * (reading waits while it is full: conn_continue).  Never an empty
 * buffer, which libuv would report as UV_ENOBUFS. */
static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)size;
  size_t room =
      c->pending_len < MAX_PENDING ? MAX_PENDING - c->pending_len : 1024;
  *buf = uv_buf_init(c->srv->slab, (unsigned int)room);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread == 0)
    return;
  if (nread == UV_EOF && !c->srv->opts.abort_on_eof) {
    /* The client has sent all it will (it half-closed, or closed: they
     * look the same until we write).  libuv stopped reading; what was
     * received is answered, then the connection ends. */
    c->eof = 1;
    c->reading = 0;
    if (!conn_busy(c))
      conn_continue(c);
    return;
  }
  if (nread < 0) {
    /* The client is gone.  A request in flight is abandoned; a response
     * being written after the last request is let out first. */
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
 * read on unless too much is waiting, or end the connection if nothing
 * more will come. */
static void conn_continue(conn_t *c) {
  while (!conn_busy(c) && c->pending_len > 0) {
    size_t used = conn_parse(c, c->pending, c->pending_len);
    if (c->closing)
      return;
    memmove(c->pending, c->pending + used, c->pending_len - used);
    c->pending_len -= used;
  }
  if (c->pending_len == 0 && c->pending != NULL) {
    /* A pipelined burst is over: its buffer goes, not kept for the
     * connection's life. */
    free(c->pending);
    c->pending = NULL;
    c->pending_cap = 0;
  }
  if (c->closing || c->ending)
    return;
  int busy = conn_busy(c);
  if (!busy && c->srv->stopping) {
    conn_close(c, 0); /* idle while the server stops */
    return;
  }
  if (!busy && c->eof) {
    conn_end(c); /* every request received is answered */
    return;
  }
  /* Backpressure: while answers wait to be written (the kernel holds
   * max_output bytes unsent, TCP_NOTSENT_LOWAT, and refuses more) and no
   * request is in flight, nothing more is read, let alone parsed: a
   * client that sends requests without reading the answers is not
   * served faster than it reads.  Reading resumes when the queue has
   * drained (write_cb).  A reset meanwhile fails the write. */
  int blocked = c->writes > 0 && !c->in_flight;
  int want = !c->eof && !blocked && c->pending_len < MAX_PENDING;
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
  /* The keep-alive timeout counts from the end of the last answer. */
  int idle = !busy && !c->in_head;
  if (idle && !c->idle)
    c->idle_since = uv_now(c->srv->loop);
  c->idle = idle;
  conn_arm(c);
}

/* ---- timeouts ------------------------------------------------------------ */

enum { WAIT_NONE, WAIT_HEAD, WAIT_IDLE, WAIT_SEND };

/* What the connection waits for, and the time (loop time, ms) when that
 * wait times out; 0: nothing to time out. */
static uint64_t conn_deadline(const conn_t *c, int *what) {
  const httpd_opts_t *o = &c->srv->opts;
  uint64_t since = 0, limit = 0;
  *what = WAIT_NONE;
  if (c->closing) {
    return 0;
  } else if (c->writes > 0) {
    *what = WAIT_SEND;
    since = c->send_since;
    limit = o->send_timeout_ms;
  } else if (c->in_flight || c->last || c->ending) {
    return 0; /* the handler's time, or about to close */
  } else if (c->in_head) {
    *what = WAIT_HEAD;
    since = c->head_since;
    limit = o->header_timeout_ms;
  } else {
    *what = WAIT_IDLE;
    since = c->idle_since;
    limit = o->keepalive_timeout_ms;
  }
  return limit != 0 ? since + limit : 0;
}

static void on_conn_timer(uv_timer_t *t);

/* Make sure the timer fires no later than the current wait's deadline.  A
 * timer that fires early finds out and re-arms. */
static void conn_arm(conn_t *c) {
  int what;
  uint64_t due = conn_deadline(c, &what);
  if (due == 0 || (c->timer_due != 0 && c->timer_due <= due))
    return;
  uint64_t now = uv_now(c->srv->loop);
  uv_timer_start(&c->timer, on_conn_timer, due > now ? due - now : 0, 0);
  c->timer_due = due;
}

static void on_conn_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  httpd_t *s = c->srv;
  uint64_t now = uv_now(s->loop);
  int what;
  c->timer_due = 0;
  uint64_t due = conn_deadline(c, &what);
  if (what == WAIT_SEND) {
    /* A write request completes only when all of it is out: a big one
     * makes progress before that. */
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (queued < c->send_mark) {
      c->send_mark = queued;
      c->send_since = now;
      due = conn_deadline(c, &what);
    }
  }
  if (due == 0)
    return;
  if (due > now) {
    conn_arm(c);
    return;
  }
  switch (what) {
  case WAIT_HEAD:
    s->stats.header_timeouts++;
    if (c->begun)
      dispatch(c, 408); /* the handler answers; the connection ends */
    else
      conn_close(c, 0); /* not a byte: nobody to answer */
    break;
  case WAIT_IDLE:
    s->stats.keepalive_timeouts++;
    conn_close(c, 0);
    break;
  case WAIT_SEND:
    /* Reset: what the kernel holds for the client goes too. */
    s->stats.send_timeouts++;
    conn_close(c, 1);
    break;
  }
}

/* ---- accepting ----------------------------------------------------------- */

static void conn_open(httpd_t *s, uv_os_sock_t fd) {
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    sock_close(fd);
    return;
  }
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->handles = 2;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  s->stats.open = s->nconns;
  if (uv_tcp_open(&c->tcp, fd) != 0) {
    sock_close(fd);
    conn_close(c, 0);
    return;
  }
  s->stats.connections++;
  /* Responses written in pieces (chunked ones) must not wait for the
   * client's delayed ACK. */
  uv_tcp_nodelay(&c->tcp, 1);
  /* The kernel takes answers until it holds max_output bytes it has not
   * sent (what the client's window lets out is sent), not until its
   * send buffer is full: that grows to megabytes (tcp_wmem) for a client
   * that reads nothing.  Beyond, they wait in libuv's queue, where the
   * backpressure and the send timeout see them.  (Linux 3.12; where it is
   * refused, or where the system has no such option, the send buffer
   * bounds them.) */
#ifdef TCP_NOTSENT_LOWAT
  (void)sock_set_int(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT,
                     (int)s->opts.max_output);
#endif
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  c->in_head = 1; /* the first request's header timeout runs from now */
  c->head_since = uv_now(s->loop);
  conn_continue(c);
}

static void on_acceptable(uv_poll_t *h, int status, int events);

/* Accept failed for want of descriptors (or kernel memory).  The clients
 * wait in the backlog meanwhile, rather than being accepted and closed at
 * once as libuv's uv_listen does.  A burst, logged once, lasts until
 * accept has taken every waiting client: descriptors freed one by one
 * (timeouts firing apart) end no burst. */
static void accept_pause(httpd_t *s, int err, uint64_t retry_ms) {
  if (!s->paused) {
    s->paused = 1;
    s->paused_at = uv_now(s->loop);
    s->accepted_paused = 0;
    s->stats.accept_pauses++;
    httpd_log(s,
              "accept: %s (%s) with %zu connections open; accepting again "
              "as descriptors free up",
              uv_err_name(err), uv_strerror(err), s->nconns);
  }
  /* Until one of our connections closes, or ACCEPT_RETRY_MS: descriptors
   * of other kinds (a gateway's backend connections) free some too. */
  uv_poll_stop(&s->listener);
  uv_timer_start(&s->retry, accept_retry, retry_ms, 0);
}

/* From a timer, not from where a descriptor was freed: the accepts that
 * follow must not run inside another connection's teardown. */
static void accept_retry(uv_timer_t *t) {
  httpd_t *s = t->data;
  if (s->stopping)
    return;
  if (uv_poll_start(&s->listener, UV_READABLE, on_acceptable) != 0)
    uv_timer_start(&s->retry, accept_retry, ACCEPT_RETRY_MS, 0);
  else
    on_acceptable(&s->listener, 0, UV_READABLE);
}

/* ---- shedding idle connections ------------------------------------------ */

/* What a connection is, for shedding: its answers have stopped moving
 * (waiting in its queue with no write progress for stall_ms: a client
 * that reads nothing, often one that pipelines requests), it is idle
 * between requests, or it waits for a request (since its accept, or since
 * a first byte); or it may not be closed for room. */
enum { SHED_STALLED, SHED_IDLE, SHED_WAITING, SHED_NO };

/* Whether c's answers have not moved for stall_ms.  Progress is seen when
 * a write request completes (write_cb) or, for a large one, when its queue
 * has shrunk since it was last looked at (here, as the timer does). */
static int stalled(conn_t *c, uint64_t now) {
  if (c->closing || c->in_flight || c->writes == 0)
    return 0;
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
  if (queued < c->send_mark) {
    c->send_mark = queued;
    c->send_since = now;
    return 0;
  }
  const httpd_opts_t *o = &c->srv->opts;
  return now - c->send_since >= (o->stall_ms ? o->stall_ms : HTTPD_STALL_MS);
}

static int shed_kind(conn_t *c, uint64_t now) {
  if (stalled(c, now))
    return SHED_STALLED;
  if (c->closing || c->ending || conn_busy(c))
    return SHED_NO;
  return c->in_head ? SHED_WAITING : SHED_IDLE;
}

static uint64_t shed_since(const conn_t *c, int kind) {
  return kind == SHED_STALLED ? c->send_since
         : c->in_head         ? c->head_since
                              : c->idle_since;
}

/* Bytes the kernel has received for `c` and httpd has not read yet: a
 * connection accepted a moment ago whose request is there (or an idle
 * one whose next request has come) is about to be served, not silent. */
static int unread(const conn_t *c) {
  uv_os_sock_t fd;
  return sock_of((const uv_handle_t *)&c->tcp, &fd) == 0 ? sock_unread(fd) : 0;
}

/* A connection picked for shedding, and what it is. */
typedef struct shed_pick_s {
  conn_t *c;
  int kind;
} shed_pick_t;

/* Stalled ones go first (a client that reads nothing holds a descriptor
 * and the answers queued for it), then idle keep-alive ones, then those
 * waiting for a request; within each kind, the one that has waited
 * longest. */
static int shed_before(const shed_pick_t *a, const shed_pick_t *b) {
  if (a->kind != b->kind)
    return a->kind < b->kind;
  return shed_since(a->c, a->kind) < shed_since(b->c, b->kind);
}

/* The line saying what was closed for room since the last one. */
static void shed_log(httpd_t *s) {
  if (s->shed_idle + s->shed_waiting + s->shed_stalled == 0)
    return;
  char stalled_too[96] = "";
  if (s->shed_stalled > 0)
    snprintf(stalled_too, sizeof(stalled_too),
             "; and %llu not reading their answers (none sent for %llu ms)",
             s->shed_stalled,
             (unsigned long long)(s->opts.stall_ms ? s->opts.stall_ms
                                                   : HTTPD_STALL_MS));
  httpd_log(s,
            "accept: %s with %zu connections open: closed %llu idle "
            "keep-alive and %llu waiting longest for a request to accept "
            "new clients%s",
            s->shed_why, s->nconns, s->shed_idle, s->shed_waiting, stalled_too);
  s->shed_idle = s->shed_waiting = s->shed_stalled = 0;
  uint64_t now = uv_now(s->loop);
  s->shed_logged = now != 0 ? now : 1;
  uv_timer_stop(&s->note);
}

static void shed_note(uv_timer_t *t) { shed_log(t->data); }

/* accept failed for want of descriptors (`err`), or took one of the last
 * (err 0, `fd` the one it took): close idle connections, as nginx closes
 * its reusable ones, so that new clients are accepted, and served, rather
 * than left in the backlog until a timeout frees one.  Returns how many
 * were closed (their descriptors are free on return: uv_close closes a
 * stream's at once); 0 if none could be. */
static size_t shed(httpd_t *s, int err, int fd) {
  shed_pick_t pick[SHED_MAX];
  size_t n = 0, candidates = 0;
  uint64_t now = uv_now(s->loop);
  for (conn_t *c = s->conns; c != NULL; c = c->next) {
    shed_pick_t p = {c, shed_kind(c, now)};
    if (p.kind == SHED_NO)
      continue;
    candidates++;
    /* pick[] keeps the SHED_MAX first in shedding order. */
    size_t i = n;
    if (n < SHED_MAX)
      n++;
    else if (shed_before(&p, &pick[SHED_MAX - 1]))
      i = SHED_MAX - 1;
    else
      continue;
    for (; i > 0 && shed_before(&p, &pick[i - 1]); i--)
      pick[i] = pick[i - 1];
    pick[i] = p;
  }
  size_t want = candidates / 8, done = 0;
  want = want < SHED_MIN ? SHED_MIN : want > SHED_MAX ? SHED_MAX : want;
  s->shed_young = 0;
  for (size_t i = 0; i < n && done < want; i++) {
    conn_t *c = pick[i].c;
    int kind = pick[i].kind;
    if (kind == SHED_STALLED) {
      /* Its pipelined requests wait unread in the kernel: not a sign of
       * a client about to be served.  A reset: what the kernel holds for
       * it goes too. */
      s->shed_stalled++;
      s->stats.stalled_closed++;
      conn_close(c, 1);
      done++;
      continue;
    }
    if (now - shed_since(c, kind) < SHED_MIN_AGE_MS) {
      s->shed_young = 1;
      continue;
    }
    if (unread(c) > 0)
      continue;
    int waiting = kind == SHED_WAITING;
    s->shed_waiting += waiting;
    s->shed_idle += !waiting;
    s->stats.waiting_closed += waiting;
    s->stats.idle_closed += !waiting;
    conn_close(c, 0);
    done++;
  }
  if (done == 0)
    return 0;
  if (err != 0)
    snprintf(s->shed_why, sizeof(s->shed_why), "%s (%s)", uv_err_name(err),
             uv_strerror(err));
  else
    snprintf(s->shed_why, sizeof(s->shed_why),
             "descriptors running out (%d of %d)", fd + 1, s->fd_limit);
  if (s->shed_logged == 0 || now - s->shed_logged >= SHED_LOG_MS)
    shed_log(s);
  else if (!uv_is_active((uv_handle_t *)&s->note) && !s->stopping)
    /* Held for the rate limit, not lost: if no shed comes after it to
     * carry the counts, the timer does. */
    uv_timer_start(&s->note, shed_note, s->shed_logged + SHED_LOG_MS - now, 0);
  return done;
}

/* accept takes a descriptor before it looks for a client: at the limit it
 * fails with EMFILE whether one waits or not.  Whether one does. */
static int client_waiting(const httpd_t *s) { return sock_readable(s->fd); }

/* A client accepted on one of the last descriptors (POSIX numbers them
 * lowest first): moved down into one that shedding freed, if it can be.
 * Windows has no such limit (fd_low stays 0). */
static uv_os_sock_t move_low(uv_os_sock_t fd) {
#ifdef _WIN32
  return fd;
#else
  int low = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (low >= 0 && low < fd) {
    close(fd);
    return low;
  }
  if (low >= 0)
    close(low);
  return fd;
#endif
}

static void on_acceptable(uv_poll_t *h, int status, int events) {
  httpd_t *s = h->data;
  (void)events;
  if (status < 0)
    return;
  /* Shed again only once a client has been accepted since: descriptors
   * freed and taken at once by another thread mean no room, not more to
   * close. */
  int may_shed = 1;
  for (int i = 0; i < ACCEPTS_PER_WAKEUP && !s->stopping; i++) {
    uv_os_sock_t fd = SOCK_NONE;
    int e = sock_accept(s->fd, &fd);
    if (e == 0) {
      s->accepted_paused += s->paused;
      if (s->fd_low == 0 || (int64_t)fd < s->fd_low) {
        conn_open(s, fd);
        may_shed = 1;
        continue;
      }
      /* One of the last descriptors: room for what the clients accepted
       * will ask (a backend connection each) comes first.  Closing idle
       * ones makes it, below: the new client moves down into one of them,
       * so that the last descriptors stay free (left there, young silent
       * clients would fill them one by one).  If none can go yet,
       * accepting more would take the room itself (a flood of silent
       * clients in the backlog), so accept waits instead. */
      size_t freed = shed(s, 0, (int)fd);
      conn_open(s, freed > 0 ? move_low(fd) : fd);
      if (freed > 0) {
        may_shed = 0;
        continue;
      }
      accept_pause(s, UV_EMFILE,
                   s->shed_young ? SHED_MIN_AGE_MS : ACCEPT_RETRY_MS);
      return;
    }
    if (e == UV_EINTR || e == UV_ECONNABORTED || e == UV_EPROTO ||
        e == UV_EPERM)
      continue; /* that client only */
    if ((e == UV_EMFILE || e == UV_ENFILE) && !client_waiting(s)) {
      e = UV_EAGAIN; /* at the limit exactly, and nobody waits */
    } else if ((e == UV_EMFILE || e == UV_ENFILE) && may_shed &&
               shed(s, e, -1) > 0) {
      may_shed = 0;
      continue;
    }
    if (e == UV_EMFILE || e == UV_ENFILE || e == UV_ENOBUFS || e == UV_ENOMEM) {
      /* Sooner if idle connections will soon be old enough to close. */
      accept_pause(s, e, s->shed_young ? SHED_MIN_AGE_MS : ACCEPT_RETRY_MS);
    } else if (s->paused) { /* EAGAIN: nobody waits any more */
      s->paused = 0;
      httpd_log(s,
                "accept: accepting again after %llu ms (%zu clients that "
                "waited accepted since)",
                (unsigned long long)(uv_now(s->loop) - s->paused_at),
                s->accepted_paused);
    }
    return;
  }
}

/* ---- the server ---------------------------------------------------------- */

static void server_handle_closed(uv_handle_t *h) {
  httpd_t *s = h->data;
  if (h == (uv_handle_t *)&s->listener)
    sock_close(s->fd); /* uv_poll does not own it */
  s->handles--;
  server_maybe_done(s);
}

void httpd_req_trace_headers(const httpd_req_t *req, const char **traceparent,
                             char *tracestate, size_t cap) {
  size_t len = 0, parents = 0;
  int fits = cap > 0;
  *traceparent = NULL;
  for (size_t i = 0; i < req->nheaders; i++) {
    const httpd_header_t *h = &req->headers[i];
    if ((h->name[0] | 0x20) != 't') /* (most headers: one compare) */
      continue;
    if (strcasecmp(h->name, "traceparent") == 0) {
      *traceparent = parents++ == 0 ? h->value : NULL;
    } else if (strcasecmp(h->name, "tracestate") == 0 && fits) {
      size_t n = strlen(h->value);
      if (len + (len > 0) + n + 1 > cap) {
        fits = 0;
        continue;
      }
      if (len > 0)
        tracestate[len++] = ',';
      memcpy(tracestate + len, h->value, n + 1);
      len += n;
    }
  }
  if (parents > 1)
    *traceparent = NULL;
  if (cap > 0 && (!fits || len == 0))
    tracestate[0] = '\0';
}

void httpd_opts_init(httpd_opts_t *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->header_timeout_ms = HTTPD_HEADER_TIMEOUT_MS;
  opts->keepalive_timeout_ms = HTTPD_KEEPALIVE_TIMEOUT_MS;
  opts->send_timeout_ms = HTTPD_SEND_TIMEOUT_MS;
  opts->max_output = HTTPD_MAX_OUTPUT;
  opts->stall_ms = HTTPD_STALL_MS;
}

/* A listening socket made here rather than by uv_tcp_bind: SO_REUSEPORT
 * must be set before bind, and libuv 1.44 has no flag for it.  Windows has
 * no SO_REUSEPORT, and its SO_REUSEADDR would let another program take
 * the port: neither there. */
static int listen_socket(const struct sockaddr *addr, socklen_t len,
                         int reuse_port, uv_os_sock_t *out) {
  uv_os_sock_t fd = SOCK_NONE;
  int rc = sock_open(addr->sa_family, &fd);
  if (rc != 0)
    return rc;
#ifdef _WIN32
  if (reuse_port)
    rc = UV_ENOTSUP;
#else
  rc = sock_set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  if (rc == 0 && reuse_port)
    rc = sock_set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
#endif
  if (rc == 0 && (bind(fd, addr, len) != 0 || listen(fd, SOMAXCONN) != 0))
    rc = sock_err();
  if (rc != 0) {
    sock_close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

int httpd_start(uv_loop_t *loop, const char *ip, int port,
                const httpd_opts_t *opts, httpd_handler_cb handler, void *arg,
                httpd_t **out) {
  if (loop == NULL || ip == NULL || handler == NULL || out == NULL ||
      port < 0 || port > 65535)
    return UV_EINVAL;
  struct sockaddr_storage addr;
  int v6 = strchr(ip, ':') != NULL;
  int rc = v6 ? uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&addr)
              : uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;
  socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  uv_os_sock_t fd = SOCK_NONE;
  rc = listen_socket((struct sockaddr *)&addr, len,
                     opts != NULL && opts->reuse_port, &fd);
  if (rc != 0)
    return rc;
  len = sizeof(addr);
  if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
    rc = sock_err();
    sock_close(fd);
    return rc;
  }
  httpd_t *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    sock_close(fd);
    return UV_ENOMEM;
  }
  if (opts != NULL)
    s->opts = *opts;
  else
    httpd_opts_init(&s->opts);
  if (s->opts.max_output == 0)
    s->opts.max_output = HTTPD_MAX_OUTPUT;
  if (s->opts.max_output > INT_MAX)
    s->opts.max_output = INT_MAX;
  s->loop = loop;
  s->handler = handler;
  s->arg = arg;
  s->fd = fd;
#ifndef _WIN32 /* (Windows: no limit on sockets but memory) */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur <= INT_MAX) {
    int room = (int)rl.rlim_cur / 8;
    s->fd_limit = (int)rl.rlim_cur;
    s->fd_low = s->fd_limit - (room < SHED_HEADROOM ? room : SHED_HEADROOM);
  }
#endif
  s->port = ntohs(addr.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&addr)->sin6_port
                      : ((struct sockaddr_in *)&addr)->sin_port);
  rc = uv_poll_init_socket(loop, &s->listener, fd);
  if (rc != 0) {
    sock_close(fd);
    free(s);
    return rc;
  }
  uv_timer_init(loop, &s->retry);
  uv_timer_init(loop, &s->note);
  s->listener.data = s->retry.data = s->note.data = s;
  s->handles = 3;
  rc = uv_poll_start(&s->listener, UV_READABLE, on_acceptable);
  if (rc != 0) {
    httpd_stop(s, 0, NULL, NULL);
    return rc;
  }
  *out = s;
  return 0;
}

int httpd_port(const httpd_t *s) { return s->port; }

const httpd_stats_t *httpd_stats(const httpd_t *s) { return &s->stats; }

void httpd_stop(httpd_t *s, int drain, void (*done)(void *), void *arg) {
  if (!s->stopping) {
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    uv_close((uv_handle_t *)&s->retry, server_handle_closed);
    shed_log(s); /* what the note timer held */
    uv_close((uv_handle_t *)&s->note, server_handle_closed);
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

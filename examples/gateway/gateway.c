/* uvp-gateway — an HTTP/1.1 server that answers every GET with the outcome
 * of a fan-out to a fixed set of backends, as a JSON summary.
 *
 *   uvp-gateway [options] -b URL [-b URL]... (see usage() or --help)
 *
 * Each request is a task group (uvp_group_*): it GETs every backend at once
 * (httpc_get_target; each backend's URL is parsed once, at startup), each
 * backend request a member the group starts.  The group carries the
 * request's deadline (-t, uvp_group_opts_t.deadline_ms): everything the
 * request started (each backend request, its connect, its reads and
 * writes) that has not ended when it passes is cancelled, and that backend
 * reports ETIMEDOUT; one deadline for the request, not one timeout per
 * backend request that would start over on a retry.  Once the group
 * has joined (every member settled and every connection and timer they
 * used closed or handed back to the pool) it answers 200 with
 *
 *   {"request_id":"0-17",
 *    "backends":[{"url":"...","status":"fulfilled","code":200,"bytes":5,
 *                 "ms":1.2},
 *                {"url":"...","status":"rejected","error":"ETIMEDOUT"}],
 *    "ok":1,"failed":1}
 *
 * in backend order, and the same id in an X-Request-Id header.  As in
 * Promise.allSettled, "fulfilled" means an HTTP response arrived, whatever
 * its status code (a 404 is a response; its code is in "code"); "ok" and
 * "failed" count fulfilled and rejected backends.  "bytes" is the
 * backend's body length, "ms" the time from the start of its request to
 * the end of its body.
 *
 * The request id is the client's X-Request-Id if it sent a sane one (1 to
 * 64 of A-Z a-z 0-9 . _ : -), else "<worker>-<n>".  It lives in a scope
 * slot (uvp_scope_set) set when the request starts: the group, its members
 * and every handler registered from there see it, so each log line about
 * the request (a failing backend, a client gone) reads it with
 * uvp_scope_get where it is printed, deep in the handlers, rather than
 * from a pointer passed down by hand.
 *
 * Workers: -w N threads (default: one per CPU), each with its own
 * uv_loop_t, uvp context, backend pool and listening socket on the same
 * port (SO_REUSEPORT: the kernel spreads new connections over them).  They
 * share nothing but the read-only configuration, so no lock is taken on a
 * request's path; with --health-down, each backend's health too, owned by
 * one worker and shared by calls between loops (health.h), read on the
 * request's path from the worker's own copy.  The main thread only waits
 * for signals.
 *
 * Backend connections are kept alive and reused through each worker's
 * httpc pool, as nginx's upstream `keepalive` or Node's keep-alive agent
 * do: a backend request takes an idle connection to its host:port if
 * there is one, and gives it back after the response.  Up to
 * POOL_MAX_IDLE connections per backend host:port stay idle per worker
 * (256, Node's default maxFreeSockets): as many as the backend requests in
 * flight to one host:port at the peak (64 clients x 3 backends on one demo
 * server in bench/run-gateway), so steady load opens no new connection;
 * beyond that, connections are closed after their response, and an idle
 * one after --backend-idle-timeout.  A connection the backend closed while
 * idle costs one retry (see httpc.h).  While a request uses a connection it
 * is the request's group's (uvp_tcp_attach); idle, the pool's, under no
 * request's deadline (uvp_tcp_detach): it stays until
 * --backend-idle-timeout, however short -t is.
 *
 * HTTP is httpd's (examples/common/httpd.h: llhttp with strict checks of
 * its own, keep-alive, pipelined requests answered in order, the three
 * client timeouts, accept paused while descriptors run out):
 *  - GET and HEAD, on any path, start a fan-out; other methods get 405.
 *  - A client that resets its connection has its group cancelled
 *    (uvp_group_cancel): the backend requests are cancelled, their
 *    connections closed, and once the group has joined (nothing it started
 *    is left open) the request ends without an answer, with a log line.
 *    End of input is not an abort: a client that sends its request and
 *    shuts its write side (nc -N, HTTP/1.0 tools, health checkers) gets its
 *    answer, then the connection closes.  (A client that closed entirely
 *    looks the same until the answer is written; its fan-out runs its
 *    course, bounded by -t.)
 *  - Malformed requests get 400 (HTTP/0.9, "Name :", obs-fold, no Host in
 *    HTTP/1.1...), oversized headers 431, HTTP/2+ in text 505, a request
 *    slower than --client-header-timeout 408; then the connection closes.
 *
 * Trace context (W3C, trace.c): a request with a valid `traceparent` runs
 * under a SERVER span, its child, which the group, its members and their
 * backend requests inherit through the scope: each backend request is a
 * CLIENT span of it and sends its own `traceparent` (and the client's
 * valid `tracestate`) on; the answer names the span in `traceresponse`.
 * A malformed one is ignored, as if absent; with --trace-start a request
 * without a valid one starts a new trace, else it is served untraced.
 * With --trace-dir the spans are in the flight recorder's files.
 *
 * SIGUSR1: each worker prints its requests in flight, each pending backend
 * request with its async trace (--traces or UVP_TRACES=1; without, the
 * creation sites only), then its task dump (uvp_ctx_dump_tasks: each task,
 * what it waits for and since when, its group, the time left of its
 * deadline and its request id), to stderr; with --trace-dir, each worker
 * also writes what its flight recorder holds (uvp_ctx_recorder_write: its
 * last events, as Chrome trace JSON) to a file there, named in the dump:
 * at most one every TRACE_EVERY_MS per worker, one worker writing at a
 * time (a flood of SIGUSR1 wrote 190 MB in 8 s); a file that could not be
 * written whole is removed, named in the dump with the reason.
 * Nothing written to stderr is waited for (see diag_write): what a stalled
 * reader's pipe cannot take now is dropped and counted.
 *
 * SIGINT/SIGTERM: each worker stops accepting, closes idle connections,
 * lets requests in flight finish (bounded by -t) and answers them with
 * "Connection: close"; a second signal cancels what is left.  Then its
 * pool's idle backend connections are closed, uvp_ctx_close, and its loop
 * closes with nothing left on it; once every worker's has, exit status
 * 0.  Signals reach the workers through their uv_async_t: uvp is called on
 * each loop's own thread only. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h> /* mallinfo2, malloc_trim: glibc's */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "console-env.h"
#include "health.h"
#include "httpc.h"
#include "httpd.h"
#include "jsonw.h"
#include "pieces.h"
#include "trace.h"
#include "uvp.h"

#define POOL_MAX_IDLE 256 /* idle backend connections per host:port */
/* --trace-dir: each worker's flight recorder (about 230 000 events). */
#define TRACE_RING (16u * 1024 * 1024)
/* ... written by SIGUSR1 at most once a TRACE_EVERY_MS per worker, one
 * worker's write at a time (a SIGUSR1 flood wrote 190 MB in 8 s); a
 * worker whose turn is taken tries again every TRACE_TURN_MS. */
#define TRACE_EVERY_MS 10000
#define TRACE_TURN_MS 20
#define MAX_WORKERS 1024
#define STR_(x) #x
#define STR(x) STR_(x)

/* "s" after a count other than 1 (every count the gateway prints). */
static const char *plural(unsigned long long n) { return n == 1 ? "" : "s"; }
/* What each worker reserves in its uvp context at startup: room for this
 * many fan-outs in flight, with this many backend requests in all. */
#define RESERVE_FANOUTS 256
#define RESERVE_CALLS 1024
/* After a burst: how often a worker looks at its load, and the load
 * (connections, backend requests in flight, idle backend connections)
 * below which it has nothing worth giving back. */
#define TRIM_MS 1000
#define TRIM_FLOOR 64
#define DEFAULT_MAX_BODY (100ULL << 20) /* uvp-fanout's --max-filesize's */
#define JSON_HEADERS "Server: uvp-gateway\r\nContent-Type: application/json\r\n"
#define OOM_BODY "{\"error\":\"Internal Server Error\"}\n"
#define SLOT_REQUEST_ID 0 /* the scope slot of the request id (a string) */
#define REQUEST_ID_MAX 64

typedef struct worker_s worker_t;

/* A backend: its URL, prepared for httpc once (parse_args refused a URL
 * httpc cannot ask: a typo is said at start, not answered 200 with a
 * rejection in every summary), or, only without memory, the reason. */
typedef struct backend_s {
  worker_t *w;
  const char *url;        /* the configuration's */
  httpc_target_t *target; /* NULL: error and why */
  int error;
  const char *why;
} backend_t;

/* One backend request of a fan-out: a member of the request's group. */
typedef struct call_s {
  struct fanout_s *f;
  size_t i;         /* the backend's index */
  uvp_promise_t *p; /* its outcome, our reference; NULL: never made ... */
  int error;        /* ... and why */
} call_t;

/* 0 (fulfilled) or the rejection's code; a request still pending (a
 * group cancelled before the member started) counts as cancelled. */
static int call_status(const call_t *c) {
  if (c->p == NULL)
    return c->error < 0 ? c->error : UV_ECANCELED;
  switch (uvp_promise_state(c->p)) {
  case UVP_FULFILLED:
    return 0;
  case UVP_REJECTED:
    return uvp_promise_reason(c->p, NULL);
  default:
    return UV_ECANCELED;
  }
}

/* ---- the JSON summary -------------------------------------------------- */

/* The summary is written straight into a buffer (jsonw.h), byte for byte
 * what jansson's dump of the same document made: each backend's opening,
 * `{"url":"..."`, escaped once at the start, and the figures after it.
 * (Callgrind, 3 backends: 128 k instructions per gateway response with
 * jansson's objects built for each response and dumped through
 * open_memstream, 83 k with them built once and set; with one backend,
 * 46.1 k a request with them, 26.3 k written so: the dump was json_dumpb
 * and snprintf per number.) */
typedef struct summary_s {
  jsonw_t *url_json; /* per backend: `{"url":"<url, escaped>"` */
  size_t n;
  jsonw_t out; /* the last summary written, grown to the largest */
} summary_t;

/* Any time after a memset to 0, summary_init's or the caller's. */
static void summary_free(summary_t *s) {
  for (size_t i = 0; s->url_json != NULL && i < s->n; i++)
    free(s->url_json[i].p);
  free(s->url_json);
  free(s->out.p);
  memset(s, 0, sizeof(*s));
}

/* Returns 0, or -1 (out of memory, or a URL that is not UTF-8). */
static int summary_init(summary_t *s, const backend_t *backends, size_t n) {
  memset(s, 0, sizeof(*s));
  s->url_json = calloc(n, sizeof(*s->url_json));
  if (s->url_json == NULL)
    return -1;
  for (; s->n < n; s->n++) {
    jsonw_t *w = &s->url_json[s->n];
    jsonw_open(w);
    jsonw_key(w, "url");
    if (!jsonw_str(w, backends[s->n].url) || w->failed) {
      s->n++;
      summary_free(s);
      return -1;
    }
  }
  return 0;
}

/* The summary of one fan-out's outcomes, in backend order, "ms" to 0.1
 * ms: {"request_id":"...","backends":[...],"ok":N,"failed":N}, the
 * figures last (what scripts match).  Valid until the next call; NULL
 * without memory (or a request id that is not UTF-8). */
static const jsonw_t *summary_of(summary_t *s, const char *request_id,
                                 const call_t *calls) {
  jsonw_t *w = &s->out;
  int64_t ok = 0, failed = 0;
  jsonw_open(w);
  jsonw_key(w, "request_id");
  if (!jsonw_str(w, request_id))
    return NULL;
  jsonw_key(w, "backends");
  jsonw_nest(w, '[');
  for (size_t i = 0; i < s->n; i++) {
    int status = call_status(&calls[i]);
    jsonw_item(w);
    jsonw_raw(w, s->url_json[i].p, s->url_json[i].len);
    jsonw_key(w, "status");
    if (status == 0) {
      const httpc_response_t *r = uvp_promise_value(calls[i].p);
      jsonw_raw(w, "\"fulfilled\"", 11);
      jsonw_key(w, "code");
      jsonw_int(w, r->status);
      jsonw_key(w, "bytes");
      jsonw_int(w, (int64_t)r->bytes);
      jsonw_key(w, "ms");
      jsonw_tenths(w, (r->latency_us + 50) / 100);
      ok++;
    } else {
      jsonw_raw(w, "\"rejected\"", 10);
      jsonw_key(w, "error");
      jsonw_str(w, uvp_err_name(status));
      failed++;
    }
    jsonw_unnest(w, '}');
  }
  jsonw_unnest(w, ']');
  jsonw_key(w, "ok");
  jsonw_int(w, ok);
  jsonw_key(w, "failed");
  jsonw_int(w, failed);
  jsonw_close(w);
  jsonw_raw(w, "\n", 1);
  return w->failed ? NULL : w;
}

/* ---- configuration and workers ------------------------------------------- */

/* What every worker reads; written before the first starts. */
typedef struct config_s {
  char **urls;
  size_t nurls;
  uint64_t timeout_ms;
  uint64_t backend_idle_ms; /* the pool's idle timeout; 0: httpc's */
  uint64_t max_body;        /* backend responses' and requests'; 0: none */
  httpd_opts_t httpd;       /* log and log_arg are each worker's */
  unsigned workers;
  int traces;            /* --traces */
  uint64_t stall_ms;     /* --stall: uvp's stall detector; 0: off */
  const char *trace_dir; /* --trace-dir: the flight recorder's, or NULL */
  int trace_start;       /* --trace-start: a new trace for a request without */
  /* --health-down: health.h; 0: off */
  uint64_t health_down_ms;
} config_t;

typedef struct main_s main_t;
typedef struct fanout_s fanout_t;

struct worker_s {
  unsigned id;
  main_t *main;
  uv_thread_t thread;
  uv_sem_t ready; /* posted once listening, or failed to */
  int port;       /* in: where to listen (0: any); out: where it does */
  int error;      /* startup's */
  /* The worker thread's own, from here on. */
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  httpd_t *httpd; /* NULL once drained */
  int stopping;   /* the stop level applied: 1 drain, 2 close */
  unsigned dumps; /* SIGUSR1s answered */
  backend_t *backends;
  size_t nbackends;
  summary_t summary;
  httpc_opts_t opts;            /* opts.pool: the backend connections */
  health_t *health;             /* --health-down's, or NULL */
  httpd_stats_t stats;          /* httpd's, kept when it goes */
  fanout_t *inflight;           /* the fan-outs in flight, for SIGUSR1 */
  unsigned long long ids;       /* request ids made */
  unsigned long long cancelled; /* fan-outs cancelled: client gone */
  size_t calls;                 /* backend requests in flight */
  size_t backend_bytes; /* heap the backends' structures took at startup */
  unsigned long long bodies_capped; /* backend bodies over --max-body */
  /* Memory back to the system after a burst (see on_trim). */
  uv_timer_t trim;
  size_t load_peak; /* the most load() seen since the last trim */
  size_t reserve;   /* promises and reactions reserved at startup */
  unsigned long long trims;
  /* --trace-dir: when the last trace was written (uv_now, ms), and the
   * wait for the turn of a write that another worker holds. */
  uint64_t trace_last;
  unsigned traces;
  bool trace_due;
  uv_timer_t trace_turn;
  /* The main thread's way in: uv_async_send on `wake` while wake_open,
   * under `lock` (the worker closes it once drained). */
  uv_async_t wake;
  uv_mutex_t lock;
  int wake_open;
};

struct main_s {
  config_t cfg;
  uv_loop_t loop;
  uv_signal_t sigint, sigterm, sigusr1;
  uv_async_t finished; /* a worker's loop is closed */
  atomic_uint nfinished;
  atomic_int stop;     /* 0, 1 drain, 2 close */
  atomic_uint dumps;   /* SIGUSR1s received */
  atomic_bool tracing; /* a worker writes its trace (--trace-dir) */
  int signals;
  worker_t *workers;
  unsigned started; /* threads to join */
  int failed;       /* a worker's loop did not close */
  /* --health-down's, or NULL */
  health_net_t *health;
};

/* One fan-out, answering `req`: a task group of one member per backend. */
struct fanout_s {
  worker_t *w;
  httpd_req_t *req;
  uvp_group_t *group;
  fanout_t *prev, *next; /* the worker's in flight */
  uint64_t start;        /* loop time, ms */
  int aborted;           /* the client went away: the group is cancelled */
  gw_trace_t trace;      /* its SERVER span (trace.h) */
  /* The request id, for SIGUSR1's list, which is printed from the
   * worker's libuv callback, outside the request's scope. */
  char id[REQUEST_ID_MAX + 1];
  call_t calls[]; /* one per backend */
};

/* ---- diagnostics: stderr, never waited for ------------------------------ */

/* Log lines, SIGUSR1's dumps and the exit summary go to stderr, which may
 * be a pipe to a log collector that stalls.  Nothing waits for it: a
 * worker blocked in that write would serve nobody, and SIGTERM would no
 * longer stop the gateway (issue 51).  What stderr cannot take now is
 * dropped and counted; the next text that goes starts with a line saying
 * how much, and the exit summary counts it all.  A regular file, a block
 * device or /dev/null never makes a write wait: written whole.  A pipe or
 * a terminal: poll(POLLOUT, 0), then at most PIPE_BUF bytes of whole
 * lines, which a pipe with room takes whole without waiting and unmixed
 * with other writers' (O_NONBLOCK is left alone: other processes share
 * it); a socket: send(MSG_DONTWAIT).  One lock for every thread's lines:
 * no worker takes the room another's poll saw, and lines never mix. */
enum { DIAG_FILE, DIAG_POLL, DIAG_SOCKET };
static struct {
  uv_mutex_t lock;
  int mode;
  unsigned long long bytes, lines;         /* dropped since the note */
  unsigned long long all_bytes, all_lines; /* dropped in all */
} diag;

static void diag_init(void) {
  struct stat st;
  uv_mutex_init(&diag.lock);
  if (fstat(STDERR_FILENO, &st) != 0 || S_ISREG(st.st_mode) ||
      S_ISBLK(st.st_mode) || (S_ISCHR(st.st_mode) && !isatty(STDERR_FILENO)))
    diag.mode = DIAG_FILE;
  else
    diag.mode = S_ISSOCK(st.st_mode) ? DIAG_SOCKET : DIAG_POLL;
}

/* Write s (n bytes: at most PIPE_BUF, unless to a file) now: how many
 * bytes went.  Under diag.lock. */
static size_t diag_put(const char *s, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r;
    if (diag.mode == DIAG_SOCKET) {
      r = send(STDERR_FILENO, s + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      if (diag.mode == DIAG_POLL) {
        struct pollfd p = {.fd = STDERR_FILENO, .events = POLLOUT};
        int k = poll(&p, 1, 0);
        if (k < 0 && errno == EINTR)
          continue;
        if (k != 1 || (p.revents & (POLLERR | POLLNVAL)) ||
            !(p.revents & POLLOUT))
          return done;
      }
      r = write(STDERR_FILENO, s + done, n - done);
    }
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return done;
    done += (size_t)r;
    if (diag.mode != DIAG_FILE)
      return done; /* one write per poll */
  }
  return done;
}

static void diag_drop(const char *s, size_t n, int midline) {
  unsigned long long lines = midline;
  for (const char *p = s; (p = memchr(p, '\n', n - (size_t)(p - s))) != NULL;
       p++)
    lines++;
  diag.bytes += n;
  diag.lines += lines;
  diag.all_bytes += n;
  diag.all_lines += lines;
}

/* Write text (whole lines), or drop what does not go now. */
static void diag_write(const char *text, size_t len) {
  uv_mutex_lock(&diag.lock);
  if (diag.bytes > 0) {
    char note[160];
    int n = snprintf(note, sizeof(note),
                     "uvp-gateway: %llu byte%s (%llu line%s) of diagnostics "
                     "dropped: stderr would block\n",
                     diag.bytes, plural(diag.bytes), diag.lines,
                     plural(diag.lines));
    if (n > 0 && (size_t)n < sizeof(note) &&
        diag_put(note, (size_t)n) == (size_t)n) {
      diag.bytes = diag.lines = 0;
    } else {
      diag_drop(text, len, 0); /* still no room (a cut note: rare) */
      uv_mutex_unlock(&diag.lock);
      return;
    }
  }
  for (size_t at = 0; at < len;) {
    size_t n = len - at;
    if (diag.mode != DIAG_FILE && n > PIPE_BUF) {
      /* Whole lines, PIPE_BUF bytes at most (a longer line in pieces). */
      const char *s = text + at, *nl = NULL;
      for (const char *p = s; p < s + PIPE_BUF;) {
        const char *q = memchr(p, '\n', (size_t)(s + PIPE_BUF - p));
        if (q == NULL)
          break;
        nl = q;
        p = q + 1;
      }
      n = nl != NULL ? (size_t)(nl - s) + 1 : PIPE_BUF;
    }
    size_t put = diag_put(text + at, n);
    if (put < n) {
      diag_drop(text + at + put, len - at - put,
                put > 0 && text[at + put - 1] != '\n');
      break;
    }
    at += n;
  }
  uv_mutex_unlock(&diag.lock);
}

static void diag_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void diag_printf(const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n > 0)
    diag_write(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* Text made in a memory stream (`out`, over *text and *len), then
 * written as above. */
static void diag_memstream(FILE *out, char **text, size_t *len) {
  if (fclose(out) == 0)
    diag_write(*text, *len);
  free(*text);
}

/* ---- logging ------------------------------------------------------------- */

/* The id of the request the running code works for: the scope's. */
static const char *request_id(const worker_t *w) {
  const char *id = uvp_scope_get(w->ctx, SLOT_REQUEST_ID);
  return id != NULL ? id : "-";
}

/* A line about the request the running code works for. */
static void log_request(const worker_t *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_request(const worker_t *w, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  diag_printf("uvp-gateway: worker %u: request %s: %s\n", w->id, request_id(w),
              msg);
}

/* ---- responses ----------------------------------------------------------- */

/* Answer with `doc` (borrowed) as one compact line of JSON, dumped into a
 * buffer that serves every response of the worker: the socket usually
 * takes the whole response at once, and httpd copies what it does not.
 * The X-Request-Id header is the current scope's request id.  Whatever
 * follows this call must not need the scope: httpd may start the next
 * pipelined request inside it (on_request, which starts a scope of its
 * own). */
/* Answer with a JSON body of n bytes, its line end included (NULL: no
 * memory, a 500). */
static void respond_json(worker_t *w, httpd_req_t *req, int code,
                         const char *body, size_t n) {
  char headers[sizeof(JSON_HEADERS) + 32 + REQUEST_ID_MAX +
               GW_TRACERESPONSE_MAX];
  char tr[GW_TRACERESPONSE_MAX];
  gw_trace_response(w->ctx, tr, sizeof(tr));
  const piece_t p[] = {PIECE_LIT(JSON_HEADERS "X-Request-Id: "),
                       piece_str(request_id(w)), PIECE_LIT("\r\n"),
                       piece_str(tr)};
  if (pieces_join(headers, sizeof(headers), p, sizeof(p) / sizeof(p[0])) >=
      sizeof(headers))
    headers[0] = '\0'; /* (cannot be: the id and tr are bounded) */
  if (body == NULL)
    httpd_respond(req, 500, headers, OOM_BODY, sizeof(OOM_BODY) - 1);
  else
    httpd_respond(req, code, headers, body, n);
}

static void respond_error(worker_t *w, httpd_req_t *req, int code) {
  jsonw_t doc = {0};
  jsonw_open(&doc);
  jsonw_key(&doc, "request_id");
  jsonw_str(&doc, request_id(w)); /* (its characters are checked) */
  jsonw_key(&doc, "error");
  jsonw_str(&doc, httpd_reason(code));
  jsonw_close(&doc);
  jsonw_raw(&doc, "\n", 1);
  respond_json(w, req, code, doc.failed ? NULL : doc.p, doc.len);
  free(doc.p);
}

/* ---- the fan-out --------------------------------------------------------- */

static void note_load(worker_t *w);

/* A backend request failed: said where it is seen, in the request's scope
 * (the member's handler, registered in the group's work).  A cancellation
 * is the client gone, said once for the whole request (on_joined). */
static uvp_ret_t on_call_failed(void *arg, const uvp_outcome_t *in) {
  backend_t *b = arg;
  const char *why = in->value; /* httpc's message, if any */
  if (in->status == UV_EFBIG)
    b->w->bodies_capped++;
  if (b->w->health != NULL)
    health_saw(b->w->health, (size_t)(b - b->w->backends), in->status);
  if (in->status != UV_ECANCELED)
    log_request(b->w, "backend %.200s: %s (%s)", b->url,
                httpc_err_name(in->status),
                why != NULL ? why : httpc_strerror(in->status));
  return uvp_ret_value(NULL, NULL);
}

/* --health-down: a backend that answered tells the workers' health (a
 * failure is on_call_failed's). */
static uvp_ret_t on_call_answered(void *arg, const uvp_outcome_t *in) {
  backend_t *b = arg;
  if (in->status == 0)
    health_saw(b->w->health, (size_t)(b - b->w->backends), 0);
  return uvp_ret_pass();
}

/* Start backend request c->i: a member of the request's group, run in the
 * group's scope, so that its connection and timer are the group's. */
static int start_call(void *arg, uvp_promise_t **out) {
  call_t *c = arg;
  worker_t *w = c->f->w;
  backend_t *b = &w->backends[c->i];
  uvp_promise_t *p;
  int err;
  if (b->target != NULL && w->health != NULL && health_down(w->health, c->i))
    err = uvp_promise_rejected(w->ctx, UV_EHOSTDOWN,
                               (void *)"down: failed on a worker within "
                                       "--health-down",
                               NULL, &p);
  else if (b->target != NULL)
    err = httpc_get_target(w->ctx, b->target, &w->opts, &p);
  else
    err = uvp_promise_rejected(w->ctx, b->error, (void *)b->why, NULL, &p);
  /* A backend request that cannot even start (no memory) is that
   * backend's rejection, not the whole request's failure. */
  if (err < 0 && err != UVP_ECLOSED)
    err = uvp_promise_rejected(w->ctx, err, NULL, NULL, &p);
  if (err < 0) {
    c->error = err;
    return err;
  }
  /* Its argument is the backend, which outlives the fan-out. */
  (void)uvp_promise_on(p, UVP_ON_REJECTED, on_call_failed, b, NULL);
  if (w->health != NULL)
    (void)uvp_promise_on(p, UVP_ON_BOTH, on_call_answered, b, NULL);
  c->p = uvp_promise_retain(p);
  *out = p;
  return 0;
}

static void fanout_free(fanout_t *f) {
  worker_t *w = f->w;
  *(f->prev != NULL ? &f->prev->next : &w->inflight) = f->next;
  if (f->next != NULL)
    f->next->prev = f->prev;
  for (size_t i = 0; i < w->nbackends; i++)
    uvp_promise_release(f->calls[i].p);
  uvp_group_release(f->group);
  w->calls -= w->nbackends;
  free(f);
}

/* The group has joined: every backend request has settled and everything
 * they started is closed (or back in the pool).  Runs in the request's
 * scope. */
static uvp_ret_t on_joined(void *arg, const uvp_outcome_t *in) {
  fanout_t *f = arg;
  worker_t *w = f->w;
  httpd_req_t *req = f->req;
  (void)in;
  if (f->aborted) {
    size_t cancelled = 0;
    for (size_t i = 0; i < w->nbackends; i++)
      cancelled += call_status(&f->calls[i]) == UV_ECANCELED;
    log_request(w,
                "client gone after %llu ms: group cancelled, %zu of %zu "
                "backend request%s cut short, %s connection%s closed",
                (unsigned long long)(uv_now(&w->loop) - f->start), cancelled,
                w->nbackends, plural(w->nbackends),
                cancelled == 1 ? "its" : "their", plural(cancelled));
    w->cancelled++;
    gw_trace_end(w->ctx, &f->trace, UV_ECANCELED);
    fanout_free(f);
    httpd_end(req, HTTPD_CLOSE); /* nothing is written to a client gone */
    return uvp_ret_value(NULL, NULL);
  }
  const jsonw_t *doc = summary_of(&w->summary, request_id(w), f->calls);
  gw_trace_end(w->ctx, &f->trace, 0);
  fanout_free(f);
  respond_json(w, req, 200, doc != NULL ? doc->p : NULL,
               doc != NULL ? doc->len : 0);
  return uvp_ret_value(NULL, NULL);
}

/* The client went away: cancel the group, every backend request in it.
 * on_joined still runs, once their connections are closed, and finishes
 * the request. */
static void fanout_abort(httpd_req_t *req) {
  fanout_t *f = req->data;
  f->aborted = 1;
  uvp_group_cancel(f->group);
}

static void start_fanout(worker_t *w, httpd_req_t *req, gw_trace_t *trace) {
  size_t n = w->nbackends;
  fanout_t *f = calloc(1, sizeof(*f) + n * sizeof(call_t));
  if (f == NULL) {
    respond_error(w, req, 503);
    return;
  }
  f->trace = *trace; /* the fan-out ends it */
  trace->on = 0;
  f->w = w;
  f->req = req;
  f->start = uv_now(&w->loop);
  w->calls += n;
  note_load(w);
  const char *id = request_id(w);
  size_t idn = strnlen(id, sizeof(f->id) - 1); /* (ids are REQUEST_ID_MAX) */
  memcpy(f->id, id, idn);
  f->id[idn] = '\0';
  f->next = w->inflight;
  if (f->next != NULL)
    f->next->prev = f;
  w->inflight = f;
  /* Created in the request's scope: the group's scope, which its members
   * run in, carries the request id, and the request's deadline (none for
   * -t 0). */
  uvp_group_opts_t go = {0, 0, w->main->cfg.timeout_ms};
  int err = uvp_group_new(w->ctx, &go, &f->group);
  for (size_t i = 0; err == 0 && i < n; i++) {
    f->calls[i].f = f;
    f->calls[i].i = i;
    /* A member that cannot be added (no memory) is that backend's
     * rejection, as above. */
    int rc = uvp_group_start(f->group, start_call, &f->calls[i], NULL);
    if (rc < 0 && f->calls[i].error == 0)
      f->calls[i].error = rc;
  }
  uvp_promise_t *join = NULL;
  if (err == 0 && (err = uvp_group_close(f->group)) == 0 &&
      (err = uvp_group_join(f->group, &join)) == 0)
    err = uvp_promise_on(join, UVP_ON_BOTH | UVP_ON_TAKE, on_joined, f, NULL);
  if (err < 0) {
    /* Nothing will answer: what was started must not run on unobserved. */
    if (f->group != NULL)
      uvp_group_cancel(f->group);
    gw_trace_end(w->ctx, &f->trace, err);
    fanout_free(f);
    respond_error(w, req, 503);
    return;
  }
  req->data = f;
  req->on_abort = fanout_abort;
}

/* A request id the client sent, if it is one we can log and echo: 1 to
 * REQUEST_ID_MAX of A-Z a-z 0-9 . _ : - (no room for header or log
 * injection). */
static const char *client_request_id(const httpd_req_t *req) {
  for (size_t i = 0; i < req->nheaders; i++) {
    if (strcasecmp(req->headers[i].name, "X-Request-Id") != 0)
      continue;
    const char *v = req->headers[i].value;
    size_t len = strlen(v);
    if (len > 0 && len <= REQUEST_ID_MAX &&
        strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789._:-") == len)
      return v;
  }
  return NULL;
}

static void on_request(httpd_req_t *req, void *arg) {
  worker_t *w = arg;
  /* A libuv callback, or the answer to the request before this one on the
   * connection (pipelined), inside that request's handler: either way
   * this request starts a scope of its own, with its id. */
  uvp_scope_clear(w->ctx);
  char made[32];
  const char *id = client_request_id(req);
  if (id == NULL) {
    char wid[PIECE_DIGITS], seq[PIECE_DIGITS];
    const piece_t p[] = {piece_u64(wid, w->id), PIECE_LIT("-"),
                         piece_u64(seq, ++w->ids)};
    _Static_assert(sizeof(made) > 10 + 1 + PIECE_DIGITS, "an id fits");
    pieces_join(made, sizeof(made), p, sizeof(p) / sizeof(p[0]));
    id = made;
  }
  /* No memory (the copy freed by a refusal): the request goes on without
   * an id ("-"). */
  char *copy = strdup(id);
  if (copy != NULL)
    uvp_scope_set(w->ctx, SLOT_REQUEST_ID, copy, free);
  /* Its SERVER span, if traced: what follows runs in the span's scope. */
  gw_trace_t trace;
  gw_trace_begin(w->ctx, req, w->main->cfg.trace_start, &trace);
  if (req->error == 0 &&
      (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)) {
    start_fanout(w, req, &trace); /* the fan-out's span from here */
  } else {
    /* Answered here: the span ends before the answer goes out, so that no
     * recorder sees the reply before the span's end (uvp-trace merge's
     * request/reply pairs). */
    gw_trace_end(w->ctx, &trace, 0);
    respond_error(w, req, req->error != 0 ? req->error : 405);
  }
  gw_trace_end(w->ctx, &trace, 0); /* start_fanout took it, or did not */
  /* The next libuv callback serves another request, or none. */
  uvp_scope_clear(w->ctx);
}

/* ---- memory -------------------------------------------------------------- */

/* What malloc has handed out and not had back, in bytes (every arena's:
 * the process's). */
static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/* Where the process's memory is, for SIGUSR1: resident in all, what
 * malloc has handed out, what it holds free (in its arenas: RSS until
 * trimmed, or until reused), and what it maps whole for large blocks. */
static void print_process_memory(FILE *out) {
  size_t rss = 0;
  struct mallinfo2 mi = mallinfo2();
  uv_resident_set_memory(&rss);
  fprintf(out,
          "uvp-gateway: memory: RSS %zu kB; malloc: %zu kB in use, %zu kB "
          "free in its arenas, %zu kB mapped for large blocks\n",
          rss / 1024, (mi.uordblks + mi.hblkhd) / 1024, mi.fordblks / 1024,
          mi.hblkhd / 1024);
}

/* What a worker holds memory for: its client connections, its backend
 * requests in flight and its idle backend connections. */
static size_t load(const worker_t *w) {
  httpc_pool_stats_t ps;
  httpc_pool_stats(w->opts.pool, &ps);
  return httpd_stats(w->httpd)->open + w->calls + ps.idle;
}

static void on_trim(uv_timer_t *t);

/* A fan-out started: the load may be at a peak, and the worker watches
 * for its end. */
static void note_load(worker_t *w) {
  size_t l = load(w);
  if (l > w->load_peak)
    w->load_peak = l;
  if (!uv_is_active((uv_handle_t *)&w->trim))
    uv_timer_start(&w->trim, on_trim, TRIM_MS, 0);
}

/* Once a second while the worker holds anything: when its load has
 * fallen to half its peak or less (a burst has ended: its connections,
 * requests and their buffers are freed), uvp's pools give back the slabs
 * the burst left empty (uvp_ctx_trim; the startup reservation is then
 * made again, a few hundred kB), and malloc gives what it holds free back
 * to the system.  glibc returns only the top of an arena by itself, and a
 * burst on a worker thread fills an arena of its own whose top is pinned
 * by whatever was allocated last (a pooled connection, a uvp slab):
 * malloc_trim releases the free pages inside it too.  Idle backend
 * connections count in the load, so their memory goes back the same way
 * once --backend-idle-timeout closes them. */
static void on_trim(uv_timer_t *t) {
  worker_t *w = t->data;
  size_t l = load(w);
  if (l > w->load_peak)
    w->load_peak = l;
  if (w->load_peak >= TRIM_FLOOR && l <= w->load_peak / 2) {
    (void)uvp_ctx_trim(w->ctx);
    (void)uvp_ctx_reserve(w->ctx, w->reserve, w->reserve);
    malloc_trim(0);
    w->trims++;
    w->load_peak = l;
  }
  if (l > 0)
    uv_timer_start(&w->trim, on_trim, TRIM_MS, 0);
}

/* A worker's share: what its uvp context's pools hold (promise, reaction
 * and operation slabs: kept until a trim, see on_trim), what its backends'
 * structures (parsed URLs, request texts, the summary's JSON) took at
 * startup, and its backend connections. */
static void print_worker_memory(worker_t *w, FILE *out) {
  uvp_ctx_stats_t st;
  httpc_pool_stats_t ps;
  if (uvp_ctx_stats(w->ctx, &st) != 0)
    memset(&st, 0, sizeof(st));
  httpc_pool_stats(w->opts.pool, &ps);
  fprintf(out,
          "uvp-gateway: worker %u: memory: uvp pools %zu kB (%zu slab%s, %zu "
          "promise%s live); %zu backend%s %zu kB; %zu backend request%s in "
          "flight, %zu backend connection%s idle; trimmed %llu time%s\n",
          w->id, st.slab_bytes / 1024, st.slab_allocs, plural(st.slab_allocs),
          st.live, plural(st.live), w->nbackends, plural(w->nbackends),
          w->backend_bytes / 1024, w->calls, plural(w->calls), ps.idle,
          plural(ps.idle), w->trims, plural(w->trims));
}

/* ---- SIGUSR1 ------------------------------------------------------------ */

/* The task dump's rendering of the request id slot: a string. */
static int format_request_id(void *value, char *buf, size_t cap) {
  return snprintf(buf, cap, "%s", (const char *)value);
}

/* The stall detector's histogram (--stall): how long the loop's slices
 * ran, in powers of two of microseconds, the empty buckets left out. */
static void print_worker_stalls(worker_t *w, FILE *out) {
  uvp_stall_stats_t st;
  if (uvp_ctx_stall_stats(w->ctx, &st) != 0 || st.slices == 0) {
    fprintf(out,
            "uvp-gateway: worker %u: slices: none timed (yet, or no "
            "--stall)\n",
            w->id);
    return;
  }
  fprintf(out,
          "uvp-gateway: worker %u: slices: %llu timed, %llu stall%s, "
          "longest %llu us:",
          w->id, (unsigned long long)st.slices, (unsigned long long)st.stalls,
          plural(st.stalls), (unsigned long long)st.max_us);
  for (int i = 0; i < UVP_STALL_BUCKETS; i++) {
    if (st.buckets[i] == 0)
      continue;
    if (i == 0)
      fprintf(out, " <1us %llu", (unsigned long long)st.buckets[i]);
    else if (i == UVP_STALL_BUCKETS - 1)
      fprintf(out, " >=%lluus %llu", 1ull << (i - 1),
              (unsigned long long)st.buckets[i]);
    else
      fprintf(out, " <%lluus %llu", 1ull << i,
              (unsigned long long)st.buckets[i]);
  }
  fprintf(out, "\n");
}

/* --trace-dir: the worker's flight recorder into a file of its own there
 * (a regular file: nothing waits for a reader), named in the dump.  A
 * file that could not be written whole (a full disk) is removed, and the
 * line says why with its name. */
static void write_worker_trace(worker_t *w, FILE *out) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/uvp-gateway-%ld-worker-%u-%u.json",
           w->main->cfg.trace_dir, (long)getpid(), w->id, w->dumps);
  w->trace_last = uv_now(&w->loop);
  w->traces++;
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(out, "uvp-gateway: worker %u: flight recorder: %s: %s\n", w->id,
            path, strerror(errno));
    return;
  }
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, f, NULL, NULL};
  int n = uvp_ctx_recorder_write(w->ctx, &o);
  /* What the stream still held fails here on a full disk. */
  if (fclose(f) != 0 && n >= 0)
    n = uv_translate_sys_error(errno);
  if (n >= 0) {
    fprintf(out, "uvp-gateway: worker %u: flight recorder: %d events in %s\n",
            w->id, n, path);
    return;
  }
  int gone = remove(path) == 0;
  fprintf(out, "uvp-gateway: worker %u: flight recorder: %s: %s%s\n", w->id,
          path, uvp_strerror(n), gone ? " (removed)" : "");
}

static void on_trace_turn(uv_timer_t *t);

/* SIGUSR1's trace, within the bounds of TRACE_EVERY_MS: written now, or
 * once no other worker writes one, or not at all (too soon), each said in
 * the dump. */
static void dump_worker_trace(worker_t *w, FILE *out) {
  if (w->main->cfg.trace_dir == NULL)
    return;
  uint64_t ago = uv_now(&w->loop) - w->trace_last;
  if (w->trace_due)
    return; /* the last SIGUSR1's is about to be written */
  if (w->traces > 0 && ago < TRACE_EVERY_MS) {
    fprintf(out,
            "uvp-gateway: worker %u: flight recorder: not written: the last "
            "was %llu ms ago (one every %d s)\n",
            w->id, (unsigned long long)ago, TRACE_EVERY_MS / 1000);
    return;
  }
  if (atomic_exchange(&w->main->tracing, true)) {
    fprintf(out,
            "uvp-gateway: worker %u: flight recorder: written after "
            "another worker's\n",
            w->id);
    w->trace_due = true;
    uv_timer_start(&w->trace_turn, on_trace_turn, TRACE_TURN_MS, TRACE_TURN_MS);
    return;
  }
  write_worker_trace(w, out);
  atomic_store(&w->main->tracing, false);
}

static void on_trace_turn(uv_timer_t *t) {
  worker_t *w = t->data;
  if (atomic_exchange(&w->main->tracing, true))
    return;
  uv_timer_stop(t);
  w->trace_due = false;
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (out != NULL)
    write_worker_trace(w, out);
  atomic_store(&w->main->tracing, false);
  if (out != NULL)
    diag_memstream(out, &text, &len);
}

/* Print the worker's requests in flight, each pending backend request with
 * its async trace, then its tasks (uvp_ctx_dump_tasks), as one write: the
 * workers' dumps do not interleave. */
static void dump_worker(worker_t *w) {
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (out == NULL)
    return;
  size_t nreq = 0;
  for (fanout_t *f = w->inflight; f != NULL; f = f->next)
    nreq++;
  uint64_t now = uv_now(&w->loop);
  fprintf(out, "uvp-gateway: worker %u: SIGUSR1: %zu request%s in flight\n",
          w->id, nreq, nreq == 1 ? "" : "s");
  for (fanout_t *f = w->inflight; f != NULL; f = f->next) {
    size_t pending = 0;
    for (size_t i = 0; i < w->nbackends; i++)
      pending += f->calls[i].p != NULL &&
                 uvp_promise_state(f->calls[i].p) == UVP_PENDING;
    fprintf(out,
            "uvp-gateway: worker %u: request %s: %s %.200s for %llu ms, "
            "%zu of %zu backend request%s pending%s\n",
            w->id, f->id, f->req->method, f->req->path,
            (unsigned long long)(now - f->start), pending, w->nbackends,
            plural(w->nbackends),
            f->aborted ? " (cancelled: client gone)" : "");
    for (size_t i = 0; i < w->nbackends; i++) {
      uvp_promise_t *p = f->calls[i].p;
      if (p == NULL || uvp_promise_state(p) != UVP_PENDING)
        continue;
      fprintf(out, "  backend %.200s, async trace:\n", w->backends[i].url);
      if (uvp_promise_print_trace(p, out) == UV_ENOENT)
        fprintf(out, "  (none: traces are off; --traces or UVP_TRACES=1)\n");
    }
  }
  fprintf(out, "uvp-gateway: worker %u: tasks:\n", w->id);
  uvp_dump_opts_t dump = {0, out, NULL, NULL, 0};
  int n = uvp_ctx_dump_tasks(w->ctx, &dump);
  fprintf(out, "uvp-gateway: worker %u: %d task%s\n", w->id, n,
          n == 1 ? "" : "s");
  print_worker_stalls(w, out);
  print_worker_memory(w, out);
  dump_worker_trace(w, out);
  diag_memstream(out, &text, &len); /* never waits: see diag_write */
}

/* ---- a worker ------------------------------------------------------------ */

static int add_backend(worker_t *w, const char *url) {
  backend_t *b = &w->backends[w->nbackends];
  memset(b, 0, sizeof(*b));
  b->w = w;
  b->url = url;
  b->error = httpc_target_new(url, &b->target, &b->why);
  if (b->error == UV_ENOMEM)
    return UV_ENOMEM;
  w->nbackends++;
  return 0;
}

static void free_backends(worker_t *w) {
  for (size_t i = 0; i < w->nbackends; i++)
    httpc_target_free(w->backends[i].target);
  free(w->backends);
  summary_free(&w->summary);
}

static void health_log(unsigned worker, const char *line) {
  diag_printf("uvp-gateway: worker %u: %s\n", worker, line);
}

static void log_line(const char *line, void *arg) {
  worker_t *w = arg;
  diag_printf("uvp-gateway: worker %u: %s\n", w->id, line);
}

/* Every connection is closed and every fan-out has settled: uvp can go,
 * and with it the idle backend connections; then the wake-up handle, the
 * last thing keeping the loop alive. */
static void on_drained(void *arg) {
  worker_t *w = arg;
  w->stats = *httpd_stats(w->httpd);
  w->httpd = NULL;
  uv_close((uv_handle_t *)&w->trim, NULL);
  uv_close((uv_handle_t *)&w->trace_turn, NULL);
  httpc_pool_close(w->opts.pool);
  health_leave(w->health);
  uvp_ctx_close(w->ctx);
  uv_mutex_lock(&w->lock);
  w->wake_open = 0;
  uv_mutex_unlock(&w->lock);
  uv_close((uv_handle_t *)&w->wake, NULL);
}

/* The main thread raised the stop level (drain, or stop waiting), or got
 * a SIGUSR1 (print what is in flight). */
static void on_wake(uv_async_t *a) {
  worker_t *w = a->data;
  unsigned dumps = atomic_load(&w->main->dumps);
  if (dumps != w->dumps) {
    w->dumps = dumps;
    dump_worker(w);
  }
  int level = atomic_load(&w->main->stop);
  if (w->httpd != NULL && level > w->stopping) {
    w->stopping = level;
    httpd_stop(w->httpd, level == 1, on_drained, w);
  }
}

/* Everything a worker owns, made on its own thread (a uvp context belongs
 * to the thread that creates it).  Returns 0, or an error to report. */
static int worker_init(worker_t *w) {
  const config_t *cfg = &w->main->cfg;
  /* Workers start one at a time: what malloc hands out meanwhile is this
   * worker's. */
  size_t heap0 = heap_in_use();
  w->backends = calloc(cfg->nurls, sizeof(*w->backends));
  if (w->backends == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->nurls; i++)
    if (add_backend(w, cfg->urls[i]) != 0)
      return UV_ENOMEM;
  if (summary_init(&w->summary, w->backends, w->nbackends) != 0)
    return UV_ENOMEM;
  w->backend_bytes = heap_in_use() - heap0;
  /* No timeout per backend request: the request's deadline bounds them
   * all (start_fanout). */
  w->opts.timeout_ms = 0;
  w->opts.keep = 0; /* only the body's size goes into the summary */
  w->opts.max_body = cfg->max_body;
  int err = uvp_ctx_new(&w->loop, &w->ctx);
  if (err == 0)
    err = uvp_ctx_set_slot_format(w->ctx, SLOT_REQUEST_ID, format_request_id);
  if (err == 0 && cfg->traces)
    err = uvp_ctx_set_traces(w->ctx, 1);
  if (err == 0) /* UVP_CONSOLE=PATH: PATH for worker 0, PATH.N for N */
    err = tool_console_listen(w->ctx, "uvp-gateway", w->id);
  if (err == 0 && cfg->stall_ms != 0)
    err = uvp_ctx_set_stall(w->ctx, cfg->stall_ms, NULL, NULL);
  if (err == 0 && cfg->trace_dir != NULL)
    err = uvp_ctx_set_recorder(w->ctx, TRACE_RING, UVP_RECORD_ALL);
  if (err == 0 && w->main->health != NULL)
    err = health_join(w->main->health, w->id, w->ctx, &w->health);
  httpc_pool_opts_t po = {POOL_MAX_IDLE, 0, cfg->backend_idle_ms};
  if (err == 0)
    err = httpc_pool_new_with(w->ctx, &po, &w->opts.pool);
  if (err < 0)
    return err;
  /* Room for a few hundred fan-outs in flight without touching malloc
   * (about 4 promises and 4 reactions per backend request, 2 per
   * request), but for RESERVE_CALLS backend requests at most: what is
   * reserved stays with the context until it closes, used or not, and
   * 256 fan-outs to each of a thousand backends would be 86 MB held from
   * the start.  A burst beyond it takes slabs as it goes. */
  size_t calls = w->nbackends < RESERVE_CALLS / RESERVE_FANOUTS
                     ? RESERVE_FANOUTS * w->nbackends
                     : RESERVE_CALLS;
  w->reserve = 4 * calls + 2 * RESERVE_FANOUTS;
  uvp_ctx_reserve(w->ctx, w->reserve, w->reserve);
  httpd_opts_t o = cfg->httpd;
  o.reuse_port = cfg->workers > 1;
  o.max_body = cfg->max_body;
  o.log = log_line;
  o.log_arg = w;
  err =
      httpd_start(&w->loop, "127.0.0.1", w->port, &o, on_request, w, &w->httpd);
  if (err < 0)
    return err;
  w->port = httpd_port(w->httpd);
  uv_timer_init(&w->loop, &w->trim);
  uv_unref((uv_handle_t *)&w->trim); /* never what keeps the loop going */
  w->trim.data = w;
  uv_timer_init(&w->loop, &w->trace_turn);
  w->trace_turn.data = w;
  uv_async_init(&w->loop, &w->wake, on_wake);
  w->wake.data = w;
  w->wake_open = 1;
  return 0;
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  main_t *m = w->main;
  w->error = worker_init(w);
  if (w->error != 0) {
    /* Close what was made: no handle of httpd's exists (it failed, or was
     * not reached). */
    if (w->opts.pool != NULL)
      httpc_pool_close(w->opts.pool);
    health_leave(w->health);
    if (w->ctx != NULL)
      uvp_ctx_close(w->ctx);
  }
  uv_sem_post(&w->ready);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  int err = uv_loop_close(&w->loop);
  if (err < 0) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out != NULL) {
      fprintf(out, "uvp-gateway: worker %u: uv_loop_close: %s\n", w->id,
              uv_strerror(err));
      uv_print_all_handles(&w->loop, out);
      diag_memstream(out, &text, &len);
    }
    m->failed = 1;
  }
  free_backends(w);
  health_free(w->health);
  /* The last thing this thread does: the main thread joins it before it
   * closes `finished`. */
  atomic_fetch_add(&m->nfinished, 1);
  uv_async_send(&m->finished);
}

/* Tell every worker still listening to look at the stop level and the
 * SIGUSR1 count. */
static void wake_workers(main_t *m) {
  for (unsigned i = 0; i < m->started; i++) {
    worker_t *w = &m->workers[i];
    uv_mutex_lock(&w->lock);
    if (w->wake_open)
      uv_async_send(&w->wake);
    uv_mutex_unlock(&w->lock);
  }
}

/* Raise the stop level and tell the workers. */
static void stop_workers(main_t *m, int level) {
  atomic_store(&m->stop, level);
  wake_workers(m);
}

static void on_sigusr1(uv_signal_t *s, int signum) {
  main_t *m = s->data;
  (void)signum;
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (out != NULL) {
    print_process_memory(out);
    diag_memstream(out, &text, &len);
  }
  atomic_fetch_add(&m->dumps, 1);
  wake_workers(m);
}

/* The first signal drains, a second does not wait for backends any
 * longer. */
static void on_signal(uv_signal_t *s, int signum) {
  main_t *m = s->data;
  (void)signum;
  stop_workers(m, ++m->signals == 1 ? 1 : 2);
}

static void join_workers(main_t *m) {
  for (unsigned i = 0; i < m->started; i++) {
    uv_thread_join(&m->workers[i].thread);
    uv_sem_destroy(&m->workers[i].ready);
    uv_mutex_destroy(&m->workers[i].lock);
  }
  m->started = 0;
}

static void close_signals(main_t *m) {
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->sigusr1, NULL);
  uv_close((uv_handle_t *)&m->finished, NULL);
}

static void on_finished(uv_async_t *a) {
  main_t *m = a->data;
  if (atomic_load(&m->nfinished) < m->started)
    return;
  join_workers(m);
  close_signals(m);
}

/* Start the workers one after the other: the first finds the port when
 * it is 0, the others listen on the same.  Returns 0, or -1 with the
 * started ones stopped and joined. */
static int start_workers(main_t *m, int port) {
  for (unsigned i = 0; i < m->cfg.workers; i++) {
    worker_t *w = &m->workers[i];
    w->id = i;
    w->main = m;
    w->port = port;
    int err = uv_loop_init(&w->loop);
    if (err != 0) {
      diag_printf("uvp-gateway: worker %u: %s\n", i, uv_strerror(err));
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    uv_sem_init(&w->ready, 0);
    uv_mutex_init(&w->lock);
    err = uv_thread_create(&w->thread, worker_main, w);
    if (err != 0) {
      diag_printf("uvp-gateway: worker %u: %s\n", i, uv_strerror(err));
      uv_sem_destroy(&w->ready);
      uv_mutex_destroy(&w->lock);
      uv_loop_close(&w->loop);
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    m->started++;
    uv_sem_wait(&w->ready);
    if (w->error != 0) {
      diag_printf("uvp-gateway: worker %u: listen on 127.0.0.1:%d: %s\n", i,
                  port, uv_strerror(w->error));
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    port = w->port;
  }
  return 0;
}

/* ---- the command line ---------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: uvp-gateway [options] -b URL [-b URL]...\n"
      "\n"
      "Answers every GET or HEAD with a JSON summary of one GET to each\n"
      "backend, made at once; other methods get 405.\n"
      "\n"
      "  -p, --port PORT     listen on 127.0.0.1:PORT (default 8080; 0: any\n"
      "                      free port); prints \"listening on "
      "127.0.0.1:PORT\"\n"
      "  -t, --timeout MS    each request's deadline: backend requests not\n"
      "                      done by then are cancelled, ETIMEDOUT (default\n"
      "                      2000; 0: none)\n"
      "  -b, --backend URL   a backend (http://host[:port]/path); "
      "repeatable\n"
      "  -f, --file FILE     more backends, one URL per line ('#' comments)\n"
      "  -w, --workers N     threads, each with its own loop, sharing the "
      "port\n"
      "                      (SO_REUSEPORT); default: one per CPU (%u here)\n"
      "  --client-header-timeout MS\n"
      "                      a request must arrive within MS of its first "
      "byte\n"
      "                      (of the accept, for a connection's first): "
      "else 408\n"
      "                      and close, or close if nothing came (default "
      "%d)\n"
      "  --keepalive-timeout MS\n"
      "                      close a connection idle between requests "
      "(default %d)\n"
      "  --send-timeout MS   drop a client that reads nothing of its answer "
      "for\n"
      "                      MS (default %d)\n"
      "  --backend-idle-timeout MS\n"
      "                      close a backend connection kept idle for MS\n"
      "                      (default 30000; not 0)\n"
      "  --max-body BYTES    longest body taken (K, M, G suffixes; default "
      "100M;\n"
      "                      0: no limit): a backend's longer response is "
      "that\n"
      "                      backend's failure, EFBIG (its connection "
      "closed),\n"
      "                      a longer request body is refused with 413\n"
      "  --traces            async stack traces (also UVP_TRACES=1), for\n"
      "                      SIGUSR1's list\n"
      "  --stall MS          report on stderr each handler, fiber slice or\n"
      "                      callback that holds a worker's loop MS or "
      "longer\n"
      "                      (uvp_ctx_set_stall; default 0: off); SIGUSR1\n"
      "                      prints the histogram of slice lengths\n"
      "  --trace-dir DIR     record each worker's loop (uvp's flight "
      "recorder,\n"
      "                      a 16 MiB ring each: its last events); SIGUSR1\n"
      "                      also writes each worker's as Chrome trace "
      "JSON to\n"
      "                      DIR/uvp-gateway-PID-worker-N-K.json (open it "
      "in\n"
      "                      https://ui.perfetto.dev): at most one every " STR(
          TRACE_EVERY_MS) " ms\n"
                          "                      per worker, one worker "
                          "writing at a time (a "
                          "SIGUSR1\n"
                          "                      sooner is dumped without it, "
                          "and says so); a "
                          "file\n"
                          "                      not written whole (a full "
                          "disk) is removed, its "
                          "name\n"
                          "                      and the reason printed\n"
                          "  --trace-start       a request without a valid "
                          "traceparent starts a\n"
                          "                      new trace (W3C Trace Context; "
                          "default: such a\n"
                          "                      request is served untraced)\n"
                          "  --health-down MS    a backend request that fails "
                          "(not cut by\n"
                          "                      its client) marks its backend "
                          "down for MS on\n"
                          "                      every worker: each request "
                          "skips it meanwhile\n"
                          "                      (EHOSTDOWN in the summary); "
                          "its owner worker\n"
                          "                      tells the others by calls "
                          "between loops\n"
                          "                      (default 0: off)\n"
                          "  -h, --help          this text\n"
                          "  --version           print the version (uvp's) and "
                          "exit\n"
                          "\n"
                          "Client timeouts of 0 are off.  SIGINT/SIGTERM drain "
                          "(requests in "
                          "flight\n"
                          "are answered), a second one closes what is left; "
                          "exit status 0.\n"
                          "SIGUSR1 prints each worker's requests in flight to "
                          "stderr, with "
                          "their\n"
                          "pending backend requests' async traces, then its "
                          "tasks: what each\n"
                          "waits for and since when, its deadline and request "
                          "id; then where\n"
                          "memory is.  Nothing written to stderr is waited "
                          "for: what a full\n"
                          "pipe cannot take now is dropped, and counted in the "
                          "next line and "
                          "at\n"
                          "exit.\n"
                          "\n"
                          "Under load: a client that does not read its answers "
                          "is not read "
                          "either\n"
                          "once %d KiB of them wait unsent.  At the descriptor "
                          "limit, idle\n"
                          "connections are closed to accept new ones: first "
                          "those whose "
                          "answers\n"
                          "have not moved for %d ms (the client reads nothing; "
                          "reset), then "
                          "idle\n"
                          "keep-alive ones, then those waiting longest for a "
                          "request.  After a\n"
                          "burst, the memory it used goes back to the system "
                          "within %d s of "
                          "the\n"
                          "load falling to half its peak, and that of the "
                          "backend connections "
                          "it\n"
                          "left idle within %d s of --backend-idle-timeout "
                          "closing them; uvp's\n"
                          "pools keep the promise and operation slabs the "
                          "burst took (SIGUSR1\n"
                          "shows how much).\n",
      uv_available_parallelism(), HTTPD_HEADER_TIMEOUT_MS,
      HTTPD_KEEPALIVE_TIMEOUT_MS, HTTPD_SEND_TIMEOUT_MS,
      HTTPD_MAX_OUTPUT / 1024, HTTPD_STALL_MS, 2 * TRIM_MS / 1000,
      2 * TRIM_MS / 1000);
}

static int parse_uint(const char *s, unsigned long long max,
                      unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v > max || *s == '-')
    return -1;
  *out = v;
  return 0;
}

/* BYTES with an optional K, M or G (powers of 1024), as uvp-fanout's
 * --max-filesize. */
static int parse_size(const char *s, uint64_t *out) {
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  unsigned shift = 0;
  if (*end != '\0' && strchr("kKmMgG", *end) != NULL)
    shift = *end == 'k' || *end == 'K'   ? 10
            : *end == 'm' || *end == 'M' ? 20
                                         : 30;
  if (shift != 0)
    end++;
  if (errno != 0 || *end != '\0' || v > (UINT64_MAX >> shift))
    return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

static int add_url(config_t *cfg, const char *url) {
  char **urls = realloc(cfg->urls, (cfg->nurls + 1) * sizeof(*urls));
  if (urls == NULL)
    return -1;
  cfg->urls = urls;
  if ((urls[cfg->nurls] = strdup(url)) == NULL)
    return -1;
  cfg->nurls++;
  return 0;
}

static int read_backend_file(config_t *cfg, const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "uvp-gateway: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[4096];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    char *s = line + strspn(line, " \t\r\n");
    size_t n = strcspn(s, " \t\r\n");
    s[n] = '\0';
    if (n > 0)
      rc = add_url(cfg, s);
  }
  fclose(f);
  return rc;
}

/* Every backend's URL as httpc reads it (scheme, host, port), before
 * anything starts: a gateway whose backends cannot be asked would answer
 * every request 200 with one rejection per backend. */
static int check_backends(const config_t *cfg) {
  for (size_t i = 0; i < cfg->nurls; i++) {
    httpc_url_t u;
    const char *why;
    int rc = httpc_url_parse(cfg->urls[i], &u, &why);
    if (rc != 0) {
      fprintf(stderr, "uvp-gateway: backend '%.200s': %s\n", cfg->urls[i], why);
      return -1;
    }
    httpc_url_free(&u);
  }
  return 0;
}

static void config_free(config_t *cfg) {
  for (size_t i = 0; i < cfg->nurls; i++)
    free(cfg->urls[i]);
  free(cfg->urls);
}

enum {
  OPT_HEADER = 256,
  OPT_KEEPALIVE,
  OPT_SEND,
  OPT_BACKEND_IDLE,
  OPT_MAX_BODY,
  OPT_TRACES,
  OPT_STALL,
  OPT_TRACE_DIR,
  OPT_TRACE_START,
  OPT_HEALTH_DOWN,
  OPT_VERSION
};

/* A usage error: one line, and where the usage is. */
#define usage_error(...) (cli_usage_error("uvp-gateway", __VA_ARGS__), -1)

/* A bad value: one line, as uvp-fanout's. */
static int value_error(const char *what) {
  fprintf(stderr, "uvp-gateway: %s\n", what);
  return -1;
}

/* --traces, or UVP_TRACES=1 (which uvp reads itself at uvp_ctx_new). */
static int traces_on(const config_t *cfg) {
  const char *env = getenv("UVP_TRACES");
  return cfg->traces || (env != NULL && strcmp(env, "1") == 0);
}

/* Returns 0, -1 usage error (said), 1 --help, 2 --version, 3 out of
 * memory or a backend file unreadable (said). */
static int parse_args(int argc, char **argv, config_t *cfg,
                      unsigned long long *port) {
  static const struct option longs[] = {
      {"port", required_argument, NULL, 'p'},
      {"timeout", required_argument, NULL, 't'},
      {"backend", required_argument, NULL, 'b'},
      {"file", required_argument, NULL, 'f'},
      {"workers", required_argument, NULL, 'w'},
      {"client-header-timeout", required_argument, NULL, OPT_HEADER},
      {"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE},
      {"send-timeout", required_argument, NULL, OPT_SEND},
      {"backend-idle-timeout", required_argument, NULL, OPT_BACKEND_IDLE},
      {"max-body", required_argument, NULL, OPT_MAX_BODY},
      {"traces", no_argument, NULL, OPT_TRACES},
      {"stall", required_argument, NULL, OPT_STALL},
      {"trace-dir", required_argument, NULL, OPT_TRACE_DIR},
      {"trace-start", no_argument, NULL, OPT_TRACE_START},
      {"health-down", required_argument, NULL, OPT_HEALTH_DOWN},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {NULL, 0, NULL, 0}};
  static const char shortopts[] = ":p:t:b:f:w:h";
  const unsigned long long day = 24ULL * 3600 * 1000;
  unsigned long long v = 0;
  int opt;
  *port = 8080;
  cfg->timeout_ms = 2000;
  cfg->max_body = DEFAULT_MAX_BODY;
  cfg->workers = uv_available_parallelism();
  httpd_opts_init(&cfg->httpd);
  opterr = 0; /* cli_option_error says it in one line */
  while ((opt = getopt_long(argc, argv, shortopts, longs, NULL)) != -1) {
    switch (opt) {
    case 'p':
      if (parse_uint(optarg, 65535, port) != 0)
        return value_error("-p/--port wants a port, 0 to 65535");
      break;
    case 't':
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("-t/--timeout wants milliseconds, 0 to 86400000");
      cfg->timeout_ms = v;
      break;
    case 'b':
      if (add_url(cfg, optarg) != 0) {
        fprintf(stderr, "uvp-gateway: out of memory\n");
        return 3;
      }
      break;
    case 'f':
      if (read_backend_file(cfg, optarg) != 0)
        return 3;
      break;
    case 'w':
      if (parse_uint(optarg, MAX_WORKERS, &v) != 0 || v == 0)
        return value_error(
            "-w/--workers wants a number from 1 to " STR(MAX_WORKERS));
      cfg->workers = (unsigned)v;
      break;
    case OPT_HEADER:
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("--client-header-timeout wants milliseconds, 0 "
                           "to 86400000");
      cfg->httpd.header_timeout_ms = v;
      break;
    case OPT_KEEPALIVE:
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("--keepalive-timeout wants milliseconds, 0 to "
                           "86400000");
      cfg->httpd.keepalive_timeout_ms = v;
      break;
    case OPT_SEND:
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("--send-timeout wants milliseconds, 0 to "
                           "86400000");
      cfg->httpd.send_timeout_ms = v;
      break;
    case OPT_BACKEND_IDLE:
      if (parse_uint(optarg, day, &v) != 0 || v == 0)
        return value_error("--backend-idle-timeout wants milliseconds, 1 to "
                           "86400000");
      cfg->backend_idle_ms = v;
      break;
    case OPT_MAX_BODY:
      if (parse_size(optarg, &cfg->max_body) != 0)
        return value_error("--max-body wants bytes (K, M, G suffixes; 0: no "
                           "limit)");
      break;
    case OPT_TRACES:
      cfg->traces = 1;
      break;
    case OPT_STALL:
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("--stall wants milliseconds, 0 to 86400000");
      cfg->stall_ms = v;
      break;
    case OPT_TRACE_DIR:
      cfg->trace_dir = optarg;
      break;
    case OPT_TRACE_START:
      cfg->trace_start = 1;
      break;
    case OPT_HEALTH_DOWN:
      if (parse_uint(optarg, day, &v) != 0)
        return value_error("--health-down wants milliseconds, 0 to 86400000");
      cfg->health_down_ms = v;
      break;
    case 'h':
      return 1;
    case OPT_VERSION:
      return 2;
    default:
      cli_option_error("uvp-gateway", opt, argv, shortopts, longs);
      return -1;
    }
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s': a backend is -b URL",
                       argv[optind]);
  if (cfg->nurls == 0)
    return usage_error("no backend: -b URL or -f FILE");
  return check_backends(cfg);
}

/* ---- start and stop ------------------------------------------------------ */

static void print_stats(const main_t *m) {
  httpd_stats_t t = {0};
  unsigned long long cancelled = 0, capped = 0;
  for (unsigned i = 0; i < m->cfg.workers; i++) {
    const httpd_stats_t *s = &m->workers[i].stats;
    if (m->cfg.workers > 1)
      diag_printf("uvp-gateway: worker %u: %llu connection%s, %llu "
                  "request%s\n",
                  i, s->connections, plural(s->connections), s->requests,
                  plural(s->requests));
    t.connections += s->connections;
    t.requests += s->requests;
    t.header_timeouts += s->header_timeouts;
    t.keepalive_timeouts += s->keepalive_timeouts;
    t.send_timeouts += s->send_timeouts;
    t.accept_pauses += s->accept_pauses;
    t.idle_closed += s->idle_closed;
    t.waiting_closed += s->waiting_closed;
    t.stalled_closed += s->stalled_closed;
    t.bodies_refused += s->bodies_refused;
    cancelled += m->workers[i].cancelled;
    capped += m->workers[i].bodies_capped;
  }
  char dropped[128] = "";
  uv_mutex_lock(&diag.lock);
  if (diag.all_bytes > 0)
    snprintf(dropped, sizeof(dropped),
             "; stderr would block: %llu byte%s (%llu line%s) of "
             "diagnostics dropped",
             diag.all_bytes, plural(diag.all_bytes), diag.all_lines,
             plural(diag.all_lines));
  uv_mutex_unlock(&diag.lock);
  diag_printf(
      "uvp-gateway: %llu connection%s, %llu request%s; timeouts: header "
      "%llu, keep-alive %llu, send %llu; accept paused %llu time%s; "
      "%llu request%s cancelled (client gone); closed at the descriptor "
      "limit: %llu idle keep-alive, %llu waiting for a request, %llu "
      "not reading %s answers; over --max-body: %llu backend bod%s, "
      "%llu request bod%s%s\n",
      t.connections, plural(t.connections), t.requests, plural(t.requests),
      t.header_timeouts, t.keepalive_timeouts, t.send_timeouts, t.accept_pauses,
      plural(t.accept_pauses), cancelled, plural(cancelled), t.idle_closed,
      t.waiting_closed, t.stalled_closed,
      t.stalled_closed == 1 ? "its" : "their", capped,
      capped == 1 ? "y" : "ies", t.bodies_refused,
      t.bodies_refused == 1 ? "y" : "ies", dropped);
}

int main(int argc, char **argv) {
  static main_t m; /* static: its address is in every handle */
  unsigned long long port;
  int rc = parse_args(argc, argv, &m.cfg, &port);
  if (rc != 0) {
    if (rc == 1)
      usage(stdout);
    else if (rc == 2)
      printf("uvp-gateway %s\n", uvp_version_string());
    config_free(&m.cfg);
    return rc == 1 || rc == 2 ? 0 : 2;
  }
  /* A client that goes away while we write must be an EPIPE, not a
   * signal that kills the gateway. */
  signal(SIGPIPE, SIG_IGN);
  diag_init();

  m.workers = calloc(m.cfg.workers, sizeof(*m.workers));
  if (m.workers != NULL && m.cfg.health_down_ms != 0)
    m.health = health_net_new(m.cfg.workers, m.cfg.urls, m.cfg.nurls,
                              m.cfg.health_down_ms, health_log);
  int err = m.workers == NULL || (m.cfg.health_down_ms != 0 && m.health == NULL)
                ? UV_ENOMEM
                : uv_loop_init(&m.loop);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: init: %s\n", uv_strerror(err));
    health_net_free(m.health);
    free(m.workers);
    config_free(&m.cfg);
    return 1;
  }
  uv_signal_init(&m.loop, &m.sigint);
  uv_signal_init(&m.loop, &m.sigterm);
  uv_signal_init(&m.loop, &m.sigusr1);
  uv_async_init(&m.loop, &m.finished, on_finished);
  m.sigint.data = m.sigterm.data = m.sigusr1.data = m.finished.data = &m;
  uv_signal_start(&m.sigint, on_signal, SIGINT);
  uv_signal_start(&m.sigterm, on_signal, SIGTERM);
  uv_signal_start(&m.sigusr1, on_sigusr1, SIGUSR1);

  int started = start_workers(&m, (int)port) == 0;
  if (started) {
    printf("listening on 127.0.0.1:%d\n", m.workers[0].port);
    fflush(stdout);
    const httpd_opts_t *o = &m.cfg.httpd;
    diag_printf("uvp-gateway: %u worker%s; timeouts (ms): request %llu, header "
                "%llu, keep-alive %llu, send %llu; async traces %s\n",
                m.cfg.workers, m.cfg.workers > 1 ? "s" : "",
                (unsigned long long)m.cfg.timeout_ms,
                (unsigned long long)o->header_timeout_ms,
                (unsigned long long)o->keepalive_timeout_ms,
                (unsigned long long)o->send_timeout_ms,
                traces_on(&m.cfg) ? "on" : "off");
  } else {
    close_signals(&m);
  }

  uv_run(&m.loop, UV_RUN_DEFAULT);

  err = uv_loop_close(&m.loop);
  if (err < 0) {
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out != NULL) {
      fprintf(out, "uvp-gateway: uv_loop_close: %s\n", uv_strerror(err));
      uv_print_all_handles(&m.loop, out);
      diag_memstream(out, &text, &len);
    }
  }
  if (started)
    print_stats(&m);
  health_net_free(m.health);
  free(m.workers);
  config_free(&m.cfg);
  uv_mutex_destroy(&diag.lock);
  return !started || err < 0 || m.failed ? 1 : 0;
}

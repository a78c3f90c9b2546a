/* What uvp-fanout's modes share: the local one (main.c, every fetch on
 * this machine), the NATS one (nats-worker.c serves fetches, nats-coord.c
 * sends them out and reports) and the durable one on JetStream
 * (nats-durable.c: both sides): a row per URL, the fetch of one row under
 * --retry (uvp-curl), and the report. */
#ifndef FANOUT_H
#define FANOUT_H

#include <stdint.h>
#include <uv.h>

#include "uvp-curl.h"
#include "uvp.h"

enum { EXIT_USAGE = 2 };

struct run_s;
struct jsonw_s;
struct json_t;
struct __natsMsg;

/* How every request is made: curl's options, as given. */
typedef struct http_s {
  uint64_t timeout_ms, connect_timeout_ms, max_body;
  int follow;
  long max_redirects;
  const char *cafile; /* --cacert, else SSL_CERT_FILE */
  const char *capath; /* SSL_CERT_DIR (not with --cacert) */
  int system_capath;  /* neither: libcurl's CA directory, if it has one */
  int insecure;
  int http2;
  const char *proxy;   /* -x */
  const char *userpwd; /* -u */
  int compressed;
} http_t;

typedef struct row_s {
  struct run_s *run;
  const http_t *http; /* how it is fetched (the run's, or a request's) */
  unsigned retries;   /* --retry */
  char *url;
  uint64_t start_ns;
  uint64_t end_ns;
  /* The last attempt's outcome. */
  unsigned attempts;
  int status;   /* HTTP status, 0 if none */
  int error;    /* its rejection code, 0 if a response */
  char *reason; /* the error's message, libcurl's or the binding's (owned) */
  size_t bytes;
  uint64_t latency_us;
  unsigned redirects;
  char *final_url; /* after redirects (owned) */
  /* --nats: who fetched it (owned), the error's name as the worker gave
   * it (owned; NULL: error's own), how many requests were sent for it. */
  char *worker;
  char *error_name;
  unsigned sends;
  unsigned busy; /* of those, answered EBUSY by a busy worker */
  /* --durable: JetStream's delivery count of the message whose fetch gave
   * the stored result (1: the first worker's); refetched: a stored result
   * it could not read was not taken, the URL was fetched again. */
  unsigned delivery;
  unsigned refetched;
  /* --nats or --durable with --trace: the URL's root span, a new trace
   * (fanout_row_trace_begin), in which each of its requests is made;
   * owned, NULL until begun and after its end.  A pointer, not the span
   * and its flag in every row of every run for the runs that trace: those
   * cost 68 bytes a row, 0.7 MB at 10 000 URLs. */
  uvp_span_t *span;
} row_t;
/* Every run holds a row per URL (10 000 URLs: 1.4 MB of rows at 144
 * bytes), so what only some modes use goes behind a pointer; the bound
 * leaves room for one more word, not for another span. */
_Static_assert(sizeof(row_t) <= 152, "row_t: per-URL state grew, see above");

/* The report as it is printed, a row at a time (fanout_report_row). */
typedef struct report_s {
  int begun; /* the header is out */
  int width, wwidth;
  size_t rows, ok, http_err, transport_err, retried, nlat;
  uint64_t *lat;
  struct jsonw_s *w;
} report_t;

typedef struct run_s {
  uv_loop_t *loop;
  uvp_ctx_t *ctx;
  uvp_curl_t *curl;
  row_t *rows;
  size_t n;
  http_t http;
  int h2_capped; /* --http2: connections per host capped (see main) */
  unsigned retries;
  uint64_t deadline_ms; /* 0: none */
  uint64_t deadline_at; /* on the loop's clock */
  uint64_t start_ns;
  int json;
  /* live progress, only when stderr is a terminal */
  int progress;
  int progress_shown;
  int tty_out;            /* stdout is a terminal too */
  char progress_text[96]; /* what the line shows now */
  uv_timer_t progress_timer;
  size_t started;
  size_t settled;
  size_t failed;
  struct demo_server_s *server; /* the embedded demo, if any */
  int exit_code;
  /* --nats (coordinator): the worker column and the late replies count;
   * `nats` is nats-coord.c's state, ended by nats_end after the report. */
  int nats_mode;
  uint64_t late;
  uint64_t disconnects; /* --nats: times the connection dropped */
  void *nats;
  void (*nats_before_report)(struct run_s *r);
  void (*nats_end)(struct run_s *r);
  report_t report;
  /* --durable: the job, and what its coordinator counted (the summary):
   * results found stored when it started, URLs it published (new to the
   * stream, and those the stream had already by their Nats-Msg-Id),
   * results of a redelivered message. */
  const char *job;
  uint64_t found, published, duplicates, redelivered;
  /* ... and for the progress line, what its consumer says (-1 until it
   * has): URLs not delivered yet, and delivered but not acknowledged
   * (what the workers hold, or held when they died) */
  long long job_queued, job_held;
  /* --trace FILE: the flight recorder, written to trace_out at the end */
  const char *trace;
  FILE *trace_out;
} run_t;

/* --nats's options. */
typedef struct nats_cli_s {
  const char *url;
  const char *shown;   /* url as printed: its secrets redacted */
  const char *name;    /* --name: the worker's name; NULL: host:pid */
  unsigned retries;    /* --nats-retry */
  uint64_t ping_ms;    /* --nats-ping: 0, nats.c's default (2 min) */
  uint64_t connect_ms; /* --nats-timeout: 0, the binding's default */
  uint64_t concurrency;
  const char *job; /* --durable JOB */
  int job_status;  /* --status */
  int job_purge;   /* --purge */
  /* credentials and TLS (fanout_nats_options): the options, else the
   * environment's NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS,
   * NATS_NKEY, NATS_CA, NATS_CERT, NATS_KEY, NATS_TLS_NAME, and the
   * inbox prefix (NATS_INBOX_PREFIX) */
  const char *user, *password, *token, *creds, *nkey;
  const char *tlsca, *tlscert, *tlskey, *tlsname;
  const char *inbox_prefix; /* --inbox-prefix, NATS_INBOX_PREFIX */
} nats_cli_t;

#define NATS_RETRY_DEFAULT 2
#define NATS_SUBJECT "uvp-fanout.fetch"
#define NATS_QUEUE "uvp-fanout"
#define NATS_PROTOCOL_VERSION 1

/* Fetch row->url under --retry (row->retries), with row->http's options,
 * on r->curl; the row records each attempt.  *out settles when the last
 * attempt has (fulfilled: a response, even a 4xx/5xx; rejected: the
 * error).  Errors: those of uvp_retry. */
int fanout_fetch(run_t *r, row_t *row, uvp_promise_t **out);

/* --trace (main.c): the recorder on r->ctx (UVP_RECORD_ALL, span events
 * included) if r->trace_out; 0 or uvp_ctx_set_recorder's code.  Then its
 * events written to r->trace_out as Chrome trace JSON, and the file
 * closed: 0, or 1 once said on stderr. */
int fanout_trace_start(run_t *r);
int fanout_trace_write(run_t *r);
/* A coordinator's URL with --trace: its root span, a new trace (nothing
 * without --trace); its end with the URL's outcome.  Around each request
 * made for the row: the current scope in its span, then back to what it
 * was (*was: fanout_row_trace_leave's). */
void fanout_row_trace_begin(run_t *r, row_t *row);
void fanout_row_trace_end(run_t *r, row_t *row, int status);
typedef struct fanout_trace_was_s {
  uvp_tracectx_t tc;
  int had, set;
} fanout_trace_was_t;
void fanout_row_trace_enter(run_t *r, row_t *row, fanout_trace_was_t *was);
void fanout_row_trace_leave(run_t *r, const fanout_trace_was_t *was);

/* The map's on_settle: progress counts. */
void fanout_on_item(void *arg, size_t i, const uvp_outcome_t *outcome);

/* Print the table or the JSON lines for every row, then the summary. */
void fanout_report(run_t *r, const uvp_settled_list_t *list);
/* The same a row at a time, in order (the header before the first): row
 * i, as its map's record s says (s->promise may be NULL: no cause); then
 * the summary over the rows printed. */
void fanout_report_row(run_t *r, size_t i, const uvp_settled_t *s);
void fanout_report_end(run_t *r);
/* The progress line again, if it is on (stderr a terminal): after rows
 * printed while it showed, which took it away. */
void fanout_progress_draw(run_t *r);

/* An error's name (uvp's, uvp-curl's, libuv's, uvp-nats's) and the code it
 * names (0 if none). */
const char *fanout_err_name(int code);
int fanout_err_code(const char *name);

/* The NATS mode (nats-worker.c, nats-coord.c; only with uvp-nats).  The
 * worker serves until SIGTERM or SIGINT; its exit status.  The
 * coordinator's start: connect, then the map of the run's rows; *out
 * settles as uvp_promise_map's. */
int fanout_nats_worker(run_t *r, const nats_cli_t *o);
/* A worker's name in replies and rows: --name, else HOST:PID. */
void fanout_worker_name(const nats_cli_t *o, char *buf, size_t size);
int fanout_nats_coord(run_t *r, const nats_cli_t *o, uvp_promise_t **out);
void fanout_nats_shutdown(void);
/* `url` (a comma-separated list) as it may be printed: a password or a
 * token in it replaced by "***", as curl does ("nats://u:***@host"). */
void fanout_url_redact(const char *url, char *out, size_t cap);
/* A secret file readable by others: warned on stderr (as ssh does),
 * used all the same. */
void fanout_secret_file_check(const char *option, const char *path);
/* nats.c's options for both sides: `name`, --nats-ping's `ping_ms` (0:
 * nats.c's default); NULL without memory.  The connect takes them. */
struct __natsOptions *fanout_nats_options(const char *name,
                                          const nats_cli_t *cli);
/* One line on stderr: the connect to cli's URL failed with rc, and
 * nats.c's words (its rejection's payload, or NULL); a server that wants
 * a client certificate said so. */
void fanout_nats_connect_failed(const nats_cli_t *cli, int rc,
                                const void *words);
struct uvp_nats_connect_opts_s;
/* uvp_nats_connect, with cli's inbox prefix. */
int fanout_nats_connect(uvp_ctx_t *ctx, const struct uvp_nats_connect_opts_s *o,
                        const nats_cli_t *cli, uvp_promise_t **out);

/* What the NATS modes share (nats-coord.c, nats-worker.c).  A request's
 * "opts" (curl's options, --retry) as JSON, and how long one request
 * waits for its reply (-m per attempt, the backoffs, 1 s). */
struct json_t *fanout_request_opts(const run_t *r);
uint64_t fanout_request_timeout(const run_t *r);
/* A reply's fields (worker, status, error, message, bytes, latency_us,
 * attempts) into the row; -1 if one is missing or of the wrong type. */
int fanout_reply_fields(row_t *row, struct json_t *o);
/* A URL a worker fetches: its row, the options it is fetched with (the
 * worker's, under the request's "opts"), the request's id. */
typedef struct job_s {
  void *w; /* the worker (nats-worker.c's) */
  row_t row;
  http_t http;
  int64_t id;
  char *url, *proxy, *userpwd;
} job_t;
/* Fill j (whose http is the worker's) from a request's JSON
 * {"v":1,"id":N,"url":URL[,"opts":{...}]}; NULL, or why it is refused. */
const char *fanout_job_parse(job_t *j, struct __natsMsg *msg);
/* Options "opts" (an object) over j's; NULL, or why they are refused. */
const char *fanout_job_opts(job_t *j, struct json_t *opts);
void fanout_job_free(void *j);

/* --durable JOB (nats-durable.c): a job's name is 1 to 64 letters, digits,
 * - and _.  The worker serves the job until SIGTERM or SIGINT (or its
 * purge); its exit status.  The coordinator: as fanout_nats_coord, but
 * it prints each row itself (fanout_report_row) as its result comes, and
 * *out fulfils (NULL) once every row is printed.  --status and --purge:
 * the exit status. */
int fanout_job_name_ok(const char *job);
int fanout_durable_worker(run_t *r, const nats_cli_t *o);
int fanout_durable_coord(run_t *r, const nats_cli_t *o, uvp_promise_t **out);
int fanout_durable_admin(run_t *r, const nats_cli_t *o);

#endif

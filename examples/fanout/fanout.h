/* What uvp-fanout's two modes share: the local one (main.c, every fetch on
 * this machine) and the NATS one (nats-worker.c serves fetches,
 * nats-coord.c sends them out and reports): a row per URL, the fetch of
 * one row under --retry (uvp-curl), and the report. */
#ifndef FANOUT_H
#define FANOUT_H

#include <stdint.h>
#include <uv.h>

#include "uvp-curl.h"
#include "uvp.h"

enum { EXIT_USAGE = 2 };

struct run_s;

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
} row_t;

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
} run_t;

/* --nats's options. */
typedef struct nats_cli_s {
  const char *url;
  const char *name; /* --name: the worker's name; NULL: host:pid */
  unsigned retries; /* --nats-retry */
  uint64_t ping_ms; /* --nats-ping: 0, nats.c's default (2 min) */
  uint64_t concurrency;
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

/* The map's on_settle: progress counts. */
void fanout_on_item(void *arg, size_t i, const uvp_outcome_t *outcome);

/* Print the table or the JSON lines for every row, then the summary. */
void fanout_report(run_t *r, const uvp_settled_list_t *list);

/* An error's name (uvp's, uvp-curl's, libuv's, uvp-nats's) and the code it
 * names (0 if none). */
const char *fanout_err_name(int code);
int fanout_err_code(const char *name);

/* The NATS mode (nats-worker.c, nats-coord.c; only with uvp-nats).  The
 * worker serves until SIGTERM or SIGINT; its exit status.  The
 * coordinator's start: connect, then the map of the run's rows; *out
 * settles as uvp_promise_map's. */
int fanout_nats_worker(run_t *r, const nats_cli_t *o);
int fanout_nats_coord(run_t *r, const nats_cli_t *o, uvp_promise_t **out);
void fanout_nats_shutdown(void);
/* nats.c's options for both sides: `name`, --nats-ping's `ping_ms` (0:
 * nats.c's default); NULL without memory.  The connect takes them. */
struct __natsOptions *fanout_nats_options(const char *name, uint64_t ping_ms);

#endif

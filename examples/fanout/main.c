/* uvp-fanout: fetch many http:// and https:// URLs at once and report
 * every outcome.
 *
 * The whole program is one uvp_promise_map: item i is a uvp_retry of
 * uvp_curl_fetch(urls[i]), at most -c of them in flight, and the map
 * settles once every item has, whatever happened to the others
 * (allSettled-style), so the report can be printed from one handler.  A
 * failed URL is a row, not a reason to stop.  Each attempt records its
 * outcome in its row (the last one is what the report shows); a 5xx answer
 * is turned into a rejection so that uvp_retry tries again, like a
 * transport error.
 *
 * HTTP is libcurl's, through the uvp-curl binding on this program's loop:
 * connections are kept alive and reused per host in libcurl's connection
 * cache (HTTP/2 streams share one with --http2), https:// is verified
 * against the system's CA store (or --cacert), and the options are curl's.
 *
 * Run without URLs it starts the demo server in-process and fans out to
 * each of its endpoints (plus a refused port and an https:// URL on the
 * plain-HTTP demo): one command shows every kind of outcome.
 *
 * A row a cancellation ended (the -d deadline) shows who cut it, its
 * cause (uvp_promise_cause of its record, uvp_cause_format's words).
 *
 * Exit status: 0 the run completed (whatever the URLs answered), 1 the run
 * could not happen (a file unreadable, the server not started, a CA file
 * unreadable, out of memory), 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "compat.h"
#include "console-env.h"
#include "demo-server.h"
#include "fanout.h"
#include "jsonw.h"
#include "retry.h"
#ifdef FANOUT_NATS
#include "uvp-nats.h"
#endif

#define DEFAULT_CONCURRENCY 64
/* Streams per HTTP/2 connection (libcurl's default,
 * CURLMOPT_MAX_CONCURRENT_STREAMS). */
#define H2_STREAMS 100
/* curl has no total timeout and a 300 s connect timeout by default: a
 * server that never answers would hold a fan-out forever.  These end
 * such a request and leave a slow one room. */
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 30000
/* In the embedded demo /hang never answers: end it well within 2 s. */
#define DEMO_TIMEOUT_MS 1000
#define DEFAULT_MAX_REDIRS 50 /* curl's */
#define DEFAULT_MAX_FILESIZE (100ull * 1024 * 1024)
#define MAX_HEADER (64 * 1024)
/* The URL column is as wide as the longest URL up to this; a longer URL
 * is printed whole and pushes only its own row's other cells. */
#define URL_COLUMN_MAX 60
/* The progress line appears once a run has taken this long, and is
 * looked at this often: redrawn only if its text changed (counts, whole
 * seconds), so at most 4 times a second, and once a second while nothing
 * settles. */
#define PROGRESS_AFTER_MS 500
#define PROGRESS_EVERY_MS 250
/* --trace's ring: about 917 000 events, a few per URL. */
#define TRACE_RING (64u * 1024 * 1024)

/* The program's name, not argv[0]'s path, as the other tools print. */
static void usage(FILE *f) {
  fprintf(
      f,
      "usage: uvp-fanout [options] [URL...]\n"
      "       uvp-fanout --serve [PORT]\n"
      "\n"
      "Fetch every http:// or https:// URL concurrently and report each\n"
      "outcome: one row per URL in input order (HTTP status, or the\n"
      "error's name and why), bytes and latency, then a summary with\n"
      "p50/p90/p99 latency.  Connections are reused per host (HTTP is\n"
      "libcurl's, on uvp's loop: options are curl's).  Without\n"
      "URLs, starts a demo server on 127.0.0.1 and fetches each of its\n"
      "endpoints, to show every kind of outcome.\n"
      "\n"
      "  -c N        at most N requests in flight (default %d)\n"
      "  --connect-timeout SECONDS\n"
      "              TCP connect and TLS handshake of each connection\n"
      "              (default %d; fractions allowed)\n"
      "  -m, --max-time SECONDS\n"
      "              per request, redirects included: ETIMEDOUT after\n"
      "              that long (default %d; %d ms in the demo)\n"
      "  -t MS       the same in milliseconds\n"
      "  -d MS       overall deadline: requests still in flight after MS\n"
      "              ms end as ETIMEDOUT, those not started yet as\n"
      "              ECANCELED\n"
      "  --retry N   retry a request up to N times after a transport\n"
      "              error (refused, reset, timeout, cut short) or a 5xx,\n"
      "              waiting %d ms, then twice as long each time (at most\n"
      "              %d ms), with jitter (default 0)\n"
      "  -L, --location\n"
      "              follow redirects (301, 302, 303, 307, 308)\n"
      "  --max-redirs N\n"
      "              with -L, at most N redirects (default %d): more is\n"
      "              ELOOP\n"
      "  --cacert FILE\n"
      "              verify https:// servers with the CAs in FILE (PEM)\n"
      "              instead of the system's store\n"
      "  -k, --insecure\n"
      "              do not verify https:// servers' certificates\n"
      "  --http2     HTTP/2 (https:// by ALPN, http:// by an Upgrade to\n"
      "              h2c): requests to a host share a connection, up to\n"
      "              100 streams each, at most -c/100 (rounded up)\n"
      "              connections per host, a request past them waiting\n"
      "              for a stream (no cap once a host answers\n"
      "              HTTP/1.x); default HTTP/1.1\n"
      "  -x, --proxy [SCHEME://]HOST[:PORT]\n"
      "              through this proxy (http:// by default; https://\n"
      "              URLs through a CONNECT tunnel)\n"
      "  -u, --user USER:PASSWORD, --http-user USER:PASSWORD\n"
      "              the fetched web servers' authentication (Basic);\n"
      "              with --nats only --http-user (-u is refused there:\n"
      "              the NATS server's login is --nats-user)\n"
      "  --compressed\n"
      "              ask for a compressed response (gzip, deflate, br,\n"
      "              zstd) and decode it: bytes and --max-filesize count\n"
      "              the decoded body\n"
      "  --max-filesize BYTES\n"
      "              longest body accepted (K, M, G suffixes; default\n"
      "              100M): EFBIG past it, whether or not the server\n"
      "              announced the size.  Headers: 64 KiB over all the\n"
      "              responses of a request, 1xx and redirects\n"
      "              included (EMSGSIZE)\n"
      "  -f FILE     read URLs from FILE, one per line ('-': stdin;\n"
      "              blank lines and lines starting with # skipped)\n"
      "  --json      JSON lines: one object per URL, then a summary\n"
      "  --trace FILE\n"
      "              record the run (uvp's flight recorder: each\n"
      "              transfer, timer and cut, the loop's turns) and write\n"
      "              it to FILE at the end as Chrome trace JSON (open it\n"
      "              in https://ui.perfetto.dev); a run of more than\n"
      "              about 900 000 events keeps its last ones.  With\n"
      "              --nats (and --durable): each URL is a trace of its\n"
      "              own (a root span \"uvp-fanout url\"), whose NATS\n"
      "              requests carry it (W3C traceparent); with --worker:\n"
      "              each request is served under its caller's trace\n"
      "              (the spans in FILE, written at exit, after the\n"
      "              drain), so the files of a job's processes join\n"
      "              into one timeline (uvp-trace merge)\n"
      "  --serve [PORT]\n"
      "              run only the demo server on 127.0.0.1:PORT (default\n"
      "              0: any free port), print 'listening on "
      "127.0.0.1:PORT'\n"
      "              and serve until SIGINT or SIGTERM\n"
      "  --nats URL, -s, --server URL\n"
      "              across machines, through the NATS server at URL\n"
      "              (nats://HOST:PORT; --worker and --durable take\n"
      "              NATS_URL when none is given): each URL is one request on\n"
      "              uvp-fanout.fetch, {\"v\":1,\"id\":N,\"url\":...,\n"
      "              \"opts\":{curl's options, --retry}}, answered by a\n"
      "              worker {\"v\":1,\"id\":N,\"worker\":...,\"status\":...,\n"
      "              \"error\":...,\"message\":...,\"bytes\":...,\n"
      "              \"latency_us\":...,\"attempts\":...}; the report gains\n"
      "              a WORKER column (\"worker\" and \"sends\" in --json;\n"
      "              the summary: \"late_replies\" and \"disconnects\").\n"
      "              -d travels as Uvp-Timeout-Ms; a request waits -m\n"
      "              per attempt (--retry) plus 1 s.  A reply that does\n"
      "              not parse is EPROTO, naming its worker\n"
      "  --worker    with --nats: serve uvp-fanout.fetch in queue group\n"
      "              uvp-fanout, at most -c fetches at once and 2 x -c\n"
      "              waiting (more is answered EBUSY at once: the\n"
      "              coordinator sends it again later); a fetch whose\n"
      "              coordinator gave up is cut; SIGTERM or SIGINT\n"
      "              drains within -m (answers what it took; past -m,\n"
      "              ECANCELED for what waits, what runs is cut), a\n"
      "              second one at once, and exits 0\n"
      "  --name NAME with --worker: the worker's name (default\n"
      "              HOST:PID)\n"
      "  --nats-retry N\n"
      "              send a URL again (a new request) after a timeout, no\n"
      "              responders or a lost connection, at most N times\n"
      "              while -d allows (default 2); later replies to the\n"
      "              old request are dropped and counted.  A worker's\n"
      "              EBUSY is \"not now\": the coordinator keeps no more\n"
      "              in flight than its workers take (a window learnt\n"
      "              from their EBUSY answers, up to -c), and a refused\n"
      "              URL waits its turn, oldest first, as long as its\n"
      "              own time (what one request waits, from its first\n"
      "              send) and -d allow, not counted here\n"
      "  --nats-timeout MS\n"
      "              how long the connect to each server may take: TCP,\n"
      "              TLS, the server's INFO and its answer to the first\n"
      "              PING (default 2000; past it and 5 s more, the\n"
      "              run ends with \"connection timed out\")\n"
      "  --nats-ping MS\n"
      "              PING the server every MS ms and give the connection\n"
      "              up as stale after 2 unanswered (default: nats.c's,\n"
      "              2 min): a frozen server found sooner\n"
      "  --durable JOB\n"
      "              with --nats: a job JetStream keeps (nats-server -js),\n"
      "              which outlives the coordinator, the workers and the\n"
      "              server's restarts: each URL a message of the\n"
      "              work-queue stream uvp-fanout-JOB (Nats-Msg-Id JOB.N),\n"
      "              each result a key of the KV bucket uvp-fanout-JOB\n"
      "              (the first stored wins).  The coordinator publishes\n"
      "              the URLs that have no result, -c at a time, and\n"
      "              prints each row in order as its result comes, with\n"
      "              \"delivery\" (JetStream's count) in --json; run again\n"
      "              after a crash, it prints the whole job and fetches\n"
      "              only what has no result.  -d ends its wait, not the\n"
      "              job.  Made by the first run: 3 replicas, or 1 if the\n"
      "              server is not in a cluster (it refuses 3); ack_wait\n"
      "              -m per attempt (--retry) plus 1 s: a dead worker's\n"
      "              URLs go to another after that; a duplicate window\n"
      "              of the job's length at -c URLs a -m (2 min to 7 d).\n"
      "              With --worker: serve the job (waiting for it to\n"
      "              exist), pulling at most -c URLs; SIGTERM drains\n"
      "  --status    with --durable JOB: print its counts, fetch nothing:\n"
      "              results stored, URLs to do, queued (waiting, in\n"
      "              flight at workers), stale messages a killed server\n"
      "              left in the stream (never delivered again)\n"
      "  --purge     with --durable JOB: delete its stream and bucket\n"
      "              (both exit 1 if the job does not exist)\n"
      "  --nats-user USER, --nats-password PASSWORD, --nats-token TOKEN\n"
      "              with --nats: a user and password, or a token (the\n"
      "              nats tool's --user and --password; -u is curl's), or\n"
      "              in the URL: nats://USER:PASSWORD@HOST:PORT,\n"
      "              nats://TOKEN@HOST:PORT.  A secret in an option or in\n"
      "              the URL shows in ps to every user of the machine:\n"
      "              prefer the environment (NATS_PASSWORD, NATS_TOKEN)\n"
      "              or a file (--creds, --nkey).  Printed URLs show\n"
      "              secrets as ***\n"
      "  --creds FILE\n"
      "              with --nats: a user's JWT and nkey seed, as nsc\n"
      "              writes them (FILE.creds)\n"
      "  --nkey FILE with --nats: an nkey seed and its public key, as\n"
      "              `nk -gen user -pubout` writes them\n"
      "  --tlsca FILE, --tlscert FILE, --tlskey FILE, --tlsname NAME\n"
      "              with --nats: TLS, with the CAs that sign the\n"
      "              server's certificate (default: the system's), a\n"
      "              client certificate and its key, the name the\n"
      "              server's certificate must carry (default: the\n"
      "              URL's host); any of them, or a tls:// URL, turns\n"
      "              TLS on.  Each option, when absent, is read from the\n"
      "              environment: NATS_USER, NATS_PASSWORD, NATS_TOKEN,\n"
      "              NATS_CREDS, NATS_NKEY, NATS_CA, NATS_CERT, NATS_KEY,\n"
      "              NATS_TLS_NAME (secrets kept out of ps).  A secret\n"
      "              file (--creds, --nkey, --tlskey) that others may\n"
      "              read is warned of, as ssh does.  A file that\n"
      "              cannot be read, refused credentials, an untrusted\n"
      "              certificate or a client certificate missing or\n"
      "              refused end the run at once, said in one line\n"
      "  --inbox-prefix PREFIX\n"
      "              with --nats: the subject every inbox of the\n"
      "              connection starts with (replies, pulls, watches;\n"
      "              default _INBOX, or NATS_INBOX_PREFIX), which a\n"
      "              server's permissions can give one user alone\n"
      "  -h, --help  this text\n"
      "  --version   print the version (uvp's) and exit\n"
      "\n"
      "A URL succeeds if it answers with a status below 400; 4xx/5xx are\n"
      "HTTP errors, anything else (refused, reset, timeout, malformed\n"
      "response, ETLS: a certificate expired, signed by an unknown CA or\n"
      "for another host, a failed handshake) a transport error.\n"
      "Latency percentiles are over the URLs that answered with any\n"
      "status.  On a terminal, stderr shows a progress line while a run\n"
      "takes longer than %d ms.\n"
      "\n"
      "Exit status: 0 the run completed, even if URLs failed; 1 it could\n"
      "not run (unreadable file, server not started, CA file unreadable,\n"
      "out of memory); 2 usage error.\n",
      DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT_MS / 1000,
      DEFAULT_TIMEOUT_MS / 1000, DEMO_TIMEOUT_MS, RETRY_BASE_MS, RETRY_MAX_MS,
      DEFAULT_MAX_REDIRS, PROGRESS_AFTER_MS);
}

/* ---- input --------------------------------------------------------------- */

typedef struct urls_s {
  char **items;
  size_t n, cap;
} urls_t;

static int urls_add(urls_t *u, const char *url) {
  if (u->n == u->cap) {
    size_t cap = u->cap ? u->cap * 2 : 16;
    char **items = realloc(u->items, cap * sizeof(*items));
    if (items == NULL)
      return UV_ENOMEM;
    u->items = items;
    u->cap = cap;
  }
  if ((u->items[u->n] = strdup(url)) == NULL)
    return UV_ENOMEM;
  u->n++;
  return 0;
}

static void urls_free(urls_t *u) {
  for (size_t i = 0; i < u->n; i++)
    free(u->items[i]);
  free(u->items);
}

/* Read before the loop starts: a URL list is small next to the requests,
 * and stdin may be a terminal or a pipe, which libuv's file API is not
 * meant for. */
static int urls_read(urls_t *u, const char *path) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (f == NULL)
    return uv_translate_sys_error(errno);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int rc = 0;
  errno = 0;
  while (rc == 0 && (len = compat_getline(&line, &cap, f)) >= 0) {
    char *s = line;
    while (*s == ' ' || *s == '\t')
      s++;
    while (len > 0 && strchr(" \t\r\n", line[len - 1]) != NULL)
      line[--len] = '\0';
    if (*s != '\0' && *s != '#')
      rc = urls_add(u, s);
  }
  if (rc == 0 && ferror(f))
    rc = UV_EIO;
  else if (rc == 0 && errno == ENOMEM)
    rc = UV_ENOMEM;
  free(line);
  if (f != stdin)
    fclose(f);
  return rc;
}

/* The decimal number at the start of s; *end after it. */
static int parse_leading(const char *s, unsigned long long *v, char **end) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  *v = strtoull(s, end, 10);
  return errno != 0 ? -1 : 0;
}

static int parse_ms(const char *s, uint64_t *out) {
  unsigned long long v;
  char *end;
  if (parse_leading(s, &v, &end) != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

/* curl's SECONDS: a decimal number, fractions allowed ("2.5"). */
static int parse_seconds(const char *s, uint64_t *ms) {
  char *end;
  if (s == NULL)
    return -1;
  if ((*s < '0' || *s > '9') && *s != '.')
    return -1;
  double v = strtod(s, &end);
  if (*end != '\0' || !(v >= 0) || v > 86400.0 * 365)
    return -1;
  *ms = (uint64_t)llround(v * 1000.0);
  return 0;
}

/* BYTES with an optional K, M or G (powers of 1024), as curl takes. */
static int parse_size(const char *s, uint64_t *out) {
  unsigned long long v;
  char *end;
  if (parse_leading(s, &v, &end) != 0)
    return -1;
  unsigned shift = 0;
  switch (*end) {
  case 'k':
  case 'K':
    shift = 10;
    end++;
    break;
  case 'm':
  case 'M':
    shift = 20;
    end++;
    break;
  case 'g':
  case 'G':
    shift = 30;
    end++;
    break;
  default:
    break;
  }
  if (*end != '\0' || v > (UINT64_MAX >> shift))
    return -1;
  *out = (uint64_t)v << shift;
  return 0;
}

int fanout_job_name_ok(const char *job) {
  if (job == NULL)
    return 0;
  size_t n = strspn(job, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789-_");
  return n > 0 && n <= 64 && job[n] == '\0';
}

/* ---- error names --------------------------------------------------------- */

const char *fanout_err_name(int code) {
#ifdef FANOUT_NATS
  if (code <= UVP_NATS_ENORESPONDERS && code > UVP_NATS_ERRNO_MAX_ - 100)
    return uvp_nats_err_name(code);
#endif
  return uvp_curl_err_name(code);
}

static const char *fanout_strerror(int code) {
#ifdef FANOUT_NATS
  if (code <= UVP_NATS_ENORESPONDERS && code > UVP_NATS_ERRNO_MAX_ - 100)
    return uvp_nats_strerror(code);
#endif
  return uvp_curl_strerror(code);
}

/* The code a worker's error name stands for, on this machine (libuv's
 * codes are errno values, which differ between systems: names travel,
 * numbers do not).  A linear search over every range a name can come
 * from: only failed rows ask. */
int fanout_err_code(const char *name) {
  static const int ranges[][2] = {
      {-1, -4200}, {-30001, -30100}, {-32001, -32100}, {-33001, -33100}};
  for (size_t k = 0; k < sizeof(ranges) / sizeof(*ranges); k++)
    for (int c = ranges[k][0]; c >= ranges[k][1]; c--)
      if (strcmp(fanout_err_name(c), name) == 0)
        return c;
  return 0;
}

/* ---- the report ---------------------------------------------------------- */

static double ms_of_us(uint64_t us) { return (double)us / 1000.0; }

/* Rows the run never got to (the deadline passed first) have no attempt;
 * the map says what became of them. */
static int row_error(const row_t *row, const uvp_settled_t *s) {
  return row->attempts > 0 ? row->error : s->status;
}

static uint64_t row_latency_us(const row_t *row) {
  /* --durable: the worker's measure, errors too (the coordinator did not
   * see the fetch: it may have run before this coordinator started) */
  if ((row->error == 0 || row->run->job != NULL) && row->attempts > 0)
    return row->latency_us;
  return row->end_ns > row->start_ns ? (row->end_ns - row->start_ns) / 1000 : 0;
}

static const char *row_why(const run_t *r, const row_t *row, int error) {
  if (row->attempts == 0 && error == UV_ECANCELED && r->deadline_ms != 0)
    return "not started before the deadline (-d)";
  if (row->reason != NULL)
    return row->reason;
  return fanout_strerror(error);
}

/* JSON lines: compact, and figures in ms with the microseconds they are
 * measured in (15 significant digits print k/1000 exactly, without the
 * binary fraction's noise). */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

static void json_line(json_t *o) {
  if (o == NULL || json_dumpf(o, stdout, JSON_FLAGS) != 0)
    fputs("{\"error\":\"out of memory\"}", stdout);
  putchar('\n');
  json_decref(o);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t percentile(const uint64_t *v, size_t n, unsigned p) {
  size_t rank = (p * n + 99) / 100;
  return v[rank > 0 ? rank - 1 : 0];
}

/* One row's cells, as both forms print them. */
typedef struct cells_s {
  int answered;
  uint64_t us;
  char result[32];
  const char *why;
  char cause[256];
} cells_t;

/* A URL from the command line as a JSON string: JSON is UTF-8, a URL need
 * not be (libcurl refuses it then, but its row is still printed: its
 * bytes past ASCII as '?'). */
static void jsonw_url(jsonw_t *w, const char *url) {
  if (jsonw_str(w, url))
    return;
  char *ascii = strdup(url);
  if (ascii == NULL) {
    w->failed = true;
    return;
  }
  for (char *c = ascii; *c != '\0'; c++)
    if ((unsigned char)*c >= 0x80)
      *c = '?';
  (void)jsonw_str(w, ascii);
  free(ascii);
}

/* A row: what json_pack and json_dumpf made of it before (jsonw.h), with
 * one write. */
static void report_json_row(const run_t *r, jsonw_t *w, size_t i,
                            const row_t *row, const cells_t *c) {
  jsonw_open(w);
  jsonw_key(w, "n");
  jsonw_int(w, (int64_t)(i + 1));
  jsonw_key(w, "url");
  jsonw_url(w, row->url);
  jsonw_key(w, "result");
  jsonw_url(w, c->result);
  jsonw_key(w, "ok");
  jsonw_bool(w, c->answered && row->status < 400);
  if (c->answered) {
    jsonw_key(w, "status");
    jsonw_int(w, row->status);
  } else {
    jsonw_key(w, "error");
    jsonw_url(w, c->result);
    jsonw_key(w, "message");
    jsonw_url(w, c->why);
    if (c->cause[0] != '\0') {
      size_t before = w->len;
      bool first = w->first;
      jsonw_key(w, "cause");
      if (!jsonw_str(w, c->cause)) { /* not UTF-8: json_string() refused */
        w->len = before;
        w->first = first;
      }
    }
  }
  jsonw_key(w, "bytes");
  jsonw_int(w, c->answered ? (int64_t)row->bytes : 0);
  jsonw_key(w, "latency_ms");
  jsonw_real(w, ms_of_us(c->us));
  jsonw_key(w, "attempts");
  jsonw_int(w, row->attempts);
  if (row->redirects > 0) {
    jsonw_key(w, "redirects");
    jsonw_int(w, row->redirects);
    jsonw_key(w, "final_url");
    jsonw_url(w, row->final_url);
  }
  if (r->nats_mode) {
    jsonw_key(w, "worker");
    if (row->worker != NULL)
      jsonw_url(w, row->worker);
    else
      jsonw_null(w);
    jsonw_key(w, "sends");
    jsonw_int(w, row->sends);
  }
  if (r->job != NULL) {
    jsonw_key(w, "delivery");
    jsonw_int(w, row->delivery);
    if (row->refetched) {
      jsonw_key(w, "refetched");
      jsonw_bool(w, true);
    }
  }
  jsonw_close(w);
  jsonw_raw(w, "\n", 1);
  if (w->failed)
    fputs("{\"error\":\"out of memory\"}\n", stdout);
  else
    fwrite(w->p, 1, w->len, stdout);
}

static void report_text_row(const run_t *r, size_t i, const row_t *row,
                            const cells_t *c, int width, int wwidth) {
  printf("%4zu  %-*s  %-15s ", i + 1, width, row->url, c->result);
  if (c->answered)
    printf("%9zu %8.1f ms", row->bytes, ms_of_us(c->us));
  else
    printf("%9s %8.1f ms", "-", ms_of_us(c->us));
  if (r->nats_mode)
    printf("  %-*s", wwidth, row->worker != NULL ? row->worker : "-");
  if (!c->answered) /* the reason, in words, after the columns */
    printf("  %s", c->why);
  if (c->cause[0] != '\0')
    printf("  (cause: %s)", c->cause);
  if (row->attempts > 1)
    printf("  (%u attempts)", row->attempts);
  if (r->nats_mode && r->job == NULL && row->sends > 1)
    printf("  (%u requests)", row->sends);
  if (row->delivery > 1)
    printf("  (delivery %u)", row->delivery);
  if (row->refetched)
    printf("  (a stored result it could not read: fetched again)");
  if (row->redirects > 0)
    printf("  (%u redirect%s)", row->redirects, row->redirects == 1 ? "" : "s");
  putchar('\n');
}

static void report_cells(const run_t *r, const row_t *row,
                         const uvp_settled_t *s, int error, cells_t *c) {
  c->answered = error == 0;
  c->us = row_latency_us(row);
  if (c->answered)
    snprintf(c->result, sizeof(c->result), "%d", row->status);
  else
    snprintf(c->result, sizeof(c->result), "%s",
             row->error_name != NULL ? row->error_name
                                     : fanout_err_name(error));
  c->why = c->answered ? NULL : row_why(r, row, error);
  /* Who cut it, when a cancellation did (a deadline): the cause column. */
  c->cause[0] = '\0';
  (void)uvp_cause_format(uvp_promise_cause(s->promise), c->cause,
                         sizeof(c->cause));
}

/* The URL column's width (one huge URL must not widen every row: it stops
 * growing at URL_COLUMN_MAX, and a longer URL shifts only its own row), and
 * the worker column's (of the workers known when the header is printed:
 * all of them, unless rows are printed as they come, --durable). */
static void report_header(const run_t *r, int *width, int *wwidth) {
  size_t w = 3, ww = r->job != NULL ? 12 : 6;
  for (size_t i = 0; i < r->n; i++) {
    size_t len = strlen(r->rows[i].url);
    if (len > w && len <= URL_COLUMN_MAX)
      w = len;
    len = r->rows[i].worker != NULL ? strlen(r->rows[i].worker) : 0;
    if (len > ww && len <= URL_COLUMN_MAX)
      ww = len;
  }
  *width = (int)w;
  *wwidth = (int)ww;
  if (r->json)
    return;
  printf("%4s  %-*s  %-15s %9s %11s", "#", *width, "URL", "RESULT", "BYTES",
         "LATENCY");
  if (r->nats_mode)
    printf("  %s", "WORKER");
  putchar('\n');
}

static void report_summary(const run_t *r, size_t count, size_t ok,
                           size_t http_err, size_t transport_err,
                           size_t retried, uint64_t *lat, size_t nlat);

static void report_begin(run_t *r) {
  report_t *rep = &r->report;
  if (rep->begun)
    return;
  rep->begun = 1;
  report_header(r, &rep->width, &rep->wwidth);
  rep->lat = malloc((r->n + 1) * sizeof(*rep->lat));
  rep->w = calloc(1, sizeof(*rep->w));
}

void fanout_report_row(run_t *r, size_t i, const uvp_settled_t *s) {
  report_t *rep = &r->report;
  /* --durable prints rows while the progress line shows: on the same
   * terminal a row would land after it.  The line goes first, and is
   * drawn again below the rows (fanout_progress_draw). */
  if (r->progress_shown && r->tty_out) {
    fputs("\r\033[K", stderr);
    r->progress_shown = 0;
  }
  report_begin(r);
  const row_t *row = &r->rows[i];
  cells_t c;
  report_cells(r, row, s, row_error(row, s), &c);
  rep->rows++;
  if (c.answered) {
    if (rep->lat != NULL)
      rep->lat[rep->nlat++] = c.us;
    if (row->status < 400)
      rep->ok++;
    else
      rep->http_err++;
  } else {
    rep->transport_err++;
  }
  if (row->attempts > 1)
    rep->retried++;
  if (r->json && rep->w == NULL)
    puts("{\"error\":\"out of memory\"}");
  else if (r->json)
    report_json_row(r, rep->w, i, row, &c);
  else
    report_text_row(r, i, row, &c, rep->width, rep->wwidth);
}

void fanout_report_end(run_t *r) {
  report_t *rep = &r->report;
  report_begin(r);
  report_summary(r, rep->rows, rep->ok, rep->http_err, rep->transport_err,
                 rep->retried, rep->lat, rep->nlat);
  if (rep->w != NULL)
    free(rep->w->p);
  free(rep->w);
  free(rep->lat);
  *rep = (report_t){0};
}

void fanout_report(run_t *r, const uvp_settled_list_t *list) {
  for (size_t i = 0; i < list->count; i++)
    fanout_report_row(r, i, &list->items[i]);
  fanout_report_end(r);
}

static void report_summary(const run_t *r, size_t count, size_t ok,
                           size_t http_err, size_t transport_err,
                           size_t retried, uint64_t *lat, size_t nlat) {
  uint64_t elapsed_us = (uv_hrtime() - r->start_ns) / 1000;
  uint64_t p50 = 0, p90 = 0, p99 = 0;
  if (nlat > 0) {
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    p50 = percentile(lat, nlat, 50);
    p90 = percentile(lat, nlat, 90);
    p99 = percentile(lat, nlat, 99);
  }
  size_t failed = http_err + transport_err;
  if (r->json) {
    json_t *o =
        json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "summary", 1, "urls",
                  (json_int_t)count, "succeeded", (json_int_t)ok, "failed",
                  (json_int_t)failed, "http_errors", (json_int_t)http_err,
                  "transport_errors", (json_int_t)transport_err, "responses",
                  (json_int_t)nlat, "retried", (json_int_t)retried,
                  "elapsed_ms", ms_of_us(elapsed_us));
    const char *names[] = {"p50_ms", "p90_ms", "p99_ms"};
    uint64_t ps[] = {p50, p90, p99};
    for (int k = 0; k < 3; k++)
      json_object_set_new(o, names[k],
                          nlat > 0 ? json_real(ms_of_us(ps[k])) : json_null());
    if (r->nats_mode) {
      json_object_set_new(o, "late_replies", json_integer((json_int_t)r->late));
      json_object_set_new(o, "disconnects",
                          json_integer((json_int_t)r->disconnects));
    }
    if (r->job != NULL) {
      json_object_set_new(o, "job", json_string(r->job));
      json_object_set_new(o, "found", json_integer((json_int_t)r->found));
      json_object_set_new(o, "published",
                          json_integer((json_int_t)r->published));
      json_object_set_new(o, "duplicates",
                          json_integer((json_int_t)r->duplicates));
      json_object_set_new(o, "redelivered",
                          json_integer((json_int_t)r->redelivered));
    }
    json_line(o);
  } else {
    printf("\n%zu URL%s in %.2f s: %zu succeeded, %zu failed (%zu HTTP "
           "error%s, %zu transport error%s)\n",
           count, count == 1 ? "" : "s", ms_of_us(elapsed_us) / 1000.0, ok,
           failed, http_err, http_err == 1 ? "" : "s", transport_err,
           transport_err == 1 ? "" : "s");
    if (nlat > 0)
      printf("latency over %zu response%s: p50 %.1f ms, p90 %.1f ms, "
             "p99 %.1f ms\n",
             nlat, nlat == 1 ? "" : "s", ms_of_us(p50), ms_of_us(p90),
             ms_of_us(p99));
    else
      printf("latency: no responses\n");
    if (r->nats_mode && r->late > 0)
      printf("%llu late or duplicate repl%s dropped\n",
             (unsigned long long)r->late, r->late == 1 ? "y" : "ies");
    if (r->job != NULL)
      printf("job %s: %llu result%s found stored, %llu URL%s published "
             "(%llu the stream had), %llu redelivered\n",
             r->job, (unsigned long long)r->found, r->found == 1 ? "" : "s",
             (unsigned long long)(r->published + r->duplicates),
             r->published + r->duplicates == 1 ? "" : "s",
             (unsigned long long)r->duplicates,
             (unsigned long long)r->redelivered);
    if (retried > 0)
      printf("%zu URL%s needed more than one attempt\n", retried,
             retried == 1 ? "" : "s");
  }
  fflush(stdout);
}

/* ---- one URL: attempts under uvp_retry ----------------------------------- */

/* A response or an error, whichever the attempt ended with, goes into the
 * row; a 5xx becomes a rejection for uvp_retry to judge.  A response is
 * let go here (its easy handle and buffers): the row has what the report
 * needs, and the map would otherwise keep every one until the end. */
static uvp_ret_t record_attempt(void *arg, const uvp_outcome_t *in) {
  row_t *row = arg;
  free(row->reason);
  row->reason = NULL;
  free(row->final_url);
  row->final_url = NULL;
  row->redirects = 0;
  if (in->status == 0) {
    const uvp_curl_response_t *res = in->value;
    curl_off_t us = 0;
    long redirects = 0;
    char *url = NULL;
    curl_easy_getinfo(res->easy, CURLINFO_TOTAL_TIME_T, &us);
    curl_easy_getinfo(res->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    curl_easy_getinfo(res->easy, CURLINFO_EFFECTIVE_URL, &url);
    /* A server that answered HTTP/1.x (no h2 by ALPN or Upgrade) has one
     * request per connection: lift the per-host cap for the rest of the
     * run (for every host: libcurl's cap is the multi handle's). */
    long version = 0;
    if (row->run->h2_capped &&
        curl_easy_getinfo(res->easy, CURLINFO_HTTP_VERSION, &version) ==
            CURLE_OK &&
        version != CURL_HTTP_VERSION_2_0 && version != CURL_HTTP_VERSION_3) {
      curl_multi_setopt(uvp_curl_multi(row->run->curl),
                        CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
      row->run->h2_capped = 0;
    }
    row->error = 0;
    row->status = (int)res->status;
    row->bytes = res->bytes;
    row->latency_us = us > 0 ? (uint64_t)us : 0;
    row->redirects = (unsigned)redirects;
    if (redirects > 0 && url != NULL)
      row->final_url = strdup(url);
    if (res->status >= 500 && row->retries > 0)
      return uvp_ret_reject(E_HTTP_5XX, NULL, NULL);
    return uvp_ret_value(NULL, NULL);
  }
  row->error = in->status;
  row->status = 0;
  /* The binding's rejections carry libcurl's code and message. */
  const uvp_curl_error_t *e = in->value;
  if (e != NULL)
    row->reason = strdup(e->message);
  return uvp_ret_pass();
}

/* curl's options on each request's easy handle. */
static int setup_easy(void *arg, CURL *e) {
  const http_t *h = arg;
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, "uvp-fanout/" UVP_VERSION_STRING);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)h->connect_timeout_ms);
  if (h->follow) {
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, h->max_redirects);
  }
  /* The CAs: --cacert, else as curl reads its environment (SSL_CERT_FILE,
   * SSL_CERT_DIR), else the system's store by its directory only, looked
   * up by subject hash (Debian's /etc/ssl/certs) as certificates need it:
   * the whole bundle (libcurl's default CA file) is parsed by the first
   * handshake, 25 ms on the loop thread here, 1 ms by the directory. */
  if (h->cafile != NULL || h->capath != NULL) {
    curl_easy_setopt(e, CURLOPT_CAINFO, h->cafile);
    if (h->capath != NULL)
      curl_easy_setopt(e, CURLOPT_CAPATH, h->capath);
  } else if (h->system_capath) {
    curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
  }
  if (h->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (h->http2) {
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_0);
    /* Wait for the host's first connection to say whether it multiplexes
     * rather than open one per request meanwhile. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  } else {
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  }
  if (h->proxy != NULL)
    curl_easy_setopt(e, CURLOPT_PROXY, h->proxy);
  if (h->userpwd != NULL) {
    curl_easy_setopt(e, CURLOPT_USERPWD, h->userpwd);
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
  }
  if (h->compressed)
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  return 0;
}

/* Why libcurl's URL parser refuses `url` (a scheme, a host and a port in
 * range are required), or NULL: it then says which part is wrong, where
 * the transfer's error would only say "URL using bad/illegal format". */
static const char *url_problem(const char *url) {
  CURLU *u = curl_url();
  if (u == NULL)
    return NULL; /* the transfer will say */
  CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
  curl_url_cleanup(u);
  return uc == CURLUE_OK ? NULL : curl_url_strerror(uc);
}

static int deadline_passed(const run_t *r) {
  return r->deadline_ms != 0 && uv_now(r->loop) >= r->deadline_at;
}

static int attempt(void *arg, unsigned int n, uvp_promise_t **out) {
  row_t *row = arg;
  run_t *r = row->run;
  /* The loop's clock is only updated once per iteration, and the first
   * `limit` items all start before uv_run: refresh it, or a timeout would
   * count from a moment before its request started. */
  uv_update_time(r->loop);
  uvp_curl_fetch_opts_t o = {.max_body = row->http->max_body,
                             .max_header = MAX_HEADER,
                             .timeout_ms = row->http->timeout_ms,
                             .flags = UVP_CURL_DISCARD_BODY,
                             .setup = setup_easy,
                             .setup_arg = (void *)row->http};
  uint64_t left = 0; /* of the deadline (-d), if any */
  if (r->deadline_ms != 0) {
    /* The deadline is one clock for every request: a request starting
     * late only gets what is left of it.  It is a uvp deadline around the
     * transfer (the binding watches its promise with it), so a request it
     * cuts says so: its cause (uvp_promise_cause), the report's cause. */
    uint64_t now = uv_now(r->loop);
    if (now >= r->deadline_at) {
      row->error = UV_ETIMEDOUT;
      free(row->reason);
      row->reason = strdup("deadline (-d) passed before this retry");
      return UV_ETIMEDOUT;
    }
    left = r->deadline_at - now;
  }
  row->attempts = n + 1;
  const char *bad = url_problem(row->url);
  if (bad != NULL) {
    row->error = UV_EINVAL;
    free(row->reason);
    row->reason = strdup(bad);
    return UV_EINVAL;
  }
  uvp_promise_t *p, *recorded;
  int rc = left != 0 ? uvp_deadline_set(r->ctx, left) : 0;
  if (rc == 0)
    rc = uvp_curl_fetch(r->curl, row->url, &o, &p);
  if (rc == 0)
    rc = uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, record_attempt, row,
                        &recorded);
  /* The rest of the callback that called us (the next row's start, the
   * report) runs without the deadline; the handler just registered holds
   * it (a deadline lives while a scope names it) until the transfer
   * ends. */
  if (left != 0)
    (void)uvp_deadline_shield(r->ctx, UVP_NO_DEADLINE);
  if (rc == 0)
    *out = recorded;
  return rc;
}

/* Worth another try (retry.h), while the deadline allows. */
static int should_retry(void *arg, int code, unsigned int n) {
  row_t *row = arg;
  (void)n;
  return !deadline_passed(row->run) && fanout_worth_retrying(code);
}

/* ---- the fan-out --------------------------------------------------------- */

static int start_item(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  row_t *row = &r->rows[i];
  uv_update_time(r->loop);
  row->start_ns = uv_hrtime();
  if (deadline_passed(r))
    return UV_ECANCELED; /* never started: the map records it as such */
  r->started++;
  return fanout_fetch(r, row, out);
}

int fanout_fetch(run_t *r, row_t *row, uvp_promise_t **out) {
  uvp_retry_opts_t ro = {.attempts = row->retries + 1,
                         .base_ms = RETRY_BASE_MS,
                         .max_ms = RETRY_MAX_MS,
                         .factor = 2.0,
                         .jitter = 0.5,
                         .should_retry = should_retry};
  return uvp_retry(r->ctx, attempt, row, &ro, out);
}

static void progress_draw(run_t *r) {
  unsigned long long s = (uv_hrtime() - r->start_ns) / 1000000000u;
  char text[sizeof(r->progress_text)];
  if (r->job == NULL)
    snprintf(text, sizeof(text),
             "%zu/%zu done, %zu failed, %zu in flight, %llu s", r->settled,
             r->n, r->failed, r->started - r->settled, s);
  else if (r->job_queued >= 0) { /* the consumer's figures: fanout.h */
    /* asked up to a poll ago, while the rows done are now's: what is
     * done since is still counted there; not past what is left */
    long long left = (long long)(r->n - r->settled);
    long long held = r->job_held < left ? r->job_held : left;
    long long queued =
        r->job_queued < left - held ? r->job_queued : left - held;
    snprintf(text, sizeof(text),
             "%zu/%zu done, %zu failed, %lld queued, %lld at workers, %llu s",
             r->settled, r->n, r->failed, queued, held, s);
  } else
    snprintf(text, sizeof(text), "%zu/%zu done, %zu failed, %llu s", r->settled,
             r->n, r->failed, s);
  if (r->progress_shown && strcmp(text, r->progress_text) == 0)
    return;
  memcpy(r->progress_text, text, sizeof(text));
  fprintf(stderr, "\r\033[K%s", text);
  r->progress_shown = 1;
}

static void on_progress(uv_timer_t *t) { progress_draw(t->data); }

void fanout_progress_draw(run_t *r) {
  /* only a line the rows took away: before PROGRESS_AFTER_MS, none */
  if (r->progress && !r->progress_shown && r->progress_text[0] != '\0')
    progress_draw(r);
}

static void progress_end(run_t *r) {
  if (!r->progress)
    return;
  r->progress = 0;
  if (r->progress_shown)
    fputs("\r\033[K", stderr);
  uv_close((uv_handle_t *)&r->progress_timer, NULL);
}

int fanout_trace_start(run_t *r) {
  /* And UVP_CONSOLE=PATH: the live console, in every mode that runs. */
  int rc = tool_console_listen(r->ctx, "uvp-fanout", 0);
  if (rc != 0 || r->trace_out == NULL)
    return rc;
  return uvp_ctx_set_recorder(r->ctx, TRACE_RING, UVP_RECORD_ALL);
}

int fanout_trace_write(run_t *r) {
  if (r->trace_out == NULL)
    return 0;
  /* A file is written as the lines come: nothing is cut short. */
  uvp_record_opts_t to = {UVP_RECORD_JSON, 0, r->trace_out, NULL, NULL};
  int n = r->ctx != NULL ? uvp_ctx_recorder_write(r->ctx, &to) : UV_ENOENT;
  if (fclose(r->trace_out) != 0 && n >= 0)
    n = UV_EIO;
  r->trace_out = NULL;
  if (n >= 0)
    return 0;
  fprintf(stderr, "uvp-fanout: %s: %s\n", r->trace, uvp_strerror(n));
  return 1;
}

/* A root span per URL, not one per job: each URL's requests (and their
 * retries, and the worker's fetch) are one trace, which a viewer can
 * follow alone, and a job of many URLs is not one trace of thousands of
 * spans. */
void fanout_row_trace_begin(run_t *r, row_t *row) {
  if (r->trace_out == NULL || row->span != NULL)
    return;
  /* without memory the URL goes untraced, as with a span refused */
  row->span = malloc(sizeof(*row->span));
  if (row->span != NULL &&
      uvp_span_begin(r->ctx, row->span, "uvp-fanout url", UVP_SPAN_INTERNAL,
                     NULL, UVP_SPAN_NEW_TRACE) != 0) {
    free(row->span);
    row->span = NULL;
  }
}

void fanout_row_trace_end(run_t *r, row_t *row, int status) {
  uvp_span_t *span = row->span;

  if (span == NULL)
    return;
  row->span = NULL;
  (void)uvp_span_end(r->ctx, span, status);
  free(span);
}

void fanout_row_trace_enter(run_t *r, row_t *row, fanout_trace_was_t *was) {
  was->set = 0;
  if (row->span == NULL)
    return;
  /* the coordinator sets no tracestate: none to keep */
  was->had = uvp_tracectx_get(r->ctx, &was->tc, NULL) == 0;
  was->set = uvp_tracectx_set(r->ctx, &row->span->tc, NULL) == 0;
}

void fanout_row_trace_leave(run_t *r, const fanout_trace_was_t *was) {
  if (was->set)
    (void)uvp_tracectx_set(r->ctx, was->had ? &was->tc : NULL, NULL);
}

void fanout_on_item(void *arg, size_t i, const uvp_outcome_t *outcome) {
  run_t *r = arg;
  row_t *row = &r->rows[i];
  fanout_row_trace_end(r, row,
                       outcome->status < 0 ? outcome->status
                       : row->error != 0   ? row->error
                                           : 0);
  row->end_ns = uv_hrtime();
  r->settled++;
  if (outcome->status < 0 || row->error != 0 || row->status >= 400)
    r->failed++;
}

static uvp_ret_t on_done(void *arg, const uvp_outcome_t *in) {
  run_t *r = arg;
  progress_end(r);
  if (r->nats_before_report != NULL)
    r->nats_before_report(r);
  if (in->status == 0 && r->job != NULL) { /* its rows are out */
    fanout_report_end(r);
  } else if (in->status == 0) {
    fanout_report(r, in->value);
  } else {
    if (!r->nats_mode) /* nats-coord.c said why */
      fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(in->status));
    r->exit_code = 1;
  }
  /* The demo server and libcurl's cached connections are all that would
   * keep uv_run going: every transfer has ended. */
  if (r->curl != NULL)
    uvp_curl_close(r->curl);
  r->curl = NULL;
  if (r->nats_end != NULL)
    r->nats_end(r);
  if (r->server != NULL)
    demo_server_stop(r->server, NULL, NULL);
  r->server = NULL;
  return uvp_ret_value(NULL, NULL);
}

/* ---- --serve ------------------------------------------------------------- */

typedef struct serve_s {
  demo_server_t *server;
  uv_signal_t sigint, sigterm;
} serve_t;

static void on_signal(uv_signal_t *h, int signum) {
  serve_t *s = h->data;
  (void)signum;
  demo_server_stop(s->server, NULL, NULL);
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static int serve(uv_loop_t *loop, int port) {
  serve_t s;
  int rc = demo_server_start(loop, "127.0.0.1", port, &s.server);
  if (rc != 0) {
    fprintf(stderr, "uvp-fanout: cannot listen on 127.0.0.1:%d: %s\n", port,
            uv_strerror(rc));
    return 1;
  }
  uv_signal_init(loop, &s.sigint);
  uv_signal_init(loop, &s.sigterm);
  s.sigint.data = s.sigterm.data = &s;
  uv_signal_start(&s.sigint, on_signal, SIGINT);
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  printf("listening on 127.0.0.1:%d\n", demo_server_port(s.server));
  fflush(stdout); /* whoever started us waits for this line */
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

/* ---- main ---------------------------------------------------------------- */

static const char *const demo_paths[] = {
    "/fast",  "/slow", "/big",     "/missing", "/error",
    "/reset", "/hang", "/trickle", "/half",    "/malformed",
};

static int demo_urls(run_t *r, urls_t *u) {
  int rc = demo_server_start(r->loop, "127.0.0.1", 0, &r->server);
  if (rc != 0) {
    fprintf(stderr, "uvp-fanout: cannot start the demo server: %s\n",
            uv_strerror(rc));
    return rc;
  }
  int port = demo_server_port(r->server);
  int refused = demo_server_refused_port("127.0.0.1");
  char url[128];
  for (size_t i = 0; rc == 0 && i < sizeof(demo_paths) / sizeof(*demo_paths);
       i++) {
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, demo_paths[i]);
    rc = urls_add(u, url);
  }
  if (rc == 0 && refused > 0) {
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", refused);
    rc = urls_add(u, url);
  }
  if (rc == 0) {
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/fast", port);
    rc = urls_add(u, url);
  }
  return rc;
}

enum {
  OPT_JSON = 256,
  OPT_SERVE,
  OPT_CONNECT_TIMEOUT,
  OPT_RETRY,
  OPT_MAX_REDIRS,
  OPT_CACERT,
  OPT_MAX_FILESIZE,
  OPT_HTTP2,
  OPT_COMPRESSED,
  OPT_NATS,
  OPT_WORKER,
  OPT_NATS_RETRY,
  OPT_NATS_PING,
  OPT_NATS_TIMEOUT,
  OPT_NAME,
  OPT_TRACE,
  OPT_VERSION,
  OPT_DURABLE,
  OPT_STATUS,
  OPT_PURGE,
  OPT_NATS_USER,
  OPT_NATS_PASSWORD,
  OPT_NATS_TOKEN,
  OPT_NATS_CREDS,
  OPT_NATS_NKEY,
  OPT_NATS_TLSCA,
  OPT_NATS_TLSCERT,
  OPT_NATS_TLSKEY,
  OPT_NATS_TLSNAME,
  OPT_NATS_INBOX_PREFIX,
  OPT_HTTP_USER
};

static int usage_error(const char *msg) {
  fprintf(stderr, "uvp-fanout: %s\n", msg);
  return EXIT_USAGE;
}

/* The CA file is read once, here, before the fan-out: one that cannot be
 * read or holds no certificate stops the run (libcurl would find out per
 * request, as CURLE_SSL_CACERT_BADFILE). */
static const char *check_cafile(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return strerror(errno);
  char line[256];
  int found = 0;
  while (!found && fgets(line, sizeof(line), f) != NULL)
    found = strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0;
  fclose(f);
  return found ? NULL : "no CA certificate could be read from the file";
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, OPT_JSON},
      {"serve", optional_argument, NULL, OPT_SERVE},
      {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
      {"max-time", required_argument, NULL, 'm'},
      {"retry", required_argument, NULL, OPT_RETRY},
      {"location", no_argument, NULL, 'L'},
      {"max-redirs", required_argument, NULL, OPT_MAX_REDIRS},
      {"cacert", required_argument, NULL, OPT_CACERT},
      {"insecure", no_argument, NULL, 'k'},
      {"max-filesize", required_argument, NULL, OPT_MAX_FILESIZE},
      {"http2", no_argument, NULL, OPT_HTTP2},
      {"proxy", required_argument, NULL, 'x'},
      {"user", required_argument, NULL, 'u'},
      {"http-user", required_argument, NULL, OPT_HTTP_USER},
      {"server", required_argument, NULL, 's'},
      {"compressed", no_argument, NULL, OPT_COMPRESSED},
      {"nats", required_argument, NULL, OPT_NATS},
      {"worker", no_argument, NULL, OPT_WORKER},
      {"nats-retry", required_argument, NULL, OPT_NATS_RETRY},
      {"nats-ping", required_argument, NULL, OPT_NATS_PING},
      {"nats-timeout", required_argument, NULL, OPT_NATS_TIMEOUT},
      {"name", required_argument, NULL, OPT_NAME},
      {"help", no_argument, NULL, 'h'},
      {"trace", required_argument, NULL, OPT_TRACE},
      {"version", no_argument, NULL, OPT_VERSION},
      {"durable", required_argument, NULL, OPT_DURABLE},
      {"status", no_argument, NULL, OPT_STATUS},
      {"purge", no_argument, NULL, OPT_PURGE},
      {"nats-user", required_argument, NULL, OPT_NATS_USER},
      {"nats-password", required_argument, NULL, OPT_NATS_PASSWORD},
      {"nats-token", required_argument, NULL, OPT_NATS_TOKEN},
      {"creds", required_argument, NULL, OPT_NATS_CREDS},
      {"nkey", required_argument, NULL, OPT_NATS_NKEY},
      {"tlsca", required_argument, NULL, OPT_NATS_TLSCA},
      {"tlscert", required_argument, NULL, OPT_NATS_TLSCERT},
      {"tlskey", required_argument, NULL, OPT_NATS_TLSKEY},
      {"tlsname", required_argument, NULL, OPT_NATS_TLSNAME},
      {"inbox-prefix", required_argument, NULL, OPT_NATS_INBOX_PREFIX},
      {NULL, 0, NULL, 0},
  };
  static const char shortopts[] = ":c:t:d:f:m:Lkhx:u:s:";
  uint64_t concurrency = DEFAULT_CONCURRENCY, timeout_ms = DEFAULT_TIMEOUT_MS,
           connect_ms = DEFAULT_CONNECT_TIMEOUT_MS, deadline_ms = 0,
           retries = 0, max_redirs = DEFAULT_MAX_REDIRS,
           max_filesize = DEFAULT_MAX_FILESIZE, serve_port = 0;
  int have_timeout = 0, json = 0, serve_mode = 0, follow = 0, insecure = 0,
      http2 = 0, compressed = 0;
  const char *cafile = NULL, *proxy = NULL, *userpwd = NULL;
  const char *file = NULL, *trace = NULL;
  nats_cli_t nats = {.retries = NATS_RETRY_DEFAULT};
  int worker = 0, user_flag = 0;
  uint64_t nats_retry = NATS_RETRY_DEFAULT;
  int c;
  opterr = 0; /* cli_option_error says it in one line */
  while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      if (parse_ms(optarg, &concurrency) != 0 || concurrency == 0 ||
          concurrency > 100000)
        return usage_error("-c wants a number from 1 to 100000");
      break;
    case 't':
      if (parse_ms(optarg, &timeout_ms) != 0 || timeout_ms == 0)
        return usage_error("-t wants milliseconds (> 0)");
      have_timeout = 1;
      break;
    case 'm':
      if (parse_seconds(optarg, &timeout_ms) != 0 || timeout_ms == 0)
        return usage_error("-m/--max-time wants seconds (> 0)");
      have_timeout = 1;
      break;
    case OPT_CONNECT_TIMEOUT:
      if (parse_seconds(optarg, &connect_ms) != 0 || connect_ms == 0)
        return usage_error("--connect-timeout wants seconds (> 0)");
      break;
    case 'd':
      if (parse_ms(optarg, &deadline_ms) != 0 || deadline_ms == 0)
        return usage_error("-d wants milliseconds (> 0)");
      break;
    case OPT_RETRY:
      if (parse_ms(optarg, &retries) != 0 || retries > 100)
        return usage_error("--retry wants a number from 0 to 100");
      break;
    case 'L':
      follow = 1;
      break;
    case OPT_MAX_REDIRS:
      if (parse_ms(optarg, &max_redirs) != 0 || max_redirs > 1000)
        return usage_error("--max-redirs wants a number from 0 to 1000");
      break;
    case OPT_CACERT:
      cafile = optarg;
      break;
    case 'k':
      insecure = 1;
      break;
    case OPT_HTTP2:
      http2 = 1;
      break;
    case 'x':
      proxy = optarg;
      break;
    case 'u':
      user_flag = 1; /* refused with --nats: see below */
      /* fall through */
    case OPT_HTTP_USER:
      if (optarg == NULL || strchr(optarg, ':') == NULL)
        return usage_error("-u/--http-user wants USER:PASSWORD");
      userpwd = optarg;
      break;
    case OPT_COMPRESSED:
      compressed = 1;
      break;
    case OPT_MAX_FILESIZE:
      if (parse_size(optarg, &max_filesize) != 0 || max_filesize == 0)
        return usage_error("--max-filesize wants bytes (> 0; K, M, G)");
      break;
    case 'f':
      file = optarg;
      break;
    case OPT_JSON:
      json = 1;
      break;
    case OPT_TRACE:
      trace = optarg;
      break;
    case 's': /* the nats tool's */
    case OPT_NATS:
      nats.url = optarg;
      break;
    case OPT_WORKER:
      worker = 1;
      break;
    case OPT_NATS_RETRY:
      if (parse_ms(optarg, &nats_retry) != 0 || nats_retry > 100)
        return usage_error("--nats-retry wants a number from 0 to 100");
      break;
    case OPT_NATS_TIMEOUT:
      if (parse_ms(optarg, &nats.connect_ms) != 0 || nats.connect_ms == 0 ||
          nats.connect_ms > 3600000)
        return usage_error("--nats-timeout wants milliseconds, 1 to 3600000");
      break;
    case OPT_NATS_PING:
      if (parse_ms(optarg, &nats.ping_ms) != 0 || nats.ping_ms == 0 ||
          nats.ping_ms > 86400000)
        return usage_error("--nats-ping wants milliseconds, 1 to 86400000");
      break;
    case OPT_NAME:
      nats.name = optarg;
      break;
    case OPT_DURABLE:
      if (!fanout_job_name_ok(optarg))
        return usage_error("--durable wants a job's name: 1 to 64 letters, "
                           "digits, - and _");
      nats.job = optarg;
      break;
    case OPT_STATUS:
      nats.job_status = 1;
      break;
    case OPT_PURGE:
      nats.job_purge = 1;
      break;
    case OPT_NATS_USER:
      nats.user = optarg;
      break;
    case OPT_NATS_PASSWORD:
      nats.password = optarg;
      break;
    case OPT_NATS_TOKEN:
      nats.token = optarg;
      break;
    case OPT_NATS_CREDS:
      nats.creds = optarg;
      break;
    case OPT_NATS_NKEY:
      nats.nkey = optarg;
      break;
    case OPT_NATS_TLSCA:
      nats.tlsca = optarg;
      break;
    case OPT_NATS_TLSCERT:
      nats.tlscert = optarg;
      break;
    case OPT_NATS_TLSKEY:
      nats.tlskey = optarg;
      break;
    case OPT_NATS_TLSNAME:
      nats.tlsname = optarg;
      break;
    case OPT_NATS_INBOX_PREFIX:
      nats.inbox_prefix = optarg;
      break;
    case OPT_SERVE:
      serve_mode = 1;
      if (optarg != NULL &&
          (parse_ms(optarg, &serve_port) != 0 || serve_port > 65535))
        return usage_error("--serve wants a port");
      break;
    case 'h':
      usage(stdout);
      return 0;
    case OPT_VERSION:
      printf("uvp-fanout %s\n", uvp_version_string());
      return 0;
    default:
      cli_option_error("uvp-fanout", c, argv, shortopts, longopts);
      return EXIT_USAGE;
    }
  }
  /* `--serve 8080` as well as `--serve=8080`. */
  if (serve_mode && optind < argc && parse_ms(argv[optind], &serve_port) == 0) {
    if (serve_port > 65535)
      return usage_error("--serve wants a port");
    optind++;
  }
  if (serve_mode && (optind < argc || file != NULL))
    return usage_error("--serve takes no URLs");
  /* NATS_URL (the nats tool's) for what needs a server; a plain run
   * goes through NATS only when told (--nats, -s) */
  const char *env_url = getenv("NATS_URL");
  if ((worker || nats.name != NULL || nats.job != NULL) && nats.url == NULL &&
      env_url != NULL && *env_url != '\0')
    nats.url = env_url;
  /* -u is curl's web login: with --nats a NATS password typed there would
   * go to every fetched server, so the ambiguity is refused */
  if (user_flag && nats.url != NULL)
    return usage_error("with --nats, -u/--user is ambiguous: --http-user "
                       "USER:PASSWORD logs in to the fetched web servers, "
                       "--nats-user and --nats-password (or NATS_USER, "
                       "NATS_PASSWORD) to the NATS server");
  if ((worker || nats.name != NULL) && nats.url == NULL)
    return usage_error("--worker and --name need --nats URL");
  if (worker && (optind < argc || file != NULL || serve_mode))
    return usage_error("--worker takes no URLs");
  if (nats.job != NULL && nats.url == NULL)
    return usage_error("--durable needs --nats URL");
  if ((nats.job_status || nats.job_purge) && nats.job == NULL)
    return usage_error("--status and --purge need --durable JOB");
  if ((nats.job_status || nats.job_purge) &&
      (nats.job_status + nats.job_purge > 1 || worker || optind < argc ||
       file != NULL))
    return usage_error("--status and --purge take no URLs, and not both");
#ifndef FANOUT_NATS
  if (nats.url != NULL) {
    fprintf(stderr, "uvp-fanout: this build has no NATS support (--nats)\n");
    return EXIT_USAGE;
  }
#else
  if (nats.url != NULL) { /* credentials and TLS files: said now, once */
    static char shown[1024];
    fanout_url_redact(nats.url, shown, sizeof(shown));
    nats.shown = shown;
    fanout_secret_file_check(
        "--creds", nats.creds != NULL ? nats.creds : getenv("NATS_CREDS"));
    fanout_secret_file_check("--nkey", nats.nkey != NULL ? nats.nkey
                                                         : getenv("NATS_NKEY"));
    fanout_secret_file_check(
        "--tlskey", nats.tlskey != NULL ? nats.tlskey : getenv("NATS_KEY"));
    struct __natsOptions *no = fanout_nats_options("uvp-fanout", &nats);
    if (no == NULL)
      return EXIT_USAGE;
    natsOptions_Destroy(no);
  }
#endif
  nats.retries = (unsigned)nats_retry;
  nats.concurrency = concurrency;

  /* A peer closing while we write must be an error code, not a signal
   * (Windows has no such signal: there it is an error code already). */
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_IGN);
#endif

  uv_loop_t loop;
  int rc = uv_loop_init(&loop);
  if (rc != 0) {
    fprintf(stderr, "uvp-fanout: %s\n", uv_strerror(rc));
    return 1;
  }
  if (serve_mode) {
    int code = serve(&loop, (int)serve_port);
    return uv_loop_close(&loop) == 0 ? code : 1;
  }

  run_t r;
  memset(&r, 0, sizeof(r));
  r.loop = &loop;
  r.job_queued = r.job_held = -1;
  r.json = json;
  r.deadline_ms = deadline_ms;
  r.retries = (unsigned)retries;
  urls_t u = {NULL, 0, 0};
  for (int i = optind; rc == 0 && i < argc; i++)
    rc = urls_add(&u, argv[i]);
  if (rc == 0 && file != NULL) {
    rc = urls_read(&u, file);
    if (rc != 0)
      fprintf(stderr, "uvp-fanout: %s: %s\n", file, uv_strerror(rc));
  }
  if (rc == 0 && u.n == 0 && file == NULL && !worker && !nats.job_status &&
      !nats.job_purge) {
    rc = demo_urls(&r, &u);
    if (!have_timeout)
      timeout_ms = DEMO_TIMEOUT_MS;
  }
  if (rc == 0 && u.n == 0 && file != NULL) {
    fprintf(stderr, "uvp-fanout: %s: no URLs\n", file);
    rc = UV_EINVAL;
  }
  /* The CA file is checked once, here, not in the middle of the fan-out;
   * a CA file that cannot be read stops the run before it starts.
   * Without --cacert, SSL_CERT_FILE names another store, as for curl. */
  int cacert_given = cafile != NULL;
  if (cafile == NULL)
    cafile = getenv("SSL_CERT_FILE");
  if (rc == 0 && cafile != NULL) {
    const char *why = check_cafile(cafile);
    if (why != NULL) {
      fprintf(stderr, "uvp-fanout: %s: %s\n", cafile, why);
      rc = UV_EINVAL;
    }
  }
  /* --trace's file, opened before the run: one that cannot be written
   * stops it, as an unreadable -f does. */
  FILE *trace_out = NULL;
  if (rc == 0 && trace != NULL && (trace_out = fopen(trace, "w")) == NULL) {
    fprintf(stderr, "uvp-fanout: %s: %s\n", trace, strerror(errno));
    rc = UV_EINVAL;
  }
  int explained = rc != 0; /* each failure above said what went wrong */
  r.trace = trace;
  r.trace_out = trace_out;
  r.http.timeout_ms = timeout_ms;
  r.http.connect_timeout_ms = connect_ms;
  r.http.max_body = max_filesize;
  r.http.follow = follow;
  r.http.max_redirects = (long)max_redirs;
  r.http.cafile = cafile;
  if (!cacert_given)
    r.http.capath = getenv("SSL_CERT_DIR");
  if (cafile == NULL && r.http.capath == NULL) {
    /* libcurl's built-in CA directory, if it has one (CURLINFO_CAPATH
     * reads the default on any handle). */
    CURL *probe = curl_easy_init();
    char *capath = NULL;
    r.http.system_capath =
        probe != NULL &&
        curl_easy_getinfo(probe, CURLINFO_CAPATH, &capath) == CURLE_OK &&
        capath != NULL && *capath != '\0';
    curl_easy_cleanup(probe);
  }
  r.http.insecure = insecure;
  r.http.http2 = http2;
  r.http.proxy = proxy;
  r.http.userpwd = userpwd;
  r.http.compressed = compressed;
#ifdef FANOUT_NATS
  if (nats.job != NULL && (nats.job_status || nats.job_purge)) {
    if (r.trace_out != NULL) /* nothing is recorded: no events */
      fclose(r.trace_out);
    r.trace_out = NULL;
    int code = fanout_durable_admin(&r, &nats);
    fanout_nats_shutdown();
    urls_free(&u);
    return uv_loop_close(&loop) == 0 ? code : 1;
  }
  if (worker) {
    int code = nats.job != NULL ? fanout_durable_worker(&r, &nats)
                                : fanout_nats_worker(&r, &nats);
    fanout_nats_shutdown();
    urls_free(&u);
    return uv_loop_close(&loop) == 0 ? code : 1;
  }
#endif
  r.n = u.n;
  r.rows = rc == 0 ? calloc(u.n, sizeof(*r.rows)) : NULL;
  if (rc == 0 && r.rows == NULL)
    rc = UV_ENOMEM;
  for (size_t i = 0; r.rows != NULL && i < u.n; i++) {
    r.rows[i].url = u.items[i];
    r.rows[i].run = &r;
    r.rows[i].http = &r.http;
    r.rows[i].retries = r.retries;
  }

  uvp_promise_t *all = NULL;
  if (rc == 0)
    rc = uvp_ctx_new(&loop, &r.ctx);
  /* For tests of --retry (test-e2e-fanout-tls): the backoffs between
   * attempts on uvp's virtual clock take no real time while no transfer is
   * in flight; transfers still run, and time out, at the real pace. */
  if (rc == 0 && getenv("UVP_FANOUT_VIRTUAL_CLOCK") != NULL)
    rc = uvp_ctx_set_clock(r.ctx, UVP_CLOCK_AUTO);
  if (rc == 0)
    rc = fanout_trace_start(&r);
  if (rc == 0 && nats.url == NULL)
    rc = uvp_curl_new(r.ctx, &r.curl);
  if (rc == 0 && r.curl != NULL) {
    /* Every connection a slot opens may serve its next URL on the same
     * host: as many cached as there are slots, none kept past the run. */
    CURLM *m = uvp_curl_multi(r.curl);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)concurrency);
    if (http2) {
      /* PIPEWAIT alone does not hold a transfer back once a host's first
       * connection multiplexes: libcurl 7.88 then opens a connection for
       * each transfer that finds the open ones full (ConnectionExists
       * waits for a connection still being set up only before the host is
       * known to multiplex), up to one per request past the first 100.
       * At most as many connections per host as -c needs at
       * H2_STREAMS streams each; a transfer past them waits for a stream
       * (libcurl's pending queue).  A host answering HTTP/1.x lifts the
       * cap (record_attempt). */
      curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)H2_STREAMS);
      curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS,
                        (long)((concurrency + H2_STREAMS - 1) / H2_STREAMS));
      r.h2_capped = 1;
    }
  }
  if (rc == 0 && isatty(STDERR_FILENO) &&
      uv_timer_init(&loop, &r.progress_timer) == 0) {
    r.progress = 1;
    r.tty_out = isatty(STDOUT_FILENO);
    r.progress_timer.data = &r;
    uv_unref((uv_handle_t *)&r.progress_timer);
    uv_timer_start(&r.progress_timer, on_progress, PROGRESS_AFTER_MS,
                   PROGRESS_EVERY_MS);
  }
  if (rc == 0) {
    r.start_ns = uv_hrtime();
    uv_update_time(&loop);
    r.deadline_at = uv_now(&loop) + deadline_ms;
    uvp_map_opts_t mo = {.limit = (size_t)concurrency,
                         .on_settle = fanout_on_item};
#ifdef FANOUT_NATS
    if (nats.job != NULL)
      rc = fanout_durable_coord(&r, &nats, &all);
    else if (nats.url != NULL)
      rc = fanout_nats_coord(&r, &nats, &all);
    else
#endif
      rc = uvp_promise_map(r.ctx, r.n, start_item, &r, &mo, &all);
  }
  if (rc == 0) /* --nats: a failed connect rejects it */
    rc = uvp_promise_on(all, UVP_ON_BOTH, on_done, &r, NULL);
  if (rc != 0) {
    if (!explained)
      fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(rc));
    r.exit_code = 1;
    progress_end(&r);
    if (r.curl != NULL)
      uvp_curl_close(r.curl);
    r.curl = NULL;
    if (r.server != NULL)
      demo_server_stop(r.server, NULL, NULL);
  }

  uv_run(&loop, UV_RUN_DEFAULT);

  if (fanout_trace_write(&r) != 0 && r.exit_code == 0)
    r.exit_code = 1;

  /* Teardown in the order libuv wants: promises, context, one more loop
   * run for uvp's handles, then the loop itself. */
  uvp_promise_release(all);
  if (r.ctx != NULL)
    uvp_ctx_close(r.ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
#ifdef FANOUT_NATS
  if (nats.url != NULL)
    fanout_nats_shutdown();
#endif
  for (size_t i = 0; r.rows != NULL && i < r.n; i++) {
    free(r.rows[i].reason);
    free(r.rows[i].final_url);
    free(r.rows[i].worker);
    free(r.rows[i].error_name);
    free(r.rows[i].span); /* begun, never ended: the run stopped early */
  }
  free(r.rows);
  urls_free(&u);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "uvp-fanout: handles left open at exit\n");
    return 1;
  }
  return r.exit_code;
}

/* uvp-fanout: fetch many http:// URLs at once and report every outcome.
 *
 * The whole program is one uvp_promise_map: item i is httpc_get(urls[i]),
 * at most -c of them in flight, and the map's result lists every outcome
 * in input order whatever happened to the others (allSettled-style), so
 * the report can be printed from one handler.  A failed URL is a row, not
 * a reason to stop.
 *
 * Run without URLs it starts the demo server in-process and fans out to
 * each of its endpoints (plus a refused port and an https:// URL): one
 * command shows every kind of outcome.
 *
 * Exit status: 0 the run completed (whatever the URLs answered), 1 the run
 * could not happen (a file unreadable, the server not started, out of
 * memory), 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "demo-server.h"
#include "httpc.h"
#include "uvp.h"

enum { EXIT_USAGE = 2 };

#define DEFAULT_CONCURRENCY 64
/* In the embedded demo /hang never answers: end it well within 2 s. */
#define DEMO_TIMEOUT_MS 1000

typedef struct row_s {
  char *url;
  uint64_t start_ns;
  uint64_t end_ns;
} row_t;

typedef struct run_s {
  uv_loop_t *loop;
  uvp_ctx_t *ctx;
  row_t *rows;
  size_t n;
  httpc_opts_t http;
  uint64_t deadline_ms; /* 0: none */
  uint64_t deadline_at; /* on the loop's clock */
  uint64_t start_ns;
  int json;
  /* live progress, only when stderr is a terminal */
  int progress;
  uint64_t progress_ns;
  size_t settled;
  size_t failed;
  demo_server_t *server; /* the embedded demo, if any */
  int exit_code;
} run_t;

static void usage(FILE *f, const char *prog) {
  fprintf(f,
          "usage: %s [options] [URL...]\n"
          "       %s --serve [PORT]\n"
          "\n"
          "Fetch every http:// URL concurrently and report each outcome: one\n"
          "row per URL in input order (HTTP status, or the error's name),\n"
          "bytes and latency, then a summary with p50/p90/p99 latency.\n"
          "Without URLs, starts a demo server on 127.0.0.1 and fetches each\n"
          "of its endpoints, to show every kind of outcome.\n"
          "\n"
          "  -c N        at most N requests in flight (default %d)\n"
          "  -t MS       per-request timeout: ETIMEDOUT after MS ms\n"
          "              (default none; %d in the demo)\n"
          "  -d MS       overall deadline: requests still in flight after MS\n"
          "              ms end as ETIMEDOUT, those not started yet as\n"
          "              ECANCELED\n"
          "  -f FILE     read URLs from FILE, one per line ('-': stdin;\n"
          "              blank lines and lines starting with # skipped)\n"
          "  --json      JSON lines: one object per URL, then a summary\n"
          "  --serve [PORT]\n"
          "              run only the demo server on 127.0.0.1:PORT (default\n"
          "              0: any free port), print 'listening on "
          "127.0.0.1:PORT'\n"
          "              and serve until SIGINT or SIGTERM\n"
          "  -h, --help  this text\n"
          "\n"
          "A URL succeeds if it answers with a status below 400; 4xx/5xx are\n"
          "HTTP errors, anything else (refused, reset, timeout, malformed\n"
          "response, https://) a transport error.  Latency percentiles are\n"
          "over the URLs that answered with any status.\n"
          "\n"
          "Exit status: 0 the run completed, even if URLs failed; 1 it could\n"
          "not run (unreadable file, server not started, out of memory);\n"
          "2 usage error.\n",
          prog, prog, DEFAULT_CONCURRENCY, DEMO_TIMEOUT_MS);
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
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
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
  free(line);
  if (f != stdin)
    fclose(f);
  return rc;
}

static int parse_ms(const char *s, uint64_t *out) {
  char *end;
  if (*s < '0' || *s > '9')
    return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end != '\0')
    return -1;
  *out = v;
  return 0;
}

/* ---- the report ---------------------------------------------------------- */

static double ms_of_us(uint64_t us) { return (double)us / 1000.0; }

static uint64_t row_latency_us(const row_t *row, const uvp_settled_t *s) {
  if (s->status == 0)
    return ((const httpc_response_t *)s->value)->latency_us;
  return row->end_ns > row->start_ns ? (row->end_ns - row->start_ns) / 1000
                                     : 0;
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

/* A URL from the command line as a JSON string: JSON is UTF-8, a URL need
 * not be (httpc refuses it then, but its row is still printed). */
static json_t *json_url(const char *url) {
  json_t *s = json_string(url);
  if (s == NULL) {
    char *ascii = strdup(url);
    for (char *c = ascii; c != NULL && *c != '\0'; c++)
      if ((unsigned char)*c >= 0x80)
        *c = '?';
    s = ascii != NULL ? json_string(ascii) : NULL;
    free(ascii);
  }
  return s;
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

static void report(run_t *r, const uvp_settled_list_t *list) {
  size_t width = 3;
  for (size_t i = 0; i < r->n; i++)
    if (strlen(r->rows[i].url) > width)
      width = strlen(r->rows[i].url);
  if (!r->json)
    printf("%4s  %-*s  %-15s %9s %11s\n", "#", (int)width, "URL", "RESULT",
           "BYTES", "LATENCY");

  uint64_t *lat = malloc((r->n + 1) * sizeof(*lat));
  size_t nlat = 0, ok = 0, http_err = 0, transport_err = 0;
  for (size_t i = 0; i < list->count; i++) {
    const uvp_settled_t *s = &list->items[i];
    const row_t *row = &r->rows[i];
    const httpc_response_t *res = s->status == 0 ? s->value : NULL;
    uint64_t us = row_latency_us(row, s);
    char result[32];
    if (res != NULL) {
      snprintf(result, sizeof(result), "%d", res->status);
      if (lat != NULL)
        lat[nlat++] = us;
      if (res->status < 400)
        ok++;
      else
        http_err++;
    } else {
      snprintf(result, sizeof(result), "%s", uvp_err_name(s->status));
      transport_err++;
    }
    const char *why = res != NULL ? NULL : httpc_strerror(s->status);
    /* A URL httpc refused says what is wrong with it. */
    if (res == NULL && s->value != NULL &&
        (s->status == UV_EINVAL || s->status == UV_EPROTONOSUPPORT))
      why = s->value;
    if (res == NULL && s->status == UV_ECANCELED && r->deadline_ms != 0)
      why = "not started before the deadline (-d)";

    if (r->json) {
      json_t *o = json_pack("{s:I,s:o,s:s,s:b}", "n", (json_int_t)(i + 1),
                            "url", json_url(row->url), "result", result,
                            "ok", res != NULL && res->status < 400);
      if (res != NULL) {
        json_object_set_new(o, "status", json_integer(res->status));
      } else {
        json_object_set_new(o, "error", json_string(result));
        json_object_set_new(o, "message", json_string(why));
      }
      json_object_set_new(
          o, "bytes", json_integer(res != NULL ? (json_int_t)res->bytes : 0));
      json_object_set_new(o, "latency_ms", json_real(ms_of_us(us)));
      json_line(o);
    } else {
      printf("%4zu  %-*s  %-15s ", i + 1, (int)width, row->url, result);
      if (res != NULL)
        printf("%9zu %8.1f ms\n", res->bytes, ms_of_us(us));
      else /* the reason, in words, after the columns */
        printf("%9s %8.1f ms  %s\n", "-", ms_of_us(us), why);
    }
  }

  uint64_t elapsed_us = (uv_hrtime() - r->start_ns) / 1000;
  uint64_t p50 = 0, p90 = 0, p99 = 0;
  if (nlat > 0) {
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    p50 = percentile(lat, nlat, 50);
    p90 = percentile(lat, nlat, 90);
    p99 = percentile(lat, nlat, 99);
  }
  free(lat);
  size_t failed = http_err + transport_err;
  if (r->json) {
    json_t *o = json_pack(
        "{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "summary", 1, "urls",
        (json_int_t)list->count, "succeeded", (json_int_t)ok, "failed",
        (json_int_t)failed, "http_errors", (json_int_t)http_err,
        "transport_errors", (json_int_t)transport_err, "responses",
        (json_int_t)nlat, "elapsed_ms", ms_of_us(elapsed_us));
    const char *names[] = {"p50_ms", "p90_ms", "p99_ms"};
    uint64_t ps[] = {p50, p90, p99};
    for (int k = 0; k < 3; k++)
      json_object_set_new(o, names[k],
                          nlat > 0 ? json_real(ms_of_us(ps[k])) : json_null());
    json_line(o);
  } else {
    printf("\n%zu URLs in %.2f s: %zu succeeded, %zu failed (%zu HTTP "
           "errors, %zu transport errors)\n",
           list->count, ms_of_us(elapsed_us) / 1000.0, ok, failed, http_err,
           transport_err);
    if (nlat > 0)
      printf("latency over %zu response%s: p50 %.1f ms, p90 %.1f ms, "
             "p99 %.1f ms\n",
             nlat, nlat == 1 ? "" : "s", ms_of_us(p50), ms_of_us(p90),
             ms_of_us(p99));
    else
      printf("latency: no responses\n");
  }
  fflush(stdout);
}

/* ---- the fan-out --------------------------------------------------------- */

static int start_item(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  /* The loop's clock is only updated once per iteration, and the first
   * `limit` items all start before uv_run: refresh it, or a timeout would
   * count from a moment before its request started. */
  uv_update_time(r->loop);
  r->rows[i].start_ns = uv_hrtime();
  httpc_opts_t o = r->http;
  if (r->deadline_ms != 0) {
    /* The deadline is one clock for every request: a request starting
     * late only gets what is left of it. */
    uint64_t now = uv_now(r->loop);
    if (now >= r->deadline_at)
      return UV_ECANCELED; /* never started: the map records it as such */
    uint64_t left = r->deadline_at - now;
    if (o.timeout_ms == 0 || left < o.timeout_ms)
      o.timeout_ms = left;
  }
  return httpc_get(r->ctx, r->rows[i].url, &o, out);
}

static void on_item(void *arg, size_t i, const uvp_outcome_t *outcome) {
  run_t *r = arg;
  uint64_t now = uv_hrtime();
  r->rows[i].end_ns = now;
  r->settled++;
  if (outcome->status < 0 ||
      ((const httpc_response_t *)outcome->value)->status >= 400)
    r->failed++;
  /* A terminal redraws slowly: at most every 50 ms, and the last one. */
  if (r->progress &&
      (now - r->progress_ns > 50 * 1000000ull || r->settled == r->n)) {
    r->progress_ns = now;
    fprintf(stderr, "\r\033[K%zu/%zu done, %zu failed", r->settled, r->n,
            r->failed);
    if (r->settled == r->n)
      fputs("\r\033[K", stderr);
  }
}

static uvp_ret_t on_done(void *arg, const uvp_outcome_t *in) {
  run_t *r = arg;
  if (in->status == 0) {
    report(r, in->value);
  } else {
    fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(in->status));
    r->exit_code = 1;
  }
  /* The demo server is the only handle left that would keep uv_run going;
   * connections of requests still closing end by themselves. */
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
    "/fast", "/slow",  "/big",    "/missing", "/error",
    "/reset", "/hang", "/trickle", "/half",   "/malformed",
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

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"serve", optional_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  uint64_t concurrency = DEFAULT_CONCURRENCY, timeout_ms = 0, deadline_ms = 0;
  int have_timeout = 0, json = 0, serve_mode = 0;
  uint64_t serve_port = 0;
  const char *file = NULL;
  const char *prog = argv[0];
  int c;
  while ((c = getopt_long(argc, argv, "c:t:d:f:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      if (parse_ms(optarg, &concurrency) != 0 || concurrency == 0 ||
          concurrency > 100000) {
        fprintf(stderr, "uvp-fanout: -c wants a number from 1 to 100000\n");
        return EXIT_USAGE;
      }
      break;
    case 't':
      if (parse_ms(optarg, &timeout_ms) != 0 || timeout_ms == 0) {
        fprintf(stderr, "uvp-fanout: -t wants milliseconds (> 0)\n");
        return EXIT_USAGE;
      }
      have_timeout = 1;
      break;
    case 'd':
      if (parse_ms(optarg, &deadline_ms) != 0 || deadline_ms == 0) {
        fprintf(stderr, "uvp-fanout: -d wants milliseconds (> 0)\n");
        return EXIT_USAGE;
      }
      break;
    case 'f':
      file = optarg;
      break;
    case 'j':
      json = 1;
      break;
    case 's':
      serve_mode = 1;
      if (optarg != NULL && (parse_ms(optarg, &serve_port) != 0 ||
                             serve_port > 65535)) {
        fprintf(stderr, "uvp-fanout: --serve wants a port\n");
        return EXIT_USAGE;
      }
      break;
    case 'h':
      usage(stdout, prog);
      return 0;
    default:
      usage(stderr, prog);
      return EXIT_USAGE;
    }
  }
  /* `--serve 8080` as well as `--serve=8080`. */
  if (serve_mode && optind < argc && parse_ms(argv[optind], &serve_port) == 0) {
    if (serve_port > 65535) {
      fprintf(stderr, "uvp-fanout: --serve wants a port\n");
      return EXIT_USAGE;
    }
    optind++;
  }
  if (serve_mode && (optind < argc || file != NULL)) {
    fprintf(stderr, "uvp-fanout: --serve takes no URLs\n");
    return EXIT_USAGE;
  }

  /* A peer closing while we write must be an error code, not a signal. */
  signal(SIGPIPE, SIG_IGN);

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
  r.json = json;
  r.deadline_ms = deadline_ms;
  r.progress = isatty(STDERR_FILENO);
  urls_t u = {NULL, 0, 0};
  for (int i = optind; rc == 0 && i < argc; i++)
    rc = urls_add(&u, argv[i]);
  if (rc == 0 && file != NULL) {
    rc = urls_read(&u, file);
    if (rc != 0)
      fprintf(stderr, "uvp-fanout: %s: %s\n", file, uv_strerror(rc));
  }
  if (rc == 0 && u.n == 0 && file == NULL) {
    rc = demo_urls(&r, &u);
    if (!have_timeout) {
      have_timeout = 1;
      timeout_ms = DEMO_TIMEOUT_MS;
    }
  }
  if (rc == 0 && u.n == 0 && file != NULL) {
    fprintf(stderr, "uvp-fanout: %s: no URLs\n", file);
    rc = UV_EINVAL;
  }
  int explained = rc != 0; /* each failure above said what went wrong */
  r.http.timeout_ms = have_timeout ? timeout_ms : 0;
  r.n = u.n;
  r.rows = rc == 0 ? calloc(u.n, sizeof(*r.rows)) : NULL;
  if (rc == 0 && r.rows == NULL)
    rc = UV_ENOMEM;
  for (size_t i = 0; r.rows != NULL && i < u.n; i++)
    r.rows[i].url = u.items[i];

  uvp_promise_t *all = NULL;
  if (rc == 0)
    rc = uvp_ctx_new(&loop, &r.ctx);
  if (rc == 0) {
    r.start_ns = uv_hrtime();
    uv_update_time(&loop);
    r.deadline_at = uv_now(&loop) + deadline_ms;
    uvp_map_opts_t mo = {.limit = (size_t)concurrency,
                         .on_settle = on_item};
    rc = uvp_promise_map(r.ctx, r.n, start_item, &r, &mo, &all);
  }
  if (rc == 0)
    rc = uvp_promise_then(all, on_done, &r, NULL);
  if (rc != 0) {
    if (!explained)
      fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(rc));
    r.exit_code = 1;
    if (r.server != NULL)
      demo_server_stop(r.server, NULL, NULL);
  }

  uv_run(&loop, UV_RUN_DEFAULT);

  /* Teardown in the order libuv wants: promises, context, one more loop
   * run for uvp's handles, then the loop itself. */
  uvp_promise_release(all);
  if (r.ctx != NULL)
    uvp_ctx_close(r.ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  free(r.rows);
  urls_free(&u);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "uvp-fanout: handles left open at exit\n");
    return 1;
  }
  return r.exit_code;
}

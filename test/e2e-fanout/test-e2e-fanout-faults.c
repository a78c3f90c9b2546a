/* Network faults end to end: uvp-fanout with few requests in flight and
 * short timeouts against this process's own demo server (served by the
 * test's loop while the child runs) and a refused port: each fault gives
 * its own error, the tool exits 0, the deadline splits late requests into
 * ETIMEDOUT and ECANCELED, and a run under valgrind leaks nothing.  Also
 * -f input, the table's width next to a huge URL, --serve, and the header
 * cap against a server whose heads never end (heads_t, below). */
#include "e2e.h"

#include "demo-server.h"

#include "../curl/h2-flood.h"

/* ---- heads: a server of endless response heads --------------------------- */

/* Plain libuv on the test's loop; each connection reads one request and
 * answers by its path, then closes:
 *   /http-lines     a 200 whose head has 200 lines "HTTP/1.1 200 X-Pad:
 *                   <1000 bytes>" (205 KB: under libcurl's own 300 KB
 *                   limit, over uvp-fanout's 64 KiB), then a body "ok"
 *   /informational  4000 answers "HTTP/1.1 100 Continue" (100 KB of
 *                   heads), then a 200 with a body "ok"
 *   anything else   a 200 with a body "ok" and a small head */
typedef struct heads_conn_s {
  uv_tcp_t tcp;
  uv_write_t w;
  char req[4096];
  size_t len;
  char *answer;
} heads_conn_t;

typedef struct heads_s {
  uv_tcp_t listener;
  int port;
} heads_t;

static void heads_conn_closed(uv_handle_t *h) {
  heads_conn_t *c = h->data;
  free(c->answer);
  free(c);
}

static void heads_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, heads_conn_closed);
}

static void heads_alloc(uv_handle_t *h, size_t size, uv_buf_t *b) {
  heads_conn_t *c = h->data;
  (void)size;
  *b = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

static void heads_answer(heads_conn_t *c) {
  static const char tail[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             "Connection: close\r\n\r\nok";
  size_t cap = 300 * 1024, n = 0;
  char *a = malloc(cap);
  assert_non_null(a);
  if (strncmp(c->req, "GET /http-lines ", 16) == 0) {
    n += (size_t)sprintf(a, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 200; i++) {
      n += (size_t)sprintf(a + n, "HTTP/1.1 200 X-Pad: ");
      memset(a + n, 'p', 1000);
      n += 1000;
      n += (size_t)sprintf(a + n, "\r\n");
    }
    n += (size_t)sprintf(a + n, "Content-Length: 2\r\n"
                                "Connection: close\r\n\r\nok");
  } else if (strncmp(c->req, "GET /informational ", 19) == 0) {
    for (int i = 0; i < 4000; i++)
      n += (size_t)sprintf(a + n, "HTTP/1.1 100 Continue\r\n\r\n");
    n += (size_t)sprintf(a + n, "%s", tail);
  } else {
    n += (size_t)sprintf(a, "%s", tail);
  }
  assert_true(n < cap);
  c->answer = a;
  uv_buf_t b = uv_buf_init(a, (unsigned)n);
  if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, heads_written) != 0)
    uv_close((uv_handle_t *)&c->tcp, heads_conn_closed);
}

static void heads_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  heads_conn_t *c = st->data;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)st, heads_conn_closed);
    return;
  }
  c->len += (size_t)n;
  c->req[c->len] = '\0';
  if (strstr(c->req, "\r\n\r\n") != NULL) {
    uv_read_stop(st);
    heads_answer(c);
  } else if (c->len >= sizeof(c->req) - 1) {
    uv_close((uv_handle_t *)st, heads_conn_closed);
  }
}

static void heads_accept(uv_stream_t *l, int status) {
  if (status < 0)
    return;
  heads_conn_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  assert_int_equal(uv_tcp_init(l->loop, &c->tcp), 0);
  c->tcp.data = c;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, heads_conn_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, heads_alloc, heads_read);
}

static void heads_start(uv_loop_t *loop, heads_t *h) {
  struct sockaddr_storage to;
  listen_loopback(loop, &h->listener, 16, heads_accept, h, &to);
  h->port = ntohs(((struct sockaddr_in *)&to)->sin_port);
}

/* ---- the demo server, and the tests -------------------------------------- */

typedef struct env_s {
  demo_server_t *server;
  heads_t *heads;   /* if started: closed with the demo server */
  char base[64];    /* http://127.0.0.1:PORT */
  char port[8];     /* PORT */
  char refused[64]; /* http://127.0.0.1:REFUSED/ */
} env_t;

static void env_start(fixture_t *f, env_t *e) {
  e->heads = NULL;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &e->server), 0);
  snprintf(e->base, sizeof(e->base), "http://127.0.0.1:%d",
           demo_server_port(e->server));
  snprintf(e->port, sizeof(e->port), "%d", demo_server_port(e->server));
  int refused = demo_server_refused_port("127.0.0.1");
  assert_true(refused > 0);
  snprintf(e->refused, sizeof(e->refused), "http://127.0.0.1:%d/", refused);
}

static void env_stop(void *arg) {
  env_t *e = arg;
  demo_server_stop(e->server, NULL, NULL);
  if (e->heads != NULL)
    uv_close((uv_handle_t *)&e->heads->listener, NULL);
}

static char *url(const env_t *e, const char *path) {
  char *u = malloc(strlen(e->base) + strlen(path) + 1);
  assert_non_null(u);
  strcpy(u, e->base);
  strcat(u, path);
  return u;
}

/* Run uvp-fanout (optionally under valgrind) with `opts` then `urls`,
 * serving the demo server meanwhile; parse its JSON report into *rep.
 * Returns the elapsed wall time in ms. */
static double run_fanout(fixture_t *f, env_t *e, const char *valgrind,
                         char **opts, char **urls, report_t *rep) {
  char *argv[64];
  int n = 0;
  if (valgrind != NULL) {
    char *vg[] = {(char *)valgrind, VALGRIND_ARGS};
    for (size_t i = 0; i < sizeof(vg) / sizeof(*vg); i++)
      argv[n++] = vg[i];
  }
  argv[n++] = (char *)fanout_path;
  argv[n++] = "--json";
  for (; *opts != NULL; opts++)
    argv[n++] = *opts;
  for (; *urls != NULL; urls++)
    argv[n++] = *urls;
  argv[n] = NULL;
  assert_true(n < 64);
  uint64_t t0 = uv_hrtime();
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child_with(f, argv, env_stop, e, &keep);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  if (r->exit_status != 0 || r->term_signal != 0)
    fail_msg("exit %d, signal %d:\n%s", (int)r->exit_status, r->term_signal,
             r->err.base);
  parse_report(r->out.base, rep);
  uvp_promise_release(keep);
  return ms;
}

/* A new file of URLs, `dir` a "/tmp/...-XXXXXX" template made into a
 * fresh directory and `path` (128 bytes) its urls.txt. */
static FILE *url_file(char *dir, char *path) {
  assert_non_null(mkdtemp(dir));
  snprintf(path, 128, "%s/urls.txt", dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  return fp;
}

static void url_file_remove(const char *dir, const char *path) {
  assert_int_equal(unlink(path), 0);
  assert_int_equal(rmdir(dir), 0);
}

/* `fmt` with its one %s replaced by `arg`. */
static char *url_fmt(const char *fmt, const char *arg) {
  char *u = NULL;
  assert_true(asprintf(&u, fmt, arg) > 0);
  return u;
}

static void free_urls(char **urls) {
  for (; *urls != NULL; urls++)
    free(*urls);
}

/* Every fault once or twice, two at a time, 1 s per request (ample for
 * /trickle even when this process, which serves it, runs under valgrind). */
static void faults(void **state, const char *valgrind) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char *opts[] = {"-c", "2", "-t", "1000", NULL};
  char *urls[] = {url(&e, "/reset"),
                  url(&e, "/hang"),
                  url(&e, "/half"),
                  url(&e, "/hang?again"),
                  url(&e, "/malformed"),
                  strdup(e.refused),
                  url(&e, "/reset?2"),
                  url(&e, "/trickle"),
                  url(&e, "/fast"),
                  strdup("http://"),
                  strdup("ftp://127.0.0.1/"),
                  url(&e, ""),
                  url(&e, "?x=1#top"),
                  url_fmt("http://[::ffff:127.0.0.1]:%s/fast", e.port),
                  url_fmt("http://user:pw@127.0.0.1:%s/fast", e.port),
                  strdup("http://127.0.0.1:65536/"),
                  NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  double ms = run_fanout(f, &e, valgrind, opts, urls, rep);
  assert_int_equal(rep->nrows, 16);
  expect_error(&rep->rows[0], "ECONNRESET");
  expect_error(&rep->rows[1], "ETIMEDOUT");
  assert_true(jnum(&rep->rows[1], "latency_ms") >= 900);
  expect_error(&rep->rows[2], "EPROTO");
  expect_error(&rep->rows[3], "ETIMEDOUT");
  expect_error(&rep->rows[4], "EPROTO");
  expect_error(&rep->rows[5], "ECONNREFUSED");
  expect_error(&rep->rows[6], "ECONNRESET");
  expect_status(&rep->rows[7], 200, DEMO_TRICKLE_BYTES);
  expect_status(&rep->rows[8], 200, (long)strlen(DEMO_FAST_BODY));
  expect_error(&rep->rows[9], "EINVAL");
  assert_non_null(strstr(jstr(&rep->rows[9], "message"), "host"));
  expect_error(&rep->rows[10], "EINVAL");
  assert_non_null(strstr(jstr(&rep->rows[10], "message"), "\"ftp\""));
  /* Odd but valid: an empty path asks for "/", the demo's index (any
   * other path is not 200), before a query too; the fragment stays
   * home. */
  expect_status(&rep->rows[11], 200, -1);
  expect_status(&rep->rows[12], 200, (long)jnum(&rep->rows[11], "bytes"));
  /* A bracketed IPv6 literal: the IPv4-mapped loopback reaches the demo
   * server on 127.0.0.1, where the kernel has IPv6 sockets at all. */
  int v6 = socket(AF_INET6, SOCK_STREAM, 0);
  if (v6 >= 0) {
    close(v6);
    expect_status(&rep->rows[13], 200, (long)strlen(DEMO_FAST_BODY));
  } else {
    assert_false(jbool(&rep->rows[13], "ok"));
  }
  /* User information in the URL is libcurl's Basic authentication: the
   * demo ignores it and answers. */
  expect_status(&rep->rows[14], 200, (long)strlen(DEMO_FAST_BODY));
  /* A refused URL, with libcurl's message saying why. */
  expect_error(&rep->rows[15], "EINVAL");
  assert_non_null(strstr(jstr(&rep->rows[15], "message"), "Port number"));
  assert_int_equal((int)jnum(&rep->summary, "succeeded"), v6 >= 0 ? 6 : 5);
  assert_int_equal((int)jnum(&rep->summary, "transport_errors"),
                   v6 >= 0 ? 10 : 11);
  /* The tool exits once the timeouts fired: bounded, not hung on /hang. */
  assert_true(ms >= 900);
  if (valgrind == NULL)
    assert_true(ms < 15000);
  free_urls(urls);
  free(rep);
}

static void test_faults(void **state) { faults(state, NULL); }

static void test_faults_valgrind(void **state) {
  const char *vg = find_valgrind();
  if (vg == NULL)
    SKIP_BECAUSE("valgrind not installed, or UVP_E2E_VALGRIND=0");
  faults(state, vg);
}

/* -d: one request at a time, the first hangs past the deadline. */
static void test_deadline(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char *opts[] = {"-c", "1", "-d", "400", NULL};
  char *urls[] = {url(&e, "/hang"), url(&e, "/fast"), url(&e, "/slow"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  double ms = run_fanout(f, &e, NULL, opts, urls, rep);
  assert_int_equal(rep->nrows, 3);
  /* In flight at the deadline: ETIMEDOUT; never started: ECANCELED. */
  expect_error(&rep->rows[0], "ETIMEDOUT");
  assert_true(jnum(&rep->rows[0], "latency_ms") >= 350);
  expect_error(&rep->rows[1], "ECANCELED");
  expect_error(&rep->rows[2], "ECANCELED");
  assert_non_null(strstr(jstr(&rep->rows[1], "message"), "deadline"));
  /* The one the deadline cut says so, and where it was set (the cause
   * column, issue 54); the ones never started were cut by nothing. */
  const char *cause = jstr(&rep->rows[0], "cause");
  if (strncmp(cause, "deadline ", 9) != 0 ||
      strstr(cause, " ms set at ") == NULL || strstr(cause, "main.c:") == NULL)
    fail_msg("row 1's cause: %s", cause);
  assert_null(jfind(&rep->rows[1], "cause"));
  assert_null(jfind(&rep->rows[2], "cause"));
  assert_true(ms >= 350 && ms < 10000);
  free_urls(urls);
  free(rep);
}

/* The header cap (64 KiB, EMSGSIZE) counts every byte of every head a
 * transfer reads: a head of lines beginning with "HTTP/" (issue 51: each
 * reset the count, and only libcurl's 300 KB limit stopped them), and
 * heads of 1xx answers before the final one.  A plain answer from the
 * same server still succeeds. */
static void test_header_cap(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  heads_t heads;
  heads_start(&f->loop, &heads);
  e.heads = &heads;
  char base[64];
  snprintf(base, sizeof(base), "http://127.0.0.1:%d", heads.port);
  char *opts[] = {"-c", "3", "-t", "5000", NULL};
  char *urls[] = {url_fmt("%s/http-lines", base),
                  url_fmt("%s/informational", base), url_fmt("%s/plain", base),
                  NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  run_fanout(f, &e, NULL, opts, urls, rep);
  assert_int_equal(rep->nrows, 3);
  for (int i = 0; i < 2; i++) {
    expect_error(&rep->rows[i], "EMSGSIZE");
    assert_non_null(strstr(jstr(&rep->rows[i], "message"),
                           "response header larger than 65536 bytes"));
  }
  expect_status(&rep->rows[2], 200, 2);
  free_urls(urls);
  free(rep);
}

/* A hostile HTTP/2 server (../curl/h2-flood.h: after the Upgrade to h2c,
 * nothing but WINDOW_UPDATE frames, as fast as it can, for 10 s) kept
 * uvp-fanout inside one call into libcurl for as long as it flooded
 * (issue 51): -d 3000 ended the run after 10 s, and the other URLs waited
 * as long.  The binding's busy limit ends the flooded connection after
 * about 100 ms: its row is ETIMEDOUT within the deadline, the other
 * server's answers (heads_t's plain 200, which ignores the Upgrade; the
 * demo server refuses one with 400) come in time, and the run ends when
 * its last request does. */
static void test_h2_flood(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  heads_t heads;
  heads_start(&f->loop, &heads);
  e.heads = &heads;
  h2_flood_t fl;
  assert_int_equal(h2_flood_start(&fl, FLOOD_WINDOW_UPDATE, 10), 0);
  char flood[64], plain[64];
  snprintf(flood, sizeof(flood), "http://127.0.0.1:%d/", fl.port);
  snprintf(plain, sizeof(plain), "http://127.0.0.1:%d/plain", heads.port);
  char *opts[] = {"--http2", "-c", "4", "-d", "3000", NULL};
  char *urls[] = {strdup(flood), strdup(plain), url_fmt("%s?2", plain), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  double ms = run_fanout(f, &e, NULL, opts, urls, rep);
  h2_flood_join(&fl);
  print_message(
      "run %.1f ms; flood row %s after %.1f ms (%s); the server "
      "flooded %.1f MB in %.0f ms\n",
      ms, jstr(&rep->rows[0], "result"), jnum(&rep->rows[0], "latency_ms"),
      jstr(&rep->rows[0], "message"), (double)fl.flooded / 1e6, fl.flood_ms);
  assert_int_equal(rep->nrows, 3);
  assert_true(fl.connected);
  /* Ended by the busy limit, or (a flood the client caught up with now
   * and then) by the deadline as a call returned: 1 s late at most. */
  expect_error(&rep->rows[0], "ETIMEDOUT");
  assert_true(jnum(&rep->rows[0], "latency_ms") < 3000 + 1500);
  for (int i = 1; i < 3; i++) {
    expect_status(&rep->rows[i], 200, 2);
    assert_true(jnum(&rep->rows[i], "latency_ms") < 3000);
  }
  assert_true(ms < 3000 + 2000);
  free_urls(urls);
  free(rep);
}

/* -f: blank lines and comments skipped, CRLF and blanks trimmed, order
 * kept, and URLs from the command line first. */
static void test_url_file(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char dir[] = "/tmp/uvp-e2e-fanout-XXXXXX", path[128];
  FILE *fp = url_file(dir, path);
  fprintf(fp, "# demo endpoints\n\n  %s/missing\r\n%s/big\n\t\n%s/error  \n",
          e.base, e.base, e.base);
  fclose(fp);
  char *opts[] = {"-f", path, NULL};
  char *urls[] = {url(&e, "/fast"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  run_fanout(f, &e, NULL, opts, urls, rep);
  assert_int_equal(rep->nrows, 4);
  expect_status(&rep->rows[0], 200, (long)strlen(DEMO_FAST_BODY));
  expect_status(&rep->rows[1], 404, 10);
  expect_status(&rep->rows[2], 200, DEMO_BIG_BYTES);
  expect_status(&rep->rows[3], 500, 16);
  char want[96];
  snprintf(want, sizeof(want), "%s/error", e.base);
  assert_string_equal(jstr(&rep->rows[3], "url"), want);
  assert_int_equal((int)jnum(&rep->summary, "http_errors"), 2);
  url_file_remove(dir, path);
  free_urls(urls);
  free(rep);
}

/* Many URLs through few slots: every one is fetched, rows stay in input
 * order although they complete out of order (/big is slower than /fast). */
static void test_many_few_slots(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char dir[] = "/tmp/uvp-e2e-fanout-XXXXXX", path[128];
  FILE *fp = url_file(dir, path);
  for (int i = 0; i < 60; i++)
    fprintf(fp, "%s/%s?i=%d\n", e.base, i % 3 == 0 ? "big" : "fast", i);
  fclose(fp);
  char *opts[] = {"-c", "4", "-t", "10000", "-f", path, NULL};
  char *urls[] = {NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  run_fanout(f, &e, NULL, opts, urls, rep);
  assert_int_equal(rep->nrows, 60);
  for (int i = 0; i < 60; i++) {
    char want[96];
    snprintf(want, sizeof(want), "%s/%s?i=%d", e.base,
             i % 3 == 0 ? "big" : "fast", i);
    assert_string_equal(jstr(&rep->rows[i], "url"), want);
    expect_status(&rep->rows[i], 200,
                  i % 3 == 0 ? DEMO_BIG_BYTES : (long)strlen(DEMO_FAST_BODY));
  }
  assert_int_equal((int)jnum(&rep->summary, "succeeded"), 60);
  assert_int_equal((int)jnum(&rep->summary, "responses"), 60);
  url_file_remove(dir, path);
  free(rep);
}

/* One URL of 100 kB among 25 short ones: the table's URL column is as
 * wide as the short ones need, the long URL is printed whole on its own
 * row, and the output is about the size of its contents (a column
 * padded to the longest URL made 26 rows 2.7 MB). */
static void test_huge_url_table(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char dir[] = "/tmp/uvp-e2e-fanout-XXXXXX", path[128];
  FILE *fp = url_file(dir, path);
  enum { HUGE = 100 * 1000 };
  for (int i = 0; i < 26; i++) {
    fprintf(fp, "%s/fast?i=%d", e.base, i);
    if (i == 13) {
      fputs("&pad=", fp);
      for (int k = 0; k < HUGE; k++)
        fputc('x', fp);
    }
    fputc('\n', fp);
  }
  fclose(fp);
  char *argv[] = {(char *)fanout_path, "-t", "5000", "-f", path, NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child_with(f, argv, env_stop, &e, &keep);
  assert_int_equal(r->exit_status, 0);
  const char *out = r->out.base;
  size_t total = strlen(out), longest_other = 0;
  int rows = 0, huge_rows = 0;
  for (const char *l = out; *l != '\0';) {
    size_t len = strcspn(l, "\n");
    if (len > HUGE) {
      huge_rows++;
      /* Its own cells follow the URL, one space-separated group on. */
      assert_non_null(memmem(l, len, "xxx  ", 5));
    } else if (len > longest_other) {
      longest_other = len;
    }
    if (memmem(l, len, "/fast?i=", 8) != NULL)
      rows++;
    l += len + (l[len] == '\n');
  }
  assert_int_equal(rows, 26);
  assert_int_equal(huge_rows, 1);
  /* A short row: number, URL (about 40), result, bytes, latency. */
  if (longest_other > 120)
    fail_msg("a %zu-character line besides the long URL's:\n%.2000s",
             longest_other, out);
  assert_true(total < HUGE + 26 * 120 + 1000);
  uvp_promise_release(keep);
  url_file_remove(dir, path);
}

/* --serve PORT in the foreground is a server other programs can use; it
 * stops on SIGTERM. */
static void test_serve(void **state) {
  fixture_t *f = *state;
  /* The server's promise is cancelled on purpose, unobserved. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  int port = demo_server_refused_port("127.0.0.1");
  assert_true(port > 0);
  char port_s[16];
  snprintf(port_s, sizeof(port_s), "%d", port);
  char *sargv[] = {(char *)fanout_path, "--serve", port_s, NULL};
  uvp_spawn_opts_t so = {.file = fanout_path, .args = sargv};
  uvp_promise_t *server;
  assert_int_equal(uvp_spawn(f->ctx, &so, &server), 0);
  assert_int_equal(wait_listening(port), 0);

  char fast[64], missing[64], hang[64];
  snprintf(fast, sizeof(fast), "http://127.0.0.1:%d/fast", port);
  snprintf(missing, sizeof(missing), "http://127.0.0.1:%d/missing", port);
  snprintf(hang, sizeof(hang), "http://127.0.0.1:%d/hang", port);
  char *argv[] = {
      (char *)fanout_path, "--json", "-t", "300", fast, missing, hang, NULL};
  uvp_spawn_opts_t co = {.file = fanout_path, .args = argv};
  uvp_promise_t *client;
  assert_int_equal(uvp_spawn(f->ctx, &co, &client), 0);
  /* The server child runs until cancelled: run until the client is done. */
  while (uvp_promise_state(client) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(client), UVP_FULFILLED);
  uvp_process_result_t *r = uvp_promise_value(client);
  assert_int_equal(r->exit_status, 0);
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  parse_report(r->out.base, rep);
  assert_int_equal(rep->nrows, 3);
  expect_status(&rep->rows[0], 200, (long)strlen(DEMO_FAST_BODY));
  expect_status(&rep->rows[1], 404, 10);
  expect_error(&rep->rows[2], "ETIMEDOUT");
  free(rep);
  uvp_promise_release(client);

  /* SIGTERM; the loop ends only once the server process has exited. */
  assert_int_equal(uvp_promise_cancel(server), 0);
  run_loop(f);
  uvp_promise_release(server);
  assert_int_not_equal(connect_once(port), 0); /* nobody listens now */
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-uvp-fanout\n", argv[0]);
    return 2;
  }
  fanout_path = argv[1];
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_faults),          FIXTURE_TEST(test_deadline),
      FIXTURE_TEST(test_url_file),        FIXTURE_TEST(test_many_few_slots),
      FIXTURE_TEST(test_huge_url_table),  FIXTURE_TEST(test_serve),
      FIXTURE_TEST(test_faults_valgrind), FIXTURE_TEST(test_header_cap),
      FIXTURE_TEST(test_h2_flood),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

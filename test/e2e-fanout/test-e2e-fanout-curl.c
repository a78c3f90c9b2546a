/* uvp-fanout's libcurl flags against nginx and tinyproxy started by the
 * test (test/curl/curl-env.h): --http2 (HTTP/2 over TLS, requests
 * multiplexed on one connection, 250 in flight on 3), -x/--proxy (plain and
 * CONNECT), -u user:password, --compressed (and --max-filesize counting the
 * decoded body); what the tool did is checked in nginx's log too.  Exits 77
 * (skipped) when nginx, tinyproxy or the openssl tool is absent. */
#include "../curl/curl-env.h"

/* uvp-fanout --json ARGS, exit 0, the report parsed into *rep. */
static void run_json(fixture_t *f, char **args, report_t *rep) {
  char *argv[96] = {(char *)fanout_path, "--json"};
  int n = 2;
  for (; *args != NULL; args++) {
    assert_true(n < 95);
    argv[n++] = *args;
  }
  argv[n] = NULL;
  uvp_spawn_opts_t o = {.file = argv[0], .args = argv};
  uvp_promise_t *keep;
  assert_int_equal(uvp_spawn(f->ctx, &o, &keep), 0);
  while (uvp_promise_state(keep) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  uvp_process_result_t *r = uvp_promise_value(keep);
  if (r->exit_status != 0 || r->term_signal != 0)
    fail_msg("exit %d, signal %d:\n%s", (int)r->exit_status, r->term_signal,
             r->err.base);
  parse_report(r->out.base, rep);
  uvp_promise_release(keep);
}

static int exit_of(fixture_t *f, char **args) {
  char *argv[16] = {(char *)fanout_path};
  int n = 1;
  for (; *args != NULL; args++)
    argv[n++] = *args;
  argv[n] = NULL;
  uvp_spawn_opts_t o = {.file = argv[0], .args = argv};
  uvp_promise_t *keep;
  assert_int_equal(uvp_spawn(f->ctx, &o, &keep), 0);
  while (uvp_promise_state(keep) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  int code =
      (int)((uvp_process_result_t *)uvp_promise_value(keep))->exit_status;
  uvp_promise_release(keep);
  return code;
}

#define NURLS 40

/* 40 URLs at -c 20 over TLS: --http2 multiplexes them on one connection;
 * without it, HTTP/1.1 on up to 20. */
static void test_http2(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char *ca = cafile();
  char *urls[NURLS];
  for (int i = 0; i < NURLS; i++) {
    char path[64];
    snprintf(path, sizeof(path), "/hello.txt?i=%d", i);
    urls[i] = url("https", e.tls2, path);
  }
  char *args[NURLS + 8] = {"-c", "20", "--cacert", ca, "--http2"};
  for (int i = 0; i < NURLS; i++)
    args[5 + i] = urls[i];
  args[5 + NURLS] = NULL;
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  run_json(f, args, rep);
  assert_int_equal(rep->nrows, NURLS);
  for (int i = 0; i < NURLS; i++)
    expect_status(&rep->rows[i], 200, (long)strlen(HELLO));
  /* The same without --http2. */
  args[4] = "-k"; /* (and -k instead of verifying: accepted too) */
  run_json(f, args, rep);
  for (int i = 0; i < NURLS; i++)
    expect_status(&rep->rows[i], 200, (long)strlen(HELLO));
  env_stop(f, &e);
  assert_int_equal(via_log(&e, e.tls2, "/hello.txt", NULL, NULL), 2 * NURLS);
  /* The first run's 40 lines are HTTP/2 on one connection, the second's
   * HTTP/1.1 on at most 20. */
  char path[128], line[512];
  snprintf(path, sizeof(path), "%s/via.log", e.n.dir);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  int h2 = 0, h1 = 0;
  long h2conn = -1;
  while (fgets(line, sizeof(line), fp) != NULL) {
    long conn;
    if (strstr(line, "HTTP/2.0") != NULL) {
      h2++;
      assert_true(sscanf(line, "%ld", &conn) == 1);
      assert_true(h2conn == -1 || h2conn == conn);
      h2conn = conn;
    } else if (strstr(line, "HTTP/1.1") != NULL) {
      h1++;
    }
  }
  fclose(fp);
  assert_int_equal(h2, NURLS);
  assert_int_equal(h1, NURLS);
  for (int i = 0; i < NURLS; i++)
    free(urls[i]);
  free(ca);
  free(rep);
  nginx_cleanup(&e.n);
}

#define NMANY 1000

/* uvp-fanout ARGS... -f FILE, FILE listing NMANY URLs of `path` on `port`
 * over https://, under ARGS; exit 0 (the report is too long for
 * parse_report: nginx's log says what was answered). */
static void run_many(fixture_t *f, env_t *e, int port, const char *path,
                     char **args) {
  char file[128];
  snprintf(file, sizeof(file), "%s/many-%d.txt", e->n.dir, port);
  FILE *fp = fopen(file, "w");
  assert_non_null(fp);
  for (int i = 0; i < NMANY; i++)
    fprintf(fp, "https://127.0.0.1:%d%s?i=%d\n", port, path, i);
  assert_int_equal(fclose(fp), 0);
  char *argv[15];
  int n = 0;
  for (; *args != NULL; args++)
    argv[n++] = *args;
  argv[n++] = "-f";
  argv[n++] = file;
  argv[n] = NULL;
  assert_int_equal(exit_of(f, argv), 0);
}

/* --http2, 1000 requests with 250 in flight to one host: 3 connections at
 * 100 streams each, not one per request that finds them full (libcurl
 * 7.88 with CURLOPT_PIPEWAIT alone: those queued before the host's first
 * connection multiplexed are released one at a time and may all fit on
 * it, but each started once it does, with 100 streams busy, opened a
 * connection of its own: issue 57).  Against an HTTP/1.1 server every
 * request is answered too. */
static void test_http2_stream_limit(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char *ca = cafile();
  char *args[] = {"-c", "250", "--cacert", ca, "--http2", NULL};
  run_many(f, &e, e.tls2, "/hello.txt", args);
  run_many(f, &e, e.tls1, "/hello.txt", args);
  env_stop(f, &e);
  int conns = 0;
  assert_int_equal(via_log(&e, e.tls2, "/hello.txt", " 200 HTTP/2.0", &conns),
                   NMANY);
  print_message("HTTP/2: %d requests on %d connections\n", NMANY, conns);
  assert_true(conns >= 1 && conns <= 3);
  /* Every request answered over HTTP/1.1 too, on more than the cap's 3
   * connections: it is lifted after the first answer (the requests queued
   * until then are released one per transfer or connection done, at
   * libcurl's pace; those started after it open connections at once). */
  int h1conns = 0;
  assert_int_equal(via_log(&e, e.tls1, "/hello.txt", " 200 HTTP/1.1", &h1conns),
                   NMANY);
  print_message("HTTP/1.1: %d requests on %d connections\n", NMANY, h1conns);
  assert_true(h1conns > 3);
  free(ca);
  nginx_cleanup(&e.n);
}

/* -x: plain requests through tinyproxy (nginx sees its Via) and a CONNECT
 * tunnel for https://; -u: Basic authentication. */
static void test_proxy_and_user(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  start_tinyproxy(f, &e);
  char *ca = cafile(), *proxy = url("http", e.proxy, "");
  char *plain = url("http", e.plain, "/hello.txt"),
       *tls = url("https", e.tls2, "/hello.txt"),
       *priv = url("http", e.plain, "/private/secret.txt");
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *via[] = {"-x", proxy, "--cacert", ca, plain, tls, priv, NULL};
  run_json(f, via, rep);
  assert_int_equal(rep->nrows, 3);
  expect_status(&rep->rows[0], 200, (long)strlen(HELLO));
  expect_status(&rep->rows[1], 200, (long)strlen(HELLO));
  expect_status(&rep->rows[2], 401, -1);
  char *user[] = {"--proxy", proxy, "-u", "user:letmein", priv, NULL};
  run_json(f, user, rep);
  expect_status(&rep->rows[0], 200, (long)strlen("secret\n"));
  char *wrong[] = {"-x", proxy, "--user", "user:nope", priv, NULL};
  run_json(f, wrong, rep);
  expect_status(&rep->rows[0], 401, -1);
  char *bad[] = {"-u", "nocolon", priv, NULL};
  assert_int_equal(exit_of(f, bad), 2);
  env_stop(f, &e);
  assert_int_equal(via_log(&e, e.plain, "/hello.txt", "uvp-test-proxy", NULL),
                   1);
  assert_int_equal(via_log(&e, e.plain, "/private/", "uvp-test-proxy", NULL),
                   3);
  assert_int_equal(via_log(&e, e.tls2, "/hello.txt", "[-]", NULL), 1);
  free(ca);
  free(proxy);
  free(plain);
  free(tls);
  free(priv);
  free(rep);
  nginx_cleanup(&e.n);
}

/* --compressed: nginx gzips, the row counts the decoded bytes, and so
 * does --max-filesize. */
static void test_compressed(void **state) {
  fixture_t *f = *state;
  env_t e;
  env_start(f, &e);
  char *big = url("http", e.plain, "/big.txt");
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *gz[] = {"--compressed", big, NULL};
  run_json(f, gz, rep);
  expect_status(&rep->rows[0], 200, BIG_BYTES);
  char *plain[] = {big, NULL};
  run_json(f, plain, rep);
  expect_status(&rep->rows[0], 200, BIG_BYTES);
  char *capped[] = {"--compressed", "--max-filesize", "128K", big, NULL};
  run_json(f, capped, rep);
  expect_error(&rep->rows[0], "EFBIG");
  assert_non_null(
      strstr(jstr(&rep->rows[0], "message"), "larger than 131072 bytes"));
  env_stop(f, &e);
  /* nginx sent the first one compressed, the second whole (the last
   * field of each line is $body_bytes_sent). */
  char path[128], line[512];
  snprintf(path, sizeof(path), "%s/via.log", e.n.dir);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  long sent[3];
  int n = 0;
  while (n < 3 && fgets(line, sizeof(line), fp) != NULL) {
    const char *last = strrchr(line, ' ');
    assert_non_null(last);
    sent[n++] = strtol(last + 1, NULL, 10);
  }
  fclose(fp);
  assert_int_equal(n, 3);
  assert_true(sent[0] > 0 && sent[0] < BIG_BYTES / 10);
  assert_int_equal(sent[1], BIG_BYTES);
  free(big);
  free(rep);
  nginx_cleanup(&e.n);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-uvp-fanout\n", argv[0]);
    return 2;
  }
  if (access(NGINX, X_OK) != 0 || access(TINYPROXY, X_OK) != 0 ||
      access("/usr/bin/openssl", X_OK) != 0) {
    fprintf(stderr, "nginx, tinyproxy or openssl not installed: skipped\n");
    return 77;
  }
  fanout_path = argv[1];
  nginx_init(&certs);
  nginx_make_certs(&certs);
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_http2),
      FIXTURE_TEST(test_http2_stream_limit),
      FIXTURE_TEST(test_proxy_and_user),
      FIXTURE_TEST(test_compressed),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nginx_cleanup(&certs);
  return rc;
}

/* uvp-fanout run with no URLs: the embedded demo server, every endpoint
 * plus a refused port and an https:// URL on the plain-HTTP demo (a TLS
 * handshake with a server that answers in clear text).  Checks each row's
 * outcome in the JSON lines and in the table, the summary (and its
 * singulars, against a demo server of the test's own), --help, --version,
 * the one line and exit code of usage errors, and a run under valgrind. */
#include "e2e.h"

#include "demo-server.h"

/* Every row of the embedded demo, in its input order. */
static void check_demo_report(const report_t *rep, int under_valgrind) {
  assert_int_equal(rep->nrows, 12);
  expect_status(row_ending(rep, "/fast"), 200, (long)strlen(DEMO_FAST_BODY));
  const jobj_t *slow = row_ending(rep, "/slow");
  expect_status(slow, 200, 5);
  assert_true(jnum(slow, "latency_ms") >= DEMO_SLOW_MS * 0.9);
  expect_status(row_ending(rep, "/big"), 200, DEMO_BIG_BYTES);
  expect_status(row_ending(rep, "/missing"), 404, 10);
  expect_status(row_ending(rep, "/error"), 500, 16);
  expect_error(row_ending(rep, "/reset"), E2E_RESET_RESULT);
  const jobj_t *hang = row_ending(rep, "/hang");
  expect_error(hang, "ETIMEDOUT");
  /* The demo's default timeout is 1000 ms: ended by it, not by luck. */
  assert_true(jnum(hang, "latency_ms") >= 900);
  if (!under_valgrind)
    assert_true(jnum(hang, "latency_ms") < 5000);
  expect_status(row_ending(rep, "/trickle"), 200, DEMO_TRICKLE_BYTES);
  expect_error(row_ending(rep, "/half"), "EPROTO");
  expect_error(row_ending(rep, "/malformed"), "EPROTO");
  /* The refused port is the only URL ending in a bare "/". */
  expect_error(&rep->rows[10], "ECONNREFUSED");
  assert_int_equal(
      strncmp(jstr(&rep->rows[10], "url"), "http://127.0.0.1:", 17), 0);
  const jobj_t *tls = &rep->rows[11];
  expect_error(tls, "ETLS");
  assert_int_equal(strncmp(jstr(tls, "url"), "https://", 8), 0);
  /* libcurl's message: the TLS library's reason for the failed handshake. */
  assert_non_null(strstr(jstr(tls, "message"), E2E_TLS_WORDS));

  const jobj_t *s = &rep->summary;
  assert_int_equal((int)jnum(s, "urls"), 12);
  assert_int_equal((int)jnum(s, "succeeded"), 4);
  assert_int_equal((int)jnum(s, "failed"), 8);
  assert_int_equal((int)jnum(s, "http_errors"), 2);
  assert_int_equal((int)jnum(s, "transport_errors"), 6);
  assert_int_equal((int)jnum(s, "responses"), 6);
  double p50 = jnum(s, "p50_ms"), p90 = jnum(s, "p90_ms"),
         p99 = jnum(s, "p99_ms");
  assert_true(0 <= p50 && p50 <= p90 && p90 <= p99);
  /* Six responses, nearest rank: p90 and p99 are the slowest one, /slow. */
  assert_true(p99 >= DEMO_SLOW_MS * 0.9);
  /* The median is the third of the six responses' own latencies (nearest
   * rank), whichever they are: on a loaded machine (or under valgrind,
   * whose first lookups load NSS modules slowly) a fast endpoint may take
   * longer than /slow's 300 ms, so no fixed bound holds. */
  static const char *const answered[] = {"/fast",    "/slow",  "/big",
                                         "/missing", "/error", "/trickle"};
  double lat[6];
  for (int i = 0; i < 6; i++) {
    double v = jnum(row_ending(rep, answered[i]), "latency_ms");
    int j = i;
    for (; j > 0 && lat[j - 1] > v; j--)
      lat[j] = lat[j - 1];
    lat[j] = v;
  }
  assert_true(p50 - lat[2] < 0.01 && lat[2] - p50 < 0.01);
  assert_true(p99 - lat[5] < 0.01 && lat[5] - p99 < 0.01);
  /* Concurrent: the whole run takes about the longest request, /hang. */
  assert_true(jnum(s, "elapsed_ms") >= 900);
}

static void test_json_rows(void **state) {
  fixture_t *f = *state;
  char *argv[] = {(char *)fanout_path, "--json", NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child(f, argv, &keep);
  if (r->exit_status != 0 || r->term_signal != 0)
    fail_msg("exit %d, signal %d:\n%s", (int)r->exit_status, r->term_signal,
             r->err.base);
  /* stderr is a pipe here: no progress line, nothing else either. */
  assert_string_equal(r->err.base, "");
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  parse_report(r->out.base, rep);
  check_demo_report(rep, 0);
  free(rep);
  uvp_promise_release(keep);
}

/* The line of the table that holds `url_suffix ` (the column pads it). */
static const char *table_line(const char *out, const char *needle, char *line,
                              size_t cap) {
  const char *hit = strstr(out, needle);
  if (hit == NULL)
    fail_msg("no table row with '%s' in:\n%s", needle, out);
  const char *b = hit;
  while (b > out && b[-1] != '\n')
    b--;
  size_t len = strcspn(b, "\n");
  assert_true(len < cap);
  memcpy(line, b, len);
  line[len] = '\0';
  return line;
}

static void expect_cells(const char *out, const char *path, const char *result,
                         const char *bytes) {
  char needle[64], line[512], want[64];
  snprintf(needle, sizeof(needle), "%s ", path);
  table_line(out, needle, line, sizeof(line));
  /* RESULT then BYTES, separated by blanks only. */
  snprintf(want, sizeof(want), " %s ", result);
  const char *cell = strstr(line, want);
  if (cell == NULL)
    fail_msg("row '%s' lacks result %s", line, result);
  cell += strlen(want);
  while (*cell == ' ')
    cell++;
  assert_int_equal(strncmp(cell, bytes, strlen(bytes)), 0);
  assert_int_equal(cell[strlen(bytes)], ' ');
  assert_non_null(strstr(line, " ms"));
}

static void test_table(void **state) {
  fixture_t *f = *state;
  char *argv[] = {(char *)fanout_path, NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child(f, argv, &keep);
  assert_int_equal(r->exit_status, 0);
  const char *out = r->out.base;
  char big[16];
  snprintf(big, sizeof(big), "%d", DEMO_BIG_BYTES);
  /* Header first, then the rows in input order. */
  assert_int_equal(strncmp(out + strspn(out, " "), "#  URL", 6), 0);
  assert_true(strstr(out, "/fast ") < strstr(out, "/slow "));
  assert_true(strstr(out, "/half ") < strstr(out, "/malformed "));
  expect_cells(out, "/fast", "200", "5");
  expect_cells(out, "/slow", "200", "5");
  expect_cells(out, "/big", "200", big);
  expect_cells(out, "/missing", "404", "10");
  expect_cells(out, "/error", "500", "16");
  expect_cells(out, "/reset", E2E_RESET_RESULT, "-");
  expect_cells(out, "/hang", "ETIMEDOUT", "-");
  expect_cells(out, "/trickle", "200", "20");
  expect_cells(out, "/half", "EPROTO", "-");
  expect_cells(out, "/malformed", "EPROTO", "-");
  expect_cells(out, "/fast", "200", "5");
  char line[512];
  assert_non_null(strstr(table_line(out, "ECONNREFUSED", line, sizeof(line)),
                         "Couldn't connect to server"));
  assert_non_null(
      strstr(table_line(out, "https://", line, sizeof(line)), "ETLS"));
  assert_non_null(strstr(out, "12 URLs in "));
  assert_non_null(strstr(out, ": 4 succeeded, 8 failed (2 HTTP errors, 6 "
                              "transport errors)\n"));
  assert_non_null(strstr(out, "latency over 6 responses: p50 "));
  uvp_promise_release(keep);
}

static void expect_exit(fixture_t *f, char **argv, int code,
                        const char *in_stdout, const char *in_stderr) {
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child(f, argv, &keep);
  assert_int_equal(r->exit_status, code);
  if (in_stdout != NULL)
    assert_non_null(strstr(r->out.base, in_stdout));
  if (in_stderr != NULL)
    assert_non_null(strstr(r->err.base, in_stderr));
  uvp_promise_release(keep);
}

/* Exit `code`, stdout beginning with out_start, stderr exactly err. */
static void expect_lines(fixture_t *f, char **argv, int code,
                         const char *out_start, const char *err) {
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child(f, argv, &keep);
  assert_int_equal(r->exit_status, code);
  assert_int_equal(strncmp(r->out.base, out_start, strlen(out_start)), 0);
  assert_string_equal(r->err.base, err);
  uvp_promise_release(keep);
}

#define HINT " (uvp-fanout --help lists the options)\n"

static void test_usage(void **state) {
  fixture_t *f = *state;
  char *p = (char *)fanout_path;
  /* The usage on stdout, whichever way it is asked for. */
  char *help[] = {p, "--help", NULL};
  expect_exit(f, help, 0, "Exit status: 0", NULL);
  /* its name, not the path it was run by (argv[0]) */
  expect_lines(f, help, 0, "usage: uvp-fanout [options] [URL...]\n", "");
  expect_exit(f, help, 0, "  --version ", NULL);
  char *h[] = {p, "-h", NULL};
  expect_lines(f, h, 0, "usage: ", "");
  char version[64];
  snprintf(version, sizeof(version), "uvp-fanout %s\n", uvp_version_string());
  char *v[] = {p, "--version", NULL};
  expect_lines(f, v, 0, version, "");
  /* A usage error: one line on stderr, exit 2. */
  char *bad_opt[] = {p, "--bogus", NULL};
  expect_lines(f, bad_opt, 2, "", "uvp-fanout: unknown option '--bogus'" HINT);
  char *bad_short[] = {p, "-Lz", "http://127.0.0.1:1/", NULL};
  expect_lines(f, bad_short, 2, "", "uvp-fanout: unknown option '-z'" HINT);
  char *no_arg[] = {p, "http://127.0.0.1:1/", "--max-time", NULL};
  expect_lines(f, no_arg, 2, "",
               "uvp-fanout: option '--max-time' needs an argument" HINT);
  char *no_arg_short[] = {p, "-c", NULL};
  expect_lines(f, no_arg_short, 2, "",
               "uvp-fanout: option '-c' needs an argument" HINT);
  char *extra_arg[] = {p, "--json=yes", NULL};
  expect_lines(f, extra_arg, 2, "",
               "uvp-fanout: option '--json' takes no argument" HINT);
  char *ambiguous[] = {p, "--nats-", "3", NULL};
  expect_lines(f, ambiguous, 2, "",
               "uvp-fanout: option '--nats-' is ambiguous" HINT);
  char *bad_c[] = {p, "-c", "0", "http://127.0.0.1:1/", NULL};
  expect_lines(f, bad_c, 2, "",
               "uvp-fanout: -c wants a number from 1 to 100000\n");
  char *bad_t[] = {p, "-t", "soon", "http://127.0.0.1:1/", NULL};
  expect_exit(f, bad_t, 2, NULL, "-t");
  char *serve_urls[] = {p, "--serve", "0", "http://127.0.0.1:1/", NULL};
  expect_exit(f, serve_urls, 2, NULL, "--serve");
  /* Not usage, but the run cannot happen. */
  char *missing[] = {p, "-f", "/nonexistent/urls.txt", NULL};
  expect_exit(f, missing, 1, NULL, "/nonexistent/urls.txt");
}

/* One URL, one HTTP error, one transport error: each count in the
 * singular. */
static void stop_server(void *arg) { demo_server_stop(arg, NULL, NULL); }

static void test_summary_singular(void **state) {
  fixture_t *f = *state;
  demo_server_t *server;
  assert_int_equal(demo_server_start(&f->loop, "127.0.0.1", 0, &server), 0);
  char missing[64], refused[64];
  snprintf(missing, sizeof(missing), "http://127.0.0.1:%d/missing",
           demo_server_port(server));
  int port = demo_server_refused_port("127.0.0.1");
  assert_true(port > 0);
  snprintf(refused, sizeof(refused), "http://127.0.0.1:%d/", port);
  char *one[] = {(char *)fanout_path, missing, NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child_with(f, one, stop_server, server, &keep);
  assert_int_equal(r->exit_status, 0);
  assert_non_null(strstr(r->out.base, "\n1 URL in "));
  assert_non_null(strstr(r->out.base, ": 0 succeeded, 1 failed (1 HTTP error, "
                                      "0 transport errors)\n"));
  assert_non_null(strstr(r->out.base, "latency over 1 response: p50 "));
  uvp_promise_release(keep);
  char *two[] = {(char *)fanout_path, refused, refused, NULL};
  r = run_child(f, two, &keep);
  assert_int_equal(r->exit_status, 0);
  assert_non_null(strstr(r->out.base, "\n2 URLs in "));
  assert_non_null(strstr(r->out.base, ": 0 succeeded, 2 failed (0 HTTP "
                                      "errors, 2 transport errors)\n"));
  uvp_promise_release(keep);
  char *mixed_one[] = {(char *)fanout_path, refused, NULL};
  r = run_child(f, mixed_one, &keep);
  assert_int_equal(r->exit_status, 0);
  assert_non_null(strstr(r->out.base, "(0 HTTP errors, 1 transport error)\n"));
  uvp_promise_release(keep);
}

static void test_valgrind(void **state) {
  fixture_t *f = *state;
  const char *vg = find_valgrind();
  if (vg == NULL)
    SKIP_BECAUSE("valgrind not installed, or UVP_E2E_VALGRIND=0");
  /* Under valgrind the first TLS handshake's setup (OpenSSL's, with
   * libcurl reading the CA bundle when SSL_CERT_FILE names it) holds the
   * loop for seconds, and a machine busy with other builds slows valgrind
   * further (/fast timed out at 4 s, and at 10 s, under a load of 10 on
   * two cores): a 30 s timeout instead of the demo's 1 s. */
  char *argv[] = {(char *)vg, VALGRIND_ARGS, (char *)fanout_path,
                  "--json",   "-t",          "30000",
                  NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_child(f, argv, &keep);
  if (r->exit_status != 0)
    fail_msg("valgrind exit %d:\n%s", (int)r->exit_status, r->err.base);
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  parse_report(r->out.base, rep);
  check_demo_report(rep, 1);
  free(rep);
  uvp_promise_release(keep);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-uvp-fanout\n", argv[0]);
    return 2;
  }
  fanout_path = argv[1];
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_json_rows), FIXTURE_TEST(test_table),
      FIXTURE_TEST(test_usage),     FIXTURE_TEST(test_summary_singular),
      FIXTURE_TEST(test_valgrind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* uvp-fanout over https:// against a real nginx on 127.0.0.1 with
 * certificates made by the test (gen-certs.sh: a test CA, a valid leaf, an
 * expired one, one for another host name): verification with --cacert,
 * each TLS failure as its own outcome, -k, connection reuse, redirects
 * (-L, --max-redirs, http -> https), the header and body caps, --retry on
 * 5xx and refused connections, the connect timeout covering the
 * handshake (and there by default), the progress line on a terminal (a pty of
 * the test's own), and a run under valgrind. Exits 77 (skipped) only when nginx
 * or the openssl tool is absent. */
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <spawn.h>
#include <sys/wait.h>

#include "e2e-nginx.h"

#define LARGE_BYTES (1024 * 1024 + 3)
#define HELLO "hello over tls\n"

static nginx_t certs; /* made once: every test's nginx reads them */

typedef struct ports_s {
  int good, expired, other, plain;
} ports_t;

/* nginx with one TLS server per certificate and a plain one. */
static void start_servers(fixture_t *f, nginx_t *n, ports_t *p) {
  /* nginx is cancelled (SIGTERM) on purpose at the end, unobserved. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  nginx_init(n);
  nginx_write_file(n, "www/hello.txt", 0, HELLO);
  nginx_write_file(n, "www/large.bin", LARGE_BYTES, NULL);
  p->good = free_port();
  p->expired = free_port();
  p->other = free_port();
  p->plain = free_port();
  /* 80 KiB of headers (over httpc's 64 KiB cap) in lines nginx's
   * configuration parser takes. */
  char big[20 * 4200 + 1] = "";
  char value[4001];
  memset(value, 'h', 4000);
  value[4000] = '\0';
  for (int i = 0; i < 20; i++) {
    size_t len = strlen(big);
    snprintf(big + len, sizeof(big) - len, "      add_header X-Big-%02d %s;\n",
             i, value);
  }
  char *servers = NULL;
  assert_true(
      asprintf(
          &servers,
          "  ssl_protocols TLSv1.2 TLSv1.3;\n"
          "  server {\n"
          "    listen 127.0.0.1:%d ssl;\n"
          "    ssl_certificate %s/good.pem;\n"
          "    ssl_certificate_key %s/good.key;\n"
          "    root %%1$s/www;\n"
          "    location = /boom { return 503; }\n"
          "    location = /r1 { return 302 /r2; }\n"
          "    location = /r2 { return 301 /r3?x=1; }\n"
          "    location = /r3 { return 307 /hello.txt; }\n"
          "    location = /loop { return 302 /loop; }\n"
          "    location = /to-plain { return 302 http://127.0.0.1:%d/p; }\n"
          "    location = /bighdr {\n%s      return 200 'small body';\n"
          "    }\n"
          "  }\n"
          "  server {\n"
          "    listen 127.0.0.1:%d ssl;\n"
          "    ssl_certificate %s/expired.pem;\n"
          "    ssl_certificate_key %s/expired.key;\n"
          "    root %%1$s/www;\n"
          "  }\n"
          "  server {\n"
          "    listen 127.0.0.1:%d ssl;\n"
          "    ssl_certificate %s/other.pem;\n"
          "    ssl_certificate_key %s/other.key;\n"
          "    root %%1$s/www;\n"
          "  }\n"
          "  server {\n"
          "    listen 127.0.0.1:%d;\n"
          "    root %%1$s/www;\n"
          "    location = /to-tls { return 301 "
          "https://127.0.0.1:%d/hello.txt; }\n"
          "    location = /p { return 200 'plain\\n'; }\n"
          "  }\n",
          p->good, certs.dir, certs.dir, p->plain, big, p->expired, certs.dir,
          certs.dir, p->other, certs.dir, certs.dir, p->plain, p->good) > 0);
  int ports[] = {p->good, p->expired, p->other, p->plain, 0};
  nginx_start(f, n, servers, ports);
  free(servers);
}

/* `scheme://host/path` with the port put after the host. */
static char *url(int port, const char *host_path) {
  char *u = NULL;
  const char *sep = strstr(host_path, "://");
  assert_non_null(sep);
  const char *slash = strchr(sep + 3, '/');
  assert_non_null(slash);
  assert_true(asprintf(&u, "%.*s:%d%s", (int)(slash - host_path), host_path,
                       port, slash) > 0);
  return u;
}

#define HTTPS(port, path) url((port), "https://127.0.0.1" path)
#define HTTP(port, path) url((port), "http://127.0.0.1" path)

/* Run uvp-fanout with `args` (NULL-terminated; the strings stay the
 * caller's) while the fixture's loop serves nginx's exit notifications;
 * returns its result, owned by *keep. */
static uvp_process_result_t *run_tool(fixture_t *f, const char *valgrind,
                                      char **args, uvp_promise_t **keep) {
  char *argv[64];
  int n = 0;
  if (valgrind != NULL) {
    char *vg[] = {(char *)valgrind, VALGRIND_ARGS};
    for (size_t i = 0; i < sizeof(vg) / sizeof(*vg); i++)
      argv[n++] = vg[i];
  }
  argv[n++] = (char *)fanout_path;
  for (; *args != NULL; args++) {
    assert_true(n < 63);
    argv[n++] = *args;
  }
  argv[n] = NULL;
  uvp_spawn_opts_t o = {.file = argv[0], .args = argv};
  assert_int_equal(uvp_spawn(f->ctx, &o, keep), 0);
  while (uvp_promise_state(*keep) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(*keep), UVP_FULFILLED);
  return uvp_promise_value(*keep);
}

/* The same with --json first, exit 0 required, the report parsed. */
static void run_json(fixture_t *f, const char *valgrind, char **args,
                     report_t *rep) {
  char *argv[64] = {"--json"};
  int n = 1;
  for (; *args != NULL; args++) {
    assert_true(n < 63);
    argv[n++] = *args;
  }
  argv[n] = NULL;
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_tool(f, valgrind, argv, &keep);
  if (r->exit_status != 0 || r->term_signal != 0)
    fail_msg("exit %d, signal %d:\n%s", (int)r->exit_status, r->term_signal,
             r->err.base);
  parse_report(r->out.base, rep);
  /* stderr is a pipe here: no progress line. */
  assert_null(strchr(r->err.base, '\033'));
  uvp_promise_release(keep);
}

static void expect_tls_error(const jobj_t *row, const char *words) {
  expect_error(row, "ETLS");
  const char *msg = jstr(row, "message");
  if (strstr(msg, words) == NULL)
    fail_msg("%s: message '%s' lacks '%s'", jstr(row, "url"), msg, words);
}

static void free_all(char **v) {
  for (; *v != NULL; v++)
    free(*v);
}

static char *ca_path(void) {
  char *p = NULL;
  assert_true(asprintf(&p, "%s/ca.pem", certs.dir) > 0);
  return p;
}

/* Verified against the test CA: good answers, over few connections;
 * expired and wrong-name certificates are ETLS with what is wrong. */
static void verified(void **state, const char *valgrind) {
  fixture_t *f = *state;
  nginx_t n;
  ports_t p;
  start_servers(f, &n, &p);
  char *ca = ca_path();
  char *u[] = {HTTPS(p.good, "/hello.txt"),
               HTTPS(p.good, "/large.bin"),
               HTTPS(p.expired, "/hello.txt"),
               HTTPS(p.other, "/hello.txt"),
               url(p.good, "https://localhost/hello.txt?by-name"),
               HTTPS(p.good, "/nope"),
               HTTPS(p.good, "/hello.txt?2"),
               HTTPS(p.good, "/hello.txt?3"),
               NULL};
  char *args[16] = {"-c", "2", "--cacert", ca, "-m", "20"};
  int na = 6;
  for (char **x = u; *x != NULL; x++)
    args[na++] = *x;
  args[na] = NULL;
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  run_json(f, valgrind, args, rep);
  assert_int_equal(rep->nrows, 8);
  expect_status(&rep->rows[0], 200, (long)strlen(HELLO));
  expect_status(&rep->rows[1], 200, LARGE_BYTES);
  expect_tls_error(&rep->rows[2], "expired");
  expect_tls_error(&rep->rows[3], "target host name '127.0.0.1'");
  expect_status(&rep->rows[4], 200, (long)strlen(HELLO));
  expect_status(&rep->rows[5], 404, -1);
  expect_status(&rep->rows[6], 200, (long)strlen(HELLO));
  expect_status(&rep->rows[7], 200, (long)strlen(HELLO));
  assert_int_equal((int)jnum(&rep->summary, "succeeded"), 5);
  assert_int_equal((int)jnum(&rep->summary, "transport_errors"), 2);
  nginx_stop(f, &n);
  /* Six requests reached the good server (the failed handshakes never
   * got to HTTP), on connections reused: two slots, two hosts (by
   * address and by name), and an idle one of one host may have made room
   * for the other's.  Under a loaded machine the order in which the slots
   * finish varies and libcurl's cache of two may close one more idle
   * connection: at least one request of six is on a reused one. */
  int conns = 0;
  assert_int_equal(nginx_access_log(&n, "/", &conns), 6);
  print_message("6 requests on %d connections\n", conns);
  assert_true(conns >= 2 && conns <= 5);
  free_all(u);
  free(ca);
  free(rep);
  nginx_cleanup(&n);
}

static void test_verified(void **state) { verified(state, NULL); }

static void test_verified_valgrind(void **state) {
  const char *vg = find_valgrind();
  if (vg == NULL)
    SKIP_BECAUSE("valgrind not installed, or UVP_E2E_VALGRIND=0");
  verified(state, vg);
}

/* Without --cacert the system's store does not know the test CA; -k
 * accepts anything. */
static void test_unknown_ca_and_insecure(void **state) {
  fixture_t *f = *state;
  nginx_t n;
  ports_t p;
  start_servers(f, &n, &p);
  char *u[] = {HTTPS(p.good, "/hello.txt"), HTTPS(p.expired, "/hello.txt"),
               HTTPS(p.other, "/hello.txt"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *plain[] = {u[0], NULL};
  run_json(f, NULL, plain, rep);
  assert_int_equal(rep->nrows, 1);
  expect_tls_error(&rep->rows[0], "unable to get local issuer certificate");
  char *insecure[] = {"-k", u[0], u[1], u[2], NULL};
  run_json(f, NULL, insecure, rep);
  assert_int_equal(rep->nrows, 3);
  for (int i = 0; i < 3; i++)
    expect_status(&rep->rows[i], 200, (long)strlen(HELLO));
  nginx_stop(f, &n);
  free_all(u);
  free(rep);
  nginx_cleanup(&n);
}

/* A CA file that cannot be read: the run does not start. */
static void test_bad_cacert(void **state) {
  fixture_t *f = *state;
  char *args[] = {"--cacert", "/nonexistent/ca.pem", "https://127.0.0.1:1/",
                  NULL};
  uvp_promise_t *keep;
  uvp_process_result_t *r = run_tool(f, NULL, args, &keep);
  assert_int_equal(r->exit_status, 1);
  assert_non_null(strstr(r->err.base, "/nonexistent/ca.pem"));
  assert_string_equal(r->out.base, "");
  uvp_promise_release(keep);
  run_loop(f);
}

static const char *final_url(const jobj_t *row) {
  return jstr(row, "final_url");
}

/* -L follows relative and absolute Locations across schemes; without it a
 * 3xx is the answer; --max-redirs bounds the chain. */
static void test_redirects(void **state) {
  fixture_t *f = *state;
  nginx_t n;
  ports_t p;
  start_servers(f, &n, &p);
  char *ca = ca_path();
  char *u[] = {HTTPS(p.good, "/r1"), HTTP(p.plain, "/to-tls"),
               HTTPS(p.good, "/to-plain"), HTTPS(p.good, "/loop"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);

  char *follow[] = {"-L", "--cacert", ca, u[0], u[1], u[2], u[3], NULL};
  run_json(f, NULL, follow, rep);
  assert_int_equal(rep->nrows, 4);
  expect_status(&rep->rows[0], 200, (long)strlen(HELLO));
  assert_int_equal((int)jnum(&rep->rows[0], "redirects"), 3);
  char *want = HTTPS(p.good, "/hello.txt");
  assert_string_equal(final_url(&rep->rows[0]), want);
  expect_status(&rep->rows[1], 200, (long)strlen(HELLO));
  assert_string_equal(final_url(&rep->rows[1]), want);
  free(want);
  expect_status(&rep->rows[2], 200, (long)strlen("plain\n"));
  assert_int_equal((int)jnum(&rep->rows[2], "redirects"), 1);
  expect_error(&rep->rows[3], "ELOOP");
  assert_non_null(strstr(jstr(&rep->rows[3], "message"),
                         "Maximum (50) redirects followed"));

  char *few[] = {"-L", "--max-redirs", "2", "--cacert", ca, u[0], NULL};
  run_json(f, NULL, few, rep);
  expect_error(&rep->rows[0], "ELOOP");
  assert_non_null(
      strstr(jstr(&rep->rows[0], "message"), "Maximum (2) redirects"));

  char *none[] = {"--cacert", ca, u[0], u[1], NULL};
  run_json(f, NULL, none, rep);
  expect_status(&rep->rows[0], 302, -1);
  expect_status(&rep->rows[1], 301, -1);
  assert_null(jfind(&rep->rows[0], "redirects"));

  nginx_stop(f, &n);
  free_all(u);
  free(ca);
  free(rep);
  nginx_cleanup(&n);
}

/* Response headers past 64 KiB and bodies past --max-filesize end the
 * request with their own error; the others are not affected. */
static void test_caps(void **state) {
  fixture_t *f = *state;
  nginx_t n;
  ports_t p;
  start_servers(f, &n, &p);
  char *ca = ca_path();
  char *u[] = {HTTPS(p.good, "/large.bin"), HTTPS(p.good, "/bighdr"),
               HTTPS(p.good, "/hello.txt"), HTTP(p.plain, "/large.bin"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *args[] = {
      "--cacert", ca,  "--max-filesize", "64K", "-c", "1", u[0], u[1], u[2],
      u[3],       NULL};
  run_json(f, NULL, args, rep);
  assert_int_equal(rep->nrows, 4);
  expect_error(&rep->rows[0], "EFBIG");
  assert_non_null(strstr(jstr(&rep->rows[0], "message"), "65536"));
  expect_error(&rep->rows[1], "EMSGSIZE");
  assert_non_null(strstr(jstr(&rep->rows[1], "message"), "header"));
  expect_status(&rep->rows[2], 200, (long)strlen(HELLO));
  expect_error(&rep->rows[3], "EFBIG");
  nginx_stop(f, &n);
  free_all(u);
  free(ca);
  free(rep);
  nginx_cleanup(&n);
}

/* --retry: a 503 is asked again (nginx saw each attempt), a refused port
 * is retried after a growing wait, a good answer is not repeated and a
 * certificate error is not retried.  On uvp's virtual clock
 * (UVP_FANOUT_VIRTUAL_CLOCK): the waits, 200, 400, 800 and 1600 ms each
 * cut by up to half by the jitter (1.5 s at least), take no real time
 * while nothing is in flight. */
static void test_retry(void **state) {
  fixture_t *f = *state;
  nginx_t n;
  ports_t p;
  start_servers(f, &n, &p);
  char *ca = ca_path();
  char *u[] = {HTTPS(p.good, "/boom"), HTTP(free_port(), "/"),
               HTTPS(p.good, "/hello.txt"), HTTPS(p.expired, "/hello.txt"),
               NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *args[] = {"--retry", "4", "--cacert", ca, u[0], u[1], u[2], u[3], NULL};
  uint64_t t0 = uv_hrtime();
  assert_int_equal(setenv("UVP_FANOUT_VIRTUAL_CLOCK", "1", 1), 0);
  run_json(f, NULL, args, rep);
  assert_int_equal(unsetenv("UVP_FANOUT_VIRTUAL_CLOCK"), 0);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  print_message("--retry 4: 1.5 s of waits or more, run in %.0f ms\n", ms);
  assert_int_equal(rep->nrows, 4);
  expect_status(&rep->rows[0], 503, -1);
  assert_int_equal((int)jnum(&rep->rows[0], "attempts"), 5);
  expect_error(&rep->rows[1], "ECONNREFUSED");
  assert_int_equal((int)jnum(&rep->rows[1], "attempts"), 5);
  /* On the real clock each would be 1500 ms at least. */
  assert_true(jnum(&rep->rows[0], "latency_ms") < 1000);
  assert_true(jnum(&rep->rows[1], "latency_ms") < 1000);
  expect_status(&rep->rows[2], 200, (long)strlen(HELLO));
  assert_int_equal((int)jnum(&rep->rows[2], "attempts"), 1);
  expect_tls_error(&rep->rows[3], "expired");
  assert_int_equal((int)jnum(&rep->rows[3], "attempts"), 1);
  assert_int_equal((int)jnum(&rep->summary, "retried"), 2);
  nginx_stop(f, &n);
  assert_int_equal(nginx_access_log(&n, "/boom", NULL), 5);
  free_all(u);
  free(ca);
  free(rep);
  nginx_cleanup(&n);
}

/* A listening socket on 127.0.0.1 that never accepts: connections
 * complete into its backlog and are never answered. */
static int silent_server(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(fd, 16), 0);
  socklen_t alen = sizeof(a);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* A server that accepts connections (the kernel does, into the backlog)
 * but never reads: the TLS handshake never ends, and --connect-timeout,
 * which covers it, ends the request; over plain HTTP the request is sent
 * and -m ends it. */
static void test_timeouts(void **state) {
  fixture_t *f = *state;
  int port;
  int fd = silent_server(&port);
  char *u[] = {HTTPS(port, "/"), HTTP(port, "/"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  char *args[] = {"--connect-timeout", "0.3", "-m", "0.8", u[0], u[1], NULL};
  uint64_t t0 = uv_hrtime();
  run_json(f, NULL, args, rep);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  expect_error(&rep->rows[0], "ETIMEDOUT");
  assert_non_null(
      strstr(jstr(&rep->rows[0], "message"), "SSL connection timeout"));
  double t_tls = jnum(&rep->rows[0], "latency_ms");
  assert_true(t_tls >= 280 && t_tls < 750);
  expect_error(&rep->rows[1], "ETIMEDOUT");
  assert_true(jnum(&rep->rows[1], "latency_ms") >= 780);
  assert_true(ms >= 780 && ms < 10000);
  close(fd);
  free_all(u);
  free(rep);
}

/* No timeout given: a server that never answers the handshake is still
 * given up on, by the default connect timeout (10 s). */
static void test_default_timeout(void **state) {
  fixture_t *f = *state;
  int port;
  int fd = silent_server(&port);
  char *u[] = {HTTPS(port, "/"), NULL};
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  uint64_t t0 = uv_hrtime();
  run_json(f, NULL, u, rep);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  expect_error(&rep->rows[0], "ETIMEDOUT");
  assert_non_null(
      strstr(jstr(&rep->rows[0], "message"), "SSL connection timeout"));
  assert_true(jnum(&rep->rows[0], "latency_ms") >= 9900);
  assert_true(ms >= 9900 && ms < 30000);
  close(fd);
  free_all(u);
  free(rep);
}

#define PTY_CAP 65536         /* more than this on the terminal is a bug */
#define PTY_DEADLINE_MS 20000 /* the run takes about 2.5 s */

/* On a terminal (a pty of the test's own as stderr; stdout a pipe) a run
 * longer than half a second shows a progress line, redrawn only when it
 * changes (at most a few times a second) and erased before the report.
 * Everything is bounded: the bytes read from the terminal, the time the
 * child may take (killed past it). */
static void test_progress_on_terminal(void **state) {
  (void)state;
  int port;
  int sfd = silent_server(&port);
  char *u[] = {HTTP(port, "/a"), HTTP(port, "/b"), NULL};
  int master, slave;
  assert_int_equal(openpty(&master, &slave, NULL, NULL, NULL), 0);
  int out[2];
  assert_int_equal(pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, slave, 2);
  posix_spawn_file_actions_addclose(&fa, master);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  char *argv[] = {(char *)fanout_path, "-t", "2500", u[0], u[1], NULL};
  pid_t pid;
  extern char **environ;
  assert_int_equal(posix_spawn(&pid, fanout_path, &fa, NULL, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(slave);
  close(out[1]);

  /* The terminal's bytes until the child's end closes it (EIO). */
  char *tty = malloc(PTY_CAP + 1);
  assert_non_null(tty);
  size_t got = 0;
  uint64_t t0 = uv_hrtime();
  int timed_out = 0;
  for (;;) {
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    if (ms >= PTY_DEADLINE_MS) {
      timed_out = 1;
      break;
    }
    struct pollfd pfd = {.fd = master, .events = POLLIN};
    int n = poll(&pfd, 1, (int)(PTY_DEADLINE_MS - ms));
    if (n <= 0)
      continue;
    ssize_t r = read(master, tty + got, PTY_CAP - got);
    if (r <= 0)
      break;
    got += (size_t)r;
    if (got == PTY_CAP)
      break;
  }
  tty[got] = '\0';
  if (timed_out || got == PTY_CAP)
    kill(pid, SIGKILL);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  char report[8192];
  ssize_t rn = timed_out || got == PTY_CAP
                   ? 0
                   : read(out[0], report, sizeof(report) - 1);
  report[rn > 0 ? rn : 0] = '\0';
  close(out[0]);
  close(master);
  close(sfd);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  if (timed_out)
    fail_msg("uvp-fanout still running after %d ms", PTY_DEADLINE_MS);
  if (got == PTY_CAP)
    fail_msg("more than %d bytes on the terminal", PTY_CAP);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);

  const char *line = strstr(tty, "0/2 done, 0 failed, 2 in flight, 0 s");
  if (line == NULL)
    fail_msg("no progress line in:\n%s", tty);
  assert_non_null(strstr(tty, "0/2 done, 0 failed, 2 in flight, 1 s"));
  assert_non_null(strstr(tty, "0/2 done, 0 failed, 2 in flight, 2 s"));
  /* Redraws: one per change (0 s, 1 s, 2 s; the two settle together at
   * 2.5 s, when the line goes), each a carriage return and an erase, then
   * one erase at the end: not one per look (every 250 ms, 8 of them). */
  int draws = 0;
  for (const char *p = tty; (p = strstr(p, "\r\033[K")) != NULL; p++)
    draws++;
  if (draws < 4 || draws > 5)
    fail_msg("%d redraws:\n%s", draws, tty);
  assert_true(got >= 4 && strcmp(tty + got - 4, "\r\033[K") == 0);
  /* The report went to stdout, untouched by the progress line. */
  assert_null(strchr(report, '\033'));
  assert_non_null(strstr(report, "ETIMEDOUT"));
  assert_true(ms >= 2400 && ms < PTY_DEADLINE_MS);
  free(tty);
  free_all(u);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-uvp-fanout\n", argv[0]);
    return 2;
  }
  if (access(NGINX, X_OK) != 0 || access("/usr/bin/openssl", X_OK) != 0) {
    fprintf(stderr, "nginx or openssl not installed: skipped\n");
    return 77;
  }
  fanout_path = argv[1];
  nginx_init(&certs);
  nginx_make_certs(&certs);
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_verified),
      FIXTURE_TEST(test_unknown_ca_and_insecure),
      FIXTURE_TEST(test_bad_cacert),
      FIXTURE_TEST(test_redirects),
      FIXTURE_TEST(test_caps),
      FIXTURE_TEST(test_retry),
      FIXTURE_TEST(test_timeouts),
      FIXTURE_TEST(test_default_timeout),
      FIXTURE_TEST(test_progress_on_terminal),
      FIXTURE_TEST(test_verified_valgrind),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  nginx_cleanup(&certs);
  return rc;
}

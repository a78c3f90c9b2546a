/* uvp-fanout against a real nginx over plain HTTP: static files of known
 * sizes, a 404, a `return 500` and a large file; every row must carry the
 * right status and the exact byte count, and the six requests must have
 * gone through nginx on reused connections.  Exits 77 (skipped) only when
 * /usr/sbin/nginx is absent. */
#include "e2e-nginx.h"

#define LARGE_BYTES (3 * 1024 * 1024 + 7) /* several reads, odd size */

static void test_static_files(void **state) {
  fixture_t *f = *state;
  /* nginx is cancelled (SIGTERM) on purpose at the end, unobserved. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  nginx_t n;
  nginx_init(&n);
  nginx_write_file(&n, "www/hello.txt", 0, "hello from nginx\n");
  nginx_write_file(&n, "www/index.html", 0, "<h1>uvp</h1>\n");
  nginx_write_file(&n, "www/large.bin", LARGE_BYTES, NULL);
  int port = free_port();
  char servers[512];
  snprintf(servers, sizeof(servers),
           "  server {\n"
           "    listen 127.0.0.1:%d;\n"
           "    root %%1$s/www;\n"
           "    location = /boom { return 500; }\n"
           "  }\n",
           port);
  int ports[] = {port, 0};
  nginx_start(f, &n, servers, ports);

  char u[6][96];
  const char *paths[] = {"/hello.txt", "/",     "/large.bin",
                         "/nope.txt",  "/boom", "/hello.txt?v=2"};
  for (int i = 0; i < 6; i++)
    snprintf(u[i], sizeof(u[i]), "http://127.0.0.1:%d%s", port, paths[i]);
  char *argv[] = {(char *)fanout_path,
                  "--json",
                  "-c",
                  "3",
                  "-t",
                  "5000",
                  u[0],
                  u[1],
                  u[2],
                  u[3],
                  u[4],
                  u[5],
                  NULL};
  uvp_spawn_opts_t co = {.file = fanout_path, .args = argv};
  uvp_promise_t *client;
  assert_int_equal(uvp_spawn(f->ctx, &co, &client), 0);
  while (uvp_promise_state(client) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(client), UVP_FULFILLED);
  uvp_process_result_t *r = uvp_promise_value(client);
  if (r->exit_status != 0)
    fail_msg("uvp-fanout exit %d:\n%s", (int)r->exit_status, r->err.base);
  report_t *rep = malloc(sizeof(*rep));
  assert_non_null(rep);
  parse_report(r->out.base, rep);
  assert_int_equal(rep->nrows, 6);
  expect_status(&rep->rows[0], 200, (long)strlen("hello from nginx\n"));
  expect_status(&rep->rows[1], 200, (long)strlen("<h1>uvp</h1>\n"));
  expect_status(&rep->rows[2], 200, LARGE_BYTES);
  expect_status(&rep->rows[3], 404, -1);
  assert_true(jnum(&rep->rows[3], "bytes") > 0); /* nginx's error page */
  expect_status(&rep->rows[4], 500, -1);
  expect_status(&rep->rows[5], 200, (long)strlen("hello from nginx\n"));
  assert_int_equal((int)jnum(&rep->summary, "succeeded"), 4);
  assert_int_equal((int)jnum(&rep->summary, "http_errors"), 2);
  assert_int_equal((int)jnum(&rep->summary, "transport_errors"), 0);
  free(rep);
  uvp_promise_release(client);

  nginx_stop(f, &n);
  assert_int_not_equal(connect_once(port), 0);

  /* nginx logged our requests: they really went through it, three at a
   * time on connections kept alive (three at most, one per slot). */
  int conns = 0;
  assert_int_equal(nginx_access_log(&n, NULL, &conns), 6);
  assert_true(conns >= 1 && conns <= 3);
  nginx_cleanup(&n);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PATH-TO-uvp-fanout\n", argv[0]);
    return 2;
  }
  if (access(NGINX, X_OK) != 0) {
    fprintf(stderr, "%s not installed: skipped\n", NGINX);
    return 77;
  }
  fanout_path = argv[1];
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_static_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

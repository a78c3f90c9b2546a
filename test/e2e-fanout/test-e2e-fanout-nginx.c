/* uvp-fanout against a real nginx: a configuration of our own in a temp
 * dir (foreground, one process, logs and pid there, 127.0.0.1 on a free
 * port) serving static files of known sizes, a 404, a `return 500` and a
 * large file; every row must carry the right status and the exact byte
 * count.  Exits 77 (skipped) only when /usr/sbin/nginx is absent. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "e2e.h"

#include "demo-server.h"

#define NGINX "/usr/sbin/nginx"
#define LARGE_BYTES (3 * 1024 * 1024 + 7) /* several reads, odd size */

static char dir[] = "/tmp/uvp-e2e-nginx-XXXXXX";
static int port;

static void write_file(const char *name, size_t size, const char *text) {
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  if (text != NULL) {
    fputs(text, fp);
  } else {
    for (size_t i = 0; i < size; i++)
      fputc('a' + (int)(i % 26), fp);
  }
  assert_int_equal(fclose(fp), 0);
  chmod(path, 0644);
}

static int connect_once(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
  close(fd);
  return rc;
}

static void test_static_files(void **state) {
  fixture_t *f = *state;
  /* nginx is cancelled (SIGTERM) on purpose at the end, unobserved. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);

  char conf[256], www[256], text[2048];
  snprintf(www, sizeof(www), "%s/www", dir);
  assert_int_equal(mkdir(www, 0755), 0);
  chmod(dir, 0755); /* readable whatever user nginx ends up as */
  write_file("www/hello.txt", 0, "hello from nginx\n");
  write_file("www/index.html", 0, "<h1>uvp</h1>\n");
  write_file("www/large.bin", LARGE_BYTES, NULL);
  snprintf(text, sizeof(text),
           "daemon off;\n"
           "master_process off;\n"
           "pid %s/nginx.pid;\n"
           "error_log %s/error.log;\n"
           "events { worker_connections 64; }\n"
           "http {\n"
           "  access_log %s/access.log;\n"
           "  client_body_temp_path %s/body;\n"
           "  proxy_temp_path %s/proxy;\n"
           "  fastcgi_temp_path %s/fastcgi;\n"
           "  uwsgi_temp_path %s/uwsgi;\n"
           "  scgi_temp_path %s/scgi;\n"
           "  default_type application/octet-stream;\n"
           "  server {\n"
           "    listen 127.0.0.1:%d;\n"
           "    root %s;\n"
           "    location = /boom { return 500; }\n"
           "  }\n"
           "}\n",
           dir, dir, dir, dir, dir, dir, dir, dir, port, www);
  write_file("nginx.conf", 0, text);
  snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);

  /* -e: the error log before the configuration is read (the default one
   * under /var/log may not be writable); -p: relative paths in the dir. */
  char elog[256];
  snprintf(elog, sizeof(elog), "%s/error.log", dir);
  char *nargv[] = {NGINX, "-e", elog, "-p", dir, "-c", conf, NULL};
  uvp_spawn_opts_t so = {.file = NGINX, .args = nargv};
  uvp_promise_t *nginx;
  assert_int_equal(uvp_spawn(f->ctx, &so, &nginx), 0);
  int up = -1;
  for (int i = 0; i < 250 && up != 0; i++) {
    up = connect_once();
    if (up != 0)
      usleep(20000);
    if (up != 0 && uv_run(&f->loop, UV_RUN_NOWAIT) == 0 &&
        uvp_promise_state(nginx) != UVP_PENDING)
      break; /* nginx exited: its stderr says why */
  }
  if (up != 0) {
    if (uvp_promise_state(nginx) == UVP_FULFILLED) {
      uvp_process_result_t *r = uvp_promise_value(nginx);
      fail_msg("nginx did not start (exit %d):\n%s", (int)r->exit_status,
               r->err.base);
    }
    fail_msg("nginx did not listen on 127.0.0.1:%d within 5 s", port);
  }

  char u[6][96];
  const char *paths[] = {"/hello.txt", "/", "/large.bin", "/nope.txt",
                         "/boom", "/hello.txt?v=2"};
  for (int i = 0; i < 6; i++)
    snprintf(u[i], sizeof(u[i]), "http://127.0.0.1:%d%s", port, paths[i]);
  char *argv[] = {(char *)fanout_path, "--json", "-c", "3", "-t", "5000",
                  u[0], u[1], u[2], u[3], u[4], u[5], NULL};
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

  /* Stop nginx (SIGTERM); the loop ends once it has exited. */
  assert_int_equal(uvp_promise_cancel(nginx), 0);
  run_loop(f);
  uvp_promise_release(nginx);
  assert_int_not_equal(connect_once(), 0);

  /* nginx logged our requests: they really went through it. */
  char alog[256];
  snprintf(alog, sizeof(alog), "%s/access.log", dir);
  FILE *fp = fopen(alog, "r");
  assert_non_null(fp);
  int lines = 0, ch;
  while ((ch = fgetc(fp)) != EOF)
    lines += ch == '\n';
  fclose(fp);
  assert_int_equal(lines, 6);
}

static void rm_tree(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", path);
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
  if (mkdtemp(dir) == NULL)
    return 1;
  port = demo_server_refused_port("127.0.0.1"); /* free right now */
  if (port <= 0)
    return 1;
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_static_files),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  rm_tree(dir);
  return rc;
}

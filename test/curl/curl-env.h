/* The servers the libcurl tests start on 127.0.0.1 (test-curl-nginx, and
 * uvp-fanout's test-e2e-fanout-curl): one nginx (Debian's 1.22) with
 *   plain  HTTP/1.1, gzip, Basic authentication under /private/
 *   tls1   HTTP/1.1 over TLS
 *   tls2   HTTP/2 over TLS (`listen ... ssl http2`), /slow.bin at 64 KiB/s
 * (certificates made by gen-certs.sh, once per program, in `certs`), and
 * tinyproxy as a forward proxy on request.  nginx logs every request to
 * via.log with its connection, port, protocol and the proxy's Via. */
#ifndef UVP_TEST_CURL_ENV_H
#define UVP_TEST_CURL_ENV_H

#include "../e2e-fanout/e2e-nginx.h"

#define TINYPROXY "/usr/bin/tinyproxy"
#define HELLO "hello from nginx\n"
#define BIG_BYTES (256 * 1024)

static nginx_t certs; /* made once, by main */

typedef struct env_s {
  nginx_t n;
  int plain, tls1, tls2, proxy;
  uvp_promise_t *tinyproxy;
  char dir[64];
} env_t;

static char *cafile(void) {
  char *p = NULL;
  assert_true(asprintf(&p, "%s/ca.pem", certs.dir) > 0);
  return p;
}

static void start_tinyproxy(fixture_t *f, env_t *e) {
  e->proxy = free_port();
  char conf[4096];
  snprintf(conf, sizeof(conf),
           "Port %d\nListen 127.0.0.1\nTimeout 30\nMaxClients 100\n"
           "Allow 127.0.0.1\nViaProxyName \"uvp-test-proxy\"\n"
           "LogFile \"%s/tinyproxy.log\"\nLogLevel Warning\n",
           e->proxy, e->n.dir);
  nginx_write_file(&e->n, "tinyproxy.conf", 0, conf);
  char path[128];
  snprintf(path, sizeof(path), "%s/tinyproxy.conf", e->n.dir);
  char *argv[] = {TINYPROXY, "-d", "-c", path, NULL};
  uvp_spawn_opts_t so = {.file = TINYPROXY, .args = argv};
  assert_int_equal(uvp_spawn(f->ctx, &so, &e->tinyproxy), 0);
  if (wait_listening(e->proxy) != 0)
    fail_msg("tinyproxy did not listen on 127.0.0.1:%d", e->proxy);
}

static void env_start(fixture_t *f, env_t *e) {
  /* The servers are cancelled (SIGTERM) on purpose at the end. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  nginx_init(&e->n);
  nginx_write_file(&e->n, "www/hello.txt", 0, HELLO);
  nginx_write_file(&e->n, "www/big.txt", BIG_BYTES, NULL);
  nginx_write_file(&e->n, "www/slow.bin", 4 * 1024 * 1024, NULL);
  char priv[128];
  snprintf(priv, sizeof(priv), "%s/www/private", e->n.dir);
  assert_int_equal(mkdir(priv, 0755), 0);
  nginx_write_file(&e->n, "www/private/secret.txt", 0, "secret\n");
  nginx_write_file(&e->n, "htpasswd", 0, "user:{PLAIN}letmein\n");
  e->plain = free_port();
  e->tls1 = free_port();
  e->tls2 = free_port();
  char *servers = NULL;
  assert_true(
      asprintf(&servers,
               "  log_format via '$connection $server_port $request_uri "
               "$status $server_protocol [$http_via] $body_bytes_sent';\n"
               "  access_log %%1$s/via.log via;\n"
               "  gzip on;\n"
               "  gzip_types text/plain application/octet-stream;\n"
               "  gzip_min_length 0;\n"
               "  http2_max_concurrent_streams 100;\n"
               "  server {\n"
               "    listen 127.0.0.1:%d;\n"
               "    root %%1$s/www;\n"
               "    location /private/ {\n"
               "      auth_basic \"uvp\";\n"
               "      auth_basic_user_file %%1$s/htpasswd;\n"
               "    }\n"
               "  }\n"
               "  server {\n"
               "    listen 127.0.0.1:%d ssl;\n"
               "    ssl_certificate %s/good.pem;\n"
               "    ssl_certificate_key %s/good.key;\n"
               "    root %%1$s/www;\n"
               "  }\n"
               "  server {\n"
               "    listen 127.0.0.1:%d ssl http2;\n"
               "    ssl_certificate %s/good.pem;\n"
               "    ssl_certificate_key %s/good.key;\n"
               "    root %%1$s/www;\n"
               "    location = /slow.bin { limit_rate 64k; }\n"
               "  }\n",
               e->plain, e->tls1, certs.dir, certs.dir, e->tls2, certs.dir,
               certs.dir) > 0);
  int ports[] = {e->plain, e->tls1, e->tls2, 0};
  nginx_start(f, &e->n, servers, ports);
  free(servers);
  e->tinyproxy = NULL;
}

static void env_stop(fixture_t *f, env_t *e) {
  if (e->tinyproxy != NULL) {
    assert_int_equal(uvp_promise_cancel(e->tinyproxy), 0);
    while (uvp_promise_state(e->tinyproxy) == UVP_PENDING)
      uv_run(&f->loop, UV_RUN_ONCE);
    uvp_promise_release(e->tinyproxy);
  }
  nginx_stop(f, &e->n);
}

/* Lines of via.log (written by nginx as it answers), and over how many
 * connections, for requests to `port` whose URI starts with `prefix`;
 * `has` (may be NULL) must be in each. */
static int via_log(const env_t *e, int port, const char *prefix,
                   const char *has, int *conns) {
  char path[128], line[1024];
  snprintf(path, sizeof(path), "%s/via.log", e->n.dir);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  long seen[512];
  int nseen = 0, lines = 0;
  while (fgets(line, sizeof(line), fp) != NULL) {
    long conn;
    int p;
    char uri[512];
    if (sscanf(line, "%ld %d %511s", &conn, &p, uri) != 3)
      fail_msg("via.log: %s", line);
    if (p != port || strncmp(uri, prefix, strlen(prefix)) != 0)
      continue;
    if (has != NULL && strstr(line, has) == NULL)
      fail_msg("via.log line lacks '%s': %s", has, line);
    lines++;
    int known = 0;
    for (int i = 0; i < nseen; i++)
      known |= seen[i] == conn;
    if (!known && nseen < 512)
      seen[nseen++] = conn;
  }
  fclose(fp);
  if (conns != NULL)
    *conns = nseen;
  return lines;
}

static char *url(const char *scheme, int port, const char *path) {
  char *u = NULL;
  assert_true(asprintf(&u, "%s://127.0.0.1:%d%s", scheme, port, path) > 0);
  return u;
}

#endif

/* A real nginx for the end-to-end tests: a configuration of the test's own
 * in a temp dir (foreground, one process, logs and pid there, 127.0.0.1
 * only), started with uvp_spawn and waited for until its ports listen;
 * and the TLS certificates of gen-certs.sh (a test CA, a valid leaf for
 * 127.0.0.1/localhost, an expired one, one for another name). */
#ifndef E2E_NGINX_H
#define E2E_NGINX_H

#include <sys/stat.h>

#include "e2e.h"

#include "demo-server.h"

#define NGINX "/usr/sbin/nginx"

typedef struct nginx_s {
  char dir[64]; /* the temp dir: nginx.conf, logs, www/, certs */
  uvp_promise_t *proc;
} nginx_t;

/* A port on 127.0.0.1 nothing listens on right now. */
static inline int free_port(void) {
  int port = demo_server_refused_port("127.0.0.1");
  assert_true(port > 0);
  return port;
}

/* dir/name with `size` bytes of a..z, or `text` if not NULL. */
static inline void nginx_write_file(const nginx_t *n, const char *name,
                                    size_t size, const char *text) {
  char path[256];
  snprintf(path, sizeof(path), "%s/%s", n->dir, name);
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

/* A fresh temp dir with an empty www/ (readable whatever user nginx ends
 * up as). */
static inline void nginx_init(nginx_t *n) {
  snprintf(n->dir, sizeof(n->dir), "/tmp/uvp-e2e-nginx-XXXXXX");
  assert_non_null(mkdtemp(n->dir));
  chmod(n->dir, 0755);
  char www[128];
  snprintf(www, sizeof(www), "%s/www", n->dir);
  assert_int_equal(mkdir(www, 0755), 0);
  n->proc = NULL;
}

/* The certificates in n->dir (gen-certs.sh, found beside the test's own
 * source: its path is given by meson as UVP_E2E_GEN_CERTS). */
static inline void nginx_make_certs(const nginx_t *n) {
  const char *script = getenv("UVP_E2E_GEN_CERTS");
  assert_non_null(script);
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "sh '%s' '%s'", script, n->dir);
  if (system(cmd) != 0)
    fail_msg("%s failed", cmd);
}

/* Start nginx with `servers` inside its http {} block (the text may use
 * %1$s for the dir, www/ being the usual root) and wait until every port
 * of `ports` (0-terminated) listens. */
static inline void nginx_start(fixture_t *f, nginx_t *n, const char *servers,
                               const int *ports) {
  char *conf = NULL;
  assert_true(asprintf(&conf,
                       "daemon off;\n"
                       "master_process off;\n"
                       "pid %1$s/nginx.pid;\n"
                       "error_log %1$s/error.log;\n"
                       "events { worker_connections 1024; }\n"
                       "http {\n"
                       "  log_format conns '$connection $connection_requests "
                       "$request_uri $status';\n"
                       "  access_log %1$s/access.log conns;\n"
                       "  client_body_temp_path %1$s/body;\n"
                       "  proxy_temp_path %1$s/proxy;\n"
                       "  fastcgi_temp_path %1$s/fastcgi;\n"
                       "  uwsgi_temp_path %1$s/uwsgi;\n"
                       "  scgi_temp_path %1$s/scgi;\n"
                       "  default_type application/octet-stream;\n",
                       n->dir) > 0);
  char *servers_text = NULL;
  assert_true(asprintf(&servers_text, servers, n->dir) >= 0);
  char *all = NULL;
  assert_true(asprintf(&all, "%s%s}\n", conf, servers_text) > 0);
  nginx_write_file(n, "nginx.conf", 0, all);
  free(conf);
  free(servers_text);
  free(all);

  /* -e: the error log before the configuration is read (the default one
   * under /var/log may not be writable); -p: relative paths in the dir. */
  char conf_path[128], elog[128];
  snprintf(conf_path, sizeof(conf_path), "%s/nginx.conf", n->dir);
  snprintf(elog, sizeof(elog), "%s/error.log", n->dir);
  char *nargv[] = {NGINX, "-e", elog, "-p", n->dir, "-c", conf_path, NULL};
  uvp_spawn_opts_t so = {.file = NGINX, .args = nargv};
  assert_int_equal(uvp_spawn(f->ctx, &so, &n->proc), 0);
  for (const int *p = ports; *p != 0; p++) {
    int up = -1;
    for (int i = 0; i < 250 && up != 0; i++) {
      up = connect_once(*p);
      if (up != 0)
        usleep(20000);
      if (up != 0 && uv_run(&f->loop, UV_RUN_NOWAIT) == 0 &&
          uvp_promise_state(n->proc) != UVP_PENDING)
        break; /* nginx exited: its stderr says why */
    }
    if (up != 0) {
      if (uvp_promise_state(n->proc) == UVP_FULFILLED) {
        uvp_process_result_t *r = uvp_promise_value(n->proc);
        fail_msg("nginx did not start (exit %d):\n%s", (int)r->exit_status,
                 r->err.base);
      }
      fail_msg("nginx did not listen on 127.0.0.1:%d within 5 s", *p);
    }
  }
}

/* Stop nginx (SIGTERM, cancelled on purpose: the fixture's unhandled hook
 * must ignore it) and wait for it to exit. */
static inline void nginx_stop(fixture_t *f, nginx_t *n) {
  assert_int_equal(uvp_promise_cancel(n->proc), 0);
  while (uv_run(&f->loop, UV_RUN_ONCE) != 0 &&
         uvp_promise_state(n->proc) == UVP_PENDING)
    ;
  run_loop(f);
  uvp_promise_release(n->proc);
  n->proc = NULL;
}

/* How many requests for URIs starting with `uri_prefix` (NULL: any) the
 * access log has ("CONNECTION REQUESTS URI STATUS" lines), and in
 * *distinct (may be NULL) over how many connections. */
static inline int nginx_access_log(const nginx_t *n, const char *uri_prefix,
                                   int *distinct) {
  char path[128], line[512];
  snprintf(path, sizeof(path), "%s/access.log", n->dir);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  long seen[1024];
  int nseen = 0, lines = 0;
  while (fgets(line, sizeof(line), fp) != NULL) {
    long conn, reqs;
    char uri[256];
    int status;
    if (sscanf(line, "%ld %ld %255s %d", &conn, &reqs, uri, &status) != 4)
      fail_msg("access log line: %s", line);
    if (uri_prefix != NULL && strncmp(uri, uri_prefix, strlen(uri_prefix)))
      continue;
    lines++;
    int known = 0;
    for (int i = 0; i < nseen; i++)
      known |= seen[i] == conn;
    if (!known && nseen < 1024)
      seen[nseen++] = conn;
  }
  fclose(fp);
  if (distinct != NULL)
    *distinct = nseen;
  return lines;
}

static inline void nginx_cleanup(const nginx_t *n) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", n->dir);
}

#endif

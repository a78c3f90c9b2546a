/* seed: the scaffolding of the seed examples (see seed.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "seed.h"

void must(int rc) {
  if (rc != 0) {
    fprintf(stderr, "seed: %s\n", uvp_strerror(rc));
    exit(1);
  }
}

/* ---- HTTP ---------------------------------------------------------------- */

static uvp_ret_t check_status(void *arg, const uvp_outcome_t *in) {
  const httpc_response_t *res = in->value;
  (void)arg;
  if (res->status < 400)
    return uvp_ret_pass();
  char *why = malloc(16);
  if (why == NULL)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  snprintf(why, 16, "HTTP %d", res->status);
  return uvp_ret_reject(UV_EREMOTEIO, why, free);
}

int seed_fetch(seed_t *s, int port, const char *path, uvp_promise_t **out) {
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port ? port : s->port,
           path);
  httpc_opts_t o = {.keep = 64};
  uvp_promise_t *res;
  int rc = httpc_get(s->ctx, url, &o, &res);
  if (rc != 0)
    return rc;
  return uvp_promise_then_take(res, check_status, NULL, out); /* holds res */
}

const char *seed_describe(int status, const void *value, char *buf,
                          size_t size) {
  if (status == 0 && value == NULL) {
    snprintf(buf, size, "pending");
  } else if (status == 0) {
    const httpc_response_t *res = value;
    size_t line = strcspn(res->body, "\n");
    snprintf(buf, size, "%d %.*s", res->status, (int)line, res->body);
  } else {
    snprintf(buf, size, "%s",
             value != NULL ? (const char *)value : uvp_err_name(status));
  }
  return buf;
}

void seed_serve(seed_t *s, int port) {
  must(demo_server_start(s->loop, "127.0.0.1", port, &s->servers[1]));
}

/* ---- files --------------------------------------------------------------- */

const char *seed_path(seed_t *s, const char *name, char *buf, size_t size) {
  snprintf(buf, size, "%s/%s", s->dir, name);
  return buf;
}

void seed_write(seed_t *s, const char *name, const char *text) {
  if (s->dir[0] == '\0') {
    snprintf(s->dir, sizeof(s->dir), "/tmp/uvp-seed-XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
      perror("seed: mkdtemp");
      exit(1);
    }
  }
  char path[128];
  FILE *f = fopen(seed_path(s, name, path, sizeof(path)), "w");
  if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static void remove_dir(seed_t *s) {
  if (s->dir[0] == '\0')
    return;
  DIR *d = opendir(s->dir);
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
    char path[512];
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      unlink(seed_path(s, e->d_name, path, sizeof(path)));
  }
  if (d != NULL)
    closedir(d);
  rmdir(s->dir);
}

uint64_t seed_start(seed_t *s) {
  uv_update_time(s->loop);
  return uv_hrtime();
}

double seed_ms_since(uint64_t start_ns) {
  return (double)(uv_hrtime() - start_ns) / 1e6;
}

/* ---- main ---------------------------------------------------------------- */

/* The work is over: the servers are what keeps the loop running. */
static uvp_ret_t stop_servers(void *arg, const uvp_outcome_t *in) {
  seed_t *s = arg;
  if (in->status != 0)
    fprintf(stderr, "seed: failed: %s\n", uvp_strerror(in->status));
  for (int i = 0; i < 2; i++)
    if (s->servers[i] != NULL)
      demo_server_stop(s->servers[i], NULL, NULL);
  return uvp_ret_value(NULL, NULL);
}

int seed_main(int argc, char **argv, void (*setup)(seed_t *s),
              uvp_fiber_fn fibers, seed_handlers_fn handlers) {
  int with_fibers = argc >= 2 && strcmp(argv[1], "fibers") == 0;
  int virtual_clock = argc == 3 && strcmp(argv[2], "virtual-clock") == 0;
  if (argc < 2 || argc > 3 || (argc == 3 && !virtual_clock) ||
      (!with_fibers && strcmp(argv[1], "handlers") != 0)) {
    fprintf(stderr, "usage: %s fibers|handlers [virtual-clock]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  uv_loop_t loop;
  seed_t s = {.loop = &loop};
  must(uv_loop_init(&loop));
  must(uvp_ctx_new(&loop, &s.ctx));
  if (virtual_clock)
    must(uvp_ctx_set_clock(s.ctx, UVP_CLOCK_AUTO));
  must(demo_server_start(&loop, "127.0.0.1", 0, &s.servers[0]));
  s.port = demo_server_port(s.servers[0]);
  if (setup != NULL)
    setup(&s);

  uvp_promise_t *done;
  if (with_fibers)
    must(uvp_fiber_spawn(s.ctx, fibers, &s, NULL, &done));
  else
    must(handlers(&s, &done));
  must(uvp_promise_on(done, UVP_ON_BOTH, stop_servers, &s, NULL));
  uv_run(&loop, UV_RUN_DEFAULT);

  int status = uvp_promise_state(done) == UVP_FULFILLED ? 0 : 1;
  uvp_promise_release(done);
  uvp_ctx_close(s.ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* close callbacks of uvp's handles */
  remove_dir(&s);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "seed: handles left open at exit\n");
    return 1;
  }
  return status;
}

/* uvp-trace merge on two processes' worth of recorder files made here:
 * two uvp contexts, each on a loop thread of its own, exchange real
 * requests over TCP on 127.0.0.1 (the client's span sent as traceparent,
 * served under a SERVER span whose parent it is), and each writes its
 * recorder file.  As they are, the files are one process's: one clock,
 * every request paired.  With the server's file given another pid and a
 * wall clock made exact (the two contexts share CLOCK_MONOTONIC, so what
 * each file says its wall clock minus its monotonic clock was gives the
 * error), the merge must pair every request across the two "processes"
 * and keep the server's wall clock, which fits every request.  Then the
 * server's file with every ts moved by a known amount: the wall clock no
 * longer fits, and the offset found by the requests is that amount,
 * within its bound. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "trace-files.h"
#include "uvp.h"

enum { REQUESTS = 20 };
#define SHIFT_US 2500000.0 /* 2.5 s, the server's clock moved by this */

/* ---- the two sides ------------------------------------------------------ */

typedef struct side_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_tcp_t listener, conn;
  uv_connect_t connect;
  uv_write_t write;
  char out[UVP_TRACEPARENT_LEN + 2];
  char in[256];
  size_t in_len;
  uvp_span_t span; /* the request in flight (client), or being served */
  int done, served;
  const char *file;
  int port;
  uv_sem_t *listening;
} side_t;

static void write_recorder(side_t *s) {
  FILE *f = fopen(s->file, "w");
  assert_non_null(f);
  uvp_record_opts_t opts = {.format = UVP_RECORD_JSON, .stream = f};
  assert_true(uvp_ctx_recorder_write(s->ctx, &opts) > 0); /* events written */
  assert_int_equal(fclose(f), 0);
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  side_t *s = h->data;
  (void)size;
  *buf = uv_buf_init(s->in + s->in_len, (unsigned)(sizeof s->in - s->in_len));
}

static void send_line(side_t *s, const char *line, uv_write_cb cb) {
  snprintf(s->out, sizeof s->out, "%s\n", line);
  uv_buf_t b = uv_buf_init(s->out, (unsigned)strlen(s->out));
  assert_int_equal(uv_write(&s->write, (uv_stream_t *)&s->conn, &b, 1, cb), 0);
}

/* Server: a line is a traceparent, served under a SERVER span, which ends
 * just before the reply is written, as NTP reads its transmit time: ended
 * after (in the write's callback, or even just after uv_write, if the
 * thread is preempted there), its end may come after the client has read
 * the reply, and a service must lie inside its request for the merge's
 * bound to hold. */
static void on_replied(uv_write_t *w, int status) {
  side_t *s = w->handle->data;
  assert_int_equal(status, 0);
  s->served++;
}

static void server_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  side_t *s = st->data;
  (void)buf;
  if (n < 0) { /* the client is done: write the file, close */
    write_recorder(s);
    uv_close((uv_handle_t *)&s->conn, NULL);
    uv_close((uv_handle_t *)&s->listener, NULL);
    return;
  }
  s->in_len += (size_t)n;
  char *nl = memchr(s->in, '\n', s->in_len);
  if (nl == NULL)
    return;
  uvp_tracectx_t incoming;
  assert_int_equal(uvp_tracectx_parse(s->in, (size_t)(nl - s->in), &incoming),
                   0);
  assert_int_equal(
      uvp_span_begin(s->ctx, &s->span, "serve", UVP_SPAN_SERVER, &incoming, 0),
      0);
  s->in_len = 0;
  assert_int_equal(uvp_span_end(s->ctx, &s->span, 0), 0);
  send_line(s, "ok", on_replied);
}

static void on_connection(uv_stream_t *l, int status) {
  side_t *s = l->data;
  assert_int_equal(status, 0);
  assert_int_equal(uv_tcp_init(&s->loop, &s->conn), 0);
  s->conn.data = s;
  assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
  assert_int_equal(
      uv_read_start((uv_stream_t *)&s->conn, on_alloc, server_read), 0);
}

/* Client: one request at a time, each a new trace's CLIENT span. */
static void on_sent(uv_write_t *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
}

static void next_request(side_t *s) {
  char tp[UVP_TRACEPARENT_LEN + 1];
  assert_int_equal(uvp_span_begin(s->ctx, &s->span, "request", UVP_SPAN_CLIENT,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_tracectx_format(&s->span.tc, tp), 0);
  send_line(s, tp, on_sent);
}

static void client_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  side_t *s = st->data;
  (void)buf;
  assert_true(n >= 0);
  s->in_len += (size_t)n;
  if (memchr(s->in, '\n', s->in_len) == NULL)
    return;
  s->in_len = 0;
  assert_int_equal(uvp_span_end(s->ctx, &s->span, 0), 0);
  if (++s->done < REQUESTS) {
    next_request(s);
    return;
  }
  write_recorder(s);
  uv_close((uv_handle_t *)&s->conn, NULL);
}

static void on_connected(uv_connect_t *c, int status) {
  side_t *s = c->handle->data;
  assert_int_equal(status, 0);
  assert_int_equal(
      uv_read_start((uv_stream_t *)&s->conn, on_alloc, client_read), 0);
  next_request(s);
}

static void side_open(side_t *s, const char *file) {
  s->file = file;
  assert_int_equal(uv_loop_init(&s->loop), 0);
  assert_int_equal(uvp_ctx_new(&s->loop, &s->ctx), 0);
  assert_int_equal(uvp_ctx_set_recorder(s->ctx, 1 << 20, UVP_RECORD_ALL), 0);
}

static void side_close(side_t *s) {
  assert_int_equal(uvp_ctx_close(s->ctx), 0);
  assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&s->loop), 0);
}

static void server_thread(void *arg) {
  side_t *s = arg;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound;
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &addr), 0);
  assert_int_equal(uv_tcp_init(&s->loop, &s->listener), 0);
  s->listener.data = s;
  assert_int_equal(uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 4, on_connection), 0);
  assert_int_equal(
      uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len), 0);
  s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  uv_sem_post(s->listening);
  assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
}

static void client_thread(void *arg) {
  side_t *s = arg;
  struct sockaddr_in addr;
  assert_int_equal(uv_ip4_addr("127.0.0.1", s->port, &addr), 0);
  assert_int_equal(uv_tcp_init(&s->loop, &s->conn), 0);
  s->conn.data = s;
  assert_int_equal(uv_tcp_connect(&s->connect, &s->conn,
                                  (struct sockaddr *)&addr, on_connected),
                   0);
  assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
}

/* ---- the merge, as a user runs it ---------------------------------------- */

static json_t *merge(const char *a, const char *b, const char *out) {
  int rc = run_trace("merge -o '%s' client='%s' server='%s'", out, a, b);
  if (rc != 0)
    fail_msg("uvp-trace merge: exit %d: %s", rc, printed("stderr"));
  return load_json(out);
}

/* Every request's flow from the client (pid 1) to the server (pid 2),
 * "s" and "f" paired by id, the service after the request began within
 * the bound; returns the server's entry of otherData.processes. */
static json_t *check_merged(json_t *doc, size_t pairs, const char *how,
                            double *offset, double *bound) {
  json_t *events = json_object_get(doc, "traceEvents"), *e;
  size_t i, starts = 0, finishes = 0;
  json_array_foreach(events, i, e) {
    const char *cat = json_string_value(json_object_get(e, "cat"));
    const char *ph = json_string_value(json_object_get(e, "ph"));
    if (cat == NULL || strcmp(cat, "request") != 0)
      continue;
    json_int_t pid = json_integer_value(json_object_get(e, "pid"));
    if (strcmp(ph, "s") == 0) {
      assert_int_equal(pid, 1);
      starts++;
    } else {
      assert_string_equal(ph, "f");
      assert_int_equal(pid, 2);
      finishes++;
    }
  }
  assert_int_equal(starts, REQUESTS);
  assert_int_equal(finishes, REQUESTS);
  json_t *other = json_object_get(doc, "otherData");
  assert_int_equal(json_integer_value(json_object_get(other, "requests")),
                   REQUESTS);
  assert_int_equal(json_integer_value(json_object_get(other, "clock_pairs")),
                   pairs);
  assert_int_equal(json_integer_value(json_object_get(other, "inconsistent")),
                   0);
  json_t *server = json_array_get(json_object_get(other, "processes"), 1);
  assert_string_equal(json_string_value(json_object_get(server, "name")),
                      "server");
  assert_string_equal(json_string_value(json_object_get(server, "aligned_by")),
                      how);
  *offset = json_number_value(json_object_get(server, "offset_us"));
  *bound = json_number_value(json_object_get(server, "bound_us"));
  assert_true(*bound >= 0 && *bound < 1e6);
  return server;
}

static void test_merge_two_contexts(void **state) {
  (void)state;
  char a[128], b[128], b1[128], b2[128], out[128], out2[128];
  snprintf(a, sizeof a, "%s/client.json", dir);
  snprintf(b, sizeof b, "%s/server.json", dir);
  snprintf(b1, sizeof b1, "%s/server-process.json", dir);
  snprintf(b2, sizeof b2, "%s/server-shifted.json", dir);
  snprintf(out, sizeof out, "%s/merged.json", dir);
  snprintf(out2, sizeof out2, "%s/merged-shifted.json", dir);
  uv_sem_t listening;
  assert_int_equal(uv_sem_init(&listening, 0), 0);
  side_t client = {0}, server = {.listening = &listening};
  side_open(&server, b);
  side_open(&client, a);
  uv_thread_t ts, tc;
  assert_int_equal(uv_thread_create(&ts, server_thread, &server), 0);
  uv_sem_wait(&listening);
  client.port = server.port;
  assert_int_equal(uv_thread_create(&tc, client_thread, &client), 0);
  assert_int_equal(uv_thread_join(&tc), 0);
  assert_int_equal(uv_thread_join(&ts), 0);
  uv_sem_destroy(&listening);
  assert_int_equal(client.done, REQUESTS);
  assert_int_equal(server.served, REQUESTS);
  side_close(&client);
  side_close(&server);

  /* The two files as one process's (they are): one clock, no clock
   * evidence needed, each request still paired. */
  double offset, bound;
  json_t *doc = merge(a, b, out);
  json_t *proc = check_merged(doc, 0, "reference", &offset, &bound);
  assert_string_equal(
      json_string_value(json_object_get(proc, "same_process_as")), "client");
  assert_true(offset == 0 && bound == 0);
  json_decref(doc);

  /* The server's file as another process's, its wall clock set exact
   * (as one synchronised to well under a request's round trip is): it
   * fits every request's interval, and is kept, not replaced by the best
   * request's midpoint. */
  long long pid = (long long)getpid() + 1;
  int64_t gap = clock_gap_ns(a, b);
  rewrite(b, b1, 0, -gap, pid);
  assert_true(clock_gap_ns(a, b1) == 0);
  doc = merge(a, b1, out);
  check_merged(doc, REQUESTS, "wall clock, within the bounds", &offset, &bound);
  print_message("offset %.3f us, bound %.3f us\n", offset, bound);
  assert_true(offset == 0);
  json_decref(doc);

  /* Its ts moved by 2.5 s: the wall clock no longer fits, the requests
   * place it, within the bound of the true offset, 2.5 s. */
  rewrite(b, b2, SHIFT_US, -gap, pid);
  double offset2, bound2;
  doc = merge(a, b2, out2);
  check_merged(doc, REQUESTS, "requests", &offset2, &bound2);
  print_message("shifted by %.0f us: offset %.3f us, bound %.3f us\n", SHIFT_US,
                offset2, bound2);
  assert_true(fabs(offset2 - SHIFT_US) <= bound2 + 2e-3);
  json_decref(doc);
  const char *files[] = {a, b, b1, b2, out, out2};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
    assert_int_equal(unlink(files[i]), 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s UVP_TRACE\n", argv[0]);
    return 2;
  }
  trace_tool = argv[1];
  if (trace_dir_make("/tmp/uvp-trace-merge-XXXXXX") != 0) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_merge_two_contexts),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  trace_dir_remove();
  return rc;
}

/* uvp-trace merge on recorder files of contexts made here, on two loops
 * of this thread (run in turns), each file then given a pid of its own
 * where it stands for another process:
 *
 * - calls between loops: the "call" flow, whose id is the same in the
 *   caller's file and the target's (one process), pairs after the merge;
 * - messages (PRODUCER span, CONSUMER span under it) with the consumer's
 *   wall clock 3 s behind: placed so that every delivery follows its
 *   publish, said to be placed by messages; a file nothing links is said
 *   to be unaligned, in the table, the otherData and the picture;
 * - a wall clock that fits every request is kept, and two files of one
 *   process get one offset;
 * - bad input: wall_origin_ns = INT64_MIN, a ts that is not a number, an
 *   id that is not hex are refused with the file and the event named; an
 *   output that cannot be opened is an error with the tool's name and no
 *   table; a trace without spans is drawn as a picture that says so. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "trace-files.h"
#include "uvp.h"

#define SKEW_NS 3000000000LL /* the consumer's wall clock, 3 s behind */

typedef struct {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
} side_t;

static void side_open(side_t *s) {
  assert_int_equal(uv_loop_init(&s->loop), 0);
  assert_int_equal(uvp_ctx_new(&s->loop, &s->ctx), 0);
  assert_int_equal(uvp_ctx_set_recorder(s->ctx, 1 << 20, UVP_RECORD_ALL), 0);
}

static void side_write(side_t *s, const char *path) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  uvp_record_opts_t opts = {.format = UVP_RECORD_JSON, .stream = f};
  assert_true(uvp_ctx_recorder_write(s->ctx, &opts) > 0);
  assert_int_equal(fclose(f), 0);
}

static void side_close(side_t *s) {
  assert_int_equal(uvp_ctx_close(s->ctx), 0);
  assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&s->loop), 0);
}

/* A few microseconds pass: spans of a few us, not of zero. */
static void pause_us(unsigned us) {
  uint64_t t0 = uv_hrtime();
  while (uv_hrtime() - t0 < (uint64_t)us * 1000)
    ;
}

static json_t *merged(const char *out, const char *args) {
  int rc = run_trace("merge -o '%s' %s", out, args);
  if (rc != 0)
    fail_msg("uvp-trace merge %s: exit %d: %s", args, rc, printed("stderr"));
  return load_json(out);
}

/* The merged doc's events of category cat and phase ph, by id: how many
 * ids have both an "s" and an "f". */
static size_t paired_flows(json_t *doc, const char *cat, size_t *all) {
  json_t *events = json_object_get(doc, "traceEvents"), *e, *f;
  size_t i, j, pairs = 0;
  *all = 0;
  json_array_foreach(events, i, e) {
    const char *c = json_string_value(json_object_get(e, "cat"));
    const char *ph = json_string_value(json_object_get(e, "ph"));
    if (c == NULL || strcmp(c, cat) != 0 || ph == NULL || strcmp(ph, "s") != 0)
      continue;
    (*all)++;
    const char *id = json_string_value(json_object_get(e, "id"));
    json_array_foreach(events, j, f) {
      const char *fc = json_string_value(json_object_get(f, "cat"));
      const char *fph = json_string_value(json_object_get(f, "ph"));
      const char *fid = json_string_value(json_object_get(f, "id"));
      if (fc != NULL && strcmp(fc, cat) == 0 && fph != NULL &&
          strcmp(fph, "f") == 0 && fid != NULL && strcmp(fid, id) == 0) {
        pairs++;
        break;
      }
    }
  }
  return pairs;
}

/* ---- calls between loops --------------------------------------------------
 */

static uvp_ret_t fn_answer(uvp_ctx_t *target, void *arg) {
  (void)target;
  return uvp_ret_value(arg, NULL);
}

/* The target's file, written on its own loop thread, by a call. */
static const char *target_file;
static uvp_ret_t fn_write(uvp_ctx_t *target, void *arg) {
  side_t *t = arg;
  (void)target;
  side_write(t, target_file);
  return uvp_ret_value(NULL, NULL);
}

static void stop_target(uv_async_t *a) {
  side_t *t = a->data;
  assert_int_equal(uvp_ctx_close(t->ctx), 0);
  uv_close((uv_handle_t *)a, NULL);
}

static uv_async_t stop;
static uv_sem_t target_ready;

static void target_main(void *arg) {
  side_t *t = arg;
  side_open(t);
  assert_int_equal(uv_async_init(&t->loop, &stop, stop_target), 0);
  stop.data = t;
  uv_sem_post(&target_ready);
  assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&t->loop), 0);
}

static void call(side_t *caller, side_t *target, uvp_call_fn fn, void *arg) {
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(caller->ctx, target->ctx, fn, arg, NULL, &p),
                   0);
  uint64_t t0 = uv_hrtime();
  while (uvp_promise_state(p) == UVP_PENDING &&
         uv_hrtime() - t0 < 10000000000ull)
    uv_run(&caller->loop, UV_RUN_ONCE);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
}

static void test_call_flows_pair(void **state) {
  (void)state;
  enum { CALLS = 5 };
  side_t caller, target;
  uv_thread_t th;
  side_open(&caller);
  assert_int_equal(uv_sem_init(&target_ready, 0), 0);
  assert_int_equal(uv_thread_create(&th, target_main, &target), 0);
  uv_sem_wait(&target_ready);
  uv_sem_destroy(&target_ready);
  for (int i = 0; i < CALLS; i++)
    call(&caller, &target, fn_answer, (void *)(intptr_t)(i + 1));
  char a[128], b[128], out[128], args[512];
  side_write(&caller, in_dir(a, sizeof a, "caller.json"));
  target_file = in_dir(b, sizeof b, "target.json");
  call(&caller, &target, fn_write, &target);
  assert_int_equal(uv_async_send(&stop), 0);
  assert_int_equal(uv_thread_join(&th), 0);
  side_close(&caller);
  snprintf(args, sizeof args, "caller='%s' target='%s'", a, b);
  json_t *doc = merged(in_dir(out, sizeof out, "calls.json"), args);
  size_t all, pairs = paired_flows(doc, "call", &all);
  print_message("%zu call flows, %zu paired\n", all, pairs);
  assert_true(all >= CALLS);
  assert_int_equal(pairs, all);
  json_decref(doc);
  assert_int_equal(unlink(a), 0);
  assert_int_equal(unlink(b), 0);
  assert_int_equal(unlink(out), 0);
}

/* ---- messages: a durable job's publish and delivery ---------------------- */

/* n messages from producer to consumer: each published (a PRODUCER span),
 * then delivered (a CONSUMER span under it) a little later. */
static void exchange(side_t *producer, side_t *consumer, int n) {
  for (int i = 0; i < n; i++) {
    uvp_span_t pub, got;
    assert_int_equal(uvp_span_begin(producer->ctx, &pub, "publish",
                                    UVP_SPAN_PRODUCER, NULL,
                                    UVP_SPAN_NEW_TRACE),
                     0);
    pause_us(20);
    assert_int_equal(uvp_span_end(producer->ctx, &pub, 0), 0);
    pause_us(30);
    assert_int_equal(uvp_span_begin(consumer->ctx, &got, "deliver",
                                    UVP_SPAN_CONSUMER, &pub.tc, 0),
                     0);
    pause_us(50);
    assert_int_equal(uvp_span_end(consumer->ctx, &got, 0), 0);
  }
}

/* Every consumer span begins after its producer span on the merged clock
 * (within tol); the flows are there. */
static void check_deliveries(json_t *doc, double tol) {
  json_t *e;
  size_t i, flows, late = 0, n = 0;
  double publish[64];
  char ids[64][20];
  json_array_foreach(json_object_get(doc, "traceEvents"), i, e) {
    json_t *args = json_object_get(e, "args");
    const char *kind = json_string_value(json_object_get(args, "kind"));
    const char *ph = json_string_value(json_object_get(e, "ph"));
    if (kind == NULL || ph == NULL || strcmp(ph, "b") != 0)
      continue;
    double ts = json_number_value(json_object_get(e, "ts"));
    if (strcmp(kind, "producer") == 0 && n < 64) {
      snprintf(ids[n], sizeof ids[n], "%s",
               json_string_value(json_object_get(args, "span_id")));
      publish[n++] = ts;
    } else if (strcmp(kind, "consumer") == 0) {
      const char *parent =
          json_string_value(json_object_get(args, "parent_id"));
      for (size_t k = 0; k < n; k++)
        if (strcmp(ids[k], parent) == 0 && ts < publish[k] - tol)
          late++;
    }
  }
  size_t pairs = paired_flows(doc, "request", &flows);
  assert_int_equal(pairs, flows);
  assert_true(flows > 0);
  if (late != 0)
    fail_msg("%zu deliveries before their publish on the merged clock", late);
}

static void test_durable_skewed_clock(void **state) {
  (void)state;
  enum { MESSAGES = 16 };
  side_t coord, worker, idle;
  side_open(&coord);
  side_open(&worker);
  side_open(&idle);
  exchange(&coord, &worker, MESSAGES);
  uvp_span_t alone; /* something in the idle one's file */
  assert_int_equal(uvp_span_begin(idle.ctx, &alone, "alone", UVP_SPAN_INTERNAL,
                                  NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_span_end(idle.ctx, &alone, 0), 0);
  char c[128], w[128], w2[128], i[128], i2[128], out[128], svg[128], args[1024];
  side_write(&coord, in_dir(c, sizeof c, "coord.json"));
  side_write(&worker, in_dir(w, sizeof w, "worker.json"));
  side_write(&idle, in_dir(i, sizeof i, "idle.json"));
  side_close(&coord);
  side_close(&worker);
  side_close(&idle);
  long long pid = (long long)getpid();
  /* The worker another process, its wall clock exact: kept. */
  int64_t gap = clock_gap_ns(c, w);
  rewrite(w, in_dir(w2, sizeof w2, "worker-p.json"), 0, -gap, pid + 1);
  rewrite(i, in_dir(i2, sizeof i2, "idle-p.json"), 0, 0, pid + 2);
  snprintf(args, sizeof args, "coord='%s' worker='%s'", c, w2);
  json_t *doc = merged(in_dir(out, sizeof out, "job.json"), args);
  assert_string_equal(aligned_by(doc, "worker"),
                      "wall clock, within the bounds");
  assert_int_equal(other_num(doc, "messages"), MESSAGES);
  check_deliveries(doc, 2e-3);
  json_decref(doc);
  /* Its wall clock 3 s behind: the deliveries bound it, every one after
   * its publish, placed by messages; the idle process, linked by nothing,
   * is said to be unaligned. */
  rewrite(w, w2, 0, -gap - SKEW_NS, pid + 1);
  snprintf(args, sizeof args, "--svg '%s' coord='%s' worker='%s' idle='%s'",
           in_dir(svg, sizeof svg, "job.svg"), c, w2, i2);
  doc = merged(out, args);
  assert_string_equal(aligned_by(doc, "worker"), "messages");
  print_message("worker's offset %.3f us\n", offset_of(doc, "worker"));
  assert_true(fabs(offset_of(doc, "worker") + SKEW_NS / 1e3) < 1e6);
  check_deliveries(doc, 2e-3);
  assert_int_equal(other_num(doc, "inconsistent"), 0);
  assert_string_equal(aligned_by(doc, "idle"), "wall clock only");
  char *table = printed("stdout"), *picture = slurp(svg);
  assert_non_null(strstr(table, "UNALIGNED"));
  assert_non_null(strstr(picture, "clock unaligned"));
  assert_non_null(strstr(picture, "clock placed by messages"));
  free(table);
  free(picture);
  json_decref(doc);
  const char *files[] = {c, w, w2, i, i2, out, svg};
  for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
    assert_int_equal(unlink(files[k]), 0);
}

/* ---- requests: the wall clock kept where it fits; one process, one
 * offset ------------------------------------------------------------------ */

/* n requests from client to server, each served inside its round trip. */
static void requests(side_t *client, side_t *server, int n) {
  for (int i = 0; i < n; i++) {
    uvp_span_t req, srv;
    assert_int_equal(uvp_span_begin(client->ctx, &req, "request",
                                    UVP_SPAN_CLIENT, NULL, UVP_SPAN_NEW_TRACE),
                     0);
    /* The way there slower than the way back: the midpoint is off by
     * about 17 us, the wall clock (made exact below) not at all. */
    pause_us(40);
    assert_int_equal(
        uvp_span_begin(server->ctx, &srv, "serve", UVP_SPAN_SERVER, &req.tc, 0),
        0);
    pause_us(10);
    assert_int_equal(uvp_span_end(server->ctx, &srv, 0), 0);
    pause_us(5);
    assert_int_equal(uvp_span_end(client->ctx, &req, 0), 0);
  }
}

static void test_wall_clock_kept(void **state) {
  (void)state;
  side_t gw1, gw2, backend;
  side_open(&gw1);
  side_open(&gw2);
  side_open(&backend);
  requests(&gw1, &backend, 8);
  requests(&gw2, &backend, 8);
  char g1[128], g2[128], b[128], b2[128], out[128], args[1024];
  /* Two files of one gateway process (two contexts of it, written at two
   * times), a backend of another process. */
  side_write(&gw1, in_dir(g1, sizeof g1, "gw1.json"));
  side_write(&gw2, in_dir(g2, sizeof g2, "gw2.json"));
  side_write(&backend, in_dir(b, sizeof b, "backend.json"));
  side_close(&gw1);
  side_close(&gw2);
  side_close(&backend);
  /* The backend another process, its wall clock exact. */
  rewrite(b, in_dir(b2, sizeof b2, "backend-p.json"), 0, -clock_gap_ns(g1, b),
          (long long)getpid() + 1);
  snprintf(args, sizeof args, "backend='%s' gw1='%s' gw2='%s'", b2, g1, g2);
  json_t *doc = merged(in_dir(out, sizeof out, "gw.json"), args);
  print_message("gw1 %s %.3f us, gw2 %s %.3f us\n", aligned_by(doc, "gw1"),
                offset_of(doc, "gw1"), aligned_by(doc, "gw2"),
                offset_of(doc, "gw2"));
  assert_string_equal(aligned_by(doc, "gw1"), "wall clock, within the bounds");
  assert_true(offset_of(doc, "gw1") == 0);
  assert_true(offset_of(doc, "gw2") == offset_of(doc, "gw1"));
  assert_string_equal(json_string_value(json_object_get(
                          process_named(doc, "gw2"), "same_process_as")),
                      "gw1");
  assert_int_equal(other_num(doc, "inconsistent"), 0);
  json_decref(doc);
  const char *files[] = {g1, g2, b, b2, out};
  for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
    assert_int_equal(unlink(files[k]), 0);
}

/* ---- bad input --------------------------------------------------------------
 */

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_true(fputs(text, f) >= 0);
  assert_int_equal(fclose(f), 0);
}

/* merge of text refused: exit 1, stderr naming the file and saying what,
 * nothing written. */
static void refused(const char *text, const char *what) {
  char in[128], out[128];
  put(in_dir(in, sizeof in, "bad.json"), text);
  in_dir(out, sizeof out, "bad-out.json");
  int rc = run_trace("merge -o '%s' '%s'", out, in);
  char *err = printed("stderr"), *table = printed("stdout");
  if (rc != 1 || strstr(err, in) == NULL || strstr(err, what) == NULL ||
      strncmp(err, "uvp-trace: ", 11) != 0 || table[0] != '\0')
    fail_msg("merge of %s: exit %d, stderr \"%s\", stdout \"%s\" (want 1, "
             "\"uvp-trace: %s...%s\", nothing)",
             text, rc, err, table, in, what);
  free(err);
  free(table);
  assert_int_equal(access(out, F_OK), -1);
  assert_int_equal(unlink(in), 0);
}

#define SPAN_B(ts, id)                                                         \
  "{\"ph\":\"b\",\"cat\":\"span\",\"pid\":1,\"tid\":1,\"ts\":" ts              \
  ",\"id\":\"0x" id "\",\"name\":\"x\",\"args\":{\"span_id\":\"" id            \
  "\",\"kind\":\"client\"}}"

static void test_bad_input(void **state) {
  (void)state;
  refused("{\"traceEvents\":[],\"otherData\":{\"wall_origin_ns\":"
          "-9223372036854775808,\"pid\":1}}",
          "wall_origin_ns");
  refused("{\"traceEvents\":[" SPAN_B("\"12.5\"", "00f067aa0ba902b7") "]}",
          "event 0 (ph b, name x): ts is not a number");
  refused("{\"traceEvents\":[{\"ph\":\"i\",\"ts\":1}," SPAN_B(
              "3", "00f067aa0ba9zzzz") "]}",
          "event 1 (ph b, name x): args.span_id is not 16 hex digits");
  refused("{\"traceEvents\":[{\"ph\":\"e\",\"cat\":\"span\",\"ts\":1,"
          "\"id\":\"0xnothex\"}]}",
          "a span's id is not 0x and 16 hex digits");
  refused("{\"traceEvents\":[{\"ph\":\"i\",\"ts\":1e300}]}", "ts out of range");
  refused("{\"traceEvents\":[{\"ph\":\"i\"}", "the file ends");
  refused("[]", "not a trace");
}

static void test_output_errors(void **state) {
  (void)state;
  char in[128], svg[128];
  put(in_dir(in, sizeof in, "nospans.json"),
      "{\"traceEvents\":[{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":"
      "\"process_name\",\"args\":{\"name\":\"p\"}},{\"ph\":\"i\",\"pid\":1,"
      "\"tid\":1,\"ts\":5,\"name\":\"tick\"}],\"otherData\":{}}");
  /* An output that cannot be opened: the tool's name, exit 1, no table. */
  int rc = run_trace("merge -o /nonexistent-dir/x.json '%s'", in);
  char *err = printed("stderr"), *table = printed("stdout");
  if (rc != 1 ||
      strncmp(err, "uvp-trace: /nonexistent-dir/x.json: ", 36) != 0 ||
      table[0] != '\0')
    fail_msg("exit %d, stderr \"%s\", stdout \"%s\"", rc, err, table);
  free(err);
  free(table);
  /* No spans: a picture that says so, a whole SVG document. */
  assert_int_equal(
      run_trace("svg -o '%s' '%s'", in_dir(svg, sizeof svg, "nospans.svg"), in),
      0);
  char *picture = slurp(svg);
  size_t len = strlen(picture);
  assert_true(strncmp(picture, "<svg ", 5) == 0);
  assert_true(len > 7 && strcmp(picture + len - 7, "</svg>\n") == 0);
  assert_non_null(strstr(picture, "no spans in this trace"));
  free(picture);
  /* The output over an input: refused, the input left whole. */
  assert_int_equal(run_trace("merge -o '%s' '%s'", in, in), 1);
  char *kept = slurp(in);
  assert_non_null(strstr(kept, "process_name"));
  free(kept);
  assert_int_equal(unlink(in), 0);
  assert_int_equal(unlink(svg), 0);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s UVP_TRACE\n", argv[0]);
    return 2;
  }
  trace_tool = argv[1];
  if (trace_dir_make("/tmp/uvp-trace-clocks-XXXXXX") != 0) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_call_flows_pair),
      cmocka_unit_test(test_durable_skewed_clock),
      cmocka_unit_test(test_wall_clock_kept),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_output_errors),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  trace_dir_remove();
  return rc;
}

/* The uvp-trace tests' shared parts (after cmocka.h): the built tool run
 * as a user runs it, its output read back, and a recorder file rewritten
 * as if another process had written it (another pid, a wall clock moved,
 * every ts moved). */
#ifndef TRACE_FILES_H
#define TRACE_FILES_H

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *trace_tool; /* argv[1] */
static char dir[64];           /* a temporary directory of the run's */

/* A path in dir. */
static inline const char *in_dir(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", dir, name);
  return buf;
}

/* dir made (prefix: "/tmp/uvp-trace-NAME-XXXXXX"); 0, or -1 with errno. */
static inline int trace_dir_make(const char *prefix) {
  snprintf(dir, sizeof dir, "%s", prefix);
  return mkdtemp(dir) == NULL ? -1 : 0;
}

/* dir removed with what run_trace left in it (the tests remove their own
 * files as they check them). */
static inline void trace_dir_remove(void) {
  char path[128];
  unlink(in_dir(path, sizeof path, "stdout"));
  unlink(in_dir(path, sizeof path, "stderr"));
  rmdir(dir);
}

/* The tool with these arguments (a printf format, shell-quoted by the
 * caller), its stdout and stderr into dir's "stdout" and "stderr": its
 * exit status (-1: not an exit). */
static inline int run_trace(const char *fmt, ...) {
  char args[2048], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "'%s' %s >'%s/stdout' 2>'%s/stderr'", trace_tool,
           args, dir, dir);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A file's text (NUL-ended, freed by the caller). */
static inline char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *text = NULL;
  size_t len = 0, cap = 0, n;
  do {
    if (len + 4096 + 1 > cap) {
      cap = 2 * cap + 4096 + 1;
      text = realloc(text, cap);
      assert_non_null(text);
    }
    n = fread(text + len, 1, 4096, f);
    len += n;
  } while (n > 0);
  assert_int_equal(fclose(f), 0);
  text[len] = '\0';
  return text;
}

/* What the last run_trace printed on stream ("stdout" or "stderr"). */
static inline char *printed(const char *stream) {
  char path[128];
  return slurp(in_dir(path, sizeof path, stream));
}

static inline json_t *load_json(const char *path) {
  json_error_t err;
  json_t *doc = json_load_file(path, 0, &err);
  if (doc == NULL)
    fail_msg("%s:%d: %s", path, err.line, err.text);
  return doc;
}

static inline double other_num(json_t *doc, const char *key) {
  return json_number_value(
      json_object_get(json_object_get(doc, "otherData"), key));
}

/* The file at path as process pid's (-1: its own) with every ts moved by
 * shift_us and its wall clock by wall_ns, written to out. */
static inline void rewrite(const char *path, const char *out, double shift_us,
                           int64_t wall_ns, long long pid) {
  json_t *doc = load_json(path), *e;
  json_t *other = json_object_get(doc, "otherData");
  size_t i;
  json_array_foreach(json_object_get(doc, "traceEvents"), i, e) {
    json_t *ts = json_object_get(e, "ts");
    if (json_is_number(ts) && shift_us != 0)
      json_object_set_new(e, "ts", json_real(json_number_value(ts) + shift_us));
  }
  json_int_t wall =
      json_integer_value(json_object_get(other, "wall_origin_ns"));
  json_object_set_new(other, "wall_origin_ns", json_integer(wall + wall_ns));
  if (pid >= 0)
    json_object_set_new(other, "pid", json_integer(pid));
  assert_int_equal(json_dump_file(doc, out, JSON_REAL_PRECISION(17)), 0);
  json_decref(doc);
}

/* File b's clock minus a's, as their wall and monotonic origins say
 * (nanoseconds): 0 when their wall clocks agree exactly. */
static inline int64_t clock_gap_ns(const char *a, const char *b) {
  json_t *da = load_json(a), *db = load_json(b);
  json_t *oa = json_object_get(da, "otherData");
  json_t *ob = json_object_get(db, "otherData");
  int64_t ca = json_integer_value(json_object_get(oa, "wall_origin_ns")) -
               json_integer_value(json_object_get(oa, "ts_origin_ns"));
  int64_t cb = json_integer_value(json_object_get(ob, "wall_origin_ns")) -
               json_integer_value(json_object_get(ob, "ts_origin_ns"));
  json_decref(da);
  json_decref(db);
  return cb - ca;
}

/* otherData.processes' entry named name in a merged doc. */
static inline json_t *process_named(json_t *doc, const char *name) {
  json_t *procs =
             json_object_get(json_object_get(doc, "otherData"), "processes"),
         *p;
  size_t i;
  json_array_foreach(procs, i, p) {
    if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0)
      return p;
  }
  fail_msg("no process %s in the merged file", name);
  return NULL;
}

static inline const char *aligned_by(json_t *doc, const char *name) {
  return json_string_value(
      json_object_get(process_named(doc, name), "aligned_by"));
}

static inline double offset_of(json_t *doc, const char *name) {
  return json_number_value(
      json_object_get(process_named(doc, name), "offset_us"));
}

#endif

/* uvp-trace's reader: a Chrome trace file one event at a time.
 *
 * A recorder file of a busy process runs to hundreds of megabytes, and
 * jansson's tree of it to about fourteen times that: the file is read
 * here as a byte stream instead, the top-level object scanned by hand and
 * each element of traceEvents (and every other top-level value) cut out by
 * its brackets and parsed alone, so that no more than one event is held
 * at a time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

typedef struct {
  FILE *f;
  const char *path;
  char *buf; /* the value being cut out */
  size_t len, cap;
  size_t line;
} reader_t;

static int next(reader_t *r) {
  int c = getc(r->f);
  if (c == '\n')
    r->line++;
  return c;
}

static int skip_ws(reader_t *r) {
  int c;
  do
    c = next(r);
  while (c == ' ' || c == '\t' || c == '\n' || c == '\r');
  return c;
}

static int keep(reader_t *r, int c) {
  if (r->len + 1 >= r->cap) {
    size_t n = r->cap == 0 ? 4096 : 2 * r->cap;
    char *b = realloc(r->buf, n);
    if (b == NULL)
      return -1;
    r->buf = b;
    r->cap = n;
  }
  r->buf[r->len++] = (char)c;
  return 0;
}

static int fail(reader_t *r, const char *what) {
  if (ferror(r->f))
    fprintf(stderr, "uvp-trace: %s: %s\n", r->path, strerror(errno));
  else
    fprintf(stderr, "uvp-trace: %s:%zu: %s\n", r->path, r->line, what);
  return -1;
}

/* One JSON value whose first character is c, into r->buf (NUL-ended): an
 * object or array to its matching bracket, a string to its closing quote,
 * a number or literal up to the character after it (*after). */
static int cut(reader_t *r, int c, int *after) {
  int depth = 0, in_str = 0, esc = 0;
  r->len = 0;
  *after = 0;
  if (c != '{' && c != '[' && c != '"') { /* a scalar: up to a delimiter */
    while (c != EOF && strchr(",}] \t\r\n", c) == NULL) {
      if (keep(r, c) != 0)
        return fail(r, "out of memory");
      c = next(r);
    }
    *after = c;
    r->buf[r->len] = '\0';
    return r->len > 0 ? 0 : fail(r, "a value expected");
  }
  for (;; c = next(r)) {
    if (c == EOF)
      return fail(r, "the file ends inside a value");
    if (keep(r, c) != 0)
      return fail(r, "out of memory");
    if (in_str) {
      if (esc)
        esc = 0;
      else if (c == '\\')
        esc = 1;
      else if (c == '"')
        in_str = 0;
      if (in_str || depth > 0)
        continue;
      break; /* a top-level string ended */
    }
    if (c == '"')
      in_str = 1;
    else if (c == '{' || c == '[')
      depth++;
    else if ((c == '}' || c == ']') && --depth == 0)
      break;
  }
  r->buf[r->len] = '\0';
  return 0;
}

static json_t *parse_cut(reader_t *r, size_t line) {
  json_error_t err;
  json_t *v = json_loadb(r->buf, r->len, JSON_DECODE_ANY, &err);
  if (v == NULL)
    fprintf(stderr, "uvp-trace: %s:%zu: %s\n", r->path, line + err.line - 1,
            err.text);
  return v;
}

/* The elements of traceEvents, after its '[': each an object to cb. */
static int events(reader_t *r, trace_event_cb cb, void *arg) {
  size_t index = 0;
  int c = skip_ws(r);
  if (c == ']')
    return 0;
  for (;;) {
    if (c != '{')
      return fail(r, "an event of traceEvents is not an object");
    size_t line = r->line;
    int after;
    if (cut(r, c, &after) != 0)
      return -1;
    json_t *e = parse_cut(r, line);
    if (e == NULL)
      return -1;
    int rc = cb(arg, e, index++);
    json_decref(e);
    if (rc != 0)
      return -1;
    c = skip_ws(r);
    if (c == ']')
      return 0;
    if (c != ',')
      return fail(r, c == EOF ? "the file ends inside traceEvents (cut off?)"
                              : "',' or ']' expected after an event");
    c = skip_ws(r);
  }
}

/* The top-level object's key (its opening quote read) into r->buf. */
static int key(reader_t *r) {
  int after;
  if (cut(r, '"', &after) != 0)
    return -1;
  r->buf[r->len - 1] = '\0'; /* the closing quote */
  memmove(r->buf, r->buf + 1, r->len - 1);
  return 0;
}

static int top(reader_t *r, trace_event_cb cb, void *arg, json_t **other) {
  int c = skip_ws(r), seen = 0;
  if (c != '{')
    return fail(r, "not a trace (no JSON object with traceEvents)");
  c = skip_ws(r);
  while (c != '}') {
    if (c != '"' || key(r) != 0)
      return c != '"' ? fail(r, "a key expected") : -1;
    int is_events = strcmp(r->buf, "traceEvents") == 0;
    int is_other = strcmp(r->buf, "otherData") == 0;
    if (skip_ws(r) != ':')
      return fail(r, "':' expected");
    c = skip_ws(r);
    if (is_events) {
      if (seen++ || c != '[')
        return fail(r, c != '[' ? "traceEvents is not an array"
                                : "traceEvents twice");
      if (events(r, cb, arg) != 0)
        return -1;
      c = skip_ws(r);
    } else {
      size_t line = r->line;
      int after;
      if (cut(r, c, &after) != 0)
        return -1;
      json_t *v = parse_cut(r, line);
      if (v == NULL)
        return -1;
      if (is_other && other != NULL && json_is_object(v)) {
        json_decref(*other);
        *other = v;
      } else {
        json_decref(v);
      }
      c = after != 0 ? after : next(r);
      while (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        c = next(r);
    }
    if (c == ',')
      c = skip_ws(r);
    else if (c != '}')
      return fail(r, c == EOF ? "the file ends inside the trace (cut off?)"
                              : "',' or '}' expected");
  }
  if (!seen)
    return fail(r, "no traceEvents array (not a trace)");
  if (skip_ws(r) != EOF)
    return fail(r, "data after the trace's object");
  return 0;
}

int trace_stream(FILE *f, const char *path, trace_event_cb cb, void *arg,
                 json_t **other) {
  reader_t r = {f, path, NULL, 0, 0, 1};
  if (other != NULL)
    *other = NULL;
  int rc = top(&r, cb, arg, other);
  free(r.buf);
  if (rc != 0 && other != NULL) {
    json_decref(*other);
    *other = NULL;
  }
  return rc;
}

FILE *trace_open(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    fprintf(stderr, "uvp-trace: %s: %s\n", path, strerror(errno));
  return f;
}

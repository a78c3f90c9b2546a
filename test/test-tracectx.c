/* W3C trace context (uvp/tracing.h): the header forms against the
 * specification's own valid and invalid examples (Trace Context, level 1,
 * and its test suite's cases), the context carried by scopes to what is
 * registered, spawned and added under it, spans (ids, parents, the
 * recorder's events) and errors.  Suites `structured` and `threads`
 * (TSan: the per-thread id generator on two loop threads). */
#include "alloc-helpers.h"

#include <jansson.h>
#include <math.h>

#define TP_VALID "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const uint8_t want_trace[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3,
                                       0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d,
                                       0x0e, 0x0e, 0x47, 0x36};
static const uint8_t want_span[8] = {0x00, 0xf0, 0x67, 0xaa,
                                     0x0b, 0xa9, 0x02, 0xb7};

static int parse(const char *s, uvp_tracectx_t *tc) {
  return uvp_tracectx_parse(s, strlen(s), tc);
}

/* ---- traceparent --------------------------------------------------------- */

static void test_parse_valid(void **state) {
  (void)state;
  uvp_tracectx_t tc;
  char back[UVP_TRACEPARENT_LEN + 1];
  assert_int_equal(parse(TP_VALID, &tc), 0);
  assert_memory_equal(tc.trace_id, want_trace, 16);
  assert_memory_equal(tc.span_id, want_span, 8);
  assert_int_equal(tc.flags, UVP_TRACE_SAMPLED);
  assert_int_equal(uvp_tracectx_format(&tc, back), 0);
  assert_string_equal(back, TP_VALID);
  /* Spaces and tabs around a header's value are not the value. */
  assert_int_equal(parse(" \t" TP_VALID "\t ", &tc), 0);
  /* Flags other than sampled are kept, as they came. */
  assert_int_equal(
      parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &tc), 0);
  assert_int_equal(tc.flags, 0);
  /* A later version: its first 55 characters, whatever follows a dash. */
  assert_int_equal(
      parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-"
            "the-future-will-be-like",
            &tc),
      0);
  assert_memory_equal(tc.trace_id, want_trace, 16);
  assert_int_equal(
      parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &tc), 0);
  assert_int_equal(tc.flags, 9);
  /* No NUL needed: the length says where it ends. */
  char buf[80];
  memcpy(buf, TP_VALID "XYZ", 59);
  assert_int_equal(uvp_tracectx_parse(buf, UVP_TRACEPARENT_LEN, &tc), 0);
}

static void test_parse_invalid(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "00",
      /* version ff is forbidden; the version must be two hex digits */
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      /* uppercase hex */
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
      /* all-zero ids */
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      /* lengths */
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
      /* version 00 with anything after it */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      /* a later version, with something not after a dash */
      "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
      /* separators */
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
      /* other characters */
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9 2b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\x01",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uvp_tracectx_t tc;
    memset(&tc, 0x5a, sizeof(tc));
    if (parse(bad[i], &tc) != UV_EINVAL)
      fail_msg("accepted %s", bad[i]);
    assert_int_equal(tc.flags, 0x5a); /* untouched */
  }
  /* An embedded NUL inside the length is a character like any other. */
  char nul[UVP_TRACEPARENT_LEN];
  memcpy(nul, TP_VALID, sizeof(nul));
  nul[10] = '\0';
  uvp_tracectx_t tc;
  assert_int_equal(uvp_tracectx_parse(nul, sizeof(nul), &tc), UV_EINVAL);
  assert_int_equal(uvp_tracectx_parse(NULL, 55, &tc), UV_EINVAL);
  assert_int_equal(uvp_tracectx_parse(TP_VALID, 55, NULL), UV_EINVAL);
  char out[UVP_TRACEPARENT_LEN + 1];
  memset(&tc, 0, sizeof(tc));
  assert_int_equal(uvp_tracectx_format(&tc, out), UV_EINVAL);
  assert_int_equal(uvp_tracectx_format(NULL, out), UV_EINVAL);
}

/* ---- tracestate ---------------------------------------------------------- */

static int check(const char *s) { return uvp_tracestate_check(s, strlen(s)); }

static void test_tracestate(void **state) {
  (void)state;
  assert_int_equal(check("rojo=00f067aa0ba902b7"), 0);
  assert_int_equal(check("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"), 0);
  assert_int_equal(check(" congo=t61rcWkgMzE , ,rojo=00f067aa0ba902b7\t"), 0);
  assert_int_equal(check("tenant@vendor=v, a_b-c*d/e=x y"), 0);
  assert_int_equal(check("0tenant@sys=v"), 0);
  assert_int_equal(check(""), 0);
  /* The current grammar (the W3C suite's key tests): '@' anywhere after
   * the first character, any number of times, a key starting with a
   * digit, 256 characters however split; a key twice is kept as is. */
  static const char *const good[] = {
      "foo@=1,bar=2",
      "foo@@bar=1,bar=2",
      "foo@bar@baz=1,bar=2",
      "1rojo=1",
      "tenant@=1",
      "tenant@1vendor=1",
      "tenant@vendor123456789=1",
      "foo=1,foo=1",
      "foo=1,foo=2",
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
    if (check(good[i]) != 0)
      fail_msg("dropped tracestate \"%s\"", good[i]);
  char key[300];
  memset(key, 't', 242);
  snprintf(key + 242, sizeof(key) - 242, "@v=1"); /* 244 */
  assert_int_equal(check(key), 0);
  memset(key, 't', 241);
  snprintf(key + 241, sizeof(key) - 241, "@%s=1", "vvvvvvvvvvvvvv"); /* 256 */
  assert_int_equal(check(key), 0);
  snprintf(key, sizeof(key), "t@%s=1", "vvvvvvvvvvvvvvv");
  assert_int_equal(check(key), 0);
  memset(key, 'z', 256);
  snprintf(key + 256, sizeof(key) - 256, "=1");
  assert_int_equal(check(key), 0);
  memset(key, 'z', 257);
  snprintf(key + 257, sizeof(key) - 257, "=1");
  assert_int_equal(check(key), UV_EINVAL);
  static const char *const bad[] = {
      "rojo",         /* no '=' */
      "Rojo=1",       /* uppercase key */
      "rojo=",        /* empty value */
      "foo=,bar=3",   /* an empty value drops the rest too */
      "rojo=a,b",     /* b: no '=' */
      "rojo=a=b",     /* '=' in the value */
      "@vendor=1",    /* a key starts with a letter or digit */
      "@foo=1,bar=2", /* ... and the whole header goes */
      "_foo=1",       /* not '_' */
      "foo.bar=1",    /* '.' is no key character */
      "rojo=a\tb",    /* a tab inside a value */
      "ro jo=1",      /* a space inside a key */
      "rojo=\x7f",    /* DEL in a value */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (check(bad[i]) != UV_EINVAL)
      fail_msg("accepted tracestate \"%s\"", bad[i]);
  /* 32 members are allowed, 33 are not. */
  char many[33 * 8 + 1];
  size_t n = 0;
  for (int i = 0; i < 33; i++)
    n += (size_t)sprintf(many + n, "%sk%02d=v", i ? "," : "", i);
  assert_int_equal(uvp_tracestate_check(many, n), UV_EINVAL);
  assert_int_equal(uvp_tracestate_check(many, strrchr(many, ',') - many), 0);
  /* Exactly UVP_TRACESTATE_MAX bytes is kept, one more dropped, however
   * well formed. */
  char longest[UVP_TRACESTATE_MAX + 8];
  n = (size_t)sprintf(longest, "a=%0250d,b=%0250d,c=%04d", 1, 2, 3);
  assert_int_equal(n, UVP_TRACESTATE_MAX);
  assert_int_equal(uvp_tracestate_check(longest, n), 0);
  n = (size_t)sprintf(longest, "a=%0250d,b=%0250d,c=%05d", 1, 2, 3);
  assert_int_equal(uvp_tracestate_check(longest, n), UV_EINVAL);
  /* A value of 257 is too long. */
  n = (size_t)sprintf(longest, "a=%0257d", 1);
  assert_int_equal(uvp_tracestate_check(longest, n), UV_EINVAL);
  assert_int_equal(uvp_tracestate_check(NULL, 0), UV_EINVAL);
}

/* ---- carried by scopes --------------------------------------------------- */

typedef struct seen_s {
  uvp_ctx_t *ctx;
  int n, with;
  uvp_tracectx_t tc[8];
  char state[8][64];
} seen_t;

static void look(seen_t *s) {
  const char *ts = NULL;
  if (s->n < 8 && uvp_tracectx_get(s->ctx, &s->tc[s->n], &ts) == 0) {
    s->with |= 1 << s->n;
    snprintf(s->state[s->n], sizeof(s->state[0]), "%s", ts ? ts : "");
  }
  s->n++;
}

static uvp_ret_t look_handler(void *arg, const uvp_outcome_t *in) {
  (void)in;
  look(arg);
  return uvp_ret_pass();
}

static uvp_ret_t fiber_body(void *arg) {
  seen_t *s = arg;
  uvp_promise_t *d;
  look(s);
  if (uvp_delay(s->ctx, 1, NULL, NULL, UVP_KEEP_ALIVE, &d) == 0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  look(s); /* the same after an await */
  return uvp_ret_pass();
}

static void test_scope_carries_it(void **state) {
  fixture_t *f = *state;
  uvp_tracectx_t tc, got;
  const char *ts = (const char *)1;
  assert_int_equal(uvp_tracectx_get(f->ctx, &got, &ts), UV_ENOENT);
  assert_null(ts);
  assert_int_equal(parse(TP_VALID, &tc), 0);
  assert_int_equal(uvp_tracectx_set(f->ctx, &tc, "rojo=1,congo=2"), 0);
  assert_int_equal(uvp_tracectx_get(f->ctx, &got, &ts), 0);
  assert_memory_equal(&got, &tc, sizeof(tc));
  assert_string_equal(ts, "rojo=1,congo=2");

  /* A handler registered now, and a fiber spawned now, see it later,
   * after the scope here has changed. */
  static seen_t seen;
  memset(&seen, 0, sizeof(seen));
  seen.ctx = f->ctx;
  uvp_promise_t *p, *q, *fp;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, look_handler, &seen, &q), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, fiber_body, &seen, NULL, &fp), 0);
  assert_int_equal(uvp_tracectx_set(f->ctx, NULL, NULL), 0);
  assert_int_equal(uvp_tracectx_get(f->ctx, NULL, NULL), UV_ENOENT);
  assert_int_equal(uvp_promise_resolve(p, NULL, NULL), 0);
  run_until_settled(f, fp);
  run_until_settled(f, q);
  assert_int_equal(seen.n, 3);
  assert_int_equal(seen.with, 7);
  for (int i = 0; i < 3; i++) {
    assert_memory_equal(&seen.tc[i], &tc, sizeof(tc));
    assert_string_equal(seen.state[i], "rojo=1,congo=2");
  }
  uvp_promise_release(p);
  uvp_promise_release(q);
  uvp_promise_release(fp);

  /* An invalid tracestate is dropped, the context kept; scope_clear drops
   * the context with the slots. */
  assert_int_equal(uvp_tracectx_set(f->ctx, &tc, "Bad State"), 0);
  assert_int_equal(uvp_tracectx_get(f->ctx, &got, &ts), 0);
  assert_null(ts);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(uvp_tracectx_get(f->ctx, &got, NULL), UV_ENOENT);

  /* Errors. */
  memset(&got, 0, sizeof(got));
  assert_int_equal(uvp_tracectx_set(f->ctx, &got, NULL), UV_EINVAL);
  assert_int_equal(uvp_tracectx_set(NULL, &tc, NULL), UV_EINVAL);
  assert_int_equal(uvp_tracectx_get(NULL, &got, NULL), UV_EINVAL);
}

/* Each allocation a set needs, failing in turn: UV_ENOMEM, the scope as
 * it was, nothing leaked (alloc-helpers.h). */
static void set_scenario(run_t *r) {
  uvp_tracectx_t tc, got;
  assert_int_equal(parse(TP_VALID, &tc), 0);
  int rc = uvp_tracectx_set(r->ctx, &tc, "a=b");
  OK_OR_ENOMEM(rc);
  assert_int_equal(uvp_tracectx_get(r->ctx, &got, NULL),
                   rc == 0 ? 0 : UV_ENOENT);
  if (rc != 0)
    assert_int_equal(uvp_tracectx_set(r->ctx, &tc, NULL), 0);
  uvp_span_t s;
  assert_int_equal(uvp_span_begin(r->ctx, &s, "x", UVP_SPAN_INTERNAL, NULL, 0),
                   0);
  OK_OR_ENOMEM(uvp_span_enter(r->ctx, &s));
}

static void test_set_without_memory(void **state) {
  (void)state;
  assert_true(exhaust(set_scenario) >= 2);
}

/* ---- spans --------------------------------------------------------------- */

static void test_spans(void **state) {
  fixture_t *f = *state;
  uvp_span_t root, child, other;
  uvp_tracectx_t got;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "x", UVP_SPAN_SERVER, NULL, 0),
                   UV_ENOENT);
  assert_int_equal(uvp_span_begin(f->ctx, &root, "root", UVP_SPAN_SERVER, NULL,
                                  UVP_SPAN_NEW_TRACE),
                   0);
  static const uint8_t zero[16];
  assert_memory_not_equal(root.tc.trace_id, zero, 16);
  assert_memory_not_equal(root.tc.span_id, zero, 8);
  assert_memory_equal(root.parent_id, zero, 8);
  /* A new trace: sampled, its trace id random (Level 2's flag). */
  assert_int_equal(root.tc.flags, UVP_TRACE_SAMPLED | UVP_TRACE_RANDOM);
  /* Beginning a span leaves the scope alone; entering it does not. */
  assert_int_equal(uvp_tracectx_get(f->ctx, NULL, NULL), UV_ENOENT);
  assert_int_equal(uvp_span_enter(f->ctx, &root), 0);
  assert_int_equal(uvp_tracectx_get(f->ctx, &got, NULL), 0);
  assert_memory_equal(&got, &root.tc, sizeof(got));
  /* A child of the current scope's. */
  assert_int_equal(
      uvp_span_begin(f->ctx, &child, "call", UVP_SPAN_CLIENT, NULL, 0), 0);
  assert_memory_equal(child.tc.trace_id, root.tc.trace_id, 16);
  assert_memory_equal(child.parent_id, root.tc.span_id, 8);
  assert_memory_not_equal(child.tc.span_id, root.tc.span_id, 8);
  /* A child of one given: a remote parent's. */
  uvp_tracectx_t remote;
  assert_int_equal(parse(TP_VALID, &remote), 0);
  assert_int_equal(
      uvp_span_begin(f->ctx, &other, "served", UVP_SPAN_SERVER, &remote, 0), 0);
  assert_memory_equal(other.tc.trace_id, want_trace, 16);
  assert_memory_equal(other.parent_id, want_span, 8);
  assert_int_equal(other.tc.flags, remote.flags);
  assert_int_equal(uvp_span_end(f->ctx, &other, 0), 0);
  assert_int_equal(uvp_span_end(f->ctx, &other, 0), UV_EALREADY);
  /* Flags no level defines are not passed on (Level 2: set to zero);
   * sampled and random-trace-id are. */
  uvp_span_t flagged;
  remote.flags = 0xff;
  assert_int_equal(
      uvp_span_begin(f->ctx, &flagged, "f", UVP_SPAN_SERVER, &remote, 0), 0);
  assert_int_equal(flagged.tc.flags, UVP_TRACE_SAMPLED | UVP_TRACE_RANDOM);
  assert_int_equal(uvp_span_end(f->ctx, &flagged, 0), 0);
  remote.flags = UVP_TRACE_RANDOM;
  assert_int_equal(
      uvp_span_begin(f->ctx, &flagged, "f", UVP_SPAN_SERVER, &remote, 0), 0);
  assert_int_equal(flagged.tc.flags, UVP_TRACE_RANDOM);
  assert_int_equal(uvp_span_end(f->ctx, &flagged, 0), 0);
  assert_int_equal(uvp_span_end(f->ctx, &child, UV_ECONNRESET), 0);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);
  /* Errors. */
  assert_int_equal(uvp_span_begin(f->ctx, &other, "k", 5, NULL, 0), UV_EINVAL);
  assert_int_equal(uvp_span_begin(f->ctx, &other, "k", 0, NULL, 2), UV_EINVAL);
  assert_int_equal(uvp_span_begin(NULL, &other, "k", 0, NULL, 0), UV_EINVAL);
  assert_int_equal(uvp_span_begin(f->ctx, NULL, "k", 0, NULL, 0), UV_EINVAL);
  memset(&remote, 0, sizeof(remote));
  assert_int_equal(uvp_span_begin(f->ctx, &other, "k", 0, &remote, 0),
                   UV_EINVAL);
  assert_int_equal(uvp_span_end(f->ctx, NULL, 0), UV_EINVAL);
  assert_int_equal(uvp_span_enter(f->ctx, NULL), UV_EINVAL);
}

/* Ids do not repeat: 100 000 spans, each id seen once (a sorted list). */
static int cmp64(const void *a, const void *b) { return memcmp(a, b, 8); }

static void test_ids_unique(void **state) {
  fixture_t *f = *state;
  enum { N = 100000 };
  uint8_t(*ids)[8] = malloc(N * 8);
  assert_non_null(ids);
  for (int i = 0; i < N; i++) {
    uvp_span_t s;
    assert_int_equal(
        uvp_span_begin(f->ctx, &s, "", 0, NULL, UVP_SPAN_NEW_TRACE), 0);
    memcpy(ids[i], s.tc.span_id, 8);
  }
  qsort(ids, N, 8, cmp64);
  for (int i = 1; i < N; i++)
    assert_memory_not_equal(ids[i - 1], ids[i], 8);
  free(ids);
}

/* Two loop threads draw from generators of their own, seeded apart: no
 * id of one is the other's (TSan: nothing shared). */
enum { PER_THREAD = 20000 };
static uint8_t thread_ids[2][PER_THREAD][8];

static void span_thread(void *arg) {
  uint8_t(*ids)[8] = arg;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return;
  for (int i = 0; i < PER_THREAD; i++) {
    uvp_span_t s;
    if (uvp_span_begin(ctx, &s, "t", 0, NULL, UVP_SPAN_NEW_TRACE) == 0)
      memcpy(ids[i], s.tc.span_id, 8);
  }
  (void)uvp_ctx_close(ctx);
  (void)uv_run(&loop, UV_RUN_DEFAULT);
  (void)uv_loop_close(&loop);
}

static void test_ids_per_thread(void **state) {
  (void)state;
  uv_thread_t t[2];
  memset(thread_ids, 0, sizeof(thread_ids));
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_create(&t[i], span_thread, thread_ids[i]), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  uint8_t(*all)[8] = &thread_ids[0][0]; /* both threads' as one array */
  qsort(all, 2 * PER_THREAD, 8, cmp64);
  static const uint8_t zero[8];
  assert_memory_not_equal(all[0], zero, 8); /* every one drawn */
  for (int i = 1; i < 2 * PER_THREAD; i++)
    assert_memory_not_equal(all[i - 1], all[i], 8);
}

/* ---- the recorder -------------------------------------------------------- */

typedef struct {
  char *buf;
  size_t len;
} text_t;

static int sink(void *arg, const char *s, size_t n) {
  text_t *t = arg;
  char *b = realloc(t->buf, t->len + n + 1);
  assert_non_null(b);
  memcpy(b + t->len, s, n);
  t->buf = b;
  t->len += n;
  b[t->len] = '\0';
  return 0;
}

static void hex(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
}

/* The span's begin and end events in doc (by its id), checked. */
static void find_span(json_t *events, const uvp_span_t *sp, const char *name,
                      const char *kind, const char *status) {
  char id[19] = "0x", trace[33], span[17], parent[17];
  hex(sp->tc.span_id, 8, id + 2);
  hex(sp->tc.trace_id, 16, trace);
  hex(sp->tc.span_id, 8, span);
  hex(sp->parent_id, 8, parent);
  int b = 0, e = 0;
  double tb = 0, te = 0;
  size_t i;
  json_t *ev;
  json_array_foreach(events, i, ev) {
    const char *cat = json_string_value(json_object_get(ev, "cat"));
    const char *eid = json_string_value(json_object_get(ev, "id"));
    if (cat == NULL || strcmp(cat, "span") != 0 || eid == NULL ||
        strcmp(eid, id) != 0)
      continue;
    const char *ph = json_string_value(json_object_get(ev, "ph"));
    json_t *args = json_object_get(ev, "args");
    assert_string_equal(json_string_value(json_object_get(ev, "name")), name);
    if (strcmp(ph, "b") == 0) {
      b++;
      tb = json_number_value(json_object_get(ev, "ts"));
      assert_string_equal(json_string_value(json_object_get(args, "trace_id")),
                          trace);
      assert_string_equal(json_string_value(json_object_get(args, "span_id")),
                          span);
      const char *pid = json_string_value(json_object_get(args, "parent_id"));
      if (strspn(parent, "0") == 16)
        assert_null(pid);
      else
        assert_string_equal(pid, parent);
      assert_string_equal(json_string_value(json_object_get(args, "kind")),
                          kind);
    } else {
      assert_string_equal(ph, "e");
      e++;
      te = json_number_value(json_object_get(ev, "ts"));
      if (status != NULL)
        assert_string_equal(json_string_value(json_object_get(args, "status")),
                            status);
      else
        assert_true(json_is_true(json_object_get(args, "open")));
    }
  }
  assert_int_equal(b, 1);
  assert_int_equal(e, 1);
  assert_true(te >= tb);
}

static void test_recorded(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1 << 20, UVP_RECORD_SPANS), 0);
  uvp_span_t root, child, open, unseen;
  assert_int_equal(uvp_span_begin(f->ctx, &root, "GET /a \"q\"",
                                  UVP_SPAN_SERVER, NULL, UVP_SPAN_NEW_TRACE),
                   0);
  assert_int_equal(uvp_span_enter(f->ctx, &root), 0);
  assert_int_equal(
      uvp_span_begin(f->ctx, &child, "backend", UVP_SPAN_CLIENT, NULL, 0), 0);
  assert_int_equal(
      uvp_span_begin(f->ctx, &open, "still", UVP_SPAN_INTERNAL, NULL, 0), 0);
  assert_int_equal(uvp_span_end(f->ctx, &child, UV_ECONNREFUSED), 0);
  assert_int_equal(uvp_span_end(f->ctx, &root, 0), 0);
  /* Not recorded (spans off): its end records nothing either. */
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1 << 20, UVP_RECORD_WORK), 0);
  assert_int_equal(
      uvp_span_begin(f->ctx, &unseen, "unseen", UVP_SPAN_INTERNAL, NULL, 0), 0);
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1 << 20, UVP_RECORD_ALL), 0);
  assert_int_equal(uvp_span_end(f->ctx, &unseen, 0), 0);

  text_t t = {NULL, 0};
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, NULL, sink, &t};
  assert_true(uvp_ctx_recorder_write(f->ctx, &o) >= 0);
  json_error_t err;
  json_t *doc = json_loads(t.buf, 0, &err);
  if (doc == NULL)
    fail_msg("not JSON: %s at %d", err.text, err.line);
  json_t *events = json_object_get(doc, "traceEvents");
  find_span(events, &root, "GET /a \"q\"", "server", "fulfilled");
  find_span(events, &child, "backend", "client", "ECONNREFUSED");
  find_span(events, &open, "still", "internal", NULL);
  json_t *other = json_object_get(doc, "otherData");
  /* The wall clock at the origin: within a minute of now. */
  uv_timeval64_t tv;
  assert_int_equal(uv_gettimeofday(&tv), 0);
  double wall = json_number_value(json_object_get(other, "wall_origin_ns"));
  assert_true(fabs(wall / 1e9 - (double)tv.tv_sec) < 60);
  assert_int_equal(json_integer_value(json_object_get(other, "pid")),
                   uv_os_getpid());
  json_decref(doc);
  free(t.buf);

  /* The text form says the same in words. */
  t.buf = NULL;
  t.len = 0;
  o.format = UVP_RECORD_TEXT;
  assert_true(uvp_ctx_recorder_write(f->ctx, &o) >= 0);
  char tp[UVP_TRACEPARENT_LEN + 1];
  assert_int_equal(uvp_tracectx_format(&child.tc, tp), 0);
  assert_non_null(strstr(t.buf, tp));
  assert_non_null(strstr(t.buf, "begins: backend (client)"));
  assert_non_null(strstr(t.buf, "ends: ECONNREFUSED"));
  free(t.buf);
  assert_int_equal(uvp_span_end(f->ctx, &open, 0), 0);
}

/* After the close: refused, nothing recorded. */
static void test_closed(void **state) {
  fixture_t *f = *state;
  uvp_span_t s;
  uvp_tracectx_t tc;
  assert_int_equal(uvp_span_begin(f->ctx, &s, "a", 0, NULL, UVP_SPAN_NEW_TRACE),
                   0);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_span_end(ctx, &s, 0), UVP_ECLOSED);
  assert_int_equal(uvp_span_begin(ctx, &s, "a", 0, NULL, UVP_SPAN_NEW_TRACE),
                   UVP_ECLOSED);
  assert_int_equal(parse(TP_VALID, &tc), 0);
  assert_int_equal(uvp_tracectx_set(ctx, &tc, NULL), UVP_ECLOSED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_valid),
      cmocka_unit_test(test_parse_invalid),
      cmocka_unit_test(test_tracestate),
      /* The allocator is replaced while no context exists. */
      cmocka_unit_test(test_set_without_memory),
      FIXTURE_TEST(test_scope_carries_it),
      FIXTURE_TEST(test_spans),
      FIXTURE_TEST(test_ids_unique),
      cmocka_unit_test(test_ids_per_thread),
      FIXTURE_TEST(test_recorded),
      FIXTURE_TEST(test_closed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

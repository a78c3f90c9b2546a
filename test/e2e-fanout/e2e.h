/* End-to-end scaffolding for uvp-fanout: run the real binary as a child
 * (uvp_spawn), parse its --json output with a small strict parser, and
 * look rows up by URL.  The binary's path is argv[1], given by meson. */
#ifndef E2E_FANOUT_H
#define E2E_FANOUT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../helpers.h"

static const char *fanout_path __attribute__((unused));

/* ---- children ------------------------------------------------------------ */

/* Run argv (argv[0] looked up in PATH unless it has a slash) to completion
 * with the fixture's loop; returns the result, owned by *keep (release it).
 * `server_stop`, if set, runs when the child is done: the loop would never
 * end while an in-process server listens. */
typedef struct child_s {
  void (*stop)(void *);
  void *stop_arg;
} child_t;

static inline uvp_ret_t child_exited(void *arg, const uvp_outcome_t *in) {
  child_t *c = arg;
  (void)in;
  if (c->stop != NULL)
    c->stop(c->stop_arg);
  return uvp_ret_pass();
}

static inline uvp_process_result_t *run_child_with(fixture_t *f, char **argv,
                                                   void (*stop)(void *),
                                                   void *arg,
                                                   uvp_promise_t **keep) {
  uvp_spawn_opts_t o = {.file = argv[0], .args = argv};
  uvp_promise_t *p, *after;
  child_t c = {stop, arg};
  assert_int_equal(uvp_spawn(f->ctx, &o, &p), 0);
  assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, child_exited, &c, &after), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(after), UVP_FULFILLED);
  uvp_promise_release(after);
  *keep = p;
  return uvp_promise_value(p);
}

static inline uvp_process_result_t *run_child(fixture_t *f, char **argv,
                                              uvp_promise_t **keep) {
  return run_child_with(f, argv, NULL, NULL, keep);
}

/* What the demo's /reset (a TCP reset after the head) reads as: under
 * wine (.ci/mingw) the reset reaches libcurl as the end of the stream
 * ("Empty reply from server"). */
#if defined(_WIN32)
#define E2E_RESET_RESULT "EPROTO"
#else
#define E2E_RESET_RESULT "ECONNRESET"
#endif

/* What libcurl says of a TLS handshake with a server that speaks plain
 * HTTP: OpenSSL's reason, or Schannel's (Windows' libcurl, .ci/mingw). */
#if defined(_WIN32)
#define E2E_TLS_WORDS "schannel: failed to receive handshake"
#else
#define E2E_TLS_WORDS "wrong version number"
#endif

/* valgrind's path, or NULL if it is not installed or cannot read the
 * binary (UVP_E2E_VALGRIND=0, set by meson for non-gcc builds). */
static inline const char *find_valgrind(void) {
#if defined(_WIN32)
  return NULL; /* (under wine, Z:/usr/bin/valgrind is the Linux one) */
#endif
  const char *env = getenv("UVP_E2E_VALGRIND");
  if (env != NULL && strcmp(env, "0") == 0)
    return NULL;
  static const char *const where[] = {"/usr/bin/valgrind",
                                      "/usr/local/bin/valgrind"};
  for (size_t i = 0; i < sizeof(where) / sizeof(*where); i++)
    if (access(where[i], X_OK) == 0)
      return where[i];
  return NULL;
}

/* test/valgrind.supp (meson gives its path to the uvp-fanout tests, the
 * ones that run it under valgrind): one-time global allocations of
 * libcurl, OpenSSL and nghttp2 only, each justified there. */
#ifndef UVP_VALGRIND_SUPP
#define UVP_VALGRIND_SUPP "/dev/null"
#endif
#define VALGRIND_ARGS                                                          \
  "--quiet", "--error-exitcode=99", "--leak-check=full",                       \
      "--errors-for-leak-kinds=definite,indirect,possible",                    \
      "--suppressions=" UVP_VALGRIND_SUPP

/* ---- servers ------------------------------------------------------------- */

/* One blocking connect to 127.0.0.1:port: 0 if something listens. */
static inline int connect_once(int port) {
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

/* Until something listens on the port (5 s at most). */
static inline int wait_listening(int port) {
  for (int i = 0; i < 250; i++) {
    if (connect_once(port) == 0)
      return 0;
    usleep(20000);
  }
  return -1;
}

/* ---- a strict parser for the flat JSON objects uvp-fanout prints -------- */

enum { J_STRING = 's', J_NUMBER = 'n', J_BOOL = 'b', J_NULL = 'z' };

typedef struct jfield_s {
  char key[32];
  char val[512];
  int type;
} jfield_t;

typedef struct jobj_s {
  int n;
  jfield_t f[24];
} jobj_t;

static inline const char *j_ws(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

/* A JSON string at s (after its opening quote) into out; returns the
 * position after the closing quote or NULL. */
static inline const char *j_string(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (;;) {
    unsigned char c = (unsigned char)*s++;
    if (c == '"')
      break;
    if (c == '\0' || c < 0x20)
      return NULL;
    if (c == '\\') {
      char e = *s++;
      switch (e) {
      case '"':
      case '\\':
      case '/':
        c = (unsigned char)e;
        break;
      case 'n':
        c = '\n';
        break;
      case 't':
        c = '\t';
        break;
      case 'r':
        c = '\r';
        break;
      case 'b':
        c = '\b';
        break;
      case 'f':
        c = '\f';
        break;
      case 'u': {
        unsigned v = 0;
        for (int i = 0; i < 4; i++, s++) {
          char h = *s;
          if (h >= '0' && h <= '9')
            v = v * 16 + (unsigned)(h - '0');
          else if (h >= 'a' && h <= 'f')
            v = v * 16 + (unsigned)(h - 'a' + 10);
          else if (h >= 'A' && h <= 'F')
            v = v * 16 + (unsigned)(h - 'A' + 10);
          else
            return NULL;
        }
        c = v < 0x80 ? (unsigned char)v : '?';
        break;
      }
      default:
        return NULL;
      }
    }
    if (n + 1 >= cap)
      return NULL;
    out[n++] = (char)c;
  }
  out[n] = '\0';
  return s;
}

static inline const char *j_number(const char *s, char *out, size_t cap) {
  const char *b = s;
  if (*s == '-')
    s++;
  if (*s == '0')
    s++;
  else if (*s >= '1' && *s <= '9')
    while (*s >= '0' && *s <= '9')
      s++;
  else
    return NULL;
  if (*s == '.') {
    s++;
    if (!(*s >= '0' && *s <= '9'))
      return NULL;
    while (*s >= '0' && *s <= '9')
      s++;
  }
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-')
      s++;
    if (!(*s >= '0' && *s <= '9'))
      return NULL;
    while (*s >= '0' && *s <= '9')
      s++;
  }
  if ((size_t)(s - b) >= cap)
    return NULL;
  memcpy(out, b, (size_t)(s - b));
  out[s - b] = '\0';
  return s;
}

/* Parse one line holding a flat object (string, number, true/false/null
 * values); 0 on success, -1 on any syntax error or trailing junk. */
static inline int json_parse_flat(const char *s, jobj_t *o) {
  o->n = 0;
  s = j_ws(s);
  if (*s++ != '{')
    return -1;
  s = j_ws(s);
  if (*s == '}')
    return *j_ws(s + 1) == '\0' ? 0 : -1;
  for (;;) {
    if (o->n == (int)(sizeof(o->f) / sizeof(*o->f)))
      return -1;
    jfield_t *fl = &o->f[o->n];
    s = j_ws(s);
    if (*s++ != '"' || (s = j_string(s, fl->key, sizeof(fl->key))) == NULL)
      return -1;
    s = j_ws(s);
    if (*s++ != ':')
      return -1;
    s = j_ws(s);
    if (*s == '"') {
      fl->type = J_STRING;
      s = j_string(s + 1, fl->val, sizeof(fl->val));
    } else if (strncmp(s, "true", 4) == 0 || strncmp(s, "false", 5) == 0) {
      fl->type = J_BOOL;
      size_t l = *s == 't' ? 4 : 5;
      memcpy(fl->val, s, l);
      fl->val[l] = '\0';
      s += l;
    } else if (strncmp(s, "null", 4) == 0) {
      fl->type = J_NULL;
      strcpy(fl->val, "null");
      s += 4;
    } else {
      fl->type = J_NUMBER;
      s = j_number(s, fl->val, sizeof(fl->val));
    }
    if (s == NULL)
      return -1;
    for (int i = 0; i < o->n; i++) /* duplicate keys are a bug here */
      if (strcmp(o->f[i].key, fl->key) == 0)
        return -1;
    o->n++;
    s = j_ws(s);
    if (*s == ',') {
      s++;
      continue;
    }
    if (*s++ != '}')
      return -1;
    return *j_ws(s) == '\0' ? 0 : -1;
  }
}

static inline const jfield_t *jfind(const jobj_t *o, const char *key) {
  for (int i = 0; i < o->n; i++)
    if (strcmp(o->f[i].key, key) == 0)
      return &o->f[i];
  return NULL;
}

static inline const char *jstr(const jobj_t *o, const char *key) {
  const jfield_t *fl = jfind(o, key);
  assert_non_null(fl);
  assert_int_equal(fl->type, J_STRING);
  return fl->val;
}

static inline double jnum(const jobj_t *o, const char *key) {
  const jfield_t *fl = jfind(o, key);
  assert_non_null(fl);
  assert_int_equal(fl->type, J_NUMBER);
  return strtod(fl->val, NULL);
}

static inline int jbool(const jobj_t *o, const char *key) {
  const jfield_t *fl = jfind(o, key);
  assert_non_null(fl);
  assert_int_equal(fl->type, J_BOOL);
  return strcmp(fl->val, "true") == 0;
}

/* ---- uvp-fanout's report ------------------------------------------------- */

typedef struct report_s {
  int nrows;
  jobj_t rows[64];
  jobj_t summary;
} report_t;

/* Split stdout into lines, parse every one, check the row numbering and
 * that the summary comes last. */
static inline void parse_report(const char *out, report_t *rep) {
  char line[2048];
  int have_summary = 0;
  rep->nrows = 0;
  while (*out != '\0') {
    size_t len = strcspn(out, "\n");
    assert_true(len < sizeof(line));
    assert_int_equal(out[len], '\n'); /* every line is terminated */
    memcpy(line, out, len);
    line[len] = '\0';
    out += len + 1;
    assert_false(have_summary); /* nothing after the summary */
    jobj_t o;
    if (json_parse_flat(line, &o) != 0)
      fail_msg("not a JSON object: %s", line);
    if (jfind(&o, "summary") != NULL) {
      assert_true(jbool(&o, "summary"));
      rep->summary = o;
      have_summary = 1;
    } else {
      assert_true(rep->nrows < 64);
      assert_int_equal((int)jnum(&o, "n"), rep->nrows + 1); /* input order */
      rep->rows[rep->nrows++] = o;
    }
  }
  assert_true(have_summary);
}

/* The http:// row whose URL ends with `suffix` (exactly one). */
static inline const jobj_t *row_ending(const report_t *rep,
                                       const char *suffix) {
  const jobj_t *found = NULL;
  size_t sl = strlen(suffix);
  for (int i = 0; i < rep->nrows; i++) {
    const char *url = jstr(&rep->rows[i], "url");
    size_t ul = strlen(url);
    if (strncmp(url, "http://", 7) == 0 && ul >= sl &&
        strcmp(url + ul - sl, suffix) == 0) {
      if (found != NULL)
        fail_msg("two rows end with %s", suffix);
      found = &rep->rows[i];
    }
  }
  if (found == NULL)
    fail_msg("no row for %s", suffix);
  return found;
}

/* A row that answered with `status` and exactly `bytes` body bytes
 * (bytes < 0: any). */
static inline void expect_status(const jobj_t *row, int status, long bytes) {
  const jfield_t *err = jfind(row, "error");
  if (err != NULL)
    fail_msg("%s: expected %d, got %s", jstr(row, "url"), status, err->val);
  assert_int_equal((int)jnum(row, "status"), status);
  assert_int_equal(jbool(row, "ok"), status < 400);
  char buf[16];
  snprintf(buf, sizeof(buf), "%d", status);
  assert_string_equal(jstr(row, "result"), buf);
  if (bytes >= 0)
    assert_int_equal((long)jnum(row, "bytes"), bytes);
  assert_true(jnum(row, "latency_ms") >= 0);
}

/* A row that failed with the error named `name`. */
static inline void expect_error(const jobj_t *row, const char *name) {
  if (jfind(row, "status") != NULL)
    fail_msg("%s: expected %s, got HTTP %s", jstr(row, "url"), name,
             jfind(row, "status")->val);
  assert_string_equal(jstr(row, "error"), name);
  assert_string_equal(jstr(row, "result"), name);
  assert_false(jbool(row, "ok"));
  assert_true(strlen(jstr(row, "message")) > 0);
  assert_int_equal((long)jnum(row, "bytes"), 0);
}

#endif

/* A JSON line written straight into a buffer, byte for byte what jansson
 * 2.14's json_dumps(JSON_COMPACT | JSON_REAL_PRECISION(15)) makes of the
 * same object built in the same order: uvp-fanout writes a row per URL
 * and the coordinator a request body per send, uvp-gateway a summary per
 * request, where building jansson's objects and dumping them (a write
 * callback per token, snprintf per number) cost more than the rest of
 * the work together.  Parsing stays jansson's. */
#ifndef COMMON_JSONW_H
#define COMMON_JSONW_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jsonw_s {
  char *p;
  size_t len, cap;
  bool failed; /* out of memory: the line is not whole */
  bool first;  /* no member yet in the innermost open object or array */
} jsonw_t;

static inline void jsonw_raw(jsonw_t *w, const char *s, size_t n) {
  if (w->failed)
    return;
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n + 1)
      cap *= 2;
    char *p = realloc(w->p, cap);
    if (p == NULL) {
      w->failed = true;
      return;
    }
    w->p = p;
    w->cap = cap;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
  w->p[w->len] = '\0';
}

static inline void jsonw_open(jsonw_t *w) {
  w->len = 0;
  w->failed = false;
  w->first = true;
  jsonw_raw(w, "{", 1);
}

static inline void jsonw_close(jsonw_t *w) { jsonw_raw(w, "}", 1); }

/* An object ('{') or array ('[') opened as a member's value or an array's
 * item, and closed ('}', ']'): its first member or item has no comma
 * before it, what follows it has. */
static inline void jsonw_nest(jsonw_t *w, char open) {
  jsonw_raw(w, &open, 1);
  w->first = true;
}
static inline void jsonw_unnest(jsonw_t *w, char close) {
  jsonw_raw(w, &close, 1);
  w->first = false;
}

/* Before an array's item: a comma unless it is the first. */
static inline void jsonw_item(jsonw_t *w) {
  if (!w->first)
    jsonw_raw(w, ",", 1);
  w->first = false;
}

/* `"key":`, after a comma unless it is the first member; key is ASCII
 * without quotes or backslashes. */
static inline void jsonw_key(jsonw_t *w, const char *key) {
  if (!w->first)
    jsonw_raw(w, ",", 1);
  w->first = false;
  jsonw_raw(w, "\"", 1);
  jsonw_raw(w, key, strlen(key));
  jsonw_raw(w, "\":", 2);
}

/* The length of the UTF-8 sequence at s (at most n bytes), 0 if it is not
 * one jansson accepts (overlong, a surrogate, past U+10FFFF). */
static inline size_t jsonw_utf8(const unsigned char *s, size_t n) {
  unsigned char u = s[0];
  size_t k;
  uint32_t v;
  if (u < 0x80)
    return 1;
  if (u >= 0xC2 && u <= 0xDF)
    k = 2, v = u & 0x1F;
  else if (u >= 0xE0 && u <= 0xEF)
    k = 3, v = u & 0x0F;
  else if (u >= 0xF0 && u <= 0xF4)
    k = 4, v = u & 0x07;
  else
    return 0;
  if (k > n)
    return 0;
  for (size_t i = 1; i < k; i++) {
    if (s[i] < 0x80 || s[i] > 0xBF)
      return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (k == 3 && v < 0x800) ||
      (k == 4 && v < 0x10000))
    return 0;
  return k;
}

/* A string value, escaped as jansson escapes it; false (and nothing
 * written) if s is not UTF-8, where json_string() returns NULL. */
static inline bool jsonw_str(jsonw_t *w, const char *s) {
  size_t n = strlen(s), start = w->len;
  const unsigned char *u = (const unsigned char *)s;
  jsonw_raw(w, "\"", 1);
  size_t run = 0; /* bytes that go as they are, from i - run */
  for (size_t i = 0; i < n;) {
    size_t k = jsonw_utf8(u + i, n - i);
    if (k == 0) {
      w->len = start;
      if (w->p != NULL)
        w->p[start] = '\0';
      return false;
    }
    if (k == 1 && (u[i] < 0x20 || u[i] == '"' || u[i] == '\\')) {
      jsonw_raw(w, s + i - run, run);
      run = 0;
      char esc[8];
      const char *e = esc;
      switch (u[i]) {
      case '\\':
        e = "\\\\";
        break;
      case '"':
        e = "\\\"";
        break;
      case '\b':
        e = "\\b";
        break;
      case '\f':
        e = "\\f";
        break;
      case '\n':
        e = "\\n";
        break;
      case '\r':
        e = "\\r";
        break;
      case '\t':
        e = "\\t";
        break;
      default:
        snprintf(esc, sizeof(esc), "\\u%04X", (unsigned)u[i]);
      }
      jsonw_raw(w, e, strlen(e));
    } else {
      run += k;
    }
    i += k;
  }
  jsonw_raw(w, s + n - run, run);
  jsonw_raw(w, "\"", 1);
  return true;
}

static inline void jsonw_int(jsonw_t *w, int64_t v) {
  char buf[24], *end = buf + sizeof(buf), *d = end;
  uint64_t m = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--d = (char)('0' + m % 10);
    m /= 10;
  } while (m != 0);
  if (v < 0)
    *--d = '-';
  jsonw_raw(w, d, (size_t)(end - d));
}

/* jansson's real: %.15g, ".0" when it would read back as an integer, the
 * exponent without '+' or leading zeros. */
static inline void jsonw_real(jsonw_t *w, double v) {
  char buf[40];
  int n = snprintf(buf, sizeof(buf), "%.15g", v);
  if (n < 0 || (size_t)n >= sizeof(buf) - 3)
    return;
  if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
    buf[n++] = '.';
    buf[n++] = '0';
    buf[n] = '\0';
  }
  char *e = strchr(buf, 'e');
  if (e != NULL) {
    char *start = e + 1, *end = start + 1;
    if (*start == '-')
      start++;
    while (*end == '0')
      end++;
    if (end != start) {
      memmove(start, end, (size_t)(buf + n - end) + 1);
      n -= (int)(end - start);
    }
  }
  jsonw_raw(w, buf, (size_t)n);
}

/* tenths / 10.0 as jsonw_real writes it ("12.3", "5.0"), without
 * snprintf: one decimal is exact in %.15g below 10^14 tenths; from there
 * on, jsonw_real. */
static inline void jsonw_tenths(jsonw_t *w, uint64_t tenths) {
  if (tenths >= 100000000000000ull) {
    jsonw_real(w, (double)tenths / 10.0);
    return;
  }
  char buf[24], *end = buf + sizeof(buf), *d = end;
  *--d = (char)('0' + tenths % 10);
  *--d = '.';
  uint64_t m = tenths / 10;
  do {
    *--d = (char)('0' + m % 10);
    m /= 10;
  } while (m != 0);
  jsonw_raw(w, d, (size_t)(end - d));
}

static inline void jsonw_bool(jsonw_t *w, bool v) {
  jsonw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

static inline void jsonw_null(jsonw_t *w) { jsonw_raw(w, "null", 4); }

#endif

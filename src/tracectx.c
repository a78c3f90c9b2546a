/* W3C trace context, carried by scopes, and spans (uvp/tracing.h).
 *
 * The context lives in the scope (scope.h) as a shared, immutable value,
 * as a slot's value does: setting one makes a new scope, so what
 * captured the old one keeps it, and no scope at all (the common case)
 * means no trace context, found with the NULL compare uvp_tracectx_get
 * makes.  The text forms follow https://www.w3.org/TR/trace-context/. */
#include <string.h>

#include "alloc.h"
#include "scope.h"
#include "watch.h"

/* ---- the text forms ------------------------------------------------------ */

/* A hex digit's value plus one, 0 for any other byte (uppercase too: the
 * specification allows lowercase only). */
#define HEXV(c)                                                                \
  ((c) >= '0' && (c) <= '9'   ? (c) - '0' + 1                                  \
   : (c) >= 'a' && (c) <= 'f' ? (c) - 'a' + 11                                 \
                              : 0)
#define HEXV4(c) HEXV(c), HEXV((c) + 1), HEXV((c) + 2), HEXV((c) + 3)
#define HEXV16(c) HEXV4(c), HEXV4((c) + 4), HEXV4((c) + 8), HEXV4((c) + 12)
#define HEXV64(c)                                                              \
  HEXV16(c), HEXV16((c) + 16), HEXV16((c) + 32), HEXV16((c) + 48)
static const uint8_t hexv[256] = {HEXV64(0), HEXV64(64), HEXV64(128),
                                  HEXV64(192)};

/* n bytes from 2n lowercase hex digits; false on any other character. */
static bool unhex(const char *s, uint8_t *out, size_t n) {
  unsigned bad = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned hi = hexv[(unsigned char)s[2 * i]];
    unsigned lo = hexv[(unsigned char)s[2 * i + 1]];
    bad |= (hi == 0) | (lo == 0);
    out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
  }
  return bad == 0;
}

/* Every byte's two lowercase hex digits, in order. */
#define HEXROW(h)                                                              \
  h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h    \
    "c" h "d" h "e" h "f"
static const char hex_pairs[] = HEXROW("0") HEXROW("1") HEXROW("2") HEXROW("3")
    HEXROW("4") HEXROW("5") HEXROW("6") HEXROW("7") HEXROW("8") HEXROW("9")
        HEXROW("a") HEXROW("b") HEXROW("c") HEXROW("d") HEXROW("e") HEXROW("f");
_Static_assert(sizeof(hex_pairs) == 2 * 256 + 1, "two digits a byte");

/* n bytes as 2n lowercase hex digits at o; returns the end. */
static char *tohex(const uint8_t *b, size_t n, char *o) {
  for (size_t i = 0; i < n; i++, o += 2)
    memcpy(o, hex_pairs + 2 * b[i], 2);
  return o;
}

/* Ids are 8 or 16 bytes: compared a word at a time. */
static bool all_zero(const uint8_t *b, size_t n) {
  uint64_t any = 0, w;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, b + i, 8);
    any |= w;
  }
  for (; i < n; i++)
    any |= b[i];
  return any == 0;
}

static bool ows(char c) { return c == ' ' || c == '\t'; }

int uvp_tracectx_parse(const char *tp, size_t len, uvp_tracectx_t *out) {
  if (tp == NULL || out == NULL)
    return UV_EINVAL;
  while (len > 0 && ows(*tp))
    tp++, len--;
  while (len > 0 && ows(tp[len - 1]))
    len--;
  uint8_t version;
  uvp_tracectx_t tc;
  if (len < UVP_TRACEPARENT_LEN || !unhex(tp, &version, 1) || version == 0xff)
    return UV_EINVAL;
  /* Version 00 is exactly its length; a later one may carry more after a
   * dash, which this version does not read. */
  if (version == 0
          ? len != UVP_TRACEPARENT_LEN
          : len > UVP_TRACEPARENT_LEN && tp[UVP_TRACEPARENT_LEN] != '-')
    return UV_EINVAL;
  if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-' ||
      !unhex(tp + 3, tc.trace_id, 16) || !unhex(tp + 36, tc.span_id, 8) ||
      !unhex(tp + 53, &tc.flags, 1) || all_zero(tc.trace_id, 16) ||
      all_zero(tc.span_id, 8))
    return UV_EINVAL;
  *out = tc;
  return 0;
}

int uvp_tracectx_format(const uvp_tracectx_t *tc, char *out) {
  if (tc == NULL || out == NULL || all_zero(tc->trace_id, 16) ||
      all_zero(tc->span_id, 8))
    return UV_EINVAL;
  char *o = out;
  memcpy(o, "00-", 3);
  o = tohex(tc->trace_id, 16, o + 3);
  *o++ = '-';
  o = tohex(tc->span_id, 8, o);
  *o++ = '-';
  o = tohex(&tc->flags, 1, o);
  *o = '\0';
  _Static_assert(3 + 32 + 1 + 16 + 1 + 2 == UVP_TRACEPARENT_LEN,
                 "traceparent's length");
  return 0;
}

/* tracestate's grammar, as Trace Context has it now (Level 2 and the
 * editor's draft): key = (lcalpha / DIGIT) 0*255 keychar, keychar
 * lowercase, digits, '_', '-', '*', '/' and '@' anywhere after the first
 * (the older "tenant@system" split, with its 241 and 14 limits, is gone:
 * "foo@", "t*242@v" are keys); value = printable ASCII but ',' and '=',
 * no trailing space. */
static bool key_ok(const char *k, size_t n) {
  if (n == 0 || n > 256 ||
      !((k[0] >= 'a' && k[0] <= 'z') || (k[0] >= '0' && k[0] <= '9')))
    return false;
  for (size_t i = 1; i < n; i++) {
    char c = k[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '*' || c == '/' || c == '@'))
      return false;
  }
  return true;
}
static bool value_ok(const char *v, size_t n) {
  if (n == 0 || n > 256 || v[n - 1] == ' ')
    return false;
  for (size_t i = 0; i < n; i++)
    if (v[i] < 0x20 || v[i] > 0x7e || v[i] == ',' || v[i] == '=')
      return false;
  return true;
}

int uvp_tracestate_check(const char *ts, size_t len) {
  if (ts == NULL || len > UVP_TRACESTATE_MAX)
    return UV_EINVAL;
  int members = 0;
  size_t i = 0;
  while (i <= len) {
    size_t end = i;
    while (end < len && ts[end] != ',')
      end++;
    size_t a = i, b = end;
    while (a < b && ows(ts[a]))
      a++;
    while (b > a && ows(ts[b - 1]))
      b--;
    if (a < b) { /* an empty member is allowed, and not counted */
      const char *eq = memchr(ts + a, '=', b - a);
      if (eq == NULL || members == 32 ||
          !key_ok(ts + a, (size_t)(eq - (ts + a))) ||
          !value_ok(eq + 1, (size_t)(ts + b - eq - 1)))
        return UV_EINVAL;
      /* A key twice is kept as it came: the specification lets a vendor
       * pass duplicates on or drop one, and passing the header on byte for
       * byte changes nothing a later hop may rely on. */
      members++;
    }
    i = end + 1;
  }
  return 0;
}

/* ---- the scope's trace context ------------------------------------------ */

static const uvp__tracev_t *current(const uvp_ctx_t *ctx) {
  const uvp__scope_t *s = uvp__head(ctx)->scope;
  return s != NULL ? s->trace : NULL;
}

int uvp_tracectx_get(const uvp_ctx_t *ctx, uvp_tracectx_t *out,
                     const char **tracestate) {
  if (tracestate != NULL)
    *tracestate = NULL;
  if (ctx == NULL)
    return UV_EINVAL;
  const uvp__tracev_t *t = current(ctx);
  if (t == NULL)
    return UV_ENOENT;
  if (out != NULL)
    *out = t->tc;
  if (tracestate != NULL)
    *tracestate = t->state;
  return 0;
}

int uvp_tracectx_set(uvp_ctx_t *ctx, const uvp_tracectx_t *tc,
                     const char *tracestate) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  uvp__tracev_t *t = NULL;
  if (tc != NULL) {
    if (all_zero(tc->trace_id, 16) || all_zero(tc->span_id, 8))
      return UV_EINVAL;
    size_t n = tracestate != NULL ? strlen(tracestate) : 0;
    if (n != 0 && uvp_tracestate_check(tracestate, n) != 0)
      n = 0;
    t = uvp__malloc(sizeof(*t) + (n != 0 ? n + 1 : 0));
    if (t == NULL)
      return UV_ENOMEM;
    t->refs = 0; /* the scope takes the one reference */
    t->tc = *tc;
    t->state = NULL;
    if (n != 0) {
      t->state = (char *)(t + 1);
      memcpy(t->state, tracestate, n + 1);
    }
  }
  uvp__scope_t *s = uvp__scope_with_trace(uvp__head(ctx)->scope, t);
  if (s == NULL) {
    uvp__free(t);
    return UV_ENOMEM;
  }
  uvp__scope_unref(uvp__head(ctx)->scope);
  uvp__head(ctx)->scope = s;
  return 0;
}

/* ---- spans --------------------------------------------------------------- */

/* Ids: splitmix64 over a per-thread seed from the system's randomness.
 * Not for secrets (the W3C ids are not): uniqueness is what counts. */
static UVP__TLS uint64_t rng_state;
static UVP__TLS bool rng_seeded;

static uint64_t rng_next(void) {
  if (UVP__UNLIKELY(!rng_seeded)) {
    uint64_t seed = 0;
    if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0)
      seed = uv_hrtime() ^ (uint64_t)(uintptr_t)&rng_state;
    rng_state = seed;
    rng_seeded = true;
  }
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* n random bytes, never all zero. */
static void random_id(uint8_t *out, size_t n) {
  do {
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = rng_next();
      memcpy(out + i, &v, n - i < 8 ? n - i : 8);
    }
  } while (all_zero(out, n));
}

int uvp_span_begin(uvp_ctx_t *ctx, uvp_span_t *span, const char *name, int kind,
                   const uvp_tracectx_t *parent, unsigned int flags) {
  if (span == NULL || kind < UVP_SPAN_INTERNAL || kind > UVP_SPAN_CONSUMER ||
      (flags & ~(unsigned)UVP_SPAN_NEW_TRACE) != 0)
    return UV_EINVAL;
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (parent != NULL &&
      (all_zero(parent->trace_id, 16) || all_zero(parent->span_id, 8)))
    return UV_EINVAL;
  if (parent == NULL && current(ctx) != NULL)
    parent = &current(ctx)->tc;
  if (parent == NULL && !(flags & UVP_SPAN_NEW_TRACE))
    return UV_ENOENT;
  memset(span, 0, sizeof(*span));
  if (parent != NULL) {
    memcpy(span->tc.trace_id, parent->trace_id, 16);
    memcpy(span->parent_id, parent->span_id, 8);
    /* The flags a level defines go on; the others are reserved, and a
     * vendor sets them to zero (Level 2). */
    span->tc.flags = parent->flags & (UVP_TRACE_SAMPLED | UVP_TRACE_RANDOM);
  } else {
    random_id(span->tc.trace_id, 16);
    /* Level 2: a trace id whose right-most 7 bytes are (pseudo-)random
     * says so, which lets a sampler downstream use them as its coin. */
    span->tc.flags = UVP_TRACE_SAMPLED | UVP_TRACE_RANDOM;
  }
  random_id(span->tc.span_id, 8);
  span->kind = kind;
  span->start_ns = uv_hrtime();
  if (uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_SPAN_BEGIN, span, name != NULL ? name : "", 0);
  return 0;
}

int uvp_span_end(uvp_ctx_t *ctx, uvp_span_t *span, int status) {
  if (span == NULL)
    return UV_EINVAL;
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (span->ended)
    return UV_EALREADY;
  span->ended = 1;
  if (span->rec != 0 && uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_SPAN_END, span, NULL, status);
  return 0;
}

int uvp_span_enter(uvp_ctx_t *ctx, const uvp_span_t *span) {
  if (span == NULL)
    return UV_EINVAL;
  const uvp__tracev_t *t = ctx != NULL ? current(ctx) : NULL;
  return uvp_tracectx_set(ctx, &span->tc, t != NULL ? t->state : NULL);
}

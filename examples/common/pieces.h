/* Text joined from pieces, for the lines an HTTP server writes per
 * request (a response's head, its headers, a request id), where
 * snprintf's format parsing and stream machinery cost several times the
 * copies (uvp-gateway's four a request were 4 700 of its 25 700
 * instructions: docs/internals/curl.md 16.10).  pieces_join keeps
 * snprintf's contract: it returns the whole length, and writes the text,
 * terminated, only if it fits in cap. */
#ifndef COMMON_PIECES_H
#define COMMON_PIECES_H

#include <stdint.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t n;
} piece_t;

/* A string literal's piece, its length known at compile time. */
#define PIECE_LIT(lit) ((piece_t){"" lit, sizeof(lit) - 1})

static inline piece_t piece_str(const char *s) {
  return (piece_t){s, strlen(s)};
}

/* PIECE_DIGITS bytes hold any uint64_t's decimal digits. */
enum { PIECE_DIGITS = 20 };

/* v in decimal, written at the end of digits[]. */
static inline piece_t piece_u64(char digits[PIECE_DIGITS], uint64_t v) {
  char *end = digits + PIECE_DIGITS, *d = end;
  do {
    *--d = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return (piece_t){d, (size_t)(end - d)};
}

static inline size_t pieces_join(char *dst, size_t cap, const piece_t *p,
                                 size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += p[i].n;
  if (total < cap) {
    char *o = dst;
    for (size_t i = 0; i < n; i++) {
      memcpy(o, p[i].s, p[i].n);
      o += p[i].n;
    }
    *o = '\0';
  }
  return total;
}

#endif

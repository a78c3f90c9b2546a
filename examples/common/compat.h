/* POSIX calls the tools use that Windows' C runtime (mingw-w64's, for
 * .ci/mingw) does not have, written once here in C11 so that the tools
 * build unchanged there: strndup and getline.  The library itself needs
 * neither.  (And how a printf-like function says so, on both.) */
#ifndef COMPAT_H
#define COMPAT_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* printf's format checks for a function that formats with vprintf: on
 * mingw-w64, whose gcc checks "printf" as Microsoft's runtime has it,
 * the C99 formats (%zu, %llu) that __USE_MINGW_ANSI_STDIO gives. */
#if defined(__MINGW32__) && !defined(__clang__)
#define COMPAT_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#else
#define COMPAT_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#endif

/* strndup: at most n bytes of s, terminated; NULL without memory. */
static inline char *compat_strndup(const char *s, size_t n) {
  size_t len = 0;
  while (len < n && s[len] != '\0')
    len++;
  char *d = malloc(len + 1);
  if (d != NULL) {
    memcpy(d, s, len);
    d[len] = '\0';
  }
  return d;
}

/* getline: the next line of f (its '\n' kept) in *line, grown as needed
 * (*line and *cap as getline takes them: NULL and 0 at first, freed by
 * the caller); its length, or -1 at the end of the file or on an error
 * (ferror tells which; errno is ENOMEM without memory). */
static inline ssize_t compat_getline(char **line, size_t *cap, FILE *f) {
  size_t len = 0;
  int c;
  while ((c = getc(f)) != EOF) {
    if (len + 2 > *cap) {
      size_t n = *cap < 64 ? 128 : *cap * 2;
      char *p = n > *cap && n < SIZE_MAX / 2 ? realloc(*line, n) : NULL;
      if (p == NULL) {
        errno = ENOMEM;
        return -1;
      }
      *line = p;
      *cap = n;
    }
    (*line)[len++] = (char)c;
    if (c == '\n')
      break;
  }
  if (len == 0)
    return -1;
  (*line)[len] = '\0';
  return (ssize_t)len;
}

#endif

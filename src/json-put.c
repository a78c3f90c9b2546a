/* Text for the dumps' and the console's JSON (json-put.h). */
#include "json-put.h"

#include <stdarg.h>
#include <stdio.h>

void uvp__putf(uvp__put_fn put, void *to, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n > 0)
    put(to, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

void uvp__put_json_str(uvp__put_fn put, void *to, const char *s, size_t n) {
  put(to, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      put(to, esc, 2);
    } else if (c == 0) {
      put(to, "?", 1);
    } else if (c < 0x20 || c >= 0x7f) {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      put(to, esc, 6);
    } else {
      put(to, (const char *)&c, 1);
    }
  }
  put(to, "\"", 1);
}

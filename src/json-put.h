/* Text for the dumps' and the console's JSON: a printf into whatever sink
 * the caller writes to, and any bytes as a JSON string.  Private to src/
 * (dump.c, console-snap.c). */
#ifndef UVP_JSON_PUT_H
#define UVP_JSON_PUT_H

#include <stddef.h>

#include "base.h"

/* The caller's sink: appends n bytes of s to `to` (it may cut them short,
 * or fail and drop them: the helpers below do not ask). */
typedef void (*uvp__put_fn)(void *to, const char *s, size_t n);

/* printf into the sink; what is past 511 bytes of output is dropped. */
void uvp__putf(uvp__put_fn put, void *to, const char *fmt, ...)
    UVP__PRINTF(3, 4);

/* s[0, n) as a JSON string, quotes included: valid JSON for any bytes.
 * The quote and the backslash are escaped, every other byte under 0x20 or
 * from 0x7f is \u00XX, and a NUL byte is '?': "\u0000" is valid JSON, but
 * most C readers (jansson among them) refuse it by default, and these
 * strings are for people. */
void uvp__put_json_str(uvp__put_fn put, void *to, const char *s, size_t n);

#endif

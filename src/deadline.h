/* Private to src/: deadlines (deadline.c), which scopes carry (scope.h).
 * What the layers that make scopes need: a scope with a deadline `ms`
 * from now, or the nearer one its base already has. */
#ifndef UVP_DEADLINE_H
#define UVP_DEADLINE_H

#include "scope.h"

/* A scope like `base` (may be NULL) whose deadline is `ms` from now, or
 * base's own if that one is nearer (then base, held again).  NULL: no
 * memory.  file:line is where it was set, for what it cuts (cause.h). */
uvp__scope_t *uvp__scope_within(uvp_ctx_t *ctx, uvp__scope_t *base, uint64_t ms,
                                const char *file, int line);

/* Milliseconds until the deadline scope s carries (0: passed), or -1 if it
 * carries none. */
int64_t uvp__deadline_left_in(const uvp__scope_t *s);

#endif

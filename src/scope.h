/* Private to src/: scopes, what a handler, a fiber or a group member sees
 * of where its work came from: the context slots the program set (a
 * request id, say) and the group the work belongs to.
 *
 * A scope is immutable and reference counted: setting a slot makes a new
 * one from the current (the slots' values are shared through boxes of
 * their own), and every reaction, fiber and group member captures the
 * scope current when it is registered, spawned or added, and runs under
 * it.  No scope at all is the common case and costs a NULL compare. */
#ifndef UVP_SCOPE_H
#define UVP_SCOPE_H

#include "sched.h"

typedef struct uvp__slotval_s uvp__slotval_t;
typedef struct uvp__scope_s uvp__scope_t;
struct uvp__scope_s {
  uint32_t refs;
  uvp__slotval_t *slots[UVP_SCOPE_SLOTS];
  struct uvp_group_s *group; /* what the work run under it belongs to */
};

uvp__scope_t *uvp__scope_ref(uvp__scope_t *s);
void uvp__scope_unref(uvp__scope_t *s); /* s may be NULL */

/* A scope like `base` (may be NULL) but for `group`. NULL: no memory. */
uvp__scope_t *uvp__scope_with_group(uvp__scope_t *base,
                                    struct uvp_group_s *group);

/* ctx->scope holds a reference to the current scope.  Capture it: */
static inline uvp__scope_t *uvp__scope_capture(const uvp_ctx_t *ctx) {
  return ctx->scope != NULL ? uvp__scope_ref(ctx->scope) : NULL;
}
/* Run what follows under s, giving it the reference the caller holds (a
 * capture's); returns the scope to restore afterwards. */
static inline uvp__scope_t *uvp__scope_enter(uvp_ctx_t *ctx, uvp__scope_t *s) {
  uvp__scope_t *was = ctx->scope;
  ctx->scope = s;
  return was;
}
/* Back to `was`: the scope current now (s, or one a slot set made while
 * s ran) loses the reference.  A context closed meanwhile let go of what
 * was current then; nothing would let go of `was` after it. */
static inline void uvp__scope_leave(uvp_ctx_t *ctx, uvp__scope_t *was) {
  uvp__scope_t *s = ctx->scope;
  ctx->scope = was;
  if (UVP__UNLIKELY(s != NULL))
    uvp__scope_unref(s);
  if (UVP__UNLIKELY(ctx->closed)) {
    ctx->scope = NULL;
    uvp__scope_unref(was);
  }
}

/* The group the running work belongs to, if any. */
static inline struct uvp_group_s *uvp__scope_group(const uvp_ctx_t *ctx) {
  return ctx->scope != NULL ? ctx->scope->group : NULL;
}

#endif

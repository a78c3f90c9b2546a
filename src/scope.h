/* Private to src/: scopes, what a handler, a fiber or a group member sees
 * of where its work came from: the context slots the program set (a
 * request id, say) and the owner the work belongs to.
 *
 * A scope is immutable and reference counted: setting a slot makes a new
 * one from the current (the slots' values are shared through boxes of
 * their own), and every reaction, fiber and group member captures the
 * scope current when it is registered, spawned or added, and runs under
 * it.  No scope at all is the common case and costs a NULL compare. */
#ifndef UVP_SCOPE_H
#define UVP_SCOPE_H

#include "head.h"

/* What a scope carries for the work run under it, each filled in by a
 * layer above that embeds it in an object of its own: the owner the work
 * belongs to and answers to (a task group, group.c), and its deadline
 * (deadline.c).  The layers that start work tell them about it without
 * knowing what they are: a libuv request or handle from its start to its
 * end (the operation layer, TCP, timers), and the promise of any work
 * that can be stopped (those, fibers, groups' joins); scopes hold them
 * while they name them.  A hook a carrier has no use for is NULL. */
typedef struct uvp__owner_s uvp__owner_t;
typedef struct uvp__owner_ops_s {
  /* A libuv request or handle started under it, and its end: the owner's
   * work is not done while one is open. */
  void (*work_begin)(uvp__owner_t *o);
  void (*work_end)(uvp__owner_t *o);
  /* The promise of work started under it, which cancelling stops: 0, or
   * UV_ENOMEM (not watched). */
  int (*watch)(uvp__owner_t *o, uvp_promise_t *p);
  /* A scope names it, and no longer: it must stay in memory meanwhile. */
  void (*scope_made)(uvp__owner_t *o);
  void (*scope_gone)(uvp__owner_t *o);
  /* The task dump: what it is ("group at file:line"), the scope its own
   * work runs in (*scope, may be NULL), and the carrier of the same kind
   * it answers to in turn (a group's parent), or NULL. */
  const uvp__owner_t *(*describe)(const uvp__owner_t *o, char *buf, size_t cap,
                                  const struct uvp__scope_s **scope);
} uvp__owner_ops_t;
struct uvp__owner_s {
  /* Aligned to 8, everywhere: a record of work keeps its owner's address
   * with three flags in the low bits (work-door.h). */
  _Alignas(8) const uvp__owner_ops_t *ops;
};

typedef struct uvp__slotval_s uvp__slotval_t;
/* A trace context (tracectx.c), shared by the scopes made from one
 * another as a slot's value is. */
typedef struct uvp__tracev_s {
  uint32_t refs;
  uvp_tracectx_t tc;
  char *state; /* its tracestate, allocated with it; NULL: none */
} uvp__tracev_t;
typedef struct uvp__scope_s uvp__scope_t;
struct uvp__scope_s {
  uint32_t refs;
  uvp__slotval_t *slots[UVP_SCOPE_SLOTS];
  uvp__owner_t *owner;    /* what the work run under it belongs to, or NULL */
  uvp__owner_t *deadline; /* when it must end (deadline.c), or NULL */
  /* A deadline a shield with none (UVP_NO_DEADLINE) took the place of:
   * held, so that the work it watches stays watched (deadline.c). */
  uvp__owner_t *held;
  uvp__tracev_t *trace; /* its W3C trace context, or NULL */
};

uvp__scope_t *uvp__scope_ref(uvp__scope_t *s);
/* The value of slot i of s (NULL: unset, or s NULL). */
void *uvp__scope_slot(const uvp__scope_t *s, unsigned i);
void uvp__scope_unref(uvp__scope_t *s); /* s may be NULL */

/* A scope like `base` (may be NULL) but for `owner` (or with `deadline`,
 * holding `held`: see above).  NULL: no memory. */
uvp__scope_t *uvp__scope_with_owner(uvp__scope_t *base, uvp__owner_t *owner);
uvp__scope_t *uvp__scope_with_deadline(uvp__scope_t *base,
                                       uvp__owner_t *deadline,
                                       uvp__owner_t *held);
/* A scope like base but carrying trace context t (NULL: none; held). */
uvp__scope_t *uvp__scope_with_trace(uvp__scope_t *base, uvp__tracev_t *t);
void uvp__tracev_unref(uvp__tracev_t *t); /* t may be NULL */

/* The head's scope holds a reference to the current scope.  Capture it: */
static inline uvp__scope_t *uvp__scope_capture(const uvp_ctx_t *ctx) {
  return uvp__head(ctx)->scope != NULL ? uvp__scope_ref(uvp__head(ctx)->scope)
                                       : NULL;
}
/* Run what follows under s, giving it the reference the caller holds (a
 * capture's); returns the scope to restore afterwards. */
static inline uvp__scope_t *uvp__scope_enter(uvp_ctx_t *ctx, uvp__scope_t *s) {
  uvp__scope_t *was = uvp__head(ctx)->scope;
  uvp__head(ctx)->scope = s;
  return was;
}
/* Back to `was`: the scope current now (s, or one a slot set made while
 * s ran) loses the reference.  A context closed meanwhile let go of what
 * was current then; nothing would let go of `was` after it. */
static inline void uvp__scope_leave(uvp_ctx_t *ctx, uvp__scope_t *was) {
  uvp__scope_t *s = uvp__head(ctx)->scope;
  uvp__head(ctx)->scope = was;
  if (UVP__UNLIKELY(s != NULL))
    uvp__scope_unref(s);
  if (UVP__UNLIKELY(uvp__closed(ctx))) {
    uvp__head(ctx)->scope = NULL;
    uvp__scope_unref(was);
  }
}

/* The owner of the running work, if any. */
static inline uvp__owner_t *uvp__scope_owner(const uvp_ctx_t *ctx) {
  return uvp__head(ctx)->scope != NULL ? uvp__head(ctx)->scope->owner : NULL;
}

/* A libuv request or handle starts now: its owner, told (NULL: none), to
 * give to uvp__work_end once libuv is done with it. */
static inline uvp__owner_t *uvp__work_begin(const uvp_ctx_t *ctx) {
  uvp__owner_t *o = uvp__scope_owner(ctx);
  if (o != NULL)
    o->ops->work_begin(o);
  return o;
}

/* p is the promise of work just started under the current scope, which
 * cancelling it stops: the scope's deadline, if any, watches it.  No
 * deadline costs a NULL compare. */
static inline int uvp__watch_in(const uvp__scope_t *s, uvp_promise_t *p) {
  if (UVP__UNLIKELY(s != NULL && s->deadline != NULL))
    return s->deadline->ops->watch(s->deadline, p);
  return 0;
}
static inline int uvp__scope_watch(const uvp_ctx_t *ctx, uvp_promise_t *p) {
  return uvp__watch_in(uvp__head(ctx)->scope, p);
}
static inline void uvp__work_end(uvp__owner_t *o) {
  if (o != NULL)
    o->ops->work_end(o);
}

#endif

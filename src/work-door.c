/* The door of uvp's work (work-door.h): start, attach and the dispatcher
 * every such promise's cancel hook is. */
#include <stddef.h>

#include "work-door.h"

_Static_assert(offsetof(uvp__work_t, p) == 0,
               "a record's address is its promise's slot");
_Static_assert(_Alignof(uvp__owner_t) >= 4, "an owner's low bits are free");

void uvp__work_hook(uvp_promise_t *p, void *arg) {
  uvp__work_t *w = arg;
  /* Rejected by the cut (cancel_with), a teardown's UVP_ECLOSED too. */
  w->cls->cancel(w, p, p->state == UVP__S_REJECTED ? p->code : UV_ECANCELED);
}

/* Tell everyone who counts the work. */
static void begin(uvp_ctx_t *ctx, uvp__work_t *w, unsigned flags) {
  uintptr_t told = 0;
  if (!(flags & UVP__WORK_NOT_IN_LOOP)) {
    uvp__loop_work_begin(ctx);
    told = UVP__TOLD_LOOP;
  }
  if (!(flags & UVP__WORK_UNOWNED))
    told |= (uintptr_t)uvp__work_begin(ctx);
  if (UVP__UNLIKELY(uvp__head(ctx)->vclock) && !(flags & UVP__WORK_IDLE)) {
    uvp__head(ctx)->real_work++;
    told |= UVP__TOLD_REAL;
  }
  w->told = told;
}

int uvp__work_start_in(uvp_ctx_t *ctx, const uvp__scope_t *watch,
                       uvp__work_t *w, const uvp__work_class_t *cls,
                       const char *file, int line) {
  w->cls = cls;
  w->told = 0; /* done before a start tells nothing */
  uvp_promise_t *p =
      (cls->flags & UVP__WORK_MOVABLE)
          ? uvp__movable_new(ctx, file, line, uvp__work_hook, &w->p)
          : uvp__produced_new(ctx, file, line, uvp__work_hook, w);
  w->p = p;
  if (p == NULL)
    return UV_ENOMEM;
  begin(ctx, w, cls->flags);
  /* A deadline stops work from the loop, never inside this call: the
   * producer starts its work first. */
  (void)uvp__watch_in(watch, p);
  return 0;
}

int uvp__work_attach(uvp_ctx_t *ctx, uvp__work_t *w, uvp_promise_t *p,
                     const uvp__work_class_t *cls) {
  int rc = uvp__scope_watch(ctx, p);
  if (rc != 0)
    return rc;
  w->p = p;
  w->cls = cls;
  p->value = w;
  p->fn.cancel_cb = uvp__work_hook;
  p->flags |= UVP__F_CANCEL;
  begin(ctx, w, cls->flags);
  return 0;
}

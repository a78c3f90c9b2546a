/* The door of uvp's work (work-door.h): attach, and the dispatcher every
 * such promise's cancel hook is (start is inline). */
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
  uvp__work_begin_(ctx, w, cls->flags);
  return 0;
}

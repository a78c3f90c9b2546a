/* The door of uvp's work (work-door.h): attach, and the dispatcher every
 * such promise's cancel hook is (start is inline). */
#include <stddef.h>
#include <string.h>

#include "alloc.h"
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
  uvp__promise_hook_set(p, uvp__work_hook, w);
  uvp__work_begin_(ctx, w, cls->flags);
  return 0;
}

/* 1 to UVP__NAME_MAX bytes, printable ASCII but for '"' and '\\': shown as
 * they are, quoted, in the text dump and the traces, and as they are in
 * JSON strings. */
bool uvp__name_ok(const char *name) {
  if (name == NULL)
    return true;
  size_t n = 0;
  for (; name[n] != '\0'; n++)
    if (n == UVP__NAME_MAX || name[n] < 0x20 || name[n] > 0x7e ||
        name[n] == '"' || name[n] == '\\')
      return false;
  return n > 0;
}

char *uvp__name_dup(const char *name) {
  size_t n = strlen(name) + 1;
  char *copy = uvp__malloc(n);
  if (copy != NULL)
    memcpy(copy, name, n);
  return copy;
}

/* The head of a context (head.h): what names a thread, the check every
 * loop-thread-only call makes, the layers' slots. */
#include "head.h"

#include "alloc.h"

/* Every thread has its own: its address names the thread. */
UVP__TLS char uvp__thread_anchor;
UVP__TLS int uvp__close_refused;

int uvp__ctx_check_slow(const uvp_ctx_t *ctx) {
  if (ctx == NULL)
    return UV_EINVAL;
  if (uvp__refused_thread(ctx))
    return UVP_ETHREAD;
  return uvp__head(ctx)->closed ? UVP_ECLOSED : 0;
}

void *uvp__ext_make(uvp_ctx_t *ctx, int slot, size_t size, size_t offset,
                    const uvp__ext_t *hooks) {
  char *st = uvp__calloc(1, size);
  if (st == NULL)
    return NULL;
  uvp__ext_t *e = (uvp__ext_t *)(void *)(st + offset);
  *e = *hooks;
  uvp__head(ctx)->ext[slot] = e;
  return st;
}

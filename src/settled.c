/* What a combinator and a map share (see settled.h). */
#include <string.h>

#include "settled.h"

void *uvp__fanin_new(uvp_ctx_t *ctx, size_t head, size_t n, size_t extra,
                     const uvp__cell_ops_t *ops, uvp_cancel_cb hook,
                     const char *file, int line) {
  /* Aligned for the cells' tags even where malloc promises only 8. */
  enum { ALIGN = UVP__SLOT_ALIGN };
  size_t per = sizeof(uvp__slot_t) + extra;
  head = (head + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (n > (SIZE_MAX - head - ALIGN) / per)
    return NULL;
  size_t bytes = head + ALIGN - 1 + n * per;
  void *block = uvp__block_get(uvp__ctx_blocks(ctx), &bytes);
  if (block == NULL)
    return NULL;
  uvp__fanin_t *f = (uvp__fanin_t *)(((uintptr_t)block + ALIGN - 1) &
                                     ~(uintptr_t)(ALIGN - 1));
  memset(f, 0, head);
  f->result = uvp__produced_new(ctx, file, line, hook, f);
  if (f->result == NULL) {
    uvp__block_put(uvp__ctx_blocks(ctx), block, bytes, true);
    return NULL;
  }
  f->slots = (uvp__slot_t *)(void *)((char *)f + head);
  f->owner.ops = ops;
  f->owner.cells = &f->slots[0].cell;
  f->ctx = ctx;
  f->block = block;
  f->bytes = bytes;
  f->n = n;
  f->attached = 1;
  f->inputs_held = true;
  return f;
}

_Static_assert(offsetof(uvp__fanin_t, owner) == 0,
               "a cell's owner is its fan-in");
const uvp_promise_t *uvp__fanin_settles(const uvp__cell_owner_t *owner) {
  const uvp__fanin_t *f = (const uvp__fanin_t *)(const void *)owner;
  return f->result != NULL && uvp__is_pending(f->result) ? f->result : NULL;
}

void uvp__fanin_unref(uvp__fanin_t *f) {
  if (--f->attached == 0)
    uvp__block_put(uvp__ctx_blocks(f->ctx), f->block, f->bytes,
                   !uvp__closed(f->ctx));
}

void uvp__fanin_release_share(uvp__fanin_t *f) {
  f->attached++; /* releasing inputs may drop cells that unref us */
  if (f->inputs_held) {
    f->inputs_held = false;
    for (size_t i = 0; i < f->n; i++)
      if (uvp__slot_input(&f->slots[i]) != NULL)
        uvp__unref(uvp__slot_input(&f->slots[i]));
  }
  f->attached--;       /* the guard */
  uvp__fanin_unref(f); /* the share */
}

void uvp__fanin_detach(uvp__fanin_t *f) {
  UVP__CHECK(f->inputs_held && f->attached > 1);
  for (size_t i = 0; i < f->n; i++) {
    uvp_promise_t *in = uvp__slot_input(&f->slots[i]);
    if (in != NULL && uvp__is_pending(in) &&
        uvp__unobserve(in, &f->slots[i].cell.r))
      uvp__fanin_unref(f);
  }
}

void uvp__fanin_drop_result(uvp__fanin_t *f) {
  uvp_promise_t *r = f->result;
  f->result = NULL;
  uvp__unref(r);
}

/* The door of uvp's work (work-door.h): attach, and the dispatcher every
 * such promise's cancel hook is (start is inline). */
#include <stddef.h>
#include <string.h>

#include "alloc.h"
#include "door.h"
#include "work-cut.h"
#include "work-door.h"

_Static_assert(offsetof(uvp__work_t, p) == 0,
               "a record's address is its promise's slot");
_Static_assert(_Alignof(uvp__owner_t) > UVP__TOLD_BITS,
               "an owner's low bits are free");

void uvp__work_hook(uvp_promise_t *p, void *arg) {
  uvp__work_t *w = arg;
  /* Rejected by the cut (cancel_with), a teardown's UVP_ECLOSED too. */
  w->cls->cancel(w, p, p->state == UVP__S_REJECTED ? p->code : UV_ECANCELED);
}

/* ---- the cuts, through the core's door (door.h) ---------------------------
 */

/* The frame a cut keeps on the core's stack while p's hook runs. */
typedef struct {
  uvp__cut_frame_t cut;
  bool on; /* the record was marked: cut_end keeps it */
} work_frame_t;
_Static_assert(sizeof(work_frame_t) <= sizeof(uvp__door_frame_t),
               "a cut's frame fits the core's room");

/* The cut frame (work-cut.h): the record is marked before the promise
 * rejects, and kept once the hook has returned unless it ended inside. */
static void cut_begin(uvp_ctx_t *ctx, uvp__cut_frame_t *f, uvp__work_t *w,
                      uint32_t born) {
  f->w = w;
  f->born = born;
  f->up = uvp__head(ctx)->cutting;
  uvp__head(ctx)->cutting = f;
  w->told |= UVP__TOLD_CUT;
}
static void cut_end(uvp_ctx_t *ctx, uvp__cut_frame_t *f) {
  uvp__head(ctx)->cutting = f->up;
  if (f->w != NULL)
    uvp__work_keep(ctx, f->w, f->born);
}

static bool work_cut_begin(uvp_ctx_t *ctx, uvp_promise_t *p, void *arg,
                           int code, uvp__door_frame_t *df) {
  uvp__work_t *w = arg;
  work_frame_t *f = (work_frame_t *)(void *)df;
  f->on = false;
  if (w->cls->flags & UVP__WORK_WINDDOWN) {
    /* Cut, not settled: its producer settles it once its work has ended
     * (a teardown settles it at once, and is no cut here).  A producer
     * that winds down knows two cuts (uvp_promise_cancel_with may give
     * any code): a deadline's, and every other. */
    w->cls->cancel(w, p, code == UV_ETIMEDOUT ? code : UV_ECANCELED);
    return true;
  }
  /* Settled by the core next, its work may wind down after: the task dump
   * keeps the record meanwhile (`born` goes with the rejection). */
  if (!(w->cls->flags & (UVP__WORK_TASK | UVP__WORK_GONE_AT_CUT)) &&
      w->p != NULL && !(w->told & UVP__TOLD_CUT)) {
    cut_begin(ctx, &f->cut, w, p->born);
    f->on = true;
  }
  return false;
}

static void work_cut_end(uvp_ctx_t *ctx, uvp__door_frame_t *df) {
  work_frame_t *f = (work_frame_t *)(void *)df;
  if (f->on)
    cut_end(ctx, &f->cut);
}

UVP__TLS bool uvp__work_door_here;

void uvp__work_door_open(void) {
  static const uvp__door_t door = {.cut_hook = uvp__work_hook,
                                   .cut_begin = work_cut_begin,
                                   .cut_end = work_cut_end};
  uvp__door_open(UVP__DOOR_WORK, &door);
  uvp__work_door_here = true;
}

int uvp__work_attach(uvp_ctx_t *ctx, uvp__work_t *w, uvp_promise_t *p,
                     const uvp__work_class_t *cls) {
  int rc = uvp__scope_watch(ctx, p);
  if (rc != 0)
    return rc;
  w->p = p;
  w->cls = cls;
  if (UVP__UNLIKELY(!uvp__work_door_here))
    uvp__work_door_open();
  uvp__promise_hook_set(p, uvp__work_hook, w);
  uvp__work_begin_(ctx, w, cls->flags);
  if (uvp__recording(ctx)) { /* its site: where its promise was made */
    const char *file;
    int line;
    uvp__site_get(p->site, &file, &line);
    uvp__tell_at(ctx, UVP__HEARD_WORK_START, w, NULL, file, line);
  }
  return 0;
}

/* ---- the records cut and winding down ------------------------------------ */

/* A hash set (open addressing, linear probing, at most half full) of the
 * records cut: a record goes in and out with a probe or two, whatever the
 * order (a group's cut of 10 000 requests that end in any order), and the
 * set's memory stays once grown, so that a steady stream of cuts
 * allocates nothing. */
typedef struct cut_s {
  uvp__work_t *w; /* NULL: a free slot */
  uint32_t born;
} cut_t;

typedef struct cut_set_s {
  uvp__ext_t ext;
  cut_t *slots;
  size_t cap, n; /* cap: 0 or a power of two */
} cut_set_t;

static size_t cut_hash(const uvp__work_t *w, size_t cap) {
  uint64_t h = (uint64_t)((uintptr_t)w >> 3) * 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 32) & (cap - 1);
}

static void cut_put(cut_t *slots, size_t cap, cut_t c) {
  size_t i = cut_hash(c.w, cap);
  while (slots[i].w != NULL)
    i = (i + 1) & (cap - 1);
  slots[i] = c;
}

static void cut_destroy(uvp__ext_t *ext) {
  cut_set_t *st = UVP__CONTAINER_OF(ext, cut_set_t, ext);
  uvp__free(st->slots);
  uvp__free(st);
}

static void cut_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

static void cut_trim(uvp__ext_t *ext) {
  cut_set_t *st = UVP__CONTAINER_OF(ext, cut_set_t, ext);
  if (st->n == 0) {
    uvp__free(st->slots);
    st->slots = NULL;
    st->cap = 0;
  }
}

void uvp__work_keep(uvp_ctx_t *ctx, uvp__work_t *w, uint32_t born) {
  static const uvp__ext_t hooks = {
      .destroy = cut_destroy, .stats = cut_stats, .trim = cut_trim};
  if (uvp__closed(ctx))
    return; /* no dump any more */
  cut_set_t *st = UVP__EXT_OF(ctx, UVP__EXT_WORK, cut_set_t);
  if (st == NULL &&
      (st = UVP__EXT_MAKE(ctx, UVP__EXT_WORK, cut_set_t, &hooks)) == NULL)
    return; /* not kept: the dump leaves it out */
  if ((st->n + 1) * 2 > st->cap) {
    size_t cap = st->cap != 0 ? st->cap * 2 : 16;
    cut_t *slots = uvp__calloc(cap, sizeof(*slots));
    if (slots == NULL)
      return;
    for (size_t i = 0; i < st->cap; i++)
      if (st->slots[i].w != NULL)
        cut_put(slots, cap, st->slots[i]);
    uvp__free(st->slots);
    st->slots = slots;
    st->cap = cap;
  }
  cut_put(st->slots, st->cap, (cut_t){w, born});
  st->n++;
}

void uvp__work_uncut(uvp_ctx_t *ctx, uvp__work_t *w) {
  for (uvp__cut_frame_t *f = uvp__head(ctx)->cutting; f != NULL; f = f->up)
    if (f->w == w) { /* ended inside its cut's hook: never kept */
      f->w = NULL;
      return;
    }
  cut_set_t *st = UVP__EXT_OF(ctx, UVP__EXT_WORK, cut_set_t);
  if (st == NULL || st->n == 0)
    return;
  size_t mask = st->cap - 1, i = cut_hash(w, st->cap);
  while (st->slots[i].w != w) {
    if (st->slots[i].w == NULL)
      return; /* not kept, for want of memory */
    i = (i + 1) & mask;
  }
  /* Backward shift: a record after the hole whose home is not between
   * the hole and it moves into the hole, so that every probe still finds
   * what it looks for before a free slot. */
  for (size_t j = i;;) {
    j = (j + 1) & mask;
    if (st->slots[j].w == NULL)
      break;
    size_t home = cut_hash(st->slots[j].w, st->cap);
    if (((j - home) & mask) >= ((j - i) & mask)) {
      st->slots[i] = st->slots[j];
      i = j;
    }
  }
  st->slots[i].w = NULL;
  st->n--;
}

void uvp__work_cut_each(uvp_ctx_t *ctx,
                        void (*fn)(void *arg, const uvp__work_t *w,
                                   uint32_t born),
                        void *arg) {
  const cut_set_t *st = UVP__EXT_OF(ctx, UVP__EXT_WORK, cut_set_t);
  for (size_t i = 0; st != NULL && i < st->cap; i++)
    if (st->slots[i].w != NULL && st->slots[i].w->p != NULL)
      fn(arg, st->slots[i].w, st->slots[i].born);
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

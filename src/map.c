/* Bounded fan-out: start n items with at most `limit` in flight, collect
 * them like allSettled, optionally stream each outcome or fail fast.
 *
 * One block holds the state and one slot per item (settled.h): a record
 * saying UV_ECANCELED until the item starts, then the cell observing its
 * promise, then its record.  Same lifetime scheme as the combinators:
 * `attached` counts cells not yet run or dropped plus one share for the
 * result; item promises are held until the share goes. */
#include <stdlib.h>
#include <string.h>

#include "sched.h"
#include "settled.h"

typedef struct map_s {
  uvp__cell_owner_t owner; /* first: the cells name the map through it */
  uvp_ctx_t *ctx;
  void *block;
  size_t bytes;
  uvp_promise_t *result; /* our reference, while undecided */
  size_t n;
  size_t next;
  size_t inflight;
  size_t remaining;
  size_t limit;
  size_t attached;
  int flags;
  bool done;
  bool items_held;
  bool pumping;
  uvp_map_start_cb start;
  uvp_map_each_cb each;
  void *arg;
  uvp_settled_list_t view;
  uvp__slot_t *items; /* n */
} map_t;

size_t uvp_pool_size(void) {
  const char *s = getenv("UV_THREADPOOL_SIZE");
  long v = s != NULL ? strtol(s, NULL, 10) : 0;
  return v >= 1 && v <= 1024 ? (size_t)v : 4;
}

static void map_unref(map_t *m) {
  if (--m->attached == 0)
    uvp__block_put(&m->ctx->blocks, m->block, m->bytes, !m->ctx->closed);
}

static void release_share(map_t *m) {
  m->attached++;
  if (m->items_held) {
    m->items_held = false;
    for (size_t i = 0; i < m->n; i++)
      if (uvp__slot_input(&m->items[i]) != NULL)
        uvp__rel(uvp__slot_input(&m->items[i]));
  }
  m->attached--;
  map_unref(m);
}

static void view_free(void *view) {
  release_share(UVP__CONTAINER_OF(view, map_t, view));
}

static void cancel_inflight(map_t *m) {
  for (size_t i = 0; i < m->next; i++) {
    uvp_promise_t *p = uvp__slot_input(&m->items[i]);
    if (p != NULL && uvp__is_pending(p))
      (void)uvp_promise_cancel(p);
  }
}

static void drop_result(map_t *m) {
  uvp_promise_t *r = m->result;
  m->result = NULL;
  uvp__rel(r);
}

/* UVP_MAP_FAIL_FAST's first failure: settle like the failed item (or with
 * `code` when there is no promise to follow), start nothing more and
 * cancel what is in flight. */
static void fail_fast(map_t *m, uvp_promise_t *failed, int code) {
  m->done = true;
  if (failed != NULL)
    uvp__forward(m->result, failed);
  else
    uvp__reject(m->result, code, NULL, NULL);
  cancel_inflight(m);
  release_share(m);
  drop_result(m);
}

/* Start item i.  A start failure becomes an already-rejected promise, so
 * every outcome reaches the caller the same way: later, from its cell. */
static void start_one(map_t *m, size_t i) {
  uvp_promise_t *p = NULL;
  int rc = m->start(m->arg, i, &p);
  if (rc == 0 && p == NULL)
    rc = UV_EINVAL;
  if (rc == 0 && uvp__promise_ctx(p) != m->ctx) {
    uvp_promise_release(p);
    rc = UVP_EXCTX;
  }
  if (rc != 0) {
    p = uvp__promise_new(m->ctx, __FILE__, __LINE__);
    if (p == NULL) {
      /* Out of memory: the only outcome recorded without a promise (and
       * so the only one reported to on_settle from inside the start path). */
      uvp_outcome_t o = {UV_ENOMEM, NULL, NULL};
      uvp__slot_record(&m->items[i], UV_ENOMEM, NULL);
      m->view.rejected++;
      m->remaining--;
      if (m->each != NULL)
        m->each(m->arg, i, &o);
      if (m->flags & UVP_MAP_FAIL_FAST)
        fail_fast(m, NULL, UV_ENOMEM); /* pump() then sees `done`, stops */
      return;
    }
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  m->inflight++;
  m->attached++;
  uvp__cell_attach(&m->owner, &m->items[i].cell, p);
}

static void settle_result(map_t *m) {
  uvp__fulfill(m->result, &m->view, view_free);
  m->done = true;
  drop_result(m);
}

static void pump(map_t *m) {
  if (m->pumping)
    return; /* a start callback re-entered through a settled item */
  m->pumping = true;
  m->attached++;
  while (!m->done && m->next < m->n && m->inflight < m->limit)
    start_one(m, m->next++);
  if (!m->done && m->remaining == 0 && m->result != NULL)
    settle_result(m);
  m->pumping = false;
  map_unref(m);
}

/* Item i settled as `in` (NULL: its cell was dropped). */
static void cell_run(uvp__cell_owner_t *owner, size_t i,
                     const uvp_outcome_t *in) {
  map_t *m = UVP__CONTAINER_OF(owner, map_t, owner);
  if (in == NULL) {
    uvp__slot_record(&m->items[i], UV_ECANCELED, NULL);
    map_unref(m);
    return;
  }
  m->attached++;
  m->inflight--;
  m->remaining--;
  uvp__slot_record(&m->items[i], in->status, in->value);
  if (in->status == 0)
    m->view.fulfilled++;
  else
    m->view.rejected++;
  if (!m->done && m->each != NULL)
    m->each(m->arg, i, in);
  if (!m->done && in->status != 0 && (m->flags & UVP_MAP_FAIL_FAST))
    fail_fast(m, in->promise, 0);
  else if (!m->done)
    pump(m);
  map_unref(m); /* the guard */
  map_unref(m); /* this cell */
}

static const uvp__cell_ops_t cell_ops = {cell_run};

static void map_cancel(uvp_promise_t *result, void *arg) {
  map_t *m = arg;
  m->attached++;
  m->done = true;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED)
    cancel_inflight(m);
  release_share(m);
  drop_result(m);
  map_unref(m);
}

/* The block: the map, aligned for the cells' tags, then the items, each a
 * record of an item not started.  NULL if there is no memory. */
static map_t *map_alloc(uvp_ctx_t *ctx, size_t n) {
  enum { ALIGN = UVP__SLOT_ALIGN };
  if (n > (SIZE_MAX - sizeof(map_t) - ALIGN) / sizeof(uvp__slot_t))
    return NULL;
  size_t bytes = sizeof(map_t) + ALIGN - 1 + n * sizeof(uvp__slot_t);
  void *block = uvp__block_get(&ctx->blocks, &bytes);
  if (block == NULL)
    return NULL;
  map_t *m =
      (map_t *)(((uintptr_t)block + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1));
  memset(m, 0, sizeof(*m));
  m->block = block;
  m->bytes = bytes;
  m->ctx = ctx;
  m->items = (uvp__slot_t *)(m + 1);
  for (size_t i = 0; i < n; i++) {
    m->items[i].rec.status = UV_ECANCELED; /* until started */
    m->items[i].rec.value = NULL;
    m->items[i].rec.promise = NULL;
  }
  m->owner.ops = &cell_ops;
  m->owner.cells = &m->items[0].cell;
  m->view.count = n;
  m->view.items = &m->items[0].rec;
  return m;
}

int uvp_promise_map_at(uvp_ctx_t *ctx, size_t n, uvp_map_start_cb start,
                       void *arg, const uvp_map_opts_t *opts,
                       uvp_promise_t **out, const char *file, int line) {
  uvp_map_opts_t defaults = {0, 0, NULL};
  if (opts == NULL)
    opts = &defaults;
  int rc = out == NULL || start == NULL || (opts->flags & ~UVP_MAP_FAIL_FAST)
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  map_t *m = map_alloc(ctx, n);
  if (m == NULL)
    return UV_ENOMEM;
  m->result = uvp__produced_new(ctx, file, line, map_cancel, m);
  if (m->result == NULL) {
    uvp__block_put(&ctx->blocks, m->block, m->bytes, true);
    return UV_ENOMEM;
  }
  m->n = m->remaining = n;
  m->limit = opts->limit != 0 ? opts->limit : uvp_pool_size();
  m->flags = opts->flags;
  m->start = start;
  m->each = opts->on_settle;
  m->arg = arg;
  m->items_held = true;
  m->attached = 1; /* the share */
  *out = m->result;
  pump(m);
  return 0;
}

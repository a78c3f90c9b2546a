/* Bounded fan-out: start n items with at most `limit` in flight, collect
 * them like allSettled, optionally stream each outcome or fail fast.
 *
 * Same lifetime scheme as the combinators: `attached` counts reactions not
 * yet run or dropped plus one share for the result; item promises are held
 * until the share goes. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct map_s map_t;
struct map_s {
  uvp_ctx_t *ctx;
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
  map_t **cells;
  uvp_settled_t *items;
};

size_t uvp_pool_size(void) {
  const char *s = getenv("UV_THREADPOOL_SIZE");
  long v = s != NULL ? strtol(s, NULL, 10) : 0;
  return v >= 1 && v <= 1024 ? (size_t)v : 4;
}

static void map_unref(map_t *m) {
  if (--m->attached == 0)
    uvp__free(m);
}

static void release_share(map_t *m) {
  m->attached++;
  if (m->items_held) {
    m->items_held = false;
    for (size_t i = 0; i < m->n; i++)
      if (m->items[i].promise != NULL)
        uvp__rel(m->items[i].promise);
  }
  m->attached--;
  map_unref(m);
}

static void view_free(void *view) {
  release_share(UVP__CONTAINER_OF(view, map_t, view));
}

static void cancel_inflight(map_t *m) {
  for (size_t i = 0; i < m->next; i++) {
    uvp_promise_t *p = m->items[i].promise;
    if (p != NULL && p->state == UVP__S_PENDING)
      (void)uvp_promise_cancel(p);
  }
}

static void drop_result(map_t *m) {
  uvp_promise_t *r = m->result;
  m->result = NULL;
  uvp__rel(r);
}

static uvp_ret_t map_react(void *arg, const uvp_outcome_t *in);

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
 * every outcome reaches the caller the same way: later, from a reaction. */
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
    if (p != NULL)
      uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  uvp__reaction_t *r =
      p == NULL ? NULL
                : uvp__reaction_new(m->ctx, map_react, &m->cells[i], p,
                                    UVP__R_NODERIVED | UVP__R_ON_OK |
                                        UVP__R_ON_ERR | UVP__R_NOTIFY);
  if (r == NULL) {
    /* Out of memory: the only outcome recorded without a promise (and so
     * the only one reported to on_settle from inside the start path). */
    if (p != NULL)
      uvp__rel(p);
    uvp_outcome_t o = {UV_ENOMEM, NULL, NULL};
    m->items[i].status = UV_ENOMEM;
    m->view.rejected++;
    m->remaining--;
    if (m->each != NULL)
      m->each(m->arg, i, &o);
    if (m->flags & UVP_MAP_FAIL_FAST)
      fail_fast(m, NULL, UV_ENOMEM); /* pump() then sees `done` and stops */
    return;
  }
  m->items[i].promise = p;
  m->inflight++;
  m->attached++;
  uvp__attach(p, r);
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

static uvp_ret_t map_react(void *arg, const uvp_outcome_t *in) {
  map_t **cell = arg;
  map_t *m = *cell;
  size_t i = (size_t)(cell - m->cells);
  uvp_ret_t none = {0};
  if (in == NULL) {
    map_unref(m);
    return none;
  }
  m->attached++;
  m->inflight--;
  m->remaining--;
  m->items[i].status = in->status;
  m->items[i].value = in->value;
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
  map_unref(m); /* this reaction */
  return none;
}

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

int uvp_promise_map_at(uvp_ctx_t *ctx, size_t n, uvp_map_start_cb start,
                       void *arg, const uvp_map_opts_t *opts,
                       uvp_promise_t **out, const char *file, int line) {
  uvp_map_opts_t defaults = {0, 0, NULL};
  if (opts == NULL)
    opts = &defaults;
  if (ctx == NULL || out == NULL || start == NULL ||
      (opts->flags & ~UVP_MAP_FAIL_FAST) != 0)
    return UV_EINVAL;
  if (ctx->closed)
    return UVP_ECLOSED;
  size_t per = sizeof(map_t *) + sizeof(uvp_settled_t);
  if (n > (SIZE_MAX - sizeof(map_t)) / per)
    return UV_ENOMEM;
  map_t *m = uvp__malloc(sizeof(map_t) + n * per);
  if (m == NULL)
    return UV_ENOMEM;
  uvp_promise_t *result = uvp__promise_new(ctx, file, line);
  if (result == NULL) {
    uvp__free(m);
    return UV_ENOMEM;
  }
  memset(m, 0, sizeof(*m));
  m->ctx = ctx;
  m->cells = (map_t **)(m + 1);
  m->items = (uvp_settled_t *)(m->cells + n);
  memset(m->items, 0, n * sizeof(uvp_settled_t));
  for (size_t i = 0; i < n; i++) {
    m->cells[i] = m;
    m->items[i].status = UV_ECANCELED; /* until started */
  }
  m->n = m->remaining = n;
  m->limit = opts->limit != 0 ? opts->limit : uvp_pool_size();
  m->flags = opts->flags;
  m->start = start;
  m->each = opts->on_settle;
  m->arg = arg;
  m->view.count = n;
  m->view.items = m->items;
  m->items_held = true;
  m->attached = 1; /* the share */
  m->result = uvp_promise_retain(result);
  (void)uvp_promise_set_cancel(result, map_cancel, m);
  result->flags |= UVP__F_OWNED;
  *out = result;
  pump(m);
  return 0;
}

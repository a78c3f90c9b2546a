/* Bounded fan-out: start n items with at most `limit` in flight, collect
 * them like allSettled, optionally stream each outcome or fail fast.
 *
 * One block holds the state and one slot per item (settled.h): a record
 * saying UV_ECANCELED until the item starts, then the cell observing its
 * promise, then its record.  Lifetime: see uvp__fanin_t. */
#include <stdlib.h>
#include <string.h>

#include "cause.h"
#include "settled.h"

typedef struct map_s {
  uvp__fanin_t f; /* first */
  size_t next;
  size_t inflight;
  size_t remaining;
  size_t limit;
  int flags;
  bool done;
  bool pumping;
  uvp_map_start_cb start;
  uvp_map_each_cb each;
  void *arg;
  uvp_free_cb arg_free;
  int calling; /* start or each is running */
  uvp_settled_list_t view;
} map_t;

/* Once the map is decided and no callback is running, none will run
 * again: arg goes.  Guarded, as the last thing a caller does may free m. */
static void maybe_free_arg(map_t *m) {
  if (m->done && m->calling == 0 && m->arg_free != NULL) {
    uvp_free_cb f = m->arg_free;
    m->arg_free = NULL;
    f(m->arg);
  }
}

size_t uvp_pool_size(void) {
  const char *s = getenv("UV_THREADPOOL_SIZE");
  long v = s != NULL ? strtol(s, NULL, 10) : 0;
  return v >= 1 && v <= 1024 ? (size_t)v : 4;
}

static void view_free(void *view) {
  uvp__fanin_release_share(&UVP__CONTAINER_OF(view, map_t, view)->f);
}

/* The map gave up on its items in flight: each is cancelled if the map is
 * all that consumes it, and the map stops consuming the others (a shared
 * item is left to its other consumers, as a combinator's input is). */
static void cancel_inflight(map_t *m) {
  for (size_t i = 0; i < m->next; i++) {
    uvp_promise_t *p = uvp__slot_input(&m->f.slots[i]);
    if (p != NULL && uvp__is_pending(p) && uvp__sole_consumer(p, &m->f.owner))
      (void)uvp_promise_cancel(p);
  }
  uvp__fanin_detach(&m->f);
}

/* UVP_MAP_FAIL_FAST's first failure: settle like the failed item (or with
 * `code` when there is no promise to follow), start nothing more and
 * cancel what is in flight. */
static void fail_fast(map_t *m, uvp_promise_t *failed, int code) {
  m->done = true;
  const char *file = NULL, *pfile = NULL;
  int line = 0, pline = 0;
  uvp__site_get(m->f.result->site, &file, &line);
  if (failed != NULL) {
    code = failed->code;
    uvp__site_get(failed->site, &pfile, &pline);
    uvp__forward(m->f.result, failed);
  } else {
    uvp__reject(m->f.result, code, NULL, NULL);
  }
  /* What is in flight is cut by the failure, and says so (cause.h). */
  uvp_cause_t proto = {.kind = UVP_CAUSE_SIBLING,
                       .peer_code = code,
                       .file = file,
                       .line = line,
                       .peer_file = pfile,
                       .peer_line = pline,
                       .message = "map"};
  uvp__cause_t *c = uvp__cause_new(&proto, NULL);
  uvp__cause_t *outer = uvp__cause_enter(m->f.ctx, c);
  cancel_inflight(m);
  uvp__cause_leave(m->f.ctx, outer);
  uvp__cause_unref(c);
  uvp__fanin_release_share(&m->f);
  uvp__fanin_drop_result(&m->f);
}

/* Start item i.  A start failure becomes an already-rejected promise, so
 * every outcome reaches the caller the same way: later, from its cell. */
static void start_one(map_t *m, size_t i) {
  uvp_promise_t *p = NULL;
  m->calling++;
  int rc = m->start(m->arg, i, &p);
  m->calling--;
  if (m->done) {
    /* Cancelled from inside the start: nothing will observe p (nor release
     * it, the inputs having gone with the share), so let go of it now, as
     * a loop or a retry does. */
    if (p != NULL)
      uvp_promise_release(p);
    return;
  }
  if (rc == 0 && p == NULL)
    rc = UV_EINVAL;
  if (rc == 0 && uvp__promise_ctx(p) != m->f.ctx) {
    uvp_promise_release(p);
    rc = UVP_EXCTX;
  }
  if (rc != 0) {
    p = uvp__promise_new(m->f.ctx, __FILE__, __LINE__);
    if (p == NULL) {
      /* Out of memory: the only outcome recorded without a promise (and
       * so the only one reported to on_settle from inside the start path). */
      uvp_outcome_t o = {UV_ENOMEM, NULL, NULL};
      uvp__slot_record(&m->f.slots[i], UV_ENOMEM, NULL);
      m->view.rejected++;
      m->remaining--;
      if (m->each != NULL) {
        m->calling++;
        m->each(m->arg, i, &o);
        m->calling--;
      }
      if (m->flags & UVP_MAP_FAIL_FAST)
        fail_fast(m, NULL, UV_ENOMEM); /* pump() then sees `done`, stops */
      return;
    }
    uvp__reject(p, rc < 0 ? rc : UV_EINVAL, NULL, NULL);
  }
  m->inflight++;
  m->f.attached++;
  uvp__cell_attach(&m->f.owner, &m->f.slots[i].cell, p);
}

static void settle_result(map_t *m) {
  uvp__fulfill(m->f.result, &m->view, view_free);
  m->done = true;
  uvp__fanin_drop_result(&m->f);
}

static void pump(map_t *m) {
  if (m->pumping)
    return; /* a start callback re-entered through a settled item */
  m->pumping = true;
  m->f.attached++;
  while (!m->done && m->next < m->f.n && m->inflight < m->limit)
    start_one(m, m->next++);
  if (!m->done && m->remaining == 0 && m->f.result != NULL)
    settle_result(m);
  m->pumping = false;
  maybe_free_arg(m);
  uvp__fanin_unref(&m->f);
}

/* Item i settled as `in` (NULL: its cell was dropped). */
static void cell_run(uvp__cell_owner_t *owner, size_t i,
                     const uvp_outcome_t *in) {
  map_t *m = UVP__CONTAINER_OF(owner, map_t, f.owner);
  if (in == NULL) {
    uvp__slot_record(&m->f.slots[i], UV_ECANCELED, NULL);
    uvp__fanin_unref(&m->f);
    return;
  }
  m->f.attached++;
  m->inflight--;
  m->remaining--;
  uvp__slot_record(&m->f.slots[i], in->status, in->value);
  if (in->status == 0)
    m->view.fulfilled++;
  else
    m->view.rejected++;
  if (!m->done && m->each != NULL) {
    m->calling++;
    m->each(m->arg, i, in);
    m->calling--;
  }
  if (!m->done && in->status != 0 && (m->flags & UVP_MAP_FAIL_FAST))
    fail_fast(m, in->promise, 0);
  else if (!m->done)
    pump(m);
  maybe_free_arg(m);
  uvp__fanin_unref(&m->f); /* the guard */
  uvp__fanin_unref(&m->f); /* this cell */
}

static const uvp__cell_ops_t cell_ops = {cell_run, NULL, uvp__fanin_settles};

static void map_cancel(uvp_promise_t *result, void *arg) {
  map_t *m = arg;
  m->f.attached++;
  m->done = true;
  if (uvp_promise_reason(result, NULL) == UV_ECANCELED)
    cancel_inflight(m);
  uvp__fanin_release_share(&m->f);
  uvp__fanin_drop_result(&m->f);
  maybe_free_arg(m);
  uvp__fanin_unref(&m->f);
}

int uvp_promise_map_at(uvp_ctx_t *ctx, size_t n, uvp_map_start_cb start,
                       void *arg, const uvp_map_opts_t *opts,
                       uvp_promise_t **out, const char *file, int line) {
  uvp_map_opts_t defaults = {0};
  if (opts == NULL)
    opts = &defaults;
  int rc = out == NULL || start == NULL || (opts->flags & ~UVP_MAP_FAIL_FAST)
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, arg, opts->arg_free);
  map_t *m = uvp__fanin_new(ctx, sizeof(map_t), n, 0, &cell_ops, map_cancel,
                            file, line);
  if (m == NULL)
    return uvp__refuse(UV_ENOMEM, arg, opts->arg_free);
  for (size_t i = 0; i < n; i++) {
    m->f.slots[i].rec.status = UV_ECANCELED; /* until started */
    m->f.slots[i].rec.value = NULL;
    m->f.slots[i].rec.promise = NULL;
  }
  m->view.count = n;
  m->view.items = &m->f.slots[0].rec;
  m->remaining = n;
  m->limit = opts->limit != 0 ? opts->limit : uvp_pool_size();
  m->flags = opts->flags;
  m->start = start;
  m->each = opts->on_settle;
  m->arg = arg;
  m->arg_free = opts->arg_free;
  *out = m->f.result;
  pump(m);
  return 0;
}

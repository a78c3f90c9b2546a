/* The operation layer (see op.h): the memory, promise and lifecycle every
 * wrapped libuv operation shares. */
#include <string.h>

#include "op.h"
#include "recorder.h"
#include "scope.h"

/* Per context, created with its first operation. */
typedef struct op_state_s {
  uvp__ext_t ext;
  uvp__pool_t slots; /* UVP__OP_SLOT bytes each */
  void *data[UVP__OPDATA_COUNT];
} op_state_t;

static void state_destroy(uvp__ext_t *ext) {
  op_state_t *st = UVP__CONTAINER_OF(ext, op_state_t, ext);
  uvp__pool_destroy(&st->slots);
  for (int i = 0; i < UVP__OPDATA_COUNT; i++)
    uvp__free(st->data[i]);
  uvp__free(st);
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  const op_state_t *st = UVP__CONTAINER_OF(ext, op_state_t, ext);
  out->slab_bytes += st->slots.bytes;
  out->slab_idle_bytes += uvp__pool_idle_bytes(&st->slots);
  out->slab_allocs += st->slots.allocs;
}

static void state_trim(uvp__ext_t *ext) {
  (void)uvp__pool_trim(&UVP__CONTAINER_OF(ext, op_state_t, ext)->slots);
}

/* The task dump: an operation's promise says what the operation is. */
static void op_describe(const uvp__work_t *w, uvp__what_t *what) {
  const uvp__op_t *op = UVP__CONTAINER_OF(w, uvp__op_t, work);
  what->owner = uvp__work_owner(w);
  if (op->kind->describe != NULL)
    op->kind->describe(op, what);
}

/* The promise's cancel hook (the promise may have moved: see
 * uvp__movable_new). */
static void op_cancel(uvp__work_t *w, uvp_promise_t *p, int code) {
  uvp__op_t *op = UVP__CONTAINER_OF(w, uvp__op_t, work);
  (void)p;
  (void)code;
  if (op->p != NULL) /* else finished, its completion queued */
    op->kind->cancel(op);
}

/* The operations' classes, by kind->idle and kind->object_owned. */
#define OP_CLASS(flags)                                                        \
  { op_cancel, op_describe, "operation", UVP__WORK_MOVABLE | (flags) }
static const uvp__work_class_t op_classes[4] = {
    OP_CLASS(0), OP_CLASS(UVP__WORK_IDLE), OP_CLASS(UVP__WORK_UNOWNED),
    OP_CLASS(UVP__WORK_IDLE | UVP__WORK_UNOWNED)};

static const uvp__ext_t state_hooks = {
    .destroy = state_destroy, .stats = state_stats, .trim = state_trim};

static op_state_t *state_of(uvp_ctx_t *ctx) {
  op_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_OPS, op_state_t);
  if (UVP__LIKELY(st != NULL) ||
      (st = UVP__EXT_MAKE(ctx, UVP__EXT_OPS, op_state_t, &state_hooks)) == NULL)
    return st;
  uvp__pool_init(&st->slots, UVP__OP_SLOT);
  return st;
}

void *uvp__op_data(uvp_ctx_t *ctx, int key, size_t size) {
  op_state_t *st = state_of(ctx);
  if (st == NULL)
    return NULL;
  if (st->data[key] == NULL)
    st->data[key] = uvp__malloc(size);
  return st->data[key];
}

int uvp_ctx_reserve_ops(uvp_ctx_t *ctx, size_t ops) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  op_state_t *st = state_of(ctx);
  return st != NULL ? uvp__pool_reserve(&st->slots, ops, NULL) : UV_ENOMEM;
}

void *uvp__op_new(uvp_ctx_t *ctx, const uvp__op_kind_t *kind, size_t size,
                  uvp_promise_t **out, const char *file, int line, int *rc) {
  *rc = out == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (*rc != 0)
    return NULL;
  *rc = UV_ENOMEM;
  uvp__op_t *op;
  if (size <= UVP__OP_SLOT) {
    op_state_t *st = state_of(ctx);
    op = st != NULL ? uvp__pool_get(&st->slots) : NULL;
  } else {
    op = uvp__malloc(size);
  }
  if (op == NULL)
    return NULL;
  op->ctx = ctx;
  op->kind = kind;
  op->size = (uint32_t)size;
  /* The common class a constant, so that the door's tests fold. */
  int started =
      UVP__LIKELY(!kind->idle && !kind->object_owned)
          ? uvp__work_start(ctx, &op->work, &op_classes[0], file, line)
          : uvp__work_start(ctx, &op->work,
                            &op_classes[(kind->idle ? 1 : 0) |
                                        (kind->object_owned ? 2 : 0)],
                            file, line);
  if (started != 0) {
    uvp__op_free(op); /* nothing started */
    return NULL;
  }
  *rc = 0;
  return op;
}

int uvp__op_started(uvp__op_t *op, int rc, uvp_promise_t **out) {
  if (rc == 0) {
    *out = op->p;
    /* Its target is known once started (the recorder's description). */
    if (uvp__recording(op->ctx))
      uvp__rec_work_desc(op->ctx, &op->work);
    return 0;
  }
  if (op->kind->abort != NULL)
    op->kind->abort(op);
  uvp_promise_t *p = op->p;
  uvp__op_free(op); /* before the releases that may end the context */
  uvp__produced_abort(p);
  return rc;
}

void uvp__op_settle(uvp__op_t *op, int status, void *value,
                    uvp_free_cb free_cb) {
  uvp_promise_t *p = op->p;
  if (status >= 0 && uvp__is_pending(p)) {
    uvp__fulfill(p, value, free_cb);
    return;
  }
  if (status < 0 && uvp__is_pending(p))
    uvp__reject(p, status, NULL, NULL);
  if (free_cb != NULL && value != NULL)
    free_cb(value);
}

/* The queued completion runs (in NULL: teardown dropped it, and the promise
 * stays pending for the sweep to reject, without the hook: the operation
 * is gone; unless a cut rejected it while the completion waited, whose
 * hook found the operation finished and left it alone: then there is no
 * hook to take back, and its flags say settled things).  The core releases
 * the promise afterwards: that is the operation's reference, which the
 * queue held. */
static void op_complete(void *arg, const uvp_outcome_t *in) {
  uvp__op_t *op = arg;
  uvp_promise_t *p = uvp__rtarget(&op->done.r);
  if (in == NULL) {
    if (uvp__is_pending(p))
      uvp__produced_forget(p);
  } else if (p->reactions != NULL)
    UVP__PREFETCH(p->reactions); /* run soon, not read by settling */
  op->kind->complete(op, in != NULL ? p : NULL);
}

void uvp__op_complete_later(uvp__op_t *op) {
  /* libuv is done with the request; the queue holds the promise, so the
   * context. */
  uvp__work_done(op->ctx, &op->work);
  uvp_promise_t *p = op->p;
  op->p = NULL;
  op->done.r.target = uvp__rtag(p, UVP__RK_NOTIFY_EMBEDDED);
  op->done.cb.notify = op_complete;
  op->done.arg = op;
  uvp__enqueue_completion(op->ctx, &op->done);
  /* The settle is some way off: see docs/internals/operations.md. */
  UVP__PREFETCH_W(p);
}

/* The memory goes back. */
static void op_memory_free(uvp_ctx_t *ctx, uvp__op_t *op) {
  if (op->size > UVP__OP_SLOT) {
    uvp__free(op);
    return;
  }
  op_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_OPS, op_state_t);
  /* After teardown a slot may come back from a value's destructor running
   * on another thread (a stat's result is its operation's memory). */
  if (UVP__LIKELY(!uvp__closed(ctx))) {
    uvp__pool_put(&st->slots, op);
    return;
  }
  uvp__lock(ctx);
  uvp__pool_put(&st->slots, op);
  uvp__unlock(ctx);
}

void uvp__op_free(uvp__op_t *op) {
  uvp_ctx_t *ctx = op->ctx;
  /* Nothing left to end when freed on another thread (a stat's value):
   * complete_later did it. */
  bool in_loop = uvp__work_done_but_loop(ctx, &op->work);
  op_memory_free(ctx, op);
  /* Last: at teardown the end of uvp's last work in the loop calls the
   * close callback and may free the context. */
  if (in_loop)
    uvp__loop_work_end(ctx);
}

void uvp__op_finish(uvp__op_t *op) {
  uvp_promise_t *p = op->p;
  uvp__op_free(op);
  uvp__unref(p);
}

/* uv_queue_work as a promise.  One heap object per job holds the request,
 * the job's outcome and a reference to the promise until the after-work
 * callback, which libuv always runs on the loop thread (with UV_ECANCELED
 * if uv_cancel caught the job before it started).  The job's fields are
 * written on a pool thread and read there only after libuv has handed the
 * request back through its queue lock, so they need no atomics. */
#include <string.h>

#include "internal.h"

typedef struct workop_s {
  uvp_promise_t *p; /* first: UVP__OP_MOVABLE */
  uv_work_t req;
  uvp_work_cb cb;
  void *arg;
  uvp_free_cb result_free;
  void *result;
  int rc;
} workop_t;

static void work_cancel(uvp_promise_t *p, void *arg) {
  workop_t *op = arg;
  (void)p;
  /* 0: the job never runs.  UV_EBUSY: it is running or done; its result
   * reaches work_after, which finds the promise settled and frees it. */
  (void)uv_cancel((uv_req_t *)&op->req);
}

static void work_run(uv_work_t *req) {
  workop_t *op = req->data;
  op->rc = op->cb(op->arg, &op->result);
}

static void work_after(uv_work_t *req, int status) {
  workop_t *op = req->data;
  uvp_promise_t *p = op->p;
  void *result = op->result;
  if (status == UV_ECANCELED) {
    /* The job never ran, so there is no result to free. */
    if (uvp__is_pending(p))
      uvp__reject(p, UV_ECANCELED, NULL, NULL);
  } else if (uvp__is_pending(p) && op->rc == 0) {
    uvp__fulfill(p, result, op->result_free);
    result = NULL;
  } else if (uvp__is_pending(p)) {
    uvp__reject(p, op->rc < 0 ? op->rc : UV_EINVAL, NULL, NULL);
  }
  if (result != NULL && op->result_free != NULL)
    op->result_free(result);
  uvp__free(op);
  uvp__rel(p);
}

int uvp_work_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                uvp_free_cb result_free, uvp_promise_t **out, const char *file,
                int line) {
  if (ctx == NULL || work_cb == NULL || out == NULL)
    return UV_EINVAL;
  if (ctx->closed)
    return UVP_ECLOSED;
  workop_t *op = uvp__malloc(sizeof(*op));
  if (op == NULL)
    return UV_ENOMEM;
  memset(op, 0, sizeof(*op));
  op->p = uvp__op_new(ctx, file, line, work_cancel, op);
  if (op->p == NULL) {
    uvp__free(op);
    return UV_ENOMEM;
  }
  UVP__OP_MOVABLE(workop_t, op);
  op->cb = work_cb;
  op->arg = arg;
  op->result_free = result_free;
  op->req.data = op;
  int rc = uv_queue_work(ctx->loop, &op->req, work_run, work_after);
  if (rc != 0) {
    uvp_promise_t *p = op->p;
    p->flags &= (uint8_t)~UVP__F_CANCEL;
    uvp__rel(p);
    uvp__rel(p);
    uvp__free(op);
    return rc;
  }
  *out = op->p;
  return 0;
}

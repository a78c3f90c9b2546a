/* uv_queue_work as a promise.  One operation per job holds the request, the
 * job's outcome and a reference to the promise until the after-work
 * callback, which libuv always runs on the loop thread (with UV_ECANCELED
 * if uv_cancel caught the job before it started).  The job's fields are
 * written on a pool thread and read there only after libuv has handed the
 * request back through its queue lock, so they need no atomics. */
#include "op.h"

typedef struct workop_s {
  uvp__op_t op;
  uv_work_t req;
  uvp_work_cb cb;
  void *arg;
  uvp_work_done_cb done;
  uvp_free_cb result_free;
  void *result;
  int rc;
} workop_t;

static void work_cancel(uvp__op_t *o) {
  /* 0: the job never runs.  UV_EBUSY: it is running or done; its result
   * reaches work_after, which finds the promise settled and frees it. */
  (void)uv_cancel((uv_req_t *)&UVP__CONTAINER_OF(o, workop_t, op)->req);
}

static void work_describe(const uvp__op_t *o, uvp__what_t *w) {
  (void)o;
  snprintf(w->kind, sizeof(w->kind), "work");
  snprintf(w->target, sizeof(w->target), "the thread pool");
}

static const uvp__op_kind_t work_kind = {work_cancel, NULL,          NULL,
                                         false,       work_describe, false};

static void work_run(uv_work_t *req) {
  workop_t *op = UVP__CONTAINER_OF(req, workop_t, req);
  op->rc = op->cb(op->arg, &op->result);
}

/* How the job ended, for its done callback. */
static uvp_work_end_t end_of(workop_t *op, int status) {
  if (status == UV_ECANCELED) /* it never ran */
    return uvp_promise_reason(op->op.p, NULL) == UVP_ECLOSED
               ? UVP_WORK_CLOSED
               : UVP_WORK_CANCELLED;
  return uvp__op_wanted(&op->op) ? UVP_WORK_SETTLED : UVP_WORK_ABANDONED;
}

static void work_after(uv_work_t *req, int status) {
  workop_t *op = UVP__CONTAINER_OF(req, workop_t, req);
  uvp_work_end_t end = end_of(op, status);
  if (status == UV_ECANCELED) /* there is no result */
    uvp__op_settle(&op->op, UV_ECANCELED, NULL, NULL);
  else if (op->rc == 0)
    uvp__op_settle(&op->op, 0, op->result, op->result_free);
  else
    uvp__op_settle(&op->op, op->rc < 0 ? op->rc : UV_EINVAL, op->result,
                   op->result_free);
  uvp_work_done_cb done = op->done;
  void *arg = op->arg;
  if (done == NULL) {
    uvp__op_finish(&op->op);
    return;
  }
  /* The done callback is the end of the request: uvp_ctx_close_full's
   * callback comes after it, and the context stays until it has run. */
  uvp_ctx_t *ctx = op->op.ctx;
  uvp__loop_work_begin(ctx);
  uvp__op_finish(&op->op);
  done(arg, end);
  uvp__loop_work_end(ctx);
}

/* uvp.h's "Handing over" for a job's data: a job that cannot start is
 * done at once, and never ran. */
static int refuse_job(int rc, void *arg, uvp_work_done_cb done) {
  if (rc != 0 && done != NULL)
    done(arg, rc == UVP_ECLOSED ? UVP_WORK_CLOSED : UVP_WORK_CANCELLED);
  return rc;
}

int uvp_work_full_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                     uvp_work_done_cb done, uvp_free_cb result_free,
                     uvp_promise_t **out, const char *file, int line) {
  if (work_cb == NULL)
    return refuse_job(UV_EINVAL, arg, done);
  int rc;
  workop_t *op =
      uvp__op_new(ctx, &work_kind, sizeof(workop_t), out, file, line, &rc);
  if (op == NULL)
    return refuse_job(rc, arg, done);
  op->cb = work_cb;
  op->arg = arg;
  op->done = done;
  op->result_free = result_free;
  op->result = NULL;
  op->rc = 0;
  rc = uvp__op_started(
      &op->op, uv_queue_work(uvp__loop(ctx), &op->req, work_run, work_after),
      out);
  return refuse_job(rc, arg, done);
}

int uvp_work_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                uvp_free_cb result_free, uvp_promise_t **out, const char *file,
                int line) {
  return uvp_work_full_at(ctx, work_cb, arg, NULL, result_free, out, file,
                          line);
}

/* File fan-out with uvp: for each of N names (files plus missing ones):
 * stat, open, read, close, collected allSettled.  Every operation is issued
 * at once, as the hand-written client does; libuv's pool queues them.  Each
 * name is file-fanout.js's async function written in C: a result promise,
 * and each step awaits its operation's promise with a handler that starts
 * the next (see await_op).
 * Usage: file-fanout DIR NFILES NMISSING [ROUNDS]
 * ROUNDS fan-outs run one after the other on the same loop and context; the
 * first is the cold start, the median of the others the steady state of a
 * long-running program (memory already faulted in and reused). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file-common.h"
#include "uvp.h"

typedef struct item_s {
  uvp_promise_t *result; /* the name's outcome: the async function's */
  uv_file fd;
  int err;
  int64_t nread;
  char path[256];
  char buf[256];
} item_t;

static uvp_ctx_t *ctx;

/* `await op` inside file-fanout.js's async function: a handler on the
 * operation's promise with no derived promise (out NULL), which goes on
 * with the next step; the last step settles the result.  A failure to
 * start fails the name. */
static uvp_ret_t fail(item_t *it, int code) {
  (void)uvp_promise_reject(it->result, code, NULL, NULL);
  return uvp_ret_value(NULL, NULL);
}

static int await_op(item_t *it, int rc, uvp_promise_t *op, uvp_then_cb next) {
  if (rc == 0) {
    rc = uvp_promise_on(op, UVP_ON_BOTH, next, it, NULL);
    uvp_promise_release(op);
  }
  if (rc != 0)
    (void)fail(it, rc);
  return rc;
}

static uvp_ret_t after_close(void *arg, const uvp_outcome_t *in) {
  item_t *it = arg;
  (void)in;
  if (it->err != 0)
    return fail(it, it->err);
  (void)uvp_promise_resolve(it->result, (void *)(intptr_t)it->nread, NULL);
  return uvp_ret_value(NULL, NULL);
}

/* Either outcome of the read closes the file (the script's `finally`). */
static uvp_ret_t after_read(void *arg, const uvp_outcome_t *in) {
  item_t *it = arg;
  it->err = in->status;
  it->nread = in->status == 0 ? UVP_INT(in->value) : 0;
  uvp_promise_t *c = NULL;
  int rc = uvp_fs_close(ctx, it->fd, &c);
  (void)await_op(it, rc, c, after_close);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t after_open(void *arg, const uvp_outcome_t *in) {
  item_t *it = arg;
  if (in->status != 0)
    return fail(it, in->status);
  it->fd = (uv_file)UVP_INT(in->value);
  uvp_promise_t *r = NULL;
  int rc = uvp_fs_read(ctx, it->fd, it->buf, sizeof(it->buf), 0, &r);
  if (rc != 0) {
    uvp_outcome_t failed = {rc, NULL, NULL};
    return after_read(it, &failed);
  }
  (void)await_op(it, 0, r, after_read);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t after_stat(void *arg, const uvp_outcome_t *in) {
  item_t *it = arg;
  if (in->status != 0)
    return fail(it, in->status);
  uvp_promise_t *o = NULL;
  int rc = uvp_fs_open(ctx, it->path, O_RDONLY, 0, &o);
  (void)await_op(it, rc, o, after_open);
  return uvp_ret_value(NULL, NULL);
}

/* One fan-out over every name; returns its wall time in ms, or -1. */
static double fan_out(item_t *items, uvp_promise_t **ps, size_t nf, size_t nm) {
  size_t n = nf + nm;
  uv_loop_t *loop = uvp_ctx_loop(ctx);
  uint64_t t0 = uv_hrtime();
  /* Each name: stat -> open -> read -> close, every step a promise. */
  for (size_t i = 0; i < n; i++) {
    item_t *it = &items[i];
    uvp_promise_t *p = NULL;
    if (uvp_promise_new(ctx, &it->result) != 0)
      return -1;
    int rc = uvp_fs_stat(ctx, it->path, &p);
    if (await_op(it, rc, p, after_stat) != 0)
      return -1;
    ps[i] = it->result;
  }
  uvp_promise_t *all;
  if (uvp_promise_all_settled(ctx, ps, n, &all) != 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(ps[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  const uvp_settled_list_t *l = uvp_promise_value(all);
  size_t ok = 0, enoent = 0;
  for (size_t i = 0; i < l->count; i++) {
    ok += l->items[i].status == 0 && UVP_INT(l->items[i].value) > 0;
    enoent += l->items[i].status == UV_ENOENT;
  }
  uvp_promise_release(all);
  return ok == nf && enoent == nm ? (t1 - t0) / 1e6 : -1;
}

int main(int argc, char **argv) {
  size_t nf, nm;
  int rounds;
  size_t n = file_args(argc, argv, &nf, &nm, &rounds);
  item_t *items = calloc(n, sizeof(*items));
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  double ms[FILE_MAX_ROUNDS];
  for (size_t i = 0; i < n; i++)
    file_path(items[i].path, sizeof(items[i].path), argv[1], i, nf);
  uv_loop_t loop;
  uv_loop_init(&loop);
  uvp_ctx_new(&loop, &ctx);
  /* The hand-written client allocates and touches its requests (one
   * uv_fs_t in each item) before its clock starts; this one reserves its
   * operations, promises and reactions likewise.  Round 1 still meets
   * everything else for the first time (libuv's pool threads, the run
   * queue, the files' dentries). */
  uvp_ctx_reserve_ops(ctx, 2 * n);
  uvp_ctx_reserve(ctx, 3 * n, 2 * n);
  int rc = 0;
  for (int r = 0; r < rounds && rc == 0; r++)
    if ((ms[r] = fan_out(items, ps, nf, nm)) < 0)
      rc = 1;
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(items);
  free(ps);
  return file_report("uvp", n, ms, rounds, rc);
}

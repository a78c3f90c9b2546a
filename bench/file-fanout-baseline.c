/* The same file fan-out by hand on libuv callbacks: one struct per name,
 * stat -> open -> read -> close chained in callbacks, outcomes per index.
 * Usage: file-fanout-baseline DIR NFILES NMISSING [ROUNDS]
 * ROUNDS as in file-fanout.c: the first is cold, the median of the rest warm.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file-common.h"
#include <uv.h>

typedef struct item_s {
  uv_fs_t req;
  char path[256];
  uv_file fd;
  char buf[256];
  int status;
  ssize_t nread;
} item_t;

static uv_loop_t loop;

static void on_close(uv_fs_t *req) { uv_fs_req_cleanup(req); }

static void on_read(uv_fs_t *req) {
  item_t *it = req->data;
  it->nread = req->result;
  it->status = req->result < 0 ? (int)req->result : 0;
  uv_fs_req_cleanup(req);
  uv_fs_close(&loop, &it->req, it->fd, on_close);
}

/* A step's result, its request cleaned up for the next step; a failure
 * ends the name with it as the status. */
static ssize_t step_result(uv_fs_t *req) {
  item_t *it = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r < 0)
    it->status = (int)r;
  return r;
}

static void on_open(uv_fs_t *req) {
  item_t *it = req->data;
  ssize_t r = step_result(req);
  if (r < 0)
    return;
  it->fd = (uv_file)r;
  uv_buf_t b = uv_buf_init(it->buf, sizeof(it->buf));
  uv_fs_read(&loop, &it->req, it->fd, &b, 1, 0, on_read);
}

static void on_stat(uv_fs_t *req) {
  item_t *it = req->data;
  if (step_result(req) < 0)
    return;
  uv_fs_open(&loop, &it->req, it->path, O_RDONLY, 0, on_open);
}

static double fan_out(item_t *items, size_t nf, size_t nm) {
  size_t n = nf + nm;
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++) {
    items[i].status = 0;
    items[i].nread = 0;
    items[i].req.data = &items[i];
    uv_fs_stat(&loop, &items[i].req, items[i].path, on_stat);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  size_t ok = 0, enoent = 0;
  for (size_t i = 0; i < n; i++) {
    ok += items[i].status == 0 && items[i].nread > 0;
    enoent += items[i].status == UV_ENOENT;
  }
  return ok == nf && enoent == nm ? (t1 - t0) / 1e6 : -1;
}

int main(int argc, char **argv) {
  size_t nf, nm;
  int rounds;
  size_t n = file_args(argc, argv, &nf, &nm, &rounds);
  item_t *items = calloc(n, sizeof(*items));
  double ms[FILE_MAX_ROUNDS];
  for (size_t i = 0; i < n; i++)
    file_path(items[i].path, sizeof(items[i].path), argv[1], i, nf);
  uv_loop_init(&loop);
  int rc = 0;
  for (int r = 0; r < rounds && rc == 0; r++)
    if ((ms[r] = fan_out(items, nf, nm)) < 0)
      rc = 1;
  uv_loop_close(&loop);
  free(items);
  return file_report("baseline", n, ms, rounds, rc);
}

/* The same file fan-out by hand on libuv callbacks: one struct per name,
 * stat -> open -> read -> close chained in callbacks, outcomes per index.
 * Usage: file-fanout-baseline DIR NFILES NMISSING */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void on_close(uv_fs_t *req) {
  uv_fs_req_cleanup(req);
}

static void on_read(uv_fs_t *req) {
  item_t *it = req->data;
  it->nread = req->result;
  it->status = req->result < 0 ? (int)req->result : 0;
  uv_fs_req_cleanup(req);
  uv_fs_close(&loop, &it->req, it->fd, on_close);
}

static void on_open(uv_fs_t *req) {
  item_t *it = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r < 0) {
    it->status = (int)r;
    return;
  }
  it->fd = (uv_file)r;
  uv_buf_t b = uv_buf_init(it->buf, sizeof(it->buf));
  uv_fs_read(&loop, &it->req, it->fd, &b, 1, 0, on_read);
}

static void on_stat(uv_fs_t *req) {
  item_t *it = req->data;
  ssize_t r = req->result;
  uv_fs_req_cleanup(req);
  if (r < 0) {
    it->status = (int)r;
    return;
  }
  uv_fs_open(&loop, &it->req, it->path, O_RDONLY, 0, on_open);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DIR NFILES NMISSING\n", argv[0]);
    return 2;
  }
  size_t nf = strtoul(argv[2], NULL, 10), nm = strtoul(argv[3], NULL, 10);
  size_t n = nf + nm;
  item_t *items = calloc(n, sizeof(*items));
  for (size_t i = 0; i < n; i++)
    snprintf(items[i].path, sizeof(items[i].path), "%s/%s%zu", argv[1],
             i < nf ? "f" : "missing", i);
  uv_loop_init(&loop);
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++) {
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
  printf("baseline file-fanout n=%zu ok=%zu enoent=%zu wall_ms=%.1f\n", n, ok,
         enoent, (t1 - t0) / 1e6);
  uv_loop_close(&loop);
  free(items);
  return ok == nf && enoent == nm ? 0 : 1;
}

/* The same file fan-out by hand on libuv callbacks: one struct per name,
 * stat -> open -> read -> close chained in callbacks, outcomes per index.
 * Usage: file-fanout-baseline DIR NFILES NMISSING [ROUNDS]
 * ROUNDS as in file-fanout.c: the first is cold, the median of the rest warm.
 */
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

static void on_close(uv_fs_t *req) { uv_fs_req_cleanup(req); }

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

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
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
  if (argc < 4) {
    fprintf(stderr, "usage: %s DIR NFILES NMISSING [ROUNDS]\n", argv[0]);
    return 2;
  }
  size_t nf = strtoul(argv[2], NULL, 10), nm = strtoul(argv[3], NULL, 10);
  int rounds = argc > 4 ? atoi(argv[4]) : 1;
  if (rounds < 1 || rounds > 100)
    rounds = 1;
  size_t n = nf + nm;
  item_t *items = calloc(n, sizeof(*items));
  double ms[100];
  for (size_t i = 0; i < n; i++)
    snprintf(items[i].path, sizeof(items[i].path), "%s/%s%zu", argv[1],
             i < nf ? "f" : "missing", i);
  uv_loop_init(&loop);
  int rc = 0;
  for (int r = 0; r < rounds && rc == 0; r++)
    if ((ms[r] = fan_out(items, nf, nm)) < 0)
      rc = 1;
  uv_loop_close(&loop);
  free(items);
  if (rc != 0) {
    fprintf(stderr, "baseline file-fanout: wrong outcomes\n");
    return 1;
  }
  double cold = ms[0], warm = cold;
  if (rounds > 1) {
    qsort(ms + 1, (size_t)rounds - 1, sizeof(double), cmp_double);
    warm = ms[1 + (rounds - 1) / 2];
  }
  printf("baseline file-fanout n=%zu rounds=%d wall_ms=%.1f warm_ms=%.1f\n", n,
         rounds, cold, warm);
  return 0;
}

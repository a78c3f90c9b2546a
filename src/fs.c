/* uv_fs_* as promises.  One pooled object per operation holds the uv_fs_t;
 * the operation keeps a reference to its promise until libuv's callback,
 * which always runs (also after uv_cancel), cleans the request exactly
 * once and releases both. */
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "op.h"

typedef struct fsop_s {
  uvp__op_t op;
  /* whole-file helpers */
  uv_file fd;
  int err;
  bool closing;   /* the request in flight is the file's close */
  uvp_buf_t *buf; /* header of one block: [uvp_buf_t][bytes...] */
  size_t cap;     /* bytes of data the block can hold */
  size_t max;
  size_t size; /* from fstat, 0 if unknown */
  const char *data;
  size_t len;
  char path[40]; /* its first bytes, for the task dump (whole files) */
  uv_fs_t req;
} fsop_t;

_Static_assert(sizeof(fsop_t) <= UVP__OP_SLOT, "an fs operation fits a slot");

/* The operation from its request by address, not through req->data: the
 * request's first line (data, type) is one that neither libuv's completion
 * nor uv_fs_req_cleanup() reads, so a completion in a burst, which finds
 * every line of a request cold, saves one miss. */
static fsop_t *op_of(uv_fs_t *req) {
  return UVP__CONTAINER_OF(req, fsop_t, req);
}

static void fs_cancel(uvp__op_t *o) {
  fsop_t *op = UVP__CONTAINER_OF(o, fsop_t, op);
  /* 0: the callback will run with UV_ECANCELED.  UV_EBUSY: it is running
   * and will complete; the callback sees the promise settled either way. */
  (void)uv_cancel((uv_req_t *)&op->req);
}

/* libuv refused the first request synchronously: nothing is in flight,
 * and a whole-file helper has not allocated its buffer yet. */
static void fs_abort(uvp__op_t *o) {
  uv_fs_req_cleanup(&UVP__CONTAINER_OF(o, fsop_t, op)->req);
}

/* A whole-file request cancelled in its last step lets the close run: a
 * cancelled close would leave the descriptor open for good. */
static void whole_cancel(uvp__op_t *o) {
  if (!UVP__CONTAINER_OF(o, fsop_t, op)->closing)
    fs_cancel(o);
}

/* The task dump: "fs.stat /etc/hosts", "fs.read fd 7". */
static void fs_describe(const uvp__op_t *o, uvp__what_t *w) {
  static const char *const names[] = {
      [UV_FS_OPEN] = "open",           [UV_FS_CLOSE] = "close",
      [UV_FS_READ] = "read",           [UV_FS_WRITE] = "write",
      [UV_FS_STAT] = "stat",           [UV_FS_LSTAT] = "lstat",
      [UV_FS_FSTAT] = "fstat",         [UV_FS_FTRUNCATE] = "ftruncate",
      [UV_FS_UNLINK] = "unlink",       [UV_FS_RMDIR] = "rmdir",
      [UV_FS_MKDIR] = "mkdir",         [UV_FS_RENAME] = "rename",
      [UV_FS_SCANDIR] = "scandir",     [UV_FS_READLINK] = "readlink",
      [UV_FS_REALPATH] = "realpath",   [UV_FS_FSYNC] = "fsync",
      [UV_FS_FDATASYNC] = "fdatasync", [UV_FS_CHMOD] = "chmod",
      [UV_FS_FCHMOD] = "fchmod",       [UV_FS_COPYFILE] = "copyfile"};
  const fsop_t *op = UVP__CONTAINER_OF(o, fsop_t, op);
  int t = (int)op->req.fs_type;
  const char *name =
      t > 0 && (size_t)t < sizeof(names) / sizeof(names[0]) && names[t] != NULL
          ? names[t]
          : "op";
  snprintf(w->kind, sizeof(w->kind), "fs.%s", name);
  if (op->req.path != NULL)
    snprintf(w->target, sizeof(w->target), "%s", op->req.path);
  else
    snprintf(w->target, sizeof(w->target), "fd %d", (int)op->fd);
}

static void whole_describe(const uvp__op_t *o, uvp__what_t *w) {
  const fsop_t *op = UVP__CONTAINER_OF(o, fsop_t, op);
  snprintf(w->kind, sizeof(w->kind), "fs.%s",
           op->data != NULL ? "write_file" : "read_file");
  snprintf(w->target, sizeof(w->target), "%s", op->path);
}

static void simple_complete(uvp__op_t *o, uvp_promise_t *p);
static const uvp__op_kind_t simple_kind = {fs_cancel, simple_complete, fs_abort,
                                           false,     fs_describe,     false};
static const uvp__op_kind_t whole_kind = {whole_cancel,   NULL, fs_abort, false,
                                          whole_describe, false};

/* Nothing but the operation's header is initialised here: uv_fs_*() sets
 * every field of the request it or uv_fs_req_cleanup() reads before it can
 * fail, and the whole-file helpers set theirs (whole_new).  Zeroing more
 * stored to lines libuv never touches, each a miss by now (the slot's last
 * user is long gone). */
static fsop_t *op_new(uvp_ctx_t *ctx, const uvp__op_kind_t *kind,
                      const char *file, int line, uvp_promise_t **out,
                      int *rc) {
  return uvp__op_new(ctx, kind, sizeof(fsop_t), out, file, line, rc);
}

static void op_finish(fsop_t *op) {
  uvp__free(op->buf);
  uvp__op_finish(&op->op);
}

static int cancelled_code(ssize_t result) {
  return result == UV_EAI_CANCELED ? UV_ECANCELED : (int)result;
}

static uvp_dirents_t *collect_dirents(uv_fs_t *req) {
  size_t cap = 16, n = 0;
  uvp_dirents_t *d = uvp__malloc(sizeof(*d));
  uv_dirent_t *items = uvp__malloc(cap * sizeof(*items));
  uv_dirent_t ent;
  if (d == NULL || items == NULL)
    goto fail;
  while (uv_fs_scandir_next(req, &ent) == 0) {
    if (n == cap) {
      uv_dirent_t *grown = uvp__realloc(items, 2 * cap * sizeof(*items));
      if (grown == NULL)
        goto fail;
      items = grown;
      cap *= 2;
    }
    size_t len = strlen(ent.name) + 1;
    char *name = uvp__malloc(len);
    if (name == NULL)
      goto fail;
    memcpy(name, ent.name, len);
    items[n].name = name;
    items[n].type = ent.type;
    n++;
  }
  d->count = n;
  d->items = items;
  return d;
fail:
  /* Drain to the end: libuv's cleanup does not free the entry last handed
   * out when the caller stops before UV_EOF (libuv 1.44). */
  while (uv_fs_scandir_next(req, &ent) == 0) {
  }
  if (items != NULL)
    for (size_t i = 0; i < n; i++)
      uvp__free((void *)items[i].name);
  uvp__free(items);
  uvp__free(d);
  return NULL;
}

static void dirents_free(void *ptr) {
  uvp_dirents_t *d = ptr;
  for (size_t i = 0; i < d->count; i++)
    uvp__free((void *)d->items[i].name);
  uvp__free(d->items);
  uvp__free(d);
}

/* The request is cleaned only now, with the result's last release, not
 * when it settled: the handler that reads the result usually starts the
 * next request first, so libuv's copy of this path is freed right after
 * the next one is allocated and is what the allocation after that gets
 * back from malloc's per-thread cache.  Freed when settling, a burst of
 * completions frees a batch of paths before any handler allocates one,
 * and all but the first few overflow that cache (measured in the file
 * fan-out: more time in free than the hand-written client, which cleans
 * and starts the next request in the same callback). */
static void stat_free(void *statbuf) {
  fsop_t *op = UVP__CONTAINER_OF(statbuf, fsop_t, req.statbuf);
  uv_fs_req_cleanup(&op->req); /* leaves statbuf alone */
  uvp__op_free(&op->op);
}

/* Whether simple_settle reads more of the finished request than its
 * result: a stat's value lives in it, scandir, realpath and readlink copy
 * theirs out of it.  Keep in step with simple_settle's switch.  simple_cb
 * cleans every other request before simple_settle runs. */
static bool settle_reads_request(const uv_fs_t *req) {
  if (req->result < 0)
    return false;
  switch (req->fs_type) {
  case UV_FS_STAT:
  case UV_FS_LSTAT:
  case UV_FS_FSTAT:
  case UV_FS_SCANDIR:
  case UV_FS_REALPATH:
  case UV_FS_READLINK:
    return true;
  default:
    return false;
  }
}

/* Settle p from op's finished request, or release what the request
 * produced if p is NULL or was settled (cancelled) meanwhile.  Cleans the
 * request if simple_cb has not, and gives the slot back, unless p's value
 * lives in it; does not release p. */
static void simple_settle(fsop_t *op, uvp_promise_t *p) {
  uv_fs_t *req = &op->req;
  ssize_t result = req->result;
  if (p == NULL || !uvp__is_pending(p)) {
    /* Cancelled too late: release what the operation produced. */
    if (req->fs_type == UV_FS_OPEN && result >= 0) {
      uv_fs_t close_req;
      uv_fs_close(req->loop, &close_req, (uv_file)result, NULL);
      uv_fs_req_cleanup(&close_req);
    }
  } else if (result < 0) {
    uvp__reject(p, cancelled_code(result), NULL, NULL);
  } else {
    void *value = NULL;
    uvp_free_cb free_cb = NULL;
    int err = 0;
    bool keep = false;
    switch (req->fs_type) {
    case UV_FS_OPEN:
    case UV_FS_READ:
    case UV_FS_WRITE:
      value = (void *)(intptr_t)result;
      break;
    case UV_FS_STAT:
    case UV_FS_LSTAT:
    case UV_FS_FSTAT:
      /* The result already sits in the request: the operation object
       * becomes the value (no allocation, no copy on a hot path). */
      value = &op->req.statbuf;
      free_cb = stat_free;
      keep = true;
      break;
    case UV_FS_SCANDIR:
      value = collect_dirents(req);
      free_cb = dirents_free;
      err = value == NULL ? UV_ENOMEM : 0;
      break;
    case UV_FS_REALPATH:
    case UV_FS_READLINK: {
      /* Copied out: libuv's string is freed by the request's cleanup, and
       * a value must come from uvp's allocator (uvp_replace_allocator),
       * whose free releases it. */
      size_t len = strlen(req->ptr) + 1;
      value = uvp__malloc(len);
      if (value != NULL)
        memcpy(value, req->ptr, len);
      free_cb = uvp__free;
      err = value == NULL ? UV_ENOMEM : 0;
      break;
    }
    default:
      break;
    }
    if (err != 0)
      uvp__reject(p, err, NULL, NULL);
    else
      uvp__fulfill(p, value, free_cb);
    if (keep)
      return; /* cleaned by stat_free */
  }
  if (settle_reads_request(req))
    uv_fs_req_cleanup(req);
  uvp__op_free(&op->op);
}

/* The queued completion (see simple_cb); p is NULL at teardown. */
static void simple_complete(uvp__op_t *o, uvp_promise_t *p) {
  simple_settle(UVP__CONTAINER_OF(o, fsop_t, op), p);
}

/* libuv's callback.  The promise is settled from the run queue, later in
 * this loop iteration, not here: in a burst of completions each promise is
 * cold (created when the request started), and where settling here would
 * stall on each in turn, this callback only starts loading it, and the
 * rest of the poll phase hides the wait (see docs/internals/operations.md). */
static void simple_cb(uv_fs_t *req) {
  fsop_t *op = op_of(req);
  /* Clean now if the settle needs no more than the result, as a
   * hand-written callback does (why it matters: docs/internals/operations.md).
   */
  if (!settle_reads_request(req))
    uv_fs_req_cleanup(req);
  if (UVP__UNLIKELY(uvp__closed(op->op.ctx))) {
    uvp_promise_t *p = op->op.p;
    simple_settle(op, p); /* the sweep has settled p: releases only */
    uvp__unref(p);
    return;
  }
  uvp__op_complete_later(&op->op);
}

#define SIMPLE(call)                                                           \
  int rc;                                                                      \
  fsop_t *op = op_new(ctx, &simple_kind, file, line, out, &rc);                \
  if (op == NULL)                                                              \
    return rc;                                                                 \
  return uvp__op_started(&op->op, (call), out)

/* The same after checking the caller's pointers and sizes: libuv asserts
 * on a NULL path (or reads through it), and a uv_buf_t holds an unsigned
 * int, so a longer buffer would be silently cut to its low 32 bits. */
#define SIMPLE_IF(valid, call)                                                 \
  if (!(valid))                                                                \
    return UV_EINVAL;                                                          \
  SIMPLE(call)
/* An operation on a descriptor keeps it for the dump (fs_describe): the
 * request's own copy is private to libuv (a union on Windows). */
#define SIMPLE_FD(fdv, valid, call)                                            \
  if (!(valid))                                                                \
    return UV_EINVAL;                                                          \
  int rc;                                                                      \
  fsop_t *op = op_new(ctx, &simple_kind, file, line, out, &rc);                \
  if (op == NULL)                                                              \
    return rc;                                                                 \
  op->fd = (fdv);                                                              \
  return uvp__op_started(&op->op, (call), out)
#define BUF_OK(buf, len) (((buf) != NULL || (len) == 0) && (len) <= UINT_MAX)

int uvp_fs_open_at(uvp_ctx_t *ctx, const char *path, int flags, int mode,
                   uvp_promise_t **out, const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_open(uvp__loop(ctx), &op->req, path, flags, mode, simple_cb));
}
int uvp_fs_close_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                    const char *file, int line) {
  SIMPLE_FD(fd, true, uv_fs_close(uvp__loop(ctx), &op->req, fd, simple_cb));
}
int uvp_fs_read_at(uvp_ctx_t *ctx, uv_file fd, void *buf, size_t len,
                   int64_t offset, uvp_promise_t **out, const char *file,
                   int line) {
  uv_buf_t b = uv_buf_init(buf, (unsigned int)len);
  SIMPLE_FD(fd, BUF_OK(buf, len),
            uv_fs_read(uvp__loop(ctx), &op->req, fd, &b, 1, offset, simple_cb));
}
int uvp_fs_write_at(uvp_ctx_t *ctx, uv_file fd, const void *buf, size_t len,
                    int64_t offset, uvp_promise_t **out, const char *file,
                    int line) {
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned int)len);
  SIMPLE_FD(
      fd, BUF_OK(buf, len),
      uv_fs_write(uvp__loop(ctx), &op->req, fd, &b, 1, offset, simple_cb));
}
int uvp_fs_stat_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                   const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_stat(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_lstat_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                    const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_lstat(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_fstat_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                    const char *file, int line) {
  SIMPLE_FD(fd, true, uv_fs_fstat(uvp__loop(ctx), &op->req, fd, simple_cb));
}
int uvp_fs_unlink_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                     const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_unlink(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_mkdir_at(uvp_ctx_t *ctx, const char *path, int mode,
                    uvp_promise_t **out, const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_mkdir(uvp__loop(ctx), &op->req, path, mode, simple_cb));
}
int uvp_fs_rmdir_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                    const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_rmdir(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_rename_at(uvp_ctx_t *ctx, const char *path, const char *new_path,
                     uvp_promise_t **out, const char *file, int line) {
  SIMPLE_IF(path != NULL && new_path != NULL,
            uv_fs_rename(uvp__loop(ctx), &op->req, path, new_path, simple_cb));
}
int uvp_fs_scandir_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                      const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_scandir(uvp__loop(ctx), &op->req, path, 0, simple_cb));
}
int uvp_fs_realpath_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                       const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_realpath(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_readlink_at(uvp_ctx_t *ctx, const char *path, uvp_promise_t **out,
                       const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_readlink(uvp__loop(ctx), &op->req, path, simple_cb));
}
int uvp_fs_fsync_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                    const char *file, int line) {
  SIMPLE_FD(fd, true, uv_fs_fsync(uvp__loop(ctx), &op->req, fd, simple_cb));
}
int uvp_fs_fdatasync_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                        const char *file, int line) {
  SIMPLE_FD(fd, true, uv_fs_fdatasync(uvp__loop(ctx), &op->req, fd, simple_cb));
}
/* A negative length is refused here, as ftruncate(2) would refuse it, so
 * that nothing is started for it (uvp.h). */
int uvp_fs_ftruncate_at(uvp_ctx_t *ctx, uv_file fd, int64_t offset,
                        uvp_promise_t **out, const char *file, int line) {
  SIMPLE_FD(fd, offset >= 0,
            uv_fs_ftruncate(uvp__loop(ctx), &op->req, fd, offset, simple_cb));
}
int uvp_fs_chmod_at(uvp_ctx_t *ctx, const char *path, int mode,
                    uvp_promise_t **out, const char *file, int line) {
  SIMPLE_IF(path != NULL,
            uv_fs_chmod(uvp__loop(ctx), &op->req, path, mode, simple_cb));
}
int uvp_fs_fchmod_at(uvp_ctx_t *ctx, uv_file fd, int mode, uvp_promise_t **out,
                     const char *file, int line) {
  SIMPLE_FD(fd, true,
            uv_fs_fchmod(uvp__loop(ctx), &op->req, fd, mode, simple_cb));
}
/* libuv refuses flags it does not know (UV_EINVAL) before it starts
 * anything: uvp__op_started undoes the operation and returns that. */
int uvp_fs_copyfile_at(uvp_ctx_t *ctx, const char *path, const char *new_path,
                       int flags, uvp_promise_t **out, const char *file,
                       int line) {
  SIMPLE_IF(path != NULL && new_path != NULL,
            uv_fs_copyfile(uvp__loop(ctx), &op->req, path, new_path, flags,
                           simple_cb));
}

/* ---- whole files --------------------------------------------------------- */

/* Each step re-uses op->req.  Any failure or a cancellation closes the file
 * first (when open) and settles in the close callback.  Reads and writes
 * go at the descriptor's own position (offset -1), which is the count
 * moved so far: the descriptor is the request's alone, and a FIFO or a
 * character device, where pread and pwrite fail with ESPIPE, reads and
 * writes too. */
static void whole_cb(uv_fs_t *req);

static fsop_t *whole_new(uvp_ctx_t *ctx, const char *path, const char *file,
                         int line, uvp_promise_t **out, int *rc) {
  fsop_t *op = op_new(ctx, &whole_kind, file, line, out, rc);
  if (op != NULL) {
    memset(&op->fd, 0, offsetof(fsop_t, req) - offsetof(fsop_t, fd));
    op->fd = -1;
    /* For the dump: a longer path is shown cut, ending "...". */
    if (snprintf(op->path, sizeof(op->path), "%s", path) >=
        (int)sizeof(op->path))
      memcpy(op->path + sizeof(op->path) - 4, "...", 4);
  }
  return op;
}

static void whole_close(fsop_t *op, int err) {
  if (op->err == 0)
    op->err = err;
  if (op->fd < 0) {
    uvp__op_settle(&op->op, op->err, NULL, NULL);
    op_finish(op);
    return;
  }
  uv_file fd = op->fd;
  op->fd = -1;
  op->closing = true;
  int rc = uv_fs_close(op->req.loop, &op->req, fd, whole_cb);
  if (rc != 0)
    whole_close(op, rc);
}

static bool grow(fsop_t *op, size_t want) {
  uvp_buf_t *b = uvp__realloc(op->buf, sizeof(uvp_buf_t) + want + 1);
  if (b == NULL)
    return false;
  b->base = (char *)(b + 1);
  op->buf = b;
  op->cap = want;
  return true;
}

/* What one request may move: a uv_buf_t's length is an unsigned int, and
 * a longer rest, cut to its low 32 bits, could be 0 (a read that looks
 * like end of file, a write that never advances). */
static unsigned int chunk(size_t n) {
  return n > UINT_MAX ? UINT_MAX : (unsigned int)n;
}

static void read_next(fsop_t *op) {
  if (op->buf->len == op->cap) {
    size_t want = op->cap < 4096 ? 4096 : op->cap * 2;
    /* One more byte than max tells "too big"; want - 1, not max + 1,
     * which wraps to 0 for a max of SIZE_MAX. */
    if (op->max != 0 && want - 1 > op->max)
      want = op->max + 1;
    if (want <= op->cap || !grow(op, want)) {
      whole_close(op, want <= op->cap ? UV_EFBIG : UV_ENOMEM);
      return;
    }
  }
  uv_buf_t b =
      uv_buf_init(op->buf->base + op->buf->len, chunk(op->cap - op->buf->len));
  int rc = uv_fs_read(op->req.loop, &op->req, op->fd, &b, 1, -1, whole_cb);
  if (rc != 0)
    whole_close(op, rc);
}

static void write_next(fsop_t *op) {
  uv_buf_t b =
      uv_buf_init((char *)op->data + op->size, chunk(op->len - op->size));
  int rc = uv_fs_write(op->req.loop, &op->req, op->fd, &b, 1, -1, whole_cb);
  if (rc != 0)
    whole_close(op, rc);
}

/* The file is closed: settle with what was read or written, or the first
 * error, and end. */
static void whole_closed(fsop_t *op, ssize_t result) {
  if (op->err == 0 && result < 0)
    op->err = (int)result;
  if (op->err != 0) {
    uvp__op_settle(&op->op, op->err, NULL, NULL);
  } else if (op->data != NULL) {
    uvp__op_settle(&op->op, 0, (void *)(intptr_t)op->len, NULL);
  } else if (uvp__op_wanted(&op->op)) {
    uvp_buf_t *b = op->buf;
    op->buf = NULL;
    b->base[b->len] = '\0';
    uvp__op_settle(&op->op, 0, b, uvp__free);
  }
  op_finish(op);
}

/* The next step after a successful one. */
static void whole_step(fsop_t *op, uv_fs_type type, ssize_t result,
                       uint64_t st_size) {
  switch (type) {
  case UV_FS_OPEN:
    if (op->data != NULL) {
      if (op->len == 0)
        whole_close(op, 0);
      else
        write_next(op);
      return;
    }
    if (uv_fs_fstat(op->req.loop, &op->req, op->fd, whole_cb) != 0)
      whole_close(op, UV_EIO);
    return;
  case UV_FS_FSTAT:
    if (op->max != 0 && st_size > op->max) {
      whole_close(op, UV_EFBIG);
      return;
    }
    op->size = (size_t)st_size;
    if (!grow(op, op->size != 0 ? op->size : 4096)) {
      whole_close(op, UV_ENOMEM);
      return;
    }
    op->buf->len = 0;
    read_next(op);
    return;
  case UV_FS_READ:
    op->buf->len += (size_t)result;
    /* A regular file is done at its stat size; others (procfs, pipes)
     * when a read returns 0. */
    if (result == 0 || (op->size != 0 && op->buf->len == op->size))
      whole_close(op, 0);
    else if (op->max != 0 && op->buf->len > op->max)
      whole_close(op, UV_EFBIG);
    else
      read_next(op);
    return;
  case UV_FS_WRITE:
    op->size += (size_t)result;
    if (op->size == op->len)
      whole_close(op, 0);
    else
      write_next(op);
    return;
  default:
    whole_close(op, UV_EIO);
    return;
  }
}

static void whole_cb(uv_fs_t *req) {
  fsop_t *op = op_of(req);
  ssize_t result = req->result;
  uv_fs_type type = req->fs_type;
  uint64_t st_size = req->statbuf.st_size;
  uv_fs_req_cleanup(req);
  if (type == UV_FS_CLOSE) {
    whole_closed(op, result);
    return;
  }
  if (type == UV_FS_OPEN && result >= 0)
    op->fd = (uv_file)result;
  if (!uvp__op_wanted(&op->op))
    whole_close(op, UV_ECANCELED);
  else if (result < 0)
    whole_close(op, cancelled_code(result));
  else
    whole_step(op, type, result, st_size);
}

int uvp_fs_read_file_at(uvp_ctx_t *ctx, const char *path, size_t max,
                        uvp_promise_t **out, const char *file, int line) {
  if (path == NULL)
    return UV_EINVAL;
  int rc;
  fsop_t *op = whole_new(ctx, path, file, line, out, &rc);
  if (op == NULL)
    return rc;
  op->max = max;
  return uvp__op_started(
      &op->op,
      uv_fs_open(uvp__loop(ctx), &op->req, path, O_RDONLY, 0, whole_cb), out);
}

int uvp_fs_write_file_at(uvp_ctx_t *ctx, const char *path, const void *data,
                         size_t len, uvp_promise_t **out, const char *file,
                         int line) {
  if (path == NULL || (data == NULL && len > 0))
    return UV_EINVAL;
  int rc;
  fsop_t *op = whole_new(ctx, path, file, line, out, &rc);
  if (op == NULL)
    return rc;
  op->data = data != NULL ? data : "";
  op->len = len;
  return uvp__op_started(&op->op,
                         uv_fs_open(uvp__loop(ctx), &op->req, path,
                                    O_WRONLY | O_CREAT | O_TRUNC, 0644,
                                    whole_cb),
                         out);
}

/* uv_spawn as a promise.
 *
 * One heap object per child holds the process handle, up to three pipes
 * (stdin only when there is data to write), the result being collected and
 * a reference to the promise.  The object dies in the close callback of its
 * last handle, so every path — normal completion, cancellation, teardown
 * and a uv_spawn that fails synchronously — ends in the same place and
 * settles (or not) there.  Settling only then is what makes the value
 * complete: a child's exit and the end of its output arrive in either
 * order, and bytes can still be queued in a pipe after exit. */
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "cause.h"
#include "op.h"

#define DEFAULT_MAX_OUTPUT ((size_t)16 * 1024 * 1024)
#define FIRST_CAP 4096
/* One read(2) at a time never needs more, and uv_buf_t is unsigned. */
#define MAX_CHUNK ((size_t)1024 * 1024)
/* The program's path as the task dump shows it: its last bytes, after
 * "...", when longer (the end names the program). */
#define PATH_SHOWN 200

enum { S_IN, S_OUT, S_ERR };
enum { INIT_PROC = 1u << 3 }; /* bits 0..2: pipes[S_*] initialised */

typedef struct procop_s {
  uvp__op_t op;
  uv_process_t proc;
  uv_pipe_t pipes[3];
  uv_write_t write_req;
  uvp_process_result_t *res;
  size_t cap[3]; /* bytes res->out / res->err can hold, besides the NUL */
  size_t max;
  int cancel_signal;
  int open; /* initialised handles whose close callback has not run */
  int err;  /* first failure while collecting */
  unsigned inited;
  bool exited;
  bool aborted; /* uv_spawn failed: the promise was never handed out */
  /* Where bytes beyond max_output (or after a failed allocation) go: the
   * pipes are still drained, so the child never blocks on a full pipe. */
  char scratch[4096];
  size_t in_len;
  const char *path; /* opts->file (or its end), for the task dump: after */
  char in_data[];   /* the caller's stdin_data, copied */
} procop_t;

static void result_free(void *ptr) {
  uvp_process_result_t *r = ptr;
  uvp__free(r->out.base);
  uvp__free(r->err.base);
  uvp__free(r);
}

static uvp_buf_t *buf_of(procop_t *op, int i) {
  return i == S_OUT ? &op->res->out : &op->res->err;
}

static int pipe_index(procop_t *op, const void *h) {
  return (int)((const uv_pipe_t *)h - op->pipes);
}

/* Give back what the doubling left unused; failing to is harmless. */
static void shrink(uvp_buf_t *b) {
  char *base = uvp__realloc(b->base, b->len + 1);
  if (base != NULL)
    b->base = base;
  b->base[b->len] = '\0';
}

/* The last handle has closed: settle, and the operation ends. */
static void finish(procop_t *op) {
  uvp_process_result_t *res = op->res;
  if (op->aborted) {
    result_free(res);
    uvp__op_free(&op->op); /* its promise went with the abort */
    return;
  }
  uvp_promise_t *p = op->op.p;
  bool fulfils = op->err == 0 && uvp__op_wanted(&op->op);
  if (fulfils) {
    shrink(&res->out);
    shrink(&res->err);
  }
  uvp__op_settle(&op->op, op->err, res, result_free);
  if (fulfils) { /* what a race it decides tells its losers (cause.h) */
    char note[PATH_SHOWN + 96];
    if (res->term_signal != 0)
      snprintf(note, sizeof(note), "process %d (%s) was killed by signal %d",
               (int)op->proc.pid, op->path, res->term_signal);
    else
      snprintf(note, sizeof(note), "process %d (%s) exited with status %lld",
               (int)op->proc.pid, op->path, (long long)res->exit_status);
    uvp__note_settled(p, note);
  }
  uvp__op_finish(&op->op);
}

static void handle_closed(uv_handle_t *h) {
  procop_t *op = h->data;
  if (--op->open == 0)
    finish(op);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, handle_closed);
}

static void close_pipes(procop_t *op) {
  for (int i = S_IN; i <= S_ERR; i++)
    if (op->inited & (1u << i))
      close_handle((uv_handle_t *)&op->pipes[i]);
}

static void proc_cancel(uvp__op_t *o) {
  procop_t *op = UVP__CONTAINER_OF(o, procop_t, op);
  /* Until exit_cb the child is not reaped, so its pid cannot have been
   * reused: the signal reaches the right process (or its zombie). */
  if (!op->exited)
    (void)uv_process_kill(&op->proc, op->cancel_signal);
  /* Not waiting for end of file: a grandchild may hold the pipes open for
   * ever, and nobody wants the output any more. */
  close_pipes(op);
}

static void exit_cb(uv_process_t *proc, int64_t exit_status, int term_signal) {
  procop_t *op = proc->data;
  op->res->exit_status = exit_status;
  op->res->term_signal = term_signal;
  op->exited = true;
  close_handle((uv_handle_t *)proc);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  procop_t *op = h->data;
  int i = pipe_index(op, h);
  uvp_buf_t *ob = buf_of(op, i);
  (void)suggested;
  if (ob->len == op->max || op->err != 0) {
    *b = uv_buf_init(op->scratch, sizeof(op->scratch));
    return;
  }
  if (ob->len == op->cap[i]) {
    size_t want = op->cap[i] < FIRST_CAP     ? FIRST_CAP
                  : op->cap[i] > op->max / 2 ? op->max
                                             : op->cap[i] * 2;
    if (want > op->max)
      want = op->max;
    char *base = uvp__realloc(ob->base, want + 1);
    if (base == NULL) {
      op->err = UV_ENOMEM;
      *b = uv_buf_init(op->scratch, sizeof(op->scratch));
      return;
    }
    ob->base = base;
    op->cap[i] = want;
  }
  size_t room = op->cap[i] - ob->len;
  if (room > MAX_CHUNK)
    room = MAX_CHUNK;
  *b = uv_buf_init(ob->base + ob->len, (unsigned int)room);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  procop_t *op = s->data;
  if (nread > 0) {
    if (b->base == op->scratch)
      op->res->truncated = 1;
    else
      buf_of(op, pipe_index(op, s))->len += (size_t)nread;
  } else if (nread < 0) {
    if (nread != UV_EOF && op->err == 0)
      op->err = (int)nread;
    close_handle((uv_handle_t *)s);
  }
}

static void write_cb(uv_write_t *req, int status) {
  procop_t *op = req->data;
  /* A child may exit without reading all of its input (UV_EPIPE), and a
   * cancellation fails the write (UV_ECANCELED): its exit status tells the
   * caller what happened, so neither is an error of the call.  Closing the
   * pipe is the child's end of file. */
  (void)status;
  close_handle((uv_handle_t *)&op->pipes[S_IN]);
}

/* The promise settles in finish(), never through the operation layer's
 * queue. */
/* The task dump: "process 1234 /bin/sleep". */
static void proc_describe(const uvp__op_t *o, uvp__what_t *w) {
  const procop_t *op = UVP__CONTAINER_OF(o, procop_t, op);
  snprintf(w->kind, sizeof(w->kind), "process");
  snprintf(w->target, sizeof(w->target), "%d %s%s", (int)op->proc.pid, op->path,
           op->exited ? " (exited; its output still open)" : "");
}

static const uvp__op_kind_t proc_kind = {proc_cancel, NULL,          NULL,
                                         false,       proc_describe, false};

/* uv_spawn refused: the handles it and we initialised still need their
 * close callbacks, and the object lives until they have run.  Its promise
 * was never handed out: it goes now, unsettled. */
static int spawn_abort(procop_t *op, int rc) {
  op->aborted = true;
  uvp__produced_abort(op->op.p);
  close_pipes(op);
  if (op->inited & INIT_PROC)
    close_handle((uv_handle_t *)&op->proc);
  if (op->open == 0)
    finish(op);
  return rc;
}

static void start_io(procop_t *op) {
  for (int i = S_OUT; i <= S_ERR; i++) {
    int rc = uv_read_start((uv_stream_t *)&op->pipes[i], alloc_cb, read_cb);
    if (rc != 0) {
      if (op->err == 0)
        op->err = rc;
      close_handle((uv_handle_t *)&op->pipes[i]);
    }
  }
  if (!(op->inited & (1u << S_IN)))
    return;
  int rc = UV_EOF; /* nothing to write: end of file at once */
  if (op->in_len > 0) {
    uv_buf_t b = uv_buf_init(op->in_data, (unsigned int)op->in_len);
    op->write_req.data = op;
    rc = uv_write(&op->write_req, (uv_stream_t *)&op->pipes[S_IN], &b, 1,
                  write_cb);
  }
  if (rc != 0)
    close_handle((uv_handle_t *)&op->pipes[S_IN]);
}

/* The result the child's output is collected into (empty strings). */
static uvp_process_result_t *result_new(void) {
  uvp_process_result_t *res = uvp__calloc(1, sizeof(*res));
  if (res == NULL)
    return NULL;
  res->out.base = uvp__malloc(1);
  res->err.base = uvp__malloc(1);
  if (res->out.base == NULL || res->err.base == NULL) {
    result_free(res);
    return NULL;
  }
  res->out.base[0] = res->err.base[0] = '\0';
  return res;
}

/* The pipes the child's stdio is connected to (stdin only with data). */
static int open_pipes(procop_t *op, uv_loop_t *loop,
                      const uvp_spawn_opts_t *opts,
                      uv_stdio_container_t stdio[3]) {
  memset(stdio, 0, 3 * sizeof(*stdio));
  stdio[S_IN].flags = UV_IGNORE;
  for (int i = opts->stdin_data != NULL ? S_IN : S_OUT; i <= S_ERR; i++) {
    int rc = uv_pipe_init(loop, &op->pipes[i], 0);
    if (rc != 0)
      return rc;
    op->pipes[i].data = op;
    op->inited |= 1u << i;
    op->open++;
    /* READABLE/WRITABLE are from the child's point of view. */
    stdio[i].flags =
        (uv_stdio_flags)(UV_CREATE_PIPE |
                         (i == S_IN ? UV_READABLE_PIPE : UV_WRITABLE_PIPE));
    stdio[i].data.stream = (uv_stream_t *)&op->pipes[i];
  }
  return 0;
}

static int spawn(procop_t *op, uv_loop_t *loop, const uvp_spawn_opts_t *opts) {
  uv_stdio_container_t stdio[3];
  int rc = open_pipes(op, loop, opts, stdio);
  if (rc != 0)
    return rc;
  char *default_args[2] = {(char *)opts->file, NULL};
  uv_process_options_t po;
  memset(&po, 0, sizeof(po));
  po.exit_cb = exit_cb;
  po.file = opts->file;
  po.args = opts->args != NULL ? opts->args : default_args;
  po.env = opts->env;
  po.cwd = opts->cwd;
  po.stdio_count = 3;
  po.stdio = stdio;
  rc = uv_spawn(loop, &op->proc, &po);
  /* uv_spawn initialises the handle before anything can fail, so it needs
   * closing whatever the outcome. */
  op->proc.data = op;
  op->inited |= INIT_PROC;
  op->open++;
  return rc;
}

int uvp_spawn_at(uvp_ctx_t *ctx, const uvp_spawn_opts_t *opts,
                 uvp_promise_t **out, const char *file, int line) {
  if (out == NULL || opts == NULL || opts->file == NULL ||
      (opts->stdin_data == NULL && opts->stdin_len != 0) ||
      opts->stdin_len > UINT_MAX || opts->cancel_signal < 0 ||
      opts->cancel_signal >= NSIG)
    return UV_EINVAL;
  size_t in_len = opts->stdin_len;
  size_t path_len = strlen(opts->file);
  size_t path_from = path_len > PATH_SHOWN ? path_len - (PATH_SHOWN - 3) : 0;
  size_t shown = path_from != 0 ? PATH_SHOWN : path_len;
  uvp_process_result_t *res = NULL;
  int rc = uvp__ctx_check(ctx);
  if (rc == 0 && (res = result_new()) == NULL)
    rc = UV_ENOMEM;
  procop_t *op =
      rc != 0 ? NULL
              : uvp__op_new(ctx, &proc_kind, sizeof(*op) + in_len + shown + 1,
                            out, file, line, &rc);
  if (op == NULL) {
    if (res != NULL)
      result_free(res);
    return rc;
  }
  memset((char *)op + sizeof(op->op), 0, sizeof(*op) - sizeof(op->op));
  op->res = res;
  op->max = opts->max_output != 0 ? opts->max_output : DEFAULT_MAX_OUTPUT;
  if (op->max > SIZE_MAX / 2)
    op->max = SIZE_MAX / 2; /* so that max + 1 and doubling cannot wrap */
  op->cancel_signal = opts->cancel_signal != 0 ? opts->cancel_signal : SIGTERM;
  op->in_len = in_len;
  if (in_len > 0)
    memcpy(op->in_data, opts->stdin_data, in_len);
  char *path = op->in_data + in_len;
  snprintf(path, shown + 1, "%s%s", path_from != 0 ? "..." : "",
           opts->file + path_from);
  op->path = path;
  rc = spawn(op, uvp__loop(ctx), opts);
  if (rc != 0)
    return spawn_abort(op, rc);
  start_io(op);
  *out = op->op.p;
  return 0;
}

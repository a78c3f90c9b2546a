/** @file
 * libuv operations as promises: files, TCP, DNS, the thread pool's work,
 * processes.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_IO
#define UVP_H_IO

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup wrappers libuv operations as promises: common rules
 *
 * Every wrapper below:
 *  - runs on the loop thread and returns 0 with *out holding one reference
 *    to a promise that only uvp settles, or a negative code (UV_EINVAL,
 *    UV_ENOMEM, UVP_ECLOSED, or libuv's synchronous error) with nothing
 *    started;
 *  - rejects with libuv's error code (UV_ENOENT, UV_ECONNREFUSED, ...);
 *  - settles in the loop iteration in which libuv reports the result.  A
 *    file operation settles from uvp's run queue, like a handler, right
 *    after that iteration's I/O callbacks (in a later iteration if the
 *    handlers queued ahead of it use up the budget: see
 *    uvp_ctx_set_budget), not inside libuv's callback.  A cancel in
 *    between still wins, as below.  Such a settle
 *    waits until no handler is queued, and its handlers, with everything
 *    they queue in turn, run before the next of them settles: the order
 *    of completions reported one per iteration, and Node's, which runs the
 *    promise jobs of each I/O callback before the next callback.  Unlike
 *    Node, an endless chain of handlers does not hold them back for good:
 *    if a scheduler callback (see uvp_ctx_set_budget) ends without having
 *    found a moment for any of them, those it left waiting run first in
 *    the next one;
 *  - can be cancelled with uvp_promise_cancel() (or through timeouts, and
 *    the losers of race/any with UVP_CANCEL_LOSERS): the promise rejects
 *    with UV_ECANCELED at once.  Thread-pool requests (fs, getaddrinfo,
 *    work) are uv_cancel()ed if not yet started; one already running
 *    completes and its late result is released.  Handle-based operations
 *    (TCP, processes) close their handle (a process is sent a signal
 *    first).  libuv's cleanup (uv_fs_req_cleanup, uv_freeaddrinfo,
 *    uv_close) runs exactly once in every case;
 *  - keeps uv_run() going while its request or handle is in flight, as
 *    the bare libuv operation would (unlike uvp's own scheduler handles);
 *  - is torn down by uvp_ctx_close() like a cancellation (UVP_ECLOSED);
 *    run the loop afterwards so the requests' callbacks and handles'
 *    close callbacks can run before uv_loop_close().
 * Values are documented per function; "owned" means owned by the promise
 * (freed with it), "borrowed" means the caller's memory, which must stay
 * valid until libuv is done with it: until the promise settles — except
 * after a cancellation (uvp_promise_cancel, a timeout, UVP_CANCEL_LOSERS,
 * uvp_ctx_close) of a request already running, whose promise rejects at
 * once while a pool thread or the kernel may still read or fill the
 * buffer until the request completes.  Such a request keeps uv_run() going
 * until then, so memory freed after uv_run() has returned is always safe;
 * freeing it in the rejection handler is not.
 *
 * Cancel-safety.  Each wrapper says below, in a line that begins
 * "Cancelled:", what a cancellation in mid-flight leaves behind: bytes
 * still in the stream or lost, a write partly sent or not, a file request
 * run anyway in the pool or not, a child killed or left running.  It holds
 * for every way uvp cancels: uvp_promise_cancel, a group's cancel
 * (uvp_group_cancel, UVP_GROUP_FAIL_FAST, a cancelled join), a deadline
 * passing (the promise rejects with UV_ETIMEDOUT instead of UV_ECANCELED),
 * uvp_timeout, a race's or map's losers, and uvp_ctx_close
 * (test/test-cancel-safety.c shows each line by the first three).  "Queued"
 * means still waiting for a thread of the pool, "running" that a thread
 * has taken it. */
/** @{ */

/** Integer results (file descriptors, byte counts) travel in the value
 * pointer. */
#define UVP_INT(value) ((int64_t)(intptr_t)(value))

/** A byte buffer owned by its promise; base[len] is a NUL byte. */
typedef struct uvp_buf_s {
  char *base; /**< the bytes, NUL-terminated */
  size_t len; /**< how many, the NUL excluded */
} uvp_buf_t;
/** @} */

/** @defgroup files Files (uv_fs_*) — thread pool
 *
 * Paths are copied by libuv during the call: they need not outlive it.
 * A NULL path is UV_EINVAL.  Every request below is one pool request but
 * read_file and write_file (one per step): cancelled queued, it never
 * runs; cancelled running, it runs to its end, as the lines say. */
/** @{ */

/** @name uvp_fs_open, uvp_fs_open_at
 * @{ */
/** open: value UVP_INT(v) is the uv_file; you close it (uvp_fs_close).
 * Cancelled: queued, nothing is opened or created; running, the open
 * completes (a file O_CREAT makes stays) and uvp closes the descriptor. */
#define uvp_fs_open(...) uvp_fs_open_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_open_at(uvp_ctx_t *ctx, const char *path, int flags,
                              int mode, uvp_promise_t **out, const char *file,
                              int line);
/** @} */
/** @name uvp_fs_close, uvp_fs_close_at
 * @{ */
/** close: value NULL.
 * Cancelled: queued, the descriptor stays open (yours: close it again);
 * running, it is closed. */
#define uvp_fs_close(...) uvp_fs_close_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_close_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_read, uvp_fs_read_at, uvp_fs_write, uvp_fs_write_at
 * @{ */
/** read / write `len` bytes at `offset` (-1: the current position); `buf` is
 * borrowed (after a cancellation, until the request completes: see above).
 * Value UVP_INT(v): bytes transferred (0 at end of file).  A NULL buf with
 * len > 0, or len over UINT_MAX (what one libuv buffer holds), is
 * UV_EINVAL.
 * Cancelled: queued, nothing is read or written and the position stays;
 * running, the call completes: buf may be filled (the bytes are taken from
 * a pipe or socket), or the bytes written, and offset -1 moves on. */
#define uvp_fs_read(...) uvp_fs_read_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_read_at(uvp_ctx_t *ctx, uv_file fd, void *buf, size_t len,
                              int64_t offset, uvp_promise_t **out,
                              const char *file, int line);
#define uvp_fs_write(...) uvp_fs_write_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_write_at(uvp_ctx_t *ctx, uv_file fd, const void *buf,
                               size_t len, int64_t offset, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_stat, uvp_fs_lstat, uvp_fs_fstat
 * @{ */
/** stat / lstat / fstat: value is an owned uv_stat_t *.
 * Cancelled: nothing is left (a running one's result is freed). */
#define uvp_fs_stat(...) uvp_fs_stat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_stat_at(uvp_ctx_t *ctx, const char *path,
                              uvp_promise_t **out, const char *file, int line);
#define uvp_fs_lstat(...) uvp_fs_lstat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_lstat_at(uvp_ctx_t *ctx, const char *path,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_fstat(...) uvp_fs_fstat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fstat_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_unlink, uvp_fs_mkdir, uvp_fs_rmdir, uvp_fs_rename
 * @{ */
/** unlink / mkdir / rmdir / rename: value NULL.
 * Cancelled: queued, the file system is unchanged; running, the change is
 * made (the promise has rejected all the same). */
#define uvp_fs_unlink(...) uvp_fs_unlink_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_unlink_at(uvp_ctx_t *ctx, const char *path,
                                uvp_promise_t **out, const char *file,
                                int line);
#define uvp_fs_mkdir(...) uvp_fs_mkdir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_mkdir_at(uvp_ctx_t *ctx, const char *path, int mode,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_rmdir(...) uvp_fs_rmdir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_rmdir_at(uvp_ctx_t *ctx, const char *path,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_rename(...) uvp_fs_rename_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_rename_at(uvp_ctx_t *ctx, const char *path,
                                const char *new_path, uvp_promise_t **out,
                                const char *file, int line);
/** @} */
/** @name uvp_dirents_t, uvp_fs_scandir, uvp_fs_scandir_at
 * @{ */
/** scandir: value is an owned uvp_dirents_t * (names owned too), in the
 * order libuv returns them.
 * Cancelled: nothing is left (a running one's list is freed). */
typedef struct uvp_dirents_s {
  size_t count;       /**< how many entries */
  uv_dirent_t *items; /**< the entries */
} uvp_dirents_t;
#define uvp_fs_scandir(...) uvp_fs_scandir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_scandir_at(uvp_ctx_t *ctx, const char *path,
                                 uvp_promise_t **out, const char *file,
                                 int line);
/** @} */
/** @name uvp_fs_realpath, uvp_fs_realpath_at
 * @{ */
/** realpath: value is an owned char *.
 * Cancelled: nothing is left (a running one's string is freed). */
#define uvp_fs_realpath(...) uvp_fs_realpath_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_realpath_at(uvp_ctx_t *ctx, const char *path,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_readlink, uvp_fs_readlink_at
 * @{ */
/** readlink: value is an owned char *, the link's contents as stored
 * (not resolved: see realpath), NUL-terminated, the same type as
 * realpath's.  A path that is not a symbolic link rejects with UV_EINVAL
 * (readlink(2)'s answer).
 * Cancelled: nothing is left (a running one's string is freed). */
#define uvp_fs_readlink(...) uvp_fs_readlink_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_readlink_at(uvp_ctx_t *ctx, const char *path,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_fsync, uvp_fs_fsync_at, uvp_fs_fdatasync, uvp_fs_fdatasync_at
 * @{ */
/** fsync / fdatasync: flush the file's data (fsync: and its metadata) to
 * the device; value NULL.
 * Cancelled: queued, nothing is flushed; running, the flush completes. */
#define uvp_fs_fsync(...) uvp_fs_fsync_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fsync_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
#define uvp_fs_fdatasync(...)                                                  \
  uvp_fs_fdatasync_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fdatasync_at(uvp_ctx_t *ctx, uv_file fd,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_ftruncate, uvp_fs_ftruncate_at
 * @{ */
/** ftruncate: cut or extend (with zeros) the file to `offset` bytes; value
 * NULL.  A negative offset is UV_EINVAL, returned at once with nothing
 * started (ftruncate(2) would reject it the same way).
 * Cancelled: queued, the size is unchanged; running, it is changed. */
#define uvp_fs_ftruncate(...)                                                  \
  uvp_fs_ftruncate_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_ftruncate_at(uvp_ctx_t *ctx, uv_file fd, int64_t offset,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_chmod, uvp_fs_chmod_at, uvp_fs_fchmod, uvp_fs_fchmod_at
 * @{ */
/** chmod / fchmod: set the permission bits to `mode` (as chmod(2): 0644,
 * ...; not masked by the umask); value NULL.
 * Cancelled: queued, the mode is unchanged; running, it is changed. */
#define uvp_fs_chmod(...) uvp_fs_chmod_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_chmod_at(uvp_ctx_t *ctx, const char *path, int mode,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_fchmod(...) uvp_fs_fchmod_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fchmod_at(uvp_ctx_t *ctx, uv_file fd, int mode,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @name uvp_fs_copyfile, uvp_fs_copyfile_at
 * @{ */
/** copyfile: copy `path`'s contents and permission bits to `new_path`,
 * which is replaced if it exists; value NULL.  `flags` is libuv's, passed
 * through: UV_FS_COPYFILE_EXCL (an existing new_path rejects with
 * UV_EEXIST), UV_FS_COPYFILE_FICLONE (a copy-on-write clone where the
 * file system has them, else a copy), UV_FS_COPYFILE_FICLONE_FORCE (a
 * clone or a rejection, such as UV_ENOTSUP).  Any other bit is UV_EINVAL,
 * returned at once with nothing started.
 * Cancelled: queued, new_path is untouched; running, the copy completes. */
#define uvp_fs_copyfile(...) uvp_fs_copyfile_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_copyfile_at(uvp_ctx_t *ctx, const char *path,
                                  const char *new_path, int flags,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_read_file, uvp_fs_read_file_at
 * @{ */
/** read_file: open, read to the end, close; value is an owned uvp_buf_t *.
 * Files over `max` bytes (0: no limit) reject with UV_EFBIG; files whose
 * size stat does not know (/proc, pipes, devices) are read until end of
 * file or `max`.  A FIFO no one writes to holds a pool thread in open(2)
 * or read(2) until a writer comes: cancelling or timing out the promise
 * rejects it, but the request (and so uv_run) goes on until then, as for
 * any libuv file request.  Check with uvp_fs_stat first when a path may
 * name one.
 * Cancelled: nothing is left: the step running completes, no later step
 * starts, the descriptor is closed and what was read is freed. */
#define uvp_fs_read_file(...)                                                  \
  uvp_fs_read_file_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_read_file_at(uvp_ctx_t *ctx, const char *path, size_t max,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_write_file, uvp_fs_write_file_at
 * @{ */
/** write_file: create or truncate (mode 0644), write all of `data`
 * (borrowed), close; value UVP_INT(v) is the byte count.
 * Cancelled: the step running completes, no later step starts, the
 * descriptor is closed: once the open has run, the file stays created and
 * truncated with a prefix of data (possibly none) in it. */
#define uvp_fs_write_file(...)                                                 \
  uvp_fs_write_file_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_write_file_at(uvp_ctx_t *ctx, const char *path,
                                    const void *data, size_t len,
                                    uvp_promise_t **out, const char *file,
                                    int line);
/** @} */
/** @} */

/** @defgroup tcp TCP (uv_tcp_*) */
/** @{ */

/** A connection: a uv_tcp_t that uvp owns, plus its pending operations.  You
 * own the uvp_tcp_t and must close it with uvp_tcp_close() — like a libuv
 * handle, before uv_loop_close().  At most one read is pending at a time;
 * writes queue in order.  Cancelling any operation of a connection (or its
 * timing out) closes the connection: libuv cannot cancel a connect, write
 * or read half-way, and a stream in an unknown state is no use.  Every
 * other pending operation then rejects with UV_ECANCELED.  (A watch,
 * uvp_tcp_closed, is the exception: cancelling it stops only the watch.)
 * Operations on a connection whose handle is closed return UV_EBADF. */
typedef struct uvp_tcp_s uvp_tcp_t;

/** A new, unconnected connection.  Errors: UV_EINVAL, UV_ENOMEM,
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_tcp_new(uvp_ctx_t *ctx, uvp_tcp_t **out);

/** Accept a pending connection of a listening `server` (call it from your
 * uv_connection_cb).  Errors: UV_EINVAL (NULL argument: the connection
 * stays pending), those of uv_accept (UV_EAGAIN: none pending), UV_ENOMEM,
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_tcp_accept(uvp_ctx_t *ctx, uv_stream_t *server,
                              uvp_tcp_t **out);

/** Close: pending operations reject with UV_ECANCELED (watches too), and
 * bytes a watch read ahead go; the memory is freed once libuv has closed
 * the handle and the last operation is done (run the loop), or inside
 * this call if nothing is left open (a cancelled operation had closed the
 * handle already).  Loop thread, at any time,
 * also after uvp_ctx_close().  Returns UV_EINVAL for NULL, UVP_ETHREAD
 * (see uvp_ctx_set_checks); like closing a libuv handle twice, a second
 * call is a bug: while `t` is still closing it returns UV_EINVAL and
 * changes nothing, but `t` may already be freed memory. */
UVP_EXTERN int uvp_tcp_close(uvp_tcp_t *t);

/** @name uvp_tcp_detach, uvp_tcp_attach
 * @{ */
/** Hand a connection over between task groups (see "Task groups").  A
 * connection belongs to the group whose work made or accepted it, and so
 * do the operations on it, whoever starts them: the group's join waits
 * until it is closed and its operations done.  One that outlives that
 * work, as a keep-alive pool's does, changes hands: uvp_tcp_detach makes
 * it no group's (the pool's own; the group's join no longer waits for it),
 * uvp_tcp_attach the current scope's group's (the work that takes it from
 * the pool: that group's join waits for it from then on; outside a group's
 * work, no group).  While it is detached, the operations started on it
 * are the pool's too: no deadline watches them, whichever scope starts
 * them (a pool's read of an idle connection, started as a request's
 * response ends, does not close it when that request's deadline passes);
 * once attached, those started on it are watched by the current scope's
 * deadline again, as any operation; one left pending from the detached
 * time (the pool's read, which brings the next response) is watched only
 * if asked (uvp_deadline_watch, in the attaching scope).  Operations
 * already pending when it is detached keep the deadline they were started
 * under.  A server that accepts in its libuv connection
 * callback, outside any group's work, and serves each connection in a
 * group's member has the member attach it first, or the join does not
 * wait for it.  Loop thread, before uvp_tcp_close().  Errors:
 * UV_EINVAL (NULL), UV_EBADF (closed), UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_tcp_detach(uvp_tcp_t *t);
UVP_EXTERN int uvp_tcp_attach(uvp_tcp_t *t);
/** @} */

/** The current handle, e.g. for uv_tcp_nodelay() or uv_tcp_getpeername();
 * NULL once closed.  Do not close it, read from it, or uv_ref/uv_unref it
 * yourself: uvp manages its reading and its reference (an idle connection
 * neither consumes bytes, unless watched: see uvp_tcp_closed, nor keeps
 * uv_run() going). */
UVP_EXTERN uv_tcp_t *uvp_tcp_handle(uvp_tcp_t *t);

/** @name uvp_tcp_connect, uvp_tcp_connect_at
 * @{ */
/** connect to `addr` (copied during the call); value NULL. */
#define uvp_tcp_connect(...) uvp_tcp_connect_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_connect_at(uvp_tcp_t *t, const struct sockaddr *addr,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */

/** @name uvp_tcp_connect_host, uvp_tcp_connect_host_at
 * @{ */
/** Resolve host:port with getaddrinfo (thread pool), then try each address
 * in turn until one connects; rejects with the last address's error (or
 * the UV_EAI_* code of the lookup).  A literal IPv4 or IPv6 address
 * ("127.0.0.1", "::1") is connected to directly, with no lookup and no
 * trip through the thread pool.  Strings are copied.  Value NULL.
 * Cancelled (either connect): the connection is closed; a peer that had
 * accepted it reads its end at once; a lookup running completes unused. */
#define uvp_tcp_connect_host(...)                                              \
  uvp_tcp_connect_host_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_connect_host_at(uvp_tcp_t *t, const char *host, int port,
                                       uvp_promise_t **out, const char *file,
                                       int line);
/** @} */

/** @name uvp_tcp_write, uvp_tcp_write_at
 * @{ */
/** Write `len` bytes of `buf` (borrowed until the promise settles, or after
 * a cancellation until the connection's close has completed: see "borrowed"
 * above); value NULL once libuv has handed all of them to the kernel.
 * When nothing is queued ahead, the bytes go to the kernel inside the call
 * (uv_try_write) and what did not fit is queued; a small write therefore
 * often returns a promise already fulfilled, whose handlers still run
 * later, from the loop.  Writes go out in the order they were made.  A
 * NULL buf with len > 0, or len over UINT_MAX, is UV_EINVAL.  A write
 * made while the connect is pending waits for it with libuv for Unix;
 * libuv for Windows refuses it (UV_EPIPE): write once the connect has
 * fulfilled.
 * A peer gone (its system answered an earlier write with a reset): the
 * next write raises SIGPIPE, whose default action ends the process.  uvp
 * writes as libuv does (write(2), no MSG_NOSIGNAL), and neither changes
 * a signal's disposition: a program that writes to sockets or pipes
 * ignores SIGPIPE once, before it runs (signal(SIGPIPE, SIG_IGN)); the
 * write then rejects with UV_EPIPE (or UV_ECONNRESET).
 * Cancelled (either write): partly sent: the connection is closed, the
 * peer receives the prefix the kernel had taken, then the end (or a
 * reset); the rest is never sent. */
#define uvp_tcp_write(...) uvp_tcp_write_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_write_at(uvp_tcp_t *t, const void *buf, size_t len,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @name uvp_tcp_write_full, uvp_tcp_write_full_at
 * @{ */
/** The same, handing `buf` over: buf_free(buf) runs once, on the loop
 * thread, when libuv is done with the bytes (all written, failed, or
 * dropped because the connection closed), whatever happens to the
 * promise; inside this call if the kernel took every byte at once.  On
 * error nothing more is written and buf_free has run, before the call
 * returned (uvp.h, "Handing over"): uvp_await_take of a refused write
 * leaks nothing. */
#define uvp_tcp_write_full(...)                                                \
  uvp_tcp_write_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_write_full_at(uvp_tcp_t *t, const void *buf, size_t len,
                                     uvp_free_cb buf_free, uvp_promise_t **out,
                                     const char *file, int line);
/** @} */

/** @name uvp_tcp_read, uvp_tcp_read_at
 * @{ */
/** The next chunk the peer sends (up to 64 KiB): value an owned uvp_buf_t *
 * of exactly the bytes that arrived.  Rejects with UV_EOF at end of
 * stream, or the error (UV_ECONNRESET, ...).  A second read while one is
 * pending returns UV_EBUSY.  Bytes a watch read ahead (uvp_tcp_closed)
 * come first: all of them are the chunk, and the promise is fulfilled
 * when the call returns (its handlers still run later, from the loop);
 * then the end of stream or the error that watch saw, the same way.
 * Cancelled: lost: the connection is closed, and bytes the peer sent that
 * were not read yet go with it (the peer's later writes fail). */
#define uvp_tcp_read(...) uvp_tcp_read_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_read_at(uvp_tcp_t *t, uvp_promise_t **out,
                               const char *file, int line);
/** @} */

/** @name uvp_tcp_read_all, uvp_tcp_read_all_at
 * @{ */
/** Everything until end of stream, or the first `max` bytes (0: no limit)
 * if the stream is longer: value an owned uvp_buf_t *.  Rejects with the
 * stream's error (a reset, ...), not UV_EOF.  UV_EBUSY while a read is
 * pending, as for uvp_tcp_read.  Bytes a watch read ahead begin the body
 * (beyond `max`, the rest stays for the next read).
 * Cancelled: lost: the connection is closed; the bytes gathered so far are
 * freed, those not read yet go with the connection. */
#define uvp_tcp_read_all(...)                                                  \
  uvp_tcp_read_all_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_read_all_at(uvp_tcp_t *t, size_t max,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */

/** @name uvp_tcp_closed, uvp_tcp_closed_at
 * @{ */
/** A promise that the peer has closed the connection, for a program that
 * is not reading: a server running a request races it against the work
 * (uvp_promise_race, uvp_promise_any) to stop once the client has gone.
 *
 * Fulfils (value NULL) at the end of the stream: the peer sends nothing
 * more.  It may have closed only its sending side (shutdown(SHUT_WR))
 * and still wait for a reply: the end of a request is not always a
 * client gone (one gone entirely shows when a write fails).  Rejects
 * with the stream's error (UV_ECONNRESET when the peer reset the
 * connection, ...); with UV_ENOMEM when uvp had no memory to read into
 * (what the peer sent stays in the kernel for the next read); with
 * UV_ECANCELED when the program closes the connection (uvp_tcp_close, or
 * a cancelled operation closing it; not reported as unhandled, as a
 * cancellation is not); with UVP_ECLOSED at uvp_ctx_close.
 *
 * To see the end while the program is not reading, uvp reads for it:
 * what arrives meanwhile is kept, in order, and the next uvp_tcp_read or
 * uvp_tcp_read_all returns it first, then the end of stream or the error
 * the watch saw, exactly as the program would have read them itself:
 * nothing is lost or reordered (pipelined requests included).  At most
 * 64 KiB is kept: then uvp stops reading, what the peer sends next waits
 * in the kernel (and the peer's writes, once the kernel's buffers are
 * full), and the watch cannot see a close or a reset until the program
 * reads; after that read it reads on.  While a read is pending, the read
 * sees the end, and the watch settles with it, after the read.
 *
 * A race the watch decides (uvp_promise_race, _any, _all with
 * UVP_CANCEL_LOSERS) says why to the inputs it cuts: their cause
 * (uvp_promise_cause, a UVP_CAUSE_LOSER) carries "peer 127.0.0.1:54321
 * closed the connection" ("reset the connection"; "the connection with
 * peer ... failed: CODE" for another error) as its message, the peer as
 * the connection named it when the watch was made.  The watch's own
 * outcome has no cause: nothing cut it.
 *
 * Each call is a watch of its own; all settle alike.  Cancelling one
 * (uvp_promise_cancel, a timeout, the loser of a race with
 * UVP_CANCEL_LOSERS, a torn-down context) stops that watch only: unlike
 * cancelling another operation it does not close the connection, and
 * what was read ahead stays for the next read.  Releasing it does not
 * stop it: a watch nobody cancels reads ahead (up to 64 KiB) until it
 * settles.  A watch does not keep uv_run() going (the handle stays
 * unreferenced, as an idle connection's): it settles while something
 * else keeps the loop running, such as the work it watches over.  It is
 * an operation of the connection, in the connection's group (see
 * uvp_tcp_detach), whose join waits for the connection's close anyway.
 *
 * Settles on the loop thread: from libuv's read callback, inside
 * uvp_tcp_close, or inside this call when a watch before it saw the end
 * and no read has taken it yet (its handlers still run later, from the
 * loop).  Loop thread.  Errors: UV_EINVAL (NULL), UV_EBADF (closed),
 * uv_read_start's (UV_ENOTCONN before the connection is established),
 * UV_ENOMEM, UVP_ECLOSED, UVP_ETHREAD.
 * Cancelled: still in the stream: only the watch stops; the connection
 * stays open and the bytes it read ahead come first to the next read. */
#define uvp_tcp_closed(...) uvp_tcp_closed_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_closed_at(uvp_tcp_t *t, uvp_promise_t **out,
                                 const char *file, int line);
/** @} */

/** @name uvp_tcp_shutdown, uvp_tcp_shutdown_at
 * @{ */
/** Shut the write side down after queued writes; value NULL.
 * Cancelled: the connection is closed: the writes queued before it are
 * partly sent, as a cancelled write is, and no FIN follows them. */
#define uvp_tcp_shutdown(...)                                                  \
  uvp_tcp_shutdown_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_shutdown_at(uvp_tcp_t *t, uvp_promise_t **out,
                                   const char *file, int line);
/** @} */
/** @} */

/** @defgroup dns DNS (uv_getaddrinfo) — thread pool */
/** @{ */

/** @name uvp_getaddrinfo, uvp_getaddrinfo_at
 * @{ */
/** Resolve `node` and/or `service` (one may be NULL, not both) as
 * getaddrinfo(3) does; `hints` may be NULL.  libuv copies all three during
 * the call.  Value: an owned struct addrinfo * list (uv_freeaddrinfo runs
 * when the promise goes).  Rejects with libuv's UV_EAI_* code
 * (UV_EAI_NONAME for a name that does not exist, UV_EAI_AGAIN when no
 * server answers, ...), which uvp_strerror() understands.  A cancelled
 * lookup rejects with UV_ECANCELED, never UV_EAI_CANCELED, like every other
 * wrapper; a lookup already running cannot be stopped, and its late result
 * is freed when it arrives.
 * Cancelled: queued, the lookup never runs; running, it completes and its
 * result is freed.
 * Errors: UV_EINVAL (NULL ctx/out, node and service both NULL), UV_ENOMEM,
 * UVP_ECLOSED. */
#define uvp_getaddrinfo(...) uvp_getaddrinfo_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_getaddrinfo_at(uvp_ctx_t *ctx, const char *node,
                                  const char *service,
                                  const struct addrinfo *hints,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @} */

/** @defgroup work Work (uv_queue_work) — thread pool */
/** @{ */

/** A job.  Runs once on one of libuv's pool threads, never on the loop
 * thread: it may not touch the loop or call uvp functions, except
 * uvp_promise_resolve(), uvp_promise_reject() and uvp_promise_release() on
 * promises it holds a reference to (see "Threads").  Return 0 with the value
 * in *result (which starts NULL), or a negative code to reject with.
 * Whatever is in *result when the promise does not take it (the job failed,
 * or it was cancelled while running) is freed with result_free on the loop
 * thread. */
typedef int (*uvp_work_cb)(void *arg, void **result);

/** @name uvp_work, uvp_work_at
 * @{ */
/** Run work_cb(arg, &result) on the thread pool.  Value: the result, owned
 * (result_free, which may be NULL, runs on the loop thread when the promise
 * goes).  Rejects with work_cb's code (a positive one becomes UV_EINVAL).
 * Cancelling a job that has not started yet means it never runs; a job
 * already running cannot be stopped: the promise rejects with UV_ECANCELED
 * at once, the job completes later and its result goes to result_free.
 * `arg` is borrowed until work_cb has returned, which after a cancellation
 * may be after the promise settled: the request keeps uv_run() running
 * until then, so memory that outlives the loop run is safe.
 * Cancelled: queued, the job never runs (UVP_WORK_CANCELLED); running, it
 * runs to its end and its result goes to result_free (UVP_WORK_ABANDONED).
 * Errors: UV_EINVAL (NULL ctx/work_cb/out), UV_ENOMEM, UVP_ECLOSED. */
#define uvp_work(...) uvp_work_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_work_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                           uvp_free_cb result_free, uvp_promise_t **out,
                           const char *file, int line);
/** @} */

/** How a job ended, told once to its done callback. */
typedef enum {
  UVP_WORK_SETTLED = 0,   /**< it ran, and its outcome settled the promise */
  UVP_WORK_CANCELLED = 1, /**< cancelled while queued: it never ran */
  UVP_WORK_CLOSED = 2,    /**< the context was closed while it was queued: it
                               never ran */
  UVP_WORK_ABANDONED = 3  /**< its promise was cancelled (or torn down) while
                               it ran; it finished, and its result went to
                               result_free */
} uvp_work_end_t;

/** Called once per job, on the loop thread, when the job's `arg` will never
 * be touched by uvp again (the job has returned or will never run): free
 * the job's data here.  After uvp_ctx_close it still runs, when the loop
 * runs the request's callback. */
typedef void (*uvp_work_done_cb)(void *arg, uvp_work_end_t end);

/** @name uvp_work_full, uvp_work_full_at
 * @{ */
/** uvp_work with a done callback (may be NULL).  The promise settles first;
 * its handlers run later, from the scheduler, so they may still see `arg`
 * only if done has not freed it: pass what the handlers need in the
 * job's result instead.  On error the job never runs and done(arg, ...)
 * has run, before the call returned: UVP_WORK_CLOSED for UVP_ECLOSED,
 * else UVP_WORK_CANCELLED (uvp.h, "Handing over"). */
#define uvp_work_full(...) uvp_work_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_work_full_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                                uvp_work_done_cb done, uvp_free_cb result_free,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @} */

/** @defgroup processes Processes (uv_spawn) */
/** @{ */

/** What to run.  Everything is read during the call only (stdin_data is
 * copied), so it may live on your stack. */
typedef struct uvp_spawn_opts_s {
  const char *file;       /**< the program; looked up in PATH like execvp(3) */
  char **args;            /**< argv, NULL-terminated, args[0] the program's
                               name; NULL: { file, NULL } */
  char **env;             /**< "NAME=value" strings, NULL-terminated; NULL:
                               the parent's environment */
  const char *cwd;        /**< NULL: the parent's working directory */
  const void *stdin_data; /**< written to the child's stdin, which is then
                               closed (the child need not read it all);
                               NULL: stdin reads nothing, as from /dev/null */
  size_t stdin_len;       /**< bytes of stdin_data */
  size_t max_output;      /**< bytes kept per stream; 0: 16 MiB.  The rest is
                               read and dropped, and `truncated` set */
  int cancel_signal;      /**< sent on cancellation; 0: SIGTERM */
} uvp_spawn_opts_t;

/** The value of uvp_spawn: one owned object (a single destructor frees the
 * buffers too). */
typedef struct uvp_process_result_s {
  int64_t exit_status; /**< exit code; 0 if killed by a signal */
  int term_signal;     /**< the signal that killed it, else 0 */
  uvp_buf_t out;       /**< everything written to stdout (NUL-terminated) */
  uvp_buf_t err;       /**< everything written to stderr (NUL-terminated) */
  int truncated;       /**< non-zero if either stream exceeded max_output */
} uvp_process_result_t;

/** @name uvp_spawn, uvp_spawn_at
 * @{ */
/** Start a child with stdout and stderr collected through pipes.  Fulfils
 * with an owned uvp_process_result_t * once the child has exited, both of
 * its output streams have reached end of file (in whichever order; a
 * grandchild that keeps them open keeps the promise pending) and every
 * handle is closed.  A non-zero exit status or a signal is a value, not a
 * rejection; a read error on a pipe rejects with its code, and running out
 * of memory for the output with UV_ENOMEM.  A race the child's exit decides
 * (UVP_CANCEL_LOSERS) tells the inputs it cuts "process 4242 (/bin/sh)
 * exited with status 3" ("was killed by signal 9") in their cause's
 * message (UVP_CAUSE_LOSER).  While it runs, the child and
 * its pipes keep uv_run() running, as any libuv process would.
 * Cancelling (or uvp_ctx_close) sends opts->cancel_signal and closes the
 * pipes at once; the promise rejects with UV_ECANCELED (UVP_ECLOSED) at
 * once, and the process handle stays open until the child exits: one that
 * ignores the signal keeps uv_run() running until it does.
 * Cancelled: killed by cancel_signal (SIGTERM), or, if it ignores or
 * handles that, left running until it exits; processes it started are not
 * signalled; its output is not collected.
 * Writing to a child that exits without reading all of stdin_data raises
 * SIGPIPE, as any write to a pipe does: like every libuv program that
 * writes to pipes, ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)).
 * Errors: UV_EINVAL (NULL ctx/opts/out/opts->file, stdin_len without
 * stdin_data or over UINT_MAX, a cancel_signal that is no signal number),
 * UV_ENOMEM, UVP_ECLOSED, or uv_spawn's own
 * (UV_ENOENT for a missing program or cwd, UV_EACCES, ...): then no promise
 * exists and nothing runs, but the handles uvp opened for the attempt close
 * asynchronously: run the loop before uv_loop_close(). */
#define uvp_spawn(...) uvp_spawn_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_spawn_at(uvp_ctx_t *ctx, const uvp_spawn_opts_t *opts,
                            uvp_promise_t **out, const char *file, int line);
/** @} */
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_IO */

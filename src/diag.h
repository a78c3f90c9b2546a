/* Private to src/: where the dumps (uvp_ctx_dump_tasks, its UVP_DUMP_PROMISES)
 * write, without ever waiting.  A dump is a diagnostic: one that cannot be
 * written now (stderr is a pipe nobody reads, a stopped terminal) is cut
 * short, never waited for, and says so.
 *
 * A stream with no descriptor (open_memstream) or on a regular file or a
 * block device is written with fwrite, as before: it never blocks this
 * way.  Other descriptors (a pipe, a FIFO, a socket, a terminal) are
 * written directly, whole lines gathered up to PIPE_BUF bytes at a time:
 *  - a socket: send(MSG_DONTWAIT | MSG_NOSIGNAL), per call: the
 *    description's flags, shared with other processes, are not touched
 *    (and a peer gone is EPIPE, not SIGPIPE, non-blocking or not);
 *  - already non-blocking (O_NONBLOCK on its open file description):
 *    poll, then write(2), EAGAIN cuts;
 *  - else poll(POLLOUT, 0) first, not ready cuts, then write(2) of at most
 *    PIPE_BUF bytes, which a pipe that poll calls writable takes whole
 *    without waiting (and atomically: lines of other writers do not
 *    interleave).  Under the process lock, so that two contexts' dumps do
 *    not both see the same room.  A writer outside uvp that fills the
 *    pipe between the poll and the write, or a terminal with less than
 *    PIPE_BUF of room, can still hold that one write.
 * Every descriptor but a socket is polled first: POLLERR (a pipe whose
 * reader is gone) is UV_EPIPE, without the write that would raise SIGPIPE.
 * A pipe stops taking lines while two pages of it are still free
 * (FIONREAD against F_GETPIPE_SZ, Linux), so that the last line, saying
 * what was dropped, fits; a socket, a terminal or a pipe filled by others
 * may have no room left for it.
 * Output of the stream's own still in its buffer goes first if it can
 * without waiting; else the dump is cut before its first line.
 * With a write callback, UV_EAGAIN from it cuts instead of failing.
 * Once cut, everything after is dropped (no holes in the middle), counted,
 * and a last line says how much, if it fits.
 *
 * A patient writer (uvp__diag_open_patient: the flight recorder's, whose
 * output is a file a program asked for, not a diagnostic on stderr) waits
 * for a descriptor's reader instead of cutting, as long as the reader
 * reads: it cuts only once the reader has taken nothing for
 * UVP__DIAG_PATIENCE_MS (a pipe nobody reads, a stopped terminal). */
#ifndef UVP_DIAG_H
#define UVP_DIAG_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include "base.h"

/* Windows has no PIPE_BUF: its dumps go through the stream (diag.c), and
 * the buffer keeps POSIX's smallest size. */
#if !defined(PIPE_BUF)
#define PIPE_BUF 512
#endif

typedef struct uvp__diag_s {
  FILE *stream;
  uvp_dump_write_cb write;
  void *write_arg;
  int fd;   /* written directly, or -1 */
  int mode; /* diag.c's */
  bool json;
  bool cut;        /* what comes now is dropped */
  bool noting;     /* writing the last line, about what was dropped */
  int pipe_size;   /* a pipe's capacity (F_GETPIPE_SZ), or 0 */
  int queued;      /* a pipe's unread bytes at the last write, or -1 */
  int patience_ms; /* how long a reader may take nothing; 0: never wait */
  bool midline;    /* the last bytes written ended inside a line */
  int failed;      /* the sink's error (not a cut) */
  size_t dropped_bytes, dropped_lines;
  size_t len;
  char buf[PIPE_BUF]; /* whole lines waiting for the descriptor */
} uvp__diag_t;

/* Start writing to `stream`, or to `write(arg, ...)` if write != NULL.
 * json: the last line saying what was dropped is a JSON object. */
void uvp__diag_open(uvp__diag_t *w, FILE *stream, uvp_dump_write_cb write,
                    void *arg, bool json);
/* The same, patient (above). */
#define UVP__DIAG_PATIENCE_MS 1000
void uvp__diag_open_patient(uvp__diag_t *w, FILE *stream,
                            uvp_dump_write_cb write, void *arg, bool json);
/* n bytes of output (whole lines, as the dumps give them). */
void uvp__diag_out(uvp__diag_t *w, const char *s, size_t n);
/* Write what waits, then the line about what was dropped.  Returns 0,
 * UV_EAGAIN (cut short: something was dropped), or the sink's error. */
int uvp__diag_close(uvp__diag_t *w);

#endif

/* Writing the dumps without waiting (see diag.h). */
#include <errno.h>
#include <string.h>
#if !defined(_WIN32)
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#if defined(__has_include)
#if __has_include(<stdio_ext.h>)
#include <stdio_ext.h> /* __fpending: glibc, musl */
#define HAVE_FPENDING 1
#endif
#endif

#include "diag.h"
#include "registry.h"

/* macOS and the BSDs before 2020 have no MSG_NOSIGNAL: a dump to a
 * socket whose peer is gone raises SIGPIPE there, as a write(2) would. */
#if !defined(_WIN32) && !defined(MSG_NOSIGNAL)
#define MSG_NOSIGNAL 0
#endif

#define UVP__STR2(x) #x
#define UVP__STR(x) UVP__STR2(x)

enum {
  MODE_STREAM,   /* fwrite: a regular file, a block device, no descriptor */
  MODE_CALLBACK, /* the program's write callback */
  MODE_NONBLOCK, /* poll, then write(2) on a descriptor already
                    non-blocking */
  MODE_SOCKET,   /* send(MSG_DONTWAIT) */
  MODE_POLL      /* poll(POLLOUT, 0), then at most PIPE_BUF bytes */
};

/* Room a pipe's dump leaves for its last line: two pages (a page of the
 * pipe may hold less than a page of bytes). */
#define NOTE_ROOM (2 * PIPE_BUF)

static size_t lines_in(const char *s, size_t n) {
  size_t k = 0;
  for (const char *p = s; (p = memchr(p, '\n', n - (size_t)(p - s))) != NULL;
       p++)
    k++;
  return k;
}

/* From here on everything is dropped; `s`, n bytes, first. */
static void drop(uvp__diag_t *w, const char *s, size_t n) {
  w->cut = true;
  w->dropped_bytes += n;
  w->dropped_lines += lines_in(s, n);
  /* A line cut in its middle counts as dropped too. */
  if (n > 0 && s[n - 1] != '\n' && !w->midline)
    w->dropped_lines++;
}

/* One write of at most PIPE_BUF bytes, never waiting: how many bytes went
 * (0: none could now), or a negative error. */
#if defined(_WIN32)
/* Windows: every dump goes through its stream (MODE_STREAM or the
 * callback), which may wait for a pipe's reader, as a file's write does:
 * poll(2) has no counterpart there for an anonymous pipe or a console. */
static ssize_t write_waiting(uvp__diag_t *w, const char *s, size_t n) {
  (void)w;
  (void)s;
  (void)n;
  return UV_ENOSYS;
}
#else
static ssize_t write_now(uvp__diag_t *w, const char *s, size_t n) {
  for (;;) {
    ssize_t r;
    if (w->mode == MODE_SOCKET) {
      r = send(w->fd, s, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      struct pollfd p = {.fd = w->fd, .events = POLLOUT};
      int ready = poll(&p, 1, 0);
      if (ready < 0 && errno == EINTR)
        continue;
      if (ready < 0)
        return uv_translate_sys_error(errno);
      /* POLLERR: a pipe whose reader is gone (write(2) would raise
       * SIGPIPE). */
      if (ready > 0 && (p.revents & (POLLERR | POLLNVAL)))
        return (p.revents & POLLNVAL) ? UV_EBADF : UV_EPIPE;
      if (ready == 0 || !(p.revents & POLLOUT))
        return 0;
      /* A pipe about to be full: stop while its last line still fits. */
      if (w->queued >= 0 && !w->noting &&
          (size_t)w->queued + n + NOTE_ROOM > (size_t)w->pipe_size)
        return 0;
      r = write(w->fd, s, n);
    }
    if (r >= 0)
      return r;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return 0;
    return uv_translate_sys_error(errno);
  }
}

/* What a pipe holds unread (FIONREAD), or -1 where that is not known. */
static int pipe_queued(const uvp__diag_t *w) {
  int queued;
  if (w->pipe_size > 0 && ioctl(w->fd, FIONREAD, &queued) == 0 && queued >= 0)
    return queued;
  return -1;
}

/* write_now under the process lock (see diag.h), the pipe's unread bytes
 * read there too. */
static ssize_t write_locked(uvp__diag_t *w, const char *s, size_t n) {
  bool locked = w->mode == MODE_POLL && uvp__process_lock();
  w->queued = pipe_queued(w);
  ssize_t r = write_now(w, s, n);
  if (locked)
    uvp__process_unlock();
  return r;
}

/* write_now; a patient writer (patience_ms) waits while the reader reads:
 * it gives up once the reader has taken nothing for patience_ms.  A pipe's
 * progress is its unread bytes going down (FIONREAD: its reader takes
 * bytes long before a page is free for poll to say so), and it is slept
 * on; another descriptor's is the write that goes through once poll says
 * it is writable. */
static ssize_t write_waiting(uvp__diag_t *w, const char *s, size_t n) {
  if (w->patience_ms == 0)
    return write_locked(w, s, n);
  uint64_t since = uv_hrtime();
  int last = -1;
  for (;;) {
    ssize_t r = write_locked(w, s, n);
    if (w->queued >= 0 && w->queued < last)
      since = uv_hrtime();
    last = w->queued;
    if (r != 0 || uv_hrtime() - since >= (uint64_t)w->patience_ms * 1000000u)
      return r;
    struct pollfd p = {.fd = w->fd, .events = POLLOUT};
    if (w->queued >= 0)
      (void)poll(NULL, 0, 1);
    else
      (void)poll(&p, 1, 10);
  }
}
#endif

/* Write s (at most PIPE_BUF bytes) to the descriptor, or drop it. */
static void write_chunk(uvp__diag_t *w, const char *s, size_t n) {
  if (w->cut || w->failed != 0) {
    if (w->failed == 0)
      drop(w, s, n);
    return;
  }
  ssize_t r = write_waiting(w, s, n);
  if (r < 0) {
    w->failed = (int)r;
    return;
  }
  if (r > 0)
    w->midline = s[r - 1] != '\n';
  if ((size_t)r < n)
    drop(w, s + r, n - (size_t)r);
}

static void flush_buf(uvp__diag_t *w) {
  if (w->len > 0)
    write_chunk(w, w->buf, w->len);
  w->len = 0;
}

static void diag_open(uvp__diag_t *w, FILE *stream, uvp_dump_write_cb write,
                      void *arg, bool json, int patience_ms) {
  memset(w, 0, offsetof(uvp__diag_t, buf));
  w->patience_ms = patience_ms;
  w->stream = stream;
  w->write = write;
  w->write_arg = arg;
  w->json = json;
  w->fd = -1;
  w->mode = write != NULL ? MODE_CALLBACK : MODE_STREAM;
  if (write != NULL)
    return;
#if !defined(_WIN32)
  int fd = fileno(stream);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || S_ISREG(st.st_mode) ||
      S_ISBLK(st.st_mode))
    return; /* memory, a file: fwrite never waits for a reader */
  int fl = fcntl(fd, F_GETFL);
  w->fd = fd;
  /* A socket is sent to (MSG_NOSIGNAL) even when non-blocking: a write
   * to one whose peer is gone would raise SIGPIPE. */
  w->mode = S_ISSOCK(st.st_mode)           ? MODE_SOCKET
            : fl >= 0 && (fl & O_NONBLOCK) ? MODE_NONBLOCK
                                           : MODE_POLL;
#if defined(F_GETPIPE_SZ)
  if (S_ISFIFO(st.st_mode))
    w->pipe_size = fcntl(fd, F_GETPIPE_SZ);
#endif
#if defined(HAVE_FPENDING)
  size_t pending = __fpending(stream);
#else
  size_t pending = 1; /* unknown: flushed if there is room */
#endif
  if (pending == 0)
    return;
  /* What the stream holds of its own goes first, if it can without
   * waiting: at most PIPE_BUF bytes to a descriptor that has room. */
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  if (pending <= PIPE_BUF && poll(&p, 1, patience_ms) == 1 &&
      (p.revents & POLLOUT) && fflush(stream) == 0)
    return;
  clearerr(stream);
  w->cut = true; /* before the first line: all of it is dropped */
#endif
}

void uvp__diag_open(uvp__diag_t *w, FILE *stream, uvp_dump_write_cb write,
                    void *arg, bool json) {
  diag_open(w, stream, write, arg, json, 0);
}

void uvp__diag_open_patient(uvp__diag_t *w, FILE *stream,
                            uvp_dump_write_cb write, void *arg, bool json) {
  diag_open(w, stream, write, arg, json, UVP__DIAG_PATIENCE_MS);
}

void uvp__diag_out(uvp__diag_t *w, const char *s, size_t n) {
  if (w->failed != 0)
    return;
  if (w->mode == MODE_CALLBACK) {
    if (w->cut) {
      drop(w, s, n);
      return;
    }
    int rc = w->write(w->write_arg, s, n);
    if (rc == UV_EAGAIN)
      drop(w, s, n);
    else if (rc < 0)
      w->failed = rc;
    return;
  }
  if (w->mode == MODE_STREAM) {
    /* The reason (ENOSPC, EFBIG), where the stream's write(2) left one. */
    errno = 0;
    if (fwrite(s, 1, n, w->stream) != n)
      w->failed = errno != 0 ? uv_translate_sys_error(errno) : UV_EIO;
    return;
  }
  if (w->len + n > sizeof(w->buf))
    flush_buf(w);
  while (n > sizeof(w->buf)) { /* a line longer than PIPE_BUF */
    write_chunk(w, s, sizeof(w->buf));
    s += sizeof(w->buf);
    n -= sizeof(w->buf);
  }
  memcpy(w->buf + w->len, s, n);
  w->len += n;
}

int uvp__diag_close(uvp__diag_t *w) {
  if (w->mode != MODE_STREAM && w->mode != MODE_CALLBACK)
    flush_buf(w);
  if (w->failed != 0)
    return w->failed;
  if (!w->cut)
    return 0;
  /* Say what was dropped, if that fits now (not counted if it does not). */
  char note[160];
  int n = snprintf(
      note, sizeof(note),
      w->json
          ? "%s{\"v\":" UVP__STR(UVP_DUMP_VERSION) ",\"dropped_bytes\":%zu,"
                                                   "\"dropped_lines\":%zu}\n"
          : "%s(uvp: dump cut short: %zu bytes, %zu lines not written: "
            "the output would block)\n",
      w->midline ? "\n" : "", w->dropped_bytes, w->dropped_lines);
  if (n > 0 && (size_t)n < sizeof(note)) {
    if (w->mode == MODE_CALLBACK) {
      (void)w->write(w->write_arg, note, (size_t)n);
    } else {
      w->cut = false;
      w->noting = true;
      size_t bytes = w->dropped_bytes, lines = w->dropped_lines;
      write_chunk(w, note, (size_t)n);
      w->dropped_bytes = bytes;
      w->dropped_lines = lines;
    }
  }
  return w->failed != 0 ? w->failed : UV_EAGAIN;
}

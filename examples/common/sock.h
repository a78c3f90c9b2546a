/* The few socket calls httpd and the demo server make themselves (libuv
 * does the rest), written once for POSIX and for Windows (mingw-w64,
 * .ci/mingw): a socket is libuv's uv_os_sock_t (an int on POSIX, a SOCKET
 * on Windows, where close() and errno do not apply to sockets), and every
 * failure is returned as libuv's error code, so that the callers compare
 * UV_EMFILE or UV_EAGAIN alike on both. */
#ifndef SOCK_H
#define SOCK_H

#include <stdint.h>

#include <uv.h>

#ifdef _WIN32
#define SOCK_NONE INVALID_SOCKET
#else
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#define SOCK_NONE (-1)
#endif

/* The last socket call's failure, as libuv's code. */
static inline int sock_err(void) {
#ifdef _WIN32
  return uv_translate_sys_error(WSAGetLastError());
#else
  return uv_translate_sys_error(errno);
#endif
}

/* Close a socket (nothing to say if that fails: it is gone either way). */
static inline void sock_close(uv_os_sock_t fd) {
#ifdef _WIN32
  closesocket(fd);
#else
  close(fd);
#endif
}

/* Non-blocking and not inherited by children, set on the descriptor
 * (Windows; and POSIX systems without SOCK_NONBLOCK and accept4, macOS);
 * closed on failure. */
static inline int sock_set_flags(uv_os_sock_t fd) {
#ifdef _WIN32
  u_long on = 1;
  if (ioctlsocket(fd, FIONBIO, &on) == 0 &&
      SetHandleInformation((HANDLE)fd, HANDLE_FLAG_INHERIT, 0))
    return 0;
#else
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 &&
      fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
    return 0;
#endif
  int err = sock_err();
  sock_close(fd);
  return err;
}

/* A TCP socket of `family`, non-blocking and not inherited by children. */
static inline int sock_open(int family, uv_os_sock_t *out) {
#if defined(SOCK_NONBLOCK) && !defined(_WIN32)
  uv_os_sock_t fd =
      socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd == SOCK_NONE)
    return sock_err();
#else
  uv_os_sock_t fd = socket(family, SOCK_STREAM, 0);
  int err = fd == SOCK_NONE ? sock_err() : sock_set_flags(fd);
  if (err != 0)
    return err;
#endif
  *out = fd;
  return 0;
}

/* A client of the listening socket `l`, non-blocking and not inherited;
 * UV_EAGAIN when none waits. */
static inline int sock_accept(uv_os_sock_t l, uv_os_sock_t *out) {
#if defined(SOCK_NONBLOCK) && !defined(_WIN32)
  uv_os_sock_t fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd == SOCK_NONE)
    return sock_err();
#else
  /* (Windows hands the listener's non-blocking mode on; said again, as
   * accept4 is told.) */
  uv_os_sock_t fd = accept(l, NULL, NULL);
  int err = fd == SOCK_NONE ? sock_err() : sock_set_flags(fd);
  if (err != 0)
    return err;
#endif
  *out = fd;
  return 0;
}

/* Whether `fd` is readable now (a listener: a client waits). */
static inline int sock_readable(uv_os_sock_t fd) {
#ifdef _WIN32
  WSAPOLLFD p = {.fd = fd, .events = POLLRDNORM};
  return WSAPoll(&p, 1, 0) == 1 && (p.revents & POLLRDNORM) != 0;
#else
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
#endif
}

/* Bytes the system has received on `fd` and nobody has read yet (0 when
 * it cannot say). */
static inline int sock_unread(uv_os_sock_t fd) {
#ifdef _WIN32
  u_long n = 0;
  return ioctlsocket(fd, FIONREAD, &n) == 0 && n <= INT32_MAX ? (int)n : 0;
#else
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
#endif
}

/* The socket of a libuv stream handle (0 or libuv's code). */
static inline int sock_of(const uv_handle_t *h, uv_os_sock_t *out) {
  uv_os_fd_t fd;
  int rc = uv_fileno(h, &fd);
  if (rc == 0)
    *out = (uv_os_sock_t)(uintptr_t)fd;
  return rc;
}

/* Set an integer socket option (Windows takes the value as char *). */
static inline int sock_set_int(uv_os_sock_t fd, int level, int opt, int v) {
  return setsockopt(fd, level, opt, (const void *)&v, (socklen_t)sizeof(v)) == 0
             ? 0
             : sock_err();
}

#endif

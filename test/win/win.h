/* The POSIX calls the tests make, on Windows (see README.md). */
#ifndef UVP_TEST_WIN_H
#define UVP_TEST_WIN_H

/* winsock2.h before windows.h, as uv.h wants them. */
#include <winsock2.h>
#include <ws2tcpip.h>

#include <windows.h>

#include <direct.h>
#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* mmap and friends, as the library's stack pool has them (anonymous
 * private read-write mappings; PROT_NONE as a one-shot guard page). */
#include "../../src/stack-win.h"

/* No fork: test_in_child (child.h) skips on Windows.  These only let the
 * code that calls them compile. */
#define WIFEXITED(s) (((s)&0x7f) == 0)
#define WEXITSTATUS(s) (((s) >> 8) & 0xff)
#define WIFSIGNALED(s) (((s)&0x7f) != 0 && ((s)&0x7f) != 0x7f)
#define WTERMSIG(s) ((s)&0x7f)
static inline int fork(void) {
  errno = ENOSYS;
  return -1;
}
static inline int waitpid(int pid, int *status, int options) {
  (void)pid;
  (void)status;
  (void)options;
  errno = ENOSYS;
  return -1;
}
static inline int pipe(int fds[2]) { return _pipe(fds, 65536, _O_BINARY); }

struct rlimit {
  unsigned long long rlim_cur, rlim_max;
};
typedef unsigned long long rlim_t;
#define RLIM_INFINITY (~0ull)
#define RLIMIT_CORE 4
#define RLIMIT_NOFILE 7
#define RLIMIT_AS 9
/* Windows has none of these limits: "unlimited", and none can be set. */
static inline int getrlimit(int what, struct rlimit *r) {
  (void)what;
  r->rlim_cur = r->rlim_max = RLIM_INFINITY;
  return 0;
}
static inline int setrlimit(int what, const struct rlimit *r) {
  (void)what;
  (void)r;
  errno = ENOSYS;
  return -1;
}

static inline int setenv(const char *name, const char *value, int over) {
  if (!over && getenv(name) != NULL)
    return 0;
  return _putenv_s(name, value) == 0 ? 0 : -1;
}
static inline int unsetenv(const char *name) {
  return _putenv_s(name, "") == 0 ? 0 : -1;
}

/* Signals: Windows has no sigaction; what calls it here runs in a child
 * (child.h), which skips on Windows. */
#include <signal.h>
#define SIGBUS 7
#define SIGKILL 9
#define SIGPIPE 13
#define SA_SIGINFO 4
#define SA_ONSTACK 0x08000000
#define SS_DISABLE 2
typedef struct {
  int si_signo, si_code;
  void *si_addr;
} siginfo_t;
typedef struct {
  void *ss_sp;
  int ss_flags;
  size_t ss_size;
} stack_t;
struct sigaction {
  void (*sa_handler)(int);
  void (*sa_sigaction)(int, siginfo_t *, void *);
  _sigset_t sa_mask;
  int sa_flags;
};
static inline int sigaction(int sig, const struct sigaction *sa,
                            struct sigaction *old) {
  (void)sig;
  (void)sa;
  (void)old;
  errno = ENOSYS;
  return -1;
}
static inline int sigaltstack(const stack_t *ss, stack_t *old) {
  (void)ss;
  (void)old;
  errno = ENOSYS;
  return -1;
}
static inline int sigemptyset(_sigset_t *set) {
  *set = 0;
  return 0;
}

/* Which pages are resident: the working set's view. */
#include <psapi.h>
static inline int mincore(void *addr, size_t len, unsigned char *vec) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (len + page - 1) / page;
  for (size_t i = 0; i < n; i++) {
    PSAPI_WORKING_SET_EX_INFORMATION info;
    info.VirtualAddress = (char *)addr + i * page;
    if (!QueryWorkingSetEx(GetCurrentProcess(), &info, sizeof(info))) {
      errno = ENOMEM;
      return -1;
    }
    vec[i] = (unsigned char)(info.VirtualAttributes.Valid & 1);
  }
  return 0;
}

/* No reading another process's memory (proc-maps.h's probe says no). */
static inline ssize_t process_vm_readv(int pid, const struct iovec *l,
                                       unsigned long nl, const struct iovec *r,
                                       unsigned long nr, unsigned long fl) {
  (void)pid, (void)l, (void)nl, (void)r, (void)nr, (void)fl;
  errno = ENOSYS;
  return -1;
}

/* Files (fs-helpers.h): a fresh directory, stat for lstat (no symbolic
 * links are made on Windows), no FIFOs. */
#if !defined(O_NONBLOCK)
#define O_NONBLOCK 0x800
#endif
#define SOCK_NONBLOCK 0x800
static inline char *mkdtemp(char *tmpl) {
  if (_mktemp(tmpl) == NULL || _mkdir(tmpl) != 0)
    return NULL;
  return tmpl;
}
#define lstat stat
static inline ssize_t readlink(const char *path, char *buf, size_t len) {
  (void)path, (void)buf, (void)len;
  errno = EINVAL;
  return -1;
}
static inline int mkfifo(const char *path, int mode) {
  (void)path, (void)mode;
  errno = ENOSYS;
  return -1;
}

static inline char *strndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *d = malloc(len + 1);
  if (d != NULL) {
    memcpy(d, s, len);
    d[len] = '\0';
  }
  return d;
}

static inline char *strcasestr(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay != '\0'; hay++)
    if (_strnicmp(hay, needle, n) == 0)
      return (char *)hay;
  return n == 0 ? (char *)hay : NULL;
}

/* open_memstream, as the tests use it: the text is there once the stream
 * is closed (fclose is this file's while a memstream is open). */
static struct {
  FILE *f;
  char **text;
  size_t *len;
} win_memstreams[8];
static inline FILE *open_memstream(char **text, size_t *len) {
  for (size_t i = 0; i < 8; i++)
    if (win_memstreams[i].f == NULL) {
      FILE *f = tmpfile();
      if (f == NULL)
        return NULL;
      win_memstreams[i].f = f;
      win_memstreams[i].text = text;
      win_memstreams[i].len = len;
      *text = NULL;
      *len = 0;
      return f;
    }
  errno = EMFILE;
  return NULL;
}
static inline int win_fclose(FILE *f) {
  for (size_t i = 0; i < 8; i++)
    if (win_memstreams[i].f == f) {
      long n;
      win_memstreams[i].f = NULL;
      if (fflush(f) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        break;
      char *t = malloc((size_t)n + 1);
      if (t == NULL)
        break;
      size_t got = fread(t, 1, (size_t)n, f);
      t[got] = '\0';
      *win_memstreams[i].text = t;
      *win_memstreams[i].len = got;
      break;
    }
  return fclose(f);
}
#define fclose(f) win_fclose(f)

/* Files: POSIX's names for the C runtime's calls; no symbolic links, no
 * owners (a test that checks them skips on Windows). */
#define mkdir(path, mode) _mkdir(path)
#define S_ISLNK(m) 0
#define F_GETFD 1
#define SYS_read 0
#define SYS_write 1
static inline int getuid(void) { return 0; }
static inline int fcntl(int fd, int cmd, ...) {
  (void)cmd;
  if (_get_osfhandle(fd) == -1) {
    errno = EBADF;
    return -1;
  }
  return 0;
}
static inline ssize_t pwrite(int fd, const void *buf, size_t n, off_t at) {
  if (_lseeki64(fd, at, SEEK_SET) < 0)
    return -1;
  return _write(fd, buf, (unsigned)n);
}
static inline char *realpath(const char *path, char *out) {
  return _fullpath(out, path, out != NULL ? _MAX_PATH : 0);
}
static inline int symlink(const char *target, const char *path) {
  (void)target, (void)path;
  errno = ENOSYS;
  return -1;
}

/* Sockets: a libuv descriptor (uv_os_fd_t) is a HANDLE there. */
#define setsockopt(fd, level, opt, val, len)                                   \
  setsockopt((SOCKET)(uintptr_t)(fd), level, opt, (const char *)(val), len)
#define ioctl(fd, req, arg)                                                    \
  ioctlsocket((SOCKET)(uintptr_t)(fd), (long)(req), (u_long *)(arg))

/* Files open in binary mode, as on POSIX: a test's fopen(path, "w") or
 * open(path, O_WRONLY) would otherwise write "\r\n" for each "\n". */
__attribute__((constructor)) static void win_binary_files(void) {
  _fmode = _O_BINARY;
}

#endif

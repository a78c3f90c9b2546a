/* Tests cross-built and run under an emulator (qemu-user: .ci/qemu).  meson
 * test starts such a test through the cross file's exe_wrapper and says so
 * in MESON_EXE_WRAPPER (qemu passes the environment on to the program).
 * Two things differ there:
 *  - exec: the kernel runs what the program execs, and a binary of another
 *    machine fails with ENOEXEC (no binfmt_misc on CI); exec_self starts
 *    this program again through the wrapper instead, as meson did;
 *  - /proc/PID/task/TID/syscall shows the host's system call, numbered as
 *    the host numbers them, not the program's SYS_read (emulated_syscalls).
 * On Windows (wine) emulator() is NULL and exec_self is not there. */
#ifndef UVP_TEST_EMULATOR_H
#define UVP_TEST_EMULATOR_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The wrapper meson runs this test through, or NULL when it runs alone
 * (and on Windows, whose wrapper is wine: none of the above). */
static inline const char *emulator(void) {
#if defined(_WIN32)
  return NULL;
#else
  const char *w = getenv("MESON_EXE_WRAPPER");
  return w != NULL && *w != '\0' ? w : NULL;
#endif
}

/* Whether /proc's syscall files number calls as the host does. */
static inline bool emulated_syscalls(void) { return emulator() != NULL; }

#if !defined(_WIN32)
/* execv(argv[0], argv), through the wrapper when there is one (its words
 * split at spaces: meson quotes none in the cross files CI writes).
 * Returns only if the exec failed. */
static inline void exec_self(char *const argv[]) {
  const char *w = emulator();
  if (w == NULL) {
    execv(argv[0], argv);
    return;
  }
  static char words[1024];
  char *args[64];
  size_t n = 0;
  if (strlen(w) >= sizeof(words))
    return;
  strcpy(words, w);
  for (char *t = strtok(words, " "); t != NULL && n < 32; t = strtok(NULL, " "))
    args[n++] = t;
  for (size_t i = 0; argv[i] != NULL && n < 63; i++)
    args[n++] = argv[i];
  args[n] = NULL;
  execvp(args[0], args);
}
#endif

#endif

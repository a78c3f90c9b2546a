/* A child that waits until it is killed, for the dumps' "for process"
 * lines: POSIX's sleep program; on Windows, which has none, the test's own
 * program run as "EXE sleep 30" (sleeper_main, first thing in main). */
#ifndef UVP_TEST_SLEEPER_H
#define UVP_TEST_SLEEPER_H

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#if defined(_WIN32)
static char sleeper_exe[512];
static inline void sleeper_main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "sleep") == 0) {
    uv_sleep((unsigned)atoi(argv[2]) * 1000);
    exit(0);
  }
  size_t n = sizeof(sleeper_exe);
  if (uv_exepath(sleeper_exe, &n) != 0)
    abort();
  /* Forward slashes, which Windows takes as well: the path reads the same
   * in the text dump and in the JSON one (no escapes). */
  for (char *c = sleeper_exe; *c != '\0'; c++)
    if (*c == '\\')
      *c = '/';
}
#define SLEEPER_PATH ((const char *)sleeper_exe)
#define SLEEPER_ARGS                                                           \
  { "sleeper", "sleep", "30", NULL }
#else
static inline void sleeper_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
}
#define SLEEPER_PATH "/bin/sleep"
#define SLEEPER_ARGS                                                           \
  { "sleep", "30", NULL }
#endif

#endif

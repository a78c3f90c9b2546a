/* SKIP_BECAUSE(fmt, ...): print one line saying why, then skip the test.
 * cmocka's own line names the skipped test only, and a skip whose reason
 * is not in the log looks the same as a check that went missing by
 * mistake (a tool that should have been installed, a build that should
 * have had it).  helpers.h includes this; a test without the fixture
 * includes it alone. */
#ifndef UVP_TEST_SKIP_H
#define UVP_TEST_SKIP_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static inline void skip_say_why(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* On stdout through cmocka, so that the line stays next to cmocka's own
 * "[  SKIPPED ]" for the test. */
static inline void skip_say_why(const char *fmt, ...) {
  va_list ap;
  print_message("skipped: ");
  va_start(ap, fmt);
  vprint_message(fmt, ap);
  va_end(ap);
  print_message("\n");
}

/* skip() as the including file has it when it expands: in a fixture test,
 * helpers.h's, which lets the teardown check the context as usual. */
#define SKIP_BECAUSE(...)                                                      \
  do {                                                                         \
    skip_say_why(__VA_ARGS__);                                                 \
    skip();                                                                    \
  } while (0)

/* A test that checks what Windows does not have (a FIFO, /proc, a POSIX
 * signal): skipped there, by name, with the reason in the log (test/win). */
#if defined(_WIN32)
#define SKIP_ON_WINDOWS(why) SKIP_BECAUSE("not on Windows: %s", why)
#else
#define SKIP_ON_WINDOWS(why) ((void)0)
#endif

/* A test that checks what qemu-user does not emulate: skipped where meson
 * runs the test through an emulator (test/emulator.h), by name, with the
 * reason in the log (.ci/qemu counts them).  Not on Windows, whose
 * emulator is wine: what it lacks, SKIP_ON_WINDOWS says. */
#if defined(_WIN32)
#define SKIP_UNDER_EMULATOR(why) ((void)0)
#else
#define SKIP_UNDER_EMULATOR(why)                                               \
  do {                                                                         \
    const char *skip_wrapper_ = getenv("MESON_EXE_WRAPPER");                   \
    if (skip_wrapper_ != NULL && *skip_wrapper_ != '\0')                       \
      SKIP_BECAUSE("under %.*s: %s", (int)strcspn(skip_wrapper_, " "),         \
                   skip_wrapper_, why);                                        \
  } while (0)
#endif

#endif

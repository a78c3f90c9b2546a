/* See README.md: what the tests use of <sys/syscall.h>, on Windows. */
#include "../win.h"

/* See README.md: what the tests use of <sys/wait.h>, on Windows. */
#include "../win.h"

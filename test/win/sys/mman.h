/* See README.md: what the tests use of <sys/mman.h>, on Windows. */
#include "../win.h"

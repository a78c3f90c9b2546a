/* See README.md: what the tests use of <sys/uio.h>, on Windows. */
#include "../win.h"

/* See README.md: what the tests use of <sys/resource.h>, on Windows. */
#include "../win.h"

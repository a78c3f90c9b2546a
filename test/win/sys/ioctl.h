/* See README.md: what the tests use of <sys/ioctl.h>, on Windows. */
#include "../win.h"

/* See README.md: what the tests use of <sys/socket.h>, on Windows. */
#include "../win.h"

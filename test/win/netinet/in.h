/* See README.md: what the tests use of <netinet/in.h>, on Windows. */
#include "../win.h"

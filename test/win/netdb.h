/* See README.md: what the tests use of <netdb.h>, on Windows. */
#include "win.h"

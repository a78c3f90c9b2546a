/* See README.md: what the tests use of <arpa/inet.h>, on Windows. */
#include "../win.h"

/* Private to src/tcp.c and its test: the resolver uvp_tcp_connect_host
 * asks.  NULL: uv_getaddrinfo (a constant initializer cannot name a
 * function of a DLL); test-tcp puts a resolver of its
 * own in front of it to answer with several addresses (what no machine's
 * resolver gives on demand).  A pointer rather than the linker's --wrap,
 * which Apple's linker does not have; the call it adds is one per lookup,
 * nowhere near the hot path.  Hidden like every symbol of src/: a program
 * linking the shared library cannot reach it. */
#ifndef UVP_TCP_H
#define UVP_TCP_H

#include <uv.h>

typedef int (*uvp__getaddrinfo_fn)(uv_loop_t *loop, uv_getaddrinfo_t *req,
                                   uv_getaddrinfo_cb cb, const char *node,
                                   const char *service,
                                   const struct addrinfo *hints);
extern uvp__getaddrinfo_fn uvp__tcp_getaddrinfo;

#endif

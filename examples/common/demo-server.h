/* demo-server — an in-process loopback HTTP server with one endpoint per
 * way a request can end, so HTTP clients can be shown (and tested) against
 * every outcome without touching the network:
 *
 *   /             200, the list below as text
 *   /fast         200, a small body at once
 *   /slow         200 after ~300 ms
 *   /big          200, chunked, DEMO_BIG_BYTES bytes
 *   /missing      404
 *   /error        500
 *   /stats        200, {"connections":N,"requests":M,"hanging":K}:
 *                 connections accepted and requests answered since start,
 *                 this one included, and /hang requests whose client has
 *                 not gone yet
 *   /close-after  200 like /fast, then closes the connection without
 *                 saying so (no "Connection: close"), as a server whose
 *                 keep-alive timeout ran out: a client that reuses the
 *                 connection finds it closed
 *   /until-close  200 with neither Content-Length nor chunks: the body,
 *                 DEMO_UNTIL_CLOSE_BODY, ends where the server closes
 *   /reset        reads the request, then resets the connection (RST)
 *   /hang         reads the request and never answers
 *   /trickle      200, a body of DEMO_TRICKLE_BYTES sent one byte at a time
 *   /half         promises Content-Length 1000, sends 10 bytes and closes
 *   /malformed    a garbage status line
 *   anything else: 404
 *
 * Served by httpd (plain libuv and llhttp, no uvp).  The well-behaved
 * endpoints (/, /fast, /slow, /big, /missing, /error, /stats and unknown
 * paths) keep the connection alive when the request allows it and answer
 * the next request on it, pipelined ones in order; the others end the
 * connection as described, whatever the request asked. */
#ifndef DEMO_SERVER_H
#define DEMO_SERVER_H

#include <uv.h>

#define DEMO_FAST_BODY "fast\n"
#define DEMO_UNTIL_CLOSE_BODY "until the server closes\n"
#define DEMO_SLOW_MS 300
#define DEMO_BIG_BYTES (64 * 1024)
#define DEMO_TRICKLE_BYTES 20
#define DEMO_TRICKLE_MS 10
#define DEMO_HALF_PROMISED 1000
#define DEMO_HALF_SENT 10

typedef struct demo_server_s demo_server_t;

/* Listen on ip:port (port 0: an ephemeral one) on `loop`, which must run for
 * the server to serve.  Errors: UV_EINVAL, UV_ENOMEM, uv_ip4_addr /
 * uv_ip6_addr / uv_tcp_bind / uv_listen errors (UV_EADDRINUSE...). */
int demo_server_start(uv_loop_t *loop, const char *ip, int port,
                      demo_server_t **out);

/* The port actually listened on. */
int demo_server_port(const demo_server_t *s);

/* Close the listener and every connection, hanging ones included; `done`
 * (may be NULL) runs with `arg` once every handle is closed and the server
 * freed: after that the loop holds nothing of the server's. */
void demo_server_stop(demo_server_t *s, void (*done)(void *), void *arg);

/* A port on `ip` (IPv4) on which nothing listens: bound to get a free
 * ephemeral port, then closed, so a connection to it is refused.  Returns
 * the port or a negative UV_E* code. */
int demo_server_refused_port(const char *ip);

#endif

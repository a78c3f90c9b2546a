/* seed — what the seed examples share, so that each of them holds nothing
 * but its pattern, written twice: once with fibers (uvp_await), once with
 * promise handlers.
 *
 * Every seed is run as `seed-NAME fibers` or `seed-NAME handlers` and
 * prints the same result lines either way; lines that start with
 * "timing:" hold measured times, which differ from run to run.  The I/O is
 * real: an in-process demo HTTP server on 127.0.0.1 (examples/common/
 * demo-server.h: /fast, /slow, /missing, /error, /reset, ...) and files in
 * a temporary directory. */
#ifndef SEED_H
#define SEED_H

#include <stdint.h>

#include "demo-server.h"
#include "httpc.h"
#include "uvp.h"

typedef struct seed_s {
  uv_loop_t *loop;
  uvp_ctx_t *ctx;
  int port;                  /* the demo server's */
  demo_server_t *servers[2]; /* the demo server, and one seed_serve started */
  char dir[64];              /* seed_write's directory ("" until then) */
  void *data;                /* the example's own */
} seed_t;

/* The version with handlers: start the work; *done (one reference) settles
 * once it is over.  The version with fibers is a uvp_fiber_fn whose arg is
 * the seed_t. */
typedef int (*seed_handlers_fn)(seed_t *s, uvp_promise_t **done);

/* main() of every seed: start the demo server, call `setup` (may be NULL),
 * run `fibers` as a fiber or call `handlers` (per argv[1]; with
 * "virtual-clock" as argv[2], on uvp's virtual clock, UVP_CLOCK_AUTO: the
 * results must not change, since the clock never jumps over a request in
 * flight, while waits with nothing in flight take no time), run the loop
 * until the work is done and the servers are stopped, tear everything
 * down.  Returns the exit status: 0 when the work fulfilled and
 * uv_loop_close() returned 0. */
int seed_main(int argc, char **argv, void (*setup)(seed_t *s),
              uvp_fiber_fn fibers, seed_handlers_fn handlers);

/* Exit with a message unless rc is 0: for calls that only fail when memory
 * runs out, which an example does not try to survive. */
void must(int rc);

/* GET http://127.0.0.1:PORT/PATH (port 0: the demo server's), as the
 * JavaScript `fetch` wrapper that throws unless res.ok: fulfils with an
 * httpc_response_t * (status < 400), rejects with libuv's code, or with
 * UV_EREMOTEIO and the text "HTTP <status>" as payload. */
int seed_fetch(seed_t *s, int port, const char *path, uvp_promise_t **out);

/* An outcome in a few words: "200 fast" (status and first body line),
 * "HTTP 500", "ECONNRESET".  Returns buf. */
const char *seed_describe(int status, const void *value, char *buf,
                          size_t size);

/* Start one more demo server on 127.0.0.1:port, stopped with the first. */
void seed_serve(seed_t *s, int port);

/* Write `text` to the file `name` of a temporary directory created on first
 * use and removed at exit (setup, not part of the patterns: synchronous);
 * seed_path gives the file's path. */
void seed_write(seed_t *s, const char *name, const char *text);
const char *seed_path(seed_t *s, const char *name, char *buf, size_t size);

/* A start for seed_ms_since: uv_hrtime() after refreshing the loop's clock.
 * The loop's timers count from its cached time, which lags by however long
 * the current turn has run or the process was descheduled: from a start
 * taken by uv_hrtime() alone, a 100 ms timer can seem to end early. */
uint64_t seed_start(seed_t *s);

/* Milliseconds since `start_ns` (a uv_hrtime() value). */
double seed_ms_since(uint64_t start_ns);

#endif

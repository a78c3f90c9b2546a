/* uvp-gateway --health-down: the workers share each backend's health by
 * calls between their loops (uvp_call_start, include/uvp/calls.h).
 *
 * Each backend is owned by one worker (a hash of its URL, modulo the
 * workers): the owner keeps its verdict (down until when).  A worker that
 * sees a backend request fail tells the owner by a call; the owner marks
 * the backend down for --health-down ms and pushes the verdict to every
 * worker by calls, so a backend that fails on one worker is avoided by
 * all.  A worker that sees a backend it had down answer again tells the
 * owner, which pushes the backend up.  The request's path reads the
 * worker's own copy of the verdict (one compare, no lock, no call):
 * calls happen only when a verdict changes.
 *
 * Threads: health_net_new and health_net_free on the main thread, before
 * the workers start and after they are joined; the rest on the worker's
 * own loop thread. */
#ifndef UVP_GATEWAY_HEALTH_H
#define UVP_GATEWAY_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uvp.h>

typedef struct health_net_s health_net_t;
typedef struct health_s health_t;

/* A line to log for `worker` (the owner that changed a verdict). */
typedef void (*health_log_cb)(unsigned worker, const char *line);

/* The shared table for `workers` workers and the n backends' urls (kept,
 * not copied); a backend that fails is down for down_ms.  NULL: no
 * memory. */
health_net_t *health_net_new(unsigned workers, char *const *urls, size_t n,
                             uint64_t down_ms, health_log_cb log);
void health_net_free(health_net_t *net);

/* Worker `id` joins with its context (until health_leave, other workers'
 * calls may reach it).  0, or UV_ENOMEM. */
int health_join(health_net_t *net, unsigned id, uvp_ctx_t *ctx, health_t **out);
/* Before the worker's uvp_ctx_close: no call reaches it any more, and its
 * own handle closes.  Then, once its loop is closed, health_free. */
void health_leave(health_t *h);
void health_free(health_t *h);

/* The request's path: whether backend i is down, as this worker knows. */
bool health_down(const health_t *h, size_t i);
/* What a backend request to i ended with: UV_ECANCELED (the client gone)
 * and UV_EHOSTDOWN (skipped: down) say nothing of the backend. */
void health_saw(health_t *h, size_t i, int status);

#endif

/* Private to src/: what every layer may know of a context and its
 * scheduler (the glue to libuv): the few fields the hot paths read, which
 * thread is the loop's, the layers' own per-context state, the lock.  The
 * whole context, the run queue and the mailbox for other threads are the
 * core's (context.h: sched.c, promise.c and reaction.c); the mailbox as a
 * layer posts to it is mail.h's, the stall detector's marks stall-marks.h's. */
#ifndef UVP_SCHED_H
#define UVP_SCHED_H

#include "head.h"
#include "promise.h"
#include "registry.h"
#include "site.h"

static inline uvp_ctx_t *uvp__promise_ctx(const uvp_promise_t *p) {
  return uvp__contexts[p->ctx_id];
}

/* ---- for the layers ------------------------------------------------------ */

/* The context's lock, recursive: after uvp_ctx_close other threads may
 * release under it.  The unlock may free a closed, empty context. */
void uvp__lock(uvp_ctx_t *ctx);
void uvp__unlock(uvp_ctx_t *ctx);

/* Objects that outlive promises (a TCP connection) keep the context's
 * memory until they are gone. */
void uvp__hold(uvp_ctx_t *ctx);
void uvp__drop(uvp_ctx_t *ctx);

/* The one door of uvp's work in the loop: every libuv request and handle
 * uvp starts (an operation's request, a connection's handle, a timer, the
 * context's own handles) is counted from its start until libuv is done
 * with it (its callback, or its handle's close callback, has run).  A
 * closed context is freed only once the count is 0, and
 * uvp_ctx_close_full's callback runs when it reaches 0, from inside the
 * end that brings it there: call the end last, after the object's own
 * cleanup, since it may free the context.  Loop thread only; a plain
 * increment (the end tests `closed` too) with no allocation. */
void uvp__loop_work_begin(uvp_ctx_t *ctx);
void uvp__loop_work_end(uvp_ctx_t *ctx);
/* The same for a handle of uvp's own that is no work of the program's (the
 * context's three, the virtual clock's two): the context waits for its
 * close, uvp_ctx_inflight does not count it. */
void uvp__loop_handle_begin(uvp_ctx_t *ctx);
void uvp__loop_handle_end(uvp_ctx_t *ctx);
/* A prepare handle of a context's extension (the stall detector's, the
 * recorder's), opened once (*open says so): unreferenced, counted as
 * above, and closed by uvp_ctx_close with the context's own handles,
 * whose close callback reads the context from its data. */
void uvp__ext_prepare_open(uvp_ctx_t *ctx, uv_prepare_t *h, bool *open);

/* Queue a completion: h (UVP__RK_NOTIFY_EMBEDDED, its target the
 * operation's promise, which the queue now holds) runs with
 * uvp__run_completion once no reaction is queued. */
void uvp__enqueue_completion(uvp_ctx_t *ctx, uvp__handler_t *h);

/* ctx's cache of interned sites (site.h), for a layer that interns them
 * itself (uvp__site, inline): a fiber's awaits.  Loop thread. */
struct uvp__sites_s *uvp__ctx_sites(uvp_ctx_t *ctx);
/* The large blocks ctx keeps for combinators and maps (alloc.h). */
uvp__blocks_t *uvp__ctx_blocks(uvp_ctx_t *ctx);

/* uvp_fiber_spawn_at as it was before "Handing over": an error leaves
 * opts->arg_free to the caller (a group's member frees its own record). */
int uvp__fiber_spawn(uvp_ctx_t *ctx, uvp_fiber_fn fn, void *arg,
                     const uvp_fiber_opts_t *opts, uvp_promise_t **out,
                     const char *file, int line);

#endif

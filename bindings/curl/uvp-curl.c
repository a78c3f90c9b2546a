/* uvp-curl: libcurl's multi-socket interface on a uvp context's loop.
 *
 * One binding (uvp_curl_t) per context holds a CURLM, a uv_timer_t for
 * CURLMOPT_TIMERFUNCTION, a uv_poll_t per socket CURLMOPT_SOCKETFUNCTION
 * asks to watch, and a uv_async_t that is never sent: it is what keeps
 * uv_run() going, referenced while a transfer is in flight (the polls and
 * the timer stay unreferenced, so an idle connection libcurl still asks
 * to watch, or a timer it leaves armed, keeps nothing alive).
 *
 * A transfer (xfer_t) is an easy handle in the multi plus the promise the
 * program got.  Every call into libcurl is made between uvp_curl__enter()
 * and leave(): libcurl calls the program's callbacks from inside them, and
 * there curl_multi_add_handle / curl_multi_remove_handle return
 * CURLM_RECURSIVE_API_CALL (7.88).  So a cancel hook or a perform that
 * runs while `depth` > 0 queues its work (`deferred`), and the outermost
 * leave() does it once libcurl has returned, still inside the binding's
 * callback, before the loop goes on.  After each action the finished
 * transfers are collected (curl_multi_info_read), removed and settled.
 *
 * Sockets.  libcurl tells the binding about a socket before it closes it
 * (CURL_POLL_REMOVE from Curl_multi_closed), and may open a new one that
 * gets the same descriptor number at once, or go back to watching an
 * idle connection whose poll handle is still closing.  libuv allows one
 * poll handle per descriptor (uv_poll_init: UV_EEXIST; the closing one's
 * epoll registration would be the new one's): each descriptor has a slot
 * with the socket libcurl uses now and the poll handle still closing, and
 * a socket whose descriptor has a closing handle waits, unstarted, for
 * that handle's close callback, which starts it.
 *
 * Lifetimes.  A transfer is freed when it leaves the multi (settled, or
 * cancelled); the binding when uvp_curl_close has closed everything and
 * the last close callback has run (`handles` counts the open ones).
 *
 * Work in flight.  uvp_curl__start() is the one place every transfer goes
 * through before libcurl sees it, and uvp_curl__xfer_free() the one it
 * leaves by: there the transfer's record (uvp_inflight_t, class
 * xfer_class) starts and ends.
 * Between the two the transfer is its scope's work (a group's join waits
 * for it), the scope's deadline watches its promise (when it passes the
 * promise rejects with UV_ETIMEDOUT and on_cancel takes the transfer out
 * of the multi, as any cancellation does; not CURLOPT_TIMEOUT_MS: a
 * deadline is the scope's, shared with everything else the request
 * started), the virtual clock keeps the loop's pace, and the task dump
 * names it through transfer_target() ("GET url", kind "HTTP"), the one
 * place that does, which uvp_curl_dump prints too.
 *
 * The busy limit.  A deadline, libcurl's timeouts and every
 * other handle of the loop wait while the loop thread is inside libcurl,
 * and libcurl 7.88 can stay there as long as a server wants: its HTTP/2
 * read loop (cf_h2_recv) reads until the socket is empty or the stream
 * it serves has data, and a server sending only control frames
 * (WINDOW_UPDATE, PING) faster than the client parses them keeps it from
 * either; no option of libcurl's or nghttp2's bounds it, and no callback
 * of the program's runs inside it.  So a watchdog thread (one per
 * binding, started with the first transfer, asleep while none runs)
 * watches the calls into libcurl: each curl_multi_socket_action notes its
 * start (busy_gen odd, busy_since).  One that has run `busy_limit` ms
 * has its connection found by what it reads, looked at every 20 ms: of
 * the sockets libcurl asked the binding to watch (wd_fds, kept under
 * wd_lock), the one whose bytes it goes on consuming (TCP_INFO's bytes
 * received less the growth of FIONREAD's queue: nothing else reads while
 * the loop thread is inside libcurl), 4 MiB since the limit passed and
 * 64 KiB in the last 20 ms: more than a call that is not flooded reads in
 * all (watchdog.c's WD_ENOUGH says why).  The watchdog shuts that socket
 * down (shutdown, never close: the descriptor stays libcurl's, and libcurl
 * tells the binding before it closes one, CURL_POLL_REMOVE, which waits
 * for wd_lock, so a descriptor number is never shut down after libcurl has
 * reused it); libcurl's next recv on it then fails (the reset) or ends
 * (EOF) once the bytes already queued are read, and the call returns.  The
 * transfers of that connection fail, and transfers.c's finish() turns
 * their libcurl error into UV_ETIMEDOUT (it knows them by the connection's
 * ports and peer, kept in wd_kills).  Linux only (TCP_INFO, FIONREAD);
 * elsewhere no watchdog.
 *
 * Files, each calling only those before it (the lower ones know nothing
 * of the upper, and need no hook): errors.c (the codes, libcurl's as
 * ours), watchdog.c (the busy limit: its thread, the sockets it looks at,
 * the one call into libcurl it times, uvp_curl_set_busy_limit),
 * response.c (what a fetch settles with), transfers.c (a transfer's life:
 * the table by easy handle, the calls into libcurl and the deferred queue,
 * start, cancel, finish; uvp_curl_perform, uvp_curl_dump), sockets.c (the
 * loop's side: libcurl's socket and timer callbacks, the poll handles and
 * their slots, the close callbacks of the binding's handles), fetch.c
 * (uvp_curl_fetch: its options and the callbacks that read the response)
 * and this one (the binding: uvp_curl_new, uvp_curl_close, the multi,
 * stats); curl-internal.h declares what they share. */
#include "curl-internal.h"

int uvp_curl_new(uvp_ctx_t *ctx, uvp_curl_t **out) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  uv_loop_t *loop = uvp_ctx_loop(ctx);
  /* A closed context answers UVP_ECLOSED to any promise: ask it for one
   * (and let it go) rather than make handles for nothing. */
  uvp_promise_t *probe;
  int rc = uvp_promise_new(ctx, &probe);
  if (rc != 0)
    return rc;
  uvp_promise_release(probe);

  uvp_curl_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  c->ctx = ctx;
  c->loop = loop;
  c->busy_limit_ms = UVP_CURL_BUSY_LIMIT_DEFAULT;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    free(c);
    return UV_ENOMEM;
  }
  if ((c->multi = curl_multi_init()) == NULL) {
    curl_global_cleanup();
    free(c);
    return UV_ENOMEM;
  }
  if ((rc = uv_timer_init(loop, &c->timer)) != 0) {
    curl_multi_cleanup(c->multi);
    curl_global_cleanup();
    free(c);
    return rc;
  }
  c->timer.data = c;
  c->handles = 1;
  if ((rc = uv_async_init(loop, &c->keep, NULL)) != 0) {
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    curl_global_cleanup();
    c->closing = true; /* the timer's close callback frees c */
    uv_close((uv_handle_t *)&c->timer, uvp_curl__on_handle_closed);
    return rc;
  }
  c->keep.data = c;
  c->handles = 2;
  uv_unref((uv_handle_t *)&c->timer);
  uv_unref((uv_handle_t *)&c->keep);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, uvp_curl__on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, uvp_curl__on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  *out = c;
  return 0;
}

CURLM *uvp_curl_multi(const uvp_curl_t *c) {
  return c != NULL && !c->closing ? c->multi : NULL;
}

int uvp_curl_close(uvp_curl_t *c) {
  if (c == NULL || c->closing)
    return UV_EINVAL;
  if (c->depth > 0)
    return UV_EBUSY;
  uvp_curl__wd_end(c);
  uvp_curl__xfers_abandon(c);
  c->closing = true;
  /* Stop watching before libcurl closes the sockets. */
  uvp_curl__socks_drop(c);
  uvp_curl__enter(c);
  curl_multi_cleanup(c->multi);
  c->depth--;
  c->multi = NULL;
  curl_global_cleanup();
  uv_close((uv_handle_t *)&c->timer, uvp_curl__on_handle_closed);
  uv_close((uv_handle_t *)&c->keep, uvp_curl__on_handle_closed);
  return 0;
}

int uvp_curl_stats(const uvp_curl_t *c, uvp_curl_stats_t *out) {
  if (c == NULL || out == NULL)
    return UV_EINVAL;
  *out = c->stats;
  return 0;
}

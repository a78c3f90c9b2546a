/** @file
 * uvp-curl — HTTP(S) transfers as uvp promises, through libcurl on the
 * context's own loop.
 *
 * A binding, not part of uvp's core: a library of its own (libuvp-curl,
 * pkg-config name uvp-curl), built when libcurl is found.  It drives one
 * libcurl multi handle per context with libcurl's multi-socket interface
 * (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION): a uv_poll_t per socket
 * libcurl asks to watch and one uv_timer_t, on the loop the context runs
 * on, as curl's docs/examples/multi-uv.c does.  libcurl brings HTTP/2,
 * proxies, authentication, compression, cookies, and its connection
 * cache, which every transfer of the context shares.
 *
 * @code
 *   uvp_curl_t *c;
 *   uvp_curl_new(ctx, &c);
 *   uvp_curl_get(c, "https://example.org/", &p);   // or your own CURL *
 *   ...  // p fulfils with a uvp_curl_response_t *: status, headers, body
 *   uvp_curl_close(c);                             // then run the loop
 * @endcode
 *
 * Everything here runs on the context's loop thread, as uvp's wrappers do.
 * The rules of uvp.h for wrappers hold (a promise only the binding
 * settles, cancellation, teardown, keeping uv_run() going while a
 * transfer is in flight), with what this header adds.
 *
 * Global state and threads.  libcurl keeps process-wide state set up by
 * curl_global_init and torn down by curl_global_cleanup (OpenSSL's, and
 * libcurl's own).  uvp_curl_new calls curl_global_init(CURL_GLOBAL_DEFAULT)
 * and the end of uvp_curl_close calls curl_global_cleanup: libcurl counts
 * these calls, so the state lives while any binding (or any other user of
 * libcurl in the process that calls them in pairs) is alive.  With a
 * libcurl whose curl_version_info() has CURL_VERSION_THREADSAFE (7.84 and
 * later built with atomics: Debian 12's 7.88.1 is) both are safe to call
 * from several threads at once, so each thread may run its own loop,
 * context and binding; with an older one, a program with several such
 * threads calls curl_global_init itself before starting them (the
 * bindings' calls then only count).  A binding belongs to its loop's
 * thread: its multi handle, easy handles and callbacks are only touched
 * there.  Each binding also has a watchdog thread of its own for the busy
 * limit (uvp_curl_set_busy_limit; Linux), started with its first transfer
 * and joined by uvp_curl_close: it never calls libcurl, uvp or libuv's
 * loop, only reads its sockets' counters and may shut one down.
 * libcurl's threaded resolver (Debian's libcurl uses it; "AsynchDNS")
 * looks a host name up with getaddrinfo on a thread it starts for that
 * lookup, which tells the loop thread through a socket pair the binding
 * watches like any other socket: that thread never touches uvp, libuv or
 * the transfer, so uvp's thread check and libuv's thread pool are not
 * involved (a literal address needs no lookup and no thread).  One cost
 * is libcurl 7.88's: cancelling a transfer while its lookup runs waits, on
 * the loop thread, until getaddrinfo returns (Curl_resolver_kill joins the
 * thread), which is at once for names in /etc/hosts and as long as the
 * resolver's timeout for a nameserver that does not answer; bound lookups
 * with CURLOPT_CONNECTTIMEOUT, or pass addresses (CURLOPT_RESOLVE).
 *
 * Errors.  A transfer that fails rejects with a uvp or libuv code mapped
 * from libcurl's CURLcode (uvp_curl_code says how), and a payload, a
 * uvp_curl_error_t, keeping libcurl's own code and message.  Codes with
 * no libuv equivalent are the binding's: UVP_CURL_ETLS and the others
 * below; uvp_curl_strerror and uvp_curl_err_name know them and every
 * code uvp_strerror knows. */
#ifndef UVP_CURL_H
#define UVP_CURL_H

#include <curl/curl.h>
#include <uvp.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define UVP_CURL_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define UVP_CURL_EXTERN __attribute__((visibility("default")))
#else
#define UVP_CURL_EXTERN
#endif

/* ------------------------------------------------------------------------ */
/* Error codes                                                               */
/* ------------------------------------------------------------------------ */

/** @defgroup curl uvp-curl
 * HTTP(S) transfers as uvp promises, through libcurl: see uvp-curl.h. */

/** @defgroup curl_errors Error codes
 * @ingroup curl */
/** @{ */

/** The binding's own codes, below uvp's (-30001...) and libuv's. */
#define UVP_CURL_ERRNO_MAP(XX)                                                 \
  XX(ETLS, -32001, "TLS handshake or certificate verification failed")         \
  XX(EHTTP, -32002, "HTTP error status (CURLOPT_FAILONERROR)")                 \
  XX(ECURL, -32003, "libcurl error")

/** The codes of UVP_CURL_ERRNO_MAP as constants: UVP_CURL_ETLS... */
typedef enum {
#define XX(name, val, msg) UVP_CURL_##name = (val),
  UVP_CURL_ERRNO_MAP(XX)
#undef XX
      UVP_CURL_ERRNO_MAX_ = -32000
} uvp_curl_errno_t;

/** @name uvp_curl_strerror, uvp_curl_err_name
 * @{ */
/** Message / symbolic name ("ETLS", "ECONNREFUSED") of a binding code or of
 * any code uvp_strerror / uvp_err_name know.  Never NULL; static strings
 * for known codes (an unknown one as uvp_strerror formats it). */
UVP_CURL_EXTERN const char *uvp_curl_strerror(int code);
UVP_CURL_EXTERN const char *uvp_curl_err_name(int code);
/** @} */

/** The rejection payload of a failed transfer: libcurl's CURLcode and its
 * message (what CURLOPT_ERRORBUFFER received, else curl_easy_strerror's
 * text; for the binding's own limits, the binding's message, with code
 * CURLE_WRITE_ERROR).  Owned by the promise. */
typedef struct uvp_curl_error_s {
  CURLcode code;                 /**< libcurl's code */
  char message[CURL_ERROR_SIZE]; /**< libcurl's message */
} uvp_curl_error_t;

/** The code a transfer that ended with `code` rejects with (0 for
 * CURLE_OK).  `easy` (may be NULL) is the transfer's handle, read for
 * what the code alone does not say: CURLINFO_OS_ERRNO and
 * CURLINFO_PRIMARY_IP.
 *   CURLE_COULDNT_CONNECT          the system's error (UV_ECONNREFUSED,
 *                                  UV_ENETUNREACH, UV_ETIMEDOUT, ...);
 *                                  UV_ECONNREFUSED if libcurl kept none
 *   CURLE_SEND_ERROR, _RECV_ERROR  the system's error (UV_ECONNRESET,
 *                                  UV_EPIPE, ...), else UV_EPROTO (a TLS
 *                                  record error, a proxy's CONNECT refused)
 *   CURLE_OPERATION_TIMEDOUT       UV_ETIMEDOUT
 *   CURLE_COULDNT_RESOLVE_HOST     UV_EAI_NONAME (also _PROXY)
 *   CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_WEIRD_SERVER_REPLY,
 *   CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_BAD_CONTENT_ENCODING,
 *   CURLE_PROXY                    UV_EPROTO
 *   CURLE_UNSUPPORTED_PROTOCOL     UV_EPROTO once connected (an HTTP/0.9
 *                                  answer), else UV_EINVAL (a scheme
 *                                  libcurl or CURLOPT_PROTOCOLS_STR
 *                                  refuses)
 *   CURLE_URL_MALFORMAT, CURLE_BAD_FUNCTION_ARGUMENT   UV_EINVAL
 *   CURLE_SSL_* , CURLE_PEER_FAILED_VERIFICATION, CURLE_USE_SSL_FAILED
 *                                  UVP_CURL_ETLS
 *   CURLE_TOO_MANY_REDIRECTS       UV_ELOOP
 *   CURLE_FILESIZE_EXCEEDED        UV_EFBIG
 *   CURLE_LOGIN_DENIED, CURLE_REMOTE_ACCESS_DENIED, CURLE_AUTH_ERROR
 *                                  UV_EACCES
 *   CURLE_ABORTED_BY_CALLBACK      UV_ECANCELED (a progress callback of
 *                                  yours stopped it)
 *   CURLE_WRITE_ERROR, CURLE_READ_ERROR   UV_EIO (a callback of yours
 *                                  refused the data)
 *   CURLE_OUT_OF_MEMORY            UV_ENOMEM
 *   CURLE_NOT_BUILT_IN             UV_ENOTSUP
 *   CURLE_HTTP_RETURNED_ERROR      UVP_CURL_EHTTP
 *   anything else                  UVP_CURL_ECURL */
UVP_CURL_EXTERN int uvp_curl_code(CURLcode code, CURL *easy);
/** @} */

/* ------------------------------------------------------------------------ */
/* The binding: one libcurl multi handle per context                        */
/* ------------------------------------------------------------------------ */

/** @defgroup curl_binding The binding: one libcurl multi handle per context
 * @ingroup curl */
/** @{ */

/** A binding: see uvp_curl_new. */
typedef struct uvp_curl_s uvp_curl_t;

/** A binding for ctx: a libcurl multi handle driven on ctx's loop, whose
 * connection cache, DNS cache and HTTP/2 connections the transfers share.
 * Make one per context (a second works, but shares nothing with the
 * first).  Yours until uvp_curl_close.  Loop thread.  Errors: UV_EINVAL,
 * UVP_ECLOSED, UV_ENOMEM (also curl_global_init failing), or
 * uv_async_init's. */
UVP_CURL_EXTERN int uvp_curl_new(uvp_ctx_t *ctx, uvp_curl_t **out);

/** Cancel every transfer still in flight (uvp_promise_cancel: each rejects
 * with UV_ECANCELED), close the multi handle (and so the connections it
 * caches) and the binding's handles; its memory goes once the loop has run
 * their close callbacks: run the loop before uv_loop_close(), as for a
 * libuv handle.  Any time on the loop thread, before or after
 * uvp_ctx_close (which has already rejected the transfers with
 * UVP_ECLOSED), but not from inside a libcurl callback (UV_EBUSY).  A
 * second call is a bug, as closing a libuv handle twice: UV_EINVAL while
 * the binding is still closing.  Errors: UV_EINVAL, UV_EBUSY. */
UVP_CURL_EXTERN int uvp_curl_close(uvp_curl_t *c);

/** The multi handle, for the CURLMOPTs the program wants
 * (CURLMOPT_MAX_CONCURRENT_STREAMS, CURLMOPT_MAX_HOST_CONNECTIONS,
 * CURLMOPT_MAXCONNECTS, ...), except the four the binding drives it with:
 * CURLMOPT_SOCKETFUNCTION, _SOCKETDATA, _TIMERFUNCTION and _TIMERDATA.
 * Do not add or remove easy handles on it yourself, nor call
 * curl_multi_perform/_socket_action/_cleanup.  NULL for NULL, and once
 * closed.
 *
 * HTTP/2: libcurl 7.88 opens a new connection for each transfer that finds
 * a host's connections at their stream limit (CURLMOPT_MAX_CONCURRENT_STREAMS,
 * 100 by default), CURLOPT_PIPEWAIT or not (it waits only for the host's
 * first connection).  For N requests in flight to a host over one
 * connection per 100 streams, set CURLMOPT_MAX_HOST_CONNECTIONS to
 * N / 100 rounded up (a transfer past it waits for a stream), and lift it
 * (0) for a host that answers HTTP/1.x: `uvp-fanout --http2` does both
 * (docs/guide-curl.md). */
UVP_CURL_EXTERN CURLM *uvp_curl_multi(const uvp_curl_t *c);
/** @} */

/* ------------------------------------------------------------------------ */
/* Transfers                                                                 */
/* ------------------------------------------------------------------------ */

/** @defgroup curl_transfers Transfers
 * @ingroup curl */
/** @{ */

/** @name uvp_curl_perform, uvp_curl_perform_at
 * @{ */
/** Run the transfer `easy` is set up for, as curl_easy_perform would, on
 * the loop: *out gets one reference to a promise that fulfils once it has
 * ended with CURLE_OK, whatever the HTTP status (a 404 is a transfer that
 * worked: read it with curl_easy_getinfo), with value `easy` itself
 * (borrowed: the promise does not free it).  It rejects with
 * uvp_curl_code(result) and a uvp_curl_error_t payload.
 *
 * Options are the program's: every CURLOPT it set on `easy` applies (URL,
 * method, body, callbacks, proxy, TLS, HTTP version, timeouts...), except
 * CURLOPT_ERRORBUFFER, which the binding sets for the length of the
 * transfer (the payload's message is what libcurl wrote there) and sets
 * back to NULL when it ends.  libcurl calls the program's callbacks on
 * the loop thread, from inside the binding's calls into libcurl: there
 * they may call uvp functions, including uvp_promise_cancel of this or
 * another transfer (the removal from the multi handle waits until libcurl
 * has returned) and uvp_curl_perform (the transfer is added then too), but
 * not uvp_curl_close.
 *
 * `easy` is borrowed until the promise settles: do not touch it (setopt,
 * cleanup, another perform) before.  Once settled it is yours again,
 * removed from the multi handle, and may be set up and performed again
 * (libcurl keeps its connection for the next transfer to the host).
 *
 * Cancellation (uvp_promise_cancel, uvp_timeout, a combinator's
 * UVP_CANCEL_LOSERS, uvp_group_cancel) rejects the promise with
 * UV_ECANCELED at once and removes the transfer from the multi handle
 * (curl_multi_remove_handle: a connection in the middle of a response is
 * closed, an HTTP/2 stream reset): inside the cancelling call, or, when
 * that call is made from one of libcurl's callbacks, as soon as libcurl
 * has returned to the binding, before the loop goes on.  Whatever phase
 * it is in: resolving (see "Global state and threads" for the wait),
 * connecting, TLS handshake, sending, receiving.  uvp_ctx_close does the
 * same with UVP_ECLOSED.  (libcurl 7.88 may leave the probes of a lookup
 * over DNS-over-HTTPS, CURLOPT_DOH_URL, in the multi handle when their
 * transfer is removed, until they end by themselves or uvp_curl_close;
 * they keep nothing alive.  And it loses that lookup's state, about
 * 1 KB, if the handle is performed again: clean it up instead.)
 * Cancelled: a request partly or wholly sent may have reached the server
 * and taken effect (a POST is not undone); the response's bytes not yet
 * delivered are lost: the connection is closed, never reused (over
 * HTTP/2 only the stream is reset); the easy handle is yours again.
 *
 * Deadlines: a transfer started under a deadline (uvp_deadline_set, a
 * fiber's or a group's deadline_ms) is watched by it, as uvp's own
 * operations are: when it passes the promise rejects with UV_ETIMEDOUT
 * and the transfer is removed as above.  In the core's task dump
 * (uvp_ctx_dump_tasks) a transfer something waits on shows as "HTTP GET
 * url" with its group, deadline and scope slots.  A deadline or a
 * timeout can only act while the loop runs, not while libcurl keeps the
 * loop thread: against a server that floods HTTP/2 control frames it
 * holds to within the busy limit (uvp_curl_set_busy_limit, 100 ms by
 * default), whose rejection is UV_ETIMEDOUT as well.
 *
 * While a transfer is in flight the binding keeps uv_run() going; its
 * sockets and timer do not otherwise.  It is also real work for a
 * virtual clock (UVP_CLOCK_AUTO) then, which keeps the loop's pace
 * instead of jumping, so a virtual timeout does not jump past an answer
 * on its way, and the virtual clock keeps to real time over transfers
 * made one after the other, each started as the last one's promise
 * settles, on one connection or several (the same milliseconds as real
 * time over each of six GETs of 600 ms, each bounded by a uvp_timeout of
 * 700 ms: test-curl's test_virtual_clock_in_a_row), and never runs ahead
 * of it: a timeout started right after a call that took long (libcurl's
 * first, over 100 ms under valgrind) counts from its own start, so an
 * answer that comes within the timeout's length of it wins
 * (test_virtual_clock_slow_call: calls of 300 ms, answers 300 ms after
 * them, timeouts of 500 ms); libcurl's own timeouts (CURLOPT_TIMEOUT_MS)
 * stay on libcurl's real clock.
 * Errors: UV_EINVAL (NULL argument), UV_EBUSY (easy is already in a
 * transfer), UVP_ECLOSED (the context, or the binding, is closed),
 * UV_ENOMEM (also: the deadline could not watch it); then nothing started
 * and easy is untouched. */
#define uvp_curl_perform(...)                                                  \
  uvp_curl_perform_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_CURL_EXTERN int uvp_curl_perform_at(uvp_curl_t *c, CURL *easy,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* The convenience: a URL in, status, headers and body out                  */
/* ------------------------------------------------------------------------ */

/** @defgroup curl_fetch The convenience: a URL in, status, headers and body out
 * @ingroup curl */
/** @{ */

/** A response header of the final response (after redirects, informational
 * responses and a proxy's CONNECT answer), as sent: name and value
 * without the ':', the surrounding blanks and the line end. */
typedef struct uvp_curl_header_s {
  const char *name;  /**< the header's name */
  const char *value; /**< its value */
} uvp_curl_header_t;

/** The value of uvp_curl_fetch: one owned object (its destructor frees all
 * of it, the easy handle included). */
typedef struct uvp_curl_response_s {
  long status;     /**< HTTP status of the final response */
  uvp_buf_t body;  /**< the body as decoded (see `--compressed`), NUL-
                        terminated; empty with UVP_CURL_DISCARD_BODY */
  size_t bytes;    /**< decoded body bytes received (body.len unless
                        discarded) */
  size_t nheaders; /**< the final response's headers, in order */
  const uvp_curl_header_t *headers; /**< nheaders of them */
  CURL *easy; /**< the transfer's handle, for curl_easy_getinfo
                   (CURLINFO_TOTAL_TIME_T, _EFFECTIVE_URL,
                   _REDIRECT_COUNT, _HTTP_VERSION, ...) and
                   curl_easy_header; owned by the response.  Its
                   write and header callbacks and request headers
                   are unset: to perform it again, set them up */
} uvp_curl_response_t;

/** The first header named `name` (ASCII case-insensitive), or NULL. */
UVP_CURL_EXTERN const char *
uvp_curl_response_header(const uvp_curl_response_t *res, const char *name);

/** Called with the easy handle the binding made for a fetch, after setting
 * its own options, to set any others (proxy, TLS, HTTP version, auth,
 * redirects, CURLOPT_ACCEPT_ENCODING, ...).  Return 0, or a negative code
 * to give up: uvp_curl_fetch then returns it with nothing started.  Leave
 * alone CURLOPT_WRITEFUNCTION, _WRITEDATA, _HEADERFUNCTION, _HEADERDATA
 * and _ERRORBUFFER: they are how the binding reads the response. */
typedef int (*uvp_curl_setup_cb)(void *arg, CURL *easy);

enum {
  /** Count the body's bytes (the cap still applies) but keep none. */
  UVP_CURL_DISCARD_BODY = 1
};

/** Default of uvp_curl_fetch_opts_t's max_body. */
#define UVP_CURL_MAX_BODY_DEFAULT (16u * 1024 * 1024)
/** Default of uvp_curl_fetch_opts_t's max_header. */
#define UVP_CURL_MAX_HEADER_DEFAULT (64u * 1024)

/** Options of uvp_curl_fetch. */
typedef struct uvp_curl_fetch_opts_s {
  const char *method; /**< NULL: GET, or POST when body is set; "HEAD" asks
                           for no body; any other is sent as given */
  const void *body;   /**< request body (copied during the call), sent with
                           the headers' Content-Type, libcurl's default
                           application/x-www-form-urlencoded without one */
  size_t body_len;    /**< bytes of body */
  const char *const *headers; /**< request headers, "Name: value" strings,
                                   NULL-terminated (copied); NULL: none */
  size_t max_body;            /**< decoded body bytes accepted; past them the
                                   transfer stops and rejects with UV_EFBIG.  0:
                                   UVP_CURL_MAX_BODY_DEFAULT */
  size_t max_header;          /**< bytes of the response heads the transfer
                                   reads, all of them counted together: status
                                   lines, headers and blank lines, of the final
                                   response and of every one before it (1xx
                                   answers, redirects followed, a proxy's
                                   CONNECT answer); past them UV_EMSGSIZE.  A
                                   line beginning with "HTTP/" inside a head
                                   counts like any other.  0: 64 KiB */
  uint64_t timeout_ms;     /**< the whole transfer, CURLOPT_TIMEOUT_MS; 0: none
                                (libcurl's connect timeout, 300 s, still) */
  int flags;               /**< 0 or UVP_CURL_DISCARD_BODY */
  uvp_curl_setup_cb setup; /**< optional, see above */
  void *setup_arg;         /**< setup's first argument */
} uvp_curl_fetch_opts_t;

/** @name uvp_curl_fetch, uvp_curl_fetch_at
 * @{ */
/** GET (or POST, ...) `url` (copied) on a new easy handle: *out gets one
 * reference to a promise that fulfils with a uvp_curl_response_t *,
 * owned (its destructor attached), whatever the status, and rejects as
 * uvp_curl_perform's does.  The body cap is enforced as the bytes arrive,
 * in the write callback, on the body as decoded: with compression
 * (CURLOPT_ACCEPT_ENCODING) the cap counts the bytes the server's
 * compressed body expands to, not those on the wire; and it holds for a
 * body whose size the server does not announce (chunked, or ended by the
 * close), which libcurl 7.88's CURLOPT_MAXFILESIZE lets through.  The
 * rejection's message then says "response body larger than N bytes"
 * ("response header larger than N bytes" for the header cap).
 * `opts` may be NULL (a GET with the defaults).  Cancellation as
 * uvp_curl_perform's.
 *
 * Trace context (W3C, uvp/tracing.h): a fetch started where the current
 * scope carries one (uvp_tracectx_get on the loop thread, in the call) is
 * a CLIENT span of it, named "GET host/path" (the method, then the URL
 * without its scheme, query and fragment, at most 120 bytes), begun in
 * the call and ended when the promise settles (status 0, or the code it
 * rejects with; UV_ECANCELED for a transfer let go by uvp_curl_close).
 * The request carries the span's own context as `traceparent:
 * 00-<trace-id>-<span-id>-<flags>` (68 bytes with the line end) and the
 * scope's `tracestate`, if any (forwarded as it is: at most
 * UVP_TRACESTATE_MAX bytes), after opts->headers.  A `traceparent` among
 * opts->headers is the program's: it is sent alone, with no span and no
 * tracestate added.  A setup callback that sets CURLOPT_HTTPHEADER
 * replaces the whole list, these two headers with it.  Without a trace
 * context nothing is added: the check costs one uvp_tracectx_get that
 * returns UV_ENOENT.  uvp_curl_perform does none of this: libcurl has no
 * way to read back the CURLOPT_HTTPHEADER list of a handle the program
 * set up, so the binding cannot add to it without dropping the
 * program's; such a program begins its own span (uvp_span_begin(ctx,
 * &span, name, UVP_SPAN_CLIENT, NULL, 0)), puts "traceparent: " and
 * uvp_tracectx_format(&span.tc) in its list, and ends the span when the
 * promise settles.  Errors: UV_EINVAL (NULL c, url or out), UVP_ECLOSED,
 * UV_ENOMEM, the setup callback's code; nothing started then. */
#define uvp_curl_fetch(...) uvp_curl_fetch_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_CURL_EXTERN int uvp_curl_fetch_at(uvp_curl_t *c, const char *url,
                                      const uvp_curl_fetch_opts_t *opts,
                                      uvp_promise_t **out, const char *file,
                                      int line);
/** @} */

/** uvp_curl_fetch(c, url, NULL, out): a GET with the defaults. */
#define uvp_curl_get(c, url, out)                                              \
  uvp_curl_fetch_at((c), (url), NULL, (out), __FILE__, __LINE__)
/** @} */

/* ------------------------------------------------------------------------ */
/* Inspection                                                                */
/* ------------------------------------------------------------------------ */

/** @defgroup curl_inspection Inspection
 * @ingroup curl */
/** @{ */

/** Counters of a binding (uvp_curl_stats). */
typedef struct uvp_curl_stats_s {
  size_t running;     /**< transfers in flight */
  size_t sockets;     /**< sockets libcurl has the binding watch now */
  uint64_t started;   /**< transfers added to the multi handle */
  uint64_t finished;  /**< ended by libcurl (fulfilled or rejected) */
  uint64_t cancelled; /**< removed before their end (cancel, teardown) */
  uint64_t connects;  /**< connections libcurl opened for the finished
                           ones (CURLINFO_NUM_CONNECTS, summed) */
  uint64_t deferred;  /**< removals and adds asked for from inside a
                           libcurl callback, made once it returned */
  uint64_t reopened;  /**< sockets whose watch waited for the close of
                           an earlier poll handle on the same descriptor
                           (libcurl closed a socket and got its number
                           again at once, or went back to a connection
                           it had stopped watching) */
} uvp_curl_stats_t;

/** Fill *out.  Errors: UV_EINVAL. */
UVP_CURL_EXTERN int uvp_curl_stats(const uvp_curl_t *c, uvp_curl_stats_t *out);

/** Default of uvp_curl_set_busy_limit: 100 ms, what a loop serving
 * other work tolerates as one stall (calls of well-behaved transfers
 * that take longer are let be: see below). */
#define UVP_CURL_BUSY_LIMIT_DEFAULT 100u

/** The longest one call into libcurl may keep reading a connection, in
 * milliseconds of real time (0: no limit); UVP_CURL_BUSY_LIMIT_DEFAULT
 * until set.
 *
 * While the loop thread is inside libcurl nothing else of the loop runs:
 * no deadline, no uvp_timeout, none of libcurl's own timeouts
 * (CURLOPT_TIMEOUT_MS), no other transfer.  libcurl 7.88 (Debian 12's)
 * can be kept there by a server: its HTTP/2 read loop reads until the
 * socket is empty or the stream has data, so a server that sends nothing
 * but control frames (WINDOW_UPDATE, PING) faster than the client parses
 * them holds the call, and the loop, for as long as it goes on (the curl
 * tool hangs the same way).  No option of libcurl's bounds that loop
 * (CURLOPT_MAX_RECV_SPEED_LARGE counts body bytes, between calls;
 * CURLOPT_BUFFERSIZE is not its buffer; CURLOPT_TIMEOUT_MS is checked
 * after it), nghttp2's options are libcurl's to set, and no callback of
 * the program's runs inside it.
 *
 * So the binding watches its calls into libcurl from a thread of its own
 * (started with the first transfer, asleep while none is in flight,
 * joined by uvp_curl_close).  When one call has run `ms` milliseconds
 * and goes on reading a TCP connection, 4 MiB of it since then and
 * still 64 KiB every 20 ms (the watchdog looks that often; a call that
 * is not flooded reads at most 3.2 MB per transfer it serves with libcurl
 * 7.88's default buffers), the binding shuts that connection down (shutdown(2):
 * the descriptor stays libcurl's); libcurl's read then fails once the bytes
 * already received are read (at most the socket's receive buffer), the
 * call returns, and the loop goes on.  Every transfer on that connection
 * (HTTP/2 streams share one) rejects with UV_ETIMEDOUT, its payload
 * keeping libcurl's code and saying "the binding ended the connection:
 * one call into libcurl read it for N ms without returning".  Other
 * connections are not touched, and a call that takes long for another
 * reason (a callback of the program's, a lookup's thread being joined)
 * reads nothing, or less, and is let be (test-curl
 * test_busy_limit_spares_slow_callback: a write callback that blocks
 * 1.5 s).  What the binding cannot tell from a flood is one call that
 * really reads that much for that long: dozens of HTTP/2 streams of one
 * connection downloading at once faster than the program takes the
 * bytes, or a CURLOPT_BUFFERSIZE of megabytes with callbacks slow enough
 * to keep one call going past the limit; such a program raises the
 * limit or sets 0.
 *
 * So one call holds the loop at most `ms`, plus the looks it takes to see
 * 4 MiB of the flood read (one or two here, 20 ms each; 0.4 to 1.3 s
 * under valgrind), plus the time to read what was already queued; a
 * deadline or a timeout that fell due meanwhile acts as the call
 * returns.  A flood the client catches up with now and then returns from
 * its calls by itself, and the loop, its deadlines and timeouts run
 * between them.  With the default the flooded call returns, and the
 * other transfers go on, 120-150 ms after the flood begins on a quiet
 * machine; on a loaded one, once the loop thread has had the CPU time
 * for the limit's share and those reads (0.8-2.2 s with ASan at a load
 * of 20-30 on two cores, 20-30 ms of it the thread's).  test-curl
 * test_h2_flood_window_update and _ping time the loop's longest hold
 * with a timer of its own and bound the loop thread's CPU time in it to
 * 250 ms (with a limit of 1 s the hold was 1.02 s).  The flooded
 * transfer ends then, or by its deadline when calls returned first
 * (test-e2e-fanout-faults test_h2_flood, uvp-fanout -d 3000).  The
 * watchdog wakes every ms/4 + 1 ms while transfers are in flight (38
 * times a second with the default), which costs nothing
 * measurable in bench/run-curl (CPU per run unchanged against a limit of
 * 1 s).  A PING
 * flood dense enough to put over 1000 PINGs in one of libcurl's 32 KiB
 * reads is refused by nghttp2 itself (NGHTTP2_ERR_FLOODED: UV_EPROTO at
 * once).  A call's work is bounded otherwise in libcurl 7.88 (100 reads
 * of at most CURLOPT_BUFFERSIZE for HTTP/1, up to the first data of the
 * stream for HTTP/2): a well-behaved server's calls read far less than
 * 4 MiB past the limit, however long a loaded machine makes them (none
 * was cut in runs of 10 000 requests, and of 300 downloads of 10 MB over
 * HTTP/1.1 and HTTP/2, where calls took up to 1.4 s at a load of 12).
 * Linux only (it reads TCP_INFO and FIONREAD); elsewhere this call sets
 * the value and nothing watches.  Loop thread.  Errors: UV_EINVAL (NULL
 * c, or closed). */
UVP_CURL_EXTERN int uvp_curl_set_busy_limit(uvp_curl_t *c, uint64_t ms);

/** Print every transfer in flight, one per line, as (the core's
 * uvp_ctx_dump_tasks says more: what waits on each, its group, deadline)
 *   HTTP GET https://example.org/ for 1234 ms (promise at app.c:12)
 * (the method and URL as libcurl will send them: CURLINFO_EFFECTIVE_METHOD
 * and _EFFECTIVE_URL), oldest first.  Returns how many, or UV_EINVAL. */
UVP_CURL_EXTERN int uvp_curl_dump(uvp_curl_t *c, FILE *stream);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_CURL_H */

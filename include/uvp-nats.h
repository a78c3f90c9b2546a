/** @file
 * uvp-nats — NATS requests, publishes and subscriptions as uvp promises,
 * through nats.c (libnats) on the context's own loop.
 *
 * A binding, not part of uvp's core: a library of its own (libuvp-nats,
 * pkg-config name uvp-nats), built when libnats >= 3.4 is found (Debian:
 * libnats-dev).  It drives each connection with nats.c's event-loop
 * interface (natsOptions_SetEventLoop) through four callbacks of its own,
 * not nats.c's shipped adapters/libuv.h (docs/internals/nats.md §21 says why).
 * JetStream (streams, pull consumers, key-value buckets, durable
 * promises) is uvp-nats-js.h, in the same library.
 *
 * @code
 *   uvp_nats_connect(ctx, &(uvp_nats_connect_opts_t){.url = url}, &cp);
 *   ...  // cp fulfils with a uvp_nats_t * (yours: uvp_nats_close it)
 *   uvp_nats_request(nc, "fan.work", "hi", 2, NULL, &p);
 *   ...  // p fulfils with the reply, a natsMsg * the promise owns
 *   uvp_nats_close(nc);                 // then run the loop
 *   nats_CloseAndWait(0);               // after the last connection
 * @endcode
 *
 * Everything here is called on the context's loop thread, as uvp's
 * wrappers are, and every promise settles there.  The rules of uvp.h for
 * wrappers hold (a promise only the binding settles, cancellation,
 * teardown, keeping uv_run() going only while something waits), with what
 * this header adds.
 *
 * Threads.  nats.c works on threads of its own, and calls the binding from
 * them; the binding never calls the program from them.
 *  - nats_Open (called by the first uvp_nats_connect; the program may call
 *    it first) starts three threads for the process: timers (PINGs, the
 *    reconnect wait), asynchronous callbacks (disconnected, reconnected,
 *    closed, errors) and garbage collection.  They live until
 *    nats_CloseAndWait, which the program calls after its last
 *    connection is closed (as curl_global_cleanup for libcurl), with no
 *    loop thread inside nats.c then.
 *  - A connection starts none (SendAsap, the default), one flusher thread
 *    with UVP_NATS_NO_SEND_ASAP, a reconnect thread while reconnecting and a
 *    drain thread while a subscription drains.
 *  - Each connection has one asynchronous subscription, its reply inbox
 *    (`_INBOX.RANDOM.*`), and so one delivery thread.  Subscriptions made
 *    with uvp_nats_subscribe are synchronous: no thread; they are polled
 *    on the loop after each read.
 *  - uvp_nats_connect, uvp_nats_flush and uvp_nats_close run nats.c's
 *    blocking calls on libuv's thread pool (one pool thread for the call's
 *    length), so the loop is never blocked by them.
 *  - nats.c calls the binding's event-loop callbacks (attach, read, write,
 *    detach) from whichever of these threads is at work: the pool thread
 *    connecting or closing, the reconnect thread, the timer thread that
 *    sends PINGs, and the loop thread itself (inside a read or a publish).
 *    On the loop thread with nothing queued they act at once; otherwise
 *    they go, in order, through one locked queue and one uv_async_t per
 *    connection, which is unreferenced while nothing waits.  The inbox's
 *    replies and the connection's events reach the loop the same way.
 *
 * Errors.  Calls return 0 or a negative code: libuv's, uvp's, or the
 * binding's own below (UVP_NATS_ENORESPONDERS, ...); uvp_nats_strerror
 * and uvp_nats_err_name know them all.  nats.c's natsStatus values are
 * mapped (uvp_nats_code). */
#ifndef UVP_NATS_H
#define UVP_NATS_H

#include <nats/nats.h>
#include <stdio.h>
#include <uvp.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define UVP_NATS_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define UVP_NATS_EXTERN __attribute__((visibility("default")))
#else
#define UVP_NATS_EXTERN
#endif

/** @defgroup nats uvp-nats
 * NATS requests and subscriptions as uvp promises: see uvp-nats.h. */

/** @defgroup nats_errors Error codes
 * @ingroup nats */
/** @{ */

/** The binding's own codes, below uvp's (-30001...), uvp-curl's (-32001...)
 * and libuv's. */
#define UVP_NATS_ERRNO_MAP(XX)                                                 \
  XX(ENORESPONDERS, -33001, "no responders for the request's subject")         \
  XX(EDISCONNECTED, -33002, "the connection to the NATS server dropped")       \
  XX(ENATS, -33003, "NATS error")                                              \
  XX(EJETSTREAM, -33004, "JetStream API error")                                \
  XX(EREVISION, -33005, "the key's last revision is not the one expected")

/** The codes of UVP_NATS_ERRNO_MAP as constants: UVP_NATS_ENORESPONDERS... */
typedef enum {
#define XX(name, val, msg) UVP_NATS_##name = (val),
  UVP_NATS_ERRNO_MAP(XX)
#undef XX
      UVP_NATS_ERRNO_MAX_ = -33000
} uvp_nats_errno_t;

/** @name uvp_nats_strerror, uvp_nats_err_name
 * @{ */
/** Message / symbolic name ("ENORESPONDERS", "ETIMEDOUT") of a binding code
 * or of any code uvp_strerror / uvp_err_name know.  Never NULL. */
UVP_NATS_EXTERN const char *uvp_nats_strerror(int code);
UVP_NATS_EXTERN const char *uvp_nats_err_name(int code);
/** @} */

/** The code for a natsStatus: NATS_OK 0; NATS_NO_SERVER (nobody listens)
 * UV_ECONNREFUSED; NATS_TIMEOUT UV_ETIMEDOUT; NATS_NO_MEMORY UV_ENOMEM;
 * NATS_INVALID_ARG, NATS_INVALID_SUBJECT UV_EINVAL; NATS_MAX_PAYLOAD
 * UV_EMSGSIZE; NATS_INSUFFICIENT_BUFFER (the reconnect buffer is full)
 * UV_ENOBUFS; NATS_CONNECTION_CLOSED UVP_ECLOSED;
 * NATS_CONNECTION_DISCONNECTED UVP_NATS_EDISCONNECTED; NATS_NO_RESPONDERS
 * UVP_NATS_ENORESPONDERS; NATS_NOT_PERMITTED UV_EACCES;
 * NATS_HEADERS_NOT_SUPPORTED, NATS_NO_SERVER_SUPPORT UV_ENOTSUP;
 * NATS_SSL_ERROR, NATS_PROTOCOL_ERROR UV_EPROTO; anything else
 * UVP_NATS_ENATS. */
UVP_NATS_EXTERN int uvp_nats_code(natsStatus s);
/** @} */

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

/** @defgroup nats_conn Connections
 * @ingroup nats */
/** @{ */

/** A connection: see uvp_nats_connect. */
typedef struct uvp_nats_s uvp_nats_t;

enum {
  /** Leave nats.c's flusher on (natsOptions_SetSendAsap(false)): every
   * publish then waits up to 1 ms for more to send with it, on the
   * flusher's thread (better under a burst of thousands, a millisecond
   * more per round trip otherwise).  Default: off, the loop writes what a
   * loop turn published in its own write event. */
  UVP_NATS_NO_SEND_ASAP = 1,
  /** When the connection drops, reject every request in flight at once
   * with UVP_NATS_EDISCONNECTED (for a caller that retries), instead of
   * leaving them to their timeouts across nats.c's reconnect. */
  UVP_NATS_FAIL_ON_DISCONNECT = 2
};

/** What happened to a connection (uvp_nats_event_cb). */
typedef enum {
  UVP_NATS_DISCONNECTED = 1,  /**< the socket dropped; nats.c reconnects */
  UVP_NATS_RECONNECTED = 2,   /**< connected again; the inbox and the
                                   subscriptions were sent again */
  UVP_NATS_CLOSED = 3,        /**< closed for good (reconnect attempts used
                                   up): everything waiting rejected with
                                   UVP_ECLOSED; uvp_nats_close it still */
  UVP_NATS_SLOW_CONSUMER = 4, /**< a subscription's pending limits were
                                  passed: nats.c dropped messages (counted
                                  in uvp_nats_stats' dropped) */
  UVP_NATS_DENIED = 5         /**< the server refused a permission ("Permissions
                                   Violation for Publish to ..." or "for
                                   Subscription to ..."): what it hit has ended
                                   with UV_EACCES (requests to that subject, or
                                   all of them for the inbox's subscription; the
                                   waits of that subscription), the connection
                                   goes on; uvp_nats_denied says the words */
} uvp_nats_event_t;

/** Told of a connection's events, on the loop thread (nats.c reports them
 * on its asynchronous-callback thread; the binding passes them on through
 * its queue).  It may call any uvp and uvp_nats function except
 * uvp_nats_close of this connection (defer that to a promise's
 * handler). */
typedef void (*uvp_nats_event_cb)(void *arg, uvp_nats_t *nc,
                                  uvp_nats_event_t event);

/** Options of uvp_nats_connect. */
typedef struct uvp_nats_connect_opts_s {
  const char *url;      /**< "nats://127.0.0.1:4222" (NULL: that); a
                             comma-separated list is several servers */
  natsOptions *options; /**< optional: the program's nats.c options
                             (reconnect wait and attempts, PING interval,
                             TLS, credentials, name...), handed over: the
                             binding owns it from the call on (destroys it,
                             on error too) and sets its event loop,
                             SendAsap, its callbacks and url (if set) on
                             it.  NULL: nats.c's defaults */
  int flags; /**< UVP_NATS_NO_SEND_ASAP, UVP_NATS_FAIL_ON_DISCONNECT */
  uvp_nats_event_cb on_event; /**< optional */
  void *arg;                  /**< on_event's first argument */
} uvp_nats_connect_opts_t;

/** @name uvp_nats_connect, uvp_nats_connect_at
 * @{ */
/** Connect to a NATS server: natsConnection_Connect runs on a thread of
 * the binding's (it blocks until the server's PONG), the loop goes on.
 * The connect is bounded: past UVP_NATS_CONNECT_TIMEOUT_DEFAULT (or
 * uvp_nats_connect_more's connect_timeout_ms) for each server of the
 * list, and UVP_NATS_CONNECT_SLACK_MS more, it rejects with UV_ETIMEDOUT
 * ("the server did
 * not complete the NATS handshake within N ms"), even where nats.c 3.4
 * would wait for ever (a server that sends INFO and never answers the
 * PING, or announces TLS and never speaks it).  *out gets
 * one reference to a promise that fulfils with the connection, a
 * uvp_nats_t * that is the program's from then on (no destructor: give it
 * to uvp_nats_close).  Rejects with UV_ECONNREFUSED (no server answered,
 * after nats.c's attempts), UV_ENOTSUP (the server has no headers, before
 * 2.2: deadlines and no-responders need them), UV_ETIMEDOUT, UV_EINVAL (a
 * URL nats.c refuses), UV_EACCES (the server refused the credentials:
 * "Authorization Violation"; with nats.c before 3.8.0, twice, a refusal
 * being tried once more, since that nats.c drops 1 nkey signature in
 * 256), UV_EPROTO (TLS: a certificate not trusted, a
 * failed handshake), UV_ENOMEM or another mapped code (uvp_nats_code); the
 * rejection's payload is then nats.c's words for it (a NUL-terminated
 * string, owned by the promise; NULL if it said none).
 * Cancel-safe: cancelling (or the scope's deadline, or uvp_ctx_close)
 * rejects at once, and the loop goes on without the connect (uv_run and
 * uv_loop_close do not wait for it): its thread runs on until nats.c
 * returns (the peer closing, at the latest), then closes and frees what
 * it made.  Such a thread holds nats.c's library, so a later
 * nats_CloseAndWait(0) waits for it: give nats_CloseAndWait a timeout.
 * `opts` may be NULL.  Threads: nats.c's connect runs on a detached
 * thread of the binding's, and its attach reaches the loop through the
 * queue; the promise settles on the loop thread.  Errors: UV_EINVAL (NULL ctx
 * or out), UVP_ECLOSED, UV_ENOMEM; nothing started then (`opts->options` is
 * destroyed on every error: it is the binding's from the call on). */
#define uvp_nats_connect(...)                                                  \
  uvp_nats_connect_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_connect_at(uvp_ctx_t *ctx,
                                        const uvp_nats_connect_opts_t *opts,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */

/** The longest inbox prefix uvp_nats_connect_more takes. */
#define UVP_NATS_INBOX_PREFIX_MAX 64

/** Options of uvp_nats_connect_more beyond uvp_nats_connect_opts_t (a
 * struct of its own: the older one keeps its size). */
typedef struct uvp_nats_connect_more_s {
  const char *inbox_prefix;    /**< the subject every inbox of the connection
                                    starts with (requests' replies, pulls,
                                    watches): "_INBOX_coord" makes them
                                    "_INBOX_coord.<nuid>", which a server's
                                    permissions can give this user alone
                                    (guide-nats.md, "Trust"); no wildcard, at
                                    most UVP_NATS_INBOX_PREFIX_MAX bytes; also
                                    set on nats.c's options
                                    (natsOptions_SetCustomInboxPrefix, which
                                    the binding cannot read back).  NULL:
                                    "_INBOX" */
  uint64_t connect_timeout_ms; /**< how long nats.c may take to connect to
                                    each server of the list, TCP and TLS
                                    handshakes, INFO and the PONG to its
                                    first PING included (set on nats.c's
                                    options: natsOptions_SetTimeout, which
                                    the binding cannot read back); at most
                                    UVP_NATS_CONNECT_TIMEOUT_MAX.  0:
                                    UVP_NATS_CONNECT_TIMEOUT_DEFAULT,
                                    nats.c's own */
} uvp_nats_connect_more_t;

/** nats.c's own connect timeout a server, 2 s: connect_timeout_ms 0. */
#define UVP_NATS_CONNECT_TIMEOUT_DEFAULT 2000u
/** What the connect's bound adds to nats.c's timeouts: 5 s, for a TLS
 * handshake (which nats.c 3.4 does not time) and a loaded machine. */
#define UVP_NATS_CONNECT_SLACK_MS 5000u
/** The longest connect_timeout_ms: one hour. */
#define UVP_NATS_CONNECT_TIMEOUT_MAX 3600000u

/** @name uvp_nats_connect_more, uvp_nats_connect_more_at
 * @{ */
/** uvp_nats_connect with `more` (may be NULL: uvp_nats_connect).  Errors:
 * those of uvp_nats_connect, and UV_EINVAL for a prefix or a timeout it
 * refuses. */
#define uvp_nats_connect_more(...)                                             \
  uvp_nats_connect_more_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_connect_more_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *opts,
                         const uvp_nats_connect_more_t *more,
                         uvp_promise_t **out, const char *file, int line);
/** @} */

/** Credentials and TLS for uvp_nats_options_auth: each field a string the
 * program keeps (read during the call only); NULL or "" takes its
 * environment variable, named after the field (NATS_USER, ...), so that
 * secrets stay out of a program's arguments (ps shows them). */
typedef struct uvp_nats_auth_s {
  const char *user;     /**< NATS_USER, with password */
  const char *password; /**< NATS_PASSWORD */
  const char *token;    /**< NATS_TOKEN */
  const char *creds;    /**< NATS_CREDS: a .creds file (user JWT and nkey
                             seed), read by nats.c at each connect */
  const char *nkey;     /**< NATS_NKEY: a file holding a user's nkey seed
                             and its public key (`nk -gen user -pubout`
                             writes both; nats.c cannot derive the key) */
  const char *ca;       /**< NATS_CA: CA certificates (PEM) to trust */
  const char *cert;     /**< NATS_CERT: the client's certificate chain
                             (PEM), with key */
  const char *key;      /**< NATS_KEY: the client's private key (PEM) */
  const char *tls_name; /**< NATS_TLS_NAME: the name the server's
                             certificate must carry */
} uvp_nats_auth_t;

/** Put credentials and TLS on nats.c's options `no` (the program's, before
 * it gives them to uvp_nats_connect as opts->options): each field of
 * `auth`, or its environment variable's value (`auth` NULL: the
 * environment's only), with nats.c's setters: natsOptions_SetUserInfo,
 * SetToken, SetUserCredentialsFromFiles, SetNKeyFromSeed, and for any of
 * ca, cert, key, tls_name SetSecure, then LoadCATrustedCertificates,
 * LoadCertificatesChain, SetExpectedHostname.  Nothing set leaves `no` as
 * it was.  Files are read now (the nkey's, the certificates) or looked at
 * now (the .creds file, which nats.c reads at the connect).  Not a
 * promise: it returns when done (file reads on the calling thread, which
 * need not be a loop's).  Errors: 0, or UV_EINVAL (NULL `no`; cert
 * without key or key without cert; a nkey file with no public key), a
 * file's error (UV_ENOENT, UV_EACCES: a .creds or nkey file it cannot
 * read), or nats.c's status mapped (uvp_nats_code: UV_EPROTO for a
 * certificate or key nats.c cannot load, whose words are then
 * nats_GetLastError(NULL) on the calling thread).  On an error, `what`
 * (may be NULL) gets the option at fault, a static string: the field's
 * name ("creds", "tls_name"; for an incomplete pair the one missing) or
 * the environment variable's ("NATS_CREDS") when the value came from
 * there; NULL on success.  `no` may then hold some of the options: the
 * program destroys it. */
UVP_NATS_EXTERN int uvp_nats_options_auth(natsOptions *no,
                                          const uvp_nats_auth_t *auth,
                                          const char **what);
/** @name uvp_nats_open, uvp_nats_open_at
 * @{ */
/** Connect as uvp_nats_connect does, but hand the connection over at once
 * (*out, the program's from the call on: give it to uvp_nats_close) and
 * let the program use it before it is up, as a client with an offline
 * queue does.  Until the connect has returned:
 * - uvp_nats_request, uvp_nats_subscribe, uvp_nats_serve, uvp_nats_next
 *   and uvp_nats_flush are taken as when connected.  Requests keep their
 *   timeouts, deadlines and cancel running meanwhile, and a request's
 *   Uvp-Timeout-Ms says what is left when it is sent.  Once connected,
 *   the subscriptions (services' too) are made, then the requests are
 *   sent in the order they were made, then the flushes start: a flush's
 *   promise asked after uvp_nats_serve fulfils once the server has the
 *   service's subscription.
 * - uvp_nats_publish and uvp_nats_drain return UV_ENOTCONN (nothing is
 *   kept for a fire-and-forget publish); uvp_nats_connection returns NULL.
 * If the connect fails (the codes uvp_nats_connect rejects with), or the
 * context closes meanwhile (UV_ECANCELED), everything asked meanwhile ends
 * as at uvp_nats_close, but with that code: requests, waits and flushes
 * reject with it, subscriptions and services are freed (do not use
 * them).  The connection then takes nothing new (UVP_ECLOSED); it is
 * still the program's, to uvp_nats_close.  uvp_nats_close while it
 * connects rejects what was asked with UV_ECANCELED, and the connection
 * made is closed when the connect returns.  While connecting, the
 * connect is work in flight: uv_run() goes on for it, and the task dump
 * shows "NATS connect".  Not a promise: nothing to cancel (uvp_nats_close
 * stops it; what was asked meanwhile is each cancel-safe as when
 * connected).  Threads: as uvp_nats_connect; what was asked meanwhile is
 * sent, or rejected, on the loop thread when the connect's pool job
 * returns.  Errors: UV_EINVAL
 * (NULL ctx or out), UVP_ECLOSED, UV_ENOMEM, a code nats.c gives for the
 * options (a URL it refuses: UV_EINVAL); nothing started then, and
 * `opts->options` is destroyed on every error. */
#define uvp_nats_open(...) uvp_nats_open_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_open_at(uvp_ctx_t *ctx,
                                     const uvp_nats_connect_opts_t *opts,
                                     uvp_nats_t **out, const char *file,
                                     int line);
/** @} */

/** @name uvp_nats_open_more, uvp_nats_open_more_at
 * @{ */
/** uvp_nats_open with `more` (may be NULL: uvp_nats_open): an inbox
 * prefix, the connect's timeout.  (A prefix set on nats.c's options with
 * natsOptions_SetCustomInboxPrefix cannot be read back by the binding:
 * give it here, or the connection's inbox is "_INBOX", which a server
 * granting a user only its own prefix refuses: UVP_NATS_DENIED.)  Ownership,
 * threads and errors: those of uvp_nats_open, and UV_EINVAL for a prefix or a
 * timeout it refuses. */
#define uvp_nats_open_more(...)                                                \
  uvp_nats_open_more_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_open_more_at(uvp_ctx_t *ctx,
                                          const uvp_nats_connect_opts_t *opts,
                                          const uvp_nats_connect_more_t *more,
                                          uvp_nats_t **out, const char *file,
                                          int line);
/** @} */

/** nats.c's words for why the connect of uvp_nats_open's connection failed
 * ("Authorization Violation", a TLS error, the binding's own "the server
 * did not complete the NATS handshake within N ms"), which the codes that
 * what was asked meanwhile rejects with cannot say.  Owned by the
 * connection: valid until uvp_nats_close.  NULL for NULL, while it
 * connects, when it connected, or when nats.c said nothing.  Loop thread
 * only. */
UVP_NATS_EXTERN const char *uvp_nats_connect_error(const uvp_nats_t *nc);

/** How many connects the binding abandoned (past their bound, cut, or
 * closed while connecting) whose threads are still inside nats.c: each
 * ends once nats.c returns, the peer closing at the latest.  A program
 * that wants nats.c's threads and memory gone at its exit (a leak
 * checker's run) waits for 0 before nats_CloseAndWait, which cannot see
 * them: a connect holds nats.c's library until just before it returns.
 * Any thread. */
UVP_NATS_EXTERN size_t uvp_nats_connects_abandoned(void);

/** Close: reject every request in flight and every subscription's waits
 * with UV_ECANCELED, unsubscribe, and run natsConnection_Close on the
 * thread pool (on the loop thread it would stall the loop for up to
 * 500 ms: it flushes, and waits for a PONG only the loop can read).
 * nats.c's detach then reaches the loop through the queue;
 * natsConnection_Destroy runs only once the loop has applied it and
 * closed the poll handle, and nats.c's closed callback and the inbox's
 * delivery thread have said their last.  The connection's memory goes
 * once the loop has run its close callbacks: run the loop before
 * uv_loop_close(), as for a libuv handle.  Subscriptions of this
 * connection are freed with it (do not use them after).  Any time on
 * the loop thread, before or after uvp_ctx_close, but not from inside
 * uvp_nats_event_cb.  Not a promise: nothing to cancel.  Threads:
 * natsConnection_Close runs on a pool thread, nats.c's detach and closed
 * callback (its asynchronous thread) and the inbox's last word (its
 * delivery thread) reach the loop through the queue.  A connection from
 * uvp_nats_open may be closed while it connects, and after its connect
 * failed (once: its memory goes then).  Errors: UV_EINVAL (NULL, already
 * closed or closing, or uvp_nats_connect's connection still connecting:
 * it is not the program's yet). */
UVP_NATS_EXTERN int uvp_nats_close(uvp_nats_t *nc);

/** The server's words for the last permission it refused on this
 * connection (UVP_NATS_DENIED), with the subject: "Permissions Violation
 * for Publish to \"fan.work\"".  Owned by the connection: valid until the
 * next UVP_NATS_DENIED or uvp_nats_close.  NULL for NULL or none yet.
 * Loop thread only. */
UVP_NATS_EXTERN const char *uvp_nats_denied(const uvp_nats_t *nc);

/** nats.c's connection, for the calls the binding does not wrap
 * (natsConnection_GetConnectedUrl, _GetServerId, _GetRTT is not one:
 * it blocks).  Do not close, destroy or drain it, nor call its blocking
 * calls (natsConnection_Request, _Flush, _FlushTimeout) on the loop
 * thread: they stall the loop for their whole timeout.  NULL for NULL. */
UVP_NATS_EXTERN natsConnection *uvp_nats_connection(const uvp_nats_t *nc);

/** @name uvp_nats_flush, uvp_nats_flush_at
 * @{ */
/** Fulfils (value NULL) when the server has answered a PING sent after
 * everything published so far: natsConnection_FlushTimeout on the thread
 * pool (the only thread nats.c blocks) while the loop reads the PONG.  Its
 * timeout is the scope's deadline
 * if any, else 30 s.  Rejects with UV_ETIMEDOUT, UVP_ECLOSED,
 * UVP_NATS_EDISCONNECTED.  Cancel-safe: rejects at once, the flush on its
 * pool thread runs to its end.  Errors: UV_EINVAL, UVP_ECLOSED (the
 * connection is closing), UV_ENOMEM. */
#define uvp_nats_flush(...) uvp_nats_flush_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_flush_at(uvp_nats_t *nc, uvp_promise_t **out,
                                      const char *file, int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Publish and request                                                      */
/* ------------------------------------------------------------------------ */

/** @defgroup nats_pub Publish and request
 * @ingroup nats */
/** @{ */

/** The header a request carries: the milliseconds its caller still waits,
 * relative (two machines' clocks differ), as gRPC's grpc-timeout. */
#define UVP_NATS_TIMEOUT_HEADER "Uvp-Timeout-Ms"
/** A request's timeout without opts.timeout_ms nor a deadline: 30 s. */
#define UVP_NATS_REQUEST_TIMEOUT_DEFAULT 30000u

/** @name Trace context (W3C Trace Context in NATS headers)
 * A request made under a trace context (uvp_tracectx_get finds one in the
 * current scope: uvp/tracing.h) is a CLIENT span, child of that context,
 * named "request SUBJECT"; the request carries `traceparent` (the span's
 * own context: "00-TRACE-SPAN-FLAGS", 55 bytes, so the server's span is
 * its child) and, if the scope has one, `tracestate` (at most
 * UVP_TRACESTATE_MAX bytes).  The span ends when the request does: the
 * reply (status 0, or the Uvp-Error code), the timeout, no responders,
 * the cut (its code), the connection's close.  These headers replace any
 * the program put in opts.headers under the same names; without a trace
 * context nothing is added (no header, no span: one NULL compare).
 * A service (uvp_nats_serve) given a request whose `traceparent` is
 * valid serves it under a SERVER span named "serve SUBJECT" whose parent
 * it names: begun when the request arrives, entered (uvp_span_enter's
 * way, with the request's `tracestate` if valid) before the fiber or the
 * start callback runs, so what they begin (a uvp-curl transfer, a nested
 * request) is its child; ended when the reply goes (its status), or when
 * the request goes unreplied (UV_ECANCELED).  A `traceparent` that is
 * malformed (W3C's rules: uvp_tracectx_parse), given twice, or with
 * all-zero ids is ignored, as if absent; a malformed `tracestate` is
 * dropped alone; never an error to the peer.  Header names are exact
 * (NATS headers are case-sensitive): lowercase, as W3C's and
 * OpenTelemetry's propagators write them.
 * JetStream (uvp-nats-js.h): uvp_nats_js_publish under a trace context is
 * a PRODUCER span ("publish SUBJECT", ended by the stream's
 * acknowledgement) whose `traceparent` the stream stores with the message;
 * uvp_nats_js_serve serves a message carrying one under a CONSUMER span
 * ("consume SUBJECT"), ended when the message is acknowledged, given back
 * or terminated: each redelivery is a new CONSUMER span of the same trace.
 * JetStream's API calls (streams, consumers, KV) carry no trace context,
 * nor does uvp_nats_publish; uvp_nats_next hands a message's headers over
 * as they came (uvp_tracectx_parse reads one).
 * @{ */
/** The header a request's trace context travels in. */
#define UVP_NATS_TRACEPARENT_HEADER "traceparent"
/** The header its vendors' state travels in, beside it. */
#define UVP_NATS_TRACESTATE_HEADER "tracestate"
/** @} */

/** Publish `len` bytes of `data` on `subject`, with reply subject `reply`
 * (NULL: none) and `headers` ("Name: value" strings, NULL-terminated; NULL:
 * none), all copied.  Core NATS publishing is fire and forget: 0 says nats.c
 * took it (the loop writes it in its next write event; while reconnecting
 * it goes to nats.c's reconnect buffer), not that anyone got it.
 * Errors, at once and with nothing sent: UV_EINVAL (NULL nc or subject, a
 * subject with a space, a control character or an empty token, a
 * wildcard token "*" or ">" in subject or reply, a header without ':'),
 * UV_EMSGSIZE (len, or len with the headers, over the server's max
 * payload, natsConnection_GetMaxPayload, 1 MB by default), UV_ENOBUFS (the
 * reconnect buffer is full), UVP_ECLOSED (closing or closed), UV_ENOTCONN
 * (uvp_nats_open's connection is not up yet), UV_ENOMEM.
 * Not a promise: nothing to cancel.  Threads: the loop thread; nats.c
 * asks, from inside the call, to poll for writing (applied at once). */
UVP_NATS_EXTERN int uvp_nats_publish(uvp_nats_t *nc, const char *subject,
                                     const char *reply, const void *data,
                                     size_t len, const char *const *headers);

enum {
  /** Do not hold the virtual clock (its work in flight is "idle",
   * UVP_INFLIGHT_IDLE) while the request is in
   * flight: under UVP_CLOCK_AUTO the clock may then jump to the next timer
   * or deadline while the reply is on its way (a simulation that wants
   * virtual time to run ahead of the network). */
  UVP_NATS_REQUEST_NO_HOLD = 1,
  /** Send no Uvp-Timeout-Ms header: for a subject that stores what it
   * gets (a JetStream stream, whose messages outlive the request) or
   * that is not a uvp service.  The request's timeout still runs. */
  UVP_NATS_REQUEST_NO_TIMEOUT_HEADER = 2,
  /** Tell the serving side nothing when the request is cancelled: no
   * publish on UVP_NATS_CANCEL_PREFIX (for a subject no uvp service
   * serves, or a program that cancels in bulk and lets the workers' own
   * deadlines end the work). */
  UVP_NATS_REQUEST_NO_CANCEL = 4
};

/** Where a cancelled request tells its service: the request's subject
 * after this prefix ("_UVP.CANCEL.fan.work"), the request's reply subject
 * as the body, its cancel token in UVP_NATS_CANCEL_TOKEN_HEADER, and the
 * cancellation's cause (uvp_cause_format's line, its first 255 bytes) in
 * UVP_NATS_CAUSE_HEADER.  Every instance of a service
 * subscribes to the prefix and its own subject (wildcards included), not
 * in a queue group, so whichever instance took the request hears it. */
#define UVP_NATS_CANCEL_PREFIX "_UVP.CANCEL."
/** The header of a cancel that says why the caller gave up. */
#define UVP_NATS_CAUSE_HEADER "Uvp-Cause"
/** A request that may be cancelled carries a token in
 * UVP_NATS_CANCEL_TOKEN_HEADER: UVP_NATS_CANCEL_TOKEN_LEN lowercase hex
 * digits (128 bits) only the caller can make (a keyed hash of the request
 * under its connection's random key); its cancel carries the same header.
 * A service cuts a request only for a cancel with the request's own token
 * (compared in constant time); any other cancel naming it (no token,
 * another one) is dropped and counted (uvp_nats_serve_stats_ex_t's
 * forged), so that a client who learns a request's reply subject, and may
 * not read the service's subject (the permissions of guide-nats.md's
 * "Trust"), cannot cut it.  A service also takes the token at the end of
 * the reply subject, "<inbox>.<id>.<token>", a cancel then naming that
 * whole subject (the form of the unreleased versions after 0.3.0).  A
 * request with neither (sent with
 * UVP_NATS_REQUEST_NO_CANCEL, a client that is not uvp) carries none. */
#define UVP_NATS_CANCEL_TOKEN_LEN 32
/** The header of a request and of its cancel that holds the cancel token
 * (as in uvp 0.3.0: every service since takes it). */
#define UVP_NATS_CANCEL_TOKEN_HEADER "Uvp-Cancel-Token"

/** Options of uvp_nats_request. */
typedef struct uvp_nats_request_opts_s {
  uint64_t timeout_ms;        /**< the request ends after this (0: 30 s
                                   unless the scope's deadline is nearer) */
  const char *const *headers; /**< "Name: value" strings, NULL-terminated
                                   (copied); NULL: none */
  int flags;                  /**< UVP_NATS_REQUEST_NO_HOLD,
                                   UVP_NATS_REQUEST_NO_TIMEOUT_HEADER,
                                   UVP_NATS_REQUEST_NO_CANCEL */
} uvp_nats_request_opts_t;

/** @name uvp_nats_request, uvp_nats_request_at
 * @{ */
/** Send a request: publish `len` bytes of `data` on `subject` with the
 * reply subject `INBOX.ID` (the connection's one wildcard inbox
 * subscription; replies are matched by id on the loop) and the header
 * Uvp-Timeout-Ms: the smaller of the request's timeout (opts.timeout_ms,
 * else 30 s) and uvp_deadline_left(), in milliseconds (none with
 * UVP_NATS_REQUEST_NO_TIMEOUT_HEADER).  *out gets one
 * reference to a promise that fulfils with the reply, a natsMsg * the
 * promise owns (natsMsg_Destroy is its destructor: subject, data and
 * headers, read with natsMsg_GetData, natsMsgHeader_Get...), or rejects:
 *   the code Uvp-Error names  the reply says the serving side failed
 *                           (uvp_nats_serve: its handler's code; a name
 *                           this library does not know: UV_EPROTO); the
 *                           payload is the reply (natsMsg *, owned: its
 *                           Uvp-Worker header and its body, the message)
 *   UVP_NATS_ENORESPONDERS  nobody subscribed to the subject when the
 *                           request reached the server (its 503 status
 *                           message), at once
 *   UV_ETIMEDOUT            the timeout, or the scope's deadline
 *                           (its work in flight, uvp_inflight_start),
 *                           passed first: the worker that took it may
 *                           have died, or be slow
 *   UV_EBUSY                Uvp-Error: EBUSY, the worker's bound of
 *                           requests waiting was reached
 *                           (uvp_nats_serve): not served, send it again
 *                           or elsewhere
 *   UV_ECANCELED            cancelled, or uvp_nats_close
 *   UVP_NATS_EDISCONNECTED  the connection dropped, with
 *                           UVP_NATS_FAIL_ON_DISCONNECT
 *   UVP_ECLOSED             the connection closed for good, or
 *                           uvp_ctx_close
 * Without UVP_NATS_FAIL_ON_DISCONNECT a request stays across a reconnect
 * until its timeout: its reply may still come, as the inbox subscription
 * is sent again.  A reply that finds no request (late, after any of
 * these; duplicate; not ours) is dropped and counted (uvp_nats_stats'
 * late).  Core NATS delivers a request at most once: a caller that sends
 * a timed out request again may have it served twice.
 * Cancel-safe: cancelling rejects at once and drops the request's entry
 * (the inbox is shared: no UNSUB is sent); what was published stays
 * published.  A request that was sent and is then cut (uvp_promise_cancel,
 * a group's cancel or fail-fast, a race's loser, the scope's deadline,
 * uvp_ctx_close) also tells the serving side, unless
 * UVP_NATS_REQUEST_NO_CANCEL: one publish on UVP_NATS_CANCEL_PREFIX
 * SUBJECT with the reply subject and the cause, which a uvp_nats_serve
 * instance that holds the request turns into a cut of its member ("cancelled
 * by the caller").  That costs one publish per cancel and nothing on the
 * request's own path, and it is at most once, as everything on core NATS:
 * a cancel that crosses the reply, or reaches no one (a worker that is
 * not a uvp service, a lost connection), changes nothing.  Its own
 * timeout, uvp_nats_close, and a dropped connection send no cancel (the
 * worker's own deadline, from Uvp-Timeout-Ms, ends the work then).
 * While a request is in flight the binding keeps uv_run() going and, as
 * work in flight (uvp_inflight_start: also its group waits for it), holds
 * the virtual clock (UVP_CLOCK_AUTO; unless UVP_NATS_REQUEST_NO_HOLD), so
 * a virtual deadline does not jump past a reply on its way.
 * opts.timeout_ms runs on the loop's real clock (uv_now); the scope's
 * deadline on uvp's.  In the task dump a request shows as "NATS request
 * SUBJECT #ID".  Threads: the reply comes on the inbox's delivery thread
 * (nats.c's) and reaches the loop through the queue; a no-responders
 * status the same way; the timeout is a loop timer.  Everything settles
 * on the loop thread.  Errors, at once with nothing sent: those of
 * uvp_nats_publish (a wildcard in subject is UV_EINVAL), UV_EINVAL (NULL
 * out), UV_ENOMEM. */
#define uvp_nats_request(...)                                                  \
  uvp_nats_request_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_request_at(uvp_nats_t *nc, const char *subject,
                                        const void *data, size_t len,
                                        const uvp_nats_request_opts_t *opts,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */

/** The value of header `name` of `msg` (natsMsgHeader_Get's, borrowed from
 * msg), or NULL. */
UVP_NATS_EXTERN const char *uvp_nats_msg_header(natsMsg *msg, const char *name);
/** @} */

/* ------------------------------------------------------------------------ */
/* Subscriptions                                                            */
/* ------------------------------------------------------------------------ */

/** @defgroup nats_sub Subscriptions
 * @ingroup nats */
/** @{ */

/** A subscription: see uvp_nats_subscribe. */
typedef struct uvp_nats_sub_s uvp_nats_sub_t;

/** Subscribe to `subject` (wildcards allowed), in queue group `queue` (NULL:
 * none; the server gives each message to one member of the group).  A
 * synchronous nats.c subscription, polled on the loop after each read: no
 * thread.  Its pending limits (natsSubscription_SetPendingLimits, 65 536
 * messages or 64 MB by default) stay nats.c's: past them nats.c drops
 * messages, counted (uvp_nats_stats' dropped) and told to on_event as
 * UVP_NATS_SLOW_CONSUMER.  *out is yours until uvp_nats_unsubscribe, a
 * completed drain, or uvp_nats_close.  A subscription keeps uv_run()
 * going only while a uvp_nats_next waits.  Not a promise: nothing to
 * cancel.  Threads: none of nats.c's calls the binding for it; the
 * loop's read event puts its messages in nats.c's list.  Errors: UV_EINVAL
 * (NULL, a subject or queue with a space or an empty token), UVP_ECLOSED,
 * UV_ENOMEM, or a mapped nats.c code. */
UVP_NATS_EXTERN int uvp_nats_subscribe(uvp_nats_t *nc, const char *subject,
                                       const char *queue, uvp_nats_sub_t **out);

/** @name uvp_nats_next, uvp_nats_next_at
 * @{ */
/** The next message, in arrival order, as uvp_group_next hands out
 * members: *out gets one reference to a promise that fulfils with a
 * natsMsg * it owns.  Several waits are served in the order they were
 * made.  Rejects with UV_ECANCELED (uvp_nats_unsubscribe, uvp_nats_close),
 * UVP_ECLOSED (the connection closed for good; uvp_ctx_close), UV_EOF
 * (the subscription was drained and is empty), or UV_ETIMEDOUT (the
 * scope's deadline).  Cancel-safe: cancelling stops only that wait; no
 * message is lost (a message is taken from nats.c only for a wait that is
 * still pending).  In the task dump: "NATS next SUBJECT [queue QUEUE]".
 * Threads: the loop thread only (the subscription is polled after each
 * read).  Errors: UV_EINVAL, UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_next(...) uvp_nats_next_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_next_at(uvp_nats_sub_t *sub, uvp_promise_t **out,
                                     const char *file, int line);
/** @} */

/** Unsubscribe (UNSUB) and free: its waits reject with UV_ECANCELED, the
 * messages nats.c held for it are dropped.  Not a promise: nothing to
 * cancel.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_unsubscribe(uvp_nats_sub_t *sub);

/** @name uvp_nats_drain, uvp_nats_drain_at
 * @{ */
/** Drain (natsSubscription_Drain: UNSUB, then what the server had already
 * sent still arrives and is handed out by uvp_nats_next): *out fulfils
 * (value NULL) once the subscription is empty, and the subscription is then
 * freed (its later waits reject with UV_EOF before; do not use it after).
 * nats.c completes a synchronous subscription's drain only inside
 * natsSubscription_NextMsg, so while draining the binding polls it every
 * 10 ms on a timer, which may wait there up to 1 ms.  Cancel-safe:
 * cancelling stops the wait, not the drain.  Threads: nats.c's drain
 * thread flushes the UNSUB (the loop reads the PONG); completion is seen
 * on the loop.  Errors: UV_EINVAL, UV_EALREADY (draining), UVP_ECLOSED,
 * UV_ENOTCONN (uvp_nats_open's connection is not up yet), UV_ENOMEM. */
#define uvp_nats_drain(...) uvp_nats_drain_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_drain_at(uvp_nats_sub_t *sub, uvp_promise_t **out,
                                      const char *file, int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Serving: a worker in the library                                         */
/* ------------------------------------------------------------------------ */

/** @defgroup nats_serve Serving
 * @ingroup nats */
/** @{ */

/** A service: see uvp_nats_serve. */
typedef struct uvp_nats_svc_s uvp_nats_svc_t;

/** The header of a reply whose handler failed: the code's name
 * ("ETIMEDOUT", uvp_nats_err_name); the body is its message. */
#define UVP_NATS_ERROR_HEADER "Uvp-Error"
/** The header every reply of a service carries: "HOST:PID" (or
 * uvp_nats_serve_opts_t's worker). */
#define UVP_NATS_WORKER_HEADER "Uvp-Worker"
/** The longest Uvp-Timeout-Ms a service accepts: a day. */
#define UVP_NATS_TIMEOUT_MAX 86400000u

/** A request being served: the argument of the fiber or start callback,
 * valid until the member it starts has settled. */
typedef struct uvp_nats_served_s {
  natsMsg *msg;         /**< the request (borrowed): data, headers, reply */
  uvp_nats_svc_t *svc;  /**< the service */
  void *arg;            /**< uvp_nats_serve_opts_t's arg */
  uint64_t timeout_ms;  /**< what Uvp-Timeout-Ms said (or the default) */
  uint64_t deadline_ms; /**< the deadline the member got: timeout_ms less
                             the margin and the time it waited to start */
} uvp_nats_served_t;

/** Starts serving a request: store the promise in *out (one reference, the
 * service's) and return 0, or return a negative code (replied as a
 * failure). */
typedef int (*uvp_nats_serve_start_cb)(uvp_nats_served_t *req,
                                       uvp_promise_t **out);

/** Options of uvp_nats_serve. */
typedef struct uvp_nats_serve_opts_s {
  uvp_fiber_fn fiber; /**< each request runs as a fiber, fiber(req) with a
                           uvp_nats_served_t *, spawned with the context's
                           fiber mode (uvp_ctx_set_fiber_mode: compact
                           fibers suit thousands of requests) */
  uvp_nats_serve_start_cb start; /**< or start(req, &p), if fiber is NULL */
  void *arg;                     /**< the served struct's arg */
  size_t limit;                  /**< requests served at once; 0: no limit */
  uint64_t margin_ms; /**< taken off Uvp-Timeout-Ms for the way back; 0:
                           10 ms */
  uint64_t default_timeout_ms; /**< without Uvp-Timeout-Ms; 0: 30 s */
  const char *worker; /**< Uvp-Worker's value (copied); NULL: host:pid */
} uvp_nats_serve_opts_t;

/** Counters of a service (uvp_nats_serve_stats). */
typedef struct uvp_nats_serve_stats_s {
  uint64_t received; /**< requests taken from the subscription */
  uint64_t served;   /**< started (fiber spawned, start called) */
  uint64_t replied;  /**< replies sent, with a value or Uvp-Error */
  uint64_t failed;   /**< of those, Uvp-Error replies of failed members */
  uint64_t expired;  /**< dropped unserved: the deadline passed while they
                          waited under the limit (no reply) */
  uint64_t bad;      /**< answered Uvp-Error EPROTO (a bad Uvp-Timeout-Ms)
                          or ETIMEDOUT (Uvp-Timeout-Ms at or below the
                          margin), unserved */
  uint64_t no_reply; /**< served, but the request had no reply subject */
} uvp_nats_serve_stats_t;

/** All the counters of a service (uvp_nats_serve_stats_ex): those of
 * uvp_nats_serve_stats, and those of its bound, its callers' cancels and
 * its drain's deadline.  A struct of its own, so that the older one keeps
 * its size for the programs built with it. */
typedef struct uvp_nats_serve_stats_ex_s {
  uvp_nats_serve_stats_t base; /**< uvp_nats_serve_stats' */
  uint64_t busy;      /**< answered Uvp-Error: EBUSY at once, unserved: the
                           bound of requests waiting was reached */
  uint64_t cancels;   /**< cancels received on UVP_NATS_CANCEL_PREFIX
                           SUBJECT (most, with several instances, for
                           requests another one holds) */
  uint64_t cancelled; /**< requests this instance held that a cancel cut
                           (running) or dropped (waiting): no reply */
  uint64_t cut;       /**< requests the drain's deadline ended: answered
                           Uvp-Error: ECANCELED (waiting, or arriving
                           after it) or cut (running) */
  size_t waiting;     /**< requests waiting for room under limit now */
  size_t running;     /**< requests being served now */
  size_t max_waiting; /**< the bound of waiting requests
                           (uvp_nats_serve_set_max_waiting) */
  uint64_t forged;    /**< cancels for a request this instance holds whose
                           token (UVP_NATS_CANCEL_TOKEN_LEN) was not the
                           request's (or the request had none): dropped,
                           the request served; never logged */
} uvp_nats_serve_stats_ex_t;

/** Serve `subject` in queue group `queue` (NULL: none; the server spreads
 * requests over the group's members).  Each request that arrives is a
 * member of a UVP_GROUP_DISCARD_SETTLED group (to supervise and drain,
 * keeping nothing per finished request): a fiber (opts->fiber) or a start
 * callback's promise (opts->start), under a deadline of the request's
 * Uvp-Timeout-Ms less opts->margin_ms, counted from its arrival
 * (opts->default_timeout_ms without the header), so every operation it
 * starts (a uvp-curl transfer, a nested uvp_nats_request, whose header
 * then carries what is left) ends when the caller stops waiting.
 *   The member's value is the reply's body: a NUL-terminated string (the
 *   bytes before the NUL are sent; NULL: an empty body).
 *   A rejection replies with Uvp-Error: <code's name> and its message as
 *   the body.  Every reply carries Uvp-Worker.
 *   Uvp-Timeout-Ms not a decimal number (empty too), over
 *   UVP_NATS_TIMEOUT_MAX, or a header block nats.c cannot read: replied
 *   Uvp-Error: EPROTO, unserved; at or below the margin ("0" to "10" with
 *   the default): Uvp-Error: ETIMEDOUT, unserved.
 *   No reply subject: served, no reply, counted.
 * Bounded.  opts->limit bounds the requests served at once; NATS pushes
 * the others anyway, and they wait in the group's queue with their
 * deadlines running, up to a bound of 2 x limit waiting
 * (uvp_nats_serve_set_max_waiting changes it).  A request over the bound
 * is answered at once with Uvp-Error: EBUSY (libuv's UV_EBUSY, its body
 * saying the worker is busy), unserved, so that its caller's record says
 * so and a coordinator can send it elsewhere: the worker holds at most
 * limit + bound requests, whatever is published to it.  A waiting one
 * whose deadline passed before it started is dropped unserved (its caller
 * has given up) and counted.  limit 0: no bound, nothing waits.
 * Cancelled by the caller.  Every instance also subscribes (plainly, not
 * in the queue group: one subscription per service) to
 * UVP_NATS_CANCEL_PREFIX + subject, where uvp_nats_request tells of a
 * request its caller cut.  A running member is cut with
 * uvp_promise_cancel_binding, UV_ECANCELED and the cause "cancelled by
 * the caller: <the caller's cause>" (the fiber's await returns
 * UV_ECANCELED, uvp_promise_cause of what it awaited says why); a waiting
 * one is dropped unstarted; neither is replied to.  A cancel that comes
 * after the reply, or for a request another instance holds, changes
 * nothing.
 * The service keeps uv_run() going until it is drained or its connection
 * closed (uvp_nats_close cancels its members, UV_ECANCELED: their replies
 * are not sent).  *out is the connection's until then.  Errors: UV_EINVAL
 * (NULL, neither fiber nor start, a bad subject or queue), UVP_ECLOSED,
 * UV_ENOMEM, a mapped nats.c code.  Not a promise: stop it with
 * uvp_nats_serve_drain or uvp_nats_close.  Threads: as a subscription's
 * (no thread of nats.c's calls it); fibers, handlers and replies all run
 * on the loop thread.  A fiber may outlive its member once cut (it
 * cleans up): its uvp_nats_served_t stays valid until it returns. */
UVP_NATS_EXTERN int uvp_nats_serve(uvp_nats_t *nc, const char *subject,
                                   const char *queue,
                                   const uvp_nats_serve_opts_t *opts,
                                   uvp_nats_svc_t **out);

/** The bound of requests that wait for room under the service's limit
 * (see uvp_nats_serve): `max_waiting` of them, 0 for none (a request that
 * finds every slot taken is answered EBUSY), SIZE_MAX for no bound (all
 * that NATS pushes wait, as before there was one).  Applies to the
 * requests that arrive from then on; called right after uvp_nats_serve,
 * before the loop runs again, to every one.  Ignored while limit is 0.
 * Loop thread.  Errors: UV_EINVAL (NULL). */
UVP_NATS_EXTERN int uvp_nats_serve_set_max_waiting(uvp_nats_svc_t *svc,
                                                   size_t max_waiting);

/** @name uvp_nats_serve_drain, uvp_nats_serve_drain_at
 * @{ */
/** Stop taking requests (natsSubscription_Drain: UNSUB; what the server
 * had already sent still arrives and is served), wait for every member to
 * have replied, and fulfil with the service's last counters (a
 * uvp_nats_serve_stats_ex_t *, the promise's; NULL without memory); the
 * service is freed then (read its counters from the value).  No
 * deadline: uvp_nats_serve_drain_within(svc, UVP_NO_DEADLINE, out), but
 * a second call is UV_EALREADY.  Cancel-safe: cancelling stops the wait,
 * not the drain.  Threads: as uvp_nats_drain's.  Errors: UV_EINVAL,
 * UV_EALREADY, UVP_ECLOSED, UV_ENOTCONN (as uvp_nats_drain), UV_ENOMEM. */
#define uvp_nats_serve_drain(...)                                              \
  uvp_nats_serve_drain_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_serve_drain_at(uvp_nats_svc_t *svc,
                                            uvp_promise_t **out,
                                            const char *file, int line);
/** @} */

/** @name uvp_nats_serve_drain_within, uvp_nats_serve_drain_within_at
 * @{ */
/** Drain as uvp_nats_serve_drain does, within `deadline_ms` (on uvp's
 * clock, as uvp_delay; UVP_NO_DEADLINE: none): once it passes, what still
 * waits (and what arrives after it) is answered Uvp-Error: ECANCELED
 * ("worker draining"), what runs is cut with uvp_promise_cancel_binding,
 * UV_ECANCELED and the cause "worker draining" (its reply, Uvp-Error:
 * ECANCELED, is sent as its rejection's), the subscription is
 * unsubscribed if nats.c has not finished its drain, and *out fulfils
 * once the members have settled (a fiber that goes on cleaning up after
 * its cut holds the service's memory, not the promise).  0: all that, at
 * once, inside the call.  For SIGTERM: drain within a deadline, and on a
 * second SIGTERM call it again with 0.  Called on a service that drains
 * already: the nearer of the two deadlines holds, and *out gets another
 * reference to the same promise.  Cancel-safe: cancelling stops the
 * wait, not the drain.  Threads: as uvp_nats_drain's.  Errors: UV_EINVAL,
 * UVP_ECLOSED, UV_ENOTCONN (as uvp_nats_drain), UV_ENOMEM. */
#define uvp_nats_serve_drain_within(...)                                       \
  uvp_nats_serve_drain_within_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_serve_drain_within_at(uvp_nats_svc_t *svc,
                                                   uint64_t deadline_ms,
                                                   uvp_promise_t **out,
                                                   const char *file, int line);
/** @} */

/** Fill *out.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_serve_stats(const uvp_nats_svc_t *svc,
                                         uvp_nats_serve_stats_t *out);

/** Fill *out with every counter (uvp_nats_serve_stats' in out->base).
 * Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_serve_stats_ex(const uvp_nats_svc_t *svc,
                                            uvp_nats_serve_stats_ex_t *out);
/** @} */

/* ------------------------------------------------------------------------ */
/* Inspection                                                               */
/* ------------------------------------------------------------------------ */

/** @defgroup nats_inspection Inspection
 * @ingroup nats */
/** @{ */

/** Counters of a connection (uvp_nats_stats). */
typedef struct uvp_nats_stats_s {
  size_t in_flight;       /**< requests waiting for their reply */
  uint64_t requests;      /**< requests published */
  uint64_t replies;       /**< replies matched to a request */
  uint64_t no_responders; /**< requests rejected UVP_NATS_ENORESPONDERS */
  uint64_t timeouts;      /**< requests ended by their own timeout */
  uint64_t cancelled;     /**< requests cancelled (deadline, cancel,
                               teardown, disconnect) */
  uint64_t late;          /**< replies that found no request: dropped */
  uint64_t dropped;       /**< messages nats.c dropped for slow consumers */
  uint64_t queued_events; /**< event-loop calls from nats.c's other threads,
                               applied through the queue */
  uint64_t direct_events; /**< those made on the loop thread, applied at
                               once */
  uint64_t disconnects;   /**< times the connection dropped */
  uint64_t reconnects;    /**< times it came back */
  uint64_t polls;         /**< poll handles started (one per socket) */
} uvp_nats_stats_t;

/** Fill *out.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_stats(const uvp_nats_t *nc, uvp_nats_stats_t *out);

/** Print every request in flight, oldest first, one a line:
 *   NATS request fan.work #12 for 102 ms (promise at app.c:40)
 * (the age is read modulo 2^32 ms: a request older than 49 days shows
 * less).  Loop thread.  Returns how many, or UV_EINVAL, or UV_ENOMEM
 * (nothing printed: the list is sorted in memory of its own). */
UVP_NATS_EXTERN int uvp_nats_dump(uvp_nats_t *nc, FILE *stream);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_NATS_H */

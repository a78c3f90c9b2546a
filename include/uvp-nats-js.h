/** @file
 * uvp-nats JetStream — streams, pull consumers, key-value buckets and
 * durable promises as uvp promises, on a uvp-nats connection.
 *
 * Part of libuvp-nats (pkg-config name uvp-nats), installed beside
 * uvp-nats.h, which it includes.  Needs a nats-server with JetStream
 * (`nats-server -js`, 2.9 or later; a cluster for replicas).
 *
 * @code
 *   uvp_nats_js_new(nc, NULL, &js);
 *   uvp_nats_js_stream_add(js, &(uvp_nats_js_stream_config_t){
 *       .name = "JOBS", .retention = UVP_NATS_JS_WORKQUEUE}, &p);
 *   uvp_nats_js_publish(js, "JOBS", "work", 4,
 *       &(uvp_nats_js_publish_opts_t){.msg_id = "job-1"}, &p);
 *   ...  // p fulfils with a uvp_nats_js_ack_t *: seq, duplicate
 *   uvp_nats_dpromise_create(js, "promises", "job-1", 60000, &p);
 *   ...  // p settles when any process completes "job-1"
 *   uvp_nats_js_free(js);
 * @endcode
 *
 * How it speaks to the server.  Every JetStream call is a NATS request
 * on `$JS.API.>` with a JSON body, or a publish whose reply is an
 * acknowledgement: the binding sends them as uvp_nats_request does (with
 * UVP_NATS_REQUEST_NO_TIMEOUT_HEADER: a stored message carries no
 * Uvp-Timeout-Ms) and reads the JSON with jansson, on the loop thread.
 * nats.c's own JetStream calls (js_AddStream, natsSubscription_Fetch,
 * kvStore_*) block their thread until the server answers; run on libuv's
 * pool, a pull or a watch would hold one of its four threads for each
 * long poll, and a cut could not stop them.  So none of them is used:
 * every wait here is a request, a subscription of the binding's or a
 * timer on the loop, and so a record of work in flight
 * (uvp_inflight_start): the scope's deadline cuts it, its group waits
 * for it, uvp_ctx_close ends it, and the task dump names it ("JetStream
 * publish JOBS", "JetStream next JOBS/workers", "JetStream kv get
 * promises/job-1", "JetStream dpromise promises/job-1").
 *
 * Threads: everything here is called on the context's loop thread, and
 * every promise settles there; no thread of nats.c's calls it.
 *
 * Errors.  Calls return 0 or a negative code; promises reject with:
 *   UVP_NATS_ENORESPONDERS  nothing answered the API subject: the server
 *                           has no JetStream, or the stream has no leader
 *                           (an election in a cluster: try again), or no
 *                           stream takes the published subject
 *   UV_ENOENT               no such stream, consumer, key or promise
 *   UV_EEXIST               a stream of that name with another
 *                           configuration; a key that exists (create)
 *   UVP_NATS_EREVISION      the key's last revision is not the one given
 *   UV_EAGAIN               JetStream is not ready yet (a cluster still
 *                           electing its leader)
 *   UV_ENOTSUP              JetStream is not enabled for the account
 *   UVP_NATS_EJETSTREAM     any other error of the API: the payload is
 *                           a uvp_nats_js_error_t (owned by the promise)
 *   UV_EPROTO               a reply the binding cannot read; or, on a
 *                           connection of uvp_nats_open, its connect's
 *                           failure (below)
 *   UV_EMSGSIZE             a reply over the context's cap
 *                           (uvp_nats_js_opts_t's max_reply), or a JSON
 *                           reply over UVP_NATS_JS_MAX_JSON: refused
 *                           unread
 * and a request's codes (UV_ETIMEDOUT, UV_ECANCELED, UVP_ECLOSED...).
 * On a connection of uvp_nats_open still connecting, a call waits for the
 * connect, and its timeout (uvp_nats_js_opts_t's, 5 s) runs from the
 * call: the connect's time is part of it.  If the connect fails, every
 * call made meanwhile rejects with the connect's code: UV_ECONNREFUSED
 * (nobody listens: nothing was sent), UV_ETIMEDOUT, UV_ENOTSUP, UV_EPROTO
 * (not a NATS server, a failed TLS handshake); the connection then takes
 * nothing new (UVP_ECLOSED): uvp_nats_close it and open another to try
 * again, as examples/nats/durable.c does.
 * An API error's payload is a uvp_nats_js_error_t, except for durable
 * promises, whose rejections carry a record (uvp_nats_dpromise_t) or
 * nothing. */
#ifndef UVP_NATS_JS_H
#define UVP_NATS_JS_H

#include "uvp-nats.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup nats_js JetStream
 * @ingroup nats
 * Streams, pull consumers, key-value buckets and durable promises: see
 * uvp-nats-js.h. */
/** @{ */

/** A JetStream context: a connection and the API's prefix. */
typedef struct uvp_nats_js_s uvp_nats_js_t;

/** Options of uvp_nats_js_new. */
typedef struct uvp_nats_js_opts_s {
  const char *domain;    /**< a JetStream domain (API "$JS.<domain>.API");
                              NULL: none ("$JS.API") */
  uint64_t timeout_ms;   /**< each API call's and acknowledgement's
                              timeout, from the call (a connect still
                              running included: see above); 0: 5 s (a
                              scope's deadline, if nearer, still cuts
                              it) */
  uint64_t heartbeat_ms; /**< the idle heartbeat of the watches a durable
                              promise's await makes (uvp_nats_kv_watch's
                              heartbeat_ms): a lost one is found within
                              twice this; 0: 5 s */
  size_t max_reply;      /**< the largest reply (its data) an API call
                              takes: an API reply, a publish's
                              acknowledgement, a key's value (get,
                              create...); a larger one rejects the call
                              with UV_EMSGSIZE, unread; 0: the server's
                              max_payload (its INFO), which a server
                              keeping its own limit never exceeds.  A
                              watch's and a pull's messages are the
                              program's, not capped here */
} uvp_nats_js_opts_t;

/** The largest reply the binding parses as JSON on the loop thread (API
 * replies, acknowledgements, durable promises' records), whatever
 * max_reply says: 1 MiB.  JetStream's own replies are a few kB; a server
 * that sends more (a hostile one, or a responder planted on `$JS.API.>`)
 * gets UV_EMSGSIZE, unparsed: a 32 MiB reply held the loop 7.5 s in
 * jansson before. */
#define UVP_NATS_JS_MAX_JSON ((size_t)1 << 20)

/** The most JSON values (each array element, each member, each
 * container) the binding parses in one reply, its cost bounded with its
 * size: jansson's time goes by values, and 1 MiB of `[0,0,...]` (half a
 * million) took 41-110 ms of the loop; 16 384 take 1-4 ms.  A reply with
 * more, or nested deeper than 64, gets UV_EMSGSIZE, unparsed, after a
 * scan of its bytes (0.3 ms a MiB).  JetStream's replies hold hundreds. */
#define UVP_NATS_JS_MAX_JSON_VALUES 16384u

/** A new context on `nc` (opts may be NULL; copied).  *out is yours until
 * uvp_nats_js_free, which you may call before or after uvp_nats_close of
 * nc; once nc closes, every call on the context fails with UVP_ECLOSED
 * and what waits on it rejects with it.  Loop thread.  Errors: UV_EINVAL
 * (NULL nc or out, a domain with a dot or a space), UVP_ECLOSED,
 * UV_ENOMEM. */
UVP_NATS_EXTERN int uvp_nats_js_new(uvp_nats_t *nc,
                                    const uvp_nats_js_opts_t *opts,
                                    uvp_nats_js_t **out);

/** Let go of the context: calls in flight and the objects made from it
 * (pulls, watches, services, awaits) go on; its memory goes with the last
 * of them.  Loop thread.  Errors: UV_EINVAL (NULL; freed already, while
 * something made from it still holds its memory: after that, a second
 * call reads freed memory, as a second uv_close would). */
UVP_NATS_EXTERN int uvp_nats_js_free(uvp_nats_js_t *js);

/** An API error (the payload of a UVP_NATS_EJETSTREAM rejection, and of
 * the other codes an API error maps to). */
typedef struct uvp_nats_js_error_s {
  int code;                /**< its HTTP-like code (400, 404, 503...) */
  int err_code;            /**< JetStream's own (10059: stream not found) */
  const char *description; /**< "stream not found" */
} uvp_nats_js_error_t;

/* ------------------------------------------------------------------------ */
/* Streams and consumers                                                    */
/* ------------------------------------------------------------------------ */

/** A stream's retention (uvp_nats_js_stream_config_t). */
typedef enum {
  UVP_NATS_JS_LIMITS = 0,    /**< kept until its limits (age, count) */
  UVP_NATS_JS_WORKQUEUE = 1, /**< each message goes once acknowledged */
  UVP_NATS_JS_INTEREST = 2   /**< kept while a consumer has not acked it */
} uvp_nats_js_retention_t;

enum {
  /** Memory storage instead of files. */
  UVP_NATS_JS_MEMORY = 1,
  /** A full stream refuses new messages instead of dropping old ones. */
  UVP_NATS_JS_DISCARD_NEW = 2,
  /** Direct get: any replica answers a read (KV buckets have it). */
  UVP_NATS_JS_ALLOW_DIRECT = 4,
  /** Nats-Rollup headers are allowed (KV buckets have it). */
  UVP_NATS_JS_ALLOW_ROLLUP = 8,
  /** Messages cannot be deleted, only purged (KV buckets have it). */
  UVP_NATS_JS_DENY_DELETE = 16
};

/** A stream's configuration (uvp_nats_js_stream_add). */
typedef struct uvp_nats_js_stream_config_s {
  const char *name;                  /**< required: letters, digits, - and _ */
  const char *const *subjects;       /**< NULL-terminated; NULL: the name */
  uvp_nats_js_retention_t retention; /**< UVP_NATS_JS_LIMITS... */
  int replicas;                      /**< copies in a cluster; 0: 1 */
  uint64_t max_age_ms;               /**< 0: no limit */
  uint64_t duplicate_window_ms;      /**< Nats-Msg-Id dedupe window; 0: the
                                          server's (2 min, or max_age) */
  int64_t max_msgs;                  /**< 0: no limit */
  int64_t max_bytes;                 /**< 0: no limit */
  int64_t max_msgs_per_subject;      /**< 0: no limit */
  int flags;                         /**< UVP_NATS_JS_MEMORY... */
} uvp_nats_js_stream_config_t;

/** What a stream holds (the value of uvp_nats_js_stream_add and
 * uvp_nats_js_stream_info; one allocation, owned by the promise). */
typedef struct uvp_nats_js_stream_info_s {
  const char *name;   /**< its name */
  uint64_t messages;  /**< messages stored */
  uint64_t bytes;     /**< their bytes */
  uint64_t first_seq; /**< the oldest one's sequence */
  uint64_t last_seq;  /**< the newest one's sequence */
  uint64_t consumers; /**< consumers on it */
  int replicas;       /**< copies kept */
  const char *leader; /**< its leader's server name in a cluster, else
                           NULL */
} uvp_nats_js_stream_info_t;

/** @name uvp_nats_js_stream_add, uvp_nats_js_stream_add_at
 * @{ */
/** Create the stream, or find it if it exists with the same
 * configuration ($JS.API.STREAM.CREATE): *out fulfils with a
 * uvp_nats_js_stream_info_t *.  Rejects with UV_EEXIST (a stream of that
 * name with another configuration, or another stream has those
 * subjects), UV_EAGAIN, UVP_NATS_ENORESPONDERS, UVP_NATS_EJETSTREAM (a
 * configuration the server refuses: replicas beyond the cluster's size),
 * a request's codes.  Cancel-safe (the stream may have been made).
 * Errors, nothing sent: UV_EINVAL (NULL, a bad name or subject),
 * UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_js_stream_add(...)                                            \
  uvp_nats_js_stream_add_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_js_stream_add_at(uvp_nats_js_t *js,
                          const uvp_nats_js_stream_config_t *config,
                          uvp_promise_t **out, const char *file, int line);
/** @} */

/** @name uvp_nats_js_stream_info, uvp_nats_js_stream_delete
 * @{ */
/** Look the stream up: *out fulfils with a uvp_nats_js_stream_info_t *,
 * or rejects UV_ENOENT.  Delete it: fulfils with NULL, or rejects
 * UV_ENOENT.  Otherwise as uvp_nats_js_stream_add. */
#define uvp_nats_js_stream_info(...)                                           \
  uvp_nats_js_stream_info_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_stream_info_at(uvp_nats_js_t *js,
                                               const char *stream,
                                               uvp_promise_t **out,
                                               const char *file, int line);
#define uvp_nats_js_stream_delete(...)                                         \
  uvp_nats_js_stream_delete_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_stream_delete_at(uvp_nats_js_t *js,
                                                 const char *stream,
                                                 uvp_promise_t **out,
                                                 const char *file, int line);
/** @} */

/** A durable pull consumer's configuration (uvp_nats_js_consumer_add). */
typedef struct uvp_nats_js_consumer_config_s {
  const char *durable;        /**< its name: required */
  const char *filter_subject; /**< NULL: every subject of the stream */
  uint64_t ack_wait_ms;       /**< redelivered if not acknowledged (nor
                                   marked in progress) within; 0: 30 s */
  int64_t max_deliver;        /**< deliveries at most; 0: no limit */
  int64_t max_ack_pending;    /**< messages out and not acknowledged, at
                                   most (over all its pullers); 0: 1 000 */
  const uint64_t *backoff_ms; /**< redelivery delays after each failed
                                   delivery (the last repeats); NULL: none
                                   (ack_wait each time).  Needs
                                   max_deliver above nbackoff */
  size_t nbackoff;            /**< backoff_ms's length */
} uvp_nats_js_consumer_config_t;

/** A consumer (the value of uvp_nats_js_consumer_add and
 * uvp_nats_js_consumer_info; one allocation, owned by the promise). */
typedef struct uvp_nats_js_consumer_info_s {
  const char *stream;       /**< its stream */
  const char *name;         /**< its name */
  uint64_t ack_wait_ms;     /**< its configuration's */
  int64_t max_ack_pending;  /**< its configuration's */
  int64_t max_deliver;      /**< its configuration's (-1: no limit) */
  uint64_t num_pending;     /**< messages not delivered yet */
  uint64_t num_ack_pending; /**< out, not acknowledged */
  uint64_t num_redelivered; /**< delivered more than once */
  uint64_t num_waiting;     /**< pull requests waiting at the server */
} uvp_nats_js_consumer_info_t;

/** @name uvp_nats_js_consumer_add, uvp_nats_js_consumer_add_at
 * @{ */
/** Create the durable pull consumer on `stream` (explicit acks,
 * delivering from the stream's start), or find it if it exists with the
 * same configuration: *out fulfils with a uvp_nats_js_consumer_info_t *.
 * Rejects as uvp_nats_js_stream_add (UV_ENOENT: no such stream;
 * UVP_NATS_EJETSTREAM: a second unfiltered consumer on a work-queue
 * stream, a backoff without a max_deliver above it).  Errors, nothing
 * sent: UV_EINVAL (NULL, no durable, a bad name), UVP_ECLOSED,
 * UV_ENOMEM. */
#define uvp_nats_js_consumer_add(...)                                          \
  uvp_nats_js_consumer_add_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_js_consumer_add_at(uvp_nats_js_t *js, const char *stream,
                            const uvp_nats_js_consumer_config_t *config,
                            uvp_promise_t **out, const char *file, int line);
/** @} */

/** @name uvp_nats_js_consumer_info, uvp_nats_js_consumer_delete
 * @{ */
/** Look the consumer up (a uvp_nats_js_consumer_info_t *) or delete it
 * (NULL); UV_ENOENT if there is none.  Otherwise as
 * uvp_nats_js_consumer_add. */
#define uvp_nats_js_consumer_info(...)                                         \
  uvp_nats_js_consumer_info_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_consumer_info_at(uvp_nats_js_t *js,
                                                 const char *stream,
                                                 const char *consumer,
                                                 uvp_promise_t **out,
                                                 const char *file, int line);
#define uvp_nats_js_consumer_delete(...)                                       \
  uvp_nats_js_consumer_delete_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_consumer_delete_at(uvp_nats_js_t *js,
                                                   const char *stream,
                                                   const char *consumer,
                                                   uvp_promise_t **out,
                                                   const char *file, int line);
/** @} */

/* ------------------------------------------------------------------------ */
/* Publish with acknowledgement                                             */
/* ------------------------------------------------------------------------ */

/** The header a job's message may carry: when its caller stops caring,
 * in milliseconds since the Unix epoch (absolute: a stored message may be
 * served long after it was sent, on another machine; the two clocks must
 * agree to within what the deadline can spare).  uvp_nats_js_serve gives
 * a member what is left of it. */
#define UVP_NATS_DEADLINE_HEADER "Uvp-Deadline"

/** Options of uvp_nats_js_publish. */
typedef struct uvp_nats_js_publish_opts_s {
  const char *msg_id;               /**< Nats-Msg-Id: the stream keeps one
                                         message per id within its duplicate
                                         window (a second publish fulfils with
                                         duplicate set); NULL: none */
  const char *expect_stream;        /**< refused unless this stream takes it */
  uint64_t expect_last_subject_seq; /**< with UVP_NATS_JS_EXPECT_LAST:
                                    refused (UVP_NATS_EREVISION) unless the
                                    subject's last message has this
                                    sequence (0: it has none) */
  int flags;                        /**< UVP_NATS_JS_EXPECT_LAST */
  uint64_t deadline_ms;             /**< > 0: Uvp-Deadline set that far from
                                         now (the job's, not the ack's) */
  const char *const *headers;       /**< more "Name: value" strings,
                                         NULL-terminated (copied) */
} uvp_nats_js_publish_opts_t;

enum {
  /** uvp_nats_js_publish_opts_t's expect_last_subject_seq counts. */
  UVP_NATS_JS_EXPECT_LAST = 1
};

/** The stream's acknowledgement of a publish (one allocation, owned by the
 * promise). */
typedef struct uvp_nats_js_ack_s {
  const char *stream; /**< the stream that stored it */
  uint64_t seq;       /**< its sequence there */
  bool duplicate;     /**< the stream had this Nats-Msg-Id already: seq is
                           the first one's, nothing new was stored */
} uvp_nats_js_ack_t;

/** @name uvp_nats_js_publish, uvp_nats_js_publish_at
 * @{ */
/** Publish `len` bytes of `data` on `subject` and wait for the stream's
 * acknowledgement: *out fulfils with a uvp_nats_js_ack_t *.  Rejects with
 * UVP_NATS_ENORESPONDERS (no stream takes the subject, or its leader is
 * being elected: publish again with the same msg_id, which dedupes),
 * UVP_NATS_EREVISION (UVP_NATS_JS_EXPECT_LAST not met), UV_EEXIST
 * (expect_stream is not the stream), UVP_NATS_EJETSTREAM (a full stream
 * with UVP_NATS_JS_DISCARD_NEW...), UV_ETIMEDOUT (no acknowledgement in
 * the context's timeout: the message may have been stored; publish again
 * with the same msg_id).  Cancel-safe: cancelling stops the wait, not
 * the publish.  In the task dump: "JetStream publish SUBJECT".  Errors,
 * nothing sent: those of uvp_nats_publish (UV_EINVAL, UV_EMSGSIZE...),
 * UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_js_publish(...)                                               \
  uvp_nats_js_publish_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_js_publish_at(uvp_nats_js_t *js, const char *subject, const void *data,
                       size_t len, const uvp_nats_js_publish_opts_t *opts,
                       uvp_promise_t **out, const char *file, int line);
/** @} */

/* ------------------------------------------------------------------------ */
/* Pulling from a consumer                                                  */
/* ------------------------------------------------------------------------ */

/** A pull: what a process takes from a durable pull consumer. */
typedef struct uvp_nats_js_pull_s uvp_nats_js_pull_t;

enum {
  /** Do not mark messages in progress (+WPI) on their own: a message not
   * acknowledged within the consumer's ack_wait is redelivered. */
  UVP_NATS_JS_NO_AUTO_WPI = 1
};

/** Options of uvp_nats_js_pull. */
typedef struct uvp_nats_js_pull_opts_s {
  size_t limit;        /**< messages this process holds at most: handed
                            out and not yet acknowledged, naked or termed,
                            plus those asked of the server; 0: the
                            consumer's max_ack_pending */
  uint64_t expires_ms; /**< how long a pull request waits at the server
                            for messages; 0: 5 s.  A request the server
                            lost (its consumer's leader died) is given up
                            after this and 2 s more, and asked again */
  int flags;           /**< UVP_NATS_JS_NO_AUTO_WPI */
} uvp_nats_js_pull_opts_t;

/** A message from a pull (the value of uvp_nats_js_next; owned by its
 * promise).  Its data and headers are the natsMsg's (borrowed from it);
 * the rest is read from its $JS.ACK reply subject. */
typedef struct uvp_nats_js_msg_s {
  natsMsg *msg;          /**< subject, data, headers (borrowed) */
  const char *stream;    /**< the stream */
  const char *consumer;  /**< the consumer */
  uint64_t stream_seq;   /**< its sequence in the stream */
  uint64_t consumer_seq; /**< in the consumer's deliveries */
  uint64_t delivered;    /**< its deliveries so far: 1 the first time */
  uint64_t pending;      /**< messages left for the consumer */
  int64_t time_ns;       /**< when it was stored, ns since the epoch */
} uvp_nats_js_msg_t;

/** @name uvp_nats_js_pull, uvp_nats_js_pull_at
 * @{ */
/** Pull from durable consumer `consumer` of `stream`: looks the consumer
 * up (its ack_wait and max_ack_pending), subscribes to an inbox of its
 * own for the deliveries, and fulfils *out with a uvp_nats_js_pull_t *,
 * yours (no destructor: give it to uvp_nats_js_pull_close before
 * uv_loop_close, as a libuv handle).  Nothing is asked of the server
 * before a uvp_nats_js_next.  Rejects as uvp_nats_js_consumer_info
 * (UV_ENOENT: no such stream or consumer).  Errors, nothing sent:
 * UV_EINVAL (NULL, a bad name), UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_js_pull(...)                                                  \
  uvp_nats_js_pull_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_pull_at(uvp_nats_js_t *js, const char *stream,
                                        const char *consumer,
                                        const uvp_nats_js_pull_opts_t *opts,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */

/** @name uvp_nats_js_next, uvp_nats_js_next_at
 * @{ */
/** The next message, as uvp_nats_next hands out a subscription's: *out
 * gets one reference to a promise that fulfils with a
 * uvp_nats_js_msg_t * it owns.  Waits are served in the order they were
 * made.  The pull asks the server ($JS.API.CONSUMER.MSG.NEXT, one
 * request for as many messages as there are waits, delivered to the
 * pull's inbox) only for what the limit leaves room for: the messages it
 * holds (handed out and not finished) and those asked count, so a
 * process never holds more than it can serve; the rest wait at the
 * server for another process.  A request expires at the server after
 * opts.expires_ms (status 408) and is asked again while waits remain.
 *   Finish each message with uvp_nats_js_ack, _nak or _term (each frees
 *   its room); until then the binding marks it in progress (+WPI) every
 *   half ack_wait (unless UVP_NATS_JS_NO_AUTO_WPI), so the server does
 *   not redeliver it while it is worked on.  A message whose promise
 *   goes (its last reference released) unfinished is given back (-NAK:
 *   redelivered at once, to any puller).
 * Rejects with UV_ECANCELED (uvp_nats_js_pull_close), UVP_ECLOSED (the
 * connection closed; uvp_ctx_close), UV_ENOENT (the consumer was
 * deleted), UV_ETIMEDOUT (the scope's deadline).  Cancel-safe:
 * cancelling stops that wait; a message that arrives for it waits for
 * the next uvp_nats_js_next (marked in progress meanwhile), or is given
 * back at uvp_nats_js_pull_close.  A wait is idle work in flight
 * (UVP_INFLIGHT_IDLE: the virtual clock may pass it); in the task dump:
 * "JetStream next STREAM/CONSUMER".  Errors: UV_EINVAL, UVP_ECLOSED
 * (closed pull or connection), UV_ENOMEM. */
#define uvp_nats_js_next(...)                                                  \
  uvp_nats_js_next_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_next_at(uvp_nats_js_pull_t *pull,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */

/** @name uvp_nats_js_ack, uvp_nats_js_nak, uvp_nats_js_term,
 * uvp_nats_js_in_progress
 * @{ */
/** Finish a message: acknowledge it (+ACK: done, a work queue deletes
 * it), give it back (-NAK: redelivered after delay_ms, 0: at once, to any
 * puller), or terminate it (+TERM: never redelivered).  Each publishes
 * to the message's reply subject and returns at once (no answer is
 * awaited: a lost ack means a redelivery after ack_wait, which a
 * consumer of JetStream handles anyway); the message's room in the pull
 * is free again.  uvp_nats_js_in_progress (+WPI) restarts its ack_wait
 * and leaves it unfinished.  The message stays its promise's.  Loop
 * thread.  Errors: UV_EINVAL (NULL; delay_ms over a day), UV_EALREADY
 * (finished already), UVP_ECLOSED (the connection closed: the server
 * redelivers it after ack_wait), a publish's codes. */
UVP_NATS_EXTERN int uvp_nats_js_ack(uvp_nats_js_msg_t *msg);
UVP_NATS_EXTERN int uvp_nats_js_nak(uvp_nats_js_msg_t *msg, uint64_t delay_ms);
UVP_NATS_EXTERN int uvp_nats_js_term(uvp_nats_js_msg_t *msg);
UVP_NATS_EXTERN int uvp_nats_js_in_progress(uvp_nats_js_msg_t *msg);
/** @} */

/** Counters of a pull (uvp_nats_js_pull_stats). */
typedef struct uvp_nats_js_pull_stats_s {
  size_t held;         /**< messages out and not finished, now */
  size_t asked;        /**< messages asked of the server, not arrived */
  uint64_t requests;   /**< pull requests sent */
  uint64_t received;   /**< messages delivered */
  uint64_t expired;    /**< requests that expired (408) or were given up */
  uint64_t wpi;        /**< +WPI sent by the binding */
  uint64_t given_back; /**< -NAK of messages nobody finished */
} uvp_nats_js_pull_stats_t;

/** Fill *out.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_js_pull_stats(const uvp_nats_js_pull_t *pull,
                                           uvp_nats_js_pull_stats_t *out);

/** Stop pulling: waits reject with UV_ECANCELED, messages that arrived
 * for no wait are given back (-NAK), the inbox is unsubscribed.  Messages
 * handed out stay valid (finish them; they are still marked in progress
 * until then); the pull's memory goes with the last of them.  Not a
 * promise.  Loop thread.  Errors: UV_EINVAL (NULL, closed already). */
UVP_NATS_EXTERN int uvp_nats_js_pull_close(uvp_nats_js_pull_t *pull);

/* ------------------------------------------------------------------------ */
/* Serving from a stream                                                    */
/* ------------------------------------------------------------------------ */

/** A service on a pull: see uvp_nats_js_serve. */
typedef struct uvp_nats_js_svc_s uvp_nats_js_svc_t;

/** A message being served: the argument of the fiber or start callback,
 * valid until the fiber has returned (a start callback's: until its
 * promise has settled). */
typedef struct uvp_nats_js_served_s {
  uvp_nats_js_msg_t *msg; /**< the message (borrowed): data, headers,
                               delivered (1 the first time) */
  uvp_nats_js_svc_t *svc; /**< the service */
  void *arg;              /**< uvp_nats_js_serve_opts_t's arg */
  uint64_t deadline_ms;   /**< the member's deadline: what its
                               Uvp-Deadline leaves, less the margin (or
                               the default) */
} uvp_nats_js_served_t;

/** Starts serving a message: store the promise in *out (one reference,
 * the service's) and return 0, or return a negative code (the member
 * failed with it). */
typedef int (*uvp_nats_js_serve_start_cb)(uvp_nats_js_served_t *req,
                                          uvp_promise_t **out);

/** Options of uvp_nats_js_serve. */
typedef struct uvp_nats_js_serve_opts_s {
  uvp_fiber_fn fiber; /**< each message runs as a fiber, fiber(req) with
                           a uvp_nats_js_served_t * */
  uvp_nats_js_serve_start_cb start; /**< or start(req, &p), if fiber is
                                         NULL */
  void *arg;                        /**< the served struct's arg */
  uint64_t margin_ms;               /**< taken off Uvp-Deadline; 0: 10 ms */
  uint64_t default_timeout_ms;      /**< without Uvp-Deadline; 0: 30 s */
  const uint64_t *backoff_ms;       /**< -NAK delay after a retryable failure,
                                         by delivery (the last repeats); NULL:
                                         1 s, doubling each delivery, at most
                                         60 s */
  size_t nbackoff;                  /**< backoff_ms's length */
  /** Whether a member's rejection code is worth another delivery; NULL:
   * uvp_nats_js_retryable. */
  bool (*retryable)(int code);
} uvp_nats_js_serve_opts_t;

/** Counters of a service (uvp_nats_js_serve_stats). */
typedef struct uvp_nats_js_serve_stats_s {
  uint64_t received; /**< messages taken from the pull */
  uint64_t served;   /**< started (fiber spawned, start called) */
  uint64_t acked;    /**< members that fulfilled */
  uint64_t naked;    /**< retryable failures, and messages the drain
                          gave back */
  uint64_t termed;   /**< failures not worth retrying */
  uint64_t expired;  /**< Uvp-Deadline passed before it started: termed,
                          unserved */
  uint64_t cut;      /**< members cut by the drain's deadline */
  size_t running;    /**< members running now */
} uvp_nats_js_serve_stats_t;

/** The default retryable codes: UV_ETIMEDOUT, UV_ECANCELED (a drain's
 * cut), UV_EAGAIN, UV_EBUSY, UV_ENOBUFS, UV_ENOMEM, UV_ECONNREFUSED,
 * UV_ECONNRESET, UV_ECONNABORTED, UV_EPIPE, UV_ENETDOWN, UV_ENETUNREACH,
 * UV_EHOSTUNREACH, UV_EAI_AGAIN, UVP_NATS_ENORESPONDERS,
 * UVP_NATS_EDISCONNECTED: what another try, later or elsewhere, may not
 * meet. */
UVP_NATS_EXTERN bool uvp_nats_js_retryable(int code);

/** Serve the messages of `pull`, as uvp_nats_serve serves requests: each
 * message is a member of a UVP_GROUP_DISCARD_SETTLED group, a fiber
 * (opts->fiber) or a start callback's promise (opts->start) under the
 * deadline the message carries (Uvp-Deadline, less opts->margin_ms;
 * opts->default_timeout_ms without it), marked in progress by the pull
 * while it runs (unless the pull was opened with
 * UVP_NATS_JS_NO_AUTO_WPI), then:
 *   fulfilled                  acknowledged (+ACK)
 *   rejected, retryable code   given back (-NAK) with the back-off for
 *                              its delivery count: redelivered then, to
 *                              any worker
 *   rejected otherwise         terminated (+TERM): never redelivered
 *   Uvp-Deadline passed        terminated unserved (its caller gave up)
 * The pull's limit is the service's: the pull asks the server only for
 * what the members running leave room for, so a worker never holds more
 * than it serves.  The pull is the service's until the service ends
 * (uvp_nats_js_next then fails with UV_EINVAL); close it after that.
 * The service keeps uv_run() going until its drain completes or the
 * connection closes (its members are cut, UV_ECANCELED: the server
 * redelivers their messages after ack_wait); *out is valid until then.
 * Not a promise: stop it with uvp_nats_js_serve_drain.  Errors: UV_EINVAL
 * (NULL, neither fiber nor start, a pull already served or waited on),
 * UVP_ECLOSED, UV_ENOMEM.  Threads: fibers, handlers and acks all run on
 * the loop thread. */
UVP_NATS_EXTERN int uvp_nats_js_serve(uvp_nats_js_pull_t *pull,
                                      const uvp_nats_js_serve_opts_t *opts,
                                      uvp_nats_js_svc_t **out);

/** @name uvp_nats_js_serve_drain, uvp_nats_js_serve_drain_at
 * @{ */
/** Drain: take nothing more (the pull asks for nothing; a message that
 * still arrives is given back at once), let the members running finish,
 * and past `deadline_ms` (0: no limit) cut those still running with the
 * cause "worker draining" (uvp_promise_cancel_binding: they reject
 * UV_ECANCELED, retryable, so their messages are given back for another
 * worker).  *out fulfils (value NULL) once every member has ended; the
 * service is freed then (the pull is the program's again: close it).  For
 * SIGTERM: drain, close the pull, uvp_nats_close.  Cancel-safe:
 * cancelling stops the wait, not the drain.  Errors: UV_EINVAL (NULL),
 * UV_EALREADY (draining), UV_ENOMEM. */
#define uvp_nats_js_serve_drain(...)                                           \
  uvp_nats_js_serve_drain_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_js_serve_drain_at(uvp_nats_js_svc_t *svc,
                                               uint64_t deadline_ms,
                                               uvp_promise_t **out,
                                               const char *file, int line);
/** @} */

/** Fill *out.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_js_serve_stats(const uvp_nats_js_svc_t *svc,
                                            uvp_nats_js_serve_stats_t *out);

/* ------------------------------------------------------------------------ */
/* Key-value buckets                                                        */
/* ------------------------------------------------------------------------ */

/** A bucket's configuration (uvp_nats_kv_bucket_add).  A bucket is the
 * stream "KV_<bucket>" on the subjects "$KV.<bucket>.>", as nats.c and
 * the nats CLI make it: one message per write, the key's last kept (and
 * `history` in all), direct gets allowed. */
typedef struct uvp_nats_kv_config_s {
  const char *bucket; /**< letters, digits, - and _ */
  int history;        /**< revisions kept per key; 0: 1 (at most 64) */
  uint64_t ttl_ms;    /**< an entry's age at most; 0: no limit */
  int replicas;       /**< copies in a cluster; 0: 1 */
  int64_t max_bytes;  /**< 0: no limit */
  int flags;          /**< UVP_NATS_JS_MEMORY */
} uvp_nats_kv_config_t;

/** What a write did to a key (uvp_nats_kv_entry_t). */
typedef enum {
  UVP_NATS_KV_PUT = 0,  /**< a value */
  UVP_NATS_KV_DEL = 1,  /**< deleted (uvp_nats_kv_delete) */
  UVP_NATS_KV_PURGE = 2 /**< purged, history and all */
} uvp_nats_kv_op_t;

/** A key's entry (the value of uvp_nats_kv_get and of a watch; one
 * allocation, owned by the promise). */
typedef struct uvp_nats_kv_entry_s {
  const char *bucket;  /**< its bucket */
  const char *key;     /**< its key */
  const char *value;   /**< its bytes, followed by a NUL (not counted) */
  size_t len;          /**< value's length */
  uint64_t revision;   /**< its sequence in the bucket's stream: the
                            revision uvp_nats_kv_update compares */
  int64_t time_ns;     /**< when it was written, ns since the epoch */
  uint64_t delta;      /**< a watch's: entries still pending after it */
  uvp_nats_kv_op_t op; /**< a value, or a deletion marker */
} uvp_nats_kv_entry_t;

/** @name uvp_nats_kv_bucket_add, uvp_nats_kv_bucket_delete
 * @{ */
/** Create the bucket's stream, or find it if it exists with the same
 * configuration: *out fulfils with its uvp_nats_js_stream_info_t *;
 * rejects as uvp_nats_js_stream_add.  Delete it (and every key): fulfils
 * with NULL, or rejects UV_ENOENT.  Errors, nothing sent: UV_EINVAL (NULL,
 * a bad name, history over 64), UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_kv_bucket_add(...)                                            \
  uvp_nats_kv_bucket_add_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_kv_bucket_add_at(uvp_nats_js_t *js, const uvp_nats_kv_config_t *config,
                          uvp_promise_t **out, const char *file, int line);
#define uvp_nats_kv_bucket_delete(...)                                         \
  uvp_nats_kv_bucket_delete_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_bucket_delete_at(uvp_nats_js_t *js,
                                                 const char *bucket,
                                                 uvp_promise_t **out,
                                                 const char *file, int line);
/** @} */

/** @name uvp_nats_kv_get, uvp_nats_kv_get_at
 * @{ */
/** The key's last entry ($JS.API.DIRECT.GET: in a cluster any replica
 * answers, so a read may lag a write made an instant before on the
 * leader; uvp_nats_kv_update's compare-and-set is made by the leader and
 * never lags): *out fulfils with a uvp_nats_kv_entry_t *, or rejects with
 * UV_ENOENT (no such key, or deleted or purged), UV_ETIMEDOUT after the
 * context's timeout (no such bucket, or one without direct gets: the
 * server answers nothing then), a request's codes.  In
 * the task dump: "JetStream kv get BUCKET/KEY".  Errors, nothing sent:
 * UV_EINVAL (NULL, a bad bucket or key: keys are letters, digits and
 * -/_=. with no empty token), UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_kv_get(...) uvp_nats_kv_get_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_get_at(uvp_nats_js_t *js, const char *bucket,
                                       const char *key, uvp_promise_t **out,
                                       const char *file, int line);
/** @} */

/** @name uvp_nats_kv_put, uvp_nats_kv_create, uvp_nats_kv_update,
 * uvp_nats_kv_delete
 * @{ */
/** Write the key, each a publish with acknowledgement to
 * "$KV.<bucket>.<key>": *out fulfils with a uvp_nats_js_ack_t * whose
 * seq is the key's new revision.
 *  - put: whatever the key holds.
 *  - create: only if the key has no value (never written, or deleted or
 *    purged: compare-and-set on its revision, as nats.c's kvStore_Create);
 *    rejects UV_EEXIST if it has one.
 *  - update: only if the key's last revision is `revision`
 *    (Nats-Expected-Last-Subject-Sequence: the stream's leader compares
 *    and writes at once, so of two updates of one revision exactly one
 *    wins); rejects UVP_NATS_EREVISION otherwise.
 *  - delete: a deletion marker (KV-Operation: DEL); with `revision` > 0,
 *    only if that is the key's last (UVP_NATS_EREVISION).
 * Rejects also as uvp_nats_js_publish (UVP_NATS_ENORESPONDERS: no such
 * bucket, or no leader).  Cancel-safe: cancelling stops the wait, not the
 * write.  In the task dump: "JetStream kv put BUCKET/KEY"... Errors,
 * nothing sent: as uvp_nats_kv_get, UV_EMSGSIZE. */
#define uvp_nats_kv_put(...) uvp_nats_kv_put_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_put_at(uvp_nats_js_t *js, const char *bucket,
                                       const char *key, const void *data,
                                       size_t len, uvp_promise_t **out,
                                       const char *file, int line);
#define uvp_nats_kv_create(...)                                                \
  uvp_nats_kv_create_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_create_at(uvp_nats_js_t *js, const char *bucket,
                                          const char *key, const void *data,
                                          size_t len, uvp_promise_t **out,
                                          const char *file, int line);
#define uvp_nats_kv_update(...)                                                \
  uvp_nats_kv_update_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_update_at(uvp_nats_js_t *js, const char *bucket,
                                          const char *key, const void *data,
                                          size_t len, uint64_t revision,
                                          uvp_promise_t **out, const char *file,
                                          int line);
#define uvp_nats_kv_delete(...)                                                \
  uvp_nats_kv_delete_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_delete_at(uvp_nats_js_t *js, const char *bucket,
                                          const char *key, uint64_t revision,
                                          uvp_promise_t **out, const char *file,
                                          int line);
/** @} */

/** A watch of keys: see uvp_nats_kv_watch. */
typedef struct uvp_nats_kv_watch_s uvp_nats_kv_watch_t;

enum {
  /** Only what is written after the watch starts, not the keys' last
   * entries first (and no "caught up" NULL). */
  UVP_NATS_KV_UPDATES_ONLY = 1
};

/** Options of uvp_nats_kv_watch. */
typedef struct uvp_nats_kv_watch_opts_s {
  int flags;             /**< UVP_NATS_KV_UPDATES_ONLY */
  uint64_t heartbeat_ms; /**< the server's idle heartbeat; a watch that
                              hears nothing for twice this starts again
                              from where it was; 0: 5 s */
} uvp_nats_kv_watch_opts_t;

/** @name uvp_nats_kv_watch, uvp_nats_kv_watch_at
 * @{ */
/** Watch the keys `keys` names (a key, or a pattern: "jobs.*",
 * "jobs.>", ">" for all): an ordered consumer of the bucket's stream
 * (ephemeral, memory, no acks, flow control and idle heartbeats)
 * delivering to a subscription of the binding's.  It checks each
 * delivery's consumer sequence; at a gap, a missed heartbeat (the
 * consumer's server died) or a lost consumer, it makes a new one from the
 * stream sequence after the last entry it handed out, so no entry is lost
 * or repeated.  Transient failures of that (no leader, a timeout) are
 * retried, every 250 ms to 2 s.  *out fulfils with a
 * uvp_nats_kv_watch_t *, yours (no destructor: give it to
 * uvp_nats_kv_watch_close before uv_loop_close), once the first consumer
 * exists; it rejects (UV_ENOENT: no such bucket) and nothing is left if
 * that fails for good.  opts may be NULL.  Errors, nothing sent: UV_EINVAL
 * (NULL, a bad bucket or pattern), UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_kv_watch(...)                                                 \
  uvp_nats_kv_watch_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_watch_at(uvp_nats_js_t *js, const char *bucket,
                                         const char *keys,
                                         const uvp_nats_kv_watch_opts_t *opts,
                                         uvp_promise_t **out, const char *file,
                                         int line);
/** @} */

/** @name uvp_nats_kv_watch_next, uvp_nats_kv_watch_next_at
 * @{ */
/** The next entry, in the stream's order: first the last entry of each
 * key the pattern names (deleted ones too, op UVP_NATS_KV_DEL), then a
 * NULL value once they have all been handed out ("caught up"; at once
 * for no key), then every write as it comes; *out fulfils with a
 * uvp_nats_kv_entry_t * it owns (or that NULL).  Entries wait in the
 * watch until taken; the server's flow control is answered once fewer
 * than 1 024 wait, so a watch nobody reads does not grow without bound.
 * Rejects with UV_ECANCELED (uvp_nats_kv_watch_close), UVP_ECLOSED (the
 * connection closed).  Cancel-safe: no entry is lost.  An idle wait
 * (UVP_INFLIGHT_IDLE); in the task dump: "JetStream kv watch
 * BUCKET/KEYS".  Errors: UV_EINVAL, UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_kv_watch_next(...)                                            \
  uvp_nats_kv_watch_next_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_kv_watch_next_at(uvp_nats_kv_watch_t *w,
                                              uvp_promise_t **out,
                                              const char *file, int line);
/** @} */

/** Counters of a watch (uvp_nats_kv_watch_stats). */
typedef struct uvp_nats_kv_watch_stats_s {
  uint64_t entries;    /**< entries received */
  uint64_t consumers;  /**< consumers made (1, and one per restart) */
  uint64_t restarts;   /**< gaps, missed heartbeats, lost consumers */
  uint64_t heartbeats; /**< idle heartbeats heard */
} uvp_nats_kv_watch_stats_t;

/** Fill *out.  Loop thread.  Errors: UV_EINVAL. */
UVP_NATS_EXTERN int uvp_nats_kv_watch_stats(const uvp_nats_kv_watch_t *w,
                                            uvp_nats_kv_watch_stats_t *out);

/** Stop watching: waits reject with UV_ECANCELED, entries not taken are
 * dropped, the consumer is deleted (a request nobody waits for) and the
 * subscription goes.  Not a promise.  Loop thread.  Errors: UV_EINVAL
 * (NULL, closed already). */
UVP_NATS_EXTERN int uvp_nats_kv_watch_close(uvp_nats_kv_watch_t *w);

/* ------------------------------------------------------------------------ */
/* Durable promises                                                         */
/* ------------------------------------------------------------------------ */

/** A durable promise's state: Resonate's (its durable promise
 * specification).  Only a pending promise completes, once. */
typedef enum {
  UVP_NATS_DPROMISE_PENDING = 0,
  UVP_NATS_DPROMISE_RESOLVED = 1,
  UVP_NATS_DPROMISE_REJECTED = 2,
  UVP_NATS_DPROMISE_REJECTED_CANCELED = 3,
  UVP_NATS_DPROMISE_REJECTED_TIMEDOUT = 4
} uvp_nats_dpromise_state_t;

/** A durable promise as stored (one allocation, owned by the promise that
 * carries it: as a value, or as a rejection's payload). */
typedef struct uvp_nats_dpromise_s {
  const char *id;                  /**< its key in the bucket */
  uvp_nats_dpromise_state_t state; /**< PENDING, or how it completed */
  int code;              /**< REJECTED: the code uvp_nats_dpromise_reject
                              gave; REJECTED_CANCELED: UV_ECANCELED;
                              REJECTED_TIMEDOUT: UV_ETIMEDOUT; else 0 */
  const char *data;      /**< what resolve or reject stored, NUL-terminated
                              (not counted); "" if nothing */
  size_t len;            /**< data's length */
  uint64_t timeout;      /**< when it times out, ms since the epoch */
  uint64_t created_on;   /**< ms since the epoch */
  uint64_t completed_on; /**< 0 while pending */
  uint64_t revision;     /**< its key's revision when read */
} uvp_nats_dpromise_t;

/** @name uvp_nats_dpromise_create, uvp_nats_dpromise_create_at
 * @{ */
/** A durable promise: a record of key `id` in KV bucket `bucket` (made
 * with uvp_nats_kv_bucket_add, replicated as it is), which outlives the
 * processes that make, complete and await it.  Create it unless it
 * exists (create-if-absent on the key: idempotent by id, whoever calls
 * first), pending with a timeout `timeout_ms` from now (wall clock), and
 * await it: *out settles when it completes, in this process or any other,
 * or at once if it has completed already (a process that restarts and
 * creates the same id gets the outcome stored, not a new promise):
 *   RESOLVED           fulfils with its uvp_nats_dpromise_t *
 *   REJECTED           rejects with the code given to reject
 *   REJECTED_CANCELED  rejects with UV_ECANCELED
 *   REJECTED_TIMEDOUT  rejects with UV_ETIMEDOUT
 * each rejection with the uvp_nats_dpromise_t * as its payload; a
 * rejection with no payload is the binding's own failure (UV_ENOENT: no
 * such bucket, or the record was deleted; a request's codes).  While
 * pending it is watched (an ordered consumer on its key: see
 * uvp_nats_kv_watch), and when its timeout passes this process completes
 * it as REJECTED_TIMEDOUT, unless another did first (compare-and-set).
 * Cancel-safe: cancelling stops the await, not the durable promise
 * (complete that with uvp_nats_dpromise_cancel).  An idle wait
 * (UVP_INFLIGHT_IDLE: it waits on other processes); in the task dump:
 * "JetStream dpromise BUCKET/ID".  The record is Resonate's JSON:
 * {"id","state","param","value":{"headers","data"},"timeout",
 * "createdOn","completedOn","tags"}, where two things differ: "data" is
 * the bytes as a JSON string (UTF-8 text, so that any NATS client reads
 * it), not base64, and a rejection's code is stored by name in the
 * value's headers as "Uvp-Error" (as uvp-nats replies carry it).
 * Created under a trace context (uvp/tracing.h), the record's
 * "param":{"headers"} holds its "traceparent" and "tracestate", where
 * Resonate keeps a promise's headers, for whoever reads the record to
 * continue the trace; a completion keeps the param it read.
 * Errors, nothing sent: UV_EINVAL (NULL, a bad bucket or id: ids are
 * keys, uvp_nats_kv_get; timeout_ms 0 or past year 10 000), UVP_ECLOSED,
 * UV_ENOMEM. */
#define uvp_nats_dpromise_create(...)                                          \
  uvp_nats_dpromise_create_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_dpromise_create_at(uvp_nats_js_t *js, const char *bucket,
                            const char *id, uint64_t timeout_ms,
                            uvp_promise_t **out, const char *file, int line);
/** @} */

/** @name uvp_nats_dpromise_await, uvp_nats_dpromise_await_at
 * @{ */
/** Await durable promise `id` as uvp_nats_dpromise_create does, without
 * creating it: rejects UV_ENOENT (no payload) if there is none. */
#define uvp_nats_dpromise_await(...)                                           \
  uvp_nats_dpromise_await_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_dpromise_await_at(uvp_nats_js_t *js,
                                               const char *bucket,
                                               const char *id,
                                               uvp_promise_t **out,
                                               const char *file, int line);
/** @} */

/** @name uvp_nats_dpromise_resolve, uvp_nats_dpromise_reject,
 * uvp_nats_dpromise_cancel
 * @{ */
/** Complete durable promise `id` if it is still pending: resolved with
 * `len` bytes of `data` (UTF-8 text; NULL and 0: none), rejected with
 * `code` (< 0) and data, or canceled (REJECTED_CANCELED).  A read, then
 * a compare-and-set on the revision read: of two processes completing it
 * at once exactly one wins.  *out fulfils with the record as completed,
 * or rejects with:
 *   UVP_ESETTLED  it had completed already (the loser of a race, or past
 *                 its timeout: then this call completed it as
 *                 REJECTED_TIMEDOUT); the payload is the record as it is
 *   UV_ENOENT     there is no such promise
 *   UV_EAGAIN     ten compare-and-sets in a row found a newer revision
 *                 than the read (replicas lagging the leader)
 * and a request's codes (UVP_NATS_ENORESPONDERS while a cluster elects
 * the bucket's leader: the promise is unchanged, try again), with no
 * payload: only UVP_ESETTLED's carries a record.  Cancel-safe
 * as a publish is: the completion may have been stored.  Errors, nothing
 * sent: UV_EINVAL (NULL, a bad bucket or id, code >= 0, data not UTF-8),
 * UVP_ECLOSED, UV_ENOMEM. */
#define uvp_nats_dpromise_resolve(...)                                         \
  uvp_nats_dpromise_resolve_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int
uvp_nats_dpromise_resolve_at(uvp_nats_js_t *js, const char *bucket,
                             const char *id, const void *data, size_t len,
                             uvp_promise_t **out, const char *file, int line);
#define uvp_nats_dpromise_reject(...)                                          \
  uvp_nats_dpromise_reject_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_dpromise_reject_at(uvp_nats_js_t *js,
                                                const char *bucket,
                                                const char *id, int code,
                                                const void *data, size_t len,
                                                uvp_promise_t **out,
                                                const char *file, int line);
#define uvp_nats_dpromise_cancel(...)                                          \
  uvp_nats_dpromise_cancel_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_dpromise_cancel_at(uvp_nats_js_t *js,
                                                const char *bucket,
                                                const char *id,
                                                uvp_promise_t **out,
                                                const char *file, int line);
/** @} */

/** @name uvp_nats_dpromise_get, uvp_nats_dpromise_get_at
 * @{ */
/** Read durable promise `id`: *out fulfils with its
 * uvp_nats_dpromise_t * (pending or not; one pending past its timeout is
 * completed as REJECTED_TIMEDOUT first, and read so), or rejects
 * UV_ENOENT.  Errors as uvp_nats_dpromise_cancel. */
#define uvp_nats_dpromise_get(...)                                             \
  uvp_nats_dpromise_get_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_NATS_EXTERN int uvp_nats_dpromise_get_at(uvp_nats_js_t *js,
                                             const char *bucket, const char *id,
                                             uvp_promise_t **out,
                                             const char *file, int line);
/** @} */

/** The name of a state ("PENDING", "REJECTED_TIMEDOUT"...), never NULL. */
UVP_NATS_EXTERN const char *
uvp_nats_dpromise_state_name(uvp_nats_dpromise_state_t state);

/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_NATS_JS_H */

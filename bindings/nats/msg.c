/* uvp-nats: messages, as publishes, requests and replies send them
 * (uvp-nats.c says how it fits). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "nats-internal.h"

/* A message with subject, reply, data and the program's headers
 * (uvp_nats__msg_send adds Uvp-Timeout-Ms). */
int uvp_nats__msg_make(natsMsg **out, const char *subject, const char *reply,
                       const void *data, size_t len,
                       const char *const *headers) {
  if (len > INT32_MAX)
    return UV_EMSGSIZE;
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, reply, data, (int)len);
  if (s != NATS_OK || m == NULL) {
    int rc = uvp_nats_code(s);
    return rc != 0 ? rc : UV_ENOMEM;
  }
  for (size_t i = 0; s == NATS_OK && headers != NULL && headers[i]; i++) {
    const char *colon = strchr(headers[i], ':');
    size_t n = colon != NULL ? (size_t)(colon - headers[i]) : 0;
    char name[256];
    if (n == 0 || n >= sizeof(name)) {
      uvp_nats__msg_free(m);
      return UV_EINVAL;
    }
    memcpy(name, headers[i], n);
    name[n] = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
      v++;
    s = natsMsgHeader_Add(m, name, v);
  }
  if (s != NATS_OK) {
    uvp_nats__msg_free(m);
    return uvp_nats_code(s);
  }
  *out = m;
  return 0;
}

/* The decimal digits of v, ending at end (no NUL): where they start. */
char *uvp_nats__u64_digits(char *end, uint64_t v) {
  do {
    *--end = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return end;
}

/* nats.h writes a header only through the message's header map
 * (natsMsgHeader_Set: the map, its bucket array, a copy of the name and
 * of the value, all encoded again at publish and freed with the message).
 * A request's Uvp-Timeout-Ms and cancel token had that made, walked and
 * freed for every request (docs/internals/nats-3.md 21.12).  nats.c's own
 * constructor, natsMsg_create, the one its parser makes what it reads
 * with, takes the headers' bytes instead; nats.c then publishes those
 * bytes as they are, and still reads them (natsMsgHeader_Get) as it reads
 * a received message's.  libnats exports it, nats.h does not declare it:
 * this is its signature in nats.c 3 (src/msg.h), and meson checks that it
 * links.  Anywhere else, and for a payload the stack buffer does not
 * hold, the map. */
#if defined(UVP_NATS_HAVE_MSG_CREATE) && NATS_VERSION_MAJOR == 3
#define MSG_RAW_HEADERS 1
natsStatus natsMsg_create(natsMsg **newMsg, const char *subject, int subjLen,
                          const char *reply, int replyLen, const char *buf,
                          int bufLen, int hdrLen);
#else
#define MSG_RAW_HEADERS 0
#endif

bool uvp_nats__msg_raw_headers(void) { return MSG_RAW_HEADERS; }

enum { REQUEST_MAX = 1024 }; /* headers and payload, on the stack */

#if MSG_RAW_HEADERS
/* "Name: value\r\n" at at: past it. */
static char *header_put(char *at, const char *name, size_t nn, const char *v,
                        size_t vn) {
  memcpy(at, name, nn);
  at[nn] = ':';
  at[nn + 1] = ' ';
  memcpy(at + nn + 2, v, vn);
  memcpy(at + nn + 2 + vn, "\r\n", 2);
  return at + nn + 2 + vn + 2;
}
#endif

int uvp_nats__msg_make_request(natsMsg **out, const char *subject,
                               const char *reply, const void *data, size_t len,
                               const char *const *headers, uint64_t timeout_ms,
                               const char *token, bool sealed) {
  static const char th[] = UVP_NATS_TIMEOUT_HEADER;
  static const char kh[] = UVP_NATS_CANCEL_TOKEN_HEADER;
  bool stamp = timeout_ms != UINT64_MAX;
  char digits[24];
  char *end = digits + sizeof(digits);
  char *d = stamp ? uvp_nats__u64_digits(end, timeout_ms) : end;
  size_t dn = (size_t)(end - d);
#if MSG_RAW_HEADERS
  static const char status[] = "NATS/1.0\r\n";
  size_t hn = sizeof(status) - 1 + 2 + (stamp ? sizeof(th) + 3 + dn : 0) +
              (token != NULL ? sizeof(kh) + 3 + UVP_NATS_CANCEL_TOKEN_LEN : 0);
  if (sealed && headers == NULL && (stamp || token != NULL) &&
      len <= REQUEST_MAX - hn) {
    char buf[REQUEST_MAX];
    char *at = buf + sizeof(status) - 1;
    memcpy(buf, status, sizeof(status) - 1);
    if (stamp)
      at = header_put(at, th, sizeof(th) - 1, d, dn);
    if (token != NULL)
      at = header_put(at, kh, sizeof(kh) - 1, token, UVP_NATS_CANCEL_TOKEN_LEN);
    memcpy(at, "\r\n", 2);
    if (len > 0)
      memcpy(buf + hn, data, len);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_create(&m, subject, (int)strlen(subject), reply,
                                  reply != NULL ? (int)strlen(reply) : 0, buf,
                                  (int)(hn + len), (int)hn);
    if (s != NATS_OK || m == NULL)
      return s != NATS_OK ? uvp_nats_code(s) : UV_ENOMEM;
    *out = m;
    return 0;
  }
#else
  (void)sealed; /* the map's way: headers may come later */
#endif
  natsMsg *m = NULL;
  int rc = uvp_nats__msg_make(&m, subject, reply, data, len, headers);
  if (rc != 0)
    return rc;
  char v[sizeof(digits) + 1];
  memcpy(v, d, dn);
  v[dn] = '\0';
  natsStatus s = NATS_OK;
  if (stamp)
    s = natsMsgHeader_Set(m, th, v);
  if (s == NATS_OK && token != NULL)
    s = natsMsgHeader_Set(m, kh, token);
  if (s != NATS_OK) {
    uvp_nats__msg_free(m);
    return uvp_nats_code(s);
  }
  *out = m;
  return 0;
}

/* Publish m (then destroyed) with Uvp-Timeout-Ms: timeout_ms (unless
 * UINT64_MAX), which a request made while connecting learns only now.
 * nats.c itself refuses a message over the server's max_payload
 * (NATS_MAX_PAYLOAD: UV_EMSGSIZE), headers counted. */
int uvp_nats__msg_send(uvp_nats_t *b, natsMsg *m, uint64_t timeout_ms) {
  natsStatus s = NATS_OK;
  if (timeout_ms != UINT64_MAX) {
    char v[24];
    v[sizeof(v) - 1] = '\0';
    s = natsMsgHeader_Set(m, UVP_NATS_TIMEOUT_HEADER,
                          uvp_nats__u64_digits(v + sizeof(v) - 1, timeout_ms));
  }
  if (s == NATS_OK)
    s = natsConnection_PublishMsg(b->conn, m);
  /* what nats.c buffered, about: the data and a line of protocol */
  size_t n = (size_t)natsMsg_GetDataLength(m) + 128;
  uvp_nats__msg_free(m);
  if (s != NATS_OK)
    return uvp_nats_code(s);
  uvp_nats__sent(b, n);
  return 0;
}

/* Publish, the arguments checked: nats.c's message, then sent. */
int uvp_nats__publish(uvp_nats_t *b, const char *subject, const char *reply,
                      const void *data, size_t len, uint64_t timeout_ms,
                      const char *const *headers) {
  if (b->state != S_OPEN)
    return b->state == S_CONNECTING ? UV_ENOTCONN : UVP_ECLOSED;
  natsMsg *m = NULL;
  int rc = uvp_nats__msg_make(&m, subject, reply, data, len, headers);
  return rc != 0 ? rc : uvp_nats__msg_send(b, m, timeout_ms);
}

/* Checks common to a publish and a request; then nats.c publishes. */
int uvp_nats__publish_msg(uvp_nats_t *b, const char *subject, const char *reply,
                          const void *data, size_t len, uint64_t timeout_ms,
                          const char *const *headers) {
  if (!uvp_nats__subject_ok(subject, false) ||
      (reply != NULL && !uvp_nats__subject_ok(reply, false)) ||
      (data == NULL && len > 0))
    return UV_EINVAL;
  return uvp_nats__publish(b, subject, reply, data, len, timeout_ms, headers);
}

int uvp_nats_publish(uvp_nats_t *nc, const char *subject, const char *reply,
                     const void *data, size_t len, const char *const *headers) {
  if (nc == NULL)
    return UV_EINVAL;
  return uvp_nats__publish_msg(nc, subject, reply, data, len, UINT64_MAX,
                               headers);
}

/* nats.c reads a header only by lifting all of a message's headers into a
 * map (natsMsgHeader_Get: a hash and an entry a header, kept with the
 * message), and a uvp worker's reply always has Uvp-Worker and has
 * Uvp-Error only when it failed: a requester paid the map with every reply
 * it holds to learn, nearly always, that there is no Uvp-Error
 * (docs/internals/nats-3.md 21.12).  nats.c 3 keeps a message it read in
 * one block: the subject, the reply subject, the headers' bytes and the
 * payload, each ended by a NUL.  Where a reply is laid out so, nats.c finds
 * the key exactly when a line of those bytes starts with "Uvp-Error:"
 * (keys are matched as they are written, the first line is the status),
 * so the binding looks for such a line first and asks nats.c only if
 * there is one.  A block it does not recognise (a lifted map has put NULs
 * in it) goes to nats.c. */
#if MSG_RAW_HEADERS
static const char *error_line(const char *h, size_t n) {
  static const char key[] = "\r\n" UVP_NATS_ERROR_HEADER ":";
  for (const char *c = h, *end = h + n; c != NULL;) {
    if ((size_t)(end - c) < sizeof(key) - 1)
      return NULL;
    if (memcmp(c, key, sizeof(key) - 1) == 0)
      return c;
    c = memchr(c + 1, '\r', (size_t)(end - c - 1));
  }
  return NULL;
}

#endif

const char *uvp_nats__error_header(natsMsg *m) {
#if MSG_RAW_HEADERS
  const char *s = natsMsg_GetSubject(m), *r = natsMsg_GetReply(m);
  const char *d = natsMsg_GetData(m);
  const char *h = s != NULL ? s + strlen(s) + 1 : NULL;
  if (h != NULL && r != NULL)
    h = r == h ? r + strlen(r) + 1 : NULL;
  if (h != NULL && d == h)
    return NULL; /* no headers at all */
  if (h != NULL && d != NULL && d > h + 8 && d - h < 65536 && d[-1] == '\0' &&
      memcmp(h, "NATS/1.0", 8) == 0 &&
      memchr(h, '\0', (size_t)(d - 1 - h)) == NULL &&
      error_line(h, (size_t)(d - 1 - h)) == NULL)
    return NULL;
#endif
  return uvp_nats_msg_header(m, UVP_NATS_ERROR_HEADER);
}

const char *uvp_nats_msg_header(natsMsg *msg, const char *name) {
  const char *v = NULL;
  if (msg == NULL || name == NULL ||
      natsMsgHeader_Get(msg, name, &v) != NATS_OK)
    return NULL;
  return v;
}

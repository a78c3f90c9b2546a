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

const char *uvp_nats_msg_header(natsMsg *msg, const char *name) {
  const char *v = NULL;
  if (msg == NULL || name == NULL ||
      natsMsgHeader_Get(msg, name, &v) != NATS_OK)
    return NULL;
  return v;
}

/* The causes of cancellations (cause.h): making, sharing, freeing and
 * saying them. */
#include <stdio.h>
#include <string.h>

#include "cause.h"

#include "alloc.h"

#define STATIC_CAUSE(k)                                                        \
  { .pub = {.kind = (k)}, .refs = 0 }

uvp__cause_t uvp__cause_program = STATIC_CAUSE(UVP_CAUSE_PROGRAM);
uvp__cause_t uvp__cause_closed = STATIC_CAUSE(UVP_CAUSE_CLOSE);

/* Without memory for the details: the kind alone. */
static uvp__cause_t fallback[] = {
    STATIC_CAUSE(UVP_CAUSE_PROGRAM), STATIC_CAUSE(UVP_CAUSE_DEADLINE),
    STATIC_CAUSE(UVP_CAUSE_GROUP),   STATIC_CAUSE(UVP_CAUSE_SIBLING),
    STATIC_CAUSE(UVP_CAUSE_LOSER),   STATIC_CAUSE(UVP_CAUSE_CLOSE),
    STATIC_CAUSE(UVP_CAUSE_BINDING), STATIC_CAUSE(UVP_CAUSE_SIGNAL)};

uvp__cause_t *uvp__cause_new(const uvp_cause_t *proto, uvp_free_cb data_free) {
  size_t len = proto->message != NULL ? strlen(proto->message) + 1 : 0;
  uvp__cause_t *c = uvp__malloc(sizeof(*c) + len);
  if (c == NULL) {
    if (data_free != NULL)
      data_free(proto->data);
    return &fallback[proto->kind];
  }
  c->pub = *proto;
  c->refs = 1;
  c->data_free = data_free;
  if (len != 0)
    c->pub.message = memcpy(c + 1, proto->message, len);
  return c;
}

void uvp__cause_unref(uvp__cause_t *c) {
  if (c->refs == 0 || --c->refs != 0)
    return;
  if (c->data_free != NULL)
    c->data_free(c->pub.data);
  uvp__free(c);
}

static const char *or_unknown(const char *file) {
  return file != NULL ? file : "?";
}

int uvp_cause_format(const uvp_cause_t *c, char *buf, size_t cap) {
  if (cap > 0)
    buf[0] = '\0';
  if (c == NULL)
    return 0;
  const char *f = or_unknown(c->file), *pf = or_unknown(c->peer_file);
  switch (c->kind) {
  case UVP_CAUSE_DEADLINE:
    if (c->file == NULL)
      return c->ms == 0 ? snprintf(buf, cap, "deadline")
                        : snprintf(buf, cap, "deadline %llu ms",
                                   (unsigned long long)c->ms);
    return snprintf(buf, cap, "deadline %llu ms set at %s:%d",
                    (unsigned long long)c->ms, f, c->line);
  case UVP_CAUSE_GROUP:
    if (c->message != NULL)
      return snprintf(buf, cap, "group \"%s\" made at %s:%d cancelled",
                      c->message, f, c->line);
    return snprintf(buf, cap, "group made at %s:%d cancelled", f, c->line);
  case UVP_CAUSE_SIBLING:
    if (c->file == NULL)
      return snprintf(buf, cap, "a sibling failed");
    return snprintf(buf, cap,
                    "sibling created at %s:%d failed: %s (%s made "
                    "at %s:%d)",
                    pf, c->peer_line, uvp_err_name(c->peer_code),
                    c->message != NULL ? c->message : "group", f, c->line);
  case UVP_CAUSE_LOSER:
    if (c->file == NULL)
      return snprintf(buf, cap, "lost a race");
    if (c->message != NULL) /* what settled the input that decided it */
      return snprintf(buf, cap,
                      "lost a race decided at %s:%d (by the input created at "
                      "%s:%d): %s",
                      f, c->line, pf, c->peer_line, c->message);
    return snprintf(buf, cap,
                    "lost a race decided at %s:%d (by the input created at "
                    "%s:%d)",
                    f, c->line, pf, c->peer_line);
  case UVP_CAUSE_CLOSE:
    return snprintf(buf, cap, "context closed (uvp_ctx_close)");
  case UVP_CAUSE_SIGNAL:
    if (c->file == NULL)
      return snprintf(buf, cap, "%s received",
                      c->message != NULL ? c->message : "a signal");
    return snprintf(buf, cap, "%s received (uvp_main_run at %s:%d)",
                    c->message != NULL ? c->message : "a signal", f, c->line);
  case UVP_CAUSE_BINDING:
    return snprintf(buf, cap, "%s",
                    c->message != NULL ? c->message : "cancelled by a binding");
  default:
    return snprintf(buf, cap, "cancelled by the program");
  }
}

/* Error names and messages for uvp's codes, falling back to libuv's. */
#include "internal.h"

unsigned int uvp_version(void) { return UVP_VERSION_HEX; }
const char *uvp_version_string(void) { return UVP_VERSION_STRING; }

static _Thread_local char msg_buf[80];
static _Thread_local char name_buf[32];

const char *uvp_strerror(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case UVP_##name:                                                             \
    return msg;
    UVP_ERRNO_MAP(XX)
#undef XX
  default:
    /* uv_strerror() leaks a strdup for unknown codes; the _r form does not. */
    return uv_strerror_r(code, msg_buf, sizeof(msg_buf));
  }
}

const char *uvp_err_name(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case UVP_##name:                                                             \
    return #name;
    UVP_ERRNO_MAP(XX)
#undef XX
  default:
    return uv_err_name_r(code, name_buf, sizeof(name_buf));
  }
}

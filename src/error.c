/* Error names and messages for uvp's codes, falling back to libuv's. */
#include <string.h>

#include "base.h"

unsigned int uvp_version(void) { return UVP_VERSION_HEX; }
const char *uvp_version_string(void) { return UVP_VERSION_STRING; }

static _Thread_local char msg_buf[80];
static _Thread_local char name_buf[32];

/* uv_strerror()/uv_err_name() return static strings for the codes libuv
 * knows, but leak a strdup for any other; the _r forms never leak but copy
 * into the caller's buffer.  So: static strings when libuv knows the code,
 * the per-thread buffer only for unknown ones. */
static bool is_known(int code) {
  char buf[32];
  uv_err_name_r(code, buf, sizeof(buf));
  return strncmp(buf, "Unknown system error", 20) != 0;
}

const char *uvp_strerror(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case UVP_##name:                                                             \
    return msg;
    UVP_ERRNO_MAP(XX)
#undef XX
  case 0: /* libuv: "Unknown system error 0", for an allSettled success */
    return "success";
  default:
    return is_known(code) ? uv_strerror(code)
                          : uv_strerror_r(code, msg_buf, sizeof(msg_buf));
  }
}

const char *uvp_err_name(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case UVP_##name:                                                             \
    return #name;
    UVP_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "OK";
  default:
    return is_known(code) ? uv_err_name(code)
                          : uv_err_name_r(code, name_buf, sizeof(name_buf));
  }
}

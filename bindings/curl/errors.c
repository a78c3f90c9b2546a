/* uvp-curl's errors: its codes' names and messages (uvp_curl_strerror,
 * uvp_curl_err_name); a CURLcode as a uv code (uvp_curl_code, and
 * uvp_curl__map_code with a finished transfer's own message); and the
 * uvp_curl_error_t a rejection carries.  The ground floor: it calls no
 * other file of the binding; transfers.c settles with what it makes. */
#include "curl-internal.h"

const char *uvp_curl_strerror(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return msg;
    UVP_CURL_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_strerror(code);
  }
}

const char *uvp_curl_err_name(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return #name;
    UVP_CURL_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_err_name(code);
  }
}

/* The system's error libcurl saw, if it kept one; for a send or receive
 * error only if its message names it (libcurl leaves CURLINFO_OS_ERRNO as
 * it was when a TLS or proxy error is not a system call's). */
static int os_error(CURL *easy, const char *msg, int fallback) {
  long e = 0;
  if (easy == NULL || curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &e) != 0 ||
      e <= 0)
    return fallback;
  if (msg != NULL && strstr(msg, strerror((int)e)) == NULL)
    return fallback;
  return uv_translate_sys_error((int)e);
}

static int connected(CURL *easy) {
  char *ip = NULL;
  return easy != NULL &&
         curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK &&
         ip != NULL && *ip != '\0';
}

int uvp_curl__map_code(CURLcode code, CURL *easy, const char *msg) {
  switch (code) {
  case CURLE_OK:
    return 0;
  case CURLE_COULDNT_CONNECT:
    return os_error(easy, NULL, UV_ECONNREFUSED);
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
    return os_error(easy, msg, UV_EPROTO);
  case CURLE_OPERATION_TIMEDOUT:
    return UV_ETIMEDOUT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return UV_EAI_NONAME;
  case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_HTTP3:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_PROXY:
    return UV_EPROTO;
  case CURLE_UNSUPPORTED_PROTOCOL:
    return connected(easy) ? UV_EPROTO : UV_EINVAL;
  case CURLE_URL_MALFORMAT:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_UNKNOWN_OPTION:
  case CURLE_SETOPT_OPTION_SYNTAX:
    return UV_EINVAL;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_USE_SSL_FAILED:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
    return UVP_CURL_ETLS;
  case CURLE_TOO_MANY_REDIRECTS:
    return UV_ELOOP;
  case CURLE_FILESIZE_EXCEEDED:
    return UV_EFBIG;
  case CURLE_LOGIN_DENIED:
  case CURLE_REMOTE_ACCESS_DENIED:
  case CURLE_AUTH_ERROR:
    return UV_EACCES;
  case CURLE_ABORTED_BY_CALLBACK:
    return UV_ECANCELED;
  case CURLE_WRITE_ERROR:
  case CURLE_READ_ERROR:
  case CURLE_SEND_FAIL_REWIND:
    return UV_EIO;
  case CURLE_OUT_OF_MEMORY:
    return UV_ENOMEM;
  case CURLE_NOT_BUILT_IN:
    return UV_ENOTSUP;
  case CURLE_INTERFACE_FAILED:
    return UV_EADDRNOTAVAIL;
  case CURLE_HTTP_RETURNED_ERROR:
    return UVP_CURL_EHTTP;
  default:
    return UVP_CURL_ECURL;
  }
}

int uvp_curl_code(CURLcode code, CURL *easy) {
  const char *msg = curl_easy_strerror(code);
  return uvp_curl__map_code(code, easy, msg);
}

uvp_curl_error_t *uvp_curl__error_new(CURLcode code, const char *msg) {
  uvp_curl_error_t *e = malloc(sizeof(*e));
  if (e == NULL)
    return NULL;
  e->code = code;
  snprintf(e->message, sizeof(e->message), "%s",
           msg != NULL && *msg != '\0' ? msg : curl_easy_strerror(code));
  return e;
}

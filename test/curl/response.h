/* What test-curl and test-curl-nginx both read of a settled transfer:
 * its response, or a test failure naming the code and libcurl's message
 * when it rejected (what a bare assert on the state would not say). */
#ifndef UVP_TEST_CURL_RESPONSE_H
#define UVP_TEST_CURL_RESPONSE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "uvp-curl.h"

static inline const uvp_curl_response_t *response_of(uvp_promise_t *p) {
  if (uvp_promise_state(p) != UVP_FULFILLED) {
    void *payload = NULL;
    int code = uvp_promise_reason(p, &payload);
    fail_msg("rejected: %s (%s)", uvp_curl_err_name(code),
             payload ? ((uvp_curl_error_t *)payload)->message : "-");
  }
  return uvp_promise_value(p);
}

#endif

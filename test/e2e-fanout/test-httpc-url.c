/* httpc_url_parse on the URLs a user may hand uvp-fanout or uvp-gateway:
 * the parts a request is made of (host to connect to, port, Host header,
 * request target, TLS or not), and every URL httpc refuses with its code and a
 * message that says why.  Then httpc_get: a refused URL is a rejected
 * promise carrying that message. */
#include <strings.h>

#include "../helpers.h"

#include "httpc.h"

typedef struct good_s {
  const char *url, *host;
  int port;
  const char *authority, *target;
} good_t;

static void test_parts(void **state) {
  (void)state;
  static const good_t good[] = {
      {"http://127.0.0.1:8080/a/b?x=1&y=%20#frag", "127.0.0.1", 8080,
       "127.0.0.1:8080", "/a/b?x=1&y=%20"},
      /* Empty path: the target is "/", before a query too. */
      {"http://example.com", "example.com", 80, "example.com", "/"},
      {"http://example.com/", "example.com", 80, "example.com", "/"},
      {"http://example.com?q", "example.com", 80, "example.com", "/?q"},
      {"http://example.com#top", "example.com", 80, "example.com", "/"},
      {"http://example.com//twice", "example.com", 80, "example.com",
       "//twice"},
      /* IPv6 literals: brackets in the Host header, not in the address. */
      {"http://[::1]:9000/x", "::1", 9000, "[::1]:9000", "/x"},
      {"http://[2001:db8::7]", "2001:db8::7", 80, "[2001:db8::7]", "/"},
      {"http://[::ffff:127.0.0.1]:1/", "::ffff:127.0.0.1", 1,
       "[::ffff:127.0.0.1]:1", "/"},
      /* https: port 443 unless given. */
      {"https://127.0.0.1/", "127.0.0.1", 443, "127.0.0.1", "/"},
      {"HTTPS://h:8443/x", "h", 8443, "h:8443", "/x"},
      /* Scheme case does not matter; the authority is sent as written. */
      {"HTTP://Example.COM:65535/P", "Example.COM", 65535, "Example.COM:65535",
       "/P"},
      {"http://h:0080/", "h", 80, "h:0080", "/"},
  };
  for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
    httpc_url_t u;
    const char *why = "unset";
    int rc = httpc_url_parse(good[i].url, &u, &why);
    if (rc != 0)
      fail_msg("%s: %s (%s)", good[i].url, uv_err_name(rc), why);
    assert_null(why);
    assert_string_equal(u.host, good[i].host);
    assert_int_equal(u.port, good[i].port);
    assert_string_equal(u.authority, good[i].authority);
    assert_string_equal(u.target, good[i].target);
    assert_int_equal(u.tls, strncasecmp(good[i].url, "https:", 6) == 0);
    httpc_url_free(&u);
  }
}

typedef struct bad_s {
  const char *url;
  int code;
  const char *why; /* a word the message must contain */
} bad_t;

static void test_refused(void **state) {
  (void)state;
  static const bad_t bad[] = {
      {"HTTPS://h:99999/", UV_EINVAL, "port"},
      {"https://user@h/", UV_EINVAL, "user"},
      {"ftp://127.0.0.1/", UV_EINVAL, "http://"},
      {"127.0.0.1:8080/x", UV_EINVAL, "malformed"},
      {"localhost:8080/x", UV_EINVAL, "http://"},
      {"/relative", UV_EINVAL, "http://"},
      {"", UV_EINVAL, "http://"},
      {"http://", UV_EINVAL, "host"},
      {"http:/x", UV_EINVAL, "host"},
      {"http:x", UV_EINVAL, "host"},
      /* Credentials would need an Authorization header: refused rather
       * than dropped. */
      {"http://user:secret@127.0.0.1/", UV_EINVAL, "user"},
      {"http://user@[::1]/", UV_EINVAL, "user"},
      {"http://@h/", UV_EINVAL, "user"},
      {"http://h:0/", UV_EINVAL, "port"},
      {"http://h:65536/", UV_EINVAL, "port"},
      {"http://[::1]:70000/", UV_EINVAL, "port"},
      {"http://h:99999999999999999999999/", UV_EINVAL, "port"},
      {"http://h:/", UV_EINVAL, "port"},
      {"http://h:8a/", UV_EINVAL, "malformed"},
      {"http://[::1/", UV_EINVAL, "malformed"},
      {"http://[::1]x/", UV_EINVAL, "malformed"},
      {"http://[v1.fe]/", UV_EINVAL, "IP literal"},
      /* What a request line cannot carry. */
      {"http://h/a b", UV_EINVAL, "malformed"},
      {"http://h/a\r\nX-Injected: 1", UV_EINVAL, "malformed"},
      {"http://h/\xc3\xa9", UV_EINVAL, "malformed"},
      {"http://h/%zz", UV_EINVAL, "malformed"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    httpc_url_t u;
    const char *why = NULL;
    int rc = httpc_url_parse(bad[i].url, &u, &why);
    if (rc != bad[i].code)
      fail_msg("%s: %s, expected %s", bad[i].url, uv_err_name(rc),
               uv_err_name(bad[i].code));
    assert_non_null(why);
    if (strstr(why, bad[i].why) == NULL)
      fail_msg("%s: message '%s' does not say '%s'", bad[i].url, why,
               bad[i].why);
  }
}

/* A refused URL is the request's outcome: a rejected promise with the
 * message as payload, nothing started. */
static void test_get_rejects(void **state) {
  fixture_t *f = *state;
  /* Released unobserved on purpose. */
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  static const bad_t bad[] = {
      {"http://user@127.0.0.1:1/", UV_EINVAL, "user"},
      {"http://127.0.0.1:65536/", UV_EINVAL, "port"},
      {"https://127.0.0.1:0/", UV_EINVAL, "port"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    uvp_promise_t *p;
    assert_int_equal(httpc_get(f->ctx, bad[i].url, NULL, &p), 0);
    assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
    void *payload = NULL;
    assert_int_equal(uvp_promise_reason(p, &payload), bad[i].code);
    assert_non_null(payload);
    assert_non_null(strstr(payload, bad[i].why));
    assert_non_null(strstr(httpc_strerror(bad[i].code), "URL"));
    uvp_promise_release(p);
  }
  run_loop(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parts),
      cmocka_unit_test(test_refused),
      FIXTURE_TEST(test_get_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

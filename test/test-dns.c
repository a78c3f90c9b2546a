/* uvp_getaddrinfo against the local resolver only: "localhost" (from
 * /etc/hosts, where there is one) and numeric addresses, since no DNS server is
 * reachable where the tests run.  Cancellation before and after the pool picked
 * the lookup up, and teardown with a lookup in flight; valgrind and ASan check
 * that every result list is freed exactly once. */
#include <arpa/inet.h>
#include <netdb.h>

#include "helpers.h"

static struct addrinfo hints_for(int family, int flags) {
  struct addrinfo h;
  memset(&h, 0, sizeof(h));
  h.ai_family = family;
  h.ai_socktype = SOCK_STREAM;
  h.ai_flags = flags;
  return h;
}

/* Whether the list holds 127.0.0.1 with `port`. */
static bool has_loopback_v4(const struct addrinfo *ai, int port) {
  for (; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET)
      continue;
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;
    if (sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
        ntohs(sin->sin_port) == port)
      return true;
  }
  return false;
}

/* A name the local resolver knows: "localhost" where /etc/hosts maps it
 * (any installed system), else the numeric address (a bare debootstrap root
 * has no /etc/hosts, and no DNS server is reachable here). */
static const char *local_name(uv_loop_t *loop) {
  uv_getaddrinfo_t req;
  struct addrinfo h = hints_for(AF_INET, 0);
  if (uv_getaddrinfo(loop, &req, NULL, "localhost", "80", &h) == 0) {
    uv_freeaddrinfo(req.addrinfo);
    return "localhost";
  }
  return "127.0.0.1";
}

/* uvp's outcome must be exactly the system resolver's: the same address
 * list when "localhost" resolves, the same code when it does not. */
static void test_localhost_resolves(void **state) {
  fixture_t *f = *state;
  struct addrinfo h = hints_for(AF_INET, 0);
  uv_getaddrinfo_t sync;
  int expect = uv_getaddrinfo(&f->loop, &sync, NULL, "localhost", "80", &h);
  if (expect == 0)
    uv_freeaddrinfo(sync.addrinfo);
  uvp_promise_t *p;
  assert_int_equal(uvp_getaddrinfo(f->ctx, "localhost", "80", &h, &p), 0);
  assert_int_equal(uvp_promise_state(p), UVP_PENDING);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(p, NULL), expect);
  if (expect == 0) {
    assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
    assert_true(has_loopback_v4(uvp_promise_value(p), 80));
  } else {
    assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  }
  uvp_promise_release(p);
}

static void test_numeric_address_resolves(void **state) {
  fixture_t *f = *state;
  struct addrinfo h = hints_for(AF_UNSPEC, AI_NUMERICHOST | AI_NUMERICSERV);
  uvp_promise_t *p;
  assert_int_equal(uvp_getaddrinfo(f->ctx, "127.0.0.1", "8080", &h, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_true(has_loopback_v4(uvp_promise_value(p), 8080));
  uvp_promise_release(p);
}

/* Without hints and without a service, as the NULL cases are allowed. */
static void test_node_only_no_hints(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_getaddrinfo(f->ctx, "127.0.0.1", NULL, NULL, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_true(has_loopback_v4(uvp_promise_value(p), 0));
  uvp_promise_release(p);
}

/* AI_NUMERICHOST makes the failure independent of any network. */
static void test_invalid_numeric_name_rejects_eai_noname(void **state) {
  fixture_t *f = *state;
  struct addrinfo h = hints_for(AF_UNSPEC, AI_NUMERICHOST);
  uvp_promise_t *p;
  assert_int_equal(
      uvp_getaddrinfo(f->ctx, "no-such-host.invalid", NULL, &h, &p), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_EAI_NONAME);
  assert_string_equal(uvp_err_name(UV_EAI_NONAME), "EAI_NONAME");
  uvp_promise_release(p);
}

/* A real lookup (through the resolver, no AI_NUMERICHOST) of a name that
 * cannot exist: which UV_EAI_* code comes back depends on the resolver
 * (NONAME, AGAIN, ...), but it is one of them. */
static void test_unknown_name_rejects_with_eai_code(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_getaddrinfo(f->ctx, UNRESOLVABLE_NAME, "80", NULL, &p),
                   0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
  int code = uvp_promise_reason(p, NULL);
  assert_true(code <= UV_EAI_ADDRFAMILY && code >= UV_EAI_PROTOCOL);
  assert_memory_equal(uvp_err_name(code), "EAI_", 4);
  uvp_promise_release(p);
}

/* The pool may or may not have picked the lookup up already: either way
 * the promise rejects at once and the result (if any) is freed later. */
static void test_cancel_right_after_start(void **state) {
  fixture_t *f = *state;
  for (int i = 0; i < 20; i++) {
    uvp_promise_t *p;
    assert_int_equal(
        uvp_getaddrinfo(f->ctx, local_name(&f->loop), "80", NULL, &p), 0);
    assert_int_equal(uvp_promise_cancel(p), 0);
    assert_int_equal(uvp_promise_state(p), UVP_REJECTED);
    assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
    uvp_promise_release(p);
  }
  run_loop(f);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

/* ---- with every pool thread busy, a lookup is surely still queued -------- */

typedef struct blocker_s {
  uv_work_t req[64];
  uv_sem_t go;
  size_t n;
} blocker_t;

static void block_work(uv_work_t *req) { uv_sem_wait(req->data); }
static void block_done(uv_work_t *req, int status) {
  (void)req;
  assert_int_equal(status, 0);
}

static void pool_block(fixture_t *f, blocker_t *b) {
  b->n = uvp_pool_size();
  assert_true(b->n <= 64);
  assert_int_equal(uv_sem_init(&b->go, 0), 0);
  for (size_t i = 0; i < b->n; i++) {
    b->req[i].data = &b->go;
    assert_int_equal(
        uv_queue_work(&f->loop, &b->req[i], block_work, block_done), 0);
  }
}

static void pool_unblock(fixture_t *f, blocker_t *b) {
  for (size_t i = 0; i < b->n; i++)
    uv_sem_post(&b->go);
  run_loop(f);
  uv_sem_destroy(&b->go);
}

static void test_cancel_before_the_pool_starts_it(void **state) {
  fixture_t *f = *state;
  blocker_t b;
  pool_block(f, &b);
  uvp_promise_t *p;
  assert_int_equal(
      uvp_getaddrinfo(f->ctx, local_name(&f->loop), "80", NULL, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  /* Cancelling twice is a no-op, as for any settled promise. */
  assert_int_equal(uvp_promise_cancel(p), UVP_ESETTLED);
  uvp_promise_release(p);
  pool_unblock(f, &b);
}

static void test_teardown_with_pending_lookup(void **state) {
  fixture_t *f = *state;
  blocker_t b;
  pool_block(f, &b);
  uvp_promise_t *queued, *running;
  assert_int_equal(
      uvp_getaddrinfo(f->ctx, local_name(&f->loop), "80", NULL, &queued), 0);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(queued, NULL), UVP_ECLOSED);
  uvp_promise_release(queued);
  pool_unblock(f, &b);

  /* And one that the pool may already be running when the context goes. */
  assert_int_equal(uvp_ctx_new(&f->loop, &f->ctx), 0);
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, ignore_unhandled, NULL), 0);
  assert_int_equal(
      uvp_getaddrinfo(f->ctx, local_name(&f->loop), "80", NULL, &running), 0);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(running, NULL), UVP_ECLOSED);
  run_loop(f);
  uvp_promise_release(running); /* after teardown, as the header allows */
}

static void test_many_lookups_all_settled(void **state) {
  fixture_t *f = *state;
  enum { N = 32 };
  uvp_promise_t *ps[N], *all;
  struct addrinfo h = hints_for(AF_INET, 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_getaddrinfo(f->ctx,
                                     i % 2 ? local_name(&f->loop) : "127.0.0.1",
                                     "443", &h, &ps[i]),
                     0);
  assert_int_equal(uvp_promise_all(f->ctx, ps, N, 0, &all), 0);
  for (int i = 0; i < N; i++)
    uvp_promise_release(ps[i]);
  run_loop(f);
  assert_int_equal(uvp_promise_state(all), UVP_FULFILLED);
  uvp_values_t *v = uvp_promise_value(all);
  assert_int_equal(v->count, N);
  for (int i = 0; i < N; i++)
    assert_true(has_loopback_v4(v->values[i], 443));
  uvp_promise_release(all);
}

static void test_bad_input(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p = NULL;
  assert_int_equal(uvp_getaddrinfo(NULL, "localhost", NULL, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_getaddrinfo(f->ctx, "localhost", NULL, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(uvp_getaddrinfo(f->ctx, NULL, NULL, NULL, &p), UV_EINVAL);
  assert_null(p);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
  /* After uvp_ctx_close: refused, no lookup started. */
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_getaddrinfo(ctx, "127.0.0.1", NULL, NULL, &p),
                   UVP_ECLOSED);
  assert_null(p);
  run_loop(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_localhost_resolves),
      QUIET_TEST(test_numeric_address_resolves),
      QUIET_TEST(test_node_only_no_hints),
      QUIET_TEST(test_invalid_numeric_name_rejects_eai_noname),
      QUIET_TEST(test_unknown_name_rejects_with_eai_code),
      QUIET_TEST(test_cancel_right_after_start),
      QUIET_TEST(test_cancel_before_the_pool_starts_it),
      QUIET_TEST(test_teardown_with_pending_lookup),
      QUIET_TEST(test_many_lookups_all_settled),
      QUIET_TEST(test_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

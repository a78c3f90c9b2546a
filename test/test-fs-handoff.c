/* A handler returning a fs request it has just started hands the request to
 * its derived promise; when libuv's request is cleaned relative to its
 * promise's settling, watched through libuv's allocator. */
#include <stdatomic.h>

#include "fs-helpers.h"

/* ---- a handler returning a fresh request --------------------------------- */

/* A handler that returns a request it has just started hands the request
 * to its derived promise (see take_over in promise.c): the request's own
 * promise is freed at once instead of being adopted.  What users observe
 * must not change: values, order, cancellation, and a request promise the
 * handler kept for itself. */
typedef struct handoff_s {
  fixture_t *f;
  const char *path;
  int flags;
  uvp_promise_t *kept; /* the request's promise, if the handler keeps it */
  bool keep;
  int ran;
  size_t live_in_read; /* live promises seen by the read step */
  char buf[16];
} handoff_t;

static uvp_ret_t handoff_open(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  (void)in;
  h->ran++;
  uvp_promise_t *q;
  int rc = uvp_fs_open(h->f->ctx, h->path, h->flags, 0644, &q);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  if (h->keep)
    h->kept = uvp_promise_retain(q);
  return uvp_ret_adopt(q);
}

static uvp_ret_t handoff_read(void *arg, const uvp_outcome_t *in) {
  handoff_t *h = arg;
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(h->f->ctx, &st), 0);
  h->live_in_read = st.live;
  uvp_promise_t *q;
  int rc = uvp_fs_read(h->f->ctx, (uv_file)UVP_INT(in->value), h->buf,
                       sizeof(h->buf) - 1, 0, &q);
  return rc != 0 ? uvp_ret_reject(rc, NULL, NULL) : uvp_ret_adopt(q);
}

/* start -> open (returned by a handler) -> read (returned by a handler).
 * Returns the final promise; *opened gets the open step's. */
static uvp_promise_t *handoff_chain(handoff_t *h, uvp_promise_t **opened) {
  uvp_promise_t *start, *read;
  assert_int_equal(uvp_promise_new(h->f->ctx, &start), 0);
  assert_int_equal(uvp_promise_then(start, handoff_open, h, opened), 0);
  assert_int_equal(uvp_promise_then(*opened, handoff_read, h, &read), 0);
  assert_int_equal(uvp_promise_resolve(start, NULL, NULL), 0);
  uvp_promise_release(start);
  return read;
}

static void test_handler_hands_request_on(void **state) {
  fixture_t *f = *state;
  put("a", "hand-off", 8);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  size_t base = st.live;

  handoff_t h = {.f = f, .path = at("a"), .flags = O_RDONLY};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  void *n = value_of(f, 0, read);
  assert_int_equal(UVP_INT(n), 8);
  assert_string_equal(h.buf, "hand-off");
  assert_int_equal(h.ran, 1);
  /* While the read step ran: `opened` and `read`, and nothing else.  An
   * adopted open would still be alive, owning the value `opened` shows. */
  assert_int_equal(h.live_in_read, base + 2);
  uv_file fd = (uv_file)UVP_INT(uvp_promise_value(opened));
  assert_true(fd >= 0);
  assert_int_equal(close(fd), 0);
  uvp_promise_release(opened);
  uvp_promise_release(read);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, base);
}

/* A handler that keeps the request's promise: that promise is adopted as
 * before, and settles with the same value as the derived one. */
static void test_handler_keeps_request(void **state) {
  fixture_t *f = *state;
  put("a", "kept", 4);
  handoff_t h = {.f = f, .path = at("a"), .flags = O_RDONLY, .keep = true};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  void *n = value_of(f, 0, read);
  assert_int_equal(UVP_INT(n), 4);
  assert_string_equal(h.buf, "kept");
  assert_non_null(h.kept);
  assert_int_equal(uvp_promise_state(h.kept), UVP_FULFILLED);
  assert_ptr_equal(uvp_promise_value(h.kept), uvp_promise_value(opened));
  assert_int_equal(close((uv_file)UVP_INT(uvp_promise_value(opened))), 0);
  uvp_promise_release(h.kept);
  uvp_promise_release(opened);
  uvp_promise_release(read);
}

/* libuv's allocator, replaced in main() before libuv allocates anything,
 * to see when libuv frees its copy of one path: the first block of
 * `watch_len` bytes allocated while `watch_armed` is set. */
static _Atomic size_t watch_len;
static _Atomic bool watch_armed;
static void *_Atomic watched;
static _Atomic bool watched_freed;
/* If set, its state when the watched block is freed (loop thread only). */
static uvp_promise_t *watched_owner;
static int watched_owner_state;

/* Watch the next block libuv allocates for `path` (its copy of it). */
static void watch_path_copy(const char *path) {
#if defined(_WIN32)
  /* libuv for Windows keeps the path as UTF-16 and, for a request with a
   * callback, a copy as given, in one block (fs__capture_path): ASCII
   * here, so two bytes a character and one. */
  atomic_store(&watch_len, 3 * (strlen(path) + 1));
#else
  atomic_store(&watch_len, strlen(path) + 1);
#endif
  atomic_store(&watched_freed, false);
  atomic_store(&watched, NULL);
  atomic_store(&watch_armed, true);
}

static void *uv_malloc_hook(size_t n) {
  void *p = malloc(n);
  if (p != NULL && n == atomic_load(&watch_len) &&
      atomic_exchange(&watch_armed, false))
    atomic_store(&watched, p);
  return p;
}
static void uv_free_hook(void *p) {
  if (p != NULL && p == atomic_load(&watched)) {
    atomic_store(&watched, NULL);
    atomic_store(&watched_freed, true);
    if (watched_owner != NULL)
      watched_owner_state = uvp_promise_state(watched_owner);
  }
  free(p);
}
static void *uv_realloc_hook(void *p, size_t n) {
  assert_true(p == NULL || p != atomic_load(&watched));
  return realloc(p, n);
}
static void *uv_calloc_hook(size_t n, size_t size) { return calloc(n, size); }

/* What a handler saw: whether libuv's path copy was already freed, and the
 * outcome, its value read while the handler runs (a stat's lives only as
 * long as the result; 0 on failure). */
typedef struct {
  bool ran;
  bool freed_in_handler;
  int status;
  int64_t value;
} seen_t;

static void note(seen_t *seen, const uvp_outcome_t *in, int64_t value) {
  seen->ran = true;
  seen->freed_in_handler = atomic_load(&watched_freed);
  seen->status = in->status;
  seen->value = value;
}

static uvp_ret_t note_stat(void *arg, const uvp_outcome_t *in) {
  note(arg, in,
       in->status == 0 ? (int64_t)((const uv_stat_t *)in->value)->st_size : 0);
  return uvp_ret_pass();
}

static uvp_ret_t note_outcome(void *arg, const uvp_outcome_t *in) {
  note(arg, in, in->status == 0 ? UVP_INT(in->value) : 0);
  return uvp_ret_pass();
}

/* A stat's request is cleaned (libuv's copy of the path freed) when the
 * result is released, not when it settles: after the handler that reads it
 * (see stat_free in src/fs.c for why).  Either way exactly once. */
static void test_stat_request_cleaned_with_its_result(void **state) {
  fixture_t *f = *state;
  put("stat-request-cleaned-with-its-result", "12345", 5);
  const char *path = at("stat-request-cleaned-with-its-result");
  for (int keep = 0; keep < 2; keep++) {
    watch_path_copy(path);
    uvp_promise_t *p, *d;
    assert_int_equal(uvp_fs_stat(f->ctx, path, &p), 0);
    atomic_store(&watch_armed, false);
    assert_non_null(atomic_load(&watched)); /* libuv copied the path */
    seen_t seen = {0};
    assert_int_equal(uvp_promise_then(p, note_stat, &seen, &d), 0);
    if (!keep)
      uvp_promise_release(p);
    run_loop(f);
    assert_true(seen.ran);
    assert_int_equal(seen.status, 0);
    assert_int_equal(seen.value, 5);
    assert_false(seen.freed_in_handler);
    assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
    uvp_promise_release(d);
    /* The stat promise's last reference was the handler's (keep == 0) or
     * is still ours (keep == 1). */
    assert_int_equal(atomic_load(&watched_freed), !keep);
    if (keep) {
      const uv_stat_t *st = uvp_promise_value(p);
      assert_int_equal(st->st_size, 5);
      uvp_promise_release(p);
      assert_true(atomic_load(&watched_freed));
    }
  }
}

/* Where the value is the result alone (an open's descriptor) or the
 * request failed (a stat of a missing name), the request is cleaned in
 * libuv's callback, as a hand-written one does (see simple_cb in
 * src/fs.c): libuv's copy of the path is freed while the promise is still
 * pending, and the settle does not clean it again. */
static void test_request_cleaned_before_settling(void **state) {
  fixture_t *f = *state;
  put("request-cleaned-before-settling", "12345", 5);
  for (int missing = 0; missing < 2; missing++) {
    const char *path = at(missing ? "request-cleaned-before-settling-not"
                                  : "request-cleaned-before-settling");
    watch_path_copy(path);
    uvp_promise_t *p, *d;
    int rc = missing ? uvp_fs_stat(f->ctx, path, &p)
                     : uvp_fs_open(f->ctx, path, O_RDONLY, 0, &p);
    assert_int_equal(rc, 0);
    atomic_store(&watch_armed, false);
    assert_non_null(atomic_load(&watched)); /* libuv copied the path */
    watched_owner = p;
    watched_owner_state = -1;
    seen_t seen = {0};
    assert_int_equal(uvp_promise_on(p, UVP_ON_BOTH, note_outcome, &seen, &d),
                     0);
    run_loop(f);
    assert_int_equal(watched_owner_state, UVP_PENDING);
    watched_owner = NULL;
    uvp_promise_release(p);
    assert_true(seen.ran);
    assert_true(seen.freed_in_handler);
    if (missing) {
      assert_int_equal(seen.status, UV_ENOENT);
    } else {
      assert_int_equal(seen.status, 0);
      assert_true(seen.value >= 0);
      assert_int_equal(close((uv_file)seen.value), 0);
    }
    uvp_promise_release(d);
  }
}

/* Cancelling the derived promise that took a request over cancels the
 * request itself: queued behind a full pool, it never runs. */
static void test_cancel_handed_on_request(void **state) {
  fixture_t *f = *state;
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);

  handoff_t h = {.f = f, .path = at("created"), .flags = O_WRONLY | O_CREAT};
  uvp_promise_t *opened;
  uvp_promise_t *read = handoff_chain(&h, &opened);
  for (int i = 0; i < 100 && h.ran == 0; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(h.ran, 1);
  assert_int_equal(uvp_promise_state(opened), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(opened), 0);
  assert_int_equal(uvp_promise_reason(opened, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(opened), UVP_ESETTLED);

  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  assert_int_equal(uvp_promise_reason(opened, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_reason(read, NULL), UV_ECANCELED);
  assert_false(exists("created"));
  uvp_promise_release(opened);
  uvp_promise_release(read);
}

int main(void) {
  /* Before libuv allocates anything: see uv_malloc_hook. */
  if (uv_replace_allocator(uv_malloc_hook, uv_realloc_hook, uv_calloc_hook,
                           uv_free_hook) != 0)
    return 1;
  const struct CMUnitTest tests[] = {
      FS_TEST(test_handler_hands_request_on),
      FS_TEST(test_handler_keeps_request),
      FS_TEST(test_stat_request_cleaned_with_its_result),
      FS_TEST(test_request_cleaned_before_settling),
      FS_TEST(test_cancel_handed_on_request),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

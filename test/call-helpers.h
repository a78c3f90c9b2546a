/* Calls between loops in the tests: a target, a context on a loop of its
 * own thread (test-call.c, test-call-teardown.c). */
#ifndef TEST_CALL_HELPERS_H
#define TEST_CALL_HELPERS_H

#include "helpers.h"

/* ---- a target: a context on a loop of its own thread ------------------- */

typedef struct target_s {
  uv_thread_t th;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_async_t stop;
  uv_sem_t ready;
  uv_thread_t id; /* its loop thread */
  int close_rc;   /* its uvp_ctx_close */
  int loop_rc;    /* its uv_loop_close, once its loop has ended */
  uv_check_t turn;
  long turns; /* its loop's iterations (its thread only) */
} target_t;

static inline void target_turn(uv_check_t *c) {
  ((target_t *)c->data)->turns++;
}

static inline void target_stop(uv_async_t *a) {
  target_t *t = a->data;
  t->close_rc = uvp_ctx_close(t->ctx);
  uv_close((uv_handle_t *)a, NULL);
  uv_close((uv_handle_t *)&t->turn, NULL);
}

static inline void target_main(void *arg) {
  target_t *t = arg;
  t->id = uv_thread_self();
  if (uv_loop_init(&t->loop) != 0 || uvp_ctx_new(&t->loop, &t->ctx) != 0)
    abort();
  uv_async_init(&t->loop, &t->stop, target_stop);
  t->stop.data = t;
  uv_check_init(&t->loop, &t->turn);
  t->turn.data = t;
  uv_check_start(&t->turn, target_turn);
  uv_unref((uv_handle_t *)&t->turn);
  uv_sem_post(&t->ready);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  t->loop_rc = uv_loop_close(&t->loop);
}

static inline void target_start(target_t *t) {
  memset(t, 0, sizeof(*t));
  t->close_rc = t->loop_rc = -1;
  assert_int_equal(uv_sem_init(&t->ready, 0), 0);
  assert_int_equal(uv_thread_create(&t->th, target_main, t), 0);
  uv_sem_wait(&t->ready);
  uv_sem_destroy(&t->ready);
}

/* Closes its context on its thread and waits for its loop to close. */
static inline void target_join(target_t *t) {
  uv_async_send(&t->stop);
  assert_int_equal(uv_thread_join(&t->th), 0);
  assert_int_equal(t->close_rc, 0);
  assert_int_equal(t->loop_rc, 0);
}

/* The caller's loop runs until its calls are answered too. */
static inline void caller_join(fixture_t *f, target_t *t) {
  target_join(t);
  run_loop(f);
}

/* A posted call's done callback that wakes the thread waiting on the
 * semaphore arg (the call's outcome is the test's to check elsewhere). */
static inline void sem_posted(void *arg, int code, void *value,
                              uvp_free_cb free_cb) {
  (void)code;
  (void)value;
  (void)free_cb;
  uv_sem_post(arg);
}

#endif

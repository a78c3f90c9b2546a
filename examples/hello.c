/* The smallest real uvp program: a timer resolves a promise, a chain of
 * handlers transforms the value, a catch and a finally run, and teardown
 * proves the loop is left clean.
 *
 * Build: see docs/guide-getting-started.md.  Run: ./build/examples/hello */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uvp.h"

static uvp_promise_t *answer;

static void on_timer(uv_timer_t *t) {
  /* Ownership of the string passes to the promise: free() runs when the
   * last reference to it goes. */
  uvp_promise_resolve(answer, strdup("forty-one"), free);
  uvp_promise_release(answer);
  uv_close((uv_handle_t *)t, NULL);
}

static uvp_ret_t shout(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  printf("step 1: got \"%s\"\n", (const char *)in->value);
  char *s = strdup(in->value);
  for (char *c = s; *c; c++)
    *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
  return uvp_ret_value(s, free);
}

static uvp_ret_t measure(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  printf("step 2: got \"%s\"\n", (const char *)in->value);
  /* Fail on purpose: a rejection travels down the chain to the catch. */
  return uvp_ret_reject(UV_E2BIG, NULL, NULL);
}

static uvp_ret_t recover(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  printf("catch: rejected with %s (%s), recovering with 42\n",
         uvp_err_name(in->status), uvp_strerror(in->status));
  return uvp_ret_value((void *)(intptr_t)42, NULL);
}

static uvp_ret_t done(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  printf("finally: the chain settled with %ld\n", (long)(intptr_t)in->value);
  return uvp_ret_value(NULL, NULL);
}

int main(void) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0)
    return 1;

  /* Each link takes the one before it (p = p.then(...) in JavaScript):
   * only the chain's end is ours to release. */
  uvp_promise_t *p, *end;
  uvp_promise_new(ctx, &answer);
  uvp_promise_then(answer, shout, NULL, &p);
  uvp_promise_then_take(p, measure, NULL, &p);
  uvp_promise_catch_take(p, recover, NULL, &p);
  uvp_promise_finally_take(p, done, NULL, &end);

  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_timer, 50, 0);

  printf("pending before the loop runs:\n");
  uvp_dump_opts_t dump = {.flags = UVP_DUMP_PROMISES, .stream = stdout};
  uvp_ctx_dump_tasks(ctx, &dump);

  uv_run(&loop, UV_RUN_DEFAULT);
  printf("result: %ld\n", (long)(intptr_t)uvp_promise_value(end));
  uvp_promise_release(end);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* close callbacks of uvp's handles */
  int rc = uv_loop_close(&loop);
  printf("uv_loop_close: %d\n", rc);
  return rc == 0 ? 0 : 1;
}

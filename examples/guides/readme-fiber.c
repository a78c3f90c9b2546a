/* README's fiber example: a fiber starts two file requests at once, then
 * awaits each; the loop runs while it waits. */
#include <stdio.h>
#include <sys/stat.h>
#include <uvp.h>

static uvp_ctx_t *ctx;

static uvp_ret_t check_paths(void *arg) {
  const char *const *paths = arg;
  uvp_promise_t *st[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++) /* both requests in flight at once */
    uvp_fs_stat(ctx, paths[i], &st[i]);
  for (int i = 0; i < 2; i++) {
    uvp_outcome_t o;
    int rc = uvp_await(st[i], &o); /* 0, or the rejection code */
    if (rc == 0) {
      const uv_stat_t *s = o.value; /* owned by st[i] */
      printf("%s: %s\n", paths[i],
             S_ISDIR(s->st_mode) ? "a directory" : "not a directory");
    } else {
      printf("%s: %s\n", paths[i], uvp_err_name(rc));
    }
    uvp_promise_release(st[i]);
  }
  return uvp_ret_value(NULL, NULL);
}

int main(void) {
  static const char *const paths[] = {"/", "/no/such/file"};
  uv_loop_t loop;
  uvp_promise_t *done = NULL;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  if (uvp_fiber_spawn(ctx, check_paths, (void *)paths, NULL, &done) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT); /* until the fiber has returned */
  uvp_promise_release(done);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT); /* uvp's handles close */
  return uv_loop_close(&loop);   /* 0: nothing left behind */
}

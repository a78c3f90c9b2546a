/* README's fiber example: a fiber starts two file requests at once, then
 * awaits each; the loop runs while it waits. */
#include <stdio.h>
#include <sys/stat.h>
#include <uvp.h>

static uvp_ret_t check_paths(uvp_ctx_t *ctx, void *arg) {
  const char *const *paths = arg;
  uvp_promise_t *st[2];
  int started[2];
  for (int i = 0; i < 2; i++) /* both requests in flight at once */
    started[i] = uvp_fs_stat(ctx, paths[i], &st[i]);
  for (int i = 0; i < 2; i++) {
    uvp_outcome_t o; /* the take releases st[i]: o lasts to the next await */
    int rc = uvp_await_take(started[i], &st[i], &o); /* 0, or the code */
    if (rc == 0) {
      const uv_stat_t *s = o.value;
      printf("%s: %s\n", paths[i],
             S_ISDIR(s->st_mode) ? "a directory" : "not a directory");
    } else {
      printf("%s: %s\n", paths[i], uvp_err_name(rc));
    }
  }
  return uvp_ret_value(NULL, NULL);
}

int main(void) {
  static const char *const paths[] = {"/", "/no/such/file"};
  /* The loop, the context and Ctrl-C made, the fiber run to its end, all
   * torn down: 0 once it has returned (130 if Ctrl-C cut it). */
  return uvp_main_run(check_paths, (void *)paths, NULL);
}

/* JavaScript's fetchAllUsersSettled as a uvp fiber (examples/seeds/users.c):
 *
 *   async function fetchAllUsersSettled(userIds) {
 *     const results = await Promise.allSettled(userIds.map(fetchUser));
 *     ...
 *   }
 *
 * A user is a file in a temporary directory; user 2's is missing.
 * cc -o users users.c $(pkg-config --cflags --libs uvp) && ./users */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvp.h>

static char dir[1024];
static const char *names[] = {"Alice", NULL, "Charlie", "Dave"};

static int fetch_user(uvp_ctx_t *ctx, int id, uvp_promise_t **out) {
  char path[1100];
  snprintf(path, sizeof(path), "%s/%d", dir, id);
  return uvp_fs_read_file(ctx, path, 0, out); /* a uvp_buf_t */
}

static uvp_ret_t fetch_all_users_settled(uvp_ctx_t *ctx, void *arg) {
  const int *ids = arg;
  uvp_promise_t *promises[4] = {NULL}, *all;
  for (int i = 0; i < 4; i++)
    fetch_user(ctx, ids[i], &promises[i]);

  uvp_outcome_t results;
  uvp_split_t s;
  if (uvp_await_take(
          uvp_promise_all_settled_ex(ctx, promises, 4, UVP_TAKE_INPUTS, &all),
          &all, &results) == 0 && /* the loop runs meanwhile */
      uvp_settled_split(results.value, &s) == 0) {
    printf("loaded %zu users, %zu failed:", s.nfulfilled, s.nrejected);
    for (size_t i = 0; i < s.nrejected; i++)
      printf(" user %d (%s)", ids[s.rejected[i].index],
             uvp_err_name(s.rejected[i].status));
    for (size_t i = 0; i < s.nfulfilled; i++) {
      uvp_buf_t *user = s.fulfilled[i].value; /* owned by `all` */
      printf("\n  user %d: %s", ids[s.fulfilled[i].index], user->base);
    }
    printf("\n");
    uvp_split_free(&s);
  }
  return uvp_ret_value(NULL, NULL);
}

int main(void) {
  static const int ids[] = {1, 2, 3, 4};
  char path[1100];
  uv_fs_t req; /* libuv's temporary directory and mkdtemp: Windows too */
  size_t len = sizeof(dir) - sizeof("/users-XXXXXX");
  if (uv_os_tmpdir(dir, &len) != 0)
    return 1;
  strcat(dir, "/users-XXXXXX");
  if (uv_fs_mkdtemp(NULL, &req, dir, NULL) != 0)
    return 1;
  strcpy(dir, req.path);
  uv_fs_req_cleanup(&req);
  for (int id = 1; id <= 4; id++) { /* the users' "database" */
    snprintf(path, sizeof(path), "%s/%d", dir, id);
    FILE *f = names[id - 1] != NULL ? fopen(path, "w") : NULL;
    if (f != NULL) {
      fputs(names[id - 1], f);
      fclose(f);
    }
  }
  /* The loop and context made, the fiber run to its end, both torn down. */
  int rc = uvp_main_run(fetch_all_users_settled, (void *)ids, NULL);
  for (int id = 1; id <= 4; id++) {
    snprintf(path, sizeof(path), "%s/%d", dir, id);
    remove(path);
  }
  uv_fs_rmdir(NULL, &req, dir, NULL);
  uv_fs_req_cleanup(&req);
  return rc; /* 0: the fiber fulfilled, and nothing was left behind */
}

/* Seed 1: Promise.allSettled, then split into successes and failures.
 *
 *   async function fetchAllUsersSettled(userIds) {
 *     const results = await Promise.allSettled(userIds.map(id =>
 * fetchUser(id))); const successful = results.filter(r => r.status ===
 * 'fulfilled') ... const failed = results.filter(r => r.status === 'rejected')
 * ... console.log(`Loaded ${successful.length} users, ${failed.length}
 * failed`);
 *   }
 *   async function sendNotifications(users, message) {
 *     const results = await Promise.allSettled(
 *       users.map(user => sendNotification(user.id, message)));
 *     ... console.log('Failed users:', failed.map(f => f.user.name).join(',
 * '));
 *   }
 *
 * A user is a file ("Alice /fast": a name and where that user's
 * notifications go); user 2's file is missing.  A notification is a GET on
 * the demo server: /fast answers, /error says 500, /reset resets.
 *
 *   seed-allsettled fibers|handlers */
#include <stdio.h>
#include <stdlib.h>

#include "seed.h"

enum { NUSERS = 4 };
static const int user_ids[NUSERS] = {1, 2, 3, 4};

typedef struct user_s {
  int id;
  char name[16];
  char endpoint[16];
} user_t;

typedef struct users_s {
  size_t n;
  user_t items[NUSERS];
} users_t;

/* fetchUser(id): the user's file, as a uvp_buf_t. */
static int fetch_user(seed_t *s, int id, uvp_promise_t **out) {
  char name[16], path[128];
  snprintf(name, sizeof(name), "%d", id);
  return uvp_fs_read_file(s->ctx, seed_path(s, name, path, sizeof(path)), 0,
                          out);
}

/* sendNotification(user.id, message) */
static int send_notification(seed_t *s, const user_t *user,
                             uvp_promise_t **out) {
  return seed_fetch(s, 0, user->endpoint, out);
}

/* What both versions print once fetchUser's allSettled is in; the users
 * loaded go to *users. */
static void report_users(const uvp_settled_list_t *results, users_t *users) {
  uvp_split_t split;
  must(uvp_settled_split(results, &split));
  printf("loaded %zu users, %zu failed:", split.nfulfilled, split.nrejected);
  for (size_t i = 0; i < split.nrejected; i++)
    printf(" user %d (%s)", user_ids[split.rejected[i].index],
           uvp_err_name(split.rejected[i].status));
  printf("\nsuccessful:");
  users->n = 0;
  for (size_t i = 0; i < split.nfulfilled; i++) {
    const uvp_buf_t *file = split.fulfilled[i].value;
    user_t *u = &users->items[users->n++];
    u->id = user_ids[split.fulfilled[i].index];
    if (sscanf(file->base, "%15s %15s", u->name, u->endpoint) != 2)
      users->n--;
    else
      printf("%s %s", users->n > 1 ? "," : "", u->name);
  }
  printf("\n");
  uvp_split_free(&split);
}

/* ... and once sendNotification's allSettled is in. */
static void report_notifications(const uvp_settled_list_t *results,
                                 const users_t *users) {
  printf("notifications: %zu sent, %zu failed\n", results->fulfilled,
         results->rejected);
  if (results->rejected > 0) {
    printf("failed users:");
    const char *sep = " ";
    for (size_t i = 0; i < results->count; i++) {
      const uvp_settled_t *r = &results->items[i];
      char why[64];
      if (r->status != 0) {
        printf("%s%s (%s)", sep, users->items[i].name,
               seed_describe(r->status, r->value, why, sizeof(why)));
        sep = ", ";
      }
    }
    printf("\n");
  }
}

/* ==== with fibers ======================================================== */

/* async function fetchAllUsersSettled(userIds) */
static void fetch_all_users_settled(seed_t *s, users_t *users) {
  uvp_promise_t *promises[NUSERS], *results;
  for (size_t i = 0; i < NUSERS; i++)
    must(fetch_user(s, user_ids[i], &promises[i]));
  int rc = uvp_promise_all_settled_ex(s->ctx, promises, NUSERS, UVP_TAKE_INPUTS,
                                      &results);
  uvp_outcome_t o;
  if (uvp_await_take(rc, &results, &o) == 0)
    report_users(o.value, users);
}

/* async function sendNotifications(users, message) */
static void send_notifications(seed_t *s, const users_t *users) {
  uvp_promise_t *promises[NUSERS], *results;
  for (size_t i = 0; i < users->n; i++)
    must(send_notification(s, &users->items[i], &promises[i]));
  int rc = uvp_promise_all_settled_ex(s->ctx, promises, users->n,
                                      UVP_TAKE_INPUTS, &results);
  uvp_outcome_t o;
  if (uvp_await_take(rc, &results, &o) == 0)
    report_notifications(o.value, users);
}

static uvp_ret_t run_with_fibers(void *arg) {
  seed_t *s = arg;
  users_t users = {0};
  fetch_all_users_settled(s, &users);
  send_notifications(s, &users);
  return uvp_ret_value(NULL, NULL);
}

/* ==== with handlers ====================================================== */

/* What the fiber keeps in locals must outlive each handler. */
static struct {
  seed_t *s;
  users_t users;
} run;

static uvp_ret_t on_notifications(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  report_notifications(in->value, &run.users);
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t on_users(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  report_users(in->value, &run.users);
  uvp_promise_t *promises[NUSERS], *results;
  for (size_t i = 0; i < run.users.n; i++)
    must(send_notification(run.s, &run.users.items[i], &promises[i]));
  must(uvp_promise_all_settled_ex(run.s->ctx, promises, run.users.n,
                                  UVP_TAKE_INPUTS, &results));
  must(uvp_promise_then_take(results, on_notifications, NULL, &results));
  return uvp_ret_adopt(results); /* the chain goes on from here */
}

static int run_with_handlers(seed_t *s, uvp_promise_t **done) {
  run.s = s;
  uvp_promise_t *promises[NUSERS], *results;
  for (size_t i = 0; i < NUSERS; i++)
    must(fetch_user(s, user_ids[i], &promises[i]));
  must(uvp_promise_all_settled_ex(s->ctx, promises, NUSERS, UVP_TAKE_INPUTS,
                                  &results));
  return uvp_promise_then_take(results, on_users, NULL, done);
}

/* ========================================================================= */

/* The users' "database": one file per user, user 2's missing. */
static void setup(seed_t *s) {
  seed_write(s, "1", "Alice /fast\n");
  seed_write(s, "3", "Charlie /error\n");
  seed_write(s, "4", "Dave /reset\n");
}

int main(int argc, char **argv) {
  return seed_main(argc, argv, setup, run_with_fibers, run_with_handlers);
}

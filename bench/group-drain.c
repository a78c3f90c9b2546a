/* A task group drained in completion order (bench/run-group): N pending
 * promises are added to one group as members, then fulfilled from an idle
 * handle 1000 per loop turn in bench_shuffle's fixed-seed order (input i's
 * value is i), while one consumer takes every result through
 * uvp_group_next: each next() promise's handler checks the value and asks
 * for the next one, so the consumer waits whenever the members that
 * settled are used up.  The group is closed once the members are in, so
 * the consumer ends on next()'s UV_EOF.  Correct means: the consumer saw
 * exactly the settle order, all N, then UV_EOF, and the group joined.
 * bench/group-drain.js is the same in Node v20 with a p-map-style queue.
 * Wall time covers creating the promises and the group, adding, settling
 * and consuming, up to the consumer's UV_EOF.
 * Usage: group-drain [N] [--queue] [--rounds=R]
 *   --queue    no group: the same promises, settles and consumer through a
 *              hand-written completion queue (a then() per promise pushing
 *              into an array or into the waiting next()), as
 *              bench/group-drain.js does in Node: what uvp's promises
 *              alone cost, against which the group's share is read
 *   --rounds=R run the workload R times on the same loop and context
 *              (default 1): round 1 is the cold figure, the median of the
 *              others the warm one (see core-common.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "recorder-probe.h"
#include "uvp.h"

#define PER_TURN 1000

static uvp_promise_t **ps;
static uint32_t *perm;
static uint32_t n, next_k;
static uvp_group_t *group;
static int use_queue;
static uint32_t got; /* results the consumer has taken */
static int in_order, eof;
static uint64_t t1;

static void settle_some(uv_idle_t *h) {
  uint32_t end = next_k + PER_TURN < n ? next_k + PER_TURN : n;
  for (; next_k < end; next_k++) {
    uint32_t i = perm[next_k];
    if (uvp_promise_resolve(ps[i], (void *)(uintptr_t)i, NULL) != 0)
      abort();
    uvp_promise_release(ps[i]);
  }
  if (next_k == n)
    uv_idle_stop(h);
}

/* --queue: results not yet taken, and the next() waiting for one. */
static struct {
  uintptr_t *vals;
  size_t head, tail, cap;
  uvp_promise_t *waiter;
  uint32_t running;
} q;

static uvp_ret_t queue_push(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  if (in->status != 0)
    in_order = 0; /* every member fulfils here */
  q.running--;
  if (q.waiter != NULL) {
    if (uvp_promise_resolve(q.waiter, in->value, NULL) != 0)
      abort();
    uvp_promise_release(q.waiter);
    q.waiter = NULL;
  } else {
    if (q.tail == q.cap) {
      q.cap = q.cap != 0 ? 2 * q.cap : 1024;
      if ((q.vals = realloc(q.vals, q.cap * sizeof(*q.vals))) == NULL)
        abort();
    }
    q.vals[q.tail++] = (uintptr_t)in->value;
  }
  return uvp_ret_value(NULL, NULL);
}

/* A promise for the next result: settled now if one is there (or the
 * queue is done: UV_EOF), else by the next push. */
static int queue_next(uvp_ctx_t *ctx, uvp_promise_t **out) {
  int rc = uvp_promise_new(ctx, out);
  if (rc != 0)
    return rc;
  if (q.head < q.tail) {
    rc = uvp_promise_resolve(*out, (void *)q.vals[q.head++], NULL);
    if (q.head == q.tail)
      q.head = q.tail = 0;
  } else if (q.running == 0) {
    rc = uvp_promise_reject(*out, UV_EOF, NULL, NULL);
  } else {
    q.waiter = uvp_promise_retain(*out);
  }
  return rc;
}

static uvp_ret_t on_next(void *arg, const uvp_outcome_t *in);

/* The consumer's wait: one next() at a time, as an awaiting loop has. */
static void ask_next(uvp_ctx_t *ctx) {
  uvp_promise_t *w;
  if ((use_queue ? queue_next(ctx, &w) : uvp_group_next(group, &w)) != 0 ||
      uvp_promise_on(w, UVP_ON_BOTH, on_next, ctx, NULL) != 0)
    abort();
  uvp_promise_release(w);
}

static uvp_ret_t on_next(void *arg, const uvp_outcome_t *in) {
  if (in->status == UV_EOF) {
    t1 = uv_hrtime();
    eof = 1;
  } else {
    if (in->status != 0 || got >= n || (uintptr_t)in->value != perm[got])
      in_order = 0;
    got++;
    ask_next(arg);
  }
  return uvp_ret_value(NULL, NULL);
}

/* One round; *ns gets its wall time up to the consumer's UV_EOF.  Returns
 * 1 if the consumer saw the settle order, all of it, and the group joined
 * with nothing left alive; 0 if not; -1 on an error. */
static int one_round(uvp_ctx_t *ctx, uv_idle_t *idle, uint64_t *ns) {
  next_k = got = 0;
  in_order = 1;
  eof = 0;
  t1 = 0;
  uvp_promise_t *join = NULL;
  uint64_t t0 = uv_hrtime();
  if (!use_queue && uvp_group_new(ctx, NULL, &group) != 0)
    return -1;
  for (uint32_t i = 0; i < n; i++) {
    if (uvp_promise_new(ctx, &ps[i]) != 0)
      return -1;
    int rc = use_queue
                 ? uvp_promise_on(ps[i], UVP_ON_BOTH, queue_push, NULL, NULL)
                 : uvp_group_add(group, ps[i]);
    if (rc != 0)
      return -1;
  }
  q.running = n;
  if (!use_queue &&
      (uvp_group_close(group) != 0 || uvp_group_join(group, &join) != 0))
    return -1;
  ask_next(ctx);
  uv_idle_start(idle, settle_some);
  uv_run(uvp_ctx_loop(ctx), UV_RUN_DEFAULT);
  *ns = t1 - t0;

  int good = in_order && eof && got == n && next_k == n &&
             (use_queue || uvp_promise_state(join) == UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(group);
  group = NULL;
  uvp_ctx_stats_t st;
  if (uvp_ctx_stats(ctx, &st) != 0)
    return -1;
  return good && st.live == 0 && st.queued == 0;
}

/* one_round for bench_rounds: the idle handle carries the context. */
static int round_of(void *idle, uint64_t *ns) {
  return one_round(((uv_idle_t *)idle)->data, idle, ns);
}

int main(int argc, char **argv) {
  n = bench_arg_n(argc, argv, 1, 1000000);
  int rounds = 1;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--queue") == 0)
      use_queue = 1;
    else if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }

  perm = malloc(n * sizeof(*perm));
  ps = malloc(n * sizeof(*ps));
  if (perm == NULL || ps == NULL)
    return 1;
  uint32_t check = bench_shuffle(perm, n);

  uv_loop_t loop;
  uv_idle_t idle;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0 ||
      uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  /* UVP_BENCH_STALL_MS=N: the stall detector on at N ms, for its cost
   * (docs/internals/diagnostics.md, "The stall detector"). */
  const char *stall_ms = getenv("UVP_BENCH_STALL_MS");
  if (stall_ms != NULL &&
      uvp_ctx_set_stall(ctx, strtoull(stall_ms, NULL, 10), NULL, NULL) != 0)
    return 1;
  if (bench_recorder(ctx) != 0)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  idle.data = ctx;
  int all_ok = bench_rounds(rounds, round_of, &idle, ns, &cold_rss_kb);
  if (all_ok < 0)
    return 1;

  if (uvp_ctx_close(ctx) != 0 || bench_loop_close(&loop, &idle) != 0)
    return 1;
  free(ps);
  free(perm);
  free(q.vals);
  printf("name=group-drain impl=uvp%s n=%u ok=%d perm_check=%u",
         use_queue ? "-queue" : "", n, all_ok, check);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return all_ok ? 0 : 1;
}

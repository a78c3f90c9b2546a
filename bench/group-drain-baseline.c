/* bench/group-drain.c's workload without promises: the hand-written libuv
 * way of taking N operations' results in completion order.  Each
 * operation is a record in an array (malloc'd each round, as
 * combo-baseline's), marked pending when the operations start; its
 * completion, called from an idle handle 1000 per loop turn in
 * bench_shuffle's fixed-seed order (input i's value is i), links the
 * record onto a completion list and, when the consumer waits, hands the
 * result straight to it; the consumer takes the results one at a time,
 * checks each against the settle order, and waits again (a flag) when the
 * list is empty.  Its end is the last operation taken.  Correct means what
 * it means for group-drain: the consumer saw exactly the settle order, all
 * N.  Wall time covers starting the operations, completing and consuming
 * them, up to the last one taken.
 * Usage: group-drain-baseline [N] [--rounds=R]
 *   --rounds=R as in group-drain: R rounds on the same loop, round 1 cold,
 *              the median of the others warm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include <uv.h>

#define PER_TURN 1000
#define PENDING 1

typedef struct op_s {
  struct op_s *next; /* on the completion list */
  uint32_t value;
  int status;
} op_t;

static op_t *ops;
static op_t *head, **tail; /* completed, not yet taken */
static int waiting;        /* the consumer waits for the next completion */
static uint32_t *perm;
static uint32_t n, next_k, got;
static int in_order;
static uint64_t t1;

/* The consumer: take every completed result, then wait for more. */
static void take_ready(void) {
  while (head != NULL) {
    op_t *op = head;
    head = op->next;
    if (head == NULL)
      tail = &head;
    if (op->status != 0 || got >= n || op->value != perm[got])
      in_order = 0;
    got++;
  }
  if (got == n)
    t1 = uv_hrtime();
  else
    waiting = 1;
}

/* The completion callback an operation would call. */
static void complete(uint32_t i, int status, uint32_t value) {
  op_t *op = &ops[i];
  if (op->status != PENDING)
    abort();
  op->status = status;
  op->value = value;
  op->next = NULL;
  *tail = op;
  tail = &op->next;
  if (waiting) {
    waiting = 0;
    take_ready();
  }
}

static void settle_some(uv_idle_t *h) {
  uint32_t end = next_k + PER_TURN < n ? next_k + PER_TURN : n;
  for (; next_k < end; next_k++)
    complete(perm[next_k], 0, perm[next_k]);
  if (next_k == n)
    uv_idle_stop(h);
}

/* One round; *ns gets its wall time up to the last result taken.  Returns
 * 1 if the consumer saw the settle order, all of it; 0 if not; -1 on an
 * error. */
static int one_round(uv_loop_t *loop, uv_idle_t *idle, uint64_t *ns) {
  next_k = got = 0;
  in_order = 1;
  waiting = 0;
  t1 = 0;
  head = NULL;
  tail = &head;
  uint64_t t0 = uv_hrtime();
  if ((ops = malloc(n * sizeof(*ops))) == NULL)
    return -1;
  for (uint32_t i = 0; i < n; i++)
    ops[i] = (op_t){NULL, 0, PENDING};
  take_ready(); /* nothing yet: the consumer waits */
  uv_idle_start(idle, settle_some);
  uv_run(loop, UV_RUN_DEFAULT);
  *ns = t1 - t0;
  /* Poison (outside the clock) so a later round that malloc gets the same
   * block back cannot pass its checks on this round's records. */
  memset(ops, 0xff, n * sizeof(*ops));
  free(ops);
  return in_order && got == n && next_k == n && t1 != 0;
}

/* one_round for bench_rounds. */
static int round_of(void *idle, uint64_t *ns) {
  return one_round(((uv_idle_t *)idle)->loop, idle, ns);
}

int main(int argc, char **argv) {
  n = bench_arg_n(argc, argv, 1, 1000000);
  int rounds = 1;
  for (int i = 2; i < argc; i++)
    if (!bench_arg_rounds(argv[i], &rounds))
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  perm = malloc(n * sizeof(*perm));
  if (perm == NULL)
    return 1;
  uint32_t check = bench_shuffle(perm, n);

  uv_loop_t loop;
  uv_idle_t idle;
  if (uv_loop_init(&loop) != 0 || uv_idle_init(&loop, &idle) != 0)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int all_ok = bench_rounds(rounds, round_of, &idle, ns, &cold_rss_kb);
  if (all_ok < 0 || bench_loop_close(&loop, &idle) != 0)
    return 1;
  free(perm);
  printf("name=group-drain impl=libuv-cb n=%u ok=%d perm_check=%u", n, all_ok,
         check);
  bench_print_rounds(ns, rounds, n, cold_rss_kb);
  return all_ok ? 0 : 1;
}

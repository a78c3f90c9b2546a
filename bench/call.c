/* Calls between loops (uvp_call_start) against the hand-written floor.
 *
 *   call floor N            N round trips, one at a time, of a hand-written
 *                           uv_async ping-pong between two loops (the
 *                           floor: two wake-ups, nothing else)
 *   call kernel N           (Linux) the same without libuv: two threads,
 *                           each blocked in epoll_wait on an eventfd the
 *                           other writes (the kernel's and the machine's
 *                           wake-up, under both)
 *   call kernel-et N        (Linux) the same, each eventfd watched
 *                           edge-triggered and never read (mio's waker,
 *                           under tokio's runtime): what a loop whose
 *                           wake-up needs no read would pay
 *   call poll N             (Linux) the hand-written floor of a libuv
 *                           wake-up that does not spin: two loops, each a
 *                           uv_poll_t on an eventfd the other writes, read
 *                           in its callback (uvp's own wake-up, wake.c,
 *                           with nothing else)
 *   call rtt N              N round trips, one at a time, of uvp_call_start
 *                           from one loop to another (the caller's next
 *                           call from the handler of the last one's
 *                           promise)
 *   call tput N LOOPS [W]   N calls in all between LOOPS loops, each
 *                           calling the next in a ring, W in flight per
 *                           loop (default 1024)
 *
 * Prints one line of key=value: the count n, the wall time s, ns a round
 * trip (floor, rtt) or calls_s, calls a second (tput), and cpu_ns, the
 * CPU time of every thread of the process a round trip or call (threads'
 * starts included): what a loaded machine moves least.  Each loop runs on
 * a thread of its own. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <uv.h>

#include "uvp.h"

/* The process's CPU time (every thread's), ns. */
static double cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec) * 1e9 +
         ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e3;
}

static void die(const char *what, int rc) {
  fprintf(stderr, "call: %s: %s\n", what, uv_strerror(rc));
  exit(1);
}
#define CHECK(what, expr)                                                      \
  do {                                                                         \
    int rc_ = (expr);                                                          \
    if (rc_ != 0)                                                              \
      die(what, rc_);                                                          \
  } while (0)

/* ---- the floor: a uv_async ping-pong ----------------------------------- */

typedef struct side_s {
  uv_loop_t loop;
  uv_async_t in; /* the other side sends it */
  struct side_s *peer;
  long left; /* the pinger's round trips to go */
  uv_thread_t th;
} side_t;

static void pong_cb(uv_async_t *a) {
  side_t *s = a->data;
  if (s->left < 0) { /* told to stop */
    uv_close((uv_handle_t *)&s->in, NULL);
    return;
  }
  uv_async_send(&s->peer->in);
}

static void ping_cb(uv_async_t *a) {
  side_t *s = a->data;
  if (--s->left == 0) {
    s->peer->left = -1;
    uv_async_send(&s->peer->in);
    uv_close((uv_handle_t *)&s->in, NULL);
    return;
  }
  uv_async_send(&s->peer->in);
}

/* A thread's body: runs the loop it is given. */
static void run_loop(void *loop) { uv_run(loop, UV_RUN_DEFAULT); }

static double floor_rtt(long n) {
  side_t a, b;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  CHECK("loop", uv_loop_init(&a.loop));
  CHECK("loop", uv_loop_init(&b.loop));
  uv_async_init(&a.loop, &a.in, ping_cb);
  uv_async_init(&b.loop, &b.in, pong_cb);
  a.in.data = &a;
  b.in.data = &b;
  a.peer = &b;
  b.peer = &a;
  a.left = n;
  CHECK("thread", uv_thread_create(&b.th, run_loop, &b.loop));
  uint64_t t0 = uv_hrtime();
  uv_async_send(&b.in);
  uv_run(&a.loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  uv_thread_join(&b.th);
  uv_loop_close(&a.loop);
  uv_loop_close(&b.loop);
  return (double)(t1 - t0);
}

/* ---- under the floor: eventfds and epoll, no libuv ---------------------- */

#if defined(__linux__)
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Edge-triggered, never read (kernel-et): a write makes the next
 * epoll_wait return once, whatever the count. */
static bool kedge;

/* An epoll instance watching fd for reading. */
static int kwatch(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN | (kedge ? EPOLLET : 0)};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
    die("epoll", UV_EINVAL);
  return ep;
}

/* Block until fd (watched by ep) is written, and take its count. */
static void kwait(int ep, int fd) {
  struct epoll_event ev;
  uint64_t v;
  while (epoll_wait(ep, &ev, 1, -1) != 1)
    ;
  if (!kedge && read(fd, &v, sizeof(v)) != sizeof(v))
    die("eventfd", UV_EIO);
}

static void kwake(int fd) {
  uint64_t v = 1;
  if (write(fd, &v, sizeof(v)) != sizeof(v))
    die("eventfd", UV_EIO);
}

typedef struct kside_s {
  int in, out;
  long n;
} kside_t;

static void kernel_pong(void *arg) {
  kside_t *k = arg;
  int ep = kwatch(k->in);
  for (long i = 0; i < k->n; i++) {
    kwait(ep, k->in);
    kwake(k->out);
  }
  close(ep);
}

static double kernel_rtt(long n) {
  int a = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int b = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (a < 0 || b < 0)
    die("eventfd", UV_EMFILE);
  kside_t pong = {a, b, n};
  uv_thread_t th;
  CHECK("thread", uv_thread_create(&th, kernel_pong, &pong));
  int ep = kwatch(b);
  uint64_t t0 = uv_hrtime();
  for (long i = 0; i < n; i++) {
    kwake(a);
    kwait(ep, b);
  }
  uint64_t t1 = uv_hrtime();
  uv_thread_join(&th);
  close(ep);
  close(a);
  close(b);
  return (double)(t1 - t0);
}

/* ---- the libuv floor without the spin: uv_poll_t on eventfds ------------ */

typedef struct pside_s {
  uv_loop_t loop;
  uv_poll_t poll;
  int in;
  struct pside_s *peer;
  long left; /* the pinger's round trips to go; < 0: told to stop */
  uv_thread_t th;
} pside_t;

static void poll_cb(uv_poll_t *h, int status, int events) {
  pside_t *s = h->data;
  uint64_t v;
  (void)events;
  if (status != 0 || read(s->in, &v, sizeof(v)) != sizeof(v))
    die("poll", status != 0 ? status : UV_EIO);
  if (s->left < 0) { /* the ponger, told to stop */
    uv_close((uv_handle_t *)&s->poll, NULL);
    return;
  }
  if (s->left > 0 && --s->left == 0) { /* the pinger's last round trip */
    s->peer->left = -1;
    uv_close((uv_handle_t *)&s->poll, NULL);
  }
  kwake(s->peer->in);
}

static double poll_rtt(long n) {
  pside_t a, b;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  pside_t *sides[2] = {&a, &b};
  for (int i = 0; i < 2; i++) {
    pside_t *s = sides[i];
    s->in = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->in < 0)
      die("eventfd", UV_EMFILE);
    CHECK("loop", uv_loop_init(&s->loop));
    CHECK("poll", uv_poll_init(&s->loop, &s->poll, s->in));
    s->poll.data = s;
    CHECK("poll", uv_poll_start(&s->poll, UV_READABLE, poll_cb));
  }
  a.peer = &b;
  b.peer = &a;
  a.left = n;
  CHECK("thread", uv_thread_create(&b.th, run_loop, &b.loop));
  uint64_t t0 = uv_hrtime();
  kwake(b.in);
  uv_run(&a.loop, UV_RUN_DEFAULT);
  uint64_t t1 = uv_hrtime();
  uv_thread_join(&b.th);
  for (int i = 0; i < 2; i++) {
    CHECK("loop", uv_loop_close(&sides[i]->loop));
    close(sides[i]->in);
  }
  return (double)(t1 - t0);
}
#endif

/* ---- uvp: loops with contexts ------------------------------------------ */

typedef struct node_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_async_t stop;
  uv_thread_t th;
  uv_sem_t ready;
  struct node_s *target;
  long to_issue; /* calls this node still starts */
  long to_end;   /* calls of this node not yet settled */
  uint64_t t_end;
} node_t;

static atomic_long nodes_done;
static uv_sem_t all_done;
static int n_nodes;

static uvp_ret_t fn_one(uvp_ctx_t *target, void *arg) {
  (void)target;
  return uvp_ret_value(arg, NULL);
}

static void issue(node_t *nd);

static uvp_ret_t on_answer(void *arg, const uvp_outcome_t *in) {
  node_t *nd = arg;
  if (in->status != 0)
    die("call", in->status);
  if (--nd->to_end == 0) {
    nd->t_end = uv_hrtime();
    if (atomic_fetch_add(&nodes_done, 1) + 1 == n_nodes)
      uv_sem_post(&all_done);
  } else if (nd->to_issue > 0) {
    issue(nd);
  }
  return uvp_ret_pass();
}

static void issue(node_t *nd) {
  uvp_promise_t *p;
  nd->to_issue--;
  CHECK("uvp_call_start",
        uvp_call_start(nd->ctx, nd->target->ctx, fn_one, nd, NULL, &p));
  CHECK("then",
        uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, on_answer, nd, NULL));
}

static void node_stop(uv_async_t *a) {
  node_t *nd = a->data;
  uv_close((uv_handle_t *)a, NULL);
  CHECK("close", uvp_ctx_close(nd->ctx));
}

static void node_main(void *arg) {
  node_t *nd = arg;
  CHECK("loop", uv_loop_init(&nd->loop));
  CHECK("ctx", uvp_ctx_new(&nd->loop, &nd->ctx));
  uv_async_init(&nd->loop, &nd->stop, node_stop);
  nd->stop.data = nd;
  uv_sem_post(&nd->ready);
  uv_run(&nd->loop, UV_RUN_DEFAULT);
  CHECK("loop close", uv_loop_close(&nd->loop));
}

typedef struct start_s {
  node_t *nd;
  long window;
} start_t;

/* Starts a node's window from its own loop thread. */
static uvp_ret_t kick(uvp_ctx_t *ctx, void *arg) {
  (void)ctx;
  start_t *st = arg;
  long w = st->window < st->nd->to_issue ? st->window : st->nd->to_issue;
  for (long i = 0; i < w; i++)
    issue(st->nd);
  return uvp_ret_pass();
}

static void kicked(void *arg, int code, void *value, uvp_free_cb free_cb) {
  (void)arg;
  (void)value;
  (void)free_cb;
  if (code != 0)
    die("kick", code);
}

/* n calls in all, from the first `active` nodes of `loops`. */
static double run_nodes(long n, int loops, int active, long window) {
  node_t *nd = calloc((size_t)loops, sizeof(*nd));
  start_t *st = calloc((size_t)loops, sizeof(*st));
  n_nodes = active;
  atomic_store(&nodes_done, 0);
  uv_sem_init(&all_done, 0);
  for (int i = 0; i < loops; i++) {
    uv_sem_init(&nd[i].ready, 0);
    CHECK("thread", uv_thread_create(&nd[i].th, node_main, &nd[i]));
    uv_sem_wait(&nd[i].ready);
  }
  for (int i = 0; i < loops; i++) {
    nd[i].target = &nd[(i + 1) % loops];
    nd[i].to_issue = nd[i].to_end = i < active ? n / active : 0;
    st[i].nd = &nd[i];
    st[i].window = window;
  }
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < active; i++)
    CHECK("post", uvp_call_post(nd[i].ctx, kick, &st[i], NULL, kicked, NULL));
  uv_sem_wait(&all_done);
  uint64_t t1 = 0;
  for (int i = 0; i < active; i++)
    if (nd[i].t_end > t1)
      t1 = nd[i].t_end;
  for (int i = 0; i < loops; i++)
    uv_async_send(&nd[i].stop);
  for (int i = 0; i < loops; i++) {
    uv_thread_join(&nd[i].th);
    uv_sem_destroy(&nd[i].ready);
  }
  uv_sem_destroy(&all_done);
  free(nd);
  free(st);
  return (double)(t1 - t0);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: call floor|kernel|kernel-et|poll|rtt N | call tput "
                    "N LOOPS [W]\n");
    return 2;
  }
  long n = atol(argv[2]);
  double c0 = cpu_ns();
  const char *mode = argv[1];
  double ns = -1; /* a round trip's mode ran: its wall time */
  if (strcmp(mode, "floor") == 0) {
    ns = floor_rtt(n);
#if defined(__linux__)
  } else if (strcmp(mode, "kernel") == 0 || strcmp(mode, "kernel-et") == 0) {
    kedge = strcmp(mode, "kernel-et") == 0;
    ns = kernel_rtt(n);
  } else if (strcmp(mode, "poll") == 0) {
    ns = poll_rtt(n);
#endif
  } else if (strcmp(mode, "rtt") == 0) {
    ns = run_nodes(n, 2, 1, 1);
  } else if (strcmp(mode, "tput") == 0 && argc >= 4) {
    int loops = atoi(argv[3]);
    long w = argc >= 5 ? atol(argv[4]) : 1024;
    double wall = run_nodes(n, loops, loops, w);
    printf("tput n=%ld loops=%d window=%ld s=%.3f calls_s=%.0f cpu_ns=%.0f\n",
           n, loops, w, wall / 1e9, (double)n / (wall / 1e9),
           (cpu_ns() - c0) / (double)n);
  } else {
    fprintf(stderr, "call: unknown mode %s\n", mode);
    return 2;
  }
  if (ns >= 0)
    printf("%s n=%ld s=%.3f ns=%.0f cpu_ns=%.0f\n", mode, n, ns / 1e9,
           ns / (double)n, (cpu_ns() - c0) / (double)n);
  return 0;
}

/* The floor under bench/nats-coord: the same requests made with nats.c
 * alone (its own threads, no uvp), against the same workers.
 *   nats-floor URL MODE rt N      N requests one at a time (the median
 *                                 round trip over the last N - N/10)
 *   nats-floor URL MODE burst N   N requests at once, all replies awaited
 * MODE says how a request is published:
 *   hdr    a natsMsg with the reply subject and the header Uvp-Timeout-Ms
 *          (natsMsg_Create, natsMsgHeader_Set, natsConnection_PublishMsg,
 *          natsMsg_Destroy): what uvp_nats_request sends
 *   proto  as hdr, each reply's Uvp-Error looked up (natsMsgHeader_Get)
 *          as the protocol asks of a requester, and the replies kept until
 *          the last one came (destroyed then): what uvp_nats_request and
 *          allSettled deliver
 *   plain  natsConnection_PublishRequest, no header (nats.c's cheapest)
 * Replies come on one wildcard inbox subscription ("<inbox>.*", nats.c's
 * delivery thread), matched to their request by the id in the subject
 * (one flag per request), as a program of nats.c's own would; the thread
 * that published waits on a condition variable.  One at a time, nats.c
 * sends each request at once (natsOptions_SetSendAsap: its flusher thread
 * would hold it about a millisecond); at once, its flusher batches them.
 * One line of key=value as nats-coord's (held_b= too). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <nats/nats.h>

#include "core-common.h" /* libuv's header only: bench_rss_bytes */

#define TIMEOUT_HEADER "Uvp-Timeout-Ms"

typedef struct {
  bool proto;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  char inbox[128];
  size_t inbox_len;
  bool *done;     /* per request id (1..n) */
  natsMsg **held; /* proto: the replies, by id */
  size_t n, replies, late;
  size_t want; /* the replies the main thread waits for */
} state_t;

static long held_b; /* a burst's resident bytes a request, replies held */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double ms_between(struct timeval a, struct timeval b) {
  return (double)(b.tv_sec - a.tv_sec) * 1e3 +
         (double)(b.tv_usec - a.tv_usec) / 1e3;
}

static int threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
    n += e->d_name[0] != '.';
  if (d != NULL)
    closedir(d);
  return n;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* nats.c's delivery thread: the reply's request, by the id after the
 * inbox. */
static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m,
                     void *closure) {
  state_t *st = closure;
  (void)nc;
  (void)sub;
  const char *subj = natsMsg_GetSubject(m);
  char *end;
  errno = 0;
  uint64_t id = strtoull(subj + st->inbox_len + 1, &end, 10);
  bool ok = errno == 0 && *end == '\0' && id >= 1 && id <= st->n &&
            natsMsg_GetDataLength(m) > 0;
  const char *err = NULL;
  if (st->proto && natsMsgHeader_Get(m, "Uvp-Error", &err) == NATS_OK)
    ok = false;
  pthread_mutex_lock(&st->mu);
  ok = ok && !st->done[id];
  if (ok) {
    st->done[id] = true;
    if (st->proto)
      st->held[id] = m;
    if (++st->replies == st->want)
      pthread_cond_signal(&st->cond);
  } else {
    st->late++;
  }
  pthread_mutex_unlock(&st->mu);
  if (!ok || !st->proto)
    natsMsg_Destroy(m);
}

static natsStatus send_one(natsConnection *nc, state_t *st, bool hdr,
                           uint64_t id) {
  char reply[160];
  snprintf(reply, sizeof(reply), "%s.%" PRIu64, st->inbox, id);
  if (!hdr)
    return natsConnection_PublishRequest(nc, "jobs", reply, "x", 2);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, "jobs", reply, "x", 2);
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m, TIMEOUT_HEADER, "60000");
  if (s == NATS_OK)
    s = natsConnection_PublishMsg(nc, m);
  natsMsg_Destroy(m);
  return s;
}

static void wait_for(state_t *st, size_t replies) {
  pthread_mutex_lock(&st->mu);
  st->want = replies;
  while (st->replies < replies)
    pthread_cond_wait(&st->cond, &st->mu);
  pthread_mutex_unlock(&st->mu);
}

int main(int argc, char **argv) {
  if (argc != 5)
    return 2;
  bool proto = strcmp(argv[2], "proto") == 0;
  bool hdr = proto || strcmp(argv[2], "hdr") == 0;
  bool rt = strcmp(argv[3], "rt") == 0;
  size_t n = strtoul(argv[4], NULL, 10);
  state_t st = {.n = n, .proto = proto};
  pthread_mutex_init(&st.mu, NULL);
  pthread_cond_init(&st.cond, NULL);
  st.done = calloc(n + 1, sizeof(*st.done));
  st.held = calloc(n + 1, sizeof(*st.held));
  natsConnection *nc = NULL;
  natsSubscription *sub = NULL;
  natsInbox *inbox = NULL;
  natsOptions *o = NULL;
  if (st.done == NULL || st.held == NULL || natsOptions_Create(&o) != NATS_OK ||
      natsOptions_SetURL(o, argv[1]) != NATS_OK ||
      natsOptions_SetSendAsap(o, rt) != NATS_OK ||
      natsConnection_Connect(&nc, o) != NATS_OK ||
      natsInbox_Create(&inbox) != NATS_OK)
    return 1;
  snprintf(st.inbox, sizeof(st.inbox), "%s", inbox);
  st.inbox_len = strlen(st.inbox);
  char wild[160];
  snprintf(wild, sizeof(wild), "%s.*", st.inbox);
  if (natsConnection_Subscribe(&sub, nc, wild, on_reply, &st) != NATS_OK ||
      natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK ||
      natsConnection_Flush(nc) != NATS_OK)
    return 1;
  int nthreads = threads();
  struct rusage ru0;
  getrusage(RUSAGE_SELF, &ru0);
  double v = 0;
  if (rt) {
    double *t = calloc(n, sizeof(*t));
    for (size_t i = 0; i < n; i++) {
      uint64_t t0 = now_ns();
      if (send_one(nc, &st, hdr, i + 1) != NATS_OK)
        return 1;
      wait_for(&st, i + 1);
      t[i] = (double)(now_ns() - t0) / 1e3;
    }
    size_t skip = n / 10;
    qsort(t + skip, n - skip, sizeof(*t), cmp);
    v = t[skip + (n - skip) / 2];
    free(t);
  } else {
    long long b0 = bench_rss_bytes();
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++)
      if (send_one(nc, &st, hdr, i + 1) != NATS_OK)
        return 1;
    wait_for(&st, n);
    v = (double)(now_ns() - t0) / 1e6;
    held_b = (long)((bench_rss_bytes() - b0) / (long long)n);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double usr = ms_between(ru0.ru_utime, ru.ru_utime);
  double sys = ms_between(ru0.ru_stime, ru.ru_stime);
  double cpu = usr + sys;
  printf("%s %s=%.1f ok=%zu n=%zu cpu_ms=%.1f usr_ms=%.1f sys_ms=%.1f csw=%ld "
         "rss_kb=%ld held_b=%ld threads=%d\n",
         argv[3], rt ? "rt_us" : "wall_ms", v, st.replies, n, cpu, usr, sys,
         ru.ru_nvcsw + ru.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw,
         ru.ru_maxrss, held_b, nthreads);
  for (size_t i = 0; i <= n; i++)
    natsMsg_Destroy(st.held[i]);
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(nc);
  natsOptions_Destroy(o);
  natsInbox_Destroy(inbox);
  nats_Close();
  free(st.done);
  free(st.held);
  return st.replies != n;
}

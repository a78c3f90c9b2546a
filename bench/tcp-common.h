/* Shared by the TCP fan-out programs (tcp-fanout, tcp-fanout-fiber and the
 * hand-written tcp-fanout-baseline): arguments, user CPU time, the reply
 * check and the result line bench/run-io and bench/run-fiber parse.  libuv
 * only: the baseline includes it, so nothing here may need uvp.h. */
#ifndef UVP_BENCH_TCP_COMMON_H
#define UVP_BENCH_TCP_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

static inline double tcp_user_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec;
}

/* PORT [N] [K]: the server's address on 127.0.0.1, N requests (default
 * 10000), at most K in flight (default 1000).  Exits 2 with the usage when
 * PORT is missing. */
static inline void tcp_args(int argc, char **argv, size_t *n, size_t *k,
                            struct sockaddr_in *addr) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [N] [K]\n", argv[0]);
    exit(2);
  }
  *n = argc > 2 ? strtoul(argv[2], NULL, 10) : 10000;
  *k = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), addr);
}

/* Whether a whole reply is the server's 200. */
static inline int tcp_reply_ok(const char *body, size_t len) {
  return body != NULL && len > 12 && memcmp(body, "HTTP/1.0 200", 12) == 0;
}

/* The result line, IMPL first ("uvp", "uvp-fiber", "baseline"); returns the
 * exit status: 0 if every request got its reply. */
static inline int tcp_report(const char *impl, size_t n, size_t k, size_t good,
                             uint64_t wall_ns, double user_us) {
  printf("%s tcp-fanout n=%zu k=%zu ok=%zu wall_ms=%.1f "
         "user_us_per_req=%.2f\n",
         impl, n, k, good, wall_ns / 1e6, user_us / (double)n);
  return good == n ? 0 : 1;
}

#endif

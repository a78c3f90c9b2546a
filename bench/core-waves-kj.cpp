/* bench/core-waves on Cap'n Proto's KJ (kj-async), a C++ promise library
 * with an event loop of its own: the steady state of uvp against that of
 * another promise library, not only against its floor.  The same waves:
 * each creates W promises (newPromiseAndFulfiller), registers one
 * continuation on each (.then(), returning a value for its derived promise
 * as core-waves' handler does, made to run without anyone waiting on the
 * result by eagerlyEvaluate(), as uvp's handlers run), fulfils them all,
 * runs the loop until every continuation ran (WaitScope::poll) and lets go
 * of the W fulfillers and the W derived promises.  KJ allocates its
 * promise nodes with new: that is its design, and part of the figure.
 * Built only where kj-async is found (libcapnp-dev on Debian).
 * Usage: core-waves-kj [N] [--wave=W] [--rounds=R]   as core-waves
 * Prints the fields of core-waves (impl=kj); ok=1 when every continuation
 * ran once, with its own value, in the wave of its promise. */
#include <kj/async.h>
#include <kj/vector.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"

namespace {

uint64_t ran;
uint64_t sum;

struct Waves {
  kj::WaitScope *ws;
  uint32_t n, wave;
};

int oneRound(void *arg, uint64_t *ns) {
  Waves *w = static_cast<Waves *>(arg);
  int ok = 1;
  ran = 0;
  sum = 0;
  kj::Vector<kj::Own<kj::PromiseFulfiller<uint64_t>>> fulfillers(w->wave);
  kj::Vector<kj::Promise<uint64_t>> derived(w->wave);
  uint64_t t0 = uv_hrtime();
  for (uint32_t base = 0; base < w->n; base += w->wave) {
    uint32_t m = w->n - base < w->wave ? w->n - base : w->wave;
    for (uint32_t i = 0; i < m; i++) {
      auto paf = kj::newPromiseAndFulfiller<uint64_t>();
      fulfillers.add(kj::mv(paf.fulfiller));
      derived.add(paf.promise
                      .then([](uint64_t v) {
                        ran++;
                        sum += v;
                        return uint64_t(0); /* as core-waves' handler */
                      })
                      .eagerlyEvaluate(nullptr));
    }
    for (uint32_t i = 0; i < m; i++)
      fulfillers[i]->fulfill(uint64_t(base) + i);
    w->ws->poll();
    ok = ok && ran == uint64_t(base) + m;
    fulfillers.clear();
    derived.clear();
  }
  *ns = uv_hrtime() - t0;
  return ok && ran == w->n && sum == uint64_t(w->n) * (w->n - 1) / 2;
}

} // namespace

int main(int argc, char **argv) {
  Waves w = {nullptr, bench_arg_n(argc, argv, 1, 10000000), 1000};
  int rounds = 1;
  for (int i = 2; i < argc; i++) {
    if (strncmp(argv[i], "--wave=", 7) == 0) {
      unsigned long v = strtoul(argv[i] + 7, NULL, 10);
      if (v == 0 || v > 10000000ul)
        return fprintf(stderr, "bad wave: %s\n", argv[i]), 2;
      w.wave = uint32_t(v);
    } else if (!bench_arg_rounds(argv[i], &rounds)) {
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
    }
  }
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  w.ws = &ws;
  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int ok = bench_rounds(rounds, oneRound, &w, ns, &cold_rss_kb);
  if (ok < 0)
    return 1;
  printf("name=waves impl=kj n=%u wave=%u ok=%d traced=0", w.n, w.wave, ok);
  bench_print_rounds(ns, rounds, w.n, cold_rss_kb);
  return ok ? 0 : 1;
}

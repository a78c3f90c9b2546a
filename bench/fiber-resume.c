/* What resuming a compact fiber costs as a function of its live stack:
 * bench/fiber-pingpong's ping-pong (two fibers, each await woken by the
 * other) with LOCALS bytes of live locals under each fiber's loop, in the
 * compact mode (each await copies one fiber's frames out and the other's
 * back in) and in the default mode beside it.  Prints, per LOCALS, the ns
 * per await in each mode (medians of REPS runs of N rounds) and the bytes
 * from the body's frame to its loop's (LOCALS and a little).
 * Usage: fiber-resume [N] [REPS]   (defaults 200000 and 5) */
#include <alloca.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"
#include "fiber-common.h"
#include "uvp.h"

static uvp_ctx_t *ctx;
static uvp_promise_t *pa, *pb;
static size_t steps, locals, bad;
static uintptr_t top_a, low_a; /* a's first frame, and its frame at await */

static __attribute__((noinline)) void loop_a(void) {
  low_a = (uintptr_t)__builtin_frame_address(0);
  for (size_t i = 0; i < steps; i++) {
    if (uvp_promise_new(ctx, &pa) != 0) {
      bad++;
      break;
    }
    if (pb != NULL && uvp_promise_resolve(pb, NULL, NULL) != 0)
      bad++;
    bad += uvp_await(pa, NULL) != 0;
    uvp_promise_release(pa);
    pa = NULL;
  }
  if (pb != NULL && uvp_promise_resolve(pb, NULL, NULL) != 0)
    bad++;
}

static __attribute__((noinline)) void loop_b(void) {
  for (size_t i = 0; i < steps; i++) {
    if (uvp_promise_new(ctx, &pb) != 0) {
      bad++;
      break;
    }
    if (pa == NULL || uvp_promise_resolve(pa, NULL, NULL) != 0)
      bad++;
    bad += uvp_await(pb, NULL) != 0;
    uvp_promise_release(pb);
    pb = NULL;
  }
}

/* LOCALS bytes of locals, live (read back) after the loop. */
static uvp_ret_t fiber_a(void *arg) {
  (void)arg;
  top_a = (uintptr_t)__builtin_frame_address(0);
  volatile char *pad = alloca(locals + 1);
  memset((char *)pad, 0x5a, locals + 1);
  loop_a();
  bad += pad[locals / 2] != 0x5a;
  return uvp_ret_pass();
}

static uvp_ret_t fiber_b(void *arg) {
  (void)arg;
  volatile char *pad = alloca(locals + 1);
  memset((char *)pad, 0x5a, locals + 1);
  loop_b();
  bad += pad[locals / 2] != 0x5a;
  return uvp_ret_pass();
}

static double pingpong(uv_loop_t *loop, size_t n) {
  uvp_promise_t *a, *b;
  steps = n;
  pa = pb = NULL;
  uint64_t t0 = bench_now_ns();
  if (uvp_fiber_spawn(ctx, fiber_a, NULL, NULL, &a) != 0 ||
      uvp_fiber_spawn(ctx, fiber_b, NULL, NULL, &b) != 0)
    exit(1);
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t1 = bench_now_ns();
  bad += uvp_promise_state(a) != UVP_FULFILLED ||
         uvp_promise_state(b) != UVP_FULFILLED;
  uvp_promise_release(a);
  uvp_promise_release(b);
  return (double)(t1 - t0) / (double)(2 * n);
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  static const size_t sizes[] = {0, 256, 1024, 4096, 16384, 65536};
  uv_loop_t loop;
  if (n == 0 || reps < 1 || reps > 101)
    return 2;
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
    double v[2][101];
    locals = sizes[s];
    for (int mode = 0; mode < 2; mode++) {
      if (uvp_ctx_set_fiber_mode(ctx, mode ? UVP_FIBER_COMPACT
                                           : UVP_FIBER_DEFAULT) != 0)
        return 1;
      (void)pingpong(&loop, n / 10); /* warm-up */
    }
    for (int r = 0; r < reps; r++)
      for (int mode = 0; mode < 2; mode++) {
        uvp_ctx_set_fiber_mode(ctx,
                               mode ? UVP_FIBER_COMPACT : UVP_FIBER_DEFAULT);
        v[mode][r] = pingpong(&loop, n);
      }
    /* A parked fiber's live bytes: LOCALS, the frames from its body to
     * its loop's (frame_b), and those of the await, the switch and its
     * saved registers below (a few hundred bytes). */
    printf("uvp fiber-resume locals=%zu ok=%d frame_b=%zu default_ns=%.1f "
           "compact_ns=%.1f\n",
           locals, bad == 0, (size_t)(top_a - low_a), bench_median(v[0], reps),
           bench_median(v[1], reps));
  }
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return bad == 0 ? 0 : 1;
}

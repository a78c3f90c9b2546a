/* How long uvp_ctx_recorder_write takes on a full ring: a ring of BYTES
 * (default 64 MiB) filled by two fibers in a ping-pong (a record a
 * hand-off) that await a timer now and then (its start, settle and end),
 * then written REPS times in each form to FILE (default
 * /dev/null; a file on disk adds the kernel's copy), timed.
 * Usage: recorder-write [BYTES] [REPS] [FILE]
 * Prints, in ms, the median of the writes of each form, with the events
 * the ring held and the bytes of one JSON write:
 *   name=recorder-write bytes=B events=N json_ms=... json_bytes=...
 *   text_ms=... ok=1 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "uvp.h"

#define MAX_REPS 21

static uvp_ctx_t *ctx;
static uvp_promise_t *pa, *pb;
static size_t steps, bad;

/* The ping-pong of bench/fiber-pingpong, with a timer now and then. */
static uvp_ret_t ping(void *arg) {
  uvp_promise_t **mine = arg, **other = mine == &pa ? &pb : &pa;
  for (size_t i = 0; i < steps; i++) {
    if (i % 64 == 0) {
      uvp_promise_t *d;
      bad +=
          uvp_delay(ctx, 0, NULL, NULL, 0, &d) != 0 || uvp_await(d, NULL) != 0;
      uvp_promise_release(d);
    }
    bad += uvp_promise_new(ctx, mine) != 0;
    if (*other != NULL)
      bad += uvp_promise_resolve(*other, NULL, NULL) != 0;
    bad += uvp_await(*mine, NULL) != 0;
    uvp_promise_release(*mine);
    *mine = NULL;
  }
  if (*other != NULL)
    bad += uvp_promise_resolve(*other, NULL, NULL) != 0;
  return uvp_ret_pass();
}

static size_t counted;
static int count_bytes(void *arg, const char *text, size_t len) {
  FILE *f = arg;
  counted += len;
  return fwrite(text, 1, len, f) == len ? 0 : UV_EIO;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  size_t bytes = argc > 1 ? strtoull(argv[1], NULL, 10) : 64u << 20;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  const char *path = argc > 3 ? argv[3] : "/dev/null";
  if (reps < 1 || reps > MAX_REPS)
    return 2;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0 ||
      uvp_ctx_set_recorder(ctx, bytes, 0) != 0)
    return 1;
  uvp_recorder_stats_t st;
  if (uvp_ctx_recorder_stats(ctx, &st) != 0)
    return 1;
  /* Fill it twice over: the ring then holds the last of it. */
  steps = st.capacity + 1000;
  uvp_promise_t *a, *b;
  if (uvp_fiber_spawn(ctx, ping, &pa, NULL, &a) != 0 ||
      uvp_fiber_spawn(ctx, ping, &pb, NULL, &b) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_promise_release(a);
  uvp_promise_release(b);
  if (uvp_ctx_recorder_stats(ctx, &st) != 0)
    return 1;
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return 1;
  double json[MAX_REPS], text[MAX_REPS];
  int n = 0;
  size_t json_bytes = 0;
  for (int r = 0; r < reps; r++) {
    rewind(f);
    counted = 0;
    uvp_record_opts_t o = {UVP_RECORD_JSON, 0, NULL, count_bytes, f};
    uint64_t t0 = uv_hrtime();
    n = uvp_ctx_recorder_write(ctx, &o);
    fflush(f);
    json[r] = (double)(uv_hrtime() - t0) / 1e6;
    json_bytes = counted;
    rewind(f);
    o.format = UVP_RECORD_TEXT;
    t0 = uv_hrtime();
    bad += uvp_ctx_recorder_write(ctx, &o) < 0;
    fflush(f);
    text[r] = (double)(uv_hrtime() - t0) / 1e6;
  }
  fclose(f);
  qsort(json, (size_t)reps, sizeof(double), cmp);
  qsort(text, (size_t)reps, sizeof(double), cmp);
  bad += n < 0 || (uint64_t)n != st.kept;
  printf("name=recorder-write bytes=%zu events=%d json_ms=%.1f "
         "json_bytes=%zu text_ms=%.1f ok=%d\n",
         bytes, n, json[reps / 2], json_bytes, text[reps / 2], bad == 0);
  if (uvp_ctx_close(ctx) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 && bad == 0 ? 0 : 1;
}

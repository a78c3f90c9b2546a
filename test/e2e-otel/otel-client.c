/* otel-client URL RECORD [TRACESTATE]: one uvp_curl_get of URL made under
 * a trace context of the program's own (a root INTERNAL span beginning a
 * new trace, entered, with TRACESTATE if given), for the OpenTelemetry
 * interop test (test_otel.js).  Prints one line of JSON,
 *   {"trace_id":"<32 hex>","root_id":"<16 hex>","status":200,"body":"..."}
 * (status: the HTTP status, or the rejection's code), and writes the
 * flight recorder (the CLIENT span uvp-curl began, with its ids) to
 * RECORD as Chrome trace JSON.  Exit status 0 once the request was
 * answered and everything closed. */
#include <stdio.h>
#include <string.h>

#include <uvp-curl.h>

static void hex(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++)
    snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The body as a JSON string's contents (controls as '.'). */
static void print_body(const char *s) {
  for (; *s != '\0'; s++) {
    if (*s == '"' || *s == '\\')
      putchar('\\');
    putchar((unsigned char)*s < 0x20 ? '.' : *s);
  }
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_curl_t *curl;
  uvp_span_t root;
  uvp_promise_t *p = NULL;
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: otel-client URL RECORD [TRACESTATE]\n");
    return 2;
  }
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  int rc = uvp_ctx_set_recorder(ctx, 1u << 20, UVP_RECORD_ALL);
  if (rc == 0)
    rc = uvp_curl_new(ctx, &curl);
  if (rc == 0)
    rc = uvp_span_begin(ctx, &root, "otel-client", UVP_SPAN_INTERNAL, NULL,
                        UVP_SPAN_NEW_TRACE);
  if (rc == 0)
    rc = uvp_tracectx_set(ctx, &root.tc, argc == 4 ? argv[3] : NULL);
  if (rc == 0)
    rc = uvp_curl_get(curl, argv[1], &p);
  if (rc != 0) {
    fprintf(stderr, "otel-client: %s\n", uvp_strerror(rc));
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  char trace[33], id[17];
  hex(root.tc.trace_id, 16, trace);
  hex(root.tc.span_id, 8, id);
  const uvp_curl_response_t *res = NULL;
  long status = uvp_promise_reason(p, NULL);
  if (uvp_promise_state(p) == UVP_FULFILLED) {
    res = uvp_promise_value(p);
    status = res->status;
  }
  printf("{\"trace_id\":\"%s\",\"root_id\":\"%s\",\"status\":%ld,\"body\":\"",
         trace, id, status);
  print_body(res != NULL ? res->body.base : "");
  printf("\"}\n");
  int ok = res != NULL;
  uvp_promise_release(p);
  uvp_span_end(ctx, &root, 0);

  FILE *f = fopen(argv[2], "w");
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, f, NULL, NULL};
  int n = f != NULL ? uvp_ctx_recorder_write(ctx, &o) : -1;
  if (f == NULL || fclose(f) != 0 || n < 0) {
    fprintf(stderr, "otel-client: %s: not written\n", argv[2]);
    ok = 0;
  }
  uvp_curl_close(curl);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop) == 0 && ok ? 0 : 1;
}

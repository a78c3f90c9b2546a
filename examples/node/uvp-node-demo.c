/* uvp inside Node.js: a Node-API addon (docs/guide-embedding.md, "Hosts
 * with a teardown protocol of their own").
 *
 * Each environment that loads it (the main thread, every worker thread)
 * gets a uvp context on the loop napi_get_uv_event_loop gives.  JavaScript
 * calls readFile(path), which returns a promise of a Buffer: a fiber per
 * call reads the whole file with uvp_fs_read_file (in libuv's thread
 * pool) and a handler settles the JavaScript promise.
 *
 * The point is the teardown.  When a worker is terminated, or the process
 * exits, Node runs the environment's cleanup hooks, runs the loop only
 * for what it tracks itself, and then requires uv_loop_close() to return
 * 0, aborting the process otherwise.  A whole-file read running in the
 * pool cannot be cancelled: uvp_ctx_close rejects its promise, but the
 * request stays active until the pool hands it back.  So the context is
 * closed from an asynchronous cleanup hook (napi_add_async_cleanup_hook)
 * with uvp_ctx_close_full, whose callback says uvp is done with the loop;
 * the hook is removed from there, and Node runs the loop until then.
 *
 * UVP_NODE_DEMO_TEARDOWN=sync selects the teardown that aborts instead: a
 * plain cleanup hook (napi_add_env_cleanup_hook) calling uvp_ctx_close,
 * which returns at once while reads still run in the pool.
 *
 * Built without node-gyp (README.md here):
 *   cc -shared -fPIC -I/usr/include/node -Iinclude \
 *      examples/node/uvp-node-demo.c build/libuvp.a -o uvp-node-demo.node
 * Node's executable provides libuv's symbols to the addon. */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uvp.h>

typedef struct addon_s {
  napi_env env;
  uvp_ctx_t *ctx;
  napi_ref resource; /* the handlers' async resource (callback scopes) */
  napi_async_context actx;
  napi_async_cleanup_hook_handle hook;
} addon_t;

typedef struct call_s {
  addon_t *a;
  napi_deferred deferred;
  char path[];
} call_t;

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      fprintf(stderr, "uvp-node-demo: %s failed\n", #call);                    \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* ---- a read ---------------------------------------------------------------
 */

/* The fiber: read the whole file, wait for it, settle like it. */
static uvp_ret_t read_body(void *arg) {
  call_t *c = arg;
  uvp_promise_t *p;
  int rc = uvp_fs_read_file(c->a->ctx, c->path, 0, &p);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  (void)uvp_await(p, NULL); /* UVP_ECLOSED at teardown: p says the same */
  return uvp_ret_adopt(p);
}

/* The fiber's promise settled: settle JavaScript's, inside a callback
 * scope so that its reactions (microtasks) run when we return.  A worker
 * being terminated runs no more JavaScript: the calls then fail, and the
 * promise is left to the environment's end. */
static uvp_ret_t settle_js(void *arg, const uvp_outcome_t *in) {
  call_t *c = arg;
  napi_env env = c->a->env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource, v, msg;
  if (napi_open_handle_scope(env, &hs) != napi_ok)
    return uvp_ret_value(NULL, NULL);
  if (napi_get_reference_value(env, c->a->resource, &resource) == napi_ok &&
      napi_open_callback_scope(env, resource, c->a->actx, &cs) == napi_ok) {
    if (in->status == 0) {
      const uvp_buf_t *b = in->value;
      if (napi_create_buffer_copy(env, b->len, b->base, NULL, &v) == napi_ok)
        (void)napi_resolve_deferred(env, c->deferred, v);
    } else if (napi_create_string_utf8(env, uvp_strerror(in->status),
                                       NAPI_AUTO_LENGTH, &msg) == napi_ok &&
               napi_create_error(env, NULL, msg, &v) == napi_ok) {
      (void)napi_reject_deferred(env, c->deferred, v);
    }
    (void)napi_close_callback_scope(env, cs);
  }
  (void)napi_close_handle_scope(env, hs);
  return uvp_ret_value(NULL, NULL);
}

static napi_value read_file(napi_env env, napi_callback_info info) {
  addon_t *a;
  size_t argc = 1, len;
  napi_value argv[1], promise;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&a));
  if (argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "readFile(path): path is a string");
    return NULL;
  }
  call_t *c = malloc(sizeof(*c) + len + 1);
  if (c == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  c->a = a;
  /* A worker being terminated runs no more JavaScript, and these calls
   * then fail (a pending termination): nothing is started, and the caller,
   * who is going away, gets nothing back. */
  if (napi_get_value_string_utf8(env, argv[0], c->path, len + 1, &len) !=
          napi_ok ||
      napi_create_promise(env, &c->deferred, &promise) != napi_ok) {
    free(c);
    return NULL;
  }
  /* The handler takes the fiber's promise.  c goes after the handler, or
   * once uvp knows it will not run (the context closed first: the
   * JavaScript promise then stays pending, as the environment is going
   * away). */
  napi_deferred deferred = c->deferred;
  uvp_promise_t *fiber;
  int rc = uvp_fiber_spawn(a->ctx, read_body, c, NULL, &fiber);
  if (rc != 0)
    free(c);
  else /* refused, c is freed (uvp.h, "Handing over") */
    rc = uvp_promise_on_full(fiber, UVP_ON_BOTH | UVP_ON_TAKE, settle_js, c,
                             free, NULL);
  if (rc != 0) {
    napi_value msg, err;
    if (napi_create_string_utf8(env, uvp_strerror(rc), NAPI_AUTO_LENGTH,
                                &msg) == napi_ok &&
        napi_create_error(env, NULL, msg, &err) == napi_ok)
      (void)napi_reject_deferred(env, deferred, err);
  }
  return promise;
}

/* ---- teardown -------------------------------------------------------------
 */

static void addon_free(addon_t *a) { free(a); }

/* What a cleanup hook does first, either way: what JavaScript gave the
 * handlers goes (none of them runs after the close). */
static void release_js(addon_t *a) {
  (void)napi_delete_reference(a->env, a->resource);
  (void)napi_async_destroy(a->env, a->actx);
}

/* uvp's last handle has closed and its last request (a read the pool was
 * still running) has completed: Node may close the loop now. */
static void on_uvp_closed(uvp_ctx_t *ctx, void *arg) {
  addon_t *a = arg;
  (void)ctx;
  CHECK(napi_remove_async_cleanup_hook(a->hook));
  addon_free(a);
}

static void async_cleanup(napi_async_cleanup_hook_handle hook, void *arg) {
  addon_t *a = arg;
  a->hook = hook;
  release_js(a);
  int rc = uvp_ctx_close_full(a->ctx, on_uvp_closed, a);
  if (rc != 0) {
    fprintf(stderr, "uvp-node-demo: uvp_ctx_close_full: %s\n",
            uvp_strerror(rc));
    abort();
  }
}

/* The teardown as it was reported: uvp_ctx_close returns while reads
 * still run in the pool, Node closes the loop, which is still busy. */
static void sync_cleanup(void *arg) {
  addon_t *a = arg;
  release_js(a);
  (void)uvp_ctx_close(a->ctx);
  addon_free(a);
}

/* ---- the module -----------------------------------------------------------
 */

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  addon_t *a = calloc(1, sizeof(*a));
  if (a == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  a->env = env;
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  int rc = uvp_ctx_new(loop, &a->ctx);
  if (rc != 0) {
    free(a);
    napi_throw_error(env, NULL, uvp_strerror(rc));
    return NULL;
  }
  napi_value resource, name, fn;
  CHECK(napi_create_object(env, &resource));
  CHECK(napi_create_string_utf8(env, "uvp", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_reference(env, resource, 1, &a->resource));
  CHECK(napi_async_init(env, resource, name, &a->actx));
  const char *mode = getenv("UVP_NODE_DEMO_TEARDOWN");
  if (mode != NULL && strcmp(mode, "sync") == 0)
    CHECK(napi_add_env_cleanup_hook(env, sync_cleanup, a));
  else
    CHECK(napi_add_async_cleanup_hook(env, async_cleanup, a, NULL));
  CHECK(napi_create_function(env, "readFile", NAPI_AUTO_LENGTH, read_file, a,
                             &fn));
  CHECK(napi_set_named_property(env, exports, "readFile", fn));
  return exports;
}

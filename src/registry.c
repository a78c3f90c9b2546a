/* The process-wide table of contexts and its lock (see registry.h). */
#include <stdatomic.h>

#include "registry.h"

uvp_ctx_t *uvp__contexts[UVP__MAX_CONTEXTS];

static uv_mutex_t process_mu;
static bool process_mu_ok;
static uv_once_t process_once = UV_ONCE_INIT;
static atomic_int live_contexts;
static unsigned top_id; /* no id above it is taken (under the lock) */

static void process_init(void) {
  process_mu_ok = uv_mutex_init(&process_mu) == 0;
}

bool uvp__process_lock(void) {
  uv_once(&process_once, process_init);
  if (process_mu_ok)
    uv_mutex_lock(&process_mu);
  return process_mu_ok;
}

void uvp__process_unlock(void) { uv_mutex_unlock(&process_mu); }

/* The lowest free id, so that a process creating contexts one after the
 * other keeps reusing the table's first entries. */
int uvp__registry_add(uvp_ctx_t *ctx, uint16_t *id) {
  if (!uvp__process_lock())
    return UV_ENOMEM;
  int rc = UV_ENOMEM;
  for (unsigned i = 1; i < UVP__MAX_CONTEXTS; i++) {
    if (uvp__contexts[i] == NULL) {
      uvp__contexts[i] = ctx;
      *id = (uint16_t)i;
      if (i > top_id)
        top_id = i;
      atomic_fetch_add(&live_contexts, 1);
      rc = 0;
      break;
    }
  }
  uvp__process_unlock();
  return rc;
}

void uvp__registry_remove(uint16_t id) {
  (void)uvp__process_lock(); /* it worked for uvp__registry_add */
  uvp__contexts[id] = NULL;
  atomic_fetch_sub(&live_contexts, 1);
  uvp__process_unlock();
}

bool uvp__registry_has(const uvp_ctx_t *ctx) {
  if (!uvp__process_lock())
    return false; /* no lock: no context could be made */
  bool found = false;
  for (unsigned i = 1; i <= top_id && !found; i++)
    found = uvp__contexts[i] == ctx;
  uvp__process_unlock();
  return found;
}

bool uvp__registry_busy(void) { return atomic_load(&live_contexts) != 0; }

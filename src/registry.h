/* Private to src/: what the whole process shares.  Every open context (and
 * every closed one not yet freed) by id, so that a promise can name its
 * context in two bytes; the count of live contexts, which the allocator
 * hook needs; and the lock that guards both and the creation sites. */
#ifndef UVP_REGISTRY_H
#define UVP_REGISTRY_H

#include "base.h"

/* Id 0 is never used.  An entry is written before any promise of the
 * context exists and cleared when the context is freed, after its last
 * promise: whoever holds a promise may read its entry without a lock. */
#define UVP__MAX_CONTEXTS 65536
extern uvp_ctx_t *uvp__contexts[UVP__MAX_CONTEXTS];

/* false, and not locked, if the lock could not be created. */
bool uvp__process_lock(void);
void uvp__process_unlock(void);

/* The lowest free id for ctx (UV_ENOMEM when all are taken), and back. */
int uvp__registry_add(uvp_ctx_t *ctx, uint16_t *id);
void uvp__registry_remove(uint16_t id);

/* Whether ctx is a context's address (open, or closed and not yet freed),
 * found without reading *ctx: a second uvp_ctx_close may be given freed
 * memory. */
bool uvp__registry_has(const uvp_ctx_t *ctx);

/* Whether any context exists (uvp_replace_allocator refuses then). */
bool uvp__registry_busy(void);

#endif

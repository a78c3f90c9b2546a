/* Private to src/: the task dump (dump.c, uvp_ctx_dump_tasks), for the
 * stall detector beside it.  The layers below tell it of their tasks
 * through their state's `tasks` hook and a sink (tasks.h), and of
 * their promises through their work's class: none of them names it. */
#ifndef UVP_DUMP_H
#define UVP_DUMP_H

#include "work-door.h"

/* "; slots 0=VALUE, 1=VALUE" for scope s (each through its formatter, as
 * the task dump shows them) into buf, cap bytes; returns its length (0:
 * no slot set).  Loop thread (the stall detector's reports). */
size_t uvp__slots_text(uvp_ctx_t *ctx, const uvp__scope_t *s, char *buf,
                       size_t cap);

typedef struct uvp__dump_s uvp__dump_t;

#endif

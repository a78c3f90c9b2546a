/* What the tools (uvp-fanout, uvp-gateway, uvp-files) share to serve the
 * live console (uvp_console_listen) when UVP_CONSOLE=PATH is set. */
#ifndef CONSOLE_ENV_H
#define CONSOLE_ENV_H

#include <uvp.h>

/* With UVP_CONSOLE=PATH in the environment, ctx serves its console at
 * PATH (index 0: the tool's only or first context) or PATH.INDEX (a
 * gateway's further workers; `uvp-console PATH` attaches to PATH.1,
 * PATH.2, ... too).  Returns 0 (also when UVP_CONSOLE is unset or
 * empty), or prints "TOOL: UVP_CONSOLE=PATH: why" on stderr and returns
 * uvp_console_listen's error.  ctx's loop thread. */
int tool_console_listen(uvp_ctx_t *ctx, const char *tool, unsigned index);

#endif

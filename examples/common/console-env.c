/* UVP_CONSOLE=PATH for the tools: see console-env.h. */
#include "console-env.h"

#include <stdio.h>
#include <stdlib.h>

int tool_console_listen(uvp_ctx_t *ctx, const char *tool, unsigned index) {
  const char *path = getenv("UVP_CONSOLE");
  if (path == NULL || path[0] == '\0')
    return 0;
  char buf[4096];
  int n = index == 0 ? snprintf(buf, sizeof(buf), "%s", path)
                     : snprintf(buf, sizeof(buf), "%s.%u", path, index);
  int rc = n < 0 || (size_t)n >= sizeof(buf) ? UV_ENAMETOOLONG
                                             : uvp_console_listen(ctx, buf);
  if (rc != 0)
    fprintf(stderr, "%s: UVP_CONSOLE=%s: %s\n", tool, buf, uvp_strerror(rc));
  return rc;
}

/* What the tools (uvp-fanout, uvp-files, uvp-gateway) say the same way
 * about their command lines. */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>

#include "compat.h"

/* getopt_long's '?' or ':' (opterr 0, shortopts beginning with ':') as
 * one line on stderr: the option, what is wrong with it, and where the
 * usage is ("uvp-files: unknown option '--foo' (uvp-files --help lists
 * the options)"). */
void cli_option_error(const char *tool, int c, char **argv,
                      const char *shortopts, const struct option *longopts);

/* Any other usage error (a missing or extra operand), the same way:
 * "TOOL: WHAT (TOOL --help lists the options)". */
COMPAT_PRINTF(2, 3)
void cli_usage_error(const char *tool, const char *fmt, ...);

#endif

/* What the tools say the same way about their command lines (cli.h). */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The argument getopt has just passed is the option when it is a long
 * one: optopt is then 0 (unknown) or the option's value, never a short
 * option getopt does not know (it may be in the middle of "-zL"). */
void cli_option_error(const char *tool, int c, char **argv,
                      const char *shortopts, const struct option *longopts) {
  const char *arg = argv[optind - 1];
  int is_long = strncmp(arg, "--", 2) == 0 &&
                (optopt == 0 || optopt > 255 ||
                 (optopt != ':' && strchr(shortopts, optopt) != NULL));
  char short_name[3] = {'-', (char)optopt, '\0'};
  const char *name = is_long ? arg : short_name;
  int len = is_long ? (int)strcspn(arg, "=") : 2;
  int matches = 0; /* an abbreviation of two or more: ambiguous */
  for (const struct option *o = longopts; is_long && o->name != NULL; o++)
    matches += strncmp(o->name, arg + 2, (size_t)len - 2) == 0;
  /* A known long option with "=value" failed only if it takes none:
   * glibc's getopt says '?' for that, BSD's (mingw-w64's, macOS's) ':'. */
  const char *what = is_long && optopt != 0 && strchr(arg, '=') != NULL
                         ? "takes no argument"
                     : c == ':'    ? "needs an argument"
                     : matches > 1 ? "is ambiguous"
                                   : NULL;
  if (what != NULL)
    cli_usage_error(tool, "option '%.*s' %s", len, name, what);
  else
    cli_usage_error(tool, "unknown option '%.*s'", len, name);
}

void cli_usage_error(const char *tool, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", tool);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (%s --help lists the options)\n", tool);
  va_end(ap);
}

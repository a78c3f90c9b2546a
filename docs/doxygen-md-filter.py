#!/usr/bin/env python3
"""Doxygen's input filter for the Markdown pages (docs/Doxyfile,
FILTER_PATTERNS): what is written for GitHub, made readable by Doxygen
1.9.4 (Debian 12's), which would otherwise show it as raw text or a dead
link.  Line for line, so that Doxygen's warnings keep their line numbers.

    doxygen-md-filter.py FILE.md     (the page, filtered, on stdout)

* A heading's inline code loses its backquotes: Doxygen 1.9.4 escapes any
  markup in a section title, so `## A fiber: `await` in C` would show a
  literal <tt>await</tt>.
* A link to a header of include/ (`[the reference](../include/uvp.h)`)
  becomes a link to that header's page (`@ref uvp.h`): Doxygen would
  keep the relative path, which leads out of the site.
* A link to another file of the repository that is not a page of the
  site (`[LICENSE](LICENSE)`) becomes its text: Doxygen would show the
  Markdown as it is.

Fenced code blocks are left alone.  test/docs/check_site.py checks the
site that comes out."""
import os
import re
import sys

path = sys.argv[1]
here = os.path.dirname(os.path.abspath(path))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!!)\[((?:[^\[\]`]|`[^`]*`)+)\]\(([^()\s]+)\)")
FENCE = re.compile(r"^\s*(```+|~~~+)")


def link(m):
    text, target = m.group(1), m.group(2)
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        return m.group(0)  # the web, or an anchor of the page
    file = os.path.normpath(os.path.join(here, target.split("#")[0]))
    if file.endswith(".md") or not os.path.isfile(file):
        return m.group(0)  # a page: Doxygen links it
    rel = os.path.relpath(file, root)
    if rel.startswith("include" + os.sep):
        return "[%s](@ref %s)" % (text, os.path.basename(file))
    return text


out, fence = [], None
for line in open(path, encoding="utf-8"):
    m = FENCE.match(line)
    if fence is None and m:
        fence = m.group(1)
    elif fence is not None:
        if m and m.group(1) == fence and line.strip() == fence:
            fence = None
    elif line.lstrip(" ").startswith("#") and re.match(r"^ {0,3}#{1,6} ", line):
        line = line.replace("`", "")
    else:
        line = LINK.sub(link, line)
    out.append(line)
sys.stdout.write("".join(out))

#!/usr/bin/env python3
"""Doxygen's input filter for the Markdown pages (docs/Doxyfile,
FILTER_PATTERNS): what is written for GitHub, made readable by Doxygen
1.9.4 (Debian 12's), which would otherwise show it as raw text or a dead
link.  Line for line, so that Doxygen's warnings keep their line numbers.

    doxygen-md-filter.py FILE.md     (the page, filtered, on stdout)

* A heading's inline code loses its backquotes: Doxygen 1.9.4 escapes any
  markup in a section title, so `## A fiber: `await` in C` would show a
  literal <tt>await</tt>.  Its `--` (an option) becomes `\--`, which
  Doxygen writes as two dashes, not as a dash.
* A link to a header of include/ (`[the reference](../include/uvp.h)`)
  becomes a link to that header's page (`@ref uvp.h`): Doxygen would
  keep the relative path, which leads out of the site.
* A link to another file of the repository that is not a page of the
  site (`[LICENSE](LICENSE)`, `[DEVELOPERS.md](../DEVELOPERS.md)`: the pages are
  the Markdown files of the Doxyfile's INPUT less its EXCLUDE) becomes its
  text: Doxygen would show the Markdown as it is, or a dead link.

Fenced code blocks are left alone.  test/docs/check_site.py checks the
site that comes out."""
import os
import re
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def site_pages(source_root=root):
    """The Markdown files that are pages of the site (absolute paths), and
    the main page's path relative to source_root: docs/Doxyfile's INPUT
    (its directories by *.md) less its EXCLUDE."""
    conf = open(os.path.join(source_root, "docs", "Doxyfile")).read()
    conf = conf.replace("\\\n", " ")

    def words(key):
        m = re.search(r"^%s\s*=(.*)$" % key, conf, re.M)
        return m.group(1).split() if m else []
    out = set()
    for w in words("INPUT"):
        full = os.path.join(source_root, w)
        if os.path.isdir(full):
            out |= {os.path.join(full, f) for f in os.listdir(full)
                    if f.endswith(".md")}
        elif w.endswith(".md"):
            out.add(full)
    out -= {os.path.join(source_root, w) for w in words("EXCLUDE")}
    main = words("USE_MDFILE_AS_MAINPAGE")
    return {os.path.normpath(p) for p in out}, main[0] if main else None
LINK = re.compile(r"(?<!!)\[((?:[^\[\]`]|`[^`]*`)+)\]\(([^()\s]+)\)")
FENCE = re.compile(r"^\s*(```+|~~~+)")


# Set by the command line; test/docs/check_site.py imports site_pages only.
path = sys.argv[1] if __name__ == "__main__" else None
here = os.path.dirname(os.path.abspath(path)) if path else root
pages = site_pages()[0] if path else set()


def link(m):
    text, target = m.group(1), m.group(2)
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
        return m.group(0)  # the web, or an anchor of the page
    file = os.path.normpath(os.path.join(here, target.split("#")[0]))
    if file in pages or not os.path.isfile(file):
        return m.group(0)  # a page: Doxygen links it
    rel = os.path.relpath(file, root)
    if rel.startswith("include" + os.sep):
        return "[%s](@ref %s)" % (text, os.path.basename(file))
    return text


def main():
    out, fence = [], None
    for line in open(path, encoding="utf-8"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if m and m.group(1) == fence and line.strip() == fence:
                fence = None
        elif line.lstrip(" ").startswith("#") and re.match(r"^ {0,3}#{1,6} ",
                                                           line):
            # Its code is text now, where Doxygen would make `--` a dash:
            # \-- writes the two dashes (## Durable jobs (uvp-fanout --durable)).
            line = line.replace("`", "").replace("--", "\\--")
        else:
            line = LINK.sub(link, line)
        out.append(line)
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()

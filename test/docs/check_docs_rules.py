#!/usr/bin/env python3
"""The documents' house rules, which a reader meets before any program:

* no issue numbers ("issue 69", "issues 71 and 72") in README.md,
  CHANGELOG.md, DEVELOPERS.md or docs/: a reader has no issue tracker, so
  a document says what changed and why;
* README.md at most 250 lines: the first page a newcomer reads whole;
* the internals, in chapters (docs/internals/): its overview.md at most
  200 lines, each chapter at most 600, so that each reads in one sitting.

    check_docs_rules.py SOURCE_ROOT

Prints each breach as FILE:LINE: what, and exits 1 if there is one."""
import glob
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
ISSUE = re.compile(r"\bissues?\s+#?\d+", re.I)
LIMITS = {"README.md": 250}
OVERVIEW = "docs/internals/overview.md"


def rel_files():
    out = ["README.md", "CHANGELOG.md", "DEVELOPERS.md"]
    for pattern in ("docs/*.md", "docs/*/*.md"):
        out += sorted(os.path.relpath(p, root)
                      for p in glob.glob(os.path.join(root, pattern)))
    return [f for f in out if os.path.isfile(os.path.join(root, f))]


breaches = []
for rel in rel_files():
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # Over the whole text: "issue" may end one line and its number start
    # the next.
    for m in ISSUE.finditer(text):
        breaches.append("%s:%d: an issue number (%r): say what changed and "
                        "why instead" % (rel, text.count("\n", 0, m.start()) + 1,
                                         " ".join(m.group(0).split())))
    limit = LIMITS.get(rel)
    if rel.startswith("docs/internals/"):
        limit = 200 if rel == OVERVIEW else 600
    if limit is not None and len(lines) > limit:
        breaches.append("%s:%d: %d lines, more than %d"
                        % (rel, limit + 1, len(lines), limit))

for b in breaches:
    print(b)
print("%d documents checked, %d breaches" % (len(rel_files()), len(breaches)))
sys.exit(1 if breaches else 0)

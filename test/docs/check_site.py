#!/usr/bin/env python3
"""The reference site as a reader sees it: what Doxygen made of the pages.

    check_site.py HTML_DIR [SOURCE_ROOT]

HTML_DIR is the site .ci/docs built (OUTDIR/html); SOURCE_ROOT (default:
the current directory) holds docs/Doxyfile and the Markdown pages its
INPUT names.  Doxygen (1.9.4, Debian 12's) turns Markdown it cannot parse
into text without a warning, so each page is read back, through
html.parser, as a browser shows it:

* its visible text (not scripts or styles, nor what a tag's attributes
  hold) has no Doxygen command or escaped markup (`@code`, `@endcode`,
  `@section`, `@subsection`, `@ref`, `<tt>`, `<code>`, `<em>`; outside
  code, no other HTML tag either), no Markdown link left as text (`](`
  outside code), and no path of the machine the site was built on
  (SOURCE_ROOT's absolute path, or any absolute path to a .md file);
  outside code (<code>, <pre>, a fragment) no backquote: a code span
  Doxygen misread, after which code and text swap for the rest of the
  paragraph (a single-backquote span holding a quote mark followed by a
  non-letter, `dependency('uvp')`, is taken for a `quotation': write
  ``dependency('uvp')``; a span over three lines or more is text);
* no en or em dash directly before a word that a source (a page or a
  header of INPUT) writes after `--`: an option such as --now whose `--`
  Doxygen turned into a dash outside code, which a reader would copy;
* each code span of a Markdown page's source (CommonMark's: n backquotes
  up to the next n, within a paragraph; a heading's are the filter's) is
  the whole text of one <code> of its page, and each span of the
  headers' /** */ comments (code blocks aside) of one <code> of the site;
* each Markdown table of a page's source is a table, in order, with as
  many rows and columns, and no table's separator line (`|---|`) shows;
* each fenced code block of the source is a code fragment on the page,
  in order, with the same text (blank space aside): a fragment that lost
  `%s` or `\\n` to Doxygen's commands, or a block left as text, fails;
* each Markdown link of the source whose target the site holds (a page
  of docs, a header of include/) or that leads to the web is a link on
  the page, whose text is the whole of the source's link text: a link
  cut short by a line break in its text fails;
* every link (`href`, `src`, and the menus' `url:` in menudata.js) is
  alive: a relative target exists in HTML_DIR and its #fragment is an id
  or a name there; a link out of the site (`../`, an absolute path,
  `file:`) is dead.  Links to the web are not fetched.

Prints one line per finding, then a summary; exits 1 if there is any
finding."""
import glob
import os
import re
import sys
import urllib.parse
from html.parser import HTMLParser

html_dir = os.path.abspath(sys.argv[1])
source_root = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else ".")
findings = []
# The source tree's absolute path as a path of its own (a tree at /src
# must not match ../src/fiber.c).
root_path = re.compile(r"(?<![\w.-])" + re.escape(source_root) + r"(?![\w.-])")


def finding(where, what):
    findings.append("%s: %s" % (where, what))


# Markup that never belongs in a page's visible text.  A code fragment
# (a C program, a shell session) may hold `](` (a[i](x)), but not these.
RAW_ANYWHERE = ["@code", "@endcode", "@section", "@subsection", "@ref ",
                "<tt>", "</tt>", "<code>", "</code>", "<em>", "</em>"]
# An HTML tag shown as text outside code (a heading's <b>, say; <tt>,
# <code> and <em> are in RAW_ANYWHERE).
TAG = re.compile(r"</?(?:a|b|br|div|i|li|p|pre|span|strong|table|"
                 r"td|th|tr|ul)(?:\s[^<>]*)?>")
MD_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.+-]+/)+[\w.+-]+\.md\b")
WEB = re.compile(r"^(?:https?|ftp|mailto):", re.I)


class Page(HTMLParser):
    """One HTML page: its visible text, its links and ids, its markdown
    tables and code fragments."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hidden = 0      # inside <script> or <style>
        self.code = 0        # inside a code fragment, <code> or <pre>
        self.prose = []      # visible text outside code
        self.text = []       # all visible text
        self.ids = set()
        self.refs = []       # (attribute value, line)
        self.anchors = []    # [href, text] of each <a href>
        self.a_open = None
        self.tables = []     # markdown tables: [row][cell] counts
        self.table = None
        self.fragments = []  # code fragments: lines
        self.frag_depth = 0  # <div> depth inside a fragment
        self.line = None
        self.codes = []      # the text of each <code> element
        self.code_open = []  # the <code> elements open, innermost last

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k) and (k == "id" or tag == "a"):
                self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) is not None and not (tag == "a" and k == "src"):
                self.refs.append((a[k], self.getpos()[0]))
        if tag in ("script", "style"):
            self.hidden += 1
        if tag == "a" and a.get("href") is not None:
            self.a_open = [a["href"], ""]
            self.anchors.append(self.a_open)
        cls = (a.get("class") or "").split()
        if tag == "div" and self.frag_depth:
            self.frag_depth += 1
            if "line" in cls:
                self.line = ""
        elif tag == "div" and "fragment" in cls:
            self.frag_depth = 1
            self.fragments.append([])
            self.code += 1
        if tag in ("code", "pre", "tt"):
            self.code += 1
        if tag == "code":
            self.code_open.append("")
        if tag == "table" and "markdownTable" in cls:
            self.table = []
            self.tables.append(self.table)
        elif tag == "tr" and self.table is not None:
            self.table.append(0)
        elif tag in ("td", "th") and self.table:
            self.table[-1] += 1
        if tag in ("p", "br", "div", "li", "tr", "td", "th", "h1", "h2",
                   "h3", "h4", "h5", "h6", "pre", "dt", "dd"):
            self.add(" ")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.hidden -= 1
        if tag == "a":
            self.a_open = None
        if tag == "div" and self.frag_depth:
            self.frag_depth -= 1
            if self.line is not None:
                self.fragments[-1].append(self.line)
                self.line = None
            if self.frag_depth == 0:
                self.code -= 1
        if tag in ("code", "pre", "tt") and self.code:
            self.code -= 1
        if tag == "code" and self.code_open:
            self.codes.append(self.code_open.pop())
        if tag == "table":
            self.table = None
        if tag in ("p", "div", "li", "td", "th", "h1", "h2", "h3"):
            self.add(" ")

    def add(self, data):
        self.text.append(data)
        if not self.code:
            self.prose.append(data)

    def handle_data(self, data):
        if self.hidden:
            return
        self.add(data)
        if self.a_open is not None:
            self.a_open[1] += data
        if self.line is not None:
            self.line += data
        self.code_open = [c + data for c in self.code_open]


def squash(s):
    return " ".join(s.split())


pages = {}
for path in sorted(glob.glob(os.path.join(html_dir, "*.html"))):
    p = Page()
    p.feed(open(path, encoding="utf-8", errors="replace").read())
    p.close()
    pages[os.path.basename(path)] = p
if not pages:
    print("no HTML pages in %s" % html_dir)
    sys.exit(1)

# 1. Visible text.
for name, p in pages.items():
    text, prose = "".join(p.text), "".join(p.prose)
    for raw in RAW_ANYWHERE:
        n = text.count(raw)
        if n:
            i = text.find(raw)
            finding(name, "%d x literal %r in the text, first in: %r"
                    % (n, raw.strip(), squash(text[max(0, i - 60):i + 60])))
    for m in sorted(set(TAG.findall(prose))):
        finding(name, "an HTML tag shows as text: %s" % m)
    n = prose.count("`")
    if n:
        i = prose.find("`")
        finding(name, "%d x a backquote outside code, first in: %r"
                % (n, squash(prose[max(0, i - 60):i + 60])))
    n = prose.count("](")
    if n:
        i = prose.find("](")
        finding(name, "%d x a Markdown link left as text, first: %r"
                % (n, squash(prose[max(0, i - 60):i + 40])))
    for m in set(MD_PATH.findall(text)):
        finding(name, "a source path in the text: %s" % m)
    if root_path.search(text):
        finding(name, "the source tree's path %s in the text" % source_root)
    if re.search(r"\|\s*:?-{3,}:?\s*\|", prose):
        finding(name, "a Markdown table's |---| line shows as text")

# 2. Links, with their #fragments, from every page and the menus.
refs = [(name, v, line) for name, p in pages.items() for v, line in p.refs]
menudata = os.path.join(html_dir, "menudata.js")
if os.path.exists(menudata):
    for i, line in enumerate(open(menudata, encoding="utf-8"), 1):
        for v in re.findall(r"url:'([^']*)'", line):
            refs.append(("menudata.js", v, i))
checked = 0
for name, v, line in refs:
    where = "%s:%d" % (name, line)
    if WEB.match(v) or v.startswith("javascript:"):
        continue
    checked += 1
    url = urllib.parse.urlsplit(v)
    if url.scheme or url.netloc or url.path.startswith("/") \
            or url.path.startswith(".."):
        finding(where, "link out of the site: %s" % v)
        continue
    target = urllib.parse.unquote(url.path) or name
    full = os.path.normpath(os.path.join(html_dir, target))
    if not os.path.isfile(full):
        finding(where, "dead link: %s (no %s)" % (v, target))
        continue
    if url.fragment and target.endswith(".html"):
        t = pages.get(target)
        if t is None or urllib.parse.unquote(url.fragment) not in t.ids:
            finding(where, "dead anchor: %s" % v)

# 3. The Markdown sources against their pages: tables, code, links.
FENCE = re.compile(r"^( {0,3})(```+|~~~+)[^\n]*\n(.*?)^ {0,3}\2[ \t]*$",
                   re.S | re.M)
TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)+\|?\s*$")
LINK = re.compile(r"(?<!!)\[((?:[^\[\]`]|`[^`]*`)+)\]\(([^()\s]*)\)")


def load_filter():
    """docs/doxygen-md-filter.py as a module: which files are pages is its
    rule (INPUT less EXCLUDE), and the site's."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "md_filter", os.path.join(source_root, "docs", "doxygen-md-filter.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inputs():
    """The Markdown files that are pages (sorted), and the main page."""
    found, mainpage = load_filter().site_pages(source_root)
    return sorted(found), mainpage


def page_of(rel, mainpage):
    if rel == mainpage:
        return "index.html"
    return "md_" + re.sub(r"[/.-]", "_", os.path.splitext(rel)[0]) + ".html"


def table_shapes(text):
    """[(line, rows, columns)] of the Markdown tables of text (code out)."""
    lines, shapes, i = text.split("\n"), [], 1
    while i < len(lines):
        if TABLE_SEP.match(lines[i]) and "|" in lines[i - 1]:
            cols = len(lines[i].strip().strip("|").split("|"))
            j = i + 1
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            shapes.append((i, j - i, cols))  # header + body rows
            i = j
        else:
            i += 1
    return shapes


sources, mainpage = inputs()
# The page for people changing uvp stays out of the site (DEVELOPERS.md,
# which INPUT does not name); the internals' chapters are pages.
for rel in ("DEVELOPERS.md",):
    if page_of(rel, mainpage) in pages:
        finding(rel, "is a page of the site: it is for developers")
tables = fragments = links = 0
for src in sources:
    rel = os.path.relpath(src, source_root)
    page_name = page_of(rel, mainpage)
    p = pages.get(page_name)
    if p is None:
        finding(rel, "no page %s for it in the site" % page_name)
        continue
    md = open(src, encoding="utf-8").read()
    blocks = []

    def blank(m):
        blocks.append((md.count("\n", 0, m.start()) + 2, m.group(3)))
        return "\n" * m.group(0).count("\n")
    prose = FENCE.sub(blank, md)

    # Tables: same count, each with its rows and columns.
    want = table_shapes(prose)
    got = p.tables
    for k, (line, rows, cols) in enumerate(want):
        tables += 1
        where = "%s:%d (%s)" % (rel, line, page_name)
        if k >= len(got):
            finding(where, "a table of %d rows is not a table on the page"
                    % rows)
            continue
        if len(got[k]) != rows or any(c != cols for c in got[k]):
            finding(where, "the table (%d rows of %d cells) is %d rows of "
                    "%s cells on the page" % (rows, cols, len(got[k]),
                                              sorted(set(got[k]))))
    if len(got) > len(want):
        finding(rel, "%d tables on the page, %d in the source"
                % (len(got), len(want)))

    # Code blocks: each a fragment, in order, with the same text.
    frags = [squash("\n".join(f)) for f in p.fragments]
    k = 0
    for line, body in blocks:
        fragments += 1
        body = squash(body)
        if not body:
            continue
        j = k
        while j < len(frags) and frags[j] != body:
            j += 1
        if j == len(frags):
            near = frags[k] if k < len(frags) else "(no fragment left)"
            finding("%s:%d (%s)" % (rel, line, page_name),
                    "the code block is not a fragment with its text; the "
                    "next fragment reads: %r" % near[:160])
        else:
            k = j + 1

    # Links: the site holds the target, so the text is a whole link.
    texts = {}
    for href, t in p.anchors:
        texts.setdefault(squash(t), []).append(href)
    base = os.path.dirname(rel)
    for m in LINK.finditer(prose):
        text, target = m.group(1), m.group(2)
        path = target.split("#")[0]
        resolved = os.path.normpath(os.path.join(base, path)) if path else ""
        held = (WEB.match(target)
                or os.path.join(source_root, resolved) in sources
                or resolved.startswith("include" + os.sep) or not path)
        if not held:
            continue  # a file the site does not have: shown as its text
        links += 1
        shown = squash(re.sub(r"`([^`]*)`", r"\1", text))
        if shown not in texts:
            line = prose.count("\n", 0, m.start()) + 1
            finding("%s:%d (%s)" % (rel, line, page_name),
                    "the link [%s](%s) is not a link reading %r on the page"
                    % (squash(text), target, shown))

# 4. What the sources write in code and with `--`, as the pages show it:
# Doxygen 1.9.4 reads a single-backquote span holding a quote mark followed
# by a non-letter as a `quotation' and a span over three lines as text,
# after which code and text swap for the rest of the paragraph, and turns
# `--` outside code into an en dash.  Each code span of a Markdown page
# must be the whole text of one <code> of its page; each span of the
# headers' comments, of one <code> somewhere in the site; no en or em dash
# may stand directly before a word that a source writes after `--` (an
# option such as --now, which a reader would copy).
RUN = re.compile(r"`+")
HEADING = re.compile(r"^ {0,3}#{1,6} .*$", re.M)


def code_spans(text):
    """[(offset, content)] of the code spans of text, as CommonMark reads
    them: a run of n backquotes up to the next run of exactly n, within a
    paragraph; line breaks in it are spaces, one space at each end goes."""
    out, start = [], 0
    for para in re.split(r"(\n[ \t]*\n)", text):
        i = 0
        while True:
            m = RUN.search(para, i)
            if m is None:
                break
            if m.start() > 0 and para[m.start() - 1] == "\\":
                i = m.start() + 1  # an escaped backquote is text
                continue
            j, close = m.end(), None
            while close is None:
                c = RUN.search(para, j)
                if c is None:
                    break
                if len(c.group()) == len(m.group()):
                    close = c
                j = c.end()
            if close is None:
                i = m.end()  # no closing run: the backquotes are text
                continue
            body = para[m.end():close.start()].replace("\n", " ")
            if body.startswith(" ") and body.endswith(" ") and body.strip():
                body = body[1:-1]
            out.append((start + m.start(), body))
            i = close.end()
        start += len(para)
    return out


def comments(path):
    """The text of a header's /** */ comments, code blocks blanked, with
    each comment's line in the header."""
    src = open(path, encoding="utf-8").read()
    for m in re.finditer(r"/\*\*<?(.*?)\*/", src, re.S):
        lines = [re.sub(r"^\s*\*(?!/) ?", "", l)
                 for l in m.group(1).split("\n")]
        text = "\n".join(lines)
        text = re.sub(r"([@\\])(code|verbatim)\b.*?[@\\]end\2\b",
                      lambda b: "\n" * b.group(0).count("\n"), text,
                      flags=re.S)
        text = FENCE.sub(lambda b: "\n" * b.group(0).count("\n"), text)
        yield src.count("\n", 0, m.start()) + 1, text


conf = open(os.path.join(source_root, "docs", "Doxyfile")).read()
conf = conf.replace("\\\n", " ")
m = re.search(r"^INPUT\s*=(.*)$", conf, re.M)
headers = [os.path.join(source_root, w) for w in (m.group(1).split() if m
                                                  else []) if w.endswith(".h")]
every_code = {squash(c) for p in pages.values() for c in p.codes}
dashed = set()
spans = 0
for src in sources + headers:
    rel = os.path.relpath(src, source_root)
    text = open(src, encoding="utf-8").read()
    dashed |= set(re.findall(r"(?<![\w-])--([A-Za-z][\w-]*)", text))
    if src in headers:
        texts = [(rel, line, body, every_code, "the site")
                 for line, body in comments(src)]
    else:
        page_name = page_of(rel, mainpage)
        if page_name not in pages:
            continue  # found above
        prose = FENCE.sub(lambda b: "\n" * b.group(0).count("\n"), text)
        # docs/doxygen-md-filter.py takes a heading's backquotes away
        prose = HEADING.sub(lambda h: " " * len(h.group(0)), prose)
        texts = [(rel, 1, prose, {squash(c) for c in pages[page_name].codes},
                  page_name)]
    for rel, first, body, codes, where in texts:
        for at, span in code_spans(body):
            spans += 1
            if squash(span) and squash(span) not in codes:
                line = first + body.count("\n", 0, at)
                finding("%s:%d (%s)" % (rel, line, where),
                        "the code span `%s` is no <code> of the page"
                        % squash(span))
DASH = re.compile(r"[\u2013\u2014]([A-Za-z][\w-]*)")
for name, p in pages.items():
    text = "".join(p.text)
    for m in DASH.finditer(text):
        if m.group(1) in dashed:
            finding(name, "a dash before %s, which the source writes --%s: "
                    "%r" % (m.group(1), m.group(1),
                            squash(text[max(0, m.start() - 60):m.end() + 20])))

for f in findings:
    print(f)
print("%d pages, %d links and anchors, %d Markdown files (%d tables, "
      "%d code blocks, %d links), %d code spans: %d findings"
      % (len(pages), checked, len(sources), tables, fragments, links,
         spans, len(findings)))
sys.exit(1 if findings else 0)

"""Model output as markdown, rendered on the server and sanitized: it can never inject
HTML or script into the page.

Fenced code is highlighted with Pygments (spans with Pygments' short class names) under a
label naming its language; `$…$` and `$$…$$` become MathML (latex2mathml parses the TeX
into elements, nothing of it is run). nh3 has the last word: only the tags, attributes and
classes listed here reach the page. The copy buttons are added by the page's script."""

from __future__ import annotations

import contextlib
import functools
import html
import re
from typing import Any

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

MAX_HIGHLIGHT_CHARS = 100_000  # longer code blocks are shown plain
MAX_MATH_CHARS = 2_000  # longer formulas are shown as their source
CODE_STYLE = "github-dark"  # code blocks are dark in both themes
LANGUAGE_LABEL = re.compile(r"^[A-Za-z0-9_+#.-]{1,30}$")

_formatter = HtmlFormatter(nowrap=True)


def _code_block(code: str, language: str) -> str:
    """A code block: a head with its language, then the code, highlighted when Pygments
    knows the language."""
    language = language.strip().split()[0] if language.strip() else ""
    if not LANGUAGE_LABEL.match(language):
        language = ""
    body = html.escape(code)
    if language and len(code) <= MAX_HIGHLIGHT_CHARS:
        with contextlib.suppress(ClassNotFound):  # a language Pygments lacks: shown plain
            body = highlight(code, get_lexer_by_name(language), _formatter)
    label = html.escape(language or "code")
    return (
        f'<div class="codeblock"><div class="code-head"><span class="code-lang">{label}</span>'
        f"</div><pre><code>{body}</code></pre></div>\n"
    )


def _math(tex: str, options: dict[str, Any]) -> str:
    display = bool(options.get("display_mode"))
    if len(tex) <= MAX_MATH_CHARS:
        try:
            return latex_to_mathml(tex, display="block" if display else "inline")
        except Exception:  # noqa: S110 - any TeX it cannot parse is shown as written
            pass
    return f'<code class="math-source">{html.escape(tex)}</code>'


def _fence(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    return _code_block(token.content, token.info)


def _indented(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    return _code_block(tokens[idx].content, "")


# html=False makes raw HTML in the markdown plain text; nh3 then allows only what
# markdown itself (and the highlighter and the math renderer) produce, as a second line
# of defence. The math plugin wraps the MathML in <span class="math inline"> or
# <div class="math block">.
_markdown = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True})
    .enable("table")
    .enable("strikethrough")
    .use(
        dollarmath_plugin,
        allow_space=False,
        allow_digits=False,
        double_inline=True,
        renderer=_math,
    )
)
_markdown.add_render_rule("fence", _fence)
_markdown.add_render_rule("code_block", _indented)

_MATHML_TAGS = {
    "math",
    "mrow",
    "mi",
    "mn",
    "mo",
    "ms",
    "mtext",
    "mspace",
    "msub",
    "msup",
    "msubsup",
    "mfrac",
    "msqrt",
    "mroot",
    "mover",
    "munder",
    "munderover",
    "mtable",
    "mtr",
    "mtd",
    "mstyle",
    "mpadded",
    "mphantom",
    "menclose",
    "merror",
    "semantics",
    "annotation",
}
_ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "del",
    "s",
    "span",
    "div",
    *_MATHML_TAGS,
}
_MATHML_ATTRIBUTES = {
    "display",
    "mathvariant",
    "stretchy",
    "fence",
    "separator",
    "lspace",
    "rspace",
    "width",
    "height",
    "depth",
    "columnalign",
    "rowspacing",
    "columnspacing",
    "minsize",
    "maxsize",
    "movablelimits",
    "accent",
    "accentunder",
    "notation",
    "scriptlevel",
    "displaystyle",
}
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
    **{tag: set(_MATHML_ATTRIBUTES) for tag in _MATHML_TAGS},
}
_ALLOWED_CLASSES = {
    "span": {*STANDARD_TYPES.values(), "math", "inline", "code-lang"} - {""},
    "div": {"codeblock", "code-head", "math", "block", "inline"},
    "code": {"math-source"},
}


def render_markdown(text: str) -> str:
    rendered = _markdown.render(_fence_indented_code(text))
    return nh3.clean(
        rendered,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes=_ALLOWED_CLASSES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLOCK_START = re.compile(r"^\s*([-*+]|\d+[.)]|#{1,6}|>|\|)(\s|$)")


def _fence_indented_code(text: str) -> str:
    """Let indented code right after a line of prose be code. CommonMark says an indented
    block cannot interrupt a paragraph, so "Here it is:" followed by indented lines would
    become one paragraph with the indentation lost; models write it that way all the time.
    A blank line is put before such a block (not inside fences, lists or quotes)."""
    lines = text.split("\n")
    out: list[str] = []
    fence = ""
    previous = ""
    for line in lines:
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
        elif opened:
            fence = opened.group(1)
        elif (
            line.startswith(("    ", "\t"))
            and line.strip()
            and previous.strip()
            and not previous[:1].isspace()
            and not _BLOCK_START.match(previous)
        ):
            out.append("")
        out.append(line)
        previous = line
    return "\n".join(out)


@functools.cache
def code_css() -> str:
    """The stylesheet of highlighted code (served at /code.css): Pygments' rules for its
    token classes inside a code block, nothing else."""
    rules = HtmlFormatter(style=CODE_STYLE).get_style_defs(".codeblock pre").splitlines()
    return "\n".join(rule for rule in rules if rule.startswith(".codeblock pre")) + "\n"

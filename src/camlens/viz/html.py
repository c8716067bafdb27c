"""The one HTML renderer of every camlens report: a self-contained page where every value is escaped.

A page is built from small elements: :func:`heading`, :func:`paragraph`,
:func:`bullets`, :func:`table`, :func:`image`, :func:`figure` and
:func:`section`, put together by :func:`page`. Every string given to any of
them, text or attribute value, goes through :func:`html.escape` with
``quote=True``; tag and attribute names are checked. The only way to put
markup in is a :class:`Markup`, which only :meth:`Element.render` makes, so a
fragment rendered here can be embedded in another page without being escaped
twice. Images are embedded as base64 PNG, so a page needs no other file and
makes no request.

Example:
    >>> from camlens.viz.html import page, paragraph, section
    >>> text = page("<b>report</b>", section("Results", paragraph("a < b & c")))
    >>> "&lt;b&gt;report&lt;/b&gt;" in text and "a &lt; b &amp; c" in text
    True
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "STYLE",
    "Element",
    "Markup",
    "Node",
    "bullets",
    "element",
    "figure",
    "heading",
    "image",
    "page",
    "paragraph",
    "section",
    "table",
]

#: the stylesheet of every page (a constant of this module; no value is interpolated into it).
STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "img{max-width:100%;border:1px solid #ddd;margin:.3em 0}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
    "figure{margin:1.5em 0}"
)

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_VOID = frozenset({"img", "meta", "br", "hr"})
_BLOCK = frozenset({"html", "head", "body", "section", "table", "thead", "tbody", "ul", "ol", "figure"})


class Markup(str):
    """HTML that :meth:`Element.render` produced: embedded as is, never escaped again."""


@dataclass(frozen=True)
class Element:
    """One HTML element: a tag, attributes and children (text, markup or elements).

    Build one with :func:`element`; :meth:`render` escapes every text child and
    attribute value.
    """

    tag: str
    attrs: tuple[tuple[str, str], ...] = ()
    children: tuple[Node, ...] = field(default_factory=tuple)

    def render(self) -> Markup:
        """The element as HTML, every string escaped (``html.escape(value, quote=True)``)."""
        attrs = "".join(f' {name}="{html.escape(value, quote=True)}"' for name, value in self.attrs)
        if self.tag in _VOID:
            return Markup(f"<{self.tag}{attrs}>")
        sep = "\n" if self.tag in _BLOCK else ""
        inner = sep.join(_render(c) for c in self.children)
        return Markup(f"<{self.tag}{attrs}>{sep}{inner}{sep}</{self.tag}>")

    def __str__(self) -> str:
        return self.render()


#: what an element may contain: text (escaped), a :class:`Markup` fragment, or an element.
Node = str | Markup | Element


def _render(node: Node) -> str:
    if isinstance(node, Element):
        return node.render()
    if isinstance(node, Markup):
        return node
    return html.escape(node, quote=True)


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} is not a plain HTML name (letters, digits, '-')")
    return name


def element(tag: str, *children: Node, **attrs: object) -> Element:
    """An element ``<tag attrs>children</tag>``.

    Args:
        tag: the tag name (letters, digits, ``-``).
        children: text (escaped when rendered), :class:`Markup` or elements.
        attrs: attribute values, converted with ``str`` and escaped; a trailing
            underscore is dropped (``class_="x"``), other underscores become
            ``-`` (``aria_label``); ``None`` leaves the attribute out.

    Raises:
        ValueError: a tag or attribute name that is not a plain name.
        TypeError: a child that is not text, markup or an element.
    """
    pairs = tuple(
        (_check_name(k.rstrip("_").replace("_", "-"), "attribute"), str(v)) for k, v in attrs.items() if v is not None
    )
    for c in children:
        if not isinstance(c, (str, Element)):
            raise TypeError(f"an HTML child must be a str, Markup or Element, not {type(c).__name__}")
    return Element(_check_name(tag, "tag"), pairs, tuple(children))


def heading(text: str, level: int = 2) -> Element:
    """``<hN>text</hN>`` for ``level`` N from 1 to 6."""
    if level not in range(1, 7):
        raise ValueError(f"heading level={level!r} must be 1 to 6")
    return element(f"h{level}", text)


def paragraph(*parts: Node) -> Element:
    """``<p>`` of the parts in order (text is escaped)."""
    return element("p", *parts)


def bullets(items: Iterable[Node]) -> Element:
    """An unordered list, one ``<li>`` per item."""
    return element("ul", *(element("li", i) for i in items))


def table(head: Sequence[Node], rows: Iterable[Sequence[Node]], *, caption: str | None = None) -> Element:
    """A table: one header row of ``<th>``, then one ``<tr>`` of ``<td>`` per row.

    Values are text (use ``f"{x:.3f}"`` for numbers) or elements.
    """
    parts: list[Node] = [element("caption", caption)] if caption is not None else []
    parts.append(element("thead", element("tr", *(element("th", h) for h in head))))
    parts.append(element("tbody", *(element("tr", *(element("td", c) for c in row)) for row in rows)))
    return element("table", *parts)


def image(png: bytes, alt: str) -> Element:
    """``<img>`` with the PNG bytes embedded as a base64 ``data:`` URL."""
    data = base64.b64encode(png).decode("ascii")
    return element("img", alt=alt, src=f"data:image/png;base64,{data}")


def figure(png: bytes, caption: str) -> Element:
    """An embedded PNG with its caption (``<figure><img><figcaption>``)."""
    return element("figure", image(png, caption), element("figcaption", caption))


def section(title: str | None, *children: Node, class_: str | None = None, level: int = 2) -> Element:
    """``<section>`` with an optional heading of ``level`` followed by the children."""
    head: list[Node] = [heading(title, level)] if title is not None else []
    return element("section", *head, *children, class_=class_)


def page(title: str, *children: Node, style: str = STYLE) -> str:
    """A whole self-contained HTML document: ``<h1>title</h1>`` then the children.

    Args:
        title: the page's ``<title>`` and first heading (escaped).
        children: the body, in order.
        style: CSS for a ``<style>`` element; it is not escaped (CSS is not
            HTML), so it must not contain ``<``.

    Raises:
        ValueError: a style with ``<`` in it.
    """
    if "<" in style:
        raise ValueError("style must not contain '<' (it could close the <style> element)")
    head = element("head", element("meta", charset="utf-8"), element("title", title),
                   element("style", Markup(style)))
    body = element("body", heading(title, 1), *children)
    return f"<!doctype html>\n{element('html', head, body, lang='en').render()}\n"

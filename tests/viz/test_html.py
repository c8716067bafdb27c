"""The one HTML renderer: every value escaped, whatever the entry point; a page holds exactly what it is given."""

from __future__ import annotations

import base64
import html as stdhtml
import re

import pytest
import torch

from camlens.viz import html as h

HOSTILE = [
    "<script>alert(1)</script>",
    '" onload="alert(2)',
    "' onerror='alert(3)",
    "Tom & Jerry &amp; co",
    "</td></tr></table><img src=x>",
    "</style><script>x</script>",
]
PNG = b"\x89PNG\r\n\x1a\nnot really"


def _assert_escaped(text: str, value: str) -> None:
    """``value`` appears only in its escaped form: no raw markup from it survives."""
    assert stdhtml.escape(value, quote=True) in text
    assert value not in text
    for raw in ("<script", "<img src=x", '" onload', "' onerror", "</style><", "& Jerry"):
        if raw in value:
            assert raw not in text


@pytest.mark.parametrize("value", HOSTILE)
def test_text_is_escaped_through_every_entry_point(value):
    built = [
        h.element("span", value),
        h.heading(value, 3),
        h.paragraph(value, h.element("b", value)),
        h.bullets([value, value]),
        h.table([value, "b"], [[value, value]], caption=value),
        h.figure(PNG, value),
        h.section(value, h.paragraph(value)),
    ]
    for el in built:
        _assert_escaped(el.render(), value)
    _assert_escaped(h.page(value, *built), value)


@pytest.mark.parametrize("value", HOSTILE)
def test_attribute_values_are_escaped(value):
    for text in (
        h.element("a", "x", href=value, title=value).render(),
        h.image(PNG, value).render(),
        h.section(None, "x", class_=value).render(),
    ):
        _assert_escaped(text, value)
        # every attribute value is one double-quoted string without a raw quote inside
        for attr in re.findall(r'\s[a-z-]+="([^"]*)"', text):
            assert "<" not in attr and "'" not in attr


def test_markup_is_kept_and_names_and_styles_are_checked():
    inner = h.paragraph("<i>").render()
    assert isinstance(inner, h.Markup)
    assert h.section("s", inner).render().count("&lt;i&gt;") == 1  # embedded once, not escaped twice
    with pytest.raises(ValueError, match="tag"):
        h.element("script><b")
    with pytest.raises(ValueError, match="attribute"):
        h.element("p", **{"onclick=x": "1"})
    with pytest.raises(ValueError, match="style"):
        h.page("t", style="</style><script>")
    with pytest.raises(TypeError, match="int"):
        h.element("p", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        h.heading("x", 7)


def test_a_page_has_exactly_the_images_and_sections_given():
    pngs = [PNG + bytes([i]) for i in range(3)]
    page = h.page(
        "report",
        h.section("one", h.figure(pngs[0], "first"), h.image(pngs[1], "second")),
        h.section("two", h.figure(pngs[2], "third"), class_="x"),
        h.section("three"),
    )
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    srcs = re.findall(r'src="([^"]+)"', page)
    assert [base64.b64decode(s.split(",", 1)[1]) for s in srcs] == pngs
    assert re.findall(r"<section[^>]*>\n<h2>([^<]*)</h2>", page) == ["one", "two", "three"]
    assert page.count("<section") == page.count("</section>") == 3
    assert page.count("<h1>report</h1>") == 1 and "<title>report</title>" in page
    assert "http" not in page  # nothing to fetch


def test_evaluation_html_escapes_entry_names():
    from camlens.evaluation import Evaluation

    n, name = 5, HOSTILE[0]
    metrics = ("deletion", "insertion", "road", "road_morf", "road_lerf", "average_drop", "increase", "pointing")
    values = {e: {m: torch.linspace(0, 1, n).expand(1, n) for m in metrics} for e in (name, "random")}
    ev = Evaluation([name, "random"], values, {}, torch.empty(0), torch.empty(0), {}, {"seeds": [0]}, n_boot=20)
    frag = ev.html(figures=False)
    assert frag.startswith('<section class="camlens-evaluation">') and frag.endswith("</section>")
    _assert_escaped(frag, name)
    assert frag.count("<table>") == 2


def test_demo_report_escapes_every_value(tmp_path):
    pytest.importorskip("matplotlib")
    from camlens.demo.report import write_report

    bad = HOSTILE[0]
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.7}]
    extra = h.section(bad, h.paragraph(bad)).render()
    path = write_report(tmp_path / "r.html", title=bad, summary=[bad, HOSTILE[3]], history=history,
                        per_class=[0.5, 0.9], class_names=[bad, "b"], figures=[(bad, PNG)], sections=[extra, bad])
    text = path.read_text()
    _assert_escaped(text, bad)
    _assert_escaped(text, HOSTILE[3])
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3  # curve, per-class, the one figure
    assert text.count("<section") == 4  # training, per-class, figures, the extra one

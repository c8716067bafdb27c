"""The explorer in a real browser: Debian's Chromium driven by Playwright, the page opened from file://.

Both are required: a missing browser or Playwright fails this test (the test command installs them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_explorer_opens_filters_and_shows_an_item(small_audit, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install playwright")
    # the folder is copied: the page must work wherever it is put, with nothing but its own files
    folder = tmp_path / "copied audit"
    shutil.copytree(small_audit.out, folder)
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS, viewport=VIEWPORT
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((folder / "index.html").as_uri())
            page.wait_for_selector("#grid .card")
            n_items = small_audit.report["n_items"]
            assert page.text_content("#count").startswith(f"{n_items} items")
            assert page.locator("#classes tbody tr").count() == len(small_audit.report["classes"])
            first_card = page.locator("#grid .card img").first
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first_card.element_handle())

            # a filter changes the grid: only class 3's items, as many as the report counts
            cls = next(c for c in small_audit.report["classes"] if c["class"] == 3)
            page.select_option("#f-class", "3")
            assert page.text_content("#count").startswith(f"{cls['n']} items")
            ids = [int(v) for v in page.locator("#grid .card").evaluate_all("cs => cs.map(c => c.dataset.id)")]
            assert len(ids) == min(cls["n"], 120) and ids == sorted(ids)
            page.select_option("#f-correct", "no")
            assert page.text_content("#count").startswith(f"{round(cls['n'] * (1 - cls['accuracy']))} items")
            page.select_option("#f-correct", "all")

            # sorting by a statistic puts the largest first when descending
            page.select_option("#f-sort", "border")
            page.check("#f-desc")
            shown = page.locator("#grid .card").evaluate_all("cs => cs.map(c => +c.dataset.id)")
            border = dict(
                zip(*page.evaluate("[CAMLENS_AUDIT.items.id, CAMLENS_AUDIT.items.stats.border]"), strict=True)
            )
            values = [border[i] for i in shown if border[i] is not None]
            assert values == sorted(values, reverse=True) and len(values) > 1

            # the item view shows the image and every map
            page.locator("#grid .card").first.click()
            assert page.is_visible("#item")
            assert page.text_content("#item h3") == f"Item {shown[0]}"
            assert page.locator("#item figure").count() == 1 + 2
            assert page.locator("#item figcaption").all_text_contents() == ["image", "gradcam/seq.4",
                                                                           "hirescam/seq.4 (audited)"]  # fmt: skip
            shot = page.screenshot()
            assert _png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
        finally:
            browser.close()
    assert errors == []
    outside = [u for u in requests if not u.startswith(folder.as_uri() + "/") and not u.startswith("data:")]
    assert outside == []

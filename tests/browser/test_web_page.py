"""The product in a browser: a person signs in, uploads, watches the jobs, searches, reviews, deletes; a
second tenant sees none of it; the admin sees the review queue and the status; no console errors, no
serious or critical accessibility violations (axe-core), and a screenshot of each view at 1280x800 and
390 px wide.

The tests run in order on one embedded stack (a flow, as a person would go through it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.cli.stack import Stack
from tests.browser.conftest import ADMIN_KEY, HERE, KEYS, SIZES
from tests.integration import files

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
expect = sync_api.expect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_A, KEY_B = list(KEYS)
JOB_TIMEOUT_MS = 120_000
PAGES = [
    "Beekeeping basics. A colony of honey bees needs a dry hive, a queen and enough stored honey for winter.",
    "Quartz watches. A quartz resonator vibrates at 32768 hertz when a voltage is applied; counting those\n"
    "vibrations lets the watch keep time to within a few seconds a month.",
    "Volcanoes. Magma rises through the crust and erupts as lava, ash and gas at the surface.",
]
PAGE2_QUERY = "how does a quartz resonator keep a watch accurate"
DOCX_PARAGRAPHS = [
    "Bicycle maintenance.",
    "Lubricate the chain every few hundred kilometres and check the tyre pressure before each ride.",
]
OFF_TOPIC = "zebra migration across the serengeti plains"
SAMPLE = Path(__file__).resolve().parents[2] / "api" / "sample"
VIEWS = ["upload", "documents", "search", "review", "status"]


class Console:
    """Console errors and uncaught exceptions of a page (a failed request shows up as a console error)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upload")
    junk = folder / "tool.exe"
    junk.write_bytes(b"MZ\x90\x00 not a document")
    return {
        "pdf": files.pdf(folder / "watch-manual.pdf", PAGES),
        "docx": files.docx(folder / "bicycle.docx", DOCX_PARAGRAPHS),
        "junk": junk,
    }


def open_page(browser: Any, stack: Stack, size: str = "desktop") -> tuple[Any, Any, Console]:
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = Console(page)
    page.goto(stack.api_url + "/")
    return context, page, console


def sign_in(page: Any, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#who")).to_be_visible()


def goto(page: Any, view: str) -> None:
    page.get_by_role("navigation", name="Views").get_by_role("link", name=view.capitalize()).click()
    expect(page.locator(f"#view-{view}")).to_be_visible()


def search(page: Any, query: str) -> None:
    goto(page, "search")
    page.locator("#q").fill(query)
    page.locator("#q").press("Enter")
    expect(page.locator("#s-summary .line")).to_be_visible()


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate((HERE / "vendor" / "axe.min.js").read_text(encoding="utf-8"))
    result = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.fixture(scope="module")
def tenant_a(browser: Any, web_stack: Stack) -> Iterator[tuple[Any, Console]]:
    context, page, console = open_page(browser, web_stack)
    yield page, console
    context.close()


def test_wrong_key_is_refused(browser: Any, web_stack: Stack, artifacts: Path) -> None:
    context, page, console = open_page(browser, web_stack)
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-msg")).to_contain_text("Wrong key")
    expect(page.locator("#who")).to_be_hidden()
    shot(page, artifacts, "signin-wrong-key-desktop")
    assert page.evaluate("() => sessionStorage.getItem('sieve-api-key')") is None
    # 401 responses are logged by Chromium as failed resources; nothing else may be
    assert all("401" in e for e in console.errors), console.errors
    context.close()


def test_upload_progress_and_search(
    tenant_a: tuple[Any, Console], docs: dict[str, Path], artifacts: Path
) -> None:
    page, console = tenant_a
    sign_in(page, KEY_A)
    expect(page.locator("#who-name")).to_have_text("tenant-a")
    expect(page.locator("#who-type")).to_have_text("tenant key")
    assert page.evaluate("() => sessionStorage.getItem('sieve-api-key')") == KEY_A
    assert page.evaluate("() => localStorage.length") == 0

    goto(page, "upload")
    page.locator("#file-input").set_input_files([str(docs["pdf"]), str(docs["docx"]), str(docs["junk"])])
    expect(page.locator("#up-send")).to_have_text("Upload 3 files")
    page.locator("#up-send").click()
    rows = page.locator("#up-rows tr")
    junk = rows.filter(has_text="tool.exe")
    expect(junk.locator(".state")).to_have_text("refused")
    expect(junk.locator(".reason")).to_contain_text("tool.exe")
    for name in ("watch-manual.pdf", "bicycle.docx"):
        expect(rows.filter(has_text=name).locator(".state")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
        expect(rows.filter(has_text=name).locator(".progress")).to_contain_text("indexed")
    expect(page.locator("#up-msg")).to_contain_text("Indexing finished")

    goto(page, "documents")
    table = page.locator("#doc-rows")
    expect(table.locator("tr")).to_have_count(2)
    pdf_row = table.locator("tr", has_text="watch-manual.pdf")
    expect(pdf_row.locator("td[data-label=Passages]")).not_to_have_text("0")
    page.locator("#doc-filter").fill("bicy")
    expect(table.locator("tr")).to_have_count(1)
    expect(table).to_contain_text("bicycle.docx")
    page.locator("#doc-filter").fill("")

    search(page, PAGE2_QUERY)
    hit = page.locator("#s-hits .hit").first
    expect(hit.locator(".doc")).to_have_text("watch-manual.pdf")
    expect(hit.locator(".page")).to_have_text("page 2")
    expect(hit.locator(".passage")).to_contain_text("32768 hertz")
    # the line break of the page survives into the passage
    assert "\n" in hit.locator(".passage").inner_text()
    expect(page.locator("#s-summary")).to_contain_text("stage 1 only")
    expect(page.locator("#s-summary .timings")).to_contain_text("total")
    expect(hit.locator(".stage .rank").first).to_have_text("#1")
    assert console.errors == []


def test_low_confidence_search_is_reviewed_and_exported(
    tenant_a: tuple[Any, Console], artifacts: Path
) -> None:
    page, console = tenant_a
    search(page, OFF_TOPIC)
    expect(page.locator("#s-summary .badge", has_text="low confidence")).to_be_visible()

    goto(page, "review")
    group = page.locator("#r-groups button", has_text=OFF_TOPIC)
    expect(group).to_be_visible()
    expect(page.locator("#r-clusters")).not_to_contain_text("Grouping")
    # keyboard only: open the item, toggle passage 1, save with Enter
    group.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#r-detail h2")).to_contain_text(OFF_TOPIC)
    page.keyboard.press("1")
    expect(page.locator("#r-detail .candidates li").first).to_have_class("yes")
    page.keyboard.press("Enter")
    expect(page.locator("#r-msg")).to_contain_text("Saved")
    expect(page.locator("#r-groups")).not_to_contain_text(OFF_TOPIC)  # gone from "to label"
    page.locator("#r-state").select_option("labelled")
    expect(page.locator("#r-groups button", has_text=OFF_TOPIC)).to_contain_text("labelled")

    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSONL").click()
    pairs = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines() if line]
    assert any(p["query"] == OFF_TOPIC and p["label"] == 1 for p in pairs), pairs
    expect(page.locator("#r-msg")).to_contain_text("Exported")
    assert console.errors == []


def test_new_version_replaces_the_served_one(
    tenant_a: tuple[Any, Console], tmp_path_factory: pytest.TempPathFactory
) -> None:
    page, console = tenant_a
    second = files.docx(
        tmp_path_factory.mktemp("v2") / "bicycle.docx",
        [*DOCX_PARAGRAPHS, "Clean the derailleur after a wet ride so the gears shift cleanly."],
    )
    goto(page, "documents")
    row = page.locator("#doc-rows tr", has_text="bicycle.docx")
    before = row.locator("td[data-label='Served version'] code").inner_text()
    with page.expect_file_chooser() as chooser:
        row.get_by_role("button", name="Upload a new version of bicycle.docx").click()
    chooser.value.set_files(str(second))
    expect(page.locator("#doc-msg")).to_contain_text("new version")
    served = page.locator("#doc-rows tr", has_text="bicycle.docx").locator(
        "td[data-label='Served version'] code"
    )
    expect(served).not_to_have_text(before, timeout=JOB_TIMEOUT_MS)
    search(page, "derailleur gears after a wet ride")
    expect(page.locator("#s-hits .hit").first.locator(".passage")).to_contain_text("derailleur")
    assert console.errors == []


def test_delete_hides_the_document_from_search(tenant_a: tuple[Any, Console]) -> None:
    page, console = tenant_a
    goto(page, "documents")
    row = page.locator("#doc-rows tr", has_text="watch-manual.pdf")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete watch-manual.pdf").click()
    expect(page.locator("#doc-msg")).to_contain_text("deleted")
    expect(page.locator("#doc-rows")).not_to_contain_text("watch-manual.pdf")

    search(page, PAGE2_QUERY)
    expect(page.locator("#s-hits")).not_to_contain_text("watch-manual.pdf")
    expect(page.locator("#s-hits")).not_to_contain_text("32768")
    assert console.errors == []


def test_dropped_files_are_staged(tenant_a: tuple[Any, Console]) -> None:
    page, console = tenant_a
    goto(page, "upload")
    page.evaluate(
        """() => {
          const transfer = new DataTransfer();
          transfer.items.add(new File(["Dropped notes about kites."], "kites.txt", {type: "text/plain"}));
          transfer.items.add(new File(["More notes."], "more.md", {type: "text/markdown"}));
          const drop = document.querySelector('#drop');
          const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
          drop.dispatchEvent(new DragEvent('dragover', init));
          drop.dispatchEvent(new DragEvent('drop', init));
        }"""
    )
    rows = page.locator("#up-rows tr[data-state=ready]")
    expect(rows).to_have_count(2)
    expect(page.locator("#up-send")).to_have_text("Upload 2 files")
    page.locator("#up-send").click()
    expect(page.locator("#up-rows tr", has_text="kites.txt").locator(".state")).to_have_text(
        "done", timeout=JOB_TIMEOUT_MS
    )
    assert console.errors == []


def test_second_tenant_sees_none_of_it(browser: Any, web_stack: Stack) -> None:
    context, page, console = open_page(browser, web_stack)
    sign_in(page, KEY_B)
    expect(page.locator("#who-name")).to_have_text("tenant-b")
    goto(page, "documents")
    expect(page.locator("#doc-rows")).to_contain_text("No documents yet")
    search(page, "bicycle chain tyre pressure")
    expect(page.locator("#s-hits")).to_contain_text("Nothing found")
    goto(page, "review")
    page.locator("#r-state").select_option("")
    expect(page.locator("#r-count")).to_contain_text("0 flagged searches")
    expect(page.locator("#r-groups")).not_to_contain_text(OFF_TOPIC)
    assert console.errors == []
    context.close()


def test_admin_sees_review_and_status(browser: Any, web_stack: Stack, artifacts: Path) -> None:
    context, page, console = open_page(browser, web_stack)
    sign_in(page, ADMIN_KEY)
    expect(page.locator("#who-type")).to_have_text("admin key")
    nav = page.get_by_role("navigation", name="Views")
    expect(nav.get_by_role("link", name="Search")).to_be_hidden()
    expect(page.locator("#view-review")).to_be_visible()  # the admin's first view
    page.locator("#r-state").select_option("")
    expect(page.locator("#r-groups button", has_text=OFF_TOPIC)).to_contain_text("tenant-a")
    goto(page, "status")
    gates = page.locator("#st-gate")
    expect(gates).to_contain_text("tenant-a")
    expect(gates).to_contain_text("tenant-b")
    expect(page.locator("#st-parts")).to_contain_text("celery@")
    assert console.errors == []
    context.close()


@pytest.mark.parametrize("size", list(SIZES))
def test_each_view_accessible_and_captured(
    browser: Any, web_stack: Stack, artifacts: Path, size: str
) -> None:
    context, page, console = open_page(browser, web_stack, size)
    assert axe_violations(page) == []
    shot(page, artifacts, f"signin-{size}")
    sign_in(page, KEY_A)
    search(page, "bicycle chain")  # so the search and review views have something on them
    for view in VIEWS:
        if size == "phone":
            page.locator(f"#nav a[href='#/{view}']").click()
        else:
            goto(page, view)
        expect(page.locator(f"#view-{view}")).to_be_visible()
        if view == "review":
            page.locator("#r-state").select_option("")
            page.locator("#r-groups button").first.click()
            expect(page.locator("#r-detail h2")).to_be_visible()
        if view == "status":
            expect(page.locator("#st-parts")).to_contain_text("Redis")
        page.wait_for_load_state("networkidle")
        violations = axe_violations(page)
        assert violations == [], f"{view} at {size}: {violations}"
        shot(page, artifacts, f"{view}-{size}")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= SIZES[size][0], f"{view} is {width} px wide at {size}: it scrolls sideways"
    assert console.errors == []
    context.close()


def test_both_stages_and_upload_screenshots(
    browser: Any, web_stack: Stack, tiny_cross_encoder_dir: Path, artifacts: Path
) -> None:
    """The README's two pictures: an upload in progress, and a search reranked by a (tiny) cross-encoder."""
    reply = httpx.post(
        f"{web_stack.api_url}/v1/admin/reload",
        json={"rerank_backend": "cross-encoder", "rerank_model": str(tiny_cross_encoder_dir)},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    context, page, console = open_page(browser, web_stack)
    sign_in(page, KEY_A)
    goto(page, "upload")
    sample = sorted(p for p in SAMPLE.iterdir() if p.is_file())
    page.locator("#file-input").set_input_files([str(p) for p in sample])
    page.locator("#up-send").click()
    # the picture: one file done, one with its passages counted up, others waiting (timing decides; a
    # machine fast enough to finish first gets a picture of the finished list)
    midway = """() => {
      const rows = [...document.querySelectorAll('#up-rows tr')];
      const bar = document.querySelector('#up-rows tr[data-state=running] progress');
      return (rows.some((r) => r.dataset.state === 'done') && bar && bar.value > 0)
        || rows.every((r) => r.dataset.state === 'done' || r.dataset.state === 'failed');
    }"""
    page.wait_for_function(midway, polling=50, timeout=JOB_TIMEOUT_MS)
    shot(page, artifacts, "readme-upload")
    expect(page.locator("#up-msg")).to_contain_text("Indexing finished", timeout=JOB_TIMEOUT_MS)

    search(page, "how do vaccines train the immune system")
    expect(page.locator("#s-summary")).to_contain_text("reranked by cross-encoder")
    hits = page.locator("#s-hits .hit")
    expect(hits.first.locator(".stage")).to_have_count(2)
    expect(hits.first.locator(".move")).to_have_count(1)
    ranks = [re.sub(r"\D", "", t) for t in hits.locator(".stage:first-child .rank").all_inner_texts()]
    assert all(ranks), ranks  # every hit carries its stage-1 rank
    tip = hits.first.locator(".stage:first-child .score").get_attribute("data-tip") or ""
    assert "scores standardised" in tip and "reciprocal rank" not in tip  # says how hybrid fused its legs
    page.locator("#s-hits .hit .stage .score").nth(1).hover()
    shot(page, artifacts, "readme-search")
    assert console.errors == []
    context.close()

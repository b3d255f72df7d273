"""The run reports in a real browser (headless Chromium), inside the real Airflow UI, after a
real daily run: the "Qualité des dossiers" menu entry lists the run with its counts, its
link opens that run's report, the DAG run page's "Rapport qualité" tab opens the same
report (not a 404), the Data Docs are styled from local files only, and a run without a
report answers a French page with a way back. Screenshots of each page (tests/ui/conftest.py)."""
from __future__ import annotations

import json
import re
from urllib.parse import urlparse

import pytest

from cfa_opco import report_location, report_runs
from cfa_opco.quality.static import remote_assets

pytestmark = pytest.mark.slow


def _summary(ui_stack) -> dict:
    folder = report_location.run_folder(ui_stack.run_id, ui_stack.reports_root)
    return json.loads((folder / report_runs.SUMMARY_FILE).read_text(encoding="utf-8"))


def _frame(page, path_part: str, timeout_s: float = 30):
    """The page's frame whose URL contains ``path_part`` (the UI renders external views in
    an iframe), once loaded."""
    for _ in range(int(timeout_s * 4)):
        for frame in page.frames:
            if frame is not page.main_frame and path_part in frame.url:
                frame.wait_for_load_state()
                return frame
        page.wait_for_timeout(250)
    raise AssertionError(f"no frame on {path_part!r}: {[f.url for f in page.frames]}")


def test_the_run_ended_visibly_not_green(ui_stack):
    """The stack's run left dossiers blocked: attention_needed failed, the rest succeeded."""
    states = dict(ui_stack.task_states)
    assert ui_stack.dag_run_state == "failed"
    assert states.pop("attention_needed") == "failed"
    assert set(states.values()) <= {"success", "skipped"}, states
    summary = _summary(ui_stack)
    assert report_runs.blocked_count(summary["buckets"]) > 0


def test_menu_lists_the_run_with_its_counts_and_opens_its_report(ui_stack, page, shoot):
    summary = _summary(ui_stack)
    page.goto(ui_stack.base_url + "/")
    page.get_by_role("button", name="Parcourir").click()
    page.get_by_role("menuitem", name="Qualité des dossiers").click()
    frame = _frame(page, report_location.QUALITY_UI_PREFIX + "/")
    row = frame.locator("tr", has_text=ui_stack.run_id)
    row.wait_for()
    cells = [c.strip() for c in row.locator("td.num").all_inner_texts()]
    expected = [summary["extracted"], summary["passed_quality"], summary["quarantined"], summary["transmitted"],
                report_runs.blocked_count(summary["buckets"]), summary["buckets"]["in_doubt"]]
    assert cells == [str(v) for v in expected]
    assert summary["transmitted"] > 0 and summary["quarantined"] > 0
    shoot(page, "qualite-des-dossiers-passages")

    row.get_by_role("link", name=ui_stack.run_id).click()
    folder = report_location.run_folder(ui_stack.run_id, ui_stack.reports_root)
    frame = _frame(page, f"/reports/{folder.name}/{report_location.INDEX}")
    heading = frame.get_by_role("heading", level=1)
    assert ui_stack.run_id in heading.inner_text()
    assert frame.locator(".kpi", has_text="dossiers contrôlés").inner_text().startswith(str(summary["extracted"]))
    shoot(page, "rapport-qualite-passage")


def test_dag_run_tab_opens_the_same_runs_report(ui_stack, page, shoot):
    page.goto(f"{ui_stack.base_url}/dags/{ui_stack.dag_id}/runs/{ui_stack.run_id}")
    page.get_by_role("link", name="Rapport qualité", exact=True).click()
    folder = report_location.run_folder(ui_stack.run_id, ui_stack.reports_root)
    frame = _frame(page, f"/reports/{folder.name}/{report_location.INDEX}")
    assert ui_stack.run_id in frame.get_by_role("heading", level=1).inner_text()
    assert "pas de rapport" not in frame.locator("body").inner_text().lower()
    shoot(page, "onglet-rapport-qualite")


def test_data_docs_are_styled_from_local_files(ui_stack, page, shoot):
    origin = urlparse(ui_stack.base_url).netloc
    requested, errors = [], []
    page.on("request", lambda req: requested.append(req.url))
    page.on("pageerror", lambda err: errors.append(str(err)))
    folder = report_location.run_folder(ui_stack.run_id, ui_stack.reports_root)
    page.goto(f"{ui_stack.base_url}{report_location.run_report_url(ui_stack.run_id)}")
    page.get_by_role("link", name="Great Expectations Data Docs").click()
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"/reports/{folder.name}/data_docs/index.html")
    sheets = page.evaluate("""() => [...document.styleSheets].filter(s => s.href)
                                     .map(s => ({href: s.href, rules: s.cssRules.length}))""")
    assert any("bootstrap.min.css" in s["href"] and s["rules"] > 100 for s in sheets), sheets
    assert all(urlparse(s["href"]).netloc == origin for s in sheets), sheets
    # Bootstrap applied: its reboot sets the body's margin to 0 (a browser's default is 8px)
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    assert page.evaluate("typeof window.jQuery") == "function"
    shoot(page, "data-docs")
    # the validations table is filled by bootstrap-table (a script error leaves it empty)
    rows = page.locator("tr[data-href*='validations/']")
    assert rows.count() == 5, page.locator("table").first.inner_text()
    assert not errors, errors
    # a validation page too, four levels deeper
    rows.first.click()
    page.wait_for_load_state("networkidle")
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    assert "/validations/" in page.url and not errors, errors
    shoot(page, "data-docs-validation")
    foreign = [u for u in requested if urlparse(u).scheme in ("http", "https") and urlparse(u).netloc != origin]
    assert not foreign, foreign
    # and no page of the run's report loads CSS or JS from the network
    for html_page in folder.rglob("*.html"):
        assert remote_assets(html_page.read_text(encoding="utf-8")) == [], html_page


def test_a_run_without_report_answers_in_french_with_a_way_back(ui_stack, page, shoot):
    missing = "manual__1999-01-01T06:00:00+00:00"
    response = page.goto(f"{ui_stack.base_url}{report_location.run_report_url(missing)}")
    assert response.status == 404
    assert "Pas de rapport qualité pour le passage" in page.locator("h1").inner_text()
    shoot(page, "rapport-absent")
    page.get_by_role("link", name=re.compile("tous les passages")).click()
    page.locator("tr", has_text=ui_stack.run_id).wait_for()


def test_the_runs_cash_view_opens_from_its_report(ui_stack, page, shoot):
    """The run's report links its cash view (échéances, invoices, payments): in the Airflow UI
    it opens with its figures and its chart of expected vs paid per month."""
    summary = _summary(ui_stack)
    cash = summary["cash"]
    folder = report_location.run_folder(ui_stack.run_id, ui_stack.reports_root)
    page.goto(f"{ui_stack.base_url}/dags/{ui_stack.dag_id}/runs/{ui_stack.run_id}")
    page.get_by_role("link", name="Rapport qualité", exact=True).click()
    frame = _frame(page, f"/reports/{folder.name}/{report_location.INDEX}")
    frame.get_by_role("link", name="Trésorerie", exact=True).click()
    frame = _frame(page, f"/reports/{folder.name}/tresorerie.html")
    assert "Trésorerie" in frame.get_by_role("heading", level=1).inner_text()
    assert frame.locator("svg[aria-label='Attendu et payé par mois']").count() == 1
    total = frame.locator("tr", has_text="Total").first.inner_text()
    assert str(cash["echeances"]) in total and cash["echeances"] > 0
    assert frame.locator(".kpi", has_text="factures transmises").inner_text().startswith(
        str(cash["this_run"]["factures_transmises"]))
    shoot(page, "tresorerie")

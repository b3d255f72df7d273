"""The Airflow UI plugin serves the reports root that report_location names, finds each run's
folder through report_location (never a path built here), lists the runs with their counts
and answers a French 404 page for a run without a report. The real browser test is
tests/ui/test_reports_browser.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cfa_opco import report_location, report_runs

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "cfa_quality_reports.py"
RUN = "manual__2026-09-01T06:00:00+00:00"
OLD_RUN = "scheduled__2026-08-31T04:00:00+00:00"
FAILED_RUN = "manual__2026-09-02T06:00:00+00:00"


def _write_run(root: Path, run_id: str, *, report: bool, summary: dict | None = None) -> Path:
    folder = report_location.run_folder(run_id, root)
    folder.mkdir(parents=True)
    (folder / report_runs.QUALITY_FILE).write_text(json.dumps(
        {"run_id": run_id, "checked": 20, "passed": 17, "quarantined": 3}), encoding="utf-8")
    if report:
        (folder / report_location.INDEX).write_text(f"<h1>rapport {run_id}</h1>", encoding="utf-8")
    if summary is not None:
        (folder / report_runs.SUMMARY_FILE).write_text(json.dumps({"run_id": run_id, **summary}), encoding="utf-8")
    return folder


@pytest.fixture()
def reports_root(tmp_path, monkeypatch):
    """The Variable cfa_opco_reports_dir (as Airflow reads it from the environment) names
    the root: the plugin must honour it, not settings.REPORTS_DIR."""
    from cfa_opco import settings

    root = tmp_path / "from_variable"
    monkeypatch.setattr(settings, "REPORTS_DIR", tmp_path / "not_this_one")
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", str(root))
    assert report_location.reports_root() == root
    old = _write_run(root, OLD_RUN, report=True)
    import os
    os.utime(old / report_location.INDEX, (1, 1))
    os.utime(old / report_runs.QUALITY_FILE, (1, 1))
    _write_run(root, RUN, report=True, summary={
        "extracted": 20, "passed_quality": 17, "quarantined": 3, "transmitted": 12,
        "buckets": {"transmitted": 12, "quarantined": 3, "needs_human_decision": 2, "not_transmissible": 1,
                    "in_doubt": 2}})
    (root / "secret.txt").write_text("x")
    return root


@pytest.fixture()
def client(reports_root):
    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("cfa_quality_reports", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    app = mod.create_app(authenticated=False)   # authentication is Airflow's, tested below
    return TestClient(app, root_path="/cfa-quality"), mod


def test_plugin_declares_app_and_views(client):
    _, mod = client
    plugin = mod.CfaQualityReportsPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == report_location.QUALITY_UI_PREFIX
    assert {v["destination"] for v in plugin.external_views} == {"nav", "dag_run"}
    run_view = next(v for v in plugin.external_views if v["destination"] == "dag_run")
    assert run_view["href"] == report_location.run_report_url("{RUN_ID}").replace("%7BRUN_ID%7D", "{RUN_ID}")


def test_runs_list_newest_first_with_counts(client):
    c, _ = client
    page = c.get("/").text
    assert page.index(RUN) < page.index(OLD_RUN)   # newest first
    row = page[page.index(RUN):].split("</tr>")[0]
    cells = [cell.split("</td>")[0] for cell in row.split("<td class='num'>")[1:]]
    # extracted / passed / quarantined / transmitted / blocked / in doubt
    assert cells == ["20", "17", "3", "12", "3", "2"]
    old_row = page[page.index(OLD_RUN):].split("</tr>")[0]
    assert "résumé du run absent" in old_row   # the quality counts only
    assert report_location.run_report_url(RUN) in page


def test_run_link_opens_that_runs_report(client):
    c, _ = client
    r = c.get(report_location.run_report_url(RUN).removeprefix(report_location.QUALITY_UI_PREFIX),
              follow_redirects=True)
    assert r.status_code == 200 and f"rapport {RUN}" in r.text
    r = c.get(report_location.run_report_url(OLD_RUN).removeprefix(report_location.QUALITY_UI_PREFIX),
              follow_redirects=True)
    assert r.status_code == 200 and f"rapport {OLD_RUN}" in r.text


def test_run_without_report_answers_a_french_404_with_a_way_back(client, reports_root):
    c, _ = client
    _write_run(reports_root, FAILED_RUN, report=False)
    r = c.get(f"/runs/{FAILED_RUN}")
    assert r.status_code == 404
    assert "Pas de rapport qualité pour le passage" in r.text and "tous les passages" in r.text
    assert "href='/cfa-quality/'" in r.text
    assert c.get("/runs/unknown").status_code == 404


def test_files_outside_the_root_are_not_served(client):
    c, _ = client
    assert c.get("/reports/../../etc/passwd").status_code == 404
    assert c.get("/reports/%2e%2e/%2e%2e/etc/passwd").status_code == 404


def test_retention_keeps_the_newest_runs(reports_root, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_KEEP_RUNS", "1")
    current = report_location.run_folder(RUN)
    report_runs.refresh(current=current)
    assert current.is_dir() and not report_location.run_folder(OLD_RUN).exists()
    home = (reports_root / report_location.INDEX).read_text(encoding="utf-8")
    assert RUN in home and OLD_RUN not in home


def test_plugin_requires_an_airflow_user(client):
    from fastapi.testclient import TestClient

    _, mod = client
    assert TestClient(mod.create_app()).get("/").status_code == 401

"""Reports through an object store (issue 13: no local disk shared between tasks): the quality
gate on one "worker", the run summary on another, the Airflow UI plugin on a third machine —
each with its own empty local folder — and the plugin still lists the run and serves its pages,
all of it read from the store (Airflow's ObjectStoragePath; here ``file://`` on a folder none
of them writes into directly)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from cfa_opco import report_location, report_runs, report_store, settings
from cfa_opco.extraction import extract
from cfa_opco.quality.gate import run_quality_gate

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "cfa_quality_reports.py"
RUN = "manual__2026-09-03T06:00:00+00:00"


def _machine(monkeypatch, tmp_path, name: str) -> Path:
    """Switch to another machine: its own local reports folder, empty."""
    local = tmp_path / name
    monkeypatch.setattr(settings, "REPORTS_DIR", local)
    assert report_location.reports_root() == local
    return local


def test_reports_written_on_workers_are_served_from_the_store(seeded_erp, sources, connector_dsn, tmp_path,
                                                                monkeypatch):
    store = tmp_path / "object-store"
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", f"file://{store}/")
    assert report_location.reports_store_url() == f"file://{store}"
    # worker 1: extraction and quality gate (writes and publishes the quality reports)
    worker1 = _machine(monkeypatch, tmp_path, "worker1")
    extract(RUN, sources, connector_dsn)
    summary = run_quality_gate(RUN, connector_dsn)
    folder_name = report_location.run_folder_name(RUN)
    assert Path(summary["report_index"]).parent == worker1 / folder_name
    published = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    assert {f"{folder_name}/index.html", f"{folder_name}/quality.json", "index.html"} <= published
    assert any(p.startswith(f"{folder_name}/sites/") for p in published)
    assert any(p.endswith(".xlsx") for p in published)

    # worker 2: the run summary (its folder is empty: the home page still lists the run)
    worker2 = _machine(monkeypatch, tmp_path, "worker2")
    out = report_location.run_folder(RUN)
    out.mkdir(parents=True)
    (out / report_runs.SUMMARY_FILE).write_text(json.dumps(
        {"run_id": RUN, "extracted": 2000, "transmitted": 1500, "buckets": {"transmitted": 1500}}), encoding="utf-8")
    report_runs.refresh(worker2, current=out)
    assert (store / folder_name / report_runs.SUMMARY_FILE).is_file()
    home = (store / "index.html").read_text(encoding="utf-8")
    assert RUN in home and "1500" in home
    # (worker 2 did not hold the quality reports and did not delete them from the store)
    assert (store / folder_name / "index.html").is_file()

    # the API server: an empty local folder, everything pulled from the store on demand
    api_local = _machine(monkeypatch, tmp_path, "api-server")
    from fastapi.testclient import TestClient

    spec = importlib.util.spec_from_file_location("cfa_quality_reports_store", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    client = TestClient(mod.create_app(authenticated=False), root_path="/cfa-quality")
    page = client.get("/")
    assert page.status_code == 200 and RUN in page.text and "1500" in page.text
    run = client.get(f"/runs/{RUN}", follow_redirects=False)
    assert run.status_code in (302, 307) and run.headers["location"].endswith(f"/reports/{folder_name}/index.html")
    index = client.get(f"/reports/{folder_name}/index.html")
    assert index.status_code == 200 and "site" in index.text.lower()
    site_page = next(p for p in published if p.startswith(f"{folder_name}/sites/"))
    assert client.get(f"/reports/{site_page}").status_code == 200
    assert client.get(f"/reports/{folder_name}/run_report.md").status_code == 404   # never written
    assert client.get("/reports/../secret").status_code == 404
    assert (api_local / folder_name / "index.html").is_file()      # the API server's cache


def test_without_a_store_url_nothing_is_published(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", str(tmp_path / "local"))
    assert report_location.reports_store_url() is None and report_store.store() is None
    folder = tmp_path / "local" / "run"
    folder.mkdir(parents=True)
    (folder / "index.html").write_text("x")
    assert report_store.publish(folder) == 0
    assert report_store.pull_file("run/index.html") == folder / "index.html"
    assert report_store.pull_runs() == 0

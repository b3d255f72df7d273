"""The Airflow UI plugin serves the reports folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "cfa_quality_reports.py"


@pytest.fixture()
def client(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from cfa_opco import settings

    monkeypatch.setattr(settings, "REPORTS_DIR", tmp_path)
    run = tmp_path / "manual__2026-09-01T06-00-00-00-00"
    run.mkdir()
    (run / "index.html").write_text("<h1>rapport</h1>", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("x")
    spec = importlib.util.spec_from_file_location("cfa_quality_reports", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    app = mod.create_app(authenticated=False)   # authentication is Airflow's, tested below
    return TestClient(app), mod


def test_plugin_declares_app_and_views(client):
    _, mod = client
    plugin = mod.CfaQualityReportsPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == "/cfa-quality"
    assert {v["destination"] for v in plugin.external_views} == {"nav", "dag_run"}
    assert any("{RUN_ID}" in v["href"] for v in plugin.external_views)


def test_plugin_serves_reports(client):
    c, _ = client
    assert "manual__2026-09-01T06-00-00-00-00" in c.get("/").text
    r = c.get("/runs/manual__2026-09-01T06:00:00+00:00", follow_redirects=True)
    assert r.status_code == 200 and "rapport" in r.text
    assert c.get("/reports/../../etc/passwd").status_code == 404
    assert c.get("/runs/unknown").status_code == 404


def test_plugin_requires_an_airflow_user(client):
    from fastapi.testclient import TestClient

    _, mod = client
    assert TestClient(mod.create_app()).get("/").status_code == 401

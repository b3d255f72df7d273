"""The "Dossiers OPCO" plugin (plugins/cfa_dossiers_view.py) through its FastAPI app, on the
connector database of a real run (tests/ui/dossiers_env.py): pages, filters, paging, CSV and
Excel exports, the proof bundle, the keys page — and never a key nor a full NIR on a page."""
from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from cfa_opco.pipeline.run_report import BUCKETS, run_buckets
from tests.helpers import rows
from tests.ui.dossiers_env import ui_connector

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "cfa_dossiers_view.py"
SIRET_CONN = "opco_atlas_77567227200025"
NIR = re.compile(r"(?<![\d-])[12]\d{2}(0[1-9]|1[0-2])(\d{2}|2[AB])\d{6}(\d{2})?(?!\d)")


def _load():
    spec = importlib.util.spec_from_file_location("cfa_dossiers_view", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ui(sbx, sources, tmp_path_factory):
    return ui_connector(sbx, sources, tmp_path_factory)


@pytest.fixture(scope="module")
def client(ui):
    from fastapi.testclient import TestClient

    mod = _load()
    return TestClient(mod.create_app(authenticated=False, connector=ui["dsn"])), mod


@pytest.fixture(scope="module")
def secrets(ui):
    """The keys of every OPCO connection and the NIRs of the run's learners."""
    from cfa_opco.stack.airflow_settings import load

    cfg = load(Path(__file__).resolve().parents[2] / "airflow_settings.yaml")
    keys = [c["conn_password"] for c in cfg.connections if str(c["conn_id"]).startswith("opco_")]
    nirs = [r[0] for r in rows(ui["dsn"], "SELECT DISTINCT apprenti_nir FROM staged_dossier WHERE apprenti_nir IS NOT NULL")]
    assert keys and nirs
    return {"keys": keys, "nirs": nirs}


def _clean(text: str, secrets: dict) -> None:
    for k in secrets["keys"]:
        assert k not in text
    for n in secrets["nirs"]:
        assert n not in text
    assert not NIR.search(text)


def test_plugin_declares_app_and_nav_entry():
    mod = _load()
    (app,) = mod.CfaDossiersViewPlugin.fastapi_apps
    assert app["url_prefix"] == "/cfa-dossiers"
    (view,) = mod.CfaDossiersViewPlugin.external_views
    assert view["name"] == "Dossiers OPCO" and view["destination"] == "nav" and view["href"] == "/cfa-dossiers/"


def test_routes_require_an_authenticated_user(ui):
    from fastapi.testclient import TestClient

    c = TestClient(_load().create_app(authenticated=True, connector=ui["dsn"]))
    for path in ("/", "/listes/refused", "/cles", "/listes/refused/export.csv"):
        assert c.get(path).status_code in (401, 403), path


def test_home_counts_are_the_run_reports(client, ui, secrets):
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200
    page = r.text
    report = run_buckets(ui["dsn"], ui["run_id"], detail_limit=0)
    for b, n in report["buckets"].items():
        if n:
            assert html.escape(BUCKETS[b]) in page
    assert "Par OPCO" in page and "Par site" in page and "OPCO Atlas" in page and "<svg" in page
    assert f">{report['staged']} <span class='today'>+{report['staged']}</span>" in page
    assert "cdn" not in page.lower() and "<script src" not in page
    _clean(page, secrets)


def test_lists_filters_paging_and_reasons(client, ui, secrets):
    c, mod = client
    for kind in ("refused", "incomplete", "needs_human_decision", "in_doubt", "not_transmissible", "quarantined"):
        r = c.get(f"/listes/{kind}")
        assert r.status_code == 200, kind
        _clean(r.text, secrets)
    assert c.get("/listes/nope").status_code == 404
    r = c.get("/listes/needs_human_decision", params={"opco": "afdas"})
    assert "Aucune clé API AFDAS" in r.text and "OPCO Santé" not in r.text.split("<table>", 1)[-1]
    n_quarantined = rows(ui["dsn"], "SELECT count(*) FROM quarantine_current")[0][0]
    assert n_quarantined > mod.PER_PAGE
    first, second = c.get("/listes/quarantined").text, c.get("/listes/quarantined", params={"page": 2}).text
    assert f"{n_quarantined} dossier(s)" in first and "suivante" in first and "précédente" in second
    numeros = lambda t: set(re.findall(r"/dossiers/[^/]+/([^'\"]+)'", t))  # noqa: E731
    assert numeros(first) and not numeros(first) & numeros(second)
    r = c.get("/listes/refused")
    assert "NPEC" in r.text


def test_csv_and_excel_exports_hold_the_filtered_list(client, ui, secrets):
    c, mod = client
    r = c.get("/listes/quarantined/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    data = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))
    expected = {x[0] for x in rows(ui["dsn"], "SELECT numero_interne FROM quarantine_current")}
    assert data[0][1] == "Numéro interne" and {row[1] for row in data[1:]} == expected
    assert all(row[9] for row in data[1:])                     # every line has its reason
    _clean(r.text, secrets)
    r = c.get("/listes/needs_human_decision/export.csv", params={"opco": "afdas"})
    afdas = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";"))[1:]
    assert afdas and {row[2] for row in afdas} == {"OPCO AFDAS"}

    from openpyxl import load_workbook

    r = c.get("/listes/quarantined/export.xlsx")
    assert r.status_code == 200 and r.headers["x-rows-total"] == str(len(expected))
    wb = load_workbook(io.BytesIO(r.content), read_only=True)
    sheet = wb["quarantined"]
    lines = list(sheet.iter_rows(values_only=True))
    assert lines[0][1] == "Numéro interne" and {x[1] for x in lines[1:]} == expected
    assert "toutes exportées" in " ".join(str(v[0]) for v in wb["À lire"].iter_rows(values_only=True))
    mod.EXCEL_MAX_ROWS = 5                                      # the cap, and its clear message
    try:
        r = c.get("/listes/quarantined/export.xlsx")
        wb = load_workbook(io.BytesIO(r.content), read_only=True)
        assert len(list(wb["quarantined"].iter_rows(values_only=True))) == 1 + 5
        note = " ".join(str(v[0]) for v in wb["À lire"].iter_rows(values_only=True))
        assert "limité aux 5 premières lignes" in note and "CSV" in note
        assert r.headers["x-rows-exported"] == "5"
    finally:
        mod.EXCEL_MAX_ROWS = 50_000


def test_dossier_page_bundle_and_resend_params(client, ui, secrets):
    c, _ = client
    numero, source = rows(ui["dsn"], "SELECT numero_interne, source_id FROM transmission_plan WHERE conn_id = %s LIMIT 1",
                          SIRET_CONN)[0]
    r = c.get(f"/dossiers/{source}/{numero}")
    assert r.status_code == 200
    page = r.text
    assert SIRET_CONN in page and "portée <b>SIRET</b>" in page
    assert "TRANSMIS" in page and "/v1/dossiers" in page or "/v2/dossiers" in page
    content_hash = rows(ui["dsn"], "SELECT content_hash FROM transmission WHERE numero_interne = %s AND operation = 'DOSSIER'",
                        numero)[0][0]
    assert content_hash[:16] in page
    conf = json.loads(re.search(r"<pre id='resend-conf'>(.*?)</pre>", page, re.S).group(1)
                      .replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&#x27;", "'"))
    assert conf == {"resend": [numero], "force_reason": "<raison du renvoi>"}
    assert "airflow dags trigger cfa_opco_daily --conf" in page
    _clean(page, secrets)

    z = c.get(f"/dossiers/{source}/{numero}/preuves.zip")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        names = set(zf.namelist())
        assert {"manifest.json", "etats.json", "envois.json", "echanges.json", "qualite.json"} <= names
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["numero_interne"] == numero and manifest["key_scope"] == "SIRET"
        sent = manifest["integrity"]["ledger_hashes_sent"]   # the dossier's, and its invoices' if any
        assert content_hash in sent and set(sent) <= {h for (h,) in rows(
            ui["dsn"], "SELECT content_hash FROM transmission WHERE numero_interne = %s", numero)}
        import hashlib

        for name, digest in manifest["files"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == digest
        exchanges = json.loads(zf.read("echanges.json"))
        assert any(e["request_sha256"] == content_hash for e in exchanges)
        for name in names:
            _clean(zf.read(name).decode("utf-8"), secrets)
    assert c.get("/dossiers/erp_main/NOPE").status_code == 404
    assert c.get("/preuves/999999999/corps").status_code == 404


def test_keys_page_scope_expiry_and_red_rows(client, ui, secrets):
    c, _ = client
    r = c.get("/cles")
    assert r.status_code == 200
    page = r.text
    assert SIRET_CONN in page and "SIRET" in page and "2031-12-31" in page
    row = re.search(r"<tr class='alert'><td>[^<]*</td><td>opco_constructys_418936522</td>.*?</tr>", page)
    assert row, "the key expiring in 20 days is red"
    assert re.search(r"<tr class=''><td>[^<]*</td><td>opco_akto_775672272</td>", page)
    assert "opco_constructys_552100554" not in page
    _clean(page, secrets)


def test_keys_page_lists_a_configured_key_never_used(client, monkeypatch):
    """A connection Airflow holds but no run has used yet is listed, "non vérifiée"."""
    c, _ = client
    monkeypatch.setenv("AIRFLOW_CONN_OPCO_CONSTRUCTYS_552100554", json.dumps({"conn_type": "opco", "password": "k"}))
    page = c.get("/cles").text
    row = re.search(r"<tr class=''><td>OPCO Constructys</td><td>opco_constructys_552100554</td>.*?</tr>", page)
    assert row and "SIREN" in row.group(0) and "non vérifiée" in row.group(0), page

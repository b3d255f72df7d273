"""The "Dossiers OPCO" view in a real browser: headless Chromium on the real Airflow UI
(tests/ui/conftest.py: ui_stack after a real daily run), from the navigation entry to the
counts, a list, a dossier page and the keys page; a screenshot of each."""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from cfa_opco.pipeline.run_report import run_buckets
from tests.helpers import rows

VIEW = "/cfa-dossiers"


@pytest.fixture(scope="module")
def stack(ui_stack):
    """The stack, with the connection ``cfa_connector`` (as airflow_settings.yaml declares it)
    in the metadata database, pointed at the run's connector database: the plugin in the
    API server reads the connector through it."""
    from cfa_opco.stack import airflow_env

    u = urlsplit(ui_stack.connector)
    conn = {"conn_type": "postgres", "host": u.hostname, "port": u.port, "login": u.username or "postgres",
            "password": u.password or "", "schema": u.path.lstrip("/")}
    airflow_env.run_airflow(["connections", "delete", "cfa_connector"], check=False, quiet=True)
    airflow_env.run_airflow(["connections", "add", "cfa_connector", "--conn-json", json.dumps(conn)], quiet=True)
    yield ui_stack
    airflow_env.run_airflow(["connections", "delete", "cfa_connector"], check=False, quiet=True)


def _view_frame(page, timeout: float = 30.0):
    """The view's document inside the Airflow UI: the iframe (src /cfa-dossiers/) the UI's
    plugin page (/plugin/cfa_dossiers) embeds it in."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            if frame is not page.main_frame and VIEW in (frame.url or ""):
                return frame
        page.wait_for_timeout(200)
    raise AssertionError(f"no {VIEW} frame in {[f.url for f in page.frames]}")


def test_dossiers_view_from_the_airflow_menu(stack, page, shoot):
    report = run_buckets(stack.connector, stack.run_id, detail_limit=0)
    page.goto(stack.base_url + "/")
    page.get_by_role("button", name=re.compile("Browse|Parcourir", re.I)).first.click()
    page.get_by_role("menuitem", name="Dossiers OPCO").or_(page.get_by_text("Dossiers OPCO")).first.click()
    page.wait_for_url(re.compile(r"/plugin/cfa_dossiers"))
    frame = _view_frame(page)
    frame.wait_for_selector("text=Par OPCO")
    text = frame.inner_text("body")
    assert "Tous les dossiers" in text and "Par site" in text and "Tendance" in text
    assert str(report["staged"]) in text
    shoot(page, "dossiers-accueil")

    # a list: the quarantined ones (filter by a site), as the home's link opens it
    frame.click("a[href$='/listes/quarantined']")
    frame.wait_for_selector("h2:has-text('dossier(s)')")
    text = frame.inner_text("body")
    assert f"{report['buckets']['quarantined']} dossier(s)" in text
    assert "CSV" in text and "Excel" in text
    shoot(page, "dossiers-liste-quarantaine")

    # a dossier of that list: its page (history, quality anomalies, how to resend it)
    frame.locator("a[href*='/dossiers/']").first.click()
    frame.wait_for_selector("h2:has-text('Renvoyer ce dossier')")
    text = frame.inner_text("body")
    assert "Contrôle qualité" in text and "QUARANTINE" in text

    # the refused ones, with the OPCO's motifs (the list an operator works through first)
    refused = (rows(stack.connector, "SELECT count(*) FROM opco_dossier WHERE etat = 'REFUSE'")[0][0]
               + report["buckets"].get("refused_by_opco", 0))       # refused after instruction or at send
    page.goto(f"{stack.base_url}{VIEW}/listes/refused")
    page.wait_for_selector("h2:has-text('dossier(s)')")
    text = page.inner_text("body")
    assert refused and f"{refused} dossier(s)" in text and "Transmis à l'OPCO — Refusés" in text
    shoot(page, "dossiers-liste-refuses")

    # a dossier sent with the Atlas SIRET key: its whole history, its proofs (full page)
    numero, source = rows(stack.connector, """SELECT numero_interne, source_id FROM transmission
                                            WHERE status = 'SENT' AND operation = 'DOSSIER'
                                            ORDER BY (conn_id = 'opco_atlas_77567227200025') DESC, id LIMIT 1""")[0]
    page.goto(f"{stack.base_url}{VIEW}/dossiers/{source}/{numero}")
    page.wait_for_selector("h2:has-text(\"Échanges avec l'OPCO\")")
    text = page.inner_text("body")
    assert numero in text and "Transmis" in text and "resend" in text and "force_reason" in text
    assert "TRANSMIS" in text and "preuves.zip" in page.content()
    shoot(page, "dossiers-dossier")

    # the keys page
    page.goto(f"{stack.base_url}{VIEW}/cles")
    page.wait_for_selector("text=Clés API des OPCO")
    text = page.inner_text("body")
    assert "SIRET" in text and "SIREN" in text and "opco_atlas_775672272" in text
    assert "demo-" not in page.content()
    # the demo's key expiring in 20 days (config/sandbox.yaml) is the red row
    red = page.locator("tr.alert", has_text="opco_constructys_418936522")
    assert red.count() == 1 and "expire bientôt" in red.inner_text()
    shoot(page, "dossiers-cles")

"""Leak scan (issue 13, point 4): one real daily run (dag.test()) over freshly seeded ERPs,
the real sandbox, alerts on (a local SMTP server and a webhook receiver) and one OPCO's keys
refused, then the follow-up DAG; everything the runs leave is read back and searched:

task logs (Airflow's log folder and what the run logged), the Airflow metadata database
(XComs, rendered template fields, run conf, task notes — every table), the reports folder
(HTML, Markdown, JSON, CSV, Excel sheets), the connector's database, the proof bundles (the
CLI's JSON and the UI's zip), the UI's pages and CSV/Excel exports of every list, the alerts
as delivered, and what the sandbox logged.

Nothing there may hold an OPCO API key, an OAuth client secret, the webhook's token, a full
NIR of the seeded learners (with or without spaces) or a full IBAN (planted in the ERPs'
address complements, where a CFA employee could type one; one of them badly encoded, so
that extraction reports it, quoting the value). The one exception is the
OPCO-bound data the connector keeps to send: the frozen dossiers (staged_dossier, documents
in staged_piece) and the payload in the ledger (transmission.payload) — the norm requires
the NIR in the payload and the proof of what was sent needs it; nobody reads them: the UI,
the reports and the proof bundles leave them out. The scanner's own tests
(test_leak_scanner.py) prove it finds each kind of leak where it is planted."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cfa_opco import settings
from cfa_opco.sandbox.testing import run_sandbox
from tests import transmission_env
from tests.conftest import make_database
from tests.daily_run import daily_env, run_daily, task_states
from tests.helpers import rows
from tests.security.leak_scan import Leak, Watchlist
from tests.ui.test_dossiers_plugin import _load as load_dossiers_plugin

DOSSIERS = 300
WRONG_KEY = "refused-atlas-key-7f3a9c21"
# typed in an address complement: too long for the CERFA box (quarantined, the message quotes
# the value), and one that fits (it leaves with the dossier, in the OPCO-bound payload only)
IBANS = {"main": "RIB : FR76 3000 6000 0112 3456 7890 189", "est": "FR1420041010050500013M02606"}
MOJIBAKE_IBAN = "RÃ©f. FR76 3000 6000 0112 3456 7890 189"

# what the connector keeps to send, which the norm requires to carry the NIR (see above)
# (searched for secrets only)
OPCO_BOUND = {"staged_dossier": "*", "staged_piece": {"content"}, "transmission": {"payload"}}


@pytest.fixture(scope="module")
def leak_erp(pg_server, tmp_path_factory):
    """Both demo ERPs seeded (seed 42, 300 dossiers), an IBAN typed in two learners' address
    complements (one per ERP)."""
    from cfa_opco.erp.generator import seed

    dsns = {"erp_main": make_database("test_leak_erp_main"), "erp_est": make_database("test_leak_erp_est")}
    files_root = tmp_path_factory.mktemp("leak_erp_files")
    seed(42, DOSSIERS, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=files_root)
    planted = rows(dsns["erp_main"], """UPDATE apprenant SET adresse_complement = %s
                                        WHERE id = (SELECT min(apprenant_id) FROM contrat WHERE statut = 'ACTIF')
                                        RETURNING id""", IBANS["main"])
    planted += rows(dsns["erp_est"], """UPDATE "T_ADRESSE" SET "ADR_CPL" = %s
                                        WHERE "ADR_ID" = (SELECT min(s."ADR_ID") FROM "T_STAGIAIRE" s
                                                          JOIN "T_CONTRAT" c USING ("STG_ID"))
                                        RETURNING "ADR_ID" """, IBANS["est"])
    # and one typed in a company's address with a badly encoded accent: unreadable at extraction,
    # whose message quotes the value
    planted += rows(dsns["erp_main"], """UPDATE entreprise SET adresse_complement = %s
                                         WHERE id = (SELECT max(entreprise_id) FROM contrat WHERE statut = 'ACTIF')
                                         RETURNING id""", MOJIBAKE_IBAN)
    assert len(planted) == 3
    return {**dsns, "files_root": files_root}


def _watchlist(env: dict[str, str], erp: dict) -> Watchlist:
    """Every secret of the connections the run was given, every seeded learner's NIR, the
    planted IBANs."""
    watch = Watchlist()
    for name, value in env.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        conn = json.loads(value)
        conn_id = name[len("AIRFLOW_CONN_"):].lower()
        if conn_id.startswith("opco_"):
            watch.add_secret(conn.get("password"), f"clé API {conn_id}")
            watch.add_secret((conn.get("extra") or {}).get("oauth_client_secret"), f"secret OAuth2 {conn_id}")
        else:
            watch.add_secret(conn.get("password"), f"mot de passe de la connexion {conn_id}")
            if conn.get("conn_type") == "http":   # a chat webhook's URL is its secret
                watch.add_secret(urlsplit(conn["host"]).path, f"URL du webhook {conn_id}")
    for (nir,) in rows(erp["erp_main"], "SELECT nir FROM apprenant WHERE nir IS NOT NULL"):
        watch.add_nir(nir)
    for (nir,) in rows(erp["erp_est"], """SELECT "STG_NSS" FROM "T_STAGIAIRE" WHERE "STG_NSS" IS NOT NULL"""):
        watch.add_nir(nir)
    for iban in IBANS.values():
        watch.add_iban(iban.split(": ")[-1])
    return watch


def test_nothing_secret_or_personal_in_what_a_run_leaves(leak_erp, airflow_db, tmp_path, monkeypatch,
                                                         alerts_on, smtp, webhook, caplog, capfd):
    from cfa_opco.connector import migrate
    from cfa_opco.proofs import export_proof_bundle
    from cfa_opco.ui import dossiers as ui_dossiers

    connector = make_database("test_leak_connector")
    migrate(connector)
    reports = tmp_path / "reports"
    sandbox_log = tmp_path / "sandbox.log"
    started = time.time()
    with run_sandbox(instant=True, rate_limit=0, args=["--access-log"], log_path=sandbox_log) as sbx:
        env = daily_env(sbx.port, leak_erp, connector, tmp_path, reports)
        for k in [k for k in env if k.startswith("AIRFLOW_CONN_OPCO_ATLAS_")]:   # Atlas refuses its keys
            env[k] = json.dumps({**json.loads(env[k]), "password": WRONG_KEY})
        transmission_env.apply(monkeypatch, env)
        alerts_on(site_leads={"PAR": "qualite.paris@cfa.test"}, refusal_rate_threshold=0.0,
                  error_rate_threshold=0.0, min_dossiers=1)
        env.update({k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_ALERTS_")})
        watch = _watchlist(env, leak_erp)
        assert any(label.startswith("secret OAuth2 opco_akto_") for label in watch.secrets.values())
        assert WRONG_KEY in watch.secrets and len(watch.nirs) > 200 and len(watch.ibans) == 2
        assert "URL du webhook alerts_webhook" in watch.secrets.values()

        caplog.set_level(logging.INFO)
        dr = run_daily({"decision_deadline_minutes": 1})
        states = task_states(dr)
        # then the follow-up DAG as scheduled after it: states, in-doubt settlement, key checks (alerts)
        from airflow.dag_processing.dagbag import DagBag

        followup = DagBag(str(settings.PROJECT_DIR / "dags")).dags["cfa_opco_followup"].test()
        assert task_states(followup)["check_keys"] == "success", task_states(followup)
    run_id = dr.run_id
    # the run did what the scan needs: quality reports, transmissions, refused keys, alerts
    assert states["quality_gate"] == states["send_alerts"] == "success", states
    assert states["opco_atlas.transmit"] == "failed", states
    sent = rows(connector, "SELECT count(*) FROM transmission WHERE run_id = %s AND status = 'SENT'", run_id)[0][0]
    assert sent > 100
    assert smtp.mails and webhook.hits
    kinds = {h.body.get("kind") for h in webhook.hits}
    assert {"key", "site_anomalies", "rates"} <= kinds, kinds
    assert any("Clé API refusée ou expirée" in m.subject for m in smtp.mails)   # from check_keys
    # the IBAN too long for its box is quarantined, its message names the field
    long_iban = rows(connector, """SELECT count(*) FROM quality_anomaly WHERE run_id = %s AND rule_code = 'CHAMP_LONGUEUR'
                                   AND field = 'apprenti_adresse_complement'""", run_id)[0][0]
    assert long_iban >= 1
    shown = rows(connector, """SELECT valeur FROM quality_anomaly WHERE run_id = %s
                               AND field = 'apprenti_adresse_complement' AND valeur LIKE 'RIB%%'""", run_id)
    assert shown and all(v == "RIB : FR76 **** **** 189" for (v,) in shown), len(shown)
    # both IBANs were extracted: the one that fits its box is in the dossier frozen to be sent
    staged = rows(connector, """SELECT count(*) FROM staged_dossier WHERE run_id = %s
                                AND apprenti_adresse_complement IN %s""", run_id, tuple(IBANS.values()))[0][0]
    assert staged == 2
    issues = rows(connector, "SELECT valeur, message FROM extraction_issue WHERE run_id = %s AND field = "
                             "'employeur_adresse_complement'", run_id)
    assert issues and all("FR76 **** **** 189" in v and "FR76 **** **** 189" in m for v, m in issues), len(issues)

    leaks: list[Leak] = []
    read: dict[str, int] = {}

    # 1. task logs: Airflow's log folder (files written by this run) and what the run logged
    log_folder = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for path in (p for p in log_folder.rglob("*") if p.is_file() and p.stat().st_mtime >= started - 1):
        leaks += watch.scan_bytes(f"logs/{path.relative_to(log_folder)}", path.read_bytes())
        read["log files"] = read.get("log files", 0) + 1
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() + (("\n" + r.exc_text) if r.exc_text else "") for r in caplog.records)
    leaks += watch.scan_text("stdout", out) + watch.scan_text("stderr", err) + watch.scan_text("logging", logged)
    read["log records"] = len(caplog.records)
    assert "transmitting" in logged + out + err, (len(logged), len(out), len(err))
    assert "[DAG TEST] end task task_id=check_keys" in logged + out + err

    # 2. the Airflow metadata database: XComs, rendered template fields, run conf, notes... every table
    found, n = watch.scan_database(settings.dsn("airflow"), "airflow")
    leaks += found
    read["airflow rows"] = n
    xcoms = rows(settings.dsn("airflow"), "SELECT count(*) FROM xcom WHERE run_id = %s", run_id)[0][0]
    rendered = rows(settings.dsn("airflow"), "SELECT count(*) FROM rendered_task_instance_fields WHERE run_id = %s",
                    run_id)[0][0]
    assert xcoms > 0 and rendered > 0, (xcoms, rendered)

    # 3. the reports folder: HTML, Markdown, JSON, CSV, Excel (each sheet's XML)
    found, n = watch.scan_tree(reports, "reports")
    leaks += found
    read["report files"] = n
    assert any(reports.rglob("*.xlsx")) and any(reports.rglob("*.csv")) and any(reports.rglob("*.html"))

    # 4. the connector's database, but for the OPCO-bound data it keeps to send
    found, n = watch.scan_database(connector, "cfa_connector", opco_bound=OPCO_BOUND)
    leaks += found
    read["connector rows"] = n

    # 5. proof bundles and the UI: the pages, every list's CSV and Excel export, dossier pages, zips
    from fastapi.testclient import TestClient

    client = TestClient(load_dossiers_plugin().create_app(authenticated=False, connector=connector))
    pages = ["/", "/cles"]
    for kind in ui_dossiers.LISTS:
        pages += [f"/listes/{kind}", f"/listes/{kind}/export.csv", f"/listes/{kind}/export.xlsx"]
    sample = rows(connector, """(SELECT DISTINCT ON (status) source_id, numero_interne FROM transmission
                                 WHERE run_id = %s ORDER BY status, id)
                                UNION (SELECT source_id, numero_interne FROM quality_anomaly
                                       WHERE run_id = %s AND field LIKE '%%adresse_complement')
                                UNION (SELECT DISTINCT ON (conn_id) source_id, numero_interne FROM transmission
                                       WHERE run_id = %s AND http_status >= 400 ORDER BY conn_id, id)""",
                  run_id, run_id, run_id)
    assert len(sample) >= 3, sample
    for source_id, numero in sample:
        pages += [f"/dossiers/{source_id}/{numero}", f"/dossiers/{source_id}/{numero}/preuves.zip"]
        bundle = export_proof_bundle(connector, numero)
        leaks += watch.scan_text(f"proof bundle (CLI) {numero}", json.dumps(bundle, ensure_ascii=False, default=str))
    for page in pages:
        res = client.get(page)
        assert res.status_code == 200, (page, res.status_code)
        leaks += watch.scan_bytes(f"UI {page}", res.content, page)
    for (pid,) in rows(connector, "SELECT id FROM exchange_proof WHERE response_body IS NOT NULL LIMIT 200"):
        res = client.get(f"/preuves/{pid}/corps")
        leaks += watch.scan_bytes(f"UI /preuves/{pid}/corps", res.content)
    read["UI pages"] = len(pages)

    # 6. the alerts as delivered (whole mails, webhook bodies and headers but the channel's own token)
    for i, mail in enumerate(smtp.mails):
        leaks += watch.scan_text(f"mail {i} « {mail.subject} »", mail.raw + "\n" + mail.html)
    for i, hit in enumerate(webhook.hits):
        headers = {k: v for k, v in hit.headers.items() if k.lower() != "authorization"}
        leaks += watch.scan_text(f"webhook {i} ({hit.body.get('kind')})", json.dumps(hit.body, ensure_ascii=False)
                                 + json.dumps(headers))
    read["alerts"] = len(smtp.mails) + len(webhook.hits)

    # 7. what the sandbox wrote (its uvicorn log; it keeps no request log at its "warning" level)
    leaks += watch.scan_bytes("sandbox.log", sandbox_log.read_bytes())

    assert not leaks, f"{len(leaks)} fuite(s) ({read}):\n" + "\n".join(sorted(set(map(str, leaks))))

"""The real daily DAG (dag.test()) over freshly seeded ERPs and the real sandbox, with the
Atlas keys wrong and alerts on: each failed Atlas batch alerts through its transmit task's
on_failure_callback (a refused key: alert 2, with the task log's link), the send_alerts task
sends one digest per site with its new blocking anomalies; no key ever in what was sent.
Then the follow-up DAG's check_keys alerts about the refused keys, at most once a day."""
from __future__ import annotations

import html
import json
import re
from collections import Counter

import pytest

from cfa_opco import settings
from cfa_opco.alerts import callbacks
from cfa_opco.report_location import run_folder, site_page, site_report_url
from cfa_opco.sandbox.testing import run_sandbox
from tests import transmission_env
from tests.conftest import make_database
from tests.daily_run import daily_env, run_daily, task_states
from tests.helpers import rows

WRONG_KEY = "wrong-atlas-key-000042"
DOSSIERS = 300


@pytest.fixture(scope="module")
def small_erp(pg_server, tmp_path_factory):
    from cfa_opco.erp.generator import seed

    dsns = {"erp_main": make_database("test_alerts_erp_main"), "erp_est": make_database("test_alerts_erp_est")}
    files_root = tmp_path_factory.mktemp("alerts_erp_files")
    seed(42, DOSSIERS, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=files_root)
    return {**dsns, "files_root": files_root}


def test_daily_dag_alerts_on_a_refused_key_and_per_site(small_erp, airflow_db, tmp_path, monkeypatch,
                                                        alerts_on, smtp, webhook):
    from cfa_opco.connector import migrate

    connector = make_database("test_alerts_connector")
    migrate(connector)
    reports = tmp_path / "reports"
    with run_sandbox(instant=True, rate_limit=0) as sbx:
        env = daily_env(sbx.port, small_erp, connector, tmp_path, reports)
        atlas = [k for k in env if k.startswith("AIRFLOW_CONN_OPCO_ATLAS_")]
        assert atlas
        for k in atlas:   # every Atlas key refused by the OPCO
            env[k] = json.dumps({**json.loads(env[k]), "password": WRONG_KEY})
        transmission_env.apply(monkeypatch, env)
        alerts_on(site_leads={"PAR": "qualite.paris@cfa.test"})

        dr = run_daily({"decision_deadline_minutes": 1})
        run_id = dr.run_id
        states = {(ti.task_id, ti.map_index): str(ti.state) for ti in dr.get_task_instances()}

        # alert 2 through the transmit tasks' on_failure_callback: one per failed Atlas batch
        failed_atlas = sorted(m for (t, m), s in states.items() if t == "opco_atlas.transmit" and "failed" in s)
        assert failed_atlas, states
        key_mails = [m for m in smtp.mails if m.subject.startswith("[CFA-OPCO] Clé API refusée : OPCO Atlas")]
        assert len(key_mails) == len(failed_atlas)
        batches = {r[0]: r[1] for r in rows(connector, """SELECT conn_id, count(*) FROM transmission_plan
                                                             WHERE run_id = %s AND opco_code = 'atlas'
                                                               AND decision = 'ROUTED' GROUP BY 1""", run_id)}
        for mail in key_mails:
            # the batch's key: a SIRET's own key (the demo holds one for Atlas) or the SIREN's
            ident = re.search(r"SIRE[NT] (\d+) ", mail.subject).group(1)
            body = mail.html
            assert f"opco_atlas_{ident}" in body and "refuse la clé API" in body
            assert f"lot de {batches[f'opco_atlas_{ident}']} dossier(s)" in body
            assert "/tasks/opco_atlas.transmit/mapped/" in body          # the task log's link
            assert "/dags/cfa_opco_daily/runs/" in body and run_id in body
        # alert 5 through the send_alerts task: one digest per site with blocking anomalies
        assert task_states(dr)["send_alerts"] == "success", states
        anomalies = rows(connector, """SELECT COALESCE(v.site_code, '?'), a.rule_code,
                                              count(DISTINCT (a.source_id, a.numero_interne))
                                       FROM quality_anomaly a JOIN quality_verdict v USING (run_id, source_id,
                                                                                           numero_interne)
                                       WHERE a.run_id = %s AND a.severity = 'error' GROUP BY 1, 2""", run_id)
        expected: dict[str, Counter] = {}
        for site, rule, n in anomalies:
            expected.setdefault(site, Counter())[rule] = n
        assert expected, "the seed has blocking anomalies"
        digests = {m.subject.split("Site ")[1].split(" :")[0]: m for m in smtp.mails if "[CFA-OPCO] Site " in m.subject}
        assert set(digests) == set(expected)
        report_link = callbacks.base_url() + "/cfa-quality/runs/"
        for site, mail in digests.items():
            assert mail.rcpt_tos == (["qualite.paris@cfa.test"] if site == "PAR" else ["ops@cfa.test"])
            for rule, n in expected[site].items():
                assert f"<td>{rule}</td><td>{n}</td>" in mail.html
            assert report_link in mail.html
            # the site's own page, and it exists in the run's folder (what the plugin serves)
            assert html.escape(callbacks.base_url() + site_report_url(run_id, site), quote=True) in mail.html \
                or callbacks.base_url() + site_report_url(run_id, site) in mail.html
            assert (run_folder(run_id, reports) / site_page(site)).is_file()
        hooks = Counter(h.body["kind"] for h in webhook.hits)
        assert hooks["key"] == len(key_mails) and hooks["site_anomalies"] == len(digests)
        for text in [m.raw for m in smtp.mails] + [json.dumps(h.body) for h in webhook.hits]:
            assert WRONG_KEY not in text
        assert webhook.hits and all(h.headers["Authorization"].startswith("Bearer ") for h in webhook.hits)

        # alert 2 from the follow-up DAG's check_keys (the real DAG): the refused Atlas keys
        from airflow.dag_processing.dagbag import DagBag

        before = len(smtp.mails)
        followup = DagBag(str(settings.PROJECT_DIR / "dags")).dags["cfa_opco_followup"].test()
        assert task_states(followup)["check_keys"] == "success", task_states(followup)
        key_checks = [m for m in smtp.mails[before:] if "[CFA-OPCO] Clé API refusée ou expirée : OPCO Atlas" in m.subject]
        assert len(key_checks) == len(atlas), [m.subject for m in smtp.mails[before:]]
        for mail in key_checks:
            assert "Admin → Connections" in mail.html and "opco_atlas_" in mail.html
        # the same keys again within the day: not alerted again
        from cfa_opco.followup import key_warnings

        warnings = key_warnings(connector, 30, conn_ids=[k[len("AIRFLOW_CONN_"):].lower() for k in atlas])
        assert len(warnings) == len(atlas)
        assert callbacks.send_key_alerts(warnings, 30, connector=connector) == []
        assert all(WRONG_KEY not in m.raw for m in smtp.mails)

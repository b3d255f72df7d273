"""End to end: the real daily DAG (dag.test()) over the seeded ERPs, against a real
PostgreSQL and the real sandbox server. Every clean dossier ends ENGAGE or REFUSE as the
sandbox decides (or is reported incomplete / not transmissible, with the reason), every
seeded defect is quarantined, nothing is created twice, and the summary matches the ledger."""
from __future__ import annotations

import json
from pathlib import Path

from cfa_opco import report_location, report_runs
from cfa_opco.opcos import opco_codes
from cfa_opco.sandbox.testing import run_sandbox
from tests import transmission_env
from tests.conftest import make_database
from tests.daily_run import daily_env, run_daily, state_name, task_states
from tests.helpers import rows


def test_daily_dag_end_to_end(seeded_erp, airflow_db, tmp_path, monkeypatch):
    from cfa_opco.connector import migrate

    connector = make_database("test_e2e_connector")
    migrate(connector)
    reports = tmp_path / "reports"
    with run_sandbox(overrides={"delays": {"instruction": 1, "decision": 2, "reglement": 2}},
                     rate_limit=0) as sbx:
        transmission_env.apply(monkeypatch, daily_env(sbx.port, seeded_erp, connector, tmp_path, reports))

        dr = run_daily({"decision_deadline_minutes": 3})
        run_id = dr.run_id
        # the run left dossiers blocked (no key, needs a human decision): it must not end green;
        # every task but the last one succeeded, and the last one says why, with the counts
        states = task_states(dr)
        assert state_name(dr.state) == "failed", (dr.state, states)
        assert states.pop("attention_needed") == "failed", states
        skipped = {t for t, st in states.items() if st == "skipped"}   # an OPCO with no batch (OPCO Santé)
        assert skipped <= {f"opco_{code}.transmit" for code in opco_codes()}, states
        assert {st for t, st in states.items() if t not in skipped} == {"success"}, states
        folder = report_location.run_folder(run_id, reports)
        attention = json.loads((folder / "attention.json").read_text())
        assert attention["outcome"] == "fail" and attention["run_id"] == run_id
        assert "non transmis" in attention["message"] and report_location.run_report_url(run_id) in attention["message"]

        # one run = one folder: the quality reports, the run summary and its report
        summary = json.loads((folder / report_runs.SUMMARY_FILE).read_text())
        assert summary["run_id"] == run_id and summary["report_url"] == report_location.run_report_url(run_id)
        assert Path(summary["run_report"]).parent == folder and Path(summary["reports"]).parent == folder
        assert attention["counts"]["needs_human_decision"] == summary["buckets"]["needs_human_decision"]
        # the summary is the ledger's truth
        ledger = dict(rows(connector, """SELECT status, count(DISTINCT numero_interne) FROM transmission
                                          WHERE run_id = %s AND operation = 'DOSSIER' GROUP BY 1""", run_id))
        assert summary["transmitted"] == ledger["SENT"] > 1500
        assert summary["extracted"] == 2000
        assert summary["passed_quality"] + summary["quarantined"] == 2000
        # every extracted dossier in exactly one visible bucket; nothing in doubt, nothing left out
        buckets = summary["buckets"]
        assert sum(buckets.values()) == summary["extracted"], buckets
        assert buckets["in_doubt"] == 0 and buckets["not_processed"] == 0, buckets
        assert buckets["needs_human_decision"] > 0 and buckets["not_transmissible"] > 0, buckets
        assert sum(summary["decisions"].values()) == buckets["transmitted"]
        waiting = dict(rows(connector, """SELECT numero_interne, message FROM transmission WHERE run_id = %s
                                           AND status = 'WAITING'""", run_id))
        assert buckets["waiting"] == len(waiting)
        assert all("contrat de base" in m for m in waiting.values()), waiting
        report = Path(summary["run_report"]).read_text(encoding="utf-8")
        assert "| **Total** | **2000** |" in report and "Décision humaine nécessaire" in report
        # every seeded defect quarantined, no clean dossier quarantined
        truth = {n for (n,) in rows(seeded_erp["erp_main"], "SELECT numero_interne FROM seed_ground_truth")}
        quarantined = {n for (n,) in rows(connector, """SELECT numero_interne FROM quality_verdict
                                                         WHERE run_id = %s AND verdict = 'QUARANTINE'""", run_id)}
        assert quarantined == truth
        # every clean dossier: decided by the OPCO, or incomplete (documents), or reported with a reason
        states = dict(rows(connector, """SELECT numero_interne, etat FROM opco_dossier WHERE first_run_id = %s""",
                            run_id))
        incomplete = {n for (n,) in rows(connector, """SELECT numero_interne FROM opco_dossier
                                                        WHERE anomalies IS NOT NULL AND anomalies::text <> '[]'""")}
        undecided = {n: e for n, e in states.items() if e not in ("ENGAGE", "REFUSE") and n not in incomplete}
        assert not undecided, list(undecided.items())[:5]
        assert summary["accepted"] == sum(1 for e in states.values() if e == "ENGAGE") > 1000
        assert summary["refused"] == sum(1 for e in states.values() if e == "REFUSE") > 0
        # the conventions de formation followed their contracts; those the gate reported are held
        conventions = summary["following"]["CONVENTION"]
        held = {n for (n,) in rows(seeded_erp["erp_main"], "SELECT numero_interne FROM seed_convention_truth")}
        assert conventions.get("SENT", 0) > 1000 and not conventions.get("PENDING"), conventions
        assert 0 < conventions["BLOCKED"] <= len(held), conventions
        assert "| Conventions de formation | " in report
        reported = {n for (n,) in rows(connector, """SELECT numero_interne FROM transmission_plan
                                                       WHERE run_id = %s AND decision <> 'ROUTED'""", run_id)}
        clean = {n for (n,) in rows(connector, "SELECT numero_interne FROM staged_dossier WHERE run_id = %s",
                                     run_id)} - truth
        unaccounted = clean - set(states) - reported
        rejected = {n for (n,) in rows(connector, """SELECT numero_interne FROM transmission
                                                       WHERE run_id = %s AND status IN ('REJECTED', 'PENDING')""",
                                        run_id)}
        assert unaccounted <= rejected and len(rejected) < 0.02 * len(clean), sorted(unaccounted)[:10]
        # exactly once, as the sandbox counts it
        for code in opco_codes():
            assert sbx.creations(code)["duplicates"] == [], code
        # decisions written back to the ERP that allows it (state, numéro DECA, refusal reasons)
        written = rows(seeded_erp["erp_main"], """SELECT count(*) FILTER (WHERE etat_opco = 'ENGAGE'),
                                                          count(*) FILTER (WHERE numero_deca IS NOT NULL)
                                                   FROM contrat""")[0]
        assert written[0] > 500 and written[1] > 500
        assert rows(seeded_erp["erp_main"], "SELECT count(*) FROM retour_opco WHERE etat = 'REFUSE'")[0][0] > 0
        # the échéances of the engaged dossiers were read back and written back to the ERP that allows it
        engaged_read = rows(connector, """SELECT count(*) FILTER (WHERE echeances_read_at IS NOT NULL),
                                                  count(*) FILTER (WHERE echeances_error IS NOT NULL)
                                           FROM opco_dossier WHERE etat = 'ENGAGE'""")[0]
        assert engaged_read[0] > 300 and engaged_read[0] + engaged_read[1] >= summary["accepted"], engaged_read
        assert rows(seeded_erp["erp_main"], "SELECT count(*) FROM echeance WHERE etat_opco IS NOT NULL")[0][0] > 300
        # every seeded invoice ends in exactly one visible bucket; each defect is to fix; nothing twice
        invoices = summary["invoices"]
        truth = rows(seeded_erp["erp_main"], "SELECT source_id, ligne, numero_facture, rule_code FROM seed_invoice_truth")
        assert invoices["staged"] == len(truth) == sum(invoices["buckets"].values()), invoices["buckets"]
        ib = invoices["buckets"]
        assert ib["transmitted"] > 300 and ib["not_transmissible"] > 0 and ib["waiting_engage"] > 0, ib
        assert ib["in_doubt"] == ib["not_processed"] == ib["dry_run"] == ib["filtered"] == 0, ib
        defective = {(s, l) for s, l, _, r in truth if r}
        plan = dict(((s, l), d) for s, l, d in rows(connector, """SELECT source_id, ligne, decision FROM facture_plan
                                                                  WHERE run_id = %s""", run_id))
        assert {plan[k] for k in defective} == {"TO_FIX"} and ib["to_fix"] >= len(defective)
        held = [(f["numeroInterneDossier"], f["echeance"]) for code in opco_codes()
                for f in sbx.factures(code)["factures"]]
        assert len(held) == len(set(held)) == ib["transmitted"]
        assert "## Factures" in report and f"| **Total** | **{len(truth)}** |" in report
        # AFDAS's invoices left after their échéances' certificats de réalisation (the sandbox
        # refuses them otherwise): as many certificats as AFDAS invoices, listed in the report
        afdas = len(sbx.factures("afdas")["factures"])
        assert afdas > 0 and len(sbx.certificats("afdas")) == afdas and ib["waiting_certificat"] == 0, ib
        assert "| Certificats de réalisation (avant les factures AFDAS) | " + str(afdas) + " |" in report
        # the proof bundle of a dossier with an invoice holds it
        from cfa_opco.proofs import export_proof_bundle
        invoiced = rows(connector, """SELECT numero_interne FROM transmission WHERE run_id = %s
                                      AND operation = 'FACTURE' AND status = 'SENT' LIMIT 1""", run_id)[0][0]
        bundle = export_proof_bundle(connector, invoiced)
        assert any(t["operation"] == "FACTURE" for t in bundle["transmissions"])
        assert any(p["route"].startswith("/v1/factures") for p in bundle["exchanges"])
        # the reports exist, are linked from the summary, and the runs home page lists the run
        assert summary["reports"] and Path(summary["reports"]).exists()
        assert run_id in (reports / report_location.INDEX).read_text(encoding="utf-8")

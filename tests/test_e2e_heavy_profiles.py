"""End to end on a bad day: the real daily DAG (dag.test()) against a sandbox where every
OPCO answers in another response-shape profile (bare or wrapped lists, other pagination,
renamed fields, text and HTML error bodies, empty bodies, and combinations) under the
``heavy`` fault preset (15 % 503, 15 % 429 with Retry-After 1–2 s, answers held 35 s after
the write, connections dropped after the write).

Done means: the run ends; every clean dossier is in a final or explained state; nothing
created twice (the sandbox's own count); nothing left in doubt; the summary adds up."""
from __future__ import annotations

import json

import pytest

from cfa_opco import report_location, report_runs, settings
from cfa_opco.opcos import opco_codes
from cfa_opco.sandbox.profiles import PROFILES, parse_profile, profile_name
from cfa_opco.sandbox.testing import run_sandbox
from tests import transmission_env
from tests.conftest import make_database
from tests.helpers import rows, sources_file_for

DOSSIERS, SEED = 400, 7

# every profile alone, then combinations, spread over the eleven OPCOs (v1-only and v2 alike)
PROFILE_PLAN = [p for p in PROFILES if p != "strict"] + [
    "bare_lists+html_gateway+empty_bodies", "next_link+renamed_fields+text_errors",
    "wrapped_items_offset+renamed_fields+html_gateway", "strict"]


@pytest.fixture(scope="module")
def small_erp(pg_server, tmp_path_factory):
    """ERPs of their own (the daily test's ERPs receive its write-back): 400 dossiers."""
    from cfa_opco.erp.generator import seed

    dsns = {"erp_main": make_database("test_heavy_erp_main"), "erp_est": make_database("test_heavy_erp_est")}
    files_root = tmp_path_factory.mktemp("heavy_erp_files")
    seed(SEED, DOSSIERS, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=files_root)
    return {**dsns, "files_root": files_root}


def test_daily_dag_under_heavy_faults_in_every_response_profile(small_erp, airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from cfa_opco.connector import migrate

    connector = make_database("test_heavy_connector")
    migrate(connector)
    reports = tmp_path / "reports"
    profiles = dict(zip(opco_codes(), PROFILE_PLAN))
    assert set(PROFILES) - {"strict"} <= {p for v in profiles.values() for p in v.split("+")}
    overrides = {"delays": {"instruction": 1, "decision": 2, "reglement": 2},
                 "opcos": {code: {"profile": name} for code, name in profiles.items()}}
    with run_sandbox(overrides=overrides, rate_limit=0) as sbx:
        sbx.set_fault_preset("heavy")
        env = transmission_env.opco_connection_env(
            sbx.port, extra_overrides={"rate_limit_per_second": 0, "read_timeout": 2},
            dsns={"cfa_erp_main": small_erp["erp_main"], "cfa_erp_est": small_erp["erp_est"],
                  "cfa_connector": connector})
        transmission_env.apply(monkeypatch, env)
        monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_SOURCES_FILE", str(sources_file_for(small_erp, tmp_path)))
        monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", str(reports))
        # this test checks the transmission, not the run's end state (see tests/test_e2e_daily.py)
        monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_UNSENT_OUTCOME", "ignore")

        dag = DagBag(str(settings.PROJECT_DIR / "dags")).dags["cfa_opco_daily"]
        dr = dag.test(run_conf={"decision_deadline_minutes": 10})
        assert str(dr.state) in ("success", "DagRunState.SUCCESS"), dr.state
        run_id = dr.run_id
        served = sbx.profiles()
        faults = {code: sbx.stats(code) for code in opco_codes()}
        duplicates = sbx.duplicates_created()

    # the sandbox really was in those profiles, and really failed requests
    assert served["opcos"] == {c: profile_name(parse_profile(p)) for c, p in profiles.items()}
    assert duplicates == 0
    summary = json.loads((report_location.run_folder(run_id, reports) / report_runs.SUMMARY_FILE).read_text())
    assert summary["run_id"] == run_id
    buckets = summary["buckets"]
    assert sum(buckets.values()) == summary["extracted"] == DOSSIERS, buckets
    assert buckets["in_doubt"] == 0 and buckets["not_processed"] == 0, buckets
    assert buckets["transmitted"] > 0.6 * DOSSIERS, buckets
    # every clean dossier final, or explained: quarantined, reported, incomplete (documents),
    # or "suivi impossible" with its reason
    truth = {n for (n,) in rows(small_erp["erp_main"], "SELECT numero_interne FROM seed_ground_truth")}
    staged = {n for (n,) in rows(connector, "SELECT numero_interne FROM staged_dossier WHERE run_id = %s", run_id)}
    sent = dict(rows(connector, """SELECT numero_interne, status FROM transmission WHERE run_id = %s
                                    AND operation = 'DOSSIER'""", run_id))
    assert all(st != "PENDING" for st in sent.values()), [n for n, st in sent.items() if st == "PENDING"][:5]
    states = dict(rows(connector, "SELECT numero_interne, etat FROM opco_dossier WHERE first_run_id = %s", run_id))
    explained = {n for (n,) in rows(connector, """SELECT numero_interne FROM opco_dossier
                                                   WHERE (anomalies IS NOT NULL AND anomalies::text <> '[]')
                                                      OR suivi_impossible_reason IS NOT NULL""")}
    undecided = {n: e for n, e in states.items() if e not in ("ENGAGE", "REFUSE") and n not in explained}
    assert not undecided, list(undecided.items())[:5]
    reported = {n for (n,) in rows(connector, """SELECT numero_interne FROM transmission_plan
                                                   WHERE run_id = %s AND decision <> 'ROUTED'""", run_id)}
    refused_at_send = {n for n, st in sent.items() if st == "REJECTED"}
    unaccounted = (staged - truth) - set(states) - reported - refused_at_send - set(
        n for n, st in sent.items() if st == "WAITING")
    assert not unaccounted, sorted(unaccounted)[:10]
    # the faults were real
    injected = {k: sum(st["faults_injected"].get(k, 0) for st in faults.values())
                for k in ("error_503", "error_429", "held", "lost_response")}
    assert injected["error_503"] > 20 and injected["error_429"] > 20, injected

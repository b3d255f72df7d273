"""The "Dossiers OPCO" view's query module (cfa_opco.ui.dossiers) against a real connector
database after a real run (tests/ui/dossiers_env.py): its counts are the run report's, its
lists hold what the run report says needs someone, a dossier's page holds its whole
history, the keys page every key with its scope and expiry — and it never writes."""
from __future__ import annotations

import psycopg2
import pytest

from cfa_opco.pipeline.run_report import BUCKETS, run_buckets
from cfa_opco.ui import dossiers as q
from tests.helpers import rows
from tests.ui.dossiers_env import ui_connector

SIRET_CONN = "opco_atlas_77567227200025"


@pytest.fixture(scope="module")
def ui(sbx, sources, tmp_path_factory):
    return ui_connector(sbx, sources, tmp_path_factory)


def test_counts_add_up_with_the_run_report(ui):
    report = run_buckets(ui["dsn"], ui["run_id"], detail_limit=0)
    ov = q.overview(ui["dsn"])
    totals = {b: n for b, (n, _) in ov["totals"]["buckets"].items()}
    assert totals == {b: n for b, n in report["buckets"].items() if n}
    assert ov["totals"]["total"] == report["staged"] == sum(report["buckets"].values())
    decisions = {d: n for d, (n, _) in ov["totals"]["decisions"].items()}
    assert decisions == {d: n for d, n in report["decisions"].items() if n}
    # per OPCO and per site: partitions of the same total; everything happened today
    assert sum(r["total"] for r in ov["by_opco"].values()) == ov["totals"]["total"]
    assert sum(r["total"] for r in ov["by_site"].values()) == ov["totals"]["total"]
    assert ov["totals"]["today"] == ov["totals"]["total"]
    assert set(ov["by_opco"]) >= {"akto", "atlas", "afdas", "sante"} and "" in ov["by_opco"]   # "" : not routed
    assert ov["by_opco"][""]["buckets"].keys() <= {"quarantined", "needs_human_decision"}
    assert len(ov["trend"]) == q.TREND_DAYS
    today = ov["trend"][-1]
    assert today["sent"] == report["buckets"]["transmitted"] and today["quarantined"] == report["buckets"]["quarantined"]
    assert all(set(b) <= set(BUCKETS) for b in (r["buckets"] for r in ov["by_site"].values()))


def test_lists_hold_what_the_run_report_details(ui):
    report = run_buckets(ui["dsn"], ui["run_id"], detail_limit=100_000)
    for kind in ("quarantined", "needs_human_decision", "not_transmissible"):
        expected = {(d["source_id"], d["numero_interne"]) for d in report["details"].get(kind, [])}
        assert expected, kind
        got = {(r["source_id"], r["numero_interne"]) for r in q.iter_list(kind, target=ui["dsn"])}
        assert got == expected, kind
        assert q.count_list(kind, target=ui["dsn"]) == len(expected)
    refused = q.list_page("refused", per_page=500, target=ui["dsn"])
    assert refused["total"] == report["buckets"]["refused_by_opco"] + report["decisions"]["refused"] > 0
    assert all(r["reason"] for r in refused["rows"])                        # motifs shown
    assert any("NPEC" in r["reason"] for r in refused["rows"])
    incomplete = q.list_page("incomplete", target=ui["dsn"])
    assert incomplete["total"] == report["decisions"]["incomplete"]
    if incomplete["rows"]:
        assert all("CONVENTION" in r["reason"] for r in incomplete["rows"])
    quarantined = q.list_page("quarantined", per_page=20, target=ui["dsn"])
    assert all(r["reason"] and r["situation"] == BUCKETS["quarantined"] for r in quarantined["rows"])
    afdas = q.list_page("needs_human_decision", opco="afdas", target=ui["dsn"])
    assert afdas["total"] > 0 and all("Aucune clé API AFDAS" in r["reason"] for r in afdas["rows"])


def test_paging_and_filters(ui):
    full = list(q.iter_list("quarantined", target=ui["dsn"]))
    pages = [q.list_page("quarantined", page=p, per_page=7, target=ui["dsn"]) for p in range(1, len(full) // 7 + 2)]
    paged = [(r["source_id"], r["numero_interne"]) for pg in pages for r in pg["rows"]]
    assert paged == [(r["source_id"], r["numero_interne"]) for r in full]       # stable order, nothing twice
    assert all(pg["total"] == len(full) for pg in pages)
    beyond = q.list_page("quarantined", page=10_000, per_page=7, target=ui["dsn"])
    assert beyond["rows"] == [] and beyond["total"] == len(full)
    site = full[0]["site_code"]
    by_site = list(q.iter_list("quarantined", site=site, target=ui["dsn"]))
    assert by_site and {r["site_code"] for r in by_site} == {site}
    assert len(list(q.iter_list("quarantined", limit=3, target=ui["dsn"]))) == 3
    ch = q.choices(ui["dsn"])
    assert "atlas" in ch["opcos"] and site in ch["sites"]


def test_dossier_page_holds_the_whole_history_and_the_key_scope(ui):
    numero, source = rows(ui["dsn"], """SELECT numero_interne, source_id FROM transmission_plan
                                       WHERE conn_id = %s LIMIT 1""", SIRET_CONN)[0]
    d = q.dossier(source, numero, target=ui["dsn"])
    assert d["current"]["conn_id"] == SIRET_CONN and d["current"]["key_scope"] == "SIRET"
    assert d["current"]["bucket"] == "transmitted"
    assert [t["status"] for t in d["ledger"] if t["operation"] == "DOSSIER"] == ["SENT"]
    posts = [p for p in d["proofs"] if p["method"] == "POST" and "dossiers" in p["route"]]
    assert posts and posts[0]["request_sha256"] == d["ledger"][0]["content_hash"]
    assert [s["etat"] for s in d["states"]][:1] == ["TRANSMIS"] and len(d["states"]) >= 2
    assert d["verdicts"][0]["verdict"] in ("TRANSMIT", "FORCED")
    bundle = q.proof_bundle(source, numero, target=ui["dsn"])
    # the dossier's own payload, and any other exchange sent for it (its invoices, convention...)
    sent = bundle["integrity"]["ledger_hashes_sent"]
    assert d["ledger"][0]["content_hash"] in sent and set(sent) <= {t["content_hash"] for t in d["ledger"]}
    assert q.dossier("erp_main", "NOPE-0", target=ui["dsn"]) is None
    qn, qs = rows(ui["dsn"], "SELECT numero_interne, source_id FROM quarantine_current LIMIT 1")[0]
    dq = q.dossier(qs, qn, target=ui["dsn"])
    assert dq["current"]["bucket"] == "quarantined" and dq["anomalies"] and not dq["ledger"]


def test_keys_every_key_with_scope_expiry_and_last_success(ui):
    ks = {k["conn_id"]: k for k in q.keys(30, target=ui["dsn"])}
    assert ks[SIRET_CONN]["scope"] == "SIRET" and ks[SIRET_CONN]["siret"] == "77567227200025"
    assert ks["opco_atlas_775672272"]["scope"] == "SIREN"
    for k in ks.values():
        assert k["status"] != "NOT_CHECKED", k
    near = ks["opco_constructys_418936522"]          # expires_in_days: 20 in config/sandbox.yaml
    assert near["alert"] and near["status"] == "EXPIRING" and 0 <= near["days_left"] <= 20
    ok = ks["opco_akto_775672272"]
    assert not ok["alert"] and ok["expires_on"].isoformat() == "2031-12-31"
    assert ok["last_success_at"] is not None
    assert "opco_afdas_324578137" not in ks            # no key: nothing to show
    assert all("demo-" not in str(v) for k in ks.values() for v in k.values())


def test_every_query_is_read_only(ui):
    with q.read_only(ui["dsn"]) as cur:
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("DELETE FROM opco_key_status")

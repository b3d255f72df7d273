"""Invoices (issue 12, point 4) against the seeded ERPs, the real sandbox and a real PostgreSQL:
``POST /v1/factures`` exactly once per invoice (intent first, a rerun sends nothing), a lost answer
settled by reading back (``/v2/factures/etats``) or by the identical resend an OPCO without that
route answers 200, 429s and 5xx under load, never two invoices for one échéance, and every invoice
of the run in exactly one bucket — the OPCO without the invoice route named per invoice."""
from __future__ import annotations

import psycopg2
import pytest

from cfa_opco.db.connect import connection
from cfa_opco.extraction import extract
from cfa_opco.factures import stage_invoices
from cfa_opco.followup import sync_states
from cfa_opco.opcos import opco_codes
from cfa_opco.pipeline.invoicing import invoice_buckets, send_invoices
from cfa_opco.quality.gate import run_quality_gate
from tests import transmission_env
from tests.helpers import rows
from tests.outbox.common import RUN, transmit_all

FAST = {"max_workers": 4, "retry_base": 0.01}


@pytest.fixture()
def invoiced(sandbox, sources, connector_dsn, monkeypatch, tmp_path):
    """A run extracted with its invoices, checked, its dossiers sent and decided (instant sandbox)."""
    env = transmission_env.opco_connection_env(sandbox.port, extra_overrides={"rate_limit_per_second": 0})
    transmission_env.apply(monkeypatch, env)
    extract(RUN, sources, connector_dsn)
    stage_invoices(RUN, sources, connector_dsn)
    run_quality_gate(RUN, connector_dsn, reports_dir=tmp_path / "reports")
    transmit_all({"connector": connector_dsn})
    sync_states(connector_dsn, lag_seconds=0)
    return {"sandbox": sandbox, "connector": connector_dsn, "sources": sources}


def _held(sandbox) -> dict[str, list[dict]]:
    return {code: sandbox.factures(code)["factures"] for code in opco_codes()}


def _ledger(dsn: str, run: str = RUN) -> dict[str, str]:
    return dict(rows(dsn, """SELECT payload ->> 'numeroInterneFacture', status FROM transmission
                             WHERE operation = 'FACTURE' AND run_id = %s""", run))


def test_invoices_leave_exactly_once_and_each_ends_in_one_bucket(invoiced):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    out = send_invoices(RUN, conn, **FAST)
    staged = rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", RUN)[0][0]
    b = out["buckets"]
    assert sum(b.values()) == staged > 800, b
    assert b["transmitted"] > 300 and b["to_fix"] > 40 and b["not_transmissible"] > 50, b
    assert b["in_doubt"] == b["not_processed"] == b["dry_run"] == b["filtered"] == 0, b
    # what the OPCOs hold is what the ledger says was sent: once each, one per échéance
    held = _held(sbx)
    sent = {n for n, st in _ledger(conn).items() if st == "SENT"}
    assert {f["numeroInterneFacture"] for fs in held.values() for f in fs} == sent
    assert len(sent) == b["transmitted"]
    per_echeance = [(f["numeroInterneDossier"], f["echeance"]) for fs in held.values() for f in fs]
    assert len(per_echeance) == len(set(per_echeance))
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == len(sent)
    # the invoices to fix never left; the OPCO without the invoice route is named per invoice
    to_fix = {n for (n,) in rows(conn, """SELECT f.numero_facture FROM facture_verdict v JOIN staged_facture f
                                          USING (run_id, source_id, ligne) WHERE v.run_id = %s
                                          AND v.verdict = 'TO_FIX'""", RUN)}
    assert not (to_fix & sent)
    details = invoice_buckets(conn, RUN)
    assert any("Uniformation" in d["raison"] for d in details["details"]["not_transmissible"])
    assert all(d["raison"] for bucket in details["details"].values() for d in bucket)
    # the "Dossiers OPCO" view and the proof bundle hold a dossier's invoice with the rest
    from cfa_opco.proofs import export_proof_bundle
    from cfa_opco.ui import dossiers as ui

    source, numero = rows(conn, """SELECT source_id, numero_interne FROM transmission WHERE operation = 'FACTURE'
                                   AND status = 'SENT' ORDER BY id LIMIT 1""")[0]
    page = ui.dossier(source, numero, target=conn)
    assert [t["status"] for t in page["ledger"] if t["operation"] == "FACTURE"] == ["SENT"]
    assert page["current"]["bucket"] == "transmitted"
    assert any(t["operation"] == "FACTURE" for t in export_proof_bundle(conn, numero)["transmissions"])
    # a rerun sends nothing again
    again = send_invoices(RUN, conn, **FAST)
    assert sum(x.get("invoices_sent", 0) for x in again["batches"].values()) == 0
    assert again["buckets"] == b
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == len(sent)


def test_a_second_invoice_for_an_echeance_is_blocked_and_never_sent(invoiced):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    send_invoices(RUN, conn, **FAST)
    source, ligne, numero, dossier, ech = rows(conn, """
        SELECT f.source_id, f.ligne, f.numero_facture, f.numero_interne, f.echeance_numero FROM staged_facture f
        JOIN transmission t ON t.operation = 'FACTURE' AND t.payload ->> 'numeroInterneFacture' = f.numero_facture
        WHERE f.run_id = %s AND t.status = 'SENT' ORDER BY 1, 2 LIMIT 1""", RUN)[0]
    # the ERP holds a second invoice of the same échéance (another number): a later run
    run2 = "manual__second"
    with connection(conn) as c, c.cursor() as cur:
        cur.execute("""INSERT INTO staged_facture (run_id, source_id, ligne, numero_facture, numero_interne,
                           echeance_numero, date_facture, montant, facture_siret, cfa_siret, site_code,
                           echeance_date, echeance_montant)
                       SELECT %s, source_id, 'X' || ligne, numero_facture || '-BIS', numero_interne, echeance_numero,
                              date_facture, montant, facture_siret, cfa_siret, site_code, echeance_date,
                              echeance_montant
                       FROM staged_facture WHERE run_id = %s AND source_id = %s AND ligne = %s""",
                    (run2, RUN, source, ligne))
        cur.execute("""INSERT INTO facture_verdict (run_id, source_id, ligne, verdict, rule_codes)
                       VALUES (%s, %s, 'X' || %s, 'TRANSMIT', '{}')""", (run2, source, ligne))
    before = sum(sbx.factures(code)["created"] for code in opco_codes())
    out = send_invoices(run2, conn, **FAST)
    assert out["buckets"]["to_fix"] == 1 and sum(out["buckets"].values()) == 1, out
    status, message = rows(conn, """SELECT status, message FROM transmission WHERE operation = 'FACTURE'
                                    AND payload ->> 'numeroInterneFacture' = %s""", numero + "-BIS")[0]
    assert status == "BLOCKED"
    assert f"l'échéance {ech} du dossier {dossier} a déjà une facture transmise ({numero})" in message
    assert "jamais deux factures pour une échéance" in message
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == before
    # and the ledger itself refuses a second live intent for that échéance
    with pytest.raises(psycopg2.errors.UniqueViolation):
        with connection(conn) as c, c.cursor() as cur:
            cur.execute("""INSERT INTO transmission (run_id, source_id, numero_interne, operation, content_hash,
                               payload, status) VALUES ('x', %s, %s, 'FACTURE', 'h', %s, 'PENDING')""",
                        (source, dossier, psycopg2.extras.Json({"numeroInterneFacture": "OTHER",
                                                                 "echeance": {"numero": ech}})))


def test_an_invoice_in_doubt_is_read_back_or_resent_identically_never_twice(invoiced):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    send_invoices(RUN, conn, **FAST)
    # two sent invoices whose answer was "lost": one at an OPCO that serves /v2/factures/etats
    # (read back), one at an OPCO that does not (the identical invoice is sent again: answered 200)
    lost = {}
    for opcos, label in ((("atlas", "akto", "opcommerce", "ocapiat", "mobilites"), "v2"),
                         (("afdas", "constructys", "opco_2i", "opco_ep"), "v1")):
        lost[label] = rows(conn, """UPDATE transmission SET status = 'PENDING' WHERE id = (SELECT id FROM transmission
                                    WHERE operation = 'FACTURE' AND status = 'SENT' AND opco_code = ANY(%s)
                                    ORDER BY id LIMIT 1) RETURNING payload ->> 'numeroInterneFacture', opco_code""",
                           list(opcos))[0]
    created = sum(sbx.factures(code)["created"] for code in opco_codes())
    same = {code: sbx.factures(code)["same_content"] for code in opco_codes()}
    out = send_invoices(RUN, conn, **FAST)
    ledger = _ledger(conn)
    assert ledger[lost["v2"][0]] == ledger[lost["v1"][0]] == "SENT"
    assert out["buckets"]["in_doubt"] == 0
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == created     # nothing created twice
    assert sbx.factures(lost["v2"][1])["same_content"] == same[lost["v2"][1]]         # read back, not re-sent
    assert sbx.factures(lost["v1"][1])["same_content"] == same[lost["v1"][1]] + 1     # re-sent identically
    reads = rows(conn, """SELECT count(*) FROM exchange_proof WHERE route LIKE '/v2/factures/etats%%'
                          AND route LIKE %s""", f"%{lost['v2'][0].replace('/', '%2F')}%")[0][0]
    assert reads >= 1


def test_invoices_under_429_and_5xx_faults_leave_exactly_once(invoiced):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    sbx.set_faults(error_429=0.15, error_503=0.15, lost_response=0.1, routes=["factures_v1"],
                   retry_after_min=0, retry_after_max=0)
    out = send_invoices(RUN, conn, deadline_seconds=120, **FAST)
    sbx.clear_faults()
    b = out["buckets"]
    staged = rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", RUN)[0][0]
    assert sum(b.values()) == staged
    faults = sum(x.get("retried_later", 0) + x.get("ambiguous", 0) for x in out["batches"].values())
    assert faults > 20, out["batches"]
    # whatever stayed in doubt is settled by the next pass; then every invoice sent is held once
    if b["in_doubt"]:
        b = send_invoices(RUN, conn, **FAST)["buckets"]
    assert b["in_doubt"] == 0 and b["not_processed"] == 0, b
    sent = {n for n, st in _ledger(conn).items() if st == "SENT"}
    held = [f["numeroInterneFacture"] for fs in _held(sbx).values() for f in fs]
    assert sorted(held) == sorted(sent) and len(sent) == b["transmitted"]


def test_dry_run_and_filters_send_nothing_and_still_account_for_every_invoice(invoiced):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    dry = send_invoices(RUN, conn, dry_run=True, **FAST)["buckets"]
    staged = rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", RUN)[0][0]
    assert sum(dry.values()) == staged and dry["dry_run"] > 300 and dry["transmitted"] == 0, dry
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == 0
    only = send_invoices(RUN, conn, only_opco="atlas", **FAST)["buckets"]
    assert sum(only.values()) == staged and only["filtered"] > 300, only
    assert {f["numeroInterneFacture"] for f in sbx.factures("atlas")["factures"]}
    assert all(not sbx.factures(code)["factures"] for code in opco_codes() if code != "atlas")


def test_a_rupture_stops_the_invoicing_of_later_echeances(invoiced):
    """An échéance the OPCO cancelled after a rupture (its schedule says ANNULEE), or dated after
    a rupture the connector sent: the invoice is not sent, its bucket says why."""
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    staged = rows(conn, """SELECT f.source_id, f.numero_interne, f.echeance_numero, f.numero_facture, f.echeance_date
                           FROM staged_facture f JOIN facture_verdict v USING (run_id, source_id, ligne)
                           JOIN opco_dossier od ON od.source_id = f.source_id AND od.numero_interne = f.numero_interne
                           WHERE f.run_id = %s AND v.verdict = 'TRANSMIT' AND od.etat = 'ENGAGE'
                             AND f.echeance_date IS NOT NULL
                           ORDER BY f.numero_facture LIMIT 2""", RUN)
    (src_a, ni_a, num_a, nif_a, _), (src_b, ni_b, num_b, nif_b, date_b) = staged
    with connection(conn) as c, c.cursor() as cur:
        cur.execute("""INSERT INTO opco_echeance (source_id, numero_interne, numero, opco_code, etat)
                       VALUES (%s, %s, %s, 'atlas', 'ANNULEE')
                       ON CONFLICT (source_id, numero_interne, numero) DO UPDATE SET etat = 'ANNULEE'""",
                    (src_a, ni_a, num_a))
        cur.execute("""INSERT INTO transmission (run_id, source_id, numero_interne, operation, content_hash, payload,
                       status, sent_at) VALUES ('r0', %s, %s, 'RUPTURE', 'h', jsonb_build_object('numeroInterne', %s,
                       'dateRupture', (%s::date - 1)::text), 'SENT', now())""", (src_b, ni_b, ni_b, date_b))
    out = send_invoices(RUN, conn, **FAST)
    sent = {n for n, st in _ledger(conn).items() if st == "SENT"}
    assert nif_a not in sent and nif_b not in sent
    assert out["buckets"]["no_longer_due"] == 2
    details = invoice_buckets(conn, RUN)["details"]["no_longer_due"]
    assert {d["numero_facture"] for d in details} == {nif_a, nif_b}
    assert all("rompu" in d["raison"] and "annuler la facture dans l'ERP" in d["raison"] for d in details)
    assert sum(out["buckets"].values()) == rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", RUN)[0][0]


def test_the_next_run_stages_only_the_invoices_the_opco_does_not_hold(invoiced, tmp_path):
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    first = send_invoices(RUN, conn, **FAST)["buckets"]
    created = sum(sbx.factures(code)["created"] for code in opco_codes())
    run2 = "scheduled__next"
    extract(run2, invoiced["sources"], conn)
    staged = stage_invoices(run2, invoiced["sources"], conn)
    assert staged["already_sent"] == first["transmitted"]
    assert staged["staged"] == sum(first.values()) - first["transmitted"]
    summary = run_quality_gate(run2, conn, reports_dir=tmp_path / "reports2")
    assert summary["invoices"]["checked"] == staged["staged"]
    assert (tmp_path / "reports2" / "factures_a_corriger.csv").exists()
    second = send_invoices(run2, conn, **FAST)["buckets"]
    assert sum(second.values()) == staged["staged"] and second["transmitted"] == 0, second
    assert second["to_fix"] == first["to_fix"] and second["not_transmissible"] == first["not_transmissible"]
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == created

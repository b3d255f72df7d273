"""Invoices (issue 12, point 4) against the seeded ERPs, the real sandbox and a real PostgreSQL:
``POST /v1/factures`` exactly once per invoice (intent first, a rerun sends nothing), a lost answer
settled by reading back (``/v2/factures/etats``) or by the identical resend an OPCO without that
route answers 200, 429s and 5xx under load, never two invoices for one échéance, and every invoice
of the run in exactly one bucket — the OPCO without the invoice route named per invoice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

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


def _certificats(conn: str, run: str = RUN) -> list[tuple]:
    return rows(conn, """SELECT numero_interne, payload -> 'echeance' ->> 'numero', payload ->> 'typeCertificat', status
                         FROM transmission WHERE operation = 'CERTIFICAT' AND run_id = %s""", run)


def test_afdas_invoices_leave_after_their_certificat_de_realisation(invoiced):
    """AFDAS (the sandbox as configured for the demo) refuses an invoice whose échéance has no
    certificat de réalisation: each leaves after its certificat — Final for the schedule's last
    échéance, Intermediaire before — sent once, never again on a rerun."""
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    out = send_invoices(RUN, conn, **FAST)
    held = sbx.factures("afdas")["factures"]
    assert len(held) > 5, out["batches"]
    got = {(c["numeroInterneDossier"], c["echeance"]): c["typeCertificat"] for c in sbx.certificats("afdas")}
    last = {(n, e): bool(d) for n, e, d in rows(conn, """SELECT numero_interne, echeance_numero, echeance_derniere
                                                      FROM staged_facture WHERE run_id = %s""", RUN)}
    for f in held:
        key = (f["numeroInterneDossier"], f["echeance"])
        assert got[key] == ("Final" if last[key] else "Intermediaire"), (f, got.get(key))
    assert "Intermediaire" in got.values()
    # the ledger holds each certificat once, SENT; no other OPCO received one; nothing refused
    ledger = _certificats(conn)
    assert sorted((n, int(e)) for n, e, _, st in ledger if st == "SENT") == sorted(got) and len(got) == len(held)
    assert all(not sbx.certificats(code) for code in opco_codes() if code != "afdas")
    assert out["buckets"]["waiting_certificat"] == 0 and out["buckets"]["refused"] == 0, out["buckets"]
    follow = rows(conn, "SELECT count(*) FROM transmission WHERE operation = 'CERTIFICAT' AND status = 'SENT'")[0][0]
    send_invoices(RUN, conn, **FAST)
    assert len(sbx.certificats("afdas")) == len(got) and len(_certificats(conn)) == len(ledger) == follow


def test_a_refused_certificat_holds_its_invoice_with_the_opcos_reason(invoiced):
    """The ERP's schedule says the wrong last échéance (the OPCO refuses the certificat's type), or
    does not say (no type can be chosen): the invoice waits, in its own bucket, with why; the ERP
    corrected, the next run sends the certificat and then the invoice."""
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    picked = rows(conn, """SELECT f.source_id, f.ligne, f.numero_facture, f.echeance_derniere FROM staged_facture f
                           JOIN facture_verdict v USING (run_id, source_id, ligne)
                           JOIN opco_dossier od ON od.source_id = f.source_id AND od.numero_interne = f.numero_interne
                           WHERE f.run_id = %s AND v.verdict = 'TRANSMIT' AND od.opco_code = 'afdas'
                             AND od.etat = 'ENGAGE' AND f.echeance_derniere IS NOT NULL
                           ORDER BY f.numero_facture LIMIT 2""", RUN)
    (src_a, ligne_a, nif_a, last_a), (src_b, ligne_b, nif_b, last_b) = picked
    with connection(conn) as c, c.cursor() as cur:
        cur.execute("UPDATE staged_facture SET echeance_derniere = NOT echeance_derniere WHERE run_id = %s "
                    "AND source_id = %s AND ligne = %s", (RUN, src_a, ligne_a))
        cur.execute("UPDATE staged_facture SET echeance_derniere = NULL WHERE run_id = %s "
                    "AND source_id = %s AND ligne = %s", (RUN, src_b, ligne_b))
    out = send_invoices(RUN, conn, **FAST)
    assert out["buckets"]["waiting_certificat"] == 2, out["buckets"]
    assert sum(out["buckets"].values()) == rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s",
                                                RUN)[0][0]
    held = {f["numeroInterneFacture"] for f in sbx.factures("afdas")["factures"]}
    assert nif_a not in held and nif_b not in held
    why = {d["numero_facture"]: d["raison"] for d in invoice_buckets(conn, RUN)["details"]["waiting_certificat"]}
    assert "certificat refusé par l'OPCO" in why[nif_a] and "demande un certificat" in why[nif_a], why
    assert "echeance_derniere" in why[nif_b], why
    # a rerun of the same run sends neither again (refused as is; no type)
    certs = len(sbx.certificats("afdas"))
    assert send_invoices(RUN, conn, **FAST)["buckets"]["waiting_certificat"] == 2
    assert len(sbx.certificats("afdas")) == certs
    # the ERP corrected: the next run's certificats leave, then the invoices
    run2 = "manual__certificat"
    with connection(conn) as c, c.cursor() as cur:
        cur.execute("""INSERT INTO staged_facture (run_id, source_id, ligne, numero_facture, numero_interne,
                           echeance_numero, date_facture, montant, facture_siret, cfa_siret, site_code, echeance_date,
                           echeance_montant, echeance_fin, echeance_derniere)
                       SELECT %s, f.source_id, f.ligne, f.numero_facture, f.numero_interne, f.echeance_numero,
                              f.date_facture, f.montant, f.facture_siret, f.cfa_siret, f.site_code, f.echeance_date,
                              f.echeance_montant, f.echeance_fin, CASE WHEN f.ligne = %s THEN %s ELSE %s END
                       FROM staged_facture f WHERE f.run_id = %s AND (f.source_id, f.ligne) IN ((%s, %s), (%s, %s))""",
                    (run2, ligne_a, last_a, last_b, RUN, src_a, ligne_a, src_b, ligne_b))
        cur.execute("""INSERT INTO facture_verdict (run_id, source_id, ligne, verdict, rule_codes)
                       SELECT %s, source_id, ligne, 'TRANSMIT', '{}' FROM staged_facture WHERE run_id = %s""",
                    (run2, run2))
    again = send_invoices(run2, conn, **FAST)
    assert again["buckets"]["transmitted"] == 2, (again["buckets"], invoice_buckets(conn, run2)["details"])
    held = {f["numeroInterneFacture"] for f in sbx.factures("afdas")["factures"]}
    assert {nif_a, nif_b} <= held


def test_resending_an_invoice_needs_a_reason_and_creates_nothing_twice(invoiced, tmp_path):
    """``resend_factures``: an invoice the OPCO holds is frozen and sent again, forced, with its
    reason in the ledger; the OPCO answers the identical invoice 200 — nothing is created twice.
    An invoice number no ERP returns is a clear error before anything is frozen."""
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    send_invoices(RUN, conn, **FAST)
    nif, opco = rows(conn, """SELECT payload ->> 'numeroInterneFacture', opco_code FROM transmission
                              WHERE operation = 'FACTURE' AND status = 'SENT' AND opco_code = 'constructys'
                              ORDER BY id LIMIT 1""")[0]
    created, same = sbx.factures(opco)["created"], sbx.factures(opco)["same_content"]
    run2 = "manual__resend_facture"
    extract(run2, invoiced["sources"], conn)
    with pytest.raises(ValueError, match="NOPE-1"):
        stage_invoices(run2, invoiced["sources"], conn, resend=["NOPE-1"])
    assert rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", run2)[0][0] == 0
    staged = stage_invoices(run2, invoiced["sources"], conn, resend=[nif])
    assert rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s AND numero_facture = %s",
                run2, nif)[0][0] == 1, staged
    run_quality_gate(run2, conn, reports_dir=tmp_path / "reports2")
    with pytest.raises(ValueError, match="reason"):
        send_invoices(run2, conn, force=[{"numero_facture": nif, "reason": " "}], **FAST)
    out = send_invoices(run2, conn, force=[{"numero_facture": nif, "reason": "OPCO : facture perdue", "by": "alice"}],
                        **FAST)
    forced = rows(conn, """SELECT status, forced, force_reason FROM transmission WHERE operation = 'FACTURE'
                           AND run_id = %s AND payload ->> 'numeroInterneFacture' = %s""", run2, nif)
    assert forced == [("SENT", True, "OPCO : facture perdue (par alice)")]
    assert sbx.factures(opco)["created"] == created and sbx.factures(opco)["same_content"] == same + 1
    # only the forced one: the others are still where they were
    assert out["buckets"]["transmitted"] == 1, out["buckets"]


KILLABLE = textwrap.dedent("""
    from cfa_opco.pipeline.invoicing import send_invoices
    send_invoices({run!r}, {connector!r}, max_workers=4)
""")


def test_a_worker_killed_mid_invoice_batch_loses_and_doubles_nothing(invoiced):
    """The invoices' task SIGKILLed in the middle of its batches (intents committed, answers
    lost): its retry settles every intent in doubt by reading back (or by the identical resend
    an OPCO answers 200) — no invoice created twice, none lost, every one in one bucket."""
    conn, sbx = invoiced["connector"], invoiced["sandbox"]
    sbx.set_rate_limit(10)            # slow enough to kill it in the middle of a key's batch
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE.format(run=RUN, connector=conn)], env=os.environ.copy())
    to_send = None
    deadline = time.monotonic() + 120
    in_doubt = "SELECT count(*) FROM transmission WHERE operation = 'FACTURE' AND status = 'PENDING'"
    while time.monotonic() < deadline and proc.poll() is None:
        if to_send is None:
            got = rows(conn, "SELECT count(*) FROM facture_plan WHERE run_id = %s AND decision = 'SEND'", RUN)
            to_send = got[0][0] or None
        if (to_send and sum(sbx.factures(code)["created"] for code in opco_codes()) >= to_send // 4
                and rows(conn, in_doubt)[0][0] > 5):
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = sum(sbx.factures(code)["created"] for code in opco_codes())
    assert to_send and 0 < before < to_send, "the kill must land mid-batch"
    pending = rows(conn, in_doubt)[0][0]
    sbx.set_rate_limit(0)
    out = send_invoices(RUN, conn, **FAST)              # the task's retry
    b = out["buckets"]
    staged = rows(conn, "SELECT count(*) FROM staged_facture WHERE run_id = %s", RUN)[0][0]
    assert sum(b.values()) == staged and b["in_doubt"] == b["not_processed"] == 0, b
    held = [f for fs in _held(sbx).values() for f in fs]
    sent = {n for n, st in _ledger(conn).items() if st == "SENT"}
    assert sorted(f["numeroInterneFacture"] for f in held) == sorted(sent) and len(sent) == b["transmitted"]
    assert sum(sbx.factures(code)["created"] for code in opco_codes()) == len(held)     # none created twice
    per_echeance = [(f["numeroInterneDossier"], f["echeance"]) for f in held]
    assert len(per_echeance) == len(set(per_echeance))
    certs = [(c["numeroInterneDossier"], c["echeance"]) for c in sbx.certificats("afdas")]
    assert len(certs) == len(set(certs))
    assert pending > 0, "the kill left intents in doubt: the retry had to settle them"

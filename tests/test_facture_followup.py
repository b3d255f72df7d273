"""Invoice follow-up (issue 12, point 5) against the real sandbox and a real PostgreSQL: states
read by window where the OPCO serves the route, paid / paid in part / rejected with the OPCO's
words, kept with their history, written back to the ERP; elsewhere paid only when the OPCO
reports the dossier SOLDE."""
from __future__ import annotations

import json

import pytest

from cfa_opco.db.connect import connection
from cfa_opco.erp.generator import minimal_pdf
from cfa_opco.facture_followup import sync_factures
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.sandbox.config import load_config, opco_settings
from cfa_opco.sandbox.invoicing import issue_for
from cfa_opco.sandbox.seed import sample_dossier
from cfa_opco.writeback import ErpWriteback
from tests.helpers import SIREN, rows

SHARES = {"rejet": 0.3, "partiel": 0.3, "part_reglee": 0.75}


def _with_fate(opco: str, kind: str, prefix: str, montant: float) -> str:
    st = opco_settings(load_config(None, {"opcos": {opco: {"factures": SHARES}}}), opco)
    return next(n for n in (f"{prefix}-{i}" for i in range(1000)) if issue_for(st, opco, n, montant).kind == kind)


def _ledger_sent(connector: str, conn_id: str, opco: str, source: str, body: dict) -> None:
    """What the outbox records once an invoice is sent (the operation FACTURE, status SENT)."""
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                       conn_id, content_hash, payload, status, sent_at, completed_at)
                       VALUES ('r1', %s, %s, 'FACTURE', %s, %s, %s, md5(%s), %s::jsonb, 'SENT', now(), now())""",
                    (source, body["numeroInterneDossier"], opco, SIREN, conn_id, json.dumps(body), json.dumps(body)))


def _engage(hook: OpcoHook, opco: str, numero: str) -> list:
    assert hook.send_dossier(sample_dossier(opco, numero_interne=numero)).ok
    assert hook.attach_document(numero, "CONVENTION_FORMATION", "convention.pdf", minimal_pdf("convention")).ok


def test_paid_partly_paid_rejected_stored_with_history_and_written_back(sandbox, opco_conn, connector_dsn,
                                                                         seeded_erp):
    sandbox.patch_settings(delays={"instruction": 0, "decision": 0, "reglement": 30},
                           opcos={"atlas": {"factures": SHARES}})
    conn_id = opco_conn("atlas")
    numero = rows(seeded_erp["erp_main"], "SELECT numero_interne FROM contrat ORDER BY id LIMIT 1")[0][0]
    contrat_id = rows(seeded_erp["erp_main"], "SELECT id FROM contrat WHERE numero_interne = %s", numero)[0][0]
    sent = {}
    with OpcoHook(conn_id) as hook:
        _engage(hook, "atlas", numero)
        ech = hook.get_echeances(numero)
        for e, kind in zip(ech, ("OK", "PARTIEL", "REJET")):
            nif = _with_fate("atlas", kind, f"FFU-{e.numero}", e.montant)
            body = {"numeroInterneFacture": nif, "referenceFactureCFA": nif, "numeroInterneDossier": numero,
                    "echeance": {"numero": e.numero}, "montant": e.montant, "dateFacture": e.date_echeance}
            assert hook.send_facture(body).ok
            _ledger_sent(connector_dsn, conn_id, "atlas", "erp_main", body)
            sent[kind] = (nif, e)
    with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
        for nif, e in sent.values():
            cur.execute("INSERT INTO facture (numero_facture, contrat_id, echeance_numero, date_facture, montant) "
                        "VALUES (%s, %s, %s, %s, %s)", (nif, contrat_id, e.numero, e.date_echeance, e.montant))
    wb = ErpWriteback(targets={"erp_main": seeded_erp["erp_main"], "erp_est": seeded_erp["erp_est"]})

    first = sync_factures(connector_dsn, writeback=wb.factures, run_id="r1", lag_seconds=0)
    assert first["errors"] == {} and first["by_etat"] == {"EN_COURS": 3}
    sandbox.advance_clock(60)
    out = sync_factures(connector_dsn, writeback=wb.factures, run_id="r2", lag_seconds=0)
    assert out["errors"] == {} and out["changes"] == 3 and out["unknown"] == 0
    assert [p["numero_facture"] for p in out["paid"]] == [sent["OK"][0]]
    (part,) = out["partly_paid"]
    assert part["numero_facture"] == sent["PARTIEL"][0] and part["montant_regle"] == round(sent["PARTIEL"][1].montant * 0.75, 2)
    assert "partiellement" in part["commentaire"]
    (rej,) = out["rejected"]
    assert rej["numero_facture"] == sent["REJET"][0] and rej["commentaire"].startswith("rejetée")

    got = {r[0]: r[1:] for r in rows(connector_dsn, """SELECT numero_facture, etat_norm, montant_regle::float8,
                                     reference_virement IS NOT NULL, motifs IS NOT NULL FROM opco_facture""")}
    assert got[sent["OK"][0]] == ("REGLE", sent["OK"][1].montant, True, False)
    assert got[sent["REJET"][0]][0] == "REJETE" and got[sent["REJET"][0]][3] is True
    assert rows(connector_dsn, "SELECT count(*) FROM opco_facture_history")[0][0] == 6
    # the ERP sees the payments, the amount actually paid and the OPCO's comment
    erp = {r[0]: r[1:] for r in rows(seeded_erp["erp_main"], """SELECT numero_facture, statut, montant_regle::float8,
                                     reference_virement IS NOT NULL, commentaire_opco FROM facture
                                     WHERE numero_facture = ANY(%s)""", [v[0] for v in sent.values()])}
    assert erp[sent["OK"][0]][:3] == ("REGLEE", sent["OK"][1].montant, True)
    assert erp[sent["PARTIEL"][0]][1] == round(sent["PARTIEL"][1].montant * 0.75, 2)
    assert erp[sent["REJET"][0]][0] == "REJETEE" and erp[sent["REJET"][0]][3].startswith("rejetée")
    # the rejected invoice released its échéance: another invoice for it may now be recorded
    rej_nif, rej_e = sent["REJET"]
    assert rows(connector_dsn, """SELECT released_at IS NOT NULL FROM transmission
                                  WHERE payload->>'numeroInterneFacture' = %s""", rej_nif) == [(True,)]
    _ledger_sent(connector_dsn, conn_id, "atlas", "erp_main",
                 {"numeroInterneFacture": rej_nif + "-BIS", "numeroInterneDossier": numero,
                  "echeance": {"numero": rej_e.numero}, "montant": rej_e.montant})
    import psycopg2
    with pytest.raises(psycopg2.errors.UniqueViolation):   # the paid one's échéance is not free
        _ledger_sent(connector_dsn, conn_id, "atlas", "erp_main",
                     {"numeroInterneFacture": "OTHER", "numeroInterneDossier": numero,
                      "echeance": {"numero": sent["OK"][1].numero}, "montant": 1.0})
    # all final: nothing more to read
    assert sync_factures(connector_dsn, writeback=wb.factures)["connections"] == 1   # the new one, open


def test_without_the_invoice_route_paid_when_the_dossier_is_solde(sandbox, opco_conn, connector_dsn):
    conn_id = opco_conn("constructys")
    body = {"numeroInterneFacture": "F-CX-1", "numeroInterneDossier": "CX-1", "echeance": {"numero": 1},
            "montant": 100.0}
    _ledger_sent(connector_dsn, conn_id, "constructys", "erp_main", body)
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, etat)
                       VALUES ('erp_main', 'CX-1', 'constructys', %s, %s, 'ENGAGE')""", (SIREN, conn_id))
    out = sync_factures(connector_dsn)
    assert out["changes"] == 0 and out["not_readable"] == {conn_id: 1} and out["requests"] == 0
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE opco_dossier SET etat = 'SOLDE', etat_at = now() WHERE numero_interne = 'CX-1'")
    out = sync_factures(connector_dsn)
    assert out["by_etat"] == {"REGLE": 1} and out["not_readable"] == {}
    (r,) = rows(connector_dsn, "SELECT etat_norm, via, montant_regle, commentaire FROM opco_facture")
    assert r[:3] == ("REGLE", "dossier_solde", None) and "Constructys" in r[3]


def test_an_unreadable_answer_is_an_error_of_that_key_only(sandbox, opco_conn, connector_dsn):
    sandbox.patch_settings(delays={"instruction": 0, "decision": 0, "reglement": 0})
    atlas, akto = opco_conn("atlas"), opco_conn("akto")
    for conn_id, opco in ((atlas, "atlas"), (akto, "akto")):
        with OpcoHook(conn_id) as hook:
            _engage(hook, opco, f"U-{opco}")
            e = hook.get_echeances(f"U-{opco}")[0]
            body = {"numeroInterneFacture": f"F-U-{opco}", "referenceFactureCFA": "x", "numeroInterneDossier": f"U-{opco}",
                    "echeance": {"numero": e.numero}, "montant": e.montant, "dateFacture": e.date_echeance}
            assert hook.send_facture(body).ok
            _ledger_sent(connector_dsn, conn_id, opco, "erp_main", body)
    sandbox.set_profile("atlas", "html_gateway")
    sandbox.patch_settings(profile_options={"html_200_share": 1.0, "seed": 1})
    out = sync_factures(connector_dsn, lag_seconds=0)
    assert list(out["errors"]) == [atlas] and "OPCO Atlas" in out["errors"][atlas]
    assert [p["numero_facture"] for p in out["paid"]] == ["F-U-akto"]
    assert rows(connector_dsn, "SELECT count(*) FROM facture_watermark WHERE conn_id = %s", atlas)[0][0] == 0

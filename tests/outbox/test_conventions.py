"""The convention de formation (issue 12, point 1) against the seeded ERPs, the real sandbox and a
real PostgreSQL: its costs come with the dossier's mapping, the gate reports each seeded defect in
French without holding the dossier, and ``POST /v1/conventions`` leaves exactly once per
convention once the OPCO holds the contract — never for a convention the gate reported."""
from __future__ import annotations

import psycopg2

from cfa_opco.opcos import opco_codes
from cfa_opco.outbox.operations.convention import build_convention
from cfa_opco.outbox.status import Status
from tests.helpers import rows
from tests.outbox.common import RUN, transmit_all

RULES = ("CONVENTION_COUT_NEGATIF", "CONVENTION_INCOMPLETE", "CONVENTION_COUTS_INCOHERENTS",
         "CONVENTION_DATES_HORS_CONTRAT")


def _received(sandbox) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for code in opco_codes():
        out.update(sandbox.conventions(code))
    return out


def test_each_seeded_convention_defect_is_reported_in_french_and_holds_only_the_convention(staged, seeded_erp):
    truth = set(rows(seeded_erp["erp_main"], "SELECT source_id, numero_interne, rule_code FROM seed_convention_truth"))
    assert {r for _, _, r in truth} == set(RULES), truth       # every kind seeded, in both ERPs
    assert {s for s, _, _ in truth} == {"erp_main", "erp_est"}
    found = rows(staged["connector"], """SELECT source_id, numero_interne, rule_code, severity, message
                                         FROM quality_anomaly WHERE run_id = %s AND rule_code LIKE 'CONVENTION%%'""",
                 RUN)
    assert {(s, n, r) for s, n, r, _, _ in found} == truth     # recall and precision: 100 %
    assert all(sev == "warning" for *_, sev, _ in found)
    messages = {r: m for _, _, r, _, m in found}
    assert "montant négatif" in messages["CONVENTION_COUT_NEGATIF"]
    assert "ne correspond pas à la somme de ses montants annuels" in messages["CONVENTION_COUTS_INCOHERENTS"]
    assert "hors de la période du contrat" in messages["CONVENTION_DATES_HORS_CONTRAT"]
    assert "coût pédagogique manquant" in messages["CONVENTION_INCOMPLETE"]
    # the dossier itself is not quarantined for its convention
    verdicts = dict(((s, n), v) for s, n, v in rows(
        staged["connector"], "SELECT source_id, numero_interne, verdict FROM quality_verdict WHERE run_id = %s", RUN))
    assert {verdicts[(s, n)] for s, n, _ in truth} == {"TRANSMIT"}


def test_conventions_leave_once_after_their_contract_and_reported_ones_never(staged, seeded_erp):
    out = transmit_all(staged)
    sent = {n for (n,) in rows(staged["connector"], """SELECT numero_interne FROM transmission WHERE run_id = %s
                                                     AND operation = 'DOSSIER' AND status = 'SENT'""", RUN)}
    with_convention = {n for (n,) in rows(staged["connector"], """SELECT numero_interne FROM staged_dossier
                                                                WHERE run_id = %s AND nature = 'CONTRAT'
                                                                AND convention_cout_annee1 IS NOT NULL""", RUN)}
    held = {n for _, n, _ in rows(seeded_erp["erp_main"], "SELECT * FROM seed_convention_truth")}
    expected = (with_convention & sent) - held
    assert len(expected) > 500
    received = _received(staged["sandbox"])
    assert set(received) == expected
    assert {v["count"] for v in received.values()} == {1}
    blocked = dict(rows(staged["connector"], """SELECT numero_interne, message FROM transmission WHERE run_id = %s
                                               AND operation = 'CONVENTION' AND status = 'BLOCKED'""", RUN))
    assert set(blocked) == held & sent
    assert all(m.startswith("Convention de formation non transmise : ") for m in blocked.values())
    totals = {k: sum(b[k] for b in out["batches"].values())
              for k in ("conventions_sent", "conventions_blocked", "conventions_rejected", "conventions_in_doubt")}
    assert totals == {"conventions_sent": len(expected), "conventions_blocked": len(held & sent),
                      "conventions_rejected": 0, "conventions_in_doubt": 0}
    # what the OPCO received is what the ERP holds
    numero = sorted(expected)[0]
    row = dict(zip(*_staged_row(staged["connector"], numero)))
    assert received[numero]["last"] == build_convention(row)
    assert received[numero]["last"]["couts"]["coutPedagogique"] == float(row["convention_cout_pedagogique"])
    # a rerun sends nothing again
    again = transmit_all(staged)
    assert sum(b["conventions_sent"] for b in again["batches"].values()) == 0
    assert {v["count"] for v in _received(staged["sandbox"]).values()} == {1}


def test_a_corrected_convention_leaves_and_a_lost_answer_is_sent_again(staged):
    transmit_all(staged)
    conn = staged["connector"]
    numero, tid = rows(conn, """SELECT numero_interne, id FROM transmission WHERE run_id = %s
                                AND operation = 'CONVENTION' AND status = 'BLOCKED' ORDER BY 1 LIMIT 1""", RUN)[0]
    # the gate no longer reports it (the quality lead turned the rule off, or the ERP fixed it):
    # the held intent is reopened and sent, once
    with psycopg2.connect(conn) as c, c.cursor() as cur:
        cur.execute("DELETE FROM quality_anomaly WHERE run_id = %s AND numero_interne = %s "
                    "AND rule_code LIKE 'CONVENTION%%'", (RUN, numero))
        # and one sent convention's answer was lost: its intent is in doubt
        cur.execute("""UPDATE transmission SET status = 'PENDING' WHERE id = (SELECT id FROM transmission
                       WHERE run_id = %s AND operation = 'CONVENTION' AND status = 'SENT' ORDER BY id LIMIT 1)
                       RETURNING numero_interne""", (RUN,))
        lost = cur.fetchone()[0]
    out = transmit_all(staged)
    assert sum(b["conventions_sent"] for b in out["batches"].values()) == 2
    status = dict(rows(conn, """SELECT numero_interne, status FROM transmission WHERE operation = 'CONVENTION'
                                AND numero_interne IN (%s, %s)""", numero, lost))
    assert status == {numero: Status.SENT, lost: Status.SENT}
    assert rows(conn, "SELECT id FROM transmission WHERE operation = 'CONVENTION' AND numero_interne = %s",
                numero) == [(tid,)]
    received = _received(staged["sandbox"])
    assert received[numero]["count"] == 1
    assert received[lost]["count"] == 2      # no read route: a lost answer is sent again


def _staged_row(dsn, numero):
    with psycopg2.connect(dsn) as c, c.cursor() as cur:
        cur.execute("SELECT * FROM staged_dossier WHERE run_id = %s AND numero_interne = %s", (RUN, numero))
        return [d[0] for d in cur.description], cur.fetchone()


def test_a_mapping_without_convention_columns_still_extracts(sources, connector_dsn):
    """The convention columns are optional in a source's mapping: an ERP that holds no costs
    sends no convention (its signed PDF, a pièce, covers the OPCO's need)."""
    import dataclasses
    import re

    from cfa_opco.extraction import extract

    src = sources[0]
    stripped = re.sub(r"^\s*cv\.[^\n]*AS convention_\w+,\n", "", src.dossiers_sql, flags=re.M)
    assert stripped != src.dossiers_sql and "AS convention_" not in stripped
    extract("run-noconv", [dataclasses.replace(src, dossiers_sql=stripped)], connector_dsn)
    n, with_cv = rows(connector_dsn, """SELECT count(*), count(convention_cout_pedagogique) FROM staged_dossier
                                        WHERE run_id = 'run-noconv'""")[0]
    assert n > 1000 and with_cv == 0

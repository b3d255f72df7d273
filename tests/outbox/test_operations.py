"""The operation model against the real sandbox and a real PostgreSQL: documents leave from the
frozen batch (never from the ERP), avenants leave as soon as their base contract is recorded, a
rupture after sending is declared once, and a new operation is one declaration the same runner
drives exactly once (the worked example of docs/outbox.md)."""
from __future__ import annotations

import shutil

from cfa_opco.db.connect import connection
from cfa_opco.extraction import extract
from cfa_opco.outbox import BatchRunner, OnceFlow, plan, transmit_batch
from cfa_opco.outbox.operations import Attempt, Job, Operation, Prepared
from cfa_opco.outbox.operations.base import attempt_from_request, json_prepared
from cfa_opco.outbox.status import Status
from cfa_opco.providers.opco.capabilities import Capabilities
from cfa_opco.quality.gate import run_quality_gate
from tests.helpers import rows
from tests.outbox.common import RUN, creations, transmit_all


def test_documents_leave_from_the_batch_even_when_the_erp_files_are_gone(staged, sources, tmp_path):
    staged_count = rows(staged["connector"], "SELECT count(*) FROM staged_piece WHERE run_id = %s "
                                             "AND content IS NOT NULL", RUN)[0][0]
    assert staged_count > 100
    # the ERP's document folders disappear after extraction: nothing a send needs is read there
    moved = {}
    for s in sources:
        if s.files_root and s.files_root.exists():
            moved[s.files_root] = tmp_path / f"away-{s.id}"
            shutil.move(s.files_root, moved[s.files_root])
    try:
        out = transmit_all(staged)
        again = transmit_all(staged)
    finally:
        for home, away in moved.items():
            shutil.move(away, home)
    assert moved
    sent_pieces = sum(b["pieces_sent"] for b in out["batches"].values())
    assert sent_pieces > 100
    assert not any("illisible" in e["error"] for b in out["batches"].values() for e in b["errors"])
    # each document once, with the hash staged at extraction; the rerun sends none again
    assert sum(b["pieces_sent"] for b in again["batches"].values()) == 0
    dup = rows(staged["connector"], """SELECT count(*) FROM (SELECT source_id, numero_interne, content_hash
                                       FROM transmission WHERE operation = 'PIECE' AND status = 'SENT'
                                       GROUP BY 1, 2, 3 HAVING count(*) > 1) d""")[0][0]
    assert dup == 0
    unmatched = rows(staged["connector"], """
        SELECT count(*) FROM transmission t WHERE t.operation = 'PIECE' AND t.status = 'SENT'
          AND NOT EXISTS (SELECT 1 FROM staged_piece p WHERE p.run_id = t.run_id AND p.source_id = t.source_id
                          AND p.numero_interne = t.numero_interne AND p.sha256 = t.content_hash)""")[0][0]
    assert unmatched == 0
    assert rows(staged["connector"], "SELECT count(*) FROM transmission WHERE operation = 'PIECE' "
                                     "AND status = 'SENT'")[0][0] == sent_pieces


def test_avenants_leave_as_soon_as_their_base_contract_is_recorded(staged):
    planned = plan(RUN, staged["connector"])
    # the batch holding the most avenants whose base contract is in the same batch
    per_conn = dict(rows(staged["connector"], """
        SELECT a.conn_id, count(*) FROM transmission_plan a
        JOIN staged_dossier s USING (run_id, source_id, numero_interne)
        JOIN transmission_plan b ON b.run_id = a.run_id AND b.source_id = a.source_id
         AND b.numero_interne = s.base_numero_interne AND b.conn_id = a.conn_id AND b.decision = 'ROUTED'
        WHERE a.run_id = %s AND a.decision = 'ROUTED' AND s.nature = 'AVENANT'
          AND s.contrat_numero_precedent IS NULL
        GROUP BY 1 ORDER BY 2 DESC""", RUN))
    conn_id, n = next(iter(per_conn.items()))
    assert n >= 3 and conn_id in {b["conn_id"] for bs in planned["batches"].values() for b in bs}
    r = transmit_batch(RUN, staged["connector"], conn_id, max_workers=4, retry_base=0.01, chunk_size=20)
    assert r["in_doubt"] == 0
    # every avenant of a base sent in this batch left in this batch, with the base's numéro DECA
    got = rows(staged["connector"], """
        SELECT s.numero_interne, t.status, t.payload::jsonb, od.numero_deca, t.id, tb.id
        FROM staged_dossier s
        JOIN transmission t ON t.source_id = s.source_id AND t.numero_interne = s.numero_interne
         AND t.operation = 'DOSSIER' AND t.run_id = s.run_id
        JOIN opco_dossier od ON od.source_id = s.source_id AND od.numero_interne = s.base_numero_interne
        JOIN transmission tb ON tb.source_id = s.source_id AND tb.numero_interne = s.base_numero_interne
         AND tb.operation = 'DOSSIER' AND tb.status = 'SENT'
        WHERE s.run_id = %s AND s.nature = 'AVENANT' AND t.conn_id = %s AND s.contrat_numero_precedent IS NULL""",
                RUN, conn_id)
    assert len(got) >= 3
    for numero, status, payload, deca, tid, base_tid in got:
        assert status == Status.SENT, numero
        assert deca and deca in str(payload), numero
        assert tid > base_tid
    # ... and did not wait for the whole batch: some avenant's intent precedes the last contract's
    last_contract = rows(staged["connector"], """
        SELECT max(t.id) FROM transmission t JOIN staged_dossier s ON s.run_id = t.run_id
         AND s.source_id = t.source_id AND s.numero_interne = t.numero_interne
        WHERE t.run_id = %s AND t.conn_id = %s AND t.operation = 'DOSSIER' AND s.nature <> 'AVENANT'""",
                         RUN, conn_id)[0][0]
    assert min(tid for *_, tid, _b in got) < last_contract


def test_a_rupture_after_sending_is_declared_once(staged, seeded_erp, tmp_path):
    transmit_all(staged)
    served = [c for c in rows(staged["connector"], "SELECT DISTINCT opco_code FROM opco_dossier")
              if Capabilities.for_opco(c[0]).serves("rupture_v2")]
    assert served
    (numero,) = rows(staged["connector"], """
        SELECT od.numero_interne FROM opco_dossier od WHERE od.source_id = 'erp_main'
          AND od.opco_code = ANY(%s) AND od.nature <> 'AVENANT' ORDER BY 1 LIMIT 1""", [c[0] for c in served])[0]
    with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
        cur.execute("""UPDATE contrat SET date_rupture = date_debut + 40, motif_rupture = 'Rupture conventionnelle'
                       WHERE numero_interne = %s RETURNING numero_interne""", (numero,))
        assert cur.fetchone()
    try:
        run = "manual__rupture"
        extract(run, staged["sources"], staged["connector"])
        run_quality_gate(run, staged["connector"], reports_dir=tmp_path / "reports")
        first = transmit_all(staged, run=run)
        second = transmit_all(staged, run=run)
    finally:
        with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
            cur.execute("UPDATE contrat SET date_rupture = NULL, motif_rupture = NULL WHERE numero_interne = %s",
                        (numero,))
    assert sum(b["ruptures_sent"] for b in first["batches"].values()) == 1
    assert sum(b["ruptures_sent"] for b in second["batches"].values()) == 0
    got = rows(staged["connector"], "SELECT status, payload::jsonb, http_status FROM transmission "
                                    "WHERE operation = 'RUPTURE' AND numero_interne = %s", numero)
    assert len(got) == 1 and got[0][0] == Status.SENT and got[0][1]["motif"] == "Rupture conventionnelle"
    assert max(creations(staged["sandbox"]).values()) == 1       # never a second dossier


# -- the worked example of docs/outbox.md: a new operation is one declaration ----------------
def _convention(row: dict, _context=None) -> Prepared:
    return json_prepared({
        "numeroInterneDossier": row["numero_interne"], "employeur": {"siret": row["employeur_siret"]},
        "dateDebut": str(row["formation_date_debut"]), "dateFin": str(row["formation_date_fin"]),
        "dureeFormation": int(row["formation_duree_heures"] or 1), "rncp": row["formation_rncp"],
        "couts": {"coutPedagogique": 6500.0}})


def _send_convention(hook, job: Job) -> Attempt:
    return attempt_from_request(lambda: hook.send_convention(job.prepared.payload))


CONVENTION = Operation(code="CONVENTION", label="convention de formation", routes=("conventions_v1",),
                       prepare=_convention, send=_send_convention, read_back=None,
                       counts={Status.SENT: "sent", Status.REJECTED: "rejected", Status.PENDING: "in_doubt"})


def test_a_new_operation_is_one_declaration_that_the_runner_sends_exactly_once(staged):
    transmit_all(staged, opcos={"atlas"})
    (conn_id,) = rows(staged["connector"], "SELECT conn_id FROM opco_dossier WHERE opco_code = 'atlas' "
                                           "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")[0]
    batch = [dict(zip(("source_id", "numero_interne", "opco_code", "cfa_siren", "employeur_siret",
                       "formation_date_debut", "formation_date_fin", "formation_duree_heures", "formation_rncp"), r),
                  forced=False)
             for r in rows(staged["connector"], """
                SELECT od.source_id, od.numero_interne, od.opco_code, od.cfa_siren, s.employeur_siret,
                       s.formation_date_debut, s.formation_date_fin, s.formation_duree_heures, s.formation_rncp
                FROM opco_dossier od JOIN staged_dossier s ON s.run_id = %s AND s.source_id = od.source_id
                 AND s.numero_interne = od.numero_interne
                WHERE od.conn_id = %s AND od.nature <> 'AVENANT' ORDER BY 2 LIMIT 25""", RUN, conn_id)]
    assert len(batch) == 25
    first = BatchRunner(RUN, staged["connector"], conn_id, max_workers=4, retry_base=0.01).run(
        OnceFlow(CONVENTION, batch))
    again = BatchRunner(RUN, staged["connector"], conn_id, max_workers=4, retry_base=0.01).run(
        OnceFlow(CONVENTION, batch))
    assert first["sent"] == 25 and first["in_doubt"] == 0
    assert again["sent"] == 0 and again["already_sent"] == 25
    # (the daily flow sent the real conventions of these contracts already: the example's own
    # payload is told apart by its fixed cost)
    assert rows(staged["connector"], "SELECT count(*), count(DISTINCT numero_interne) FROM transmission "
                                     "WHERE operation = 'CONVENTION' AND status = 'SENT' "
                                     "AND payload->'couts'->>'coutPedagogique' = '6500.0'")[0] == (25, 25)
    assert rows(staged["connector"], "SELECT count(*) FROM exchange_proof WHERE route LIKE '%%conventions%%'")[0][0] >= 25

"""Planning a run: route its transmissible dossiers once (OPCO from the IDCC, key from the
CFA's SIRET when the OPCO issued one for that establishment, else its SIREN) into
``transmission_plan`` with the key's scope, and list the batches its mapped tasks expand
over: one per connection (key), so a SIRET key and its company's SIREN key are two batches. A dossier that needs a person, or that no API takes, is recorded in the ledger
with the reason, so reports and proofs show it."""
from __future__ import annotations

import psycopg2.extras

from cfa_opco.db.connect import connect
from cfa_opco.dossier.model import COLUMN_NAMES
from cfa_opco.dossier.pieces import copy_staged_pieces
from cfa_opco.routing import NEEDS_HUMAN, NOT_SERVED, ROUTED, Router


def _quality_view_exists(cur) -> bool:
    cur.execute("SELECT to_regclass('dossier_to_transmit') IS NOT NULL")
    return cur.fetchone()[0]


def plan(run_id: str, connector: str, *, router=None, only_opco: str | None = None,
         only_site: str | None = None, force: list[dict] | None = None) -> dict:
    """Route the run's transmissible dossiers; return, per OPCO, its (OPCO, SIREN) batches.

    ``force``: [{"numero_interne", "reason", "by"}] — dossiers to send again even though the
    same content was already sent (a reason is required and kept in the ledger)."""
    router = router or Router()
    force = {f["numero_interne"]: f for f in (force or [])}
    for numero, f in force.items():
        if not (f.get("reason") or "").strip():
            raise ValueError(f"forcing {numero} needs a reason (kept in the ledger)")
    conn = connect(connector, application_name="cfa_opco.plan")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.plan:' || %s))", (run_id,))
            cur.execute("SELECT count(*) FROM transmission_plan WHERE run_id = %s", (run_id,))
            already = cur.fetchone()[0]
            if already == 0:
                _stage_forced(cur, run_id, list(force))
                if _quality_view_exists(cur):
                    cur.execute("SELECT count(*) FROM quality_run WHERE run_id = %s", (run_id,))
                    if cur.fetchone()[0] == 0:
                        raise RuntimeError(f"the quality gate has not run for {run_id}: nothing is "
                                           "transmitted before it has checked the batch")
                    eligible = """SELECT s.source_id, s.numero_interne, s.nature, s.employeur_idcc,
                                         s.cfa_siret, s.site_code
                                  FROM staged_dossier s JOIN dossier_to_transmit t
                                    ON t.run_id = s.run_id AND t.source_id = s.source_id
                                   AND t.numero_interne = s.numero_interne
                                  WHERE s.run_id = %(run)s
                                  UNION
                                  SELECT s.source_id, s.numero_interne, s.nature, s.employeur_idcc,
                                         s.cfa_siret, s.site_code
                                  FROM staged_dossier s WHERE s.run_id = %(run)s AND s.change_kind = 'FORCED'"""
                else:   # no quality gate installed: everything extracted is eligible
                    eligible = """SELECT source_id, numero_interne, nature, employeur_idcc, cfa_siret, site_code
                                  FROM staged_dossier WHERE run_id = %(run)s"""
                cur.execute(eligible, {"run": run_id})
                rows = cur.fetchall()
                records = []
                for source_id, numero, nature, idcc, siret, site in rows:
                    route = router.route(idcc, siret)
                    decision, reason = route.decision, route.reason
                    if decision == ROUTED and only_opco and route.opco_code != only_opco.lower():
                        decision, reason = "FILTERED", f"run restricted to OPCO {only_opco}"
                    if decision == ROUTED and only_site and site != only_site:
                        decision, reason = "FILTERED", f"run restricted to site {only_site}"
                    f = force.get(numero)
                    records.append((run_id, source_id, numero, nature, decision, route.opco_code,
                                    route.cfa_siren, route.conn_id, getattr(route, "key_scope", None), reason,
                                    f is not None,
                                    f"{f['reason']} (par {f.get('by') or 'opérateur'})" if f else None))
                psycopg2.extras.execute_values(cur, """
                    INSERT INTO transmission_plan (run_id, source_id, numero_interne, nature, decision,
                        opco_code, cfa_siren, conn_id, key_scope, reason, forced, force_reason) VALUES %s""",
                    records, page_size=1000)
                # a dossier that needs a person, or that no API takes, is recorded in the ledger
                # with the reason (once per content), so the reports and the proof show it
                cur.execute("""
                    INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code,
                        cfa_siren, content_hash, status, message)
                    SELECT p.run_id, p.source_id, p.numero_interne, 'DOSSIER', p.opco_code, p.cfa_siren,
                           s.content_hash, 'BLOCKED', p.reason
                    FROM transmission_plan p JOIN staged_dossier s USING (run_id, source_id, numero_interne)
                    WHERE p.run_id = %s AND p.decision IN (%s, %s)""", (run_id, NEEDS_HUMAN, NOT_SERVED))
            cur.execute("""SELECT decision, opco_code, cfa_siren, conn_id, key_scope, count(*) FROM transmission_plan
                           WHERE run_id = %s GROUP BY 1, 2, 3, 4, 5 ORDER BY 2, 3, 4""", (run_id,))
            groups = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    batches: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for decision, opco, siren, conn_id, scope, n in groups:
        counts[decision] = counts.get(decision, 0) + n
        if decision == ROUTED:
            batches.setdefault(opco, []).append({"conn_id": conn_id, "opco": opco, "siren": siren,
                                                 "key_scope": scope, "count": n})
    return {"batches": batches, "routed": counts.get(ROUTED, 0),
            "needs_human": counts.get(NEEDS_HUMAN, 0), "not_served": counts.get(NOT_SERVED, 0),
            "filtered": counts.get("FILTERED", 0), "replanned": already > 0}


def planned_batches(run_id: str, connector: str, opco_code: str) -> list[dict]:
    """The batches of one OPCO in a planned run, one per connection (key: a SIRET's or a
    SIREN's), what its mapped task expands over, largest first: the longest tasks start
    first, the run ends sooner."""
    conn = connect(connector, application_name="cfa_opco.plan")
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT conn_id, min(cfa_siren), min(key_scope), count(*) FROM transmission_plan
                           WHERE run_id = %s AND opco_code = %s AND decision = 'ROUTED'
                           GROUP BY 1 ORDER BY 4 DESC, 1""", (run_id, opco_code))
            return [{"conn_id": c, "opco": opco_code, "siren": s, "key_scope": k, "count": n}
                    for c, s, k, n in cur.fetchall()]
    finally:
        conn.close()


def _stage_forced(cur, run_id: str, numeros: list[str]) -> None:
    """A forced dossier unchanged since it was sent is not in the run's batch: bring in its
    latest extracted content (it went through the quality gate when it was first sent)."""
    if not numeros:
        return
    cols = ", ".join(COLUMN_NAMES)
    cur.execute(f"""
        INSERT INTO staged_dossier (run_id, content_hash, change_kind, {cols})
        SELECT DISTINCT ON (s.source_id, s.numero_interne) %(run)s, s.content_hash, 'FORCED', {cols}
        FROM staged_dossier s
        WHERE s.numero_interne = ANY(%(numeros)s) AND s.run_id <> %(run)s
          AND NOT EXISTS (SELECT 1 FROM staged_dossier x WHERE x.run_id = %(run)s
                          AND x.source_id = s.source_id AND x.numero_interne = s.numero_interne)
        ORDER BY s.source_id, s.numero_interne,
                 (SELECT started_at FROM extraction_run e WHERE e.run_id = s.run_id) DESC""",
                {"run": run_id, "numeros": numeros})
    cur.execute("UPDATE staged_dossier SET change_kind = 'FORCED' WHERE run_id = %s AND numero_interne = ANY(%s)",
                (run_id, numeros))
    cur.execute("SELECT array_agg(numero_interne) FROM staged_dossier WHERE run_id = %s AND numero_interne = ANY(%s)",
                (run_id, numeros))
    found = set(cur.fetchone()[0] or [])
    missing = sorted(set(numeros) - found)
    if missing:
        raise ValueError(f"cannot force unknown dossiers (never extracted): {', '.join(missing)}")
    copy_staged_pieces(cur, run_id, numeros)   # their documents, as staged with that content

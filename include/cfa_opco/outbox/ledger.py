"""The outbox's SQL: every read and write of the ledger (``transmission``) and of what an
outcome changes (``opco_dossier``, ``opco_state_change``, ``dossier_registry``).

For every send, a ``transmission`` row is written and committed BEFORE the request leaves
(status PENDING), and its outcome AFTER (SENT, REJECTED, BLOCKED). A partial unique index
on (dossier, operation, content hash) makes a second intent for the same content
impossible: whoever inserts it owns the send. A PENDING row found later is "in doubt" and
is settled by the runner (read back first, for operations that have a read route).

No HTTP and no policy here: functions take a psycopg2 connection, commit what they write,
and return plain values.
"""
from __future__ import annotations

import json
from typing import Iterable

import psycopg2.extras

from cfa_opco.dossier.model import NATURE_AVENANT

from .operations import Job
from .status import Status

ALREADY_SENT = "ALREADY_SENT"     # a job's status when the same content is SENT already (nothing leaves)


def _dicts(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]   # plain tuples made dicts: RealDictRow is slow to fill
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def load_batch(conn, run_id: str, conn_id: str, only_in_doubt: bool = False) -> tuple[list[dict], dict]:
    """The batch's frozen rows (contracts first), and its ledger history
    {(source_id, numero_interne, operation): [transmission rows, oldest first]}."""
    with conn.cursor() as cur:
        cur.execute("""SELECT p.forced, p.force_reason, p.opco_code, p.cfa_siren, s.*
                       FROM transmission_plan p
                       JOIN staged_dossier s USING (run_id, source_id, numero_interne)
                       WHERE p.run_id = %s AND p.conn_id = %s AND p.decision = 'ROUTED'
                         AND (NOT %s OR EXISTS (SELECT 1 FROM transmission t WHERE t.status = 'PENDING'
                              AND t.operation = 'DOSSIER' AND t.source_id = p.source_id
                              AND t.numero_interne = p.numero_interne))
                       ORDER BY (s.nature = %s), s.numero_interne""",
                    (run_id, conn_id, only_in_doubt, NATURE_AVENANT))
        rows = _dicts(cur)
        cur.execute("""SELECT t.* FROM transmission t
                       JOIN transmission_plan p ON p.source_id = t.source_id
                        AND p.numero_interne = t.numero_interne
                       WHERE p.run_id = %s AND p.conn_id = %s ORDER BY t.id""", (run_id, conn_id))
        ledger: dict[tuple, list[dict]] = {}
        for t in _dicts(cur):
            ledger.setdefault((t["source_id"], t["numero_interne"], t["operation"]), []).append(t)
    conn.commit()
    return rows, ledger


def insert_intents(conn, run_id: str, conn_id: str, jobs: list[Job]) -> None:
    """Record the jobs' intents in one committed statement, before anything leaves. Each job's
    ``tid`` is set, or left None when the same intent exists already (the unique index said
    so: it is another worker's to send). A job may carry a final status and message already
    (BLOCKED, DRY_RUN): then nothing will leave."""
    if not jobs:
        return
    values = [(run_id, j.row["source_id"], j.numero, j.op.code, j.row["opco_code"], j.row["cfa_siren"], conn_id,
               j.prepared.digest, json.dumps(j.prepared.payload, ensure_ascii=False),
               j.status or Status.PENDING, bool(j.row.get("forced")),
               j.row.get("force_reason") if j.row.get("forced") else None, j.message)
              for j in jobs]
    with conn.cursor() as cur:
        got = psycopg2.extras.execute_values(cur, """
            INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                conn_id, content_hash, payload, status, forced, force_reason, message)
            VALUES %s ON CONFLICT DO NOTHING RETURNING id, source_id, numero_interne, operation, content_hash""",
            values, page_size=len(values), fetch=True)
    conn.commit()
    ids = {(src, num, op, h): tid for tid, src, num, op, h in got}
    for j in jobs:
        j.tid = ids.get((j.row["source_id"], j.numero, j.op.code, j.prepared.digest))


def reopen_blocked(conn, tid: int) -> int | None:
    """A BLOCKED intent whose reason is gone (the gate no longer holds it) becomes an intent
    again, committed before it leaves; None when it was not BLOCKED any more."""
    with conn.cursor() as cur:
        cur.execute("UPDATE transmission SET status = 'PENDING', message = NULL, erreurs = NULL "
                    "WHERE id = %s AND status = 'BLOCKED' RETURNING id", (tid,))
        row = cur.fetchone()
    conn.commit()
    return row[0] if row else None


def record_outcomes(conn, run_id: str, conn_id: str, jobs: Iterable[Job]) -> None:
    """The outcomes of jobs done, and what the OPCO said, in one transaction: the ledger rows;
    for a dossier now held by the OPCO, its record, its first state and the registry."""
    jobs = list(jobs)
    done = [j for j in jobs if j.tid is not None and j.status in (Status.SENT, Status.REJECTED, Status.BLOCKED,
                                                                  Status.PENDING)]
    with conn.cursor() as cur:
        if done:
            psycopg2.extras.execute_values(cur, """
                UPDATE transmission t SET status = v.status, attempts = t.attempts + v.attempts,
                       sent_at = COALESCE(t.sent_at, now()),
                       completed_at = CASE WHEN v.status <> 'PENDING' THEN now() END,
                       http_status = v.http_status::int, numero_externe = v.numero_externe,
                       numero_deca = v.numero_deca, erreurs = v.erreurs::jsonb, message = v.message
                FROM (VALUES %s) AS v (id, status, attempts, http_status, numero_externe, numero_deca,
                                       erreurs, message)
                WHERE t.id = v.id""",
                [(j.tid, str(j.status), j.attempts, getattr(j.resp, "status", None),
                  getattr(j.resp, "numero_externe", None), getattr(j.resp, "numero_deca", None),
                  json.dumps(j.resp.erreurs, ensure_ascii=False) if getattr(j.resp, "erreurs", None) else None,
                  j.message) for j in done], page_size=1000)
        sent = [j for j in jobs if j.status == Status.SENT and j.op.code == "DOSSIER"]
        if sent:
            rows = []
            for j in sent:
                body = getattr(j.resp, "body", None)
                body = body if isinstance(body, dict) else {}
                etat = getattr(j.resp, "etat", None) or body.get("etat") or "TRANSMIS"
                etat_at = getattr(j.resp, "date_etat", None) or body.get("dateEtat")
                rows.append((j.row["source_id"], j.numero, j.row["opco_code"], j.row["cfa_siren"], conn_id,
                             j.row["nature"], getattr(j.resp, "numero_externe", None),
                             getattr(j.resp, "numero_deca", None), etat, etat_at, run_id, j.via,
                             j.row["content_hash"]))
            psycopg2.extras.execute_values(cur, """
                WITH v (source_id, numero_interne, opco_code, cfa_siren, conn_id, nature, numero_externe,
                        numero_deca, etat, etat_at, run_id, via, content_hash) AS (VALUES %s),
                od AS (
                    INSERT INTO opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, nature,
                        numero_externe, numero_deca, etat, etat_at, first_run_id, sent_at, last_checked_at)
                    SELECT source_id, numero_interne, opco_code, cfa_siren, conn_id, nature, numero_externe,
                           numero_deca, etat, etat_at::timestamptz, run_id, now(), now() FROM v
                    ON CONFLICT (source_id, numero_interne) DO UPDATE
                       SET numero_externe = COALESCE(EXCLUDED.numero_externe, opco_dossier.numero_externe),
                           numero_deca = COALESCE(EXCLUDED.numero_deca, opco_dossier.numero_deca),
                           last_checked_at = now()),
                sc AS (
                    INSERT INTO opco_state_change (source_id, numero_interne, opco_code, etat, etat_at, via)
                    SELECT source_id, numero_interne, opco_code, etat, etat_at::timestamptz, via FROM v)
                UPDATE dossier_registry r SET transmitted_hash = v.content_hash, transmitted_at = now()
                FROM v WHERE r.source_id = v.source_id AND r.numero_interne = v.numero_interne""",
                rows, page_size=len(rows))
        # the registry knows the content the OPCO holds: an unchanged dossier is not a change next run
        registered = [j for j in jobs if (j.status == ALREADY_SENT and j.op.code == "DOSSIER")
                      or (j.status == Status.SENT and j.op.code == "RUPTURE")]
        if registered:
            psycopg2.extras.execute_values(cur, """
                UPDATE dossier_registry r SET transmitted_hash = v.h,
                       transmitted_at = COALESCE(r.transmitted_at, now())
                FROM (VALUES %s) AS v (s, n, h) WHERE r.source_id = v.s AND r.numero_interne = v.n""",
                [(j.row["source_id"], j.numero, j.row["content_hash"]) for j in registered])
    conn.commit()


def record_waiting(conn, run_id: str, conn_id: str, rows: list[tuple[dict, str]]) -> None:
    """WAITING ledger rows (row, why), for avenants held back by their base contract."""
    if not rows:
        return
    values = [(run_id, r["source_id"], r["numero_interne"], "DOSSIER", r["opco_code"], r["cfa_siren"], conn_id,
               r["content_hash"], Status.WAITING.value, message) for r, message in rows]
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                conn_id, content_hash, status, message) VALUES %s""", values, page_size=len(values))
    conn.commit()


def base_decas(conn, keys: list[tuple[str, str]]) -> dict[tuple, str]:
    """{(source_id, numéro interne): numéro DECA} of those base contracts the OPCO has numbered."""
    keys = [k for k in keys if k[1]]
    if not keys:
        return {}
    with conn.cursor() as cur:
        cur.execute("""SELECT source_id, numero_interne, numero_deca FROM opco_dossier
                       WHERE (source_id, numero_interne) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
                         AND numero_deca IS NOT NULL""",
                    ([k[0] for k in keys], [k[1] for k in keys]))
        found = {(src, num): deca for src, num, deca in cur.fetchall()}
    conn.commit()
    return found


def base_contract_states(conn, keys: list[tuple[str, str]]) -> list[tuple]:
    """For each base contract: (source_id, numero, quality verdict, rule codes, OPCO state, numéro
    DECA, latest ledger status, known to the connector) — what holds its avenants back."""
    if not keys:
        return []
    with conn.cursor() as cur:
        cur.execute("""
            WITH k (source_id, numero_interne) AS (SELECT * FROM unnest(%s::text[], %s::text[]))
            SELECT k.source_id, k.numero_interne, q.verdict, q.rule_codes, od.etat, od.numero_deca, t.status,
                   r.numero_interne IS NOT NULL
            FROM k
            LEFT JOIN dossier_registry r USING (source_id, numero_interne)
            LEFT JOIN LATERAL (SELECT verdict, rule_codes FROM quality_verdict v
                               WHERE v.source_id = k.source_id AND v.numero_interne = k.numero_interne
                               ORDER BY decided_at DESC LIMIT 1) q ON true
            LEFT JOIN opco_dossier od USING (source_id, numero_interne)
            LEFT JOIN LATERAL (SELECT status FROM transmission t WHERE t.source_id = k.source_id
                               AND t.numero_interne = k.numero_interne AND t.operation = 'DOSSIER'
                               ORDER BY id DESC LIMIT 1) t ON true""",
                    ([k[0] for k in keys], [k[1] for k in keys]))
        found = cur.fetchall()
    conn.commit()
    return found


def in_doubt_batches(conn, conn_ids: list[str] | None = None) -> list[tuple[str, str, int]]:
    """(run_id, conn_id, count) of the routed dossiers with an intent in doubt."""
    with conn.cursor() as cur:
        cur.execute("""SELECT t.run_id, t.conn_id, count(*) FROM transmission t
                       JOIN transmission_plan p ON p.run_id = t.run_id AND p.source_id = t.source_id
                        AND p.numero_interne = t.numero_interne AND p.decision = 'ROUTED'
                       WHERE t.status = 'PENDING' AND t.operation = 'DOSSIER'
                         AND (%s::text[] IS NULL OR t.conn_id = ANY(%s::text[]))
                       GROUP BY 1, 2 ORDER BY 1, 2""", (conn_ids, conn_ids))
        return cur.fetchall()


def in_doubt_count(conn, conn_ids: list[str] | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute("""SELECT count(DISTINCT (source_id, numero_interne)) FROM transmission
                       WHERE status = 'PENDING' AND operation = 'DOSSIER'
                         AND (%s::text[] IS NULL OR conn_id = ANY(%s::text[]))""", (conn_ids, conn_ids))
        return cur.fetchone()[0]


def load_history(conn, operation: str, keys: list[tuple[str, str]]) -> dict[tuple, list[dict]]:
    """The ledger rows of one operation for these (source_id, numéro interne), oldest first,
    as {(source_id, numero_interne, operation): [rows]}."""
    if not keys:
        return {}
    with conn.cursor() as cur:
        cur.execute("""SELECT t.* FROM transmission t
                       WHERE t.operation = %s AND (t.source_id, t.numero_interne) IN
                             (SELECT * FROM unnest(%s::text[], %s::text[]))
                       ORDER BY t.id""", (operation, [k[0] for k in keys], [k[1] for k in keys]))
        history: dict[tuple, list[dict]] = {}
        for t in _dicts(cur):
            history.setdefault((t["source_id"], t["numero_interne"], t["operation"]), []).append(t)
    conn.commit()
    return history

"""The payment schedule (échéancier) of every dossier the OPCO engaged (issue 12, point 2).

For each dossier ENGAGE (or SOLDE, RUPTU) whose échéances were never read, or not for
``stale_after``, the OPCO's dossier read-back (``GET /v2/dossiers?numeroInterne=``) gives its
``echeances``; they are kept per échéance in ``opco_echeance`` with every change in
``opco_echeance_history`` (append-only: NEW, CHANGED, GONE), the read's time and error on
``opco_dossier`` (``echeances_read_at`` / ``echeances_error``), and written back to the ERPs
whose source has an ``echeance`` write-back statement (:class:`cfa_opco.writeback.ErpWriteback`).

An OPCO that does not serve the read route gets a French reason per dossier naming it (the
schedule is then read on its portal); an answer that cannot be read leaves the dossier's
previous schedule as it was, with the reason, and is read again at the next run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Any, Callable

import psycopg2.extras

from cfa_opco.db.connect import airflow_connection, cached_connections, connect, dsn_for
from cfa_opco.followup import for_each_connection
from cfa_opco.proofs import ProofRecorder
from cfa_opco.providers.opco.capabilities import Capabilities
from cfa_opco.providers.opco.exceptions import OpcoAuthError, OpcoError
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.norm import opco_label

log = logging.getLogger(__name__)

ENGAGED_STATES = ("ENGAGE", "SOLDE", "RUPTU")       # the OPCO committed funding: a schedule exists
READ_ROUTE = "dossier_read_v2"
MAX_ERRORS = 50                                     # per-dossier errors kept in the summary


def not_served_reason(opco_code: str) -> str:
    return (f"Échéancier non lisible par API : l'{opco_label(opco_code)} ne sert pas la lecture d'un dossier "
            "(GET /v2/dossiers) — échéances à relever sur son portail")


def due_dossiers(conn, stale_after: dt.timedelta | None, conn_ids: list[str] | None = None) -> list[dict]:
    """Engaged dossiers whose schedule was never read, or not for ``stale_after``."""
    with conn.cursor() as cur:
        cur.execute("""SELECT source_id, numero_interne, opco_code, conn_id, echeances_error FROM opco_dossier
                       WHERE etat = ANY(%s)
                         AND (echeances_read_at IS NULL OR (%s::interval IS NOT NULL
                              AND echeances_read_at < now() - %s::interval))
                         AND (%s::text[] IS NULL OR conn_id = ANY(%s::text[]))
                       ORDER BY conn_id, numero_interne""",
                    (list(ENGAGED_STATES), stale_after, stale_after, conn_ids, conn_ids))
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r)) for r in cur.fetchall()]
    conn.commit()
    return out


def store_echeances(conn, source_id: str, numero: str, opco_code: str, echeances: list) -> list[dict]:
    """Keep one dossier's schedule as read now; append each change to the history; return
    the rows of its échéances (for the write-back) when anything changed, else []."""
    new = {e.numero: (e.date_echeance, e.date_fin, e.montant, e.etat) for e in echeances}
    with conn.cursor() as cur:
        cur.execute("""SELECT numero, date_echeance::text, date_fin::text, montant::float8, etat FROM opco_echeance
                       WHERE source_id = %s AND numero_interne = %s""", (source_id, numero))
        old = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        history = []
        for num, values in new.items():
            if num not in old:
                history.append((num, *values, "NEW"))
            elif old[num] != values:
                history.append((num, *values, "CHANGED"))
        for num, values in old.items():
            if num not in new:
                history.append((num, *values, "GONE"))
        if history:
            psycopg2.extras.execute_values(cur, """
                INSERT INTO opco_echeance_history (source_id, numero_interne, opco_code, numero, date_echeance,
                    date_fin, montant, etat, change) VALUES %s""",
                [(source_id, numero, opco_code, *h) for h in history])
            gone = [h[0] for h in history if h[-1] == "GONE"]
            if gone:
                cur.execute("DELETE FROM opco_echeance WHERE source_id = %s AND numero_interne = %s "
                            "AND numero = ANY(%s)", (source_id, numero, gone))
            changed = [(source_id, numero, opco_code, num, *new[num]) for num in new
                       if num not in old or old[num] != new[num]]
            if changed:
                psycopg2.extras.execute_values(cur, """
                    INSERT INTO opco_echeance (source_id, numero_interne, opco_code, numero, date_echeance, date_fin,
                        montant, etat) VALUES %s
                    ON CONFLICT (source_id, numero_interne, numero) DO UPDATE
                       SET date_echeance = EXCLUDED.date_echeance, date_fin = EXCLUDED.date_fin,
                           montant = EXCLUDED.montant, etat = EXCLUDED.etat, read_at = now(), changed_at = now()""",
                    changed)
        cur.execute("UPDATE opco_echeance SET read_at = now() WHERE source_id = %s AND numero_interne = %s",
                    (source_id, numero))
        cur.execute("""UPDATE opco_dossier SET echeances_read_at = now(), echeances_error = NULL, echeances = %s
                       WHERE source_id = %s AND numero_interne = %s""",
                    (json.dumps([{"numero": n, "dateEcheance": v[0], "dateFin": v[1], "montant": v[2], "etat": v[3]}
                                 for n, v in sorted(new.items())]), source_id, numero))
    conn.commit()
    if not history:
        return []
    return [{"numero_interne": numero, "numero": n, "date_echeance": v[0], "date_fin": v[1], "montant": v[2],
             "etat": v[3]} for n, v in sorted(new.items())]


def record_error(conn, source_id: str, numero: str, reason: str) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE opco_dossier SET echeances_error = %s WHERE source_id = %s AND numero_interne = %s",
                    (reason[:1000], source_id, numero))
    conn.commit()


def sync_echeances(connector: str, conn_ids: list[str] | None = None, *, software: dict | None = None,
                   run_id: str | None = None, writeback: Callable[..., Any] | None = None,
                   stale_after: dt.timedelta | None = dt.timedelta(hours=24),
                   hook_factory: Callable[[str], Any] | None = None, max_workers: int = 4) -> dict:
    """Read and store the échéances of every engaged dossier due (see the module). Returns
    {dossiers, read, echeances, changed, written_back, not_served: {opco: n}, errors: {numero: why},
    errors_count}: only counts and a few reasons, for XCom."""
    with cached_connections():
        connector = dsn_for(connector)
        if hasattr(writeback, "prepare"):
            writeback.prepare()
        conn = connect(connector, application_name="cfa_opco.echeances")
        try:
            due = due_dossiers(conn, stale_after, conn_ids)
        finally:
            conn.close()
        by_conn: dict[str, list[dict]] = {}
        for d in due:
            by_conn.setdefault(d["conn_id"], []).append(d)
        result: dict[str, Any] = {"dossiers": len(due), "read": 0, "echeances": 0, "changed": 0, "written_back": 0,
                                  "not_served": {}, "errors": {}, "errors_count": 0}
        lock = threading.Lock()
        recorder = None
        if hook_factory is None:
            recorder = ProofRecorder(connector)
            for cid in by_conn:
                try:
                    airflow_connection(cid)    # in the main thread, for the worker threads
                except Exception:
                    pass

            def hook_factory(cid: str):
                return OpcoHook(cid, software=software, proof_sink=recorder, run_id=run_id, max_attempts=3)

        def error(numero: str, reason: str) -> None:
            with lock:
                result["errors_count"] += 1
                if len(result["errors"]) < MAX_ERRORS:
                    result["errors"][numero] = reason[:300]

        def one(cid: str) -> None:
            dossiers = by_conn[cid]
            opco = dossiers[0]["opco_code"]
            db = connect(connector, application_name="cfa_opco.echeances")
            hook = None
            try:
                if not Capabilities.for_opco(opco).serves(READ_ROUTE):
                    why = not_served_reason(opco)
                    for d in dossiers:
                        if d["echeances_error"] != why:
                            record_error(db, d["source_id"], d["numero_interne"], why)
                    with lock:
                        result["not_served"][opco] = result["not_served"].get(opco, 0) + len(dossiers)
                    return
                hook = hook_factory(cid)
                changed: dict[str, list[dict]] = {}
                for d in dossiers:
                    try:
                        echeances = hook.get_echeances(d["numero_interne"])
                    except OpcoAuthError as exc:     # the key itself: the other dossiers of this key wait
                        for x in dossiers:
                            record_error(db, x["source_id"], x["numero_interne"], str(exc))
                        error(d["numero_interne"], str(exc))
                        return
                    except OpcoError as exc:         # unreadable, refused, OPCO down: read again next run
                        record_error(db, d["source_id"], d["numero_interne"], str(exc))
                        error(d["numero_interne"], str(exc))
                        continue
                    rows = store_echeances(db, d["source_id"], d["numero_interne"], opco, echeances)
                    with lock:
                        result["read"] += 1
                        result["echeances"] += len(echeances)
                        result["changed"] += bool(rows)
                    if rows:
                        changed.setdefault(d["source_id"], []).extend(rows)
                if writeback is not None and hasattr(writeback, "echeances"):
                    for source_id, rows in changed.items():
                        n = writeback.echeances(source_id, rows)
                        with lock:
                            result["written_back"] += n
            finally:
                if hook is not None and hasattr(hook, "close"):
                    hook.close()
                db.close()

        try:
            for_each_connection(sorted(by_conn), one, max_workers, "echeances")
        finally:
            if recorder is not None:
                recorder.close()
    log.info("échéances: %d dossier(s) due, %d read, %d changed, %d written back, not served %s, %d error(s)",
             result["dossiers"], result["read"], result["changed"], result["written_back"], result["not_served"],
             result["errors_count"])
    return result


def echeances_of(connector: str, source_id: str, numero: str) -> list[dict]:
    """One dossier's stored schedule (for tests, reports and the invoicing)."""
    conn = connect(dsn_for(connector), application_name="cfa_opco.echeances")
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT numero, date_echeance, date_fin, montant, etat FROM opco_echeance
                           WHERE source_id = %s AND numero_interne = %s ORDER BY numero""", (source_id, numero))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        conn.close()

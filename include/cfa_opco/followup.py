"""Follow-up of the dossiers sent: read what each OPCO decided and keep the connector's
``opco_dossier`` (current state), ``opco_state_change`` (history) and ``sync_watermark``
(per connection, up to when changes were read) up to date.

- v2 OPCOs (etats_v2): one windowed read of ``/v2/dossiers/etats`` over [watermark, now − lag),
  all pages — the cost grows with the number of changes, not with the stock of dossiers; the
  watermark moves only once the window was fully read.
- v1-only OPCOs (liste_v1): their open dossiers, 100 per ``/v1/dossiers/liste`` call.
- Safety net (both): open dossiers nobody looked at for ``stale_after`` are re-read through
  the liste route (at most once per ``stale_after``), so a change that slipped out of a window
  (a dossier recorded after its window was read) is still caught.

A history row is appended only when the state, its motifs or its anomalies really changed,
and a state never moves back to an older ``dateEtat``.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from psycopg2.extras import execute_values

from cfa_opco import key_status
from cfa_opco.db.connect import airflow_connection, cached_connections, connect, dsn_for
from cfa_opco.pipeline.config import variable
from cfa_opco.proofs import ProofRecorder
from cfa_opco.providers.opco.connections import env_connection_ids
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.norm import opco_label, parse_conn_id

log = logging.getLogger(__name__)

FINAL_STATES = ("ENGAGE", "REFUSE", "ANNULE", "SOLDE", "RUPTU")      # no more follow-up
SENSOR_FINAL_STATES = ("ENGAGE", "REFUSE", "ANNULE")                   # a decision was made
ACCEPTED_STATES = ("ENGAGE", "SOLDE", "RUPTU")                         # RUPTU/SOLDE imply ENGAGE
_FINAL_SQL = "('ENGAGE', 'REFUSE', 'ANNULE', 'SOLDE', 'RUPTU')"
EPOCH_MARGIN = dt.timedelta(minutes=5)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _connect(connector: str):
    return connect(connector, application_name="cfa_opco.followup")


def _j(v: Any) -> str | None:
    """jsonb text of a motifs/anomalies list; empty or missing = NULL."""
    if not v:
        return None
    return json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def open_connections(connector: str, conn_ids: Iterable[str] | None = None, run_id: str | None = None) -> dict[str, int]:
    """{conn_id: number of open dossiers} (optionally of one run)."""
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            sql = f"SELECT conn_id, count(*) FROM opco_dossier WHERE etat NOT IN {_FINAL_SQL}"
            args: list = []
            if run_id is not None:
                sql += " AND first_run_id = %s"
                args.append(run_id)
            if conn_ids is not None:
                sql += " AND conn_id = ANY(%s)"
                args.append(list(conn_ids))
            cur.execute(sql + " GROUP BY conn_id ORDER BY conn_id", args)
            return dict(cur.fetchall())
    finally:
        conn.close()


def watermarks(connector: str, conn_ids: Iterable[str] | None = None) -> dict[str, dt.datetime]:
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            if conn_ids is None:
                cur.execute("SELECT conn_id, window_end FROM sync_watermark")
            else:
                cur.execute("SELECT conn_id, window_end FROM sync_watermark WHERE conn_id = ANY(%s)", (list(conn_ids),))
            return dict(cur.fetchall())
    finally:
        conn.close()


_APPLY_SQL = """
WITH v (ni, etat, etat_at, nex, ndeca, motifs, anomalies) AS (VALUES %s),
upd AS (
    UPDATE opco_dossier d
       SET etat = v.etat, etat_at = COALESCE(v.etat_at, d.etat_at), motifs = v.motifs, anomalies = v.anomalies,
           numero_externe = COALESCE(v.nex, d.numero_externe), numero_deca = COALESCE(v.ndeca, d.numero_deca),
           last_checked_at = now()
      FROM v
     WHERE d.conn_id = %(conn_id)s AND d.numero_interne = v.ni
       AND (d.etat IS DISTINCT FROM v.etat
            OR COALESCE(d.anomalies, '[]'::jsonb) IS DISTINCT FROM COALESCE(v.anomalies, '[]'::jsonb)
            OR COALESCE(d.motifs, '[]'::jsonb) IS DISTINCT FROM COALESCE(v.motifs, '[]'::jsonb))
       AND (d.etat_at IS NULL OR v.etat_at IS NULL OR v.etat_at >= d.etat_at)
 RETURNING d.source_id, d.numero_interne, d.opco_code, d.etat, d.etat_at, d.motifs, d.anomalies,
           d.numero_externe, d.numero_deca
),
ins AS (
    INSERT INTO opco_state_change (source_id, numero_interne, opco_code, etat, etat_at, motifs, anomalies, via)
    SELECT source_id, numero_interne, opco_code, etat, etat_at, motifs, anomalies, %(via)s FROM upd
)
SELECT * FROM upd
"""


def apply_states(cur, conn_id: str, items: list[dict], via: str) -> tuple[list[dict], int]:
    """Apply OPCO state items to opco_dossier (+ history). Returns (changed rows, rows known)."""
    if not items:
        return [], 0
    latest: dict[str, dict] = {}
    for it in items:
        ni = it.get("numeroInterne")
        if not ni or not it.get("etat"):
            continue
        prev = latest.get(ni)
        if prev is None or str(it.get("dateEtat") or "") >= str(prev.get("dateEtat") or ""):
            latest[ni] = it
    rows = [(ni, it["etat"], it.get("dateEtat"), it.get("numeroExterne"), it.get("numeroDeca"),
             _j(it.get("motifs")), _j(it.get("anomalies"))) for ni, it in latest.items()]
    sql = cur.mogrify(_APPLY_SQL.replace("VALUES %s", "VALUES %%s", 1),
                      {"conn_id": conn_id, "via": via}).decode()
    changed = execute_values(cur, sql, rows, template="(%s, %s, %s::timestamptz, %s, %s, %s::jsonb, %s::jsonb)",
                             page_size=max(1, len(rows)), fetch=True)
    names = ("source_id", "numero_interne", "opco_code", "etat", "etat_at", "motifs", "anomalies",
             "numero_externe", "numero_deca")
    changed_rows = [dict(zip(names, r)) for r in changed]
    done = {r["numero_interne"] for r in changed_rows}
    rest = [ni for ni in latest if ni not in done]
    known = len(done)
    if rest:
        cur.execute("UPDATE opco_dossier SET last_checked_at = now() WHERE conn_id = %s AND numero_interne = ANY(%s)",
                    (conn_id, rest))
        known += cur.rowcount
    return changed_rows, known


class _ConnSync:
    def __init__(self, connector: str, conn_id: str, hook, *, lag: dt.timedelta, page_size: int,
                 writeback, stale_after: dt.timedelta | None):
        self.connector, self.conn_id, self.hook = connector, conn_id, hook
        self.lag, self.page_size, self.writeback, self.stale_after = lag, page_size, writeback, stale_after
        self.out: dict[str, Any] = {"conn_id": conn_id, "requests": 0, "seen": 0, "changes": 0, "unknown": 0,
                                    "by_etat": Counter(), "mode": None}

    def _commit_changes(self, db, changed: list[dict]) -> None:
        db.commit()
        self.out["changes"] += len(changed)
        for r in changed:
            self.out["by_etat"][r["etat"]] += 1
        if self.writeback and changed:
            by_source: dict[str, list[dict]] = {}
            for r in changed:
                by_source.setdefault(r["source_id"], []).append(r)
            for source_id, rows in by_source.items():
                self.writeback(source_id, rows)

    def _apply(self, db, items: list[dict], via: str) -> None:
        with db.cursor() as cur:
            changed, known = apply_states(cur, self.conn_id, items, via)
        self.out["seen"] += len(items)
        self.out["unknown"] += len({i.get("numeroInterne") for i in items}) - known
        self._commit_changes(db, changed)

    def run(self) -> dict:
        start_requests = self.hook.request_count
        db = _connect(self.connector)
        try:
            caps = self.hook.capabilities
            route = caps.state_route()
            self.out["mode"] = route
            if route == "etats_v2":
                self._window(db)
            elif route == "liste_v1":
                self._liste(db, None)
            if self.stale_after is not None and caps.serves("liste_v1"):
                self._liste(db, self.stale_after)
        finally:
            db.close()
            self.out["requests"] = self.hook.request_count - start_requests
        return self.out

    def _window(self, db) -> None:
        with db.cursor() as cur:
            cur.execute("SELECT window_end FROM sync_watermark WHERE conn_id = %s", (self.conn_id,))
            row = cur.fetchone()
            if row:
                start = row[0]
            else:
                cur.execute("SELECT least(min(sent_at), min(etat_at)) FROM opco_dossier WHERE conn_id = %s",
                            (self.conn_id,))
                first = cur.fetchone()[0]
                start = (first - EPOCH_MARGIN) if first else _now() - dt.timedelta(days=1)
        db.commit()
        end = self.hook.server_now() - self.lag
        self.out["window"] = [start.isoformat(), end.isoformat()]
        if end <= start:
            return
        batch: list[dict] = []
        for item in self.hook.iter_state_changes(start, end, self.page_size):
            batch.append(item)
            if len(batch) >= self.page_size:
                self._apply(db, batch, "etats_v2")
                batch = []
        self._apply(db, batch, "etats_v2")
        advance_watermark(db, "sync_watermark", self.conn_id, end)

    def _liste(self, db, stale_after: dt.timedelta | None) -> None:
        with db.cursor() as cur:
            sql = f"SELECT numero_interne FROM opco_dossier WHERE conn_id = %s AND etat NOT IN {_FINAL_SQL}"
            args: list = [self.conn_id]
            if stale_after is not None:
                sql += " AND COALESCE(last_checked_at, sent_at, '-infinity') < now() - %s"
                args.append(stale_after)
            cur.execute(sql + " ORDER BY numero_interne", args)
            numeros = [r[0] for r in cur.fetchall()]
        db.commit()
        if stale_after is not None:
            self.out["stale_checked"] = len(numeros)
        for i in range(0, len(numeros), 100):
            chunk = numeros[i:i + 100]
            found = self.hook.list_dossiers(chunk)
            self._apply(db, found, "liste_v1")
            missing = set(chunk) - {f.get("numeroInterne") for f in found}
            if missing:
                self.out["unknown"] += len(missing)
                with db.cursor() as cur:
                    cur.execute("UPDATE opco_dossier SET last_checked_at = now() WHERE conn_id = %s "
                                "AND numero_interne = ANY(%s)", (self.conn_id, list(missing)))
                db.commit()


def advance_watermark(db, table: str, conn_id: str, end: dt.datetime) -> None:
    """A window was fully read: only now does the connection's watermark move (never back)."""
    with db.cursor() as cur:
        cur.execute(f"""INSERT INTO {table} (conn_id, window_end, updated_at) VALUES (%s, %s, now())
                        ON CONFLICT (conn_id) DO UPDATE SET window_end = GREATEST({table}.window_end,
                        EXCLUDED.window_end), updated_at = now()""", (conn_id, end))
    db.commit()


def for_each_connection(targets: list[str], one: Callable[[str], None], max_workers: int, name: str) -> None:
    """``one(conn_id)`` for every connection: in threads when there are several (each OPCO key is
    read on its own; one failing never stops the others — ``one`` reports its own errors)."""
    if len(targets) <= 1 or max_workers <= 1:
        for cid in targets:
            one(cid)
    else:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(targets)), thread_name_prefix=name) as pool:
            list(pool.map(one, targets))


DEFAULT_POLL_FAILURE_LIMIT = 5


def failure_limit(value: int | None = None) -> int:
    """The limit of failing polls in a row before a key's dossiers are "suivi impossible":
    ``value``, else the Variable cfa_opco_poll_failure_limit, else 5."""
    if value is None:
        try:
            value = variable("cfa_opco_poll_failure_limit", DEFAULT_POLL_FAILURE_LIMIT)
        except Exception:
            value = DEFAULT_POLL_FAILURE_LIMIT
    return max(1, int(value))


def record_poll(connector: str, conn_id: str, error: str | None, limit: int) -> dict | None:
    """Count one poll of a key (followup_poll). A success clears the count and the key's
    "suivi impossible"; a failure counts, and from ``limit`` failures in a row the key's open
    dossiers are marked "suivi impossible" with the reason. Returns that mark, or None."""
    opco, siren = parse_conn_id(conn_id)
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            if error is None:
                cur.execute("""INSERT INTO followup_poll (conn_id, opco_code, last_success_at) VALUES (%s, %s, now())
                               ON CONFLICT (conn_id) DO UPDATE SET consecutive_failures = 0, last_success_at = now(),
                                      impossible_since = NULL""", (conn_id, opco))
                cur.execute("""UPDATE opco_dossier SET suivi_impossible_at = NULL, suivi_impossible_reason = NULL
                               WHERE conn_id = %s AND suivi_impossible_at IS NOT NULL""", (conn_id,))
                conn.commit()
                return None
            cur.execute("""INSERT INTO followup_poll (conn_id, opco_code, consecutive_failures, total_failures,
                                                      last_error, last_failure_at)
                           VALUES (%s, %s, 1, 1, %s, now())
                           ON CONFLICT (conn_id) DO UPDATE SET
                               consecutive_failures = followup_poll.consecutive_failures + 1,
                               total_failures = followup_poll.total_failures + 1,
                               last_error = EXCLUDED.last_error, last_failure_at = now()
                           RETURNING consecutive_failures""", (conn_id, opco, error[:1000]))
            failures = cur.fetchone()[0]
            mark = None
            if failures >= limit:
                who = f"{opco_label(opco) if opco else conn_id} (SIREN {siren or '?'}, connexion {conn_id})"
                reason = (f"Suivi impossible : {failures} lectures de suivi de suite ont échoué chez l'{who} — "
                          f"dernière erreur : {error[:300]}. Vérifiez la clé et l'état de l'API de l'OPCO ; le suivi "
                          "reprend seul à la première lecture réussie")
                cur.execute("UPDATE followup_poll SET impossible_since = COALESCE(impossible_since, now()) "
                            "WHERE conn_id = %s", (conn_id,))
                cur.execute(f"""UPDATE opco_dossier SET suivi_impossible_at = COALESCE(suivi_impossible_at, now()),
                                       suivi_impossible_reason = %s
                                WHERE conn_id = %s AND etat NOT IN {_FINAL_SQL}""", (reason, conn_id))
                mark = {"dossiers": cur.rowcount, "failures": failures, "reason": reason}
        conn.commit()
        return mark
    finally:
        conn.close()


def poll_health(connector: str, conn_ids: Iterable[str] | None = None) -> dict[str, dict]:
    """{conn_id: {consecutive_failures, last_error, impossible_since, dossiers}} of the keys
    that failed their last poll (what a sensor or a DAG shows per key)."""
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""SELECT f.conn_id, f.consecutive_failures, f.last_error, f.impossible_since,
                                   (SELECT count(*) FROM opco_dossier d WHERE d.conn_id = f.conn_id
                                       AND d.suivi_impossible_at IS NOT NULL AND d.etat NOT IN {_FINAL_SQL})
                            FROM followup_poll f WHERE f.consecutive_failures > 0
                              AND (%s::text[] IS NULL OR f.conn_id = ANY(%s::text[])) ORDER BY 1""",
                        (list(conn_ids) if conn_ids is not None else None,) * 2)
            return {cid: {"consecutive_failures": n, "last_error": err, "impossible_since": since,
                          "dossiers": dossiers} for cid, n, err, since, dossiers in cur.fetchall()}
    finally:
        conn.close()


def sync_states(connector: str, conn_ids: list[str] | None = None, *, hook_factory: Callable[[str], Any] | None = None,
                lag_seconds: float = 2, page_size: int = 1000, writeback: Callable[[str, list[dict]], None] | None = None,
                run_id: str | None = None, stale_after: dt.timedelta | None = dt.timedelta(hours=24),
                max_workers: int = 4, record_proofs: bool = True, software: dict | None = None,
                poll_failure_limit: int | None = None) -> dict:
    """Sync the OPCO states of every connection with open dossiers (or of ``conn_ids``).

    ``hook_factory(conn_id) -> OpcoHook`` (default: an OpcoHook whose every request is
    recorded in exchange_proof); ``writeback(source_id, rows)`` is called with the rows whose
    state changed (after commit) so decisions can be written back to the ERP.
    Returns {connections, requests, seen, changes, unknown, by_etat, per_connection, errors,
    poll_failures, suivi_impossible}. A connection that fails (bad key, OPCO down, an answer
    that cannot be read) is reported in ``errors`` and counted per key (``poll_failures``:
    failures in a row); from ``poll_failure_limit`` in a row (default: the Variable
    cfa_opco_poll_failure_limit, else 5) its open dossiers are marked "suivi impossible"
    (``suivi_impossible``: {conn_id: {dossiers, failures, reason}}); the others go on."""
    with cached_connections():
        return _sync_states(connector, conn_ids, hook_factory=hook_factory, lag_seconds=lag_seconds,
                            page_size=page_size, writeback=writeback, run_id=run_id, stale_after=stale_after,
                            max_workers=max_workers, record_proofs=record_proofs, software=software,
                            poll_failure_limit=failure_limit(poll_failure_limit))


def _sync_states(connector, conn_ids, *, hook_factory, lag_seconds, page_size, writeback, run_id, stale_after,
                 max_workers, record_proofs, software, poll_failure_limit) -> dict:
    connector = dsn_for(connector)   # resolved here: worker threads cannot look connections up
    if hasattr(writeback, "prepare"):
        writeback.prepare()
    open_by_conn = open_connections(connector, conn_ids)
    targets = sorted(open_by_conn)
    for cid in targets:
        try:
            airflow_connection(cid)
        except Exception:   # reported per connection by its sync below
            pass
    recorder = None
    if hook_factory is None:
        recorder = ProofRecorder(connector) if record_proofs else None

        def hook_factory(cid: str):
            return OpcoHook(cid, software=software, proof_sink=recorder, run_id=run_id)
    lag = dt.timedelta(seconds=lag_seconds)

    def _count_poll(cid: str, error: str | None) -> dict | None:
        try:
            mark = record_poll(connector, cid, error, poll_failure_limit)
        except Exception as exc:   # the count itself failing must not hide the sync's outcome
            log.error("follow-up poll of %s not counted: %s", cid, exc)
            return None
        if error is not None:
            with lock:
                result["poll_failures"][cid] = (mark or {}).get("failures") or \
                    result["poll_failures"].get(cid, 0) + 1
        if mark:
            log.error("%s (%d dossier(s))", mark["reason"], mark["dossiers"])
        return mark

    result: dict[str, Any] = {"connections": len(targets), "open_before": sum(open_by_conn.values()),
                              "requests": 0, "seen": 0, "changes": 0, "unknown": 0, "by_etat": {},
                              "per_connection": {}, "errors": {}, "poll_failures": {}, "suivi_impossible": {}}
    lock = threading.Lock()

    def one(cid: str) -> None:
        hook = None
        try:
            hook = hook_factory(cid)
            out = _ConnSync(connector, cid, hook, lag=lag, page_size=page_size, writeback=writeback,
                            stale_after=stale_after).run()
        except Exception as exc:   # an OPCO down, a key refused, an answer nobody can read
            text = str(exc) or type(exc).__name__
            log.warning("state sync of %s failed: %s", cid, text)
            mark = _count_poll(cid, f"{type(exc).__name__}: {text}"[:500])
            with lock:
                result["errors"][cid] = text[:500]
                if hook is not None:
                    result["requests"] += getattr(hook, "request_count", 0)
                if mark:
                    result["suivi_impossible"][cid] = mark
            return
        finally:
            if hook is not None and hasattr(hook, "close"):
                hook.close()
        _count_poll(cid, None)
        with lock:
            out["by_etat"] = dict(out["by_etat"])
            result["per_connection"][cid] = out
            for k in ("requests", "seen", "changes", "unknown"):
                result[k] += out[k]
            for k, v in out["by_etat"].items():
                result["by_etat"][k] = result["by_etat"].get(k, 0) + v

    try:
        for_each_connection(targets, one, max_workers, "sync")
    finally:
        if recorder is not None:
            recorder.close()
    if result["errors"]:   # the failures in a row, as counted (a key below the limit too)
        for cid, h in poll_health(connector, list(result["errors"])).items():
            result["poll_failures"][cid] = h["consecutive_failures"]
    log.info("state sync: %d connection(s), %d request(s), %d change(s) %s, %d error(s), suivi impossible: %s",
             result["connections"], result["requests"], result["changes"], result["by_etat"], len(result["errors"]),
             {k: v["dossiers"] for k, v in result["suivi_impossible"].items()} or "none")
    return result


def pending_for_run(connector: str, run_id: str) -> list[dict]:
    """Dossiers first sent by ``run_id`` (opco_dossier.first_run_id) with no decision yet."""
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""SELECT source_id, numero_interne, opco_code, cfa_siren, conn_id, etat, etat_at, anomalies
                            FROM opco_dossier WHERE first_run_id = %s AND etat NOT IN {_FINAL_SQL}
                            ORDER BY conn_id, numero_interne""", (run_id,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def run_summary(connector: str, run_id: str, pending_limit: int = 200) -> dict:
    """Counts of the run's dossiers: accepted, refused, cancelled, pending (incomplete among
    them), suivi_impossible (their key could not be read: counted apart, not waited for)."""
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT etat, (anomalies IS NOT NULL AND anomalies <> '[]'::jsonb),
                                  suivi_impossible_at IS NOT NULL, count(*)
                           FROM opco_dossier WHERE first_run_id = %s GROUP BY 1, 2, 3""", (run_id,))
            rows = cur.fetchall()
    finally:
        conn.close()
    s = {"total": 0, "accepted": 0, "refused": 0, "cancelled": 0, "pending": 0, "incomplete": 0,
         "suivi_impossible": 0, "by_etat": {}}
    for etat, incomplete, impossible, n in rows:
        s["total"] += n
        s["by_etat"][etat] = s["by_etat"].get(etat, 0) + n
        if impossible and etat not in FINAL_STATES:
            s["suivi_impossible"] += n   # not "pending": nobody can read it — shown, not waited for
        elif etat in ACCEPTED_STATES:
            s["accepted"] += n
        elif etat == "REFUSE":
            s["refused"] += n
        elif etat == "ANNULE":
            s["cancelled"] += n
        else:
            s["pending"] += n
            if incomplete:
                s["incomplete"] += n
    return s


def known_connections(connector: str) -> list[str]:
    """OPCO connection ids worth checking: those the connector has used (opco_dossier,
    transmission) plus any AIRFLOW_CONN_OPCO_* environment variable."""
    ids: set[str] = set()
    conn = _connect(connector)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT conn_id FROM opco_dossier")
            ids.update(r[0] for r in cur.fetchall())
            cur.execute("SELECT to_regclass('transmission') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute("SELECT DISTINCT conn_id FROM transmission WHERE conn_id IS NOT NULL")
                ids.update(r[0] for r in cur.fetchall())
    finally:
        conn.close()
    ids |= env_connection_ids()
    return sorted(i for i in ids if parse_conn_id(i)[0])


def key_warnings(connector: str, days: int = 30, conn_ids: list[str] | None = None,
                 hook_factory: Callable[[str], Any] | None = None, software: dict | None = None) -> dict[str, str]:
    """{conn_id: warning} for every OPCO key that is invalid or expires within ``days``
    (connections: ``conn_ids``, else the Variable cfa_opco_key_connections, else
    :func:`known_connections`). What each check read is kept in ``opco_key_status``."""
    if conn_ids is None:
        try:
            conn_ids = variable("cfa_opco_key_connections", None, deserialize_json=True)
        except Exception:
            conn_ids = None
        conn_ids = conn_ids or known_connections(connector)
    if hook_factory is None:
        recorder = ProofRecorder(connector)

        def hook_factory(cid: str):
            return OpcoHook(cid, software=software, proof_sink=recorder, max_attempts=3)
    else:
        recorder = None
    out: dict[str, str] = {}
    try:
        for cid in conn_ids:
            try:
                hook = hook_factory(cid)
                if hasattr(hook, "key_status"):
                    st = hook.key_status(days)
                else:       # a hook that only says the warning
                    w = hook.key_expiry_warning(days)
                    st = {"status": "EXPIRING" if w else "VALID", "expires_on": None, "warning": w}
                hook.close()
            except Exception as exc:     # the OPCO is down, the connection is missing...
                st = {"status": "NOT_CHECKED", "expires_on": None,
                      "warning": f"clé de la connexion {cid} non vérifiée : {str(exc)[:300]}"}
            w = st["warning"]
            try:    # what the keys page of the "Dossiers OPCO" view shows
                key_status.record(connector, cid, st["status"], st["expires_on"], w)
            except Exception as exc:
                log.warning("key status of %s not recorded: %s", cid, exc)
            if w:
                log.warning("%s", w)
                out[cid] = w
    finally:
        if recorder is not None:
            recorder.close()
    return out

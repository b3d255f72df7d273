"""Exactly-once transmission of a run's dossiers, behind a ledger (outbox).

``plan`` routes the run's transmissible dossiers once (OPCO from the IDCC, key from the
CFA's SIREN) into ``transmission_plan``; ``transmit_batch`` sends one (OPCO, SIREN) share.

For every send, a ``transmission`` row is written and committed BEFORE the request leaves
(status PENDING), and its outcome AFTER (SENT, REJECTED, BLOCKED). A partial unique index
on (dossier, operation, content hash) makes a second intent for the same content
impossible. A PENDING row found later is "in doubt" — the process may have died after the
OPCO created the dossier but before we recorded it — and is resolved by reading the OPCO
first: found, it is recorded as SENT without resending; not found, it is sent. So a retry,
a killed worker, a cleared task or a whole rerun never sends a dossier twice and never
loses one; the OPCO's own idempotency is a second net, not the first.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import sys
import threading
from dataclasses import dataclass, field

import psycopg2.extras

from cfa_opco.db.connect import connect
from cfa_opco.dossier.model import NATURE_AVENANT
from cfa_opco.dossier.payload import build_payload, payload_hash
from cfa_opco.providers.opco.proofs import canonical_json

log = logging.getLogger(__name__)

SENT, PENDING, REJECTED, BLOCKED, DRY_RUN = "SENT", "PENDING", "REJECTED", "BLOCKED", "DRY_RUN"
OP_DOSSIER, OP_PIECE, OP_RUPTURE = "DOSSIER", "PIECE", "RUPTURE"


def _quality_view_exists(cur) -> bool:
    cur.execute("SELECT to_regclass('dossier_to_transmit') IS NOT NULL")
    return cur.fetchone()[0]


def plan(run_id: str, connector: str, *, router=None, only_opco: str | None = None,
         only_site: str | None = None, force: list[dict] | None = None) -> dict:
    """Route the run's transmissible dossiers; return, per OPCO, its (OPCO, SIREN) batches.

    ``force``: [{"numero_interne", "reason", "by"}] — dossiers to send again even though the
    same content was already sent (a reason is required and kept in the ledger)."""
    from cfa_opco.routing import NEEDS_HUMAN, NOT_SERVED, ROUTED, Router

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
                                    route.cfa_siren, route.conn_id, reason, f is not None,
                                    f"{f['reason']} (par {f.get('by') or 'opérateur'})" if f else None))
                psycopg2.extras.execute_values(cur, """
                    INSERT INTO transmission_plan (run_id, source_id, numero_interne, nature, decision,
                        opco_code, cfa_siren, conn_id, reason, forced, force_reason) VALUES %s""",
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
            cur.execute("""SELECT decision, opco_code, cfa_siren, conn_id, count(*) FROM transmission_plan
                           WHERE run_id = %s GROUP BY 1, 2, 3, 4 ORDER BY 2, 3""", (run_id,))
            groups = cur.fetchall()
        conn.commit()
    finally:
        conn.close()
    batches: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for decision, opco, siren, conn_id, n in groups:
        counts[decision] = counts.get(decision, 0) + n
        if decision == ROUTED:
            batches.setdefault(opco, []).append({"conn_id": conn_id, "opco": opco, "siren": siren, "count": n})
    return {"batches": batches, "routed": counts.get(ROUTED, 0),
            "needs_human": counts.get(NEEDS_HUMAN, 0), "not_served": counts.get(NOT_SERVED, 0),
            "filtered": counts.get("FILTERED", 0), "replanned": already > 0}


def planned_batches(run_id: str, connector: str, opco_code: str) -> list[dict]:
    """The (OPCO, SIREN) batches of one OPCO in a planned run (what its mapped task expands
    over), largest first: the longest tasks start first, the run ends sooner."""
    conn = connect(connector, application_name="cfa_opco.plan")
    try:
        with conn.cursor() as cur:
            cur.execute("""SELECT conn_id, cfa_siren, count(*) FROM transmission_plan
                           WHERE run_id = %s AND opco_code = %s AND decision = 'ROUTED'
                           GROUP BY 1, 2 ORDER BY 3 DESC, 1""", (run_id, opco_code))
            return [{"conn_id": c, "opco": opco_code, "siren": s, "count": n} for c, s, n in cur.fetchall()]
    finally:
        conn.close()


def _stage_forced(cur, run_id: str, numeros: list[str]) -> None:
    """A forced dossier unchanged since it was sent is not in the run's batch: bring in its
    latest extracted content (it went through the quality gate when it was first sent)."""
    if not numeros:
        return
    from cfa_opco.dossier.model import COLUMN_NAMES

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


_SLICES_LOCK = threading.Lock()
_SLICES_USERS = [0, None]   # batches running in this process, switch interval before the first


@contextlib.contextmanager
def _short_gil_slices(seconds: float = 0.001):
    """Shorter GIL slices while a batch runs. Its sender threads mostly wait for the OPCO;
    with Python's default 5 ms slices, a thread whose answer has arrived waits behind the
    main thread's CPU-bound payload building before it can send the next dossier, and the
    OPCO sits idle (measured: ~9 % more dossiers/s with 1 ms). Restored after the last batch."""
    with _SLICES_LOCK:
        if _SLICES_USERS[0] == 0:
            _SLICES_USERS[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(seconds, _SLICES_USERS[1]))
        _SLICES_USERS[0] += 1
    try:
        yield
    finally:
        with _SLICES_LOCK:
            _SLICES_USERS[0] -= 1
            if _SLICES_USERS[0] == 0:
                sys.setswitchinterval(_SLICES_USERS[1])


@dataclass
class BatchResult:
    conn_id: str
    sent: int = 0
    already_sent: int = 0
    resolved_in_doubt: int = 0
    rejected: int = 0
    already_rejected: int = 0
    blocked: int = 0
    in_doubt: int = 0
    deferred: int = 0
    dry_run: int = 0
    pieces_sent: int = 0
    ruptures_sent: int = 0
    errors: list = field(default_factory=list)
    key_warning: str | None = None
    auth_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def error(self, numero: str, text: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append({"numero_interne": numero, "error": text[:300]})

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "lock"}
        d["transmitted"] = self.sent + self.resolved_in_doubt
        return d


@dataclass
class _Job:
    """One dossier on its way: its intent's id, and what came back."""
    row: dict
    payload: dict
    body: bytes                     # canonical JSON: what is hashed, kept in the ledger and sent
    digest: str
    tid: int | None = None
    resolve: bool = False           # intent found in doubt: read the OPCO before sending
    status: str | None = None
    resp: object = None
    message: str | None = None
    via: str = "post"
    attempts: int = 0


class BatchTransmitter:
    """Sends one (OPCO, SIREN) share of a run, a pool of threads over one hook."""

    def __init__(self, run_id: str, connector: str, conn_id: str, *, sources=None, hook=None,
                 software: dict | None = None, dry_run: bool = False, max_workers: int = 8,
                 key_warning_days: int = 30, proof_recorder=None, send_hook=None, send_attempts: int = 6,
                 retry_base: float = 0.25, chunk_size: int = 200):
        from cfa_opco.db.connect import dsn_for

        connector = dsn_for(connector)   # resolved here: worker threads cannot look connections up
        self.run_id, self.connector, self.conn_id = run_id, connector, conn_id
        self.sources = {s.id: s for s in (sources or [])}
        self.dry_run, self.max_workers = dry_run, max_workers
        self.key_warning_days = key_warning_days
        self.result = BatchResult(conn_id)
        self._local = threading.local()
        self._conns: list = []
        self._conns_lock = threading.Lock()
        self._stop = threading.Event()
        self.recorder = proof_recorder
        self._owns_hooks = hook is None
        self.send_attempts, self.retry_base, self.chunk_size = send_attempts, retry_base, chunk_size
        if hook is None:
            from cfa_opco.providers.opco.hooks.opco import OpcoHook
            from cfa_opco.proofs import ProofRecorder

            if self.recorder is None and not dry_run:
                self.recorder = ProofRecorder(connector)
            sink = self.recorder if not dry_run else None
            # writes are never retried blindly by the hook: an ambiguous failure (timeout,
            # dropped connection, 5xx) comes back here, and the OPCO is read before any resend
            send_hook = OpcoHook(conn_id, software=software, run_id=run_id, proof_sink=sink, max_attempts=1,
                                 backoff_base=2 * retry_base)
            hook = OpcoHook(conn_id, software=software, run_id=run_id, proof_sink=sink,
                            backoff_base=2 * retry_base)
        self.hook = hook                      # reads (safe to retry)
        self.send_hook = send_hook or hook    # writes

    # -- database ------------------------------------------------------------------
    def _db(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.connector, application_name="cfa_opco.transmit")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _close(self) -> None:
        for conn in self._conns:
            try:
                conn.close()
            except Exception:
                pass

    def _load(self) -> tuple[list[dict], dict[tuple, list[dict]]]:
        conn = self._db()
        with conn.cursor() as cur:   # plain tuples made dicts: RealDictRow is slow to fill
            cur.execute("""SELECT p.forced, p.force_reason, p.opco_code, p.cfa_siren, s.*
                           FROM transmission_plan p
                           JOIN staged_dossier s USING (run_id, source_id, numero_interne)
                           WHERE p.run_id = %s AND p.conn_id = %s AND p.decision = 'ROUTED'
                           ORDER BY (s.nature = %s), s.numero_interne""",
                        (self.run_id, self.conn_id, NATURE_AVENANT))
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            cur.execute("""SELECT t.* FROM transmission t
                           JOIN transmission_plan p ON p.source_id = t.source_id
                            AND p.numero_interne = t.numero_interne
                           WHERE p.run_id = %s AND p.conn_id = %s ORDER BY t.id""",
                        (self.run_id, self.conn_id))
            cols = [d[0] for d in cur.description]
            ledger: dict[tuple, list[dict]] = {}
            for t in (dict(zip(cols, r)) for r in cur.fetchall()):
                ledger.setdefault((t["source_id"], t["numero_interne"], t["operation"]), []).append(t)
        conn.commit()
        return rows, ledger

    def _insert_intent(self, row: dict, operation: str, content_hash: str, payload: dict | None,
                       forced: bool = False, status: str = PENDING, message: str | None = None) -> int | None:
        """Record the intent (committed before anything leaves). None: another worker holds
        the same intent (the unique index said so) — it is theirs to send."""
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute("""
                INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                    conn_id, content_hash, payload, status, forced, force_reason, message)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING RETURNING id""",
                (self.run_id, row["source_id"], row["numero_interne"], operation, row["opco_code"],
                 row["cfa_siren"], self.conn_id, content_hash,
                 json.dumps(payload, ensure_ascii=False) if payload is not None else None,
                 status, forced, row.get("force_reason") if forced else None, message))
            got = cur.fetchone()
        conn.commit()
        return got[0] if got else None

    def _outcome(self, tid: int, status: str, resp=None, message: str | None = None) -> None:
        """Record one intent's outcome (documents, ruptures; dossiers go by chunks)."""
        erreurs = getattr(resp, "erreurs", None) or None
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute("""UPDATE transmission SET status = %s, attempts = attempts + 1,
                               sent_at = COALESCE(sent_at, now()), completed_at = CASE WHEN %s <> 'PENDING' THEN now() END,
                               http_status = %s, numero_externe = %s, numero_deca = %s, erreurs = %s, message = %s
                           WHERE id = %s""",
                        (status, status, getattr(resp, "status", None), getattr(resp, "numero_externe", None),
                         getattr(resp, "numero_deca", None),
                         json.dumps(erreurs, ensure_ascii=False) if erreurs else None, message, tid))
        conn.commit()

    def _mark_registry(self, row: dict) -> None:
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute("""UPDATE dossier_registry SET transmitted_hash = %s, transmitted_at = COALESCE(transmitted_at, now())
                           WHERE source_id = %s AND numero_interne = %s""",
                        (row["content_hash"], row["source_id"], row["numero_interne"]))
        conn.commit()

    # -- the OPCO --------------------------------------------------------------------
    def _lookup(self, numero: str):
        """Does the OPCO already hold this dossier? (resolution of an in-doubt send)"""
        caps = self.hook.capabilities
        if caps.serves("dossier_read_v2"):
            resp = self.hook.get_dossier(numero)
            return resp if resp.status == 200 else None
        found = self.hook.list_dossiers([numero])
        if not found:
            return None

        class _Found:   # the liste answer in the shape of a response
            status = 200
            body = found[0]
            etat = found[0].get("etat")
            numero_externe = found[0].get("numeroExterne")
            numero_deca = found[0].get("numeroDeca")
            erreurs = None
        return _Found()

    def _http_send(self, job: "_Job") -> "_Job":
        """Send one dossier under its committed intent (worker thread: HTTP only, no database).

        After an ambiguous failure (timeout, dropped connection, 5xx) the dossier is read
        back from the OPCO before any resend; when even that read fails, nothing is resent
        and the intent stays PENDING (in doubt) for the next attempt."""
        import random
        import time

        from cfa_opco.providers.opco.exceptions import OpcoAuthError, OpcoRouteNotServed, OpcoUnavailable

        must_check = job.resolve   # an intent left in doubt by an earlier attempt: read first
        last_error = ""
        for attempt in range(1, self.send_attempts + 1):
            if self._stop.is_set():
                job.status, job.message = PENDING, "lot interrompu (clé refusée) : sera repris"
                return job
            job.attempts = attempt
            if must_check:
                if attempt > 1:
                    time.sleep(min(30.0, self.retry_base * 2 ** attempt) * random.random())
                try:
                    found = self._lookup(job.row["numero_interne"])
                except OpcoUnavailable as exc:
                    last_error = str(exc)
                    continue
                if found is not None:
                    job.status, job.resp, job.via = SENT, found, "reprise"
                    job.message = "confirmé par relecture à l'OPCO après une réponse perdue"
                    return job
                must_check = False
            try:
                resp = self.send_hook.send_dossier(job.payload, encoded=job.body)
            except OpcoRouteNotServed as exc:
                job.status, job.message = BLOCKED, str(exc)
                return job
            except OpcoAuthError as exc:
                job.status, job.message = BLOCKED, str(exc)
                if getattr(exc, "code", None) != "SIREN_DIFFERENT":   # the key itself is refused
                    self.result.auth_error = str(exc)
                    self._stop.set()
                return job
            except OpcoUnavailable as exc:
                last_error = str(exc)
                # reading back cannot tell a forced resend from the copy the OPCO already
                # holds: a forced resend is simply sent again (after a pause)
                must_check = not job.row["forced"]
                if not must_check:
                    time.sleep(min(30.0, self.retry_base * 2 ** attempt) * random.random())
                continue
            job.resp = resp
            if resp.ok:
                job.status = SENT
            else:
                job.status = REJECTED
                if resp.status == 409:
                    job.message = ("L'OPCO connaît déjà ce numéro de dossier avec un autre contenu : une "
                                   "modification après envoi se transmet par un avenant")
                else:
                    job.message = "; ".join(f"{e.get('champ') or ''}: {e.get('message')}"
                                            for e in (resp.erreurs or []))[:1000]
            return job
        job.status, job.message = PENDING, f"en attente de confirmation : {last_error}"
        return job

    def _prepare_chunk(self, rows: list[dict], ledger: dict) -> list["_Job"]:
        """Decide each dossier's fate from the ledger; commit the new intents in one statement."""
        decas = self._base_decas([r for r in rows if r["nature"] == NATURE_AVENANT
                                  and not r.get("contrat_numero_precedent")])
        jobs, intents = [], []
        for row in rows:
            numero = row["numero_interne"]
            deca = None
            if row["nature"] == NATURE_AVENANT and not row.get("contrat_numero_precedent"):
                deca = decas.get((row["source_id"], row.get("base_numero_interne")))
                if deca is None:
                    # the amended contract has no numéro DECA yet: next run, once the OPCO gave it
                    self.result.add("deferred")
                    continue
            payload = build_payload(row, deca)
            body = canonical_json(payload)
            digest = hashlib.sha256(body).hexdigest()
            job = _Job(row, payload, body, digest)
            if self.dry_run:
                job.status = DRY_RUN
                intents.append(job)
                continue
            history = ledger.get((row["source_id"], numero, OP_DOSSIER), [])
            same = [t for t in history if t["content_hash"] == digest and not t["forced"]]
            if not row["forced"]:
                if any(t["status"] == SENT for t in same):
                    job.status = "ALREADY_SENT"
                    jobs.append(job)
                    continue
                if any(t["status"] == REJECTED for t in same):
                    self.result.add("already_rejected")
                    continue
                in_doubt = [t for t in same if t["status"] == PENDING]
                if in_doubt:
                    job.tid, job.resolve = in_doubt[-1]["id"], True
                    jobs.append(job)
                    continue
                if any(t["status"] == SENT and t["content_hash"] != digest for t in history):
                    self._changed_after_send(row, digest, payload, history)
                    continue
            intents.append(job)
        if intents:
            conn = self._db()
            with conn.cursor() as cur:
                values = [(self.run_id, j.row["source_id"], j.row["numero_interne"], OP_DOSSIER, j.row["opco_code"],
                           j.row["cfa_siren"], self.conn_id, j.digest, j.body.decode(),
                           DRY_RUN if self.dry_run else PENDING, bool(j.row["forced"]),
                           j.row.get("force_reason") if j.row["forced"] else None,
                           "dry run: payload built and checked, nothing sent" if self.dry_run else None)
                          for j in intents]
                got = psycopg2.extras.execute_values(cur, """
                    INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                        conn_id, content_hash, payload, status, forced, force_reason, message)
                    VALUES %s ON CONFLICT DO NOTHING RETURNING id, source_id, numero_interne""",
                    values, page_size=len(values), fetch=True)
            conn.commit()   # the intents are durable before anything leaves
            ids = {(src, num): tid for tid, src, num in got}
            for j in intents:
                j.tid = ids.get((j.row["source_id"], j.row["numero_interne"]))
                if self.dry_run:
                    self.result.add("dry_run")
                elif j.tid is None:    # another worker recorded the same intent first: theirs
                    self.result.add("already_sent")
                else:
                    jobs.append(j)
        return jobs

    def _base_decas(self, avenants: list[dict]) -> dict[tuple, str]:
        keys = [(r["source_id"], r["base_numero_interne"]) for r in avenants if r.get("base_numero_interne")]
        if not keys:
            return {}
        conn = self._db()
        with conn.cursor() as cur:
            cur.execute("""SELECT source_id, numero_interne, numero_deca FROM opco_dossier
                           WHERE (source_id, numero_interne) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
                             AND numero_deca IS NOT NULL""",
                        ([k[0] for k in keys], [k[1] for k in keys]))
            found = {(src, num): deca for src, num, deca in cur.fetchall()}
        conn.commit()
        return found

    def _record_chunk(self, jobs: list["_Job"]) -> None:
        """Outcomes of a chunk, and what the OPCO said, in one transaction."""
        done = [j for j in jobs if j.tid is not None and j.status in (SENT, REJECTED, BLOCKED, PENDING)]
        conn = self._db()
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
                    [(j.tid, j.status, j.attempts, getattr(j.resp, "status", None),
                      getattr(j.resp, "numero_externe", None), getattr(j.resp, "numero_deca", None),
                      json.dumps(j.resp.erreurs, ensure_ascii=False) if getattr(j.resp, "erreurs", None) else None,
                      j.message) for j in done], page_size=1000)
            sent = [j for j in jobs if j.status == SENT]
            if sent:
                rows = []
                for j in sent:
                    body = getattr(j.resp, "body", None) or {}
                    etat = getattr(j.resp, "etat", None) or body.get("etat") or "TRANSMIS"
                    rows.append((j.row["source_id"], j.row["numero_interne"], j.row["opco_code"], j.row["cfa_siren"],
                                 self.conn_id, j.row["nature"], getattr(j.resp, "numero_externe", None),
                                 getattr(j.resp, "numero_deca", None), etat, body.get("dateEtat"), self.run_id,
                                 j.via, j.row["content_hash"]))
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
            already = [j for j in jobs if j.status == "ALREADY_SENT"]
            if already:
                psycopg2.extras.execute_values(cur, """
                    UPDATE dossier_registry r SET transmitted_hash = v.h,
                           transmitted_at = COALESCE(r.transmitted_at, now())
                    FROM (VALUES %s) AS v (s, n, h) WHERE r.source_id = v.s AND r.numero_interne = v.n""",
                    [(j.row["source_id"], j.row["numero_interne"], j.row["content_hash"]) for j in already])
        conn.commit()
        for j in jobs:
            if j.status == SENT:
                self.result.add("resolved_in_doubt" if j.via == "reprise" else "sent")
            elif j.status == "ALREADY_SENT":
                self.result.add("already_sent")
            elif j.status == REJECTED:
                self.result.add("rejected")
                self.result.error(j.row["numero_interne"], f"HTTP {getattr(j.resp, 'status', '?')} {j.message}")
            elif j.status == BLOCKED:
                self.result.add("blocked")
            elif j.status == PENDING:
                self.result.add("in_doubt")
                self.result.error(j.row["numero_interne"], j.message or "")

    def _start_chunk(self, pool: cf.ThreadPoolExecutor, rows: list[dict], ledger: dict) -> tuple[list, list]:
        """Commit a chunk's intents, then queue its sends (they leave while the caller goes on)."""
        jobs = self._prepare_chunk(rows, ledger)
        queue = collections.deque(j for j in jobs if j.status is None)
        # a few drainers share the chunk's queue (cheaper than one future per dossier)
        return jobs, [pool.submit(self._drain, queue) for _ in range(min(self.max_workers, len(queue)))]

    def _drain(self, queue: collections.deque) -> None:
        while True:
            try:
                job = queue.popleft()
            except IndexError:
                return
            try:
                self._http_send(job)
            except Exception as exc:   # unforeseen: the intent stays in doubt, the batch goes on
                log.exception("sending %s", job.row["numero_interne"])
                job.status, job.message = PENDING, f"erreur inattendue à l'envoi : {type(exc).__name__}"

    def _finish_chunk(self, pool: cf.ThreadPoolExecutor, jobs: list, futures: list, ledger: dict) -> list:
        """Wait for a chunk's sends, record their outcomes, queue the documents of the dossiers
        the OPCO now holds (and those a crash may have left behind); return their futures."""
        for fut in futures:
            fut.result()
        self._record_chunk(jobs)
        return [(pool.submit(self._send_pieces, j.row, ledger), j.row) for j in jobs
                if j.status in (SENT, "ALREADY_SENT")
                and self._pieces.get((j.row["source_id"], j.row["numero_interne"]))]

    def _wait_pieces(self, pieces: list) -> None:
        for fut, row in pieces:
            try:
                fut.result()
            except Exception as exc:   # a document failing never fails the batch
                log.exception("documents of %s", row["numero_interne"])
                self.result.error(row["numero_interne"], f"pièces : {type(exc).__name__}: {exc}")

    def _changed_after_send(self, row: dict, digest: str, payload: dict, history: list[dict]) -> None:
        """The norm has no update of a sent dossier: a rupture goes by its own route; any
        other change is an avenant to type in the ERP — never a second dossier."""
        if row.get("date_rupture"):
            self._send_rupture(row)
            return
        message = ("Le dossier a changé dans l'ERP après sa transmission : la modification se déclare par un "
                   "avenant (types 31 à 38) à saisir dans l'ERP ; rien n'a été renvoyé")
        if row.get("statut") == "ANNULE":
            message = ("Le dossier a été annulé dans l'ERP après sa transmission : l'annulation se fait "
                       "auprès de l'OPCO (la norme n'a pas de route d'annulation) ; rien n'a été envoyé")
        if any(t["status"] == BLOCKED and t["content_hash"] == digest for t in history):
            self.result.add("blocked")
            return
        self._insert_intent(row, OP_DOSSIER, digest, payload, status=BLOCKED, message=message)
        self.result.add("blocked")

    def _send_rupture(self, row: dict) -> None:
        from cfa_opco.providers.opco.exceptions import OpcoRouteNotServed, OpcoUnavailable

        body = {"numeroInterne": row["numero_interne"], "dateRupture": str(row["date_rupture"]),
                "motif": row.get("motif_rupture") or "Rupture"}
        tid = self._insert_intent(row, OP_RUPTURE, payload_hash(body), body)
        if tid is None:
            return
        try:
            resp = self.hook.send_rupture(body)
        except OpcoRouteNotServed as exc:
            self._outcome(tid, BLOCKED, message=str(exc))
            self.result.add("blocked")
            return
        except OpcoUnavailable as exc:
            self._outcome(tid, PENDING, message=str(exc))
            self.result.add("in_doubt")
            return
        self._outcome(tid, SENT if resp.ok else REJECTED, resp)
        if resp.ok:
            self._mark_registry(row)
            self.result.add("ruptures_sent")

    def _send_pieces(self, row: dict, ledger: dict) -> None:
        """Supporting documents, attached once the OPCO has the dossier."""
        from cfa_opco.providers.opco.exceptions import OpcoRouteNotServed, OpcoUnavailable

        pieces = self._pieces.get((row["source_id"], row["numero_interne"]), [])
        for piece in pieces:
            content = piece["content"]
            if content is None:
                self.result.error(row["numero_interne"], f"pièce {piece['nom_fichier']} illisible : {piece['error']}")
                continue
            digest = hashlib.sha256(content).hexdigest()
            meta = {"typeFichier": piece["type_piece"], "nomFichier": piece["nom_fichier"],
                    "objets": [{"typeObjet": "DOSSIER", "idObjet": row["numero_interne"]}], "sha256": digest}
            known = [t for t in ledger.get((row["source_id"], row["numero_interne"], OP_PIECE), [])
                     if t["content_hash"] == digest and t["status"] in (SENT, PENDING)]
            if any(t["status"] == SENT for t in known):
                continue
            # a document in doubt has no read-back route in the norm: it is sent again
            tid = known[-1]["id"] if known else self._insert_intent(row, OP_PIECE, digest, meta)
            if tid is None:
                continue   # being sent by another worker
            try:
                resp = self.hook.attach_document(row["numero_interne"], piece["type_piece"], piece["nom_fichier"],
                                                 content, piece["type_mime"])
            except OpcoRouteNotServed as exc:
                self._outcome(tid, BLOCKED, message=str(exc))
                continue
            except OpcoUnavailable as exc:
                self._outcome(tid, PENDING, message=str(exc))
                continue
            self._outcome(tid, SENT if resp.ok else REJECTED, resp)
            if resp.ok:
                self.result.add("pieces_sent")

    def _load_pieces(self, rows: list[dict]) -> None:
        """Documents of the batch's dossiers, read from each source in one query."""
        self._pieces: dict[tuple, list[dict]] = {}
        if self.dry_run:
            return
        by_source: dict[str, list[str]] = {}
        for r in rows:
            if r["nature"] != NATURE_AVENANT:
                by_source.setdefault(r["source_id"], []).append(r["numero_interne"])
        for source_id, numeros in by_source.items():
            source = self.sources.get(source_id)
            if source is None or not source.pieces_sql:
                continue
            conn = connect(source.connection, application_name="cfa_opco.pieces")
            try:
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    cur.execute(source.pieces_sql, {"numeros": numeros})
                    for p in cur.fetchall():
                        content, error = None, None
                        if p.get("contenu") is not None:
                            content = bytes(p["contenu"])
                        elif p.get("chemin"):
                            path = (source.files_root / p["chemin"]) if source.files_root else None
                            try:
                                content = path.read_bytes()
                            except (OSError, AttributeError) as exc:
                                error = f"{p['chemin']}: {exc.__class__.__name__}"
                        self._pieces.setdefault((source_id, p["numero_interne"]), []).append(
                            {**p, "content": content, "error": error})
            finally:
                conn.close()

    def run(self) -> dict:
        try:
            if not self.dry_run:
                try:
                    self.result.key_warning = self.hook.key_expiry_warning(self.key_warning_days)
                except Exception as exc:  # a key check failing must not stop the sending
                    log.warning("key check of %s failed: %s", self.conn_id, exc)
                if self.result.key_warning:
                    log.warning("%s", self.result.key_warning)
            rows, ledger = self._load()
            self._load_pieces(rows)
            contracts = [r for r in rows if r["nature"] != NATURE_AVENANT]
            avenants = [r for r in rows if r["nature"] == NATURE_AVENANT]
            # avenants after the contracts they amend: they need the contract's numéro DECA.
            # By chunks: one committed statement for the intents, the sends in parallel, one
            # transaction for the outcomes. The next chunk is prepared and queued while the
            # current one is on the wire, so the threads never wait for the database.
            pieces: list = []
            with _short_gil_slices(), cf.ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                for group in (contracts, avenants):
                    inflight: collections.deque = collections.deque()
                    for i in range(0, len(group), self.chunk_size):
                        if self._stop.is_set():
                            break
                        inflight.append(self._start_chunk(pool, group[i:i + self.chunk_size], ledger))
                        if len(inflight) > 1:
                            pieces += self._finish_chunk(pool, *inflight.popleft(), ledger)
                    while inflight:   # the group is done before the next starts
                        pieces += self._finish_chunk(pool, *inflight.popleft(), ledger)
                self._wait_pieces(pieces)
        finally:
            if self.recorder is not None:
                self.recorder.flush()
            self._close()
            if self._owns_hooks:
                for hook in {id(self.hook): self.hook, id(self.send_hook): self.send_hook}.values():
                    hook.close()
        return self.result.as_dict()


def transmit_batch(run_id: str, connector: str, conn_id: str, **kwargs) -> dict:
    from cfa_opco.db.connect import airflow_connection, cached_connections

    with cached_connections():
        if kwargs.get("hook") is None:
            airflow_connection(conn_id)   # in the main thread, for the worker threads
        return BatchTransmitter(run_id, connector, conn_id, **kwargs).run()

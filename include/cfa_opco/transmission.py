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
import datetime as dt
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


class Status:
    """The status of a ledger row (``transmission.status``), in one place."""
    SENT = "SENT"           # the OPCO holds it (answer read, or confirmed by reading back)
    PENDING = "PENDING"     # intent committed, outcome unknown: in doubt until read back
    REJECTED = "REJECTED"   # the OPCO refused the payload (4xx with its erreurs)
    BLOCKED = "BLOCKED"     # not sent, and will not be as such (route not served, key refused, changed after send...)
    WAITING = "WAITING"     # not sent yet: waits for another dossier (an avenant for its base contract)
    DRY_RUN = "DRY_RUN"     # payload built and checked, nothing sent
    ALL = (SENT, PENDING, REJECTED, BLOCKED, WAITING, DRY_RUN)
    LABELS = {SENT: "transmis", PENDING: "en doute", REJECTED: "refusé par l'OPCO", BLOCKED: "non transmissible",
              WAITING: "en attente d'un autre dossier", DRY_RUN: "essai à blanc"}


SENT, PENDING, REJECTED, BLOCKED, DRY_RUN, WAITING = (Status.SENT, Status.PENDING, Status.REJECTED, Status.BLOCKED,
                                                      Status.DRY_RUN, Status.WAITING)
OP_DOSSIER, OP_PIECE, OP_RUPTURE = "DOSSIER", "PIECE", "RUPTURE"

# what one attempt to send a dossier comes back with (the hook's SendOutcome kinds)
CREATED, REFUSED, RETRY_LATER, AMBIGUOUS, UNREADABLE = "CREATED", "REJECTED", "RETRY_LATER", "AMBIGUOUS", "UNREADABLE"
_SEND, _SETTLE = 0, 1


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


def waiting_reasons(conn, bases: list[tuple[str, str | None]]) -> dict[tuple, str]:
    """{(source_id, base numero): why an avenant of that base contract cannot leave yet}
    (French, for the ledger, the run report and the quality report)."""
    keys = sorted({(src, b) for src, b in bases if b})
    out: dict[tuple, str] = {(src, b): ("avenant sans contrat de base (numéro du contrat amendé absent dans l'ERP) : "
                                        "à compléter dans l'ERP") for src, b in bases if not b}
    if not keys:
        return out
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
    for src, base, verdict, rules, etat, deca, status, known in found:
        who = f"contrat de base {base}"
        if verdict == "QUARANTINE" and etat is None:
            text = (f"en attente : le {who} est en quarantaine ({', '.join(rules or []) or 'anomalies'}) — à "
                    "corriger dans l'ERP ; l'avenant partira quand l'OPCO aura accepté le contrat")
        elif etat is not None and not deca:
            text = (f"en attente : le {who} est à l'OPCO (état {etat}) mais pas encore accepté (pas de numéro "
                    "DECA) ; l'avenant partira au premier run après l'engagement")
        elif status == PENDING:
            text = f"en attente : le {who} est en doute (réponse de l'OPCO perdue), relu avant l'avenant"
        elif status == REJECTED:
            text = f"en attente : le {who} a été refusé par l'OPCO ; à corriger et renvoyer avant l'avenant"
        elif status in (BLOCKED, WAITING):
            text = f"en attente : le {who} n'a pas pu être transmis ({Status.LABELS[status]})"
        elif not known:
            text = f"en attente : le {who} est inconnu du connecteur (jamais extrait de l'ERP)"
        else:
            text = f"en attente : le {who} n'a pas encore été transmis à l'OPCO"
        out[(src, base)] = text
    return out


def settle_in_doubt(connector: str, conn_ids: list[str] | None = None, *, sources=None, software: dict | None = None,
                    deadline_seconds: float = 600.0, **kwargs) -> dict:
    """Settle every dossier left in doubt (PENDING intent), whatever the run: read back at the
    OPCO, re-sent only when provably absent (the follow-up DAG's settle_in_doubt task).
    Returns {"before", "after", "per_batch": {"<run_id> <conn_id>": summary}}."""
    from cfa_opco.db.connect import connection, dsn_for

    connector = dsn_for(connector)
    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("""SELECT t.run_id, t.conn_id, count(*) FROM transmission t
                       JOIN transmission_plan p ON p.run_id = t.run_id AND p.source_id = t.source_id
                        AND p.numero_interne = t.numero_interne AND p.decision = 'ROUTED'
                       WHERE t.status = 'PENDING' AND t.operation = 'DOSSIER'
                         AND (%s::text[] IS NULL OR t.conn_id = ANY(%s::text[]))
                       GROUP BY 1, 2 ORDER BY 1, 2""", (conn_ids, conn_ids))
        batches = cur.fetchall()
    out: dict = {"before": sum(n for *_, n in batches), "per_batch": {}, "errors": {}}
    for run_id, conn_id, _n in batches:
        try:
            out["per_batch"][f"{run_id} {conn_id}"] = transmit_batch(
                run_id, connector, conn_id, sources=sources, software=software, only_in_doubt=True,
                deadline_seconds=deadline_seconds, **kwargs)
        except Exception as exc:   # one key failing never stops the others
            log.warning("settling the dossiers in doubt of %s (%s) failed: %s", conn_id, run_id, exc)
            out["errors"][conn_id] = str(exc)[:500]
    out["after"] = in_doubt_count(connector, conn_ids)
    return out


def in_doubt_count(connector: str, conn_ids: list[str] | None = None) -> int:
    from cfa_opco.db.connect import connection

    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("""SELECT count(DISTINCT (source_id, numero_interne)) FROM transmission
                       WHERE status = 'PENDING' AND operation = 'DOSSIER'
                         AND (%s::text[] IS NULL OR conn_id = ANY(%s::text[]))""", (conn_ids, conn_ids))
        return cur.fetchone()[0]


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
    waiting: int = 0
    dry_run: int = 0
    pieces_sent: int = 0
    ruptures_sent: int = 0
    retried_later: int = 0        # answers 429 (Retry-After honoured for that request)
    ambiguous: int = 0            # answers lost (timeout, dropped connection, 5xx, unreadable)
    read_backs: int = 0           # grouped read-back calls that settled them
    key_pauses: int = 0           # whole-key pauses (consecutive 429: real rate limiting)
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
        d["deferred"] = self.waiting    # (older name)
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
    attempts: int = 0               # sends
    settles: int = 0                # read-backs that could not be read
    last_error: str = ""


class _Found:
    """What a read-back found, in the shape of an OpcoResponse."""
    status = 200
    erreurs = None

    def __init__(self, state):
        if isinstance(state, dict):
            body = state
        else:   # an object of the hook (attributes), or a bare state string
            body = {k: getattr(state, a, None) for k, a in (("etat", "etat"), ("numeroExterne", "numero_externe"),
                                                            ("numeroDeca", "numero_deca"), ("dateEtat", "date_etat"))}
            body = {k: v for k, v in body.items() if v is not None}
            if isinstance(state, str):
                body = {"etat": state}
        self.body = body
        self.etat = body.get("etat")
        self.numero_externe = body.get("numeroExterne")
        self.numero_deca = body.get("numeroDeca")
        self.date_etat = body.get("dateEtat")


def _tick(when: float, step: float = 0.25) -> float:
    """Read-backs fall due on quarter-second ticks: those due together are read in one call."""
    import math

    return math.ceil(when / step) * step


def _unreadable(value) -> bool:
    """A read-back value that settles nothing (the hook's Unreadable)."""
    return isinstance(value, Exception) or type(value).__name__ == "Unreadable"


class _DelayQueue:
    """The batch's dossiers waiting for their next step (a send, or a grouped read-back), each
    at its own time: a retry waits here, not in a worker thread, so it never holds up the
    other dossiers. A whole-key pause (real rate limiting) delays every step of the key."""

    def __init__(self, deadline: float, group: int):
        self.cond = threading.Condition()
        self.heaps: dict[int, list] = {_SEND: [], _SETTLE: []}
        self.seq = 0
        self.outstanding = 0
        self.finished: list = []
        self.deadline = deadline
        self.group = group
        self.pause_until = 0.0
        self.consecutive_429 = 0
        self.closed = False

    def put(self, kind: int, when: float, job: _Job, new: bool = False) -> None:
        import heapq

        with self.cond:
            self.seq += 1
            heapq.heappush(self.heaps[kind], (when, self.seq, job))
            if new:
                self.outstanding += 1
            self.cond.notify()

    def finish(self, job: _Job) -> None:
        with self.cond:
            self.outstanding -= 1
            self.finished.append(job)
            self.cond.notify_all()

    def expire(self) -> None:
        """Everything left is due now (deadline reached, or the key refused)."""
        with self.cond:
            self.deadline = 0.0
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self) -> tuple[int, list[_Job]] | None:
        import heapq
        import time

        with self.cond:
            while True:
                if self.closed:
                    return None
                now = time.monotonic()
                late = now >= self.deadline
                best = None
                for kind, heap in self.heaps.items():
                    if heap:
                        start = heap[0][0] if late else max(heap[0][0], self.pause_until)
                        if best is None or start < best[0]:
                            best = (start, kind)
                if best is not None and best[0] <= now:
                    kind = best[1]
                    heap = self.heaps[kind]
                    jobs = [heapq.heappop(heap)[2]]
                    if kind == _SETTLE:   # read back together all that are due (one liste call)
                        while heap and len(jobs) < self.group and (late or heap[0][0] <= now):
                            jobs.append(heapq.heappop(heap)[2])
                    return kind, jobs
                wait = 0.5 if best is None else best[0] - now
                self.cond.wait(max(0.001, min(wait, self.deadline - now if not late else wait, 0.5)))

    def active(self) -> int:
        """Outstanding jobs that are due or being worked on: those waiting for a later time
        (Retry-After, a backoff, a read-back's tick) do not hold up the next chunk."""
        import time

        with self.cond:
            now = time.monotonic()
            later = sum(1 for heap in self.heaps.values() for entry in heap if entry[0] > now)
            return self.outstanding - later

    def drain_finished(self, wait: float = 0.0) -> list:
        with self.cond:
            if wait and not self.finished and self.outstanding:
                self.cond.wait(wait)
            done, self.finished = self.finished, []
            return done


class BatchTransmitter:
    """Sends one (OPCO, SIREN) share of a run: worker threads over one hook, fed by a delay
    queue (retries, Retry-After and read-backs wait there, never in a thread)."""

    def __init__(self, run_id: str, connector: str, conn_id: str, *, sources=None, hook=None,
                 software: dict | None = None, dry_run: bool = False, max_workers: int = 8,
                 key_warning_days: int = 30, proof_recorder=None, send_hook=None, send_attempts: int = 6,
                 retry_base: float = 0.25, chunk_size: int = 200, read_timeout: float | None = None,
                 deadline_seconds: float = 900.0, settle_delay: float | None = None, key_pause_after: int = 4,
                 only_in_doubt: bool = False):
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
        read_hook = None
        self.send_attempts, self.retry_base, self.chunk_size = send_attempts, retry_base, chunk_size
        self.read_timeout, self.deadline_seconds = read_timeout, deadline_seconds
        # a read-back waits a little: the OPCO may still be recording a dossier whose answer was lost
        self.settle_delay = settle_delay if settle_delay is not None else max(0.05, 2 * retry_base)
        self.key_pause_after, self.only_in_doubt = key_pause_after, only_in_doubt
        if hook is None:
            from cfa_opco.providers.opco.hooks.opco import OpcoHook
            from cfa_opco.proofs import ProofRecorder

            if self.recorder is None and not dry_run:
                self.recorder = ProofRecorder(connector)
            sink = self.recorder if not dry_run else None
            # writes are never retried by the hook: one attempt, a short read timeout (a held
            # answer is in doubt and read back, not waited for); the delay queue retries
            # (read timeout: the connection's — extra read_timeout, 5 s by default — unless given)
            timeout = (3.05, read_timeout) if read_timeout else None
            send_hook = OpcoHook(conn_id, software=software, run_id=run_id, proof_sink=sink, max_attempts=1,
                                 max_rate_limited=0, timeout=timeout, backoff_base=2 * retry_base)
            hook = OpcoHook(conn_id, software=software, run_id=run_id, proof_sink=sink,
                            timeout=timeout, backoff_base=2 * retry_base)
            # read-backs: one attempt, a 429 not waited for in the thread (the delay queue retries)
            read_hook = OpcoHook(conn_id, software=software, run_id=run_id, proof_sink=sink, max_attempts=1,
                                 max_rate_limited=0, timeout=timeout, backoff_base=2 * retry_base)
        self.hook = hook                      # documents, ruptures, key check (retried by the hook)
        self.send_hook = send_hook or hook    # writes
        self.read_hook = read_hook or hook    # read-backs

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
                             AND (NOT %s OR EXISTS (SELECT 1 FROM transmission t WHERE t.status = 'PENDING'
                                  AND t.operation = 'DOSSIER' AND t.source_id = p.source_id
                                  AND t.numero_interne = p.numero_interne))
                           ORDER BY (s.nature = %s), s.numero_interne""",
                        (self.run_id, self.conn_id, self.only_in_doubt, NATURE_AVENANT))
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
    def _find(self, numeros: list[str], since=None, first_route_only: bool = False) -> dict:
        """{numero: what the OPCO holds, or None when it provably does not hold it}; raises when
        no read route can be read (the dossiers stay in doubt). ``since``: none of them can have
        been created before (bounds the state-changes window of the read-back).
        ``first_route_only``: the first read route only (read again soon on failure)."""
        hook = self.read_hook
        if hasattr(hook, "find_dossiers"):   # one attempt per route: the delay queue retries
            return hook.find_dossiers(numeros, since=since, max_attempts=1, first_route_only=first_route_only)
        caps = hook.capabilities
        if caps.serves("liste_v1"):
            found = {f.get("numeroInterne"): f for f in hook.list_dossiers(numeros) if isinstance(f, dict)}
            return {n: found.get(n) for n in numeros}
        out = {}
        for n in numeros:
            resp = hook.get_dossier(n)
            if resp.status == 200:
                out[n] = resp.body
            elif resp.status == 404:
                out[n] = None
            else:
                raise RuntimeError(f"relecture du dossier {n} : HTTP {resp.status}")
        return out

    def _attempt_send(self, job: _Job) -> tuple[str, object, float | None, str]:
        """One attempt: (kind, response, retry_after, message). OpcoRouteNotServed and
        OpcoAuthError go through to the caller."""
        hook = self.send_hook
        if hasattr(hook, "send_once"):
            out = hook.send_once(job.payload, encoded=job.body)
            kind = getattr(out, "kind", None)
            kind = str(getattr(kind, "value", None) or kind).upper()
            if kind == RETRY_LATER and getattr(out, "status", None) in (500, 502, 503, 504):
                # a gateway error may come after the OPCO recorded the dossier (a lost answer):
                # read back before any resend, as for any other ambiguous answer
                kind = AMBIGUOUS
            return kind, out, getattr(out, "retry_after", None), str(getattr(out, "message", "") or "")
        from cfa_opco.providers.opco.exceptions import OpcoUnavailable

        try:
            resp = hook.send_dossier(job.payload, encoded=job.body)
        except OpcoUnavailable as exc:
            if "429" in (exc.last_error or ""):
                return RETRY_LATER, None, 1.0, str(exc)
            return AMBIGUOUS, None, None, str(exc)
        return (CREATED if resp.ok else REFUSED), resp, None, ""

    def _backoff(self, n: int) -> float:
        import random

        return min(30.0, self.retry_base * 2 ** min(n, 8)) * random.uniform(0.5, 1.5)

    def _settle_backoff(self, n: int) -> float:
        """Before reading back again after an unreadable read-back: short, with jitter (a 503 or
        a held answer is not rate limiting, and a 429 of the read was already waited for by the
        hook), growing to at most 2 s so that a long outage is not hammered."""
        import random

        return min(2.0, self.retry_base * 2 ** min(n, 8)) * random.uniform(0.5, 1.0)

    def _worker(self, q: _DelayQueue) -> None:
        while True:
            got = q.take()
            if got is None:
                return
            kind, jobs = got
            try:
                if kind == _SEND:
                    self._step_send(q, jobs[0])
                else:
                    self._step_settle(q, jobs)
            except Exception as exc:   # unforeseen: the intents stay in doubt, the batch goes on
                log.exception("sending %s", jobs[0].row["numero_interne"])
                for job in jobs:
                    job.status, job.message = PENDING, f"erreur inattendue à l'envoi : {type(exc).__name__}"
                    q.finish(job)

    def _in_doubt(self, q: _DelayQueue, job: _Job, why: str) -> None:
        job.status = PENDING
        job.message = (f"en doute : {why}{f' ({job.last_error})' if job.last_error else ''} — relu à l'OPCO avant "
                       "tout renvoi par le DAG de suivi (settle_in_doubt) ou le prochain run")[:1000]
        q.finish(job)

    def _step_send(self, q: _DelayQueue, job: _Job) -> None:
        import random
        import time

        from cfa_opco.providers.opco.exceptions import OpcoAuthError, OpcoRouteNotServed

        if self._stop.is_set():
            job.status, job.message = PENDING, "lot interrompu (clé refusée) : sera repris"
            q.finish(job)
            return
        if time.monotonic() >= q.deadline:
            self._in_doubt(q, job, "échéance du lot atteinte avant un nouvel envoi")
            return
        job.attempts += 1
        try:
            kind, resp, retry_after, message = self._attempt_send(job)
        except OpcoRouteNotServed as exc:
            job.status, job.message = BLOCKED, str(exc)
            q.finish(job)
            return
        except OpcoAuthError as exc:
            job.status, job.message = BLOCKED, str(exc)
            if getattr(exc, "code", None) != "SIREN_DIFFERENT":   # the key itself is refused
                self.result.auth_error = str(exc)
                self._stop.set()
                q.expire()
            q.finish(job)
            return
        now = time.monotonic()
        status = getattr(resp, "status", None)
        if kind == RETRY_LATER and status not in (None, 429):
            kind = AMBIGUOUS if status >= 500 else kind
        if kind == RETRY_LATER:
            # not processed: this request comes back at now + Retry-After; the key pauses
            # only when 429s come in a row (real rate limiting, not a random refusal)
            wait = retry_after if retry_after is not None else self._backoff(job.attempts)
            wait = min(max(0.0, float(wait)), 300.0)
            self.result.add("retried_later")
            with q.cond:
                if status == 429 or (status is None and "429" in message):
                    q.consecutive_429 += 1
                    if q.consecutive_429 >= self.key_pause_after and q.pause_until < now + wait:
                        q.pause_until = now + wait
                        self.result.add("key_pauses")
            job.last_error = message or "HTTP 429"
            q.put(_SEND, now + wait * random.uniform(1.0, 1.2), job)
            return
        with q.cond:
            q.consecutive_429 = 0
        if kind in (AMBIGUOUS, UNREADABLE) or kind not in (CREATED, REFUSED):
            self.result.add("ambiguous")
            job.last_error = (message or kind)[:300]
            if job.row["forced"]:
                # reading back cannot tell a forced resend from the copy the OPCO already
                # holds: a forced resend is simply sent again (after a pause)
                if job.attempts >= self.send_attempts:
                    self._in_doubt(q, job, f"renvoi forcé sans réponse après {job.attempts} tentatives")
                else:
                    q.put(_SEND, now + self._backoff(job.attempts), job)
                return
            q.put(_SETTLE, _tick(now + self.settle_delay), job)
            return
        job.resp = resp
        if kind == CREATED:
            job.status = SENT
        else:
            job.status = REJECTED
            if getattr(resp, "status", None) == 409:
                job.message = ("L'OPCO connaît déjà ce numéro de dossier avec un autre contenu : une "
                               "modification après envoi se transmet par un avenant")
            else:
                job.message = ("; ".join(f"{e.get('champ') or ''}: {e.get('message')}"
                                         for e in (getattr(resp, "erreurs", None) or [])) or message)[:1000]
        q.finish(job)

    def _step_settle(self, q: _DelayQueue, jobs: list[_Job]) -> None:
        """Read back, together, dossiers whose answer was lost: found, they are SENT (never sent
        again); provably absent, they are sent again; unreadable, they wait and are read again,
        until the batch's deadline (then they stay in doubt, with the reason)."""
        import time

        if self._stop.is_set():
            for job in jobs:
                job.status, job.message = PENDING, "lot interrompu (clé refusée) : sera repris"
                q.finish(job)
            return
        numeros = [j.row["numero_interne"] for j in jobs]
        self.result.add("read_backs")
        # intents of this batch cannot have been created at the OPCO before it started (an hour
        # of margin for clocks); one left in doubt by an earlier run: the hook's default window
        since = None if any(j.resolve for j in jobs) else self._started_utc - dt.timedelta(hours=1)
        try:
            # the first read-backs of a group use the first read route only (one liste call): a
            # random failure of that call is read again soon rather than followed by one GET per
            # dossier in this thread; after two failed read-backs, every route the OPCO serves
            found = self._find(numeros, since, first_route_only=min(j.settles for j in jobs) < 2)
            error = None
        except Exception as exc:   # Unreadable, OpcoUnavailable, an answer nobody understands
            found, error = {}, f"relecture impossible : {str(exc)[:200]}"
        now = time.monotonic()
        late = now >= q.deadline
        for job in jobs:
            numero = job.row["numero_interne"]
            why = error
            if numero in found and _unreadable(found[numero]):
                why = f"relecture impossible : {str(found.pop(numero))[:200]}"
            if numero in found and found[numero] is not None:
                job.status, job.resp, job.via = SENT, _Found(found[numero]), "reprise"
                job.message = "confirmé par relecture à l'OPCO après une réponse perdue"
                q.finish(job)
            elif numero in found:                     # provably absent: send (again)
                job.resolve = False
                if late:
                    self._in_doubt(q, job, "absent à l'OPCO, pas renvoyé avant l'échéance du lot")
                else:
                    q.put(_SEND, now, job)
            else:
                job.settles += 1
                if why:
                    job.last_error = why
                if late:
                    self._in_doubt(q, job, "réponse perdue et dossier non relu avant l'échéance du lot")
                else:
                    q.put(_SETTLE, _tick(now + self._settle_backoff(job.settles)), job)

    def _prepare_chunk(self, rows: list[dict], ledger: dict) -> list["_Job"]:
        """Decide each dossier's fate from the ledger; commit the new intents in one statement."""
        decas = self._base_decas([r for r in rows if r["nature"] == NATURE_AVENANT
                                  and not r.get("contrat_numero_precedent")])
        jobs, intents, waiting = [], [], []
        for row in rows:
            numero = row["numero_interne"]
            deca = None
            if row["nature"] == NATURE_AVENANT and not row.get("contrat_numero_precedent"):
                deca = decas.get((row["source_id"], row.get("base_numero_interne")))
                if deca is None:
                    # the amended contract has no numéro DECA yet: recorded as WAITING, with why
                    waiting.append(row)
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
        if waiting:
            self._record_waiting(waiting, ledger)
        return jobs

    def _record_waiting(self, rows: list[dict], ledger: dict) -> None:
        """Avenants whose base contract has no numéro DECA: a WAITING ledger row (once per run
        and content) naming the base contract and why it holds the avenant back."""
        reasons = waiting_reasons(self._db(), [(r["source_id"], r.get("base_numero_interne")) for r in rows])
        values = []
        for r in rows:
            self.result.add("waiting")
            history = ledger.get((r["source_id"], r["numero_interne"], OP_DOSSIER), [])
            if any(t["status"] == WAITING and t["run_id"] == self.run_id and t["content_hash"] == r["content_hash"]
                   for t in history):
                continue
            message = reasons.get((r["source_id"], r.get("base_numero_interne")))
            values.append((self.run_id, r["source_id"], r["numero_interne"], OP_DOSSIER, r["opco_code"],
                           r["cfa_siren"], self.conn_id, r["content_hash"], WAITING, message))
        if not values:
            return
        conn = self._db()
        with conn.cursor() as cur:
            psycopg2.extras.execute_values(cur, """
                INSERT INTO transmission (run_id, source_id, numero_interne, operation, opco_code, cfa_siren,
                    conn_id, content_hash, status, message) VALUES %s""", values, page_size=len(values))
        conn.commit()

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
                    body = getattr(j.resp, "body", None)
                    body = body if isinstance(body, dict) else {}
                    etat = getattr(j.resp, "etat", None) or body.get("etat") or "TRANSMIS"
                    etat_at = getattr(j.resp, "date_etat", None) or body.get("dateEtat")
                    rows.append((j.row["source_id"], j.row["numero_interne"], j.row["opco_code"], j.row["cfa_siren"],
                                 self.conn_id, j.row["nature"], getattr(j.resp, "numero_externe", None),
                                 getattr(j.resp, "numero_deca", None), etat, etat_at, self.run_id,
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

    def _collect(self, q: _DelayQueue, pool: cf.ThreadPoolExecutor, ledger: dict, pieces: list,
                 wait: float = 0.0) -> None:
        """Record the outcomes of the dossiers done so far (one transaction), queue the
        documents of those the OPCO now holds."""
        done = q.drain_finished(wait)
        if done:
            self._record_done(done, pool, ledger, pieces)

    def _record_done(self, done: list, pool: cf.ThreadPoolExecutor, ledger: dict, pieces: list) -> None:
        self._record_chunk(done)
        pieces += [(pool.submit(self._send_pieces, j.row, ledger), j.row) for j in done
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

    def _check_key(self) -> None:
        try:
            self.result.key_warning = self.hook.key_expiry_warning(self.key_warning_days)
        except Exception as exc:  # a key check failing must not stop the sending
            log.warning("key check of %s failed: %s", self.conn_id, exc)
        if self.result.key_warning:
            log.warning("%s", self.result.key_warning)

    def run(self) -> dict:
        self._started_utc = dt.datetime.now(dt.timezone.utc)
        key_check = None
        try:
            if not self.dry_run:   # the key's expiry, checked alongside the sending (never holds it up)
                key_check = threading.Thread(target=self._check_key, name="key-check", daemon=True)
                key_check.start()
            rows, ledger = self._load()
            self._load_pieces(rows)
            contracts = [r for r in rows if r["nature"] != NATURE_AVENANT]
            avenants = [r for r in rows if r["nature"] == NATURE_AVENANT]
            # avenants after the contracts they amend: they need the contract's numéro DECA.
            # By chunks: one committed statement for the intents (before anything leaves),
            # then the chunk's dossiers join the delay queue, the workers send them, and the
            # outcomes are recorded as they come, in transactions of what is done.
            import time

            pieces: list = []
            q = _DelayQueue(time.monotonic() + self.deadline_seconds, group=100)
            workers = [threading.Thread(target=self._worker, args=(q,), name=f"send-{i}", daemon=True)
                       for i in range(self.max_workers)]
            with _short_gil_slices(), cf.ThreadPoolExecutor(max_workers=min(4, self.max_workers)) as pool:
                for w in workers:
                    w.start()
                try:
                    for group in (contracts, avenants):
                        for i in range(0, len(group), self.chunk_size):
                            if self._stop.is_set():
                                break
                            jobs = self._prepare_chunk(group[i:i + self.chunk_size], ledger)
                            now = time.monotonic()
                            ready = []
                            for j in jobs:
                                if j.status is not None:      # already sent: nothing leaves
                                    ready.append(j)
                                else:                         # in doubt from before: read first
                                    q.put(_SETTLE if j.resolve else _SEND, now, j, new=True)
                            if ready:
                                self._record_done(ready, pool, ledger, pieces)
                            self._collect(q, pool, ledger, pieces)
                            # keep one chunk ahead, no more; the dossiers waiting for a later
                            # try (the tail: Retry-After, read-backs) do not count, so the
                            # next chunk is sent while they wait
                            while q.active() > 2 * self.chunk_size:
                                self._collect(q, pool, ledger, pieces, wait=0.2)
                        while q.outstanding > 0:   # the group is done before the next starts
                            self._collect(q, pool, ledger, pieces, wait=0.2)
                        self._collect(q, pool, ledger, pieces)
                finally:
                    q.close()
                    for w in workers:
                        w.join(timeout=(self.read_timeout or 30) + 5)
                self._wait_pieces(pieces)
            if key_check is not None:
                key_check.join(timeout=60)
        finally:
            if self.recorder is not None:
                self.recorder.flush()
            self._close()
            if self._owns_hooks:
                for hook in {id(h): h for h in (self.hook, self.send_hook, self.read_hook)}.values():
                    hook.close()
        return self.result.as_dict()


def transmit_batch(run_id: str, connector: str, conn_id: str, **kwargs) -> dict:
    from cfa_opco.db.connect import airflow_connection, cached_connections

    with cached_connections():
        if kwargs.get("hook") is None:
            airflow_connection(conn_id)   # in the main thread, for the worker threads
        return BatchTransmitter(run_id, connector, conn_id, **kwargs).run()

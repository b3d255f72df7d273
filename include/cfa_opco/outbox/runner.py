"""One runner drives a batch — one OPCO key's share of a run — for any operation: worker
threads over the provider's hooks, fed by a delay queue (retries, Retry-After and read-backs
wait there, never in a thread); a :class:`~.flow.Flow` hands it jobs whose intents are
committed, and hears their outcomes once recorded.

The runner holds the policy of an attempt (what follows it: done, retry at a time, read back,
in doubt); the SQL is :mod:`.ledger`'s, the HTTP the operations' through the OPCO provider.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import sys
import threading
import time

from cfa_opco import key_status
from cfa_opco.db.connect import airflow_connection, cached_connections, connect, dsn_for
from cfa_opco.proofs import ProofRecorder
from cfa_opco.providers.opco.exceptions import OpcoAuthError, OpcoRouteNotServed
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.outcomes import SendKind
from cfa_opco.providers.opco.norm import KEY_SCOPE_ERRORS

from . import ledger, policy
from .delay_queue import SEND, SETTLE, DelayQueue
from .dossier_batch import DossierBatch
from .flow import Flow
from .operations import Found, Job, Operation
from .result import BatchResult
from .status import Status

log = logging.getLogger(__name__)

_SLICES_LOCK = threading.Lock()
_SLICES_USERS = [0, None]   # batches running in this process, switch interval before the first


@contextlib.contextmanager
def short_gil_slices(seconds: float = 0.001):
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


def _unreadable(value) -> bool:
    """A read-back value that settles nothing (the hook's Unreadable, an OpcoError)."""
    return isinstance(value, Exception)


class BatchRunner:
    """Drives a :class:`Flow` for one key: its hooks (one attempt per write, the delay queue
    retries), worker threads, the deadline after which what is unsettled stays in doubt."""

    def __init__(self, run_id: str, connector: str, conn_id: str, *, hook=None,
                 software: dict | None = None, dry_run: bool = False, max_workers: int = 8,
                 key_warning_days: int = 30, proof_recorder=None, send_hook=None, send_attempts: int = 6,
                 retry_base: float = 0.25, chunk_size: int = 200, read_timeout: float | None = None,
                 deadline_seconds: float = 900.0, settle_delay: float | None = None, key_pause_after: int = 4,
                 absent_grace: float = 10.0):
        connector = dsn_for(connector)   # resolved here: worker threads cannot look connections up
        self.run_id, self.connector, self.conn_id = run_id, connector, conn_id
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
        # a request that got no answer (timeout, dropped connection, 504) may still be on its way
        # to the OPCO — queued in a gateway or a busy server — and be recorded later: "absent"
        # is trusted only from a read-back made this long after it (found, it settles at once)
        self.absent_grace = absent_grace
        self.key_pause_after = key_pause_after
        if hook is None:
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
        self.hook = hook                      # the key check (retried by the hook)
        self.send_hook = send_hook or hook    # writes, one attempt each
        self.read_hook = read_hook or hook    # read-backs

    # -- database --------------------------------------------------------------------
    def db(self):
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

    # -- sending -----------------------------------------------------------------------
    def _worker(self, q: DelayQueue) -> None:
        while True:
            got = q.take()
            if got is None:
                return
            kind, jobs = got
            try:
                if kind == SEND:
                    self._step_send(q, jobs[0])
                else:
                    self._step_settle(q, jobs)
            except Exception as exc:   # unforeseen: the intents stay in doubt, the batch goes on
                log.exception("sending %s", jobs[0].numero)
                for job in jobs:
                    job.status, job.message = Status.PENDING, f"erreur inattendue à l'envoi : {type(exc).__name__}"
                    q.finish(job)

    def _in_doubt(self, q: DelayQueue, job: Job, why: str) -> None:
        job.status, job.message = Status.PENDING, policy.in_doubt_message(why, job.last_error)
        q.finish(job)

    def _step_send(self, q: DelayQueue, job: Job) -> None:
        if self._stop.is_set():
            job.status, job.message = Status.PENDING, policy.INTERRUPTED
            q.finish(job)
            return
        if time.monotonic() >= q.deadline:
            self._in_doubt(q, job, "échéance du lot atteinte avant un nouvel envoi")
            return
        job.attempts += 1
        try:
            attempt = job.op.send(self.send_hook, job)
        except OpcoRouteNotServed as exc:
            job.status, job.message = Status.BLOCKED, str(exc)
            q.finish(job)
            return
        except OpcoAuthError as exc:
            job.status, job.message = Status.BLOCKED, str(exc)
            if getattr(exc, "code", None) not in KEY_SCOPE_ERRORS:   # the key itself is refused
                self.result.auth_error = str(exc)
                self._stop.set()
                q.expire()
            q.finish(job)
            return
        now = time.monotonic()
        kind, resp, message = attempt.kind, attempt.response, attempt.message
        status = getattr(resp, "status", None)
        if kind is SendKind.RETRY_LATER and status not in (None, 429):
            kind = SendKind.AMBIGUOUS if status >= 500 else kind
        if kind is SendKind.RETRY_LATER:
            # not processed: this request comes back at now + Retry-After; the key pauses
            # only when 429s come in a row (real rate limiting, not a random refusal)
            wait = attempt.retry_after if attempt.retry_after is not None else policy.backoff(job.attempts,
                                                                                             self.retry_base)
            wait = min(max(0.0, float(wait)), 300.0)
            self.result.add("retried_later")
            with q.cond:
                if status == 429 or (status is None and "429" in message):
                    q.consecutive_429 += 1
                    if q.consecutive_429 >= self.key_pause_after and q.pause_until < now + wait:
                        q.pause_until = now + wait
                        self.result.add("key_pauses")
            job.last_error = message or "HTTP 429"
            q.put(SEND, now + wait * random.uniform(1.0, 1.2), job)
            return
        with q.cond:
            q.consecutive_429 = 0
        if kind not in (SendKind.CREATED, SendKind.REJECTED):     # AMBIGUOUS, UNREADABLE: the write may be done
            self.result.add("ambiguous")
            job.last_error = (message or kind)[:300]
            if job.row["forced"] or job.op.read_back is None:
                # nothing can tell whether it was recorded (a forced resend is indistinguishable
                # from the copy the OPCO holds; a document or a rupture has no read route):
                # sent again after a pause
                if job.attempts >= self.send_attempts:
                    self._in_doubt(q, job, f"sans réponse après {job.attempts} tentatives")
                else:
                    q.put(SEND, now + policy.backoff(job.attempts, self.retry_base), job)
                return
            if status is None or status == 504:
                job.absent_after = now + self.absent_grace
            q.put(SETTLE, policy.tick(now + self.settle_delay), job)
            return
        job.resp = resp
        if kind is SendKind.CREATED:
            job.status = Status.SENT
        else:
            job.status, job.message = Status.REJECTED, policy.rejection_message(resp, message)
        q.finish(job)

    def _step_settle(self, q: DelayQueue, jobs: list[Job]) -> None:
        """Read back, together, jobs whose answer was lost: found, they are SENT (never sent
        again); provably absent, they are sent again; unreadable, they wait and are read again,
        until the batch's deadline (then they stay in doubt, with the reason)."""
        if self._stop.is_set():
            for job in jobs:
                job.status, job.message = Status.PENDING, policy.INTERRUPTED
                q.finish(job)
            return
        by_op: dict[str, list[Job]] = {}
        for job in jobs:
            by_op.setdefault(job.op.code, []).append(job)
        for group in by_op.values():
            self._settle_group(q, group[0].op, group)

    def _settle_group(self, q: DelayQueue, op: Operation, jobs: list[Job]) -> None:
        numeros = [j.key for j in jobs]
        self.result.add("read_backs")
        # intents of this batch cannot have been created at the OPCO before it started (an hour
        # of margin for clocks); one left in doubt by an earlier run: the hook's default window
        since = None if any(j.resolve for j in jobs) else self._started_utc - dt.timedelta(hours=1)
        try:
            # the first read-backs of a group use the first read route only (one liste call): a
            # random failure of that call is read again soon rather than followed by one GET per
            # dossier in this thread; after two failed read-backs, every route the OPCO serves
            found = op.read_back(self.read_hook, numeros, since, min(j.settles for j in jobs) < 2)
            error = None
        except Exception as exc:   # Unreadable, OpcoUnavailable, an answer nobody understands
            found, error = {}, f"relecture impossible : {str(exc)[:200]}"
        now = time.monotonic()
        late = now >= q.deadline
        for job in jobs:
            key = job.key
            why = error
            if key in found and _unreadable(found[key]):
                why = f"relecture impossible : {str(found.pop(key))[:200]}"
            if key in found and found[key] is not None:
                job.status, job.resp, job.via = Status.SENT, Found(found[key]), "reprise"
                job.message = "confirmé par relecture à l'OPCO après une réponse perdue"
                q.finish(job)
            elif key in found and now < job.absent_after and not late:
                # absent for now, but the lost request may still arrive: read again after the grace
                q.put(SETTLE, policy.tick(job.absent_after), job)
            elif key in found:                     # provably absent: send (again)
                job.resolve = False
                if late:
                    self._in_doubt(q, job, "absent à l'OPCO, pas renvoyé avant l'échéance du lot")
                else:
                    q.put(SEND, now, job)
            else:
                job.settles += 1
                if why:
                    job.last_error = why
                if late:
                    self._in_doubt(q, job, "réponse perdue et dossier non relu avant l'échéance du lot")
                else:
                    q.put(SETTLE, policy.tick(now + policy.settle_backoff(job.settles, self.retry_base)), job)

    # -- recording ---------------------------------------------------------------------
    def _record(self, done: list[Job], flow: Flow) -> list[Job]:
        """Record the outcomes of the jobs done (one transaction); return the jobs that follow."""
        ledger.record_outcomes(self.db(), self.run_id, self.conn_id, done)
        for j in done:
            self._count(j)
        return flow.recorded(done)

    def _count(self, j: Job) -> None:
        if j.status == ledger.ALREADY_SENT:
            self.result.add("already_sent")
            return
        if j.op.counts_dossier and j.status == Status.SENT and j.via == "reprise":
            self.result.add("resolved_in_doubt")
            return
        counter = j.op.counter(j.status)
        if counter:
            self.result.add(counter)
        what = "" if j.op.counts_dossier else f"{j.op.label} : "   # a pièce, a rupture... of the dossier
        if j.status == Status.REJECTED:
            self.result.error(j.numero, f"{what}HTTP {getattr(j.resp, 'status', '?')} {j.message}")
        elif j.status == Status.PENDING:
            self.result.error(j.numero, f"{what}{j.message or ''}")

    def _check_key(self) -> None:
        try:
            st = self.hook.key_status(self.key_warning_days)
            self.result.key_warning = st["warning"]
            key_status.record(self.connector, self.conn_id, st["status"], st["expires_on"], st["warning"])
        except Exception as exc:  # a key check failing must not stop the sending
            log.warning("key check of %s failed: %s", self.conn_id, exc)
        if self.result.key_warning:
            log.warning("%s", self.result.key_warning)

    def _start(self, q: DelayQueue, jobs: list[Job], flow: Flow) -> None:
        """Jobs ready: those already settled are recorded now, the others join the queue (in
        doubt from before: read back first when the operation can be read back)."""
        now = time.monotonic()
        settled = []
        for j in jobs:
            if j.status is not None:
                settled.append(j)
            else:
                q.put(SETTLE if j.resolve and j.op.read_back and not j.row.get("forced") else SEND, now, j, new=True)
        if settled:
            self._start(q, self._record(settled, flow), flow)

    def _collect(self, q: DelayQueue, flow: Flow, wait: float = 0.0) -> None:
        done = q.drain_finished(wait)
        if done:
            self._start(q, self._record(done, flow), flow)

    def run(self, flow: Flow) -> dict:
        """Drive ``flow`` to its end (or to the batch's deadline); return the BatchResult as a dict."""
        self._started_utc = dt.datetime.now(dt.timezone.utc)
        key_check = None
        try:
            if not self.dry_run:   # the key's expiry, checked alongside the sending (never holds it up)
                key_check = threading.Thread(target=self._check_key, name="key-check", daemon=True)
                key_check.start()
            flow.start(self)
            q = DelayQueue(time.monotonic() + self.deadline_seconds, group=100)
            workers = [threading.Thread(target=self._worker, args=(q,), name=f"send-{i}", daemon=True)
                       for i in range(self.max_workers)]
            with short_gil_slices():
                for w in workers:
                    w.start()
                try:
                    while not self._stop.is_set():
                        jobs = flow.take(self.chunk_size)
                        if jobs:
                            self._start(q, jobs, flow)
                            self._collect(q, flow)
                            # keep one chunk ahead, no more; the jobs waiting for a later try (the
                            # tail: Retry-After, read-backs) do not count, so the next chunk is sent
                            # while they wait
                            while q.active() > 2 * self.chunk_size:
                                self._collect(q, flow, wait=0.2)
                        elif q.outstanding > 0:
                            self._collect(q, flow, wait=0.2)
                        elif flow.drained():
                            break
                    while q.outstanding > 0:   # a refused key: everything left finishes in doubt
                        self._collect(q, flow, wait=0.2)
                    self._collect(q, flow)
                finally:
                    q.close()
                    for w in workers:
                        w.join(timeout=(self.read_timeout or 30) + 5)
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


def transmit_batch(run_id: str, connector: str, conn_id: str, *, only_in_doubt: bool = False, **kwargs) -> dict:
    """Send one (OPCO, key) share of a planned run (its dossiers, avenants, documents, ruptures);
    return its BatchResult as a dict."""
    with cached_connections():
        if kwargs.get("hook") is None:
            airflow_connection(conn_id)   # in the main thread, for the worker threads
        return BatchRunner(run_id, connector, conn_id, **kwargs).run(DossierBatch(only_in_doubt))

"""What a runner drives: a :class:`Flow` hands it jobs (intents committed) and hears their
outcomes once recorded. :class:`OnceFlow` is the whole flow of a simple operation — one
exchange per row, exactly once (a convention, a certificat, an invoice...); the dossiers'
flow (:mod:`.dossier_batch`) adds avenants, documents and ruptures on the same pattern."""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Callable

from . import ledger, policy
from .operations import Job, Operation
from .policy import Fate
from .status import Status

if TYPE_CHECKING:   # the runner drives flows; flows only read its db and counters
    from .runner import BatchRunner


class Flow:
    """The runner calls ``start`` once, then ``take`` for chunks of jobs, ``recorded`` after
    each group of outcomes is committed, and ``drained`` when nothing is left in flight."""

    def start(self, runner: "BatchRunner") -> None:
        self.runner = runner

    def take(self, limit: int) -> list[Job]:
        """Up to ``limit`` jobs whose intents are committed; [] when there is nothing now."""
        raise NotImplementedError

    def recorded(self, jobs: list[Job]) -> list[Job]:
        """Outcomes of ``jobs`` are committed; return the jobs that follow (intents committed)."""
        return []

    def drained(self) -> bool:
        """Nothing in flight: True when the flow is done (False: ``take`` has more)."""
        return True

    # shared by flows: the fate of each prepared job, and the intents of those that will leave
    def admit(self, jobs: list[Job], history: dict, on_changed: Callable[[Job], list[Job]] | None = None
              ) -> list[Job]:
        """Decide each job's fate from its ledger history; commit the new intents in one
        statement; return the jobs to run (or to record at once: already sent)."""
        runner = self.runner
        ready, intents = [], []
        for job in jobs:
            if runner.dry_run:
                job.status, job.message = Status.DRY_RUN, "dry run: payload built and checked, nothing sent"
                intents.append(job)
                continue
            past = history.get((job.row["source_id"], job.numero, job.op.code), [])
            fate, in_doubt = policy.fate(job.prepared.digest, past, bool(job.row.get("forced")))
            if fate is Fate.ALREADY_SENT:
                job.status = ledger.ALREADY_SENT
                ready.append(job)
            elif fate is Fate.ALREADY_REJECTED:
                if job.op.counts_dossier:
                    runner.result.add("already_rejected")
            elif fate is Fate.RESOLVE:
                job.tid, job.resolve = in_doubt["id"], True
                ready.append(job)
            elif fate is Fate.CHANGED_AFTER_SEND and on_changed is not None:
                intents += on_changed(job)
            else:
                intents.append(job)
        self.insert(intents, ready)
        return ready

    def insert(self, intents: list[Job], ready: list[Job]) -> None:
        """Commit the intents; those whose insert found the same intent already are another
        worker's (a dossier then counts as already sent)."""
        runner = self.runner
        ledger.insert_intents(runner.db(), runner.run_id, runner.conn_id, intents)
        for j in intents:
            if j.status == Status.DRY_RUN:
                runner.result.add("dry_run")
            elif j.status == Status.BLOCKED:
                runner.result.add(j.op.counter(Status.BLOCKED) or "blocked")
            elif j.tid is None:
                if j.op.counts_dossier:
                    runner.result.add("already_sent")
            else:
                ready.append(j)


class OnceFlow(Flow):
    """One exchange of ``op`` per row, exactly once: ``rows`` are frozen batch rows (with
    source_id, numero_interne, opco_code, cfa_siren, forced), ``context(row)`` what the
    operation's ``prepare`` takes besides the row."""

    def __init__(self, op: Operation, rows: list[dict], context: Callable[[dict], Any] = lambda row: None):
        self.op, self.context = op, context
        self.feed = collections.deque(rows)

    def take(self, limit: int) -> list[Job]:
        rows = [self.feed.popleft() for _ in range(min(limit, len(self.feed)))]
        if not rows:
            return []
        history = ledger.load_history(self.runner.db(), self.op.code,
                                      [(r["source_id"], r["numero_interne"]) for r in rows])
        return self.admit([Job(self.op, r, self.op.prepare(r, self.context(r))) for r in rows], history)

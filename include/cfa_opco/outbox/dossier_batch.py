"""The flow of one (OPCO, key) share of a run: its contracts, their avenants, documents and
ruptures, read from the frozen batch (``staged_dossier``, ``staged_piece``) — a send never
reads the ERP.

- A contract already sent with this very content sends nothing; refused as is, nothing
  until the ERP changes it; in doubt from before, it is read back first; changed after it
  was sent, it is blocked with why (the norm has no update: an avenant is typed in the ERP).
- A rupture recorded in the ERP leaves by its own route once the OPCO holds the contract.
- An avenant needs its base contract's numéro DECA: when that contract is in this batch, the
  avenant waits for its outcome and joins the next chunk as soon as it is recorded; when the
  DECA is unknown, the avenant gets a WAITING ledger row that says why.
- A contract's documents leave once the OPCO holds the contract, and so does its convention de
  formation (where the OPCO serves ``/v1/conventions``) — unless the gate reported it
  (``CONVENTION_*`` anomalies): then it is BLOCKED with those reasons, until the ERP corrects it.
"""
from __future__ import annotations

import collections

from cfa_opco.dossier import pieces as staged_pieces
from cfa_opco.dossier.model import NATURE_AVENANT
from cfa_opco.quality.held import held_conventions

from . import ledger, policy
from .flow import Flow
from .operations import AVENANT, CONVENTION, DOSSIER, PIECE, RUPTURE, Job
from .operations.convention import has_convention
from .policy import Fate
from .status import Status


class DossierBatch(Flow):
    def __init__(self, only_in_doubt: bool = False):
        self.only_in_doubt = only_in_doubt
        self.feed: collections.deque = collections.deque()
        self.held: dict[tuple, list[dict]] = {}      # base contract -> its avenants in this batch
        self.later: list[Job] = []                   # ruptures found while preparing: next take
        self.pieces: dict[tuple, list[dict]] = {}
        self.conventions_held: dict[tuple, str] = {}   # (source, numero) -> why its convention waits

    def start(self, runner) -> None:
        super().start(runner)
        rows, self.history = ledger.load_batch(runner.db(), runner.run_id, runner.conn_id, self.only_in_doubt)
        contracts = [r for r in rows if r["nature"] != NATURE_AVENANT]
        if not runner.dry_run:
            self.pieces = staged_pieces.load_staged_pieces(
                runner.db(), runner.run_id, [(r["source_id"], r["numero_interne"]) for r in contracts])
            self.conventions_held = held_conventions(runner.db(), runner.run_id)
        in_batch = {(r["source_id"], r["numero_interne"]) for r in contracts}
        self.feed.extend(contracts)
        for r in rows:
            if r["nature"] == NATURE_AVENANT:
                base = AVENANT.depends_on(r)
                if base is not None and base in in_batch:
                    self.held.setdefault(base, []).append(r)
                else:
                    self.feed.append(r)

    def take(self, limit: int) -> list[Job]:
        rows = [self.feed.popleft() for _ in range(min(limit, len(self.feed)))]
        jobs, self.later = self.later, []
        return (self._prepare(rows) if rows else []) + jobs

    def recorded(self, jobs: list[Job]) -> list[Job]:
        follow: list[Job] = []
        for j in jobs:
            if j.op is not DOSSIER:
                continue
            base = (j.row["source_id"], j.numero)
            if base in self.held:   # its avenants can now be built (or say why not): next chunk, first
                self.feed.extendleft(reversed(self.held.pop(base)))
            if j.status in (Status.SENT, ledger.ALREADY_SENT) and not self.runner.dry_run:
                follow += self._piece_jobs(j.row)
                if j.row.get("date_rupture"):
                    follow += self._rupture_jobs(j.row)
                if has_convention(j.row) and self.runner.send_hook.capabilities.serves("conventions_v1"):
                    follow += self._convention_jobs(j.row)
        return follow

    def drained(self) -> bool:
        if self.held:          # bases never recorded: their avenants are prepared (and WAIT, with why)
            for rows in self.held.values():
                self.feed.extend(rows)
            self.held.clear()
        return not self.feed and not self.later

    # -- preparing ---------------------------------------------------------------------
    def _prepare(self, rows: list[dict]) -> list[Job]:
        needs = {r["numero_interne"]: AVENANT.depends_on(r) for r in rows if AVENANT.depends_on(r)}
        decas = ledger.base_decas(self.runner.db(), list(needs.values())) if needs else {}
        jobs, waiting = [], []
        for row in rows:
            base = needs.get(row["numero_interne"])
            if base is None:
                jobs.append(Job(DOSSIER, row, DOSSIER.prepare(row, None)))
            elif decas.get(base) is None:    # the amended contract has no numéro DECA yet
                waiting.append(row)
            else:
                jobs.append(Job(AVENANT, row, AVENANT.prepare(row, decas[base])))
        ready = self.admit(jobs, self.history, on_changed=self._changed_after_send)
        if waiting:
            self._record_waiting(waiting)
        return ready

    def _changed_after_send(self, job: Job) -> list[Job]:
        """The norm has no update of a sent dossier: any change is an avenant to type in the
        ERP — never a second dossier (a rupture goes by its own route, see _rupture_jobs)."""
        row = job.row
        if row.get("date_rupture"):
            self.later += self._rupture_jobs(row)
        past = self.history.get((row["source_id"], row["numero_interne"], DOSSIER.code), [])
        if any(t["status"] == Status.BLOCKED and t["content_hash"] == job.prepared.digest for t in past):
            self.runner.result.add("blocked")
            return []
        job.status, job.message = Status.BLOCKED, policy.changed_after_send_message(row)
        return [job]

    def _rupture_jobs(self, row: dict) -> list[Job]:
        """The contract's rupture, once the OPCO holds the contract (the CERFA payload has no
        rupture: it is an exchange of its own)."""
        return self._follow(Job(RUPTURE, row, RUPTURE.prepare(row, None)))

    def _convention_jobs(self, row: dict) -> list[Job]:
        """The contract's convention de formation, once the OPCO holds the contract; held
        (BLOCKED, with the gate's reasons) while the gate reports it."""
        job = Job(CONVENTION, row, CONVENTION.prepare(row, None))
        why = self.conventions_held.get((row["source_id"], row["numero_interne"]))
        if why:
            job.status, job.message = Status.BLOCKED, f"Convention de formation non transmise : {why}"[:1000]
        return self._follow(job)

    def _follow(self, job: Job) -> list[Job]:
        """An exchange that follows the contract and has no read route: once per content; in
        doubt, sent again; held before (BLOCKED) and now clear, its ledger row is reopened."""
        past = self.history.get((job.row["source_id"], job.numero, job.op.code), [])
        fate, in_doubt = policy.fate(job.prepared.digest, past, False)
        if fate is Fate.RESOLVE:
            job.tid = in_doubt["id"]
            return [job]
        if fate not in (Fate.NEW, Fate.CHANGED_AFTER_SEND):
            return []
        held = [t for t in past if t["status"] == Status.BLOCKED and t["content_hash"] == job.prepared.digest]
        if held and job.status is None:
            job.tid = ledger.reopen_blocked(self.runner.db(), held[-1]["id"])
            return [job] if job.tid is not None else []
        ready: list[Job] = []
        self.insert([job], ready)
        return ready

    def _record_waiting(self, rows: list[dict]) -> None:
        """Avenants whose base contract has no numéro DECA: a WAITING ledger row (once per run
        and content) naming the base contract and why it holds the avenant back."""
        runner = self.runner
        reasons = waiting_reasons(runner.db(), [AVENANT.depends_on(r) for r in rows])
        values = []
        for r in rows:
            runner.result.add("waiting")
            past = self.history.get((r["source_id"], r["numero_interne"], DOSSIER.code), [])
            if any(t["status"] == Status.WAITING and t["run_id"] == runner.run_id
                   and t["content_hash"] == r["content_hash"] for t in past):
                continue
            values.append((r, reasons.get(AVENANT.depends_on(r))))
        ledger.record_waiting(runner.db(), runner.run_id, runner.conn_id, values)

    def _piece_jobs(self, row: dict) -> list[Job]:
        """The documents of a dossier the OPCO now holds: those not sent yet, or in doubt (the
        norm has no read route for a document: it is sent again)."""
        jobs, intents, seen = [], [], set()
        past = self.history.get((row["source_id"], row["numero_interne"], PIECE.code), [])
        for piece in self.pieces.get((row["source_id"], row["numero_interne"]), []):
            if piece["content"] is None:
                self.runner.result.error(row["numero_interne"],
                                         f"pièce {piece['nom_fichier']} illisible : {piece['error']}")
                continue
            job = Job(PIECE, row, PIECE.prepare(row, piece), item=piece)
            if job.prepared.digest in seen:     # the same bytes twice in one dossier: sent once
                continue
            seen.add(job.prepared.digest)
            fate, in_doubt = policy.fate(job.prepared.digest, past, forced=False)
            if fate is Fate.RESOLVE:
                job.tid = in_doubt["id"]
                jobs.append(job)
            elif fate in (Fate.NEW, Fate.CHANGED_AFTER_SEND):   # another document of the dossier was sent
                intents.append(job)
        self.insert(intents, jobs)
        return jobs


def waiting_reasons(conn, bases: list[tuple[str, str | None]]) -> dict[tuple, str]:
    """{(source_id, base numero): why an avenant of that base contract cannot leave yet}."""
    keys = sorted({(src, b) for src, b in bases if b})
    out: dict[tuple, str] = {(src, b): policy.NO_BASE for src, b in bases if not b}
    for src, base, *state in ledger.base_contract_states(conn, keys):
        out[(src, base)] = policy.waiting_text(base, *state)
    return out

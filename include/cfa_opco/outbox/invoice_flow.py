"""The invoices' flow (issue 12, point 4): one ``FACTURE`` exchange per frozen invoice, exactly
once, through the one runner (:class:`~.runner.BatchRunner`) like every other exchange.

Its own rules on top of the ledger's:

- the ledger's history is per invoice number (a dossier has several invoices, one per échéance):
  an invoice SENT with this very content sends nothing, REJECTED as is waits for the ERP's
  correction, in doubt is read back first;
- **never two invoices for one échéance**: an invoice whose échéance already has another invoice
  SENT or in doubt (in the ledger, or earlier in this batch) is BLOCKED with why — and the
  ledger's unique index (V1230) refuses a second live intent even from a racing worker;
- an invoice the OPCO rejected during its instruction (read by :mod:`cfa_opco.facture_followup`)
  releases its échéance (``released_at``): the corrected invoice, under a new number, leaves;
- an invoice changed in the ERP after it was sent is BLOCKED (the norm has no correction of an
  invoice: the CFA issues a credit note on the OPCO's portal).
"""
from __future__ import annotations

import collections

from . import ledger, policy
from .flow import Flow
from .operations import FACTURE, Job
from .policy import Fate
from .status import Status

LIVE = (Status.SENT, Status.PENDING)


def _nif(t: dict) -> str | None:
    return (t.get("payload") or {}).get("numeroInterneFacture")


def _echeance(t: dict) -> int | None:
    try:
        return int(((t.get("payload") or {}).get("echeance") or {}).get("numero"))
    except (TypeError, ValueError):
        return None


def taken_message(row: dict, other: str, status: str) -> str:
    how = "transmise" if status == Status.SENT else "en doute (relue avant tout renvoi)"
    return (f"Facture non transmise : l'échéance {row['echeance_numero']} du dossier {row['numero_interne']} "
            f"a déjà une facture {how} ({other}) — jamais deux factures pour une échéance ; à corriger dans "
            "l'ERP (numéro d'échéance ou facture en double)")[:1000]


CHANGED_MESSAGE = ("Facture modifiée dans l'ERP après sa transmission : la norme n'a pas de correction de "
                   "facture (avoir à émettre sur le portail de l'OPCO) ; rien n'a été renvoyé")


class InvoiceFlow(Flow):
    """``rows``: frozen invoices of one key (conn_id), with source_id, numero_interne (the
    dossier), numero_facture, echeance_numero, date_facture, montant, opco_code, cfa_siren, forced."""

    def __init__(self, rows: list[dict]):
        self.feed = collections.deque(rows)
        self.claimed: dict[tuple, str] = {}      # (source, dossier, échéance) -> invoice number, this batch

    def take(self, limit: int) -> list[Job]:
        rows = [self.feed.popleft() for _ in range(min(limit, len(self.feed)))]
        if not rows:
            return []
        runner = self.runner
        history = ledger.load_history(runner.db(), FACTURE.code,
                                      [(r["source_id"], r["numero_interne"]) for r in rows])
        ready, intents, blocked = [], [], []
        for row in rows:
            job = Job(FACTURE, row, FACTURE.prepare(row, None))
            if runner.dry_run:
                job.status, job.message = Status.DRY_RUN, "dry run: facture construite et vérifiée, rien n'est envoyé"
                intents.append(job)
                continue
            dossier = history.get((row["source_id"], row["numero_interne"], FACTURE.code), [])
            mine = [t for t in dossier if _nif(t) == row["numero_facture"]]
            fate, in_doubt = policy.fate(job.prepared.digest, mine, bool(row.get("forced")))
            if fate is Fate.ALREADY_SENT:
                job.status = ledger.ALREADY_SENT
                ready.append(job)
                continue
            if fate is Fate.ALREADY_REJECTED:
                runner.result.add("invoices_rejected")
                continue
            if fate is Fate.RESOLVE:
                job.tid, job.resolve = in_doubt["id"], True
                ready.append(job)
                self.claimed[(row["source_id"], row["numero_interne"], int(row["echeance_numero"]))] = \
                    row["numero_facture"]
                continue
            if fate is Fate.CHANGED_AFTER_SEND:
                job.status, job.message = Status.BLOCKED, CHANGED_MESSAGE
                blocked.append(job)
                continue
            key = (row["source_id"], row["numero_interne"], int(row["echeance_numero"]))
            others = [t for t in dossier if _echeance(t) == key[2] and _nif(t) != row["numero_facture"]
                      and t["status"] in LIVE and not t.get("released_at")]
            if others:
                job.status, job.message = Status.BLOCKED, taken_message(row, _nif(others[-1]), others[-1]["status"])
                blocked.append(job)
            elif self.claimed.get(key, row["numero_facture"]) != row["numero_facture"]:
                job.status, job.message = Status.BLOCKED, taken_message(row, self.claimed[key], Status.SENT)
                blocked.append(job)
            else:
                self.claimed[key] = row["numero_facture"]
                intents.append(job)
        self.insert(intents + blocked, ready)
        return ready

    def insert(self, intents: list[Job], ready: list[Job]) -> None:
        runner = self.runner
        ledger.insert_intents(runner.db(), runner.run_id, runner.conn_id, intents)
        refused = []
        for j in intents:
            if j.status == Status.DRY_RUN:
                runner.result.add("invoices_dry_run")
            elif j.status == Status.BLOCKED:
                runner.result.add("invoices_blocked")
            elif j.tid is None:
                # the unique indexes refused the intent: the same invoice is another worker's, or
                # another live invoice holds this échéance — recorded BLOCKED, never sent
                j.status, j.message = Status.BLOCKED, taken_message(j.row, "une autre facture", Status.PENDING)
                refused.append(j)
            else:
                ready.append(j)
        if refused:
            ledger.insert_intents(runner.db(), runner.run_id, runner.conn_id, refused)
            runner.result.add("invoices_blocked", len(refused))

    def recorded(self, jobs: list[Job]) -> list[Job]:
        for j in jobs:
            if j.status == ledger.ALREADY_SENT:
                self.runner.result.add("invoices_already_sent")
        return []

    def drained(self) -> bool:
        return not self.feed

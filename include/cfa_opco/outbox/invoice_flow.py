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
  invoice: the CFA issues a credit note on the OPCO's portal);
- on an OPCO that takes certificats de réalisation (``certificats_v2``: AFDAS), a new invoice
  leaves only once its échéance's certificat is SENT: the certificat goes first, exactly once
  like any exchange, and the invoice follows in the next chunk; a certificat refused, in doubt
  or that the ERP's schedule cannot build (type, period) leaves the invoice WAITING with why (a
  later run sends it).
"""
from __future__ import annotations

import collections

from . import ledger, policy
from .flow import Flow
from .operations import CERTIFICAT, FACTURE, Job
from .operations.certificat import NEEDS as CERTIFICAT_NEEDS, ROUTE as CERTIFICAT_ROUTE, missing
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


def _echeance_key(row: dict) -> tuple:
    """(source, dossier, échéance): what one live invoice — and one certificat — is per."""
    return row["source_id"], row["numero_interne"], int(row["echeance_numero"])


def taken_message(row: dict, other: str, status: str) -> str:
    how = "transmise" if status == Status.SENT else "en doute (relue avant tout renvoi)"
    return (f"Facture non transmise : l'échéance {row['echeance_numero']} du dossier {row['numero_interne']} "
            f"a déjà une facture {how} ({other}) — jamais deux factures pour une échéance ; à corriger dans "
            "l'ERP (numéro d'échéance ou facture en double)")[:1000]


def waiting_certificat_message(row: dict, cert: Job | None, why: str | None = None) -> str:
    """Why an invoice waits for its échéance's certificat de réalisation (French, for the ledger
    and the run report)."""
    head = (f"Facture en attente du certificat de réalisation de l'échéance {row['echeance_numero']} du dossier "
            f"{row['numero_interne']} : ")
    if why is None:
        if cert is None:
            lacks = missing(row)
            why = (f"l'échéancier de l'ERP ne dit pas {' ni '.join(CERTIFICAT_NEEDS[c] for c in lacks)} (colonnes "
                   f"{', '.join(lacks)} de factures_sql) : le certificat ne peut être établi")
        elif cert.status == Status.REJECTED:
            why = (f"certificat refusé par l'OPCO ({cert.message or 'sans motif'}) — à corriger, la facture "
                   "partira ensuite")
        elif cert.status == Status.PENDING:
            why = "certificat en doute (réponse perdue) : renvoyé au prochain run, la facture partira ensuite"
        else:
            why = f"certificat non transmis ({cert.message or cert.status})"
    return (head + why)[:1000]


CHANGED_MESSAGE = ("Facture modifiée dans l'ERP après sa transmission : la norme n'a pas de correction de "
                   "facture (avoir à émettre sur le portail de l'OPCO) ; rien n'a été renvoyé")


class InvoiceFlow(Flow):
    """``rows``: frozen invoices of one key (conn_id), with source_id, numero_interne (the
    dossier), numero_facture, echeance_numero, date_facture, montant, opco_code, cfa_siren, forced."""

    def __init__(self, rows: list[dict]):
        self.feed = collections.deque(rows)
        self.claimed: dict[tuple, str] = {}      # (source, dossier, échéance) -> invoice number, this batch
        self.after_certificat: dict[tuple, Job] = {}   # (source, dossier, échéance) -> invoice waiting for it
        self.certificats = False

    def start(self, runner) -> None:
        super().start(runner)
        self.certificats = runner.send_hook.capabilities.serves(CERTIFICAT_ROUTE)

    def take(self, limit: int) -> list[Job]:
        rows = [self.feed.popleft() for _ in range(min(limit, len(self.feed)))]
        if not rows:
            return []
        runner = self.runner
        keys = [(r["source_id"], r["numero_interne"]) for r in rows]
        history = ledger.load_history(runner.db(), FACTURE.code, keys)
        certificats = ledger.load_history(runner.db(), CERTIFICAT.code, keys) if self.certificats else {}
        ready, intents, blocked = [], [], []
        for row in rows:
            job = Job(FACTURE, row, FACTURE.prepare(row, None))
            if runner.dry_run:
                job.status, job.message = Status.DRY_RUN, "dry run: facture construite et vérifiée, rien n'est envoyé"
                intents.append(job)
                if self.certificats and not missing(row):
                    intents.append(Job(CERTIFICAT, row, CERTIFICAT.prepare(row), status=Status.DRY_RUN,
                                       message="dry run: certificat construit, rien n'est envoyé"))
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
                self.claimed[_echeance_key(row)] = row["numero_facture"]
                continue
            if fate is Fate.CHANGED_AFTER_SEND:
                job.status, job.message = Status.BLOCKED, CHANGED_MESSAGE
                blocked.append(job)
                continue
            key = _echeance_key(row)
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
                if not self.certificats:
                    intents.append(job)
                    continue
                cert = self._certificat(job, certificats.get((row["source_id"], row["numero_interne"],
                                                              CERTIFICAT.code), []))
                if cert is None or cert.status == Status.REJECTED:   # no type, or refused as is before
                    job.status, job.message = Status.WAITING, waiting_certificat_message(row, cert)
                    blocked.append(job)
                elif cert.status == ledger.ALREADY_SENT or cert.tid is not None:
                    ready.append(cert)
                else:
                    intents.append(cert)
        self.insert(intents + blocked, ready)
        return ready

    def _certificat(self, invoice: Job, past: list[dict]) -> Job | None:
        """The certificat de réalisation the invoice waits for (its fate decided from the
        certificats of the same échéance; the invoice is kept until its outcome is recorded), or
        None when the ERP's schedule does not give what it needs (its type, its period)."""
        row = invoice.row
        if missing(row):
            return None
        cert = Job(CERTIFICAT, row, CERTIFICAT.prepare(row))
        key = _echeance_key(row)
        same = [t for t in past if _echeance(t) == key[2]]
        fate, in_doubt = policy.fate(cert.prepared.digest, same, bool(row.get("forced")))
        if fate is Fate.ALREADY_REJECTED:   # refused as is: the invoice waits until the ERP changes it
            cert.status = Status.REJECTED
            cert.message = next((t["message"] for t in reversed(same) if t["status"] == Status.REJECTED
                                 and t["content_hash"] == cert.prepared.digest), None)
            return cert
        if fate is Fate.ALREADY_SENT:
            cert.status = ledger.ALREADY_SENT
        elif fate is Fate.RESOLVE:   # no read route: the runner sends it again (the OPCO answers 200)
            cert.tid, cert.resolve = in_doubt["id"], True
        self.after_certificat[key] = invoice
        return cert

    def insert(self, intents: list[Job], ready: list[Job]) -> None:
        runner = self.runner
        ledger.insert_intents(runner.db(), runner.run_id, runner.conn_id, intents)
        refused = []
        for j in intents:
            if j.op is CERTIFICAT:
                if j.status == Status.DRY_RUN:
                    runner.result.add("certificats_dry_run")
                elif j.tid is None:   # another worker's intent: the invoice waits for the next run
                    invoice = self.after_certificat.pop(_echeance_key(j.row), None)
                    if invoice is not None:
                        invoice.status, invoice.message = Status.WAITING, waiting_certificat_message(invoice.row, j)
                        refused.append(invoice)
                else:
                    ready.append(j)
            elif j.status == Status.DRY_RUN:
                runner.result.add("invoices_dry_run")
            elif j.status == Status.BLOCKED:
                runner.result.add("invoices_blocked")
            elif j.status == Status.WAITING:
                runner.result.add("invoices_waiting_certificat")
            elif j.tid is None:
                # the unique indexes refused the intent: the same invoice is another worker's, or
                # another live invoice holds this échéance — recorded BLOCKED, never sent
                j.status, j.message = Status.BLOCKED, taken_message(j.row, "une autre facture", Status.PENDING)
                refused.append(j)
            else:
                ready.append(j)
        if refused:
            ledger.insert_intents(runner.db(), runner.run_id, runner.conn_id, refused)
            for j in refused:
                runner.result.add("invoices_waiting_certificat" if j.status == Status.WAITING else "invoices_blocked")

    def recorded(self, jobs: list[Job]) -> list[Job]:
        """A certificat recorded: its invoice follows (SENT: its intent now, sent in the next
        chunk) or waits with why; an invoice already sent is counted."""
        follow, waiting = [], []
        for j in jobs:
            if j.op is not CERTIFICAT:
                if j.status == ledger.ALREADY_SENT:
                    self.runner.result.add("invoices_already_sent")
                continue
            invoice = self.after_certificat.pop(_echeance_key(j.row), None)
            if invoice is None:
                continue
            if j.status in (Status.SENT, ledger.ALREADY_SENT):
                follow.append(invoice)
            else:
                invoice.status, invoice.message = Status.WAITING, waiting_certificat_message(invoice.row, j)
                waiting.append(invoice)
        ready: list[Job] = []
        self.insert(follow + waiting, ready)
        return ready

    def drained(self) -> bool:
        """Called with nothing in flight: every certificat's outcome is recorded, so no invoice
        is still held (were one, it is recorded WAITING rather than lost)."""
        if self.feed:
            return False
        if self.after_certificat:
            left = list(self.after_certificat.values())
            self.after_certificat.clear()
            for j in left:
                j.status, j.message = Status.WAITING, waiting_certificat_message(
                    j.row, None, "certificat non transmis (lot interrompu) : la facture partira au prochain run")
            self.insert(left, [])
        return True

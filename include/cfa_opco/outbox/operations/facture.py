"""An invoice (facture) of one échéance, ``POST /v1/factures`` (issue 12, point 4), from a frozen
invoice of the run (``staged_facture``, checked by the suite cfa_opco_facture).

Its business key is the CFA's invoice number (``numeroInterneFacture``): the intent is in the
ledger before it leaves; a lost answer is read back through ``GET /v2/factures/etats?
numeroInterneFacture=`` where the OPCO serves it (found: SENT, never sent again); an OPCO without
that route gets the very same invoice again — the norm's OPCOs answer 200 with its state for an
identical invoice number and content, and refuse (409) a different one, so a resend never makes
a second invoice. Never two invoices for one échéance: :mod:`..invoice_flow` and the ledger's
unique index (V1230) see to it."""
from __future__ import annotations

from cfa_opco.providers.opco.reading import Unreadable

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, attempt_from_request, json_prepared

READ_ROUTE = "factures_etats_v2"


def build_facture(row: dict) -> dict:
    return {"numeroInterneFacture": row["numero_facture"], "referenceFactureCFA": row["numero_facture"],
            "numeroInterneDossier": row["numero_interne"], "echeance": {"numero": int(row["echeance_numero"])},
            "montant": float(row["montant"]), "dateFacture": row["date_facture"].isoformat()}


def _prepare(row: dict, _context=None) -> Prepared:
    return json_prepared(build_facture(row))


def _send(hook, job: Job) -> Attempt:
    return attempt_from_request(lambda: hook.send_facture(job.prepared.payload))


def _read_back(hook, numeros: list[str], since=None, first_route_only: bool = False) -> dict:
    """{numeroInterneFacture: {"etat": ...} (held) | None (absent: send again) | Unreadable}."""
    if not hook.capabilities.serves(READ_ROUTE):
        # no read route: an identical resend is answered with the invoice's state (never a second one)
        return {n: None for n in numeros}
    out = {}
    for n, st in hook.find_factures(numeros).items():
        out[n] = st if st is None or isinstance(st, Unreadable) else {"etat": st.etat or "EN_COURS",
                                                                         "dateEtat": st.date_etat}
    return out


FACTURE = Operation(
    code="FACTURE", label="facture", routes=("factures_v1",), prepare=_prepare, send=_send,
    read_back=_read_back, state_route=(READ_ROUTE,), business_key=lambda job: job.row["numero_facture"],
    counts={Status.SENT: "invoices_sent", Status.REJECTED: "invoices_rejected", Status.BLOCKED: "invoices_blocked",
            Status.PENDING: "invoices_in_doubt", Status.DRY_RUN: "invoices_dry_run"})

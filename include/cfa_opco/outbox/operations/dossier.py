"""The contract (CERFA FA13) and its avenants: ``POST /v2/dossiers`` (else ``/v1/dossiers``),
read back through liste / the per-dossier route / the state changes, followed by the
state routes."""
from __future__ import annotations

from cfa_opco.dossier.model import NATURE_AVENANT
from cfa_opco.dossier.payload import build_payload
from cfa_opco.providers.opco.outcomes import SendKind

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, json_prepared

GATEWAY_ERRORS = (500, 502, 503, 504)


def _prepare(row: dict, numero_contrat_precedent: str | None = None) -> Prepared:
    return json_prepared(build_payload(row, numero_contrat_precedent))


def _send(hook, job: Job) -> Attempt:
    out = hook.send_once(job.prepared.payload, encoded=job.prepared.body)
    kind = out.kind
    if kind is SendKind.RETRY_LATER and out.status in GATEWAY_ERRORS:
        # a gateway error may come after the OPCO recorded the dossier (a lost answer):
        # read back before any resend, as for any other ambiguous answer
        kind = SendKind.AMBIGUOUS
    return Attempt(kind, out, out.retry_after, str(out.message or ""))


def _read_back(hook, numeros: list[str], since=None, first_route_only: bool = False) -> dict:
    # one attempt per route: the runner's delay queue retries
    return hook.find_dossiers(numeros, since=since, max_attempts=1, first_route_only=first_route_only)


def base_contract(row: dict) -> tuple[str, str | None] | None:
    """An avenant that does not name the previous contract's number needs its base contract's
    numéro DECA (given by the OPCO): (source_id, base numéro interne). None: needs nothing."""
    if row.get("nature") == NATURE_AVENANT and not row.get("contrat_numero_precedent"):
        return (row["source_id"], row.get("base_numero_interne"))
    return None


_COUNTS = {Status.SENT: "sent", Status.REJECTED: "rejected", Status.BLOCKED: "blocked", Status.PENDING: "in_doubt"}

DOSSIER = Operation(
    code="DOSSIER", label="dossier de contrat", routes=("dossiers_v2", "dossiers_v1"),
    prepare=_prepare, send=_send, read_back=_read_back, state_route=("etats_v2", "liste_v1", "dossier_read_v2"),
    counts=_COUNTS, counts_dossier=True)

# the same route and ledger operation as the contract; it waits for its base contract's DECA
AVENANT = Operation(
    code="DOSSIER", label="avenant", routes=DOSSIER.routes,
    prepare=_prepare, send=_send, read_back=_read_back, state_route=DOSSIER.state_route,
    counts=_COUNTS, counts_dossier=True, depends_on=base_contract)

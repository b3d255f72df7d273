"""The employer's termination of a contract already sent (``POST /v2/dossiers/rupture/employeur``).
The norm has no read route for it: a lost answer is sent again (the OPCO knows the dossier
by its number, so a second declaration of the same rupture is idempotent on its side)."""
from __future__ import annotations

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, attempt_from_request, json_prepared


def _prepare(row: dict, _context=None) -> Prepared:
    return json_prepared({"numeroInterne": row["numero_interne"], "dateRupture": str(row["date_rupture"]),
                          "motif": row.get("motif_rupture") or "Rupture"})


def _send(hook, job: Job) -> Attempt:
    return attempt_from_request(lambda: hook.send_rupture(job.prepared.payload))


RUPTURE = Operation(
    code="RUPTURE", label="rupture de contrat", routes=("rupture_v2",), prepare=_prepare, send=_send,
    read_back=None, state_route=("etats_v2", "liste_v1"),
    counts={Status.SENT: "ruptures_sent", Status.REJECTED: "ruptures_rejected", Status.BLOCKED: "ruptures_blocked",
            Status.PENDING: "ruptures_in_doubt"})

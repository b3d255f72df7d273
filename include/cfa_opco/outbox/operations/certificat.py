"""A certificat de réalisation (``POST /v2/certificats``, issue 12 point 4): AFDAS pays an
échéance once it holds the certificat that the training of that period took place —
``Intermediaire``, or ``Final`` for the schedule's last échéance, over the period the échéance
covers (its date to the day before the next one, or the contract's end: the ERP's schedule, see
the optional columns of :data:`cfa_opco.factures.OPTIONAL`). It leaves just before the
échéance's invoice (:mod:`..invoice_flow`), from the same frozen invoice row.

The norm has no read route for a certificat: a lost answer is sent again — the OPCO keeps one
certificat per échéance and type, and answers 200 with the first one's id to the same one again.
Its business key is the dossier and the échéance."""
from __future__ import annotations

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, attempt_from_request, json_prepared

ROUTE = "certificats_v2"
INTERMEDIAIRE, FINAL = "Intermediaire", "Final"


# what the ERP must say of the échéance for its certificat: column of factures_sql -> French
NEEDS = {"echeance_derniere": "si elle est la dernière de l'échéancier (type Intermédiaire ou Final)",
         "echeance_date": "la date de début de sa période", "echeance_fin": "la date de fin de sa période"}


def missing(row: dict) -> list[str]:
    """The columns of factures_sql the certificat of this invoice's échéance lacks (none: it can
    be built)."""
    return [c for c in NEEDS if row.get(c) is None]


def certificat_type(row: dict) -> str:
    """Final for the schedule's last échéance, Intermediaire before."""
    return FINAL if row["echeance_derniere"] else INTERMEDIAIRE


def build_certificat(row: dict) -> dict:
    return {"numeroInterneDossier": row["numero_interne"], "typeCertificat": certificat_type(row),
            "echeance": {"numero": int(row["echeance_numero"]), "dateDebut": row["echeance_date"].isoformat(),
                         "dateFin": row["echeance_fin"].isoformat()}}


def _prepare(row: dict, _context=None) -> Prepared:
    return json_prepared(build_certificat(row))


def _send(hook, job: Job) -> Attempt:
    return attempt_from_request(lambda: hook.send_certificat(job.prepared.payload))


CERTIFICAT = Operation(
    code="CERTIFICAT", label="certificat de réalisation", routes=(ROUTE,), prepare=_prepare, send=_send,
    read_back=None, business_key=lambda job: f"{job.row['numero_interne']}/{job.row['echeance_numero']}",
    counts={Status.SENT: "certificats_sent", Status.REJECTED: "certificats_rejected",
            Status.BLOCKED: "certificats_blocked", Status.PENDING: "certificats_in_doubt",
            Status.DRY_RUN: "certificats_dry_run"})

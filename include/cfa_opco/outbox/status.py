"""The status of a ledger row (``transmission.status``), in one place."""
from __future__ import annotations

import enum


class Status(enum.StrEnum):
    SENT = "SENT"           # the OPCO holds it (answer read, or confirmed by reading back)
    PENDING = "PENDING"     # intent committed, outcome unknown: in doubt until read back
    REJECTED = "REJECTED"   # the OPCO refused the payload (4xx with its erreurs)
    BLOCKED = "BLOCKED"     # not sent, and will not be as such (route not served, key refused, changed after send...)
    WAITING = "WAITING"     # not sent yet: waits for another dossier (an avenant for its base contract)
    DRY_RUN = "DRY_RUN"     # payload built and checked, nothing sent

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS = {Status.SENT: "transmis", Status.PENDING: "en doute", Status.REJECTED: "refusé par l'OPCO",
          Status.BLOCKED: "non transmissible", Status.WAITING: "en attente d'un autre dossier",
          Status.DRY_RUN: "essai à blanc"}
# an outcome that ends the intent (a PENDING one does not)
FINAL = frozenset({Status.SENT, Status.REJECTED, Status.BLOCKED})

"""Every kind of exchange with an OPCO, declared once (see :mod:`.base`). Adding one is a new
module here plus its tests: docs/outbox.md shows a worked example (the invoice)."""
from __future__ import annotations

from .base import Attempt, Found, Job, Operation, Prepared
from .certificat import CERTIFICAT
from .convention import CONVENTION
from .dossier import AVENANT, DOSSIER
from .facture import FACTURE
from .piece import PIECE
from .rupture import RUPTURE

# ledger code -> operation (AVENANT shares DOSSIER's code: same route, same ledger rows)
BY_CODE = {op.code: op for op in (DOSSIER, PIECE, RUPTURE, CONVENTION, CERTIFICAT, FACTURE)}

__all__ = ["AVENANT", "Attempt", "CERTIFICAT", "CONVENTION", "Found", "BY_CODE", "DOSSIER", "FACTURE", "Job", "Operation", "PIECE", "Prepared", "RUPTURE"]

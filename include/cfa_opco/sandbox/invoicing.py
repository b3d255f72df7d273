"""The sandbox OPCO's own instruction of an accepted invoice.

An invoice accepted by ``POST /v1/factures`` (201, ``EN_COURS``) is examined and, ``delays.reglement``
later, either paid in full (``REGLE``), paid in part (``REGLE`` with ``montantRegle`` below
``montantFacture`` and a ``commentaire`` saying why) or rejected (``REJETE`` with ``motifsRejet`` and
a ``commentaire``; its échéance can then be invoiced again under a new number). Which one is decided
once, when the invoice is created, by a hash of (seed, OPCO, invoice number) against the shares of
``factures.rejet`` / ``factures.partiel`` (per OPCO overridable): the same invoice always gets the same
fate, across restarts, and tests can predict it with :func:`issue_for`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .config import OpcoSettings

REGLE, EN_COURS, REJETE = "REGLE", "EN_COURS", "REJETE"

MOTIFS_REJET = (
    {"code": "ATTESTATION_ASSIDUITE_MANQUANTE",
     "message": "attestation d'assiduité de l'apprenti absente pour la période facturée"},
    {"code": "RIB_NON_CONFORME", "message": "coordonnées bancaires du CFA non conformes (RIB à mettre à jour)"},
    {"code": "PERIODE_NON_REALISEE", "message": "période de formation facturée non réalisée"},
)


@dataclass(frozen=True)
class Issue:
    """What the OPCO will decide: ``kind`` OK / PARTIEL / REJET, the amount it pays, the reason."""
    kind: str
    montant_regle: float
    motif: dict | None = None

    def encode(self) -> str:
        if self.kind == "REJET":
            return f"REJET:{self.motif['code']}"
        return f"{self.kind}:{self.montant_regle:.2f}"


def _draw(seed: int, opco: str, nif: str) -> float:
    h = hashlib.sha256(f"{seed}|{opco}|{nif}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def issue_for(s: OpcoSettings, opco: str, nif: str, montant: float) -> Issue:
    x = _draw(s.facture_seed, opco, nif)
    if x < s.facture_rejet:
        return Issue("REJET", 0.0, MOTIFS_REJET[int(x * 1e6) % len(MOTIFS_REJET)])
    if x < s.facture_rejet + s.facture_partiel:
        return Issue("PARTIEL", round(montant * s.facture_part_reglee, 2))
    return Issue("OK", round(montant, 2))


def decode(issue: str | None, montant: float) -> Issue:
    """An issue stored by :meth:`Issue.encode` (None: an invoice stored before issues existed = paid)."""
    if not issue or issue.startswith("OK"):
        return Issue("OK", round(montant, 2))
    kind, _, rest = issue.partition(":")
    if kind == "REJET":
        return Issue("REJET", 0.0, next((m for m in MOTIFS_REJET if m["code"] == rest),
                                        {"code": rest, "message": rest}))
    return Issue("PARTIEL", float(rest))


def etat(issue: Issue, regle_t: int, now: int) -> str:
    if regle_t > now:
        return EN_COURS
    return REJETE if issue.kind == "REJET" else REGLE


def commentaire(issue: Issue, state: str, montant: float) -> str:
    if state == EN_COURS:
        return "en cours de traitement"
    if state == REJETE:
        return f"rejetée : {issue.motif['message']}"
    if issue.kind == "PARTIEL":
        return (f"réglée partiellement : {issue.montant_regle:.2f} € sur {montant:.2f} € "
                f"(absences de l'apprenti non prises en charge)")
    return "réglée"

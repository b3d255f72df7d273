"""A supporting document (pièce justificative), attached once the OPCO holds its dossier
(``POST /v1/documents``). Its bytes were staged at extraction with their SHA-256
(:mod:`cfa_opco.dossier.pieces`): a send never reads the ERP. The norm has no read route for
documents: a lost answer is sent again."""
from __future__ import annotations

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, attempt_from_request


def _prepare(row: dict, piece: dict) -> Prepared:
    meta = {"typeFichier": piece["type_piece"], "nomFichier": piece["nom_fichier"],
            "objets": [{"typeObjet": "DOSSIER", "idObjet": row["numero_interne"]}], "sha256": piece["sha256"]}
    return Prepared(meta, piece["content"], piece["sha256"])


def _send(hook, job: Job) -> Attempt:
    piece = job.item
    return attempt_from_request(lambda: hook.attach_document(
        job.numero, piece["type_piece"], piece["nom_fichier"], piece["content"], piece["type_mime"]))


PIECE = Operation(
    code="PIECE", label="pièce justificative", routes=("documents_v1",), prepare=_prepare, send=_send,
    read_back=None, business_key=lambda job: f"{job.numero}/{job.item['nom_fichier']}",
    counts={Status.SENT: "pieces_sent", Status.REJECTED: "pieces_rejected", Status.BLOCKED: "pieces_blocked",
            Status.PENDING: "pieces_in_doubt"})

"""The training agreement (convention de formation, ``POST /v1/conventions``), sent once the
OPCO holds its contract, from the costs the source's mapping extracted with the dossier
(``convention_*`` columns of :mod:`cfa_opco.dossier.model`). The norm has no read route for a
convention: a lost answer is sent again (the OPCO keeps one convention per dossier, so a second
identical one is idempotent on its side)."""
from __future__ import annotations

from cfa_opco.dossier.payload import json_value
from cfa_opco.dossier.model import BY_NAME

from ..status import Status
from .base import Attempt, Job, Operation, Prepared, attempt_from_request, json_prepared

# couts block: payload key -> column (the per-year amounts become montantsAnnuels)
_COUTS = {"coutPedagogique": "convention_cout_pedagogique", "fraisPremierEquipement": "convention_frais_equipement",
          "fraisRestauration": "convention_frais_repas", "fraisHebergement": "convention_frais_hebergement"}


def has_convention(row: dict) -> bool:
    """The source's mapping gave this contract a convention (any of its columns set)."""
    return any(row.get(c) is not None for c in BY_NAME if c.startswith("convention_"))


def _value(row: dict, column: str):
    return json_value(row.get(column), BY_NAME[column].type)


def build_convention(row: dict) -> dict:
    couts = {key: _value(row, col) for key, col in _COUTS.items()}
    couts["montantsAnnuels"] = [{"annee": n, "montant": _value(row, f"convention_cout_annee{n}")}
                                for n in range(1, 5) if row.get(f"convention_cout_annee{n}") is not None]
    payload = {"numeroInterneDossier": row["numero_interne"],
               "employeur": {"siret": _value(row, "employeur_siret")},
               "dateDebut": _value(row, "convention_date_debut"), "dateFin": _value(row, "convention_date_fin"),
               "dureeFormation": _value(row, "formation_duree_heures"), "rncp": _value(row, "formation_rncp"),
               "couts": {k: v for k, v in couts.items() if v not in (None, [])}}
    return {k: v for k, v in payload.items() if v is not None}


def _prepare(row: dict, _context=None) -> Prepared:
    return json_prepared(build_convention(row))


def _send(hook, job: Job) -> Attempt:
    return attempt_from_request(lambda: hook.send_convention(job.prepared.payload))


CONVENTION = Operation(
    code="CONVENTION", label="convention de formation", routes=("conventions_v1",), prepare=_prepare, send=_send,
    read_back=None,
    counts={Status.SENT: "conventions_sent", Status.REJECTED: "conventions_rejected",
            Status.BLOCKED: "conventions_blocked", Status.PENDING: "conventions_in_doubt"})

"""From a canonical dossier row to the CERFA FA13 JSON sent to the OPCO
(shape: docs/api-conventions.md), and the SHA-256 that identifies it."""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Mapping

from cfa_opco.dossier.fields import IDENTIFIERS, normalize_identifier
from cfa_opco.dossier.model import COLUMNS, NATURE_AVENANT, REMUNERATION_YEARS
from cfa_opco.providers.opco.proofs import canonical_json

_PERSON_BLOCKS = ("maitre2",)


def json_value(value: Any, typ: str) -> Any:
    """A canonical column's value as the norm's JSON carries it (dates ISO, amounts 2 decimals)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return _CONVERT.get(typ, _TEXT)(value)


def _date(value: Any) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)[:10]


_TEXT = str
_CONVERT = {"date": _date, "num": lambda v: round(float(v), 2), "int": int, "bool": bool}



def _converter(column):
    """Identifiers are sent normalised (spaces, dots removed: the value the gate checked,
    extraction already stores it so; a batch staged before that is normalised here)."""
    if column.name in IDENTIFIERS:
        return lambda v, name=column.name: normalize_identifier(name, v)
    return _CONVERT.get(column.type, _TEXT)


# (column, parent path, key, converter) of every column sent, resolved once: payloads are
# built by the thousand per second during transmission
_PLAN = tuple((c.name, tuple(c.cerfa.split(".")[:-1]), c.cerfa.split(".")[-1], _converter(c))
              for c in COLUMNS if c.cerfa)


def build_payload(row: Mapping[str, Any], numero_contrat_precedent: str | None = None) -> dict:
    """The CERFA payload of one dossier. ``numero_contrat_precedent`` fills an avenant's
    reference to the contract it amends when the ERP does not hold it yet (the numéro DECA
    the OPCO gave the base contract, known from the connector's records)."""
    doc: dict = {}
    get = row.get
    for name, parents, key, convert in _PLAN:
        value = get(name)
        if value is not None and not (isinstance(value, float) and value != value):
            value = convert(value)
        target = doc
        for p in parents:
            sub = target.get(p)
            target = sub if sub is not None else target.setdefault(p, {})
        target[key] = value
    # optional blocks: absent rather than full of nulls
    for block in _PERSON_BLOCKS:
        if not any(v is not None for v in doc[block].values()):
            doc[block] = None
    apprenti = doc["apprenti"]
    if apprenti["representantLegal"]["nom"] is None:
        apprenti["representantLegal"] = None
    else:
        apprenti["representantLegal"]["adresse"] = dict(apprenti["adresse"])
    doc["organismeFormation"]["etablissementFormation"] = None
    remunerations = []
    for n in range(1, REMUNERATION_YEARS + 1):
        taux = json_value(row.get(f"remu{n}_taux"), "num")
        if taux is None:
            continue
        remunerations.append({
            "annee": n,
            "dateDebut": json_value(row.get(f"remu{n}_date_debut"), "date"),
            "dateFin": json_value(row.get(f"remu{n}_date_fin"), "date"),
            "taux": taux,
            "typeSalaire": json_value(row.get(f"remu{n}_base"), "text") or "SMIC",
        })
    doc["contrat"]["remunerationsAnnuelles"] = remunerations
    if row.get("nature") == NATURE_AVENANT and not doc["contrat"]["numeroContratPrecedent"]:
        doc["contrat"]["numeroContratPrecedent"] = numero_contrat_precedent
    return doc


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical bytes — the very bytes the hook sends."""
    return hashlib.sha256(canonical_json(payload)).hexdigest()

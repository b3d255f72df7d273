"""Sample payloads and the offline bulk-seeding path (benchmarks, demos).

``seed_dossiers(db, opco, siren, n)`` writes N dossiers straight into a sandbox SQLite
file while the server is *stopped*; with the server running use ``POST /_sandbox/seed``
(same code, inside the server, so its counters stay coherent)."""
from __future__ import annotations

import copy
from pathlib import Path

from stdnum import luhn

from .config import load_capabilities, load_config, load_idcc, opco_settings
from .store import Store

SAMPLE_DOSSIER = {
    "numeroInterne": "MR-2026-000123",
    "employeur": {
        "siret": "73282932000074", "denomination": "Boulangerie Lefèvre & Fils",
        "adresse": {"numero": "12", "voie": "rue de l'Église", "complement": None,
                    "codePostal": "69003", "commune": "Lyon"},
        "typeEmployeur": 11, "employeurSpecifique": 0, "naf": "10.71C", "nombreDeSalaries": 12,
        "codeIdcc": "0843", "libelleIdcc": "Boulangerie-pâtisserie (entreprises artisanales)",
        "employeurPublic": False, "telephone": "0478123456", "courriel": "contact@boulangerie-lefevre.fr"},
    "apprenti": {
        "nom": "N'Diaye", "nomUsage": None, "prenom": "Aïssata", "sexe": "F",
        "dateNaissance": "2007-03-14", "communeNaissance": "Lyon", "departementNaissance": "69",
        "nir": "207036938812344", "nationalite": 1, "regimeSocial": 2,
        "adresse": {"numero": "4", "voie": "allée des Tilleuls", "complement": None,
                    "codePostal": "69100", "commune": "Villeurbanne"},
        "telephone": "0612345678", "courriel": "aissata.ndiaye@example.fr",
        "handicap": False, "sportifDeHautNiveau": False, "projetCreationEntreprise": False,
        "situationAvantContrat": 2, "dernierDiplome": 38,
        "representantLegal": {"nom": "N'Diaye", "prenom": "Mariama",
                              "adresse": {"numero": "4", "voie": "allée des Tilleuls", "complement": None,
                                          "codePostal": "69100", "commune": "Villeurbanne"}}},
    "maitre1": {"nom": "Lefèvre", "prenom": "Jean-Baptiste", "dateNaissance": "1975-06-02",
                "emploiOccupe": "Artisan boulanger", "diplome": "Brevet de maîtrise"},
    "maitre2": None,
    "contrat": {
        "typeContratApp": 11, "typeDerogation": None, "numeroContratPrecedent": None,
        "dateConclusion": "2026-08-25", "dateDebutContrat": "2026-09-01", "dateFinContrat": "2028-08-31",
        "dateEffetAvenant": None, "dureeTravailHebdoHeures": 35, "dureeTravailHebdoMinutes": 0,
        "salaireEmbauche": 486.49,
        "remunerationsAnnuelles": [
            {"annee": 1, "dateDebut": "2026-09-01", "dateFin": "2027-08-31", "taux": 27.0, "typeSalaire": "SMIC"},
            {"annee": 2, "dateDebut": "2027-09-01", "dateFin": "2028-08-31", "taux": 39.0, "typeSalaire": "SMIC"}],
        "smc": None, "caisseRetraiteSupplementaire": None},
    "formation": {"rncp": "RNCP37125", "codeDiplome": "50022135", "intituleQualification": "CAP Boulanger",
                  "dateDebutFormation": "2026-09-07", "dateFinFormation": "2028-06-30", "dureeFormation": 800},
    "organismeFormation": {
        "siret": "77567227200017", "uaiCfa": "0693456G", "denomination": "CFA Métiers Rhône - Lyon",
        "adresse": {"numero": "8", "voie": "rue Marietton", "complement": None,
                    "codePostal": "69009", "commune": "Lyon"},
        "etablissementFormation": None},
}

_IDCC_BY_OPCO: dict[str, str] = {}


def siret_for(siren: str, establishment: int = 1) -> str:
    """A valid (Luhn) SIRET of ``siren``: NIC = 4-digit establishment number + key digit."""
    base = f"{siren}{establishment:04d}"
    return base + luhn.calc_check_digit(base)


def idcc_of(opco: str) -> str:
    """An IDCC that belongs to ``opco`` in the IDCC→OPCO table."""
    if not _IDCC_BY_OPCO:
        for idcc, o in sorted(load_idcc().items()):
            _IDCC_BY_OPCO.setdefault(o, idcc)
    return _IDCC_BY_OPCO[opco]


def sample_dossier(opco: str = "akto", siren: str = "775672272", numero_interne: str = "MR-2026-000123",
                   **changes) -> dict:
    """The conventions' CERFA payload, made acceptable to ``opco`` for ``siren``
    (IDCC of that OPCO, CFA SIRET of that SIREN). ``changes``: dotted paths, e.g.
    ``**{"apprenti.dateNaissance": "1980-01-01"}``."""
    p = copy.deepcopy(SAMPLE_DOSSIER)
    p["numeroInterne"] = numero_interne
    p["employeur"]["codeIdcc"] = idcc_of(opco)
    p["organismeFormation"]["siret"] = siret_for(siren) if siren != "775672272" else "77567227200017"
    for path, value in changes.items():
        obj = p
        parts = path.split(".")
        for part in parts[:-1]:
            obj = obj[int(part)] if isinstance(obj, list) else obj[part]
        if isinstance(obj, list):
            obj[int(parts[-1])] = value
        else:
            obj[parts[-1]] = value
    return p


def default_template(opco: str, siren: str) -> dict:
    return sample_dossier(opco, siren, "TEMPLATE")


def seed_dossiers(db_path: str | Path, opco: str, siren: str, count: int, *, config: str | Path | None = None,
                  overrides: dict | None = None, template: dict | None = None, prefix: str = "SEED",
                  **kwargs) -> dict:
    """Offline bulk load (server stopped). ``kwargs``: start_us, spread_seconds, outcomes."""
    cfg = load_config(config, overrides)
    if opco not in load_capabilities(cfg.get("capabilities_file")):
        raise ValueError(f"unknown OPCO {opco}")
    store = Store(db_path)
    try:
        return store.seed(opco, siren, count, template or default_template(opco, siren),
                          opco_settings(cfg, opco), prefix=prefix, **kwargs)
    finally:
        store.close()

"""OpenAPI fragments (documentation and fuzzing only: validation is in validation.py,
so that every refusal answers in the norm's ``erreurs`` format)."""
from __future__ import annotations

S = {"type": "string"}
SN = {"type": ["string", "null"]}
D = {"type": "string", "format": "date"}
I = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}

ADRESSE = {"type": "object", "required": ["voie", "codePostal", "commune"],
           "properties": {"numero": SN, "voie": S, "complement": SN,
                          "codePostal": {"type": "string", "pattern": "^[0-9]{5}$"}, "commune": S}}
PERSONNE = {"type": "object", "required": ["nom", "prenom", "dateNaissance"],
            "properties": {"nom": S, "prenom": S, "dateNaissance": D, "emploiOccupe": SN, "diplome": SN}}
DOSSIER = {
    "type": "object",
    "required": ["numeroInterne", "employeur", "apprenti", "maitre1", "contrat", "formation",
                 "organismeFormation"],
    "properties": {
        "numeroInterne": {"type": "string", "minLength": 1, "maxLength": 64},
        "employeur": {"type": "object", "required": ["siret", "denomination", "adresse", "typeEmployeur",
                                                     "naf", "nombreDeSalaries", "codeIdcc"],
                      "properties": {"siret": {"type": "string", "pattern": "^[0-9]{14}$"}, "denomination": S,
                                     "adresse": ADRESSE, "typeEmployeur": {"type": "integer", "minimum": 11, "maximum": 16},
                                     "employeurSpecifique": I, "naf": {"type": "string", "pattern": "^[0-9]{2}\\.[0-9]{2}[A-Z]$"},
                                     "nombreDeSalaries": I, "codeIdcc": {"type": "string", "pattern": "^[0-9]{4}$"},
                                     "libelleIdcc": SN, "employeurPublic": B, "telephone": SN, "courriel": SN}},
        "apprenti": {"type": "object", "required": ["nom", "prenom", "sexe", "dateNaissance", "nationalite",
                                                    "regimeSocial", "adresse"],
                     "properties": {"nom": S, "nomUsage": SN, "prenom": S, "sexe": {"enum": ["M", "F"]},
                                    "dateNaissance": D, "communeNaissance": SN, "departementNaissance": SN,
                                    "nir": SN, "nationalite": I, "regimeSocial": I, "adresse": ADRESSE,
                                    "telephone": SN, "courriel": SN, "handicap": B, "sportifDeHautNiveau": B,
                                    "projetCreationEntreprise": B, "situationAvantContrat": I,
                                    "dernierDiplome": I, "representantLegal": {"type": ["object", "null"]}}},
        "maitre1": PERSONNE,
        "maitre2": {"type": ["object", "null"]},
        "contrat": {"type": "object",
                    "required": ["typeContratApp", "dateConclusion", "dateDebutContrat", "dateFinContrat",
                                 "dureeTravailHebdoHeures", "salaireEmbauche"],
                    "properties": {"typeContratApp": I, "typeDerogation": {"type": ["integer", "null"]},
                                   "numeroContratPrecedent": SN, "dateConclusion": D, "dateDebutContrat": D,
                                   "dateFinContrat": D, "dateEffetAvenant": {"type": ["string", "null"]},
                                   "dureeTravailHebdoHeures": I, "dureeTravailHebdoMinutes": I,
                                   "salaireEmbauche": N,
                                   "remunerationsAnnuelles": {"type": "array", "items": {
                                       "type": "object", "properties": {"annee": I, "dateDebut": D, "dateFin": D,
                                                                        "taux": N, "typeSalaire": {"enum": ["SMIC", "SMC"]}}}},
                                   "smc": {"type": ["number", "null"]}, "caisseRetraiteSupplementaire": SN}},
        "formation": {"type": "object", "required": ["rncp", "codeDiplome", "intituleQualification",
                                                     "dateDebutFormation", "dateFinFormation", "dureeFormation"],
                      "properties": {"rncp": {"type": "string", "pattern": "^RNCP[0-9]{4,6}$"}, "codeDiplome": S,
                                     "intituleQualification": S, "dateDebutFormation": D, "dateFinFormation": D,
                                     "dureeFormation": I}},
        "organismeFormation": {"type": "object", "required": ["siret", "uaiCfa", "denomination", "adresse"],
                               "properties": {"siret": S, "uaiCfa": S, "denomination": S, "adresse": ADRESSE,
                                              "etablissementFormation": {"type": ["object", "null"]}}},
    },
}
CONVENTION = {"type": "object", "required": ["numeroInterneDossier", "employeur", "dateDebut", "dateFin",
                                             "dureeFormation", "rncp", "couts"],
              "properties": {"numeroInterneDossier": S, "employeur": {"type": "object", "properties": {"siret": S}},
                             "dateDebut": D, "dateFin": D, "dureeFormation": I, "rncp": S,
                             "couts": {"type": "object", "properties": {"coutPedagogique": N}}}}
FACTURE = {"type": "object", "required": ["numeroInterneFacture", "referenceFactureCFA", "numeroInterneDossier",
                                          "echeance", "montant", "dateFacture"],
           "properties": {"numeroInterneFacture": S, "referenceFactureCFA": S, "numeroInterneDossier": S,
                          "echeance": {"type": "object", "properties": {"numero": I}}, "montant": N,
                          "dateFacture": D}}
RUPTURE = {"type": "object", "required": ["numeroInterne", "dateRupture", "motif"],
           "properties": {"numeroInterne": S, "dateRupture": D, "motif": S}}
CERTIFICAT = {"type": "object", "required": ["numeroInterneDossier", "typeCertificat", "echeance"],
              "properties": {"numeroInterneDossier": S, "typeCertificat": {"enum": ["Intermediaire", "Final"]},
                             "echeance": {"type": "object", "properties": {
                                 "numero": I, "codification": S, "duree": N, "dateDebut": D, "dateFin": D}}}}
DOCUMENT_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["typeFichier", "objets", "fichier"],
    "properties": {"typeFichier": {"enum": ["CONVENTION_FORMATION", "CERFA_SIGNE", "AUTRE"]},
                   "objets": {"type": "string", "description": 'JSON: [{"typeObjet":"DOSSIER","idObjet":"<numeroInterne>"}]'},
                   "fichier": {"type": "string", "format": "binary"}}}}}}
TOKEN_BODY = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["grant_type", "client_id", "client_secret"],
    "properties": {"grant_type": {"enum": ["client_credentials"]}, "client_id": S, "client_secret": S}}}}}

ERREURS = {"description": "refused", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"erreurs": {"type": "array", "items": {
        "type": "object", "properties": {"code": S, "champ": SN, "message": S}}}}}}}}


def body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def responses(extra: dict | None) -> dict:
    out = {str(c): ERREURS for c in (400, 401, 403, 404, 409, 413, 422, 429, 503)}
    out.update(extra or {})
    return out


def header_parameters() -> list[dict]:
    return [{"name": n, "in": "header", "required": True, "schema": {"type": "string"}}
            for n in ("X-API-KEY", "EDITEUR", "LOGICIEL", "VERSION")] + [
        {"name": "Authorization", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Bearer <token> (AKTO v2 routes: OAuth2 client_credentials)"}]

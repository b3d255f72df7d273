"""The canonical dossier model.

Each ERP source maps its own schema onto these columns (one row per dossier: a contract
or an amendment). The flat shape is what the quality gate checks column by column; the
CERFA path of each column is where :mod:`cfa_opco.dossier.payload` puts the value in the
JSON sent to the OPCO. Columns without a CERFA path are the connector's own metadata.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # text, int, num, date, bool, ts
    cerfa: str | None  # dotted path in the CERFA payload, or None for metadata

    @property
    def sql_type(self) -> str:
        return {"text": "text", "int": "integer", "num": "numeric(10,2)", "date": "date",
                "bool": "boolean", "ts": "timestamptz"}[self.type]


_SPEC = """
source_id                       text  -
numero_interne                  text  numeroInterne
nature                          text  -
base_numero_interne             text  -
statut                          text  -
site_code                       text  -
etablissement_ref               text  -
entreprise_ref                  text  -
apprenant_ref                   text  -
session_ref                     text  -
maitre1_ref                     text  -
maitre2_ref                     text  -
source_modifie_le               ts    -
date_rupture                    date  -
motif_rupture                   text  -
convention_cout_pedagogique     num   -
convention_cout_annee1          num   -
convention_cout_annee2          num   -
convention_cout_annee3          num   -
convention_cout_annee4          num   -
convention_frais_equipement     num   -
convention_frais_repas          num   -
convention_frais_hebergement    num   -
convention_date_debut           date  -
convention_date_fin             date  -
employeur_siret                 text  employeur.siret
employeur_denomination          text  employeur.denomination
employeur_adresse_numero        text  employeur.adresse.numero
employeur_adresse_voie          text  employeur.adresse.voie
employeur_adresse_complement    text  employeur.adresse.complement
employeur_adresse_code_postal   text  employeur.adresse.codePostal
employeur_adresse_commune       text  employeur.adresse.commune
employeur_type                  int   employeur.typeEmployeur
employeur_specifique            int   employeur.employeurSpecifique
employeur_naf                   text  employeur.naf
employeur_effectif              int   employeur.nombreDeSalaries
employeur_idcc                  text  employeur.codeIdcc
employeur_libelle_idcc          text  employeur.libelleIdcc
employeur_public                bool  employeur.employeurPublic
employeur_telephone             text  employeur.telephone
employeur_courriel              text  employeur.courriel
apprenti_nom                    text  apprenti.nom
apprenti_nom_usage              text  apprenti.nomUsage
apprenti_prenom                 text  apprenti.prenom
apprenti_sexe                   text  apprenti.sexe
apprenti_date_naissance         date  apprenti.dateNaissance
apprenti_commune_naissance      text  apprenti.communeNaissance
apprenti_departement_naissance  text  apprenti.departementNaissance
apprenti_nir                    text  apprenti.nir
apprenti_nationalite            int   apprenti.nationalite
apprenti_regime_social          int   apprenti.regimeSocial
apprenti_adresse_numero         text  apprenti.adresse.numero
apprenti_adresse_voie           text  apprenti.adresse.voie
apprenti_adresse_complement     text  apprenti.adresse.complement
apprenti_adresse_code_postal    text  apprenti.adresse.codePostal
apprenti_adresse_commune        text  apprenti.adresse.commune
apprenti_telephone              text  apprenti.telephone
apprenti_courriel               text  apprenti.courriel
apprenti_handicap               bool  apprenti.handicap
apprenti_sportif_haut_niveau    bool  apprenti.sportifDeHautNiveau
apprenti_projet_creation        bool  apprenti.projetCreationEntreprise
apprenti_situation_avant        int   apprenti.situationAvantContrat
apprenti_dernier_diplome        int   apprenti.dernierDiplome
representant_nom                text  apprenti.representantLegal.nom
representant_prenom             text  apprenti.representantLegal.prenom
maitre1_nom                     text  maitre1.nom
maitre1_prenom                  text  maitre1.prenom
maitre1_date_naissance          date  maitre1.dateNaissance
maitre1_emploi                  text  maitre1.emploiOccupe
maitre1_diplome                 text  maitre1.diplome
maitre2_nom                     text  maitre2.nom
maitre2_prenom                  text  maitre2.prenom
maitre2_date_naissance          date  maitre2.dateNaissance
maitre2_emploi                  text  maitre2.emploiOccupe
maitre2_diplome                 text  maitre2.diplome
contrat_type                    int   contrat.typeContratApp
contrat_derogation              int   contrat.typeDerogation
contrat_numero_precedent        text  contrat.numeroContratPrecedent
contrat_date_conclusion         date  contrat.dateConclusion
contrat_date_debut              date  contrat.dateDebutContrat
contrat_date_fin                date  contrat.dateFinContrat
contrat_date_effet_avenant      date  contrat.dateEffetAvenant
contrat_hebdo_heures            int   contrat.dureeTravailHebdoHeures
contrat_hebdo_minutes           int   contrat.dureeTravailHebdoMinutes
contrat_salaire_embauche        num   contrat.salaireEmbauche
contrat_smc                     num   contrat.smc
contrat_caisse_retraite         text  contrat.caisseRetraiteSupplementaire
remu1_date_debut                date  -
remu1_date_fin                  date  -
remu1_taux                      num   -
remu1_base                      text  -
remu2_date_debut                date  -
remu2_date_fin                  date  -
remu2_taux                      num   -
remu2_base                      text  -
remu3_date_debut                date  -
remu3_date_fin                  date  -
remu3_taux                      num   -
remu3_base                      text  -
remu4_date_debut                date  -
remu4_date_fin                  date  -
remu4_taux                      num   -
remu4_base                      text  -
formation_rncp                  text  formation.rncp
formation_cfd                   text  formation.codeDiplome
formation_intitule              text  formation.intituleQualification
formation_date_debut            date  formation.dateDebutFormation
formation_date_fin              date  formation.dateFinFormation
formation_duree_heures          int   formation.dureeFormation
cfa_siret                       text  organismeFormation.siret
cfa_uai                         text  organismeFormation.uaiCfa
cfa_denomination                text  organismeFormation.denomination
cfa_adresse_numero              text  organismeFormation.adresse.numero
cfa_adresse_voie                text  organismeFormation.adresse.voie
cfa_adresse_complement          text  organismeFormation.adresse.complement
cfa_adresse_code_postal         text  organismeFormation.adresse.codePostal
cfa_adresse_commune             text  organismeFormation.adresse.commune
"""

COLUMNS: tuple[Column, ...] = tuple(
    Column(name, typ, None if path == "-" else path)
    for name, typ, path in (line.split() for line in _SPEC.strip().splitlines())
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
BY_NAME = {c.name: c for c in COLUMNS}
REMUNERATION_YEARS = 4

# columns a source's mapping may leave out (read as NULL): the convention de formation is
# sent only by the ERPs that hold its costs
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMN_NAMES if c.startswith("convention_"))

NATURE_CONTRAT = "CONTRAT"
NATURE_AVENANT = "AVENANT"


def pandas_dtypes() -> dict[str, str]:
    """dtypes for reading the canonical rows (dates are parsed separately)."""
    mapping = {"text": "string", "int": "Int64", "num": "Float64", "bool": "boolean",
               "date": "string", "ts": "string"}
    return {c.name: mapping[c.type] for c in COLUMNS}


def date_columns() -> list[str]:
    return [c.name for c in COLUMNS if c.type == "date"]

"""Field-level knowledge of the canonical dossier, in one place:

* ``IDENTIFIERS``: the identifier columns (SIRET, UAI, NIR, IDCC, postal codes...) and
  :func:`normalize_identifier`, which removes what ERPs and spreadsheets put in them
  (spaces, non-breaking spaces, dots, outer blanks). Extraction applies it before the
  row is staged, so the quality gate checks and the payload sends the same value.
* ``TEXT_LIMITS``: the maximum length of every text field sent to the OPCO, with its
  French label (docs/quality.md says where each limit comes from).
* :func:`parse_value`: reading one raw ERP value (text, as PostgreSQL prints it) into the
  canonical type of its column, or the French reason it cannot be read. Extraction calls
  it row by row, so that one unreadable value quarantines its row and never fails the
  query of the whole source.
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from cfa_opco.providers.opco.reading import mask as mask_text

# -- identifiers ---------------------------------------------------------------------------
# column -> (French label, upper-case it, dots are separators). Blanks of every kind go;
# dots and dashes go in the long identifiers, where they separate digit groups. In short
# codes (IDCC, postal codes) a dot is not a separator: "1597.0" is a number formatted by a
# spreadsheet, whose ".0" goes; any other dot stays and the gate reports the value.
IDENTIFIERS = {
    "employeur_siret": ("SIRET de l'employeur", False, True),
    "cfa_siret": ("SIRET du CFA", False, True),
    "cfa_uai": ("UAI du CFA", True, True),
    "apprenti_nir": ("NIR de l'apprenti", True, True),
    "formation_rncp": ("code RNCP", True, True),
    "formation_cfd": ("code diplôme (CFD)", True, True),
    "employeur_idcc": ("IDCC de l'employeur", False, False),
    "employeur_adresse_code_postal": ("code postal de l'employeur", False, False),
    "apprenti_adresse_code_postal": ("code postal de l'apprenti", False, False),
    "cfa_adresse_code_postal": ("code postal du CFA", False, False),
}
# every kind of blank an ERP or a spreadsheet leaves in a number: spaces, NBSP (U+00A0),
# narrow NBSP (U+202F), figure and thin spaces, tabs
_BLANKS = re.compile(r"[\s\u00a0\u202f\u2007\u2009]+")
_SEPARATORS = re.compile(r"[.\-]+")
_FLOAT_ZERO = re.compile(r"^(\d+)\.0+$")


def normalize_identifier(column: str, value: str | None) -> str | None:
    """``"552 100 554 00016"`` -> ``"55210055400016"``; ``" 1597.0"`` (IDCC) -> ``"1597"``;
    blanks only -> None. Values that stay invalid after this (letters in a SIRET, 13
    digits...) are left for the gate to report with what was found."""
    if value is None:
        return None
    _, upper, dots = IDENTIFIERS.get(column, ("", False, True))
    if type(value) is str and value.isascii() and value.isalnum() and (not upper or value.isdigit() or value.isupper()):
        return value    # already normalised (extraction stores it so): no regex at each payload build
    out = _BLANKS.sub("", str(value))
    out = _SEPARATORS.sub("", out) if dots else _FLOAT_ZERO.sub(r"\1", out)
    if not out:
        return None
    return out.upper() if upper else out


# -- text lengths --------------------------------------------------------------------------
# column -> (max characters, French label). Sources: the CERFA FA13 form's boxes and the
# norm's schema (docs/quality.md, "Longueurs"); where the norm is silent, the CERFA box.
TEXT_LIMITS: dict[str, tuple[int, str]] = {
    "numero_interne": (30, "Numéro interne du dossier"),
    "employeur_denomination": (80, "Dénomination de l'employeur"),
    "employeur_adresse_numero": (10, "Adresse de l'employeur (numéro)"),
    "employeur_adresse_voie": (38, "Adresse de l'employeur (voie)"),
    "employeur_adresse_complement": (38, "Adresse de l'employeur (complément)"),
    "employeur_adresse_commune": (50, "Adresse de l'employeur (commune)"),
    "employeur_libelle_idcc": (200, "Libellé de la convention collective"),
    "employeur_telephone": (20, "Téléphone de l'employeur"),
    "employeur_courriel": (80, "Courriel de l'employeur"),
    "apprenti_nom": (50, "Nom de naissance de l'apprenti"),
    "apprenti_nom_usage": (50, "Nom d'usage de l'apprenti"),
    "apprenti_prenom": (50, "Prénom de l'apprenti"),
    "apprenti_commune_naissance": (50, "Commune de naissance de l'apprenti"),
    "apprenti_adresse_numero": (10, "Adresse de l'apprenti (numéro)"),
    "apprenti_adresse_voie": (38, "Adresse de l'apprenti (voie)"),
    "apprenti_adresse_complement": (38, "Adresse de l'apprenti (complément)"),
    "apprenti_adresse_commune": (50, "Adresse de l'apprenti (commune)"),
    "apprenti_telephone": (20, "Téléphone de l'apprenti"),
    "apprenti_courriel": (80, "Courriel de l'apprenti"),
    "representant_nom": (50, "Nom du représentant légal"),
    "representant_prenom": (50, "Prénom du représentant légal"),
    "maitre1_nom": (50, "Nom du maître d'apprentissage"),
    "maitre1_prenom": (50, "Prénom du maître d'apprentissage"),
    "maitre1_emploi": (80, "Emploi occupé par le maître d'apprentissage"),
    "maitre1_diplome": (80, "Diplôme du maître d'apprentissage"),
    "maitre2_nom": (50, "Nom du maître d'apprentissage 2"),
    "maitre2_prenom": (50, "Prénom du maître d'apprentissage 2"),
    "maitre2_emploi": (80, "Emploi occupé par le maître d'apprentissage 2"),
    "maitre2_diplome": (80, "Diplôme du maître d'apprentissage 2"),
    "contrat_caisse_retraite": (80, "Caisse de retraite complémentaire"),
    "formation_intitule": (150, "Intitulé de la qualification préparée"),
    "cfa_denomination": (80, "Dénomination du CFA"),
    "cfa_adresse_numero": (10, "Adresse du CFA (numéro)"),
    "cfa_adresse_voie": (38, "Adresse du CFA (voie)"),
    "cfa_adresse_complement": (38, "Adresse du CFA (complément)"),
    "cfa_adresse_commune": (50, "Adresse du CFA (commune)"),
}


# -- reading raw ERP values ----------------------------------------------------------------
class Unreadable(ValueError):
    """A raw value that cannot be read into its column's type; ``str()`` is the French
    reason (what was found, what is expected)."""


_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T].*)?$")
_FR = re.compile(r"^(\d{1,2})[/.](\d{1,2})[/.](\d{4})$")
_INT = re.compile(r"^[+-]?\d+$")
_NUM_BLANKS = re.compile(r"[\s\u00a0\u202f]")
_TRUE = {"t", "true", "1", "o", "oui", "y", "yes", "vrai"}
_FALSE = {"f", "false", "0", "n", "non", "no", "faux"}
# text that went through a wrong encoding: UTF-8 read as Latin-1/Windows-1252 ("Ã©",
# "â€™"), the Unicode replacement character, control characters
MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf\u00a0-\u00ff\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc]|\u00e2\u20ac|\ufffd|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

EXPECTED = {"date": "une date (JJ/MM/AAAA ou AAAA-MM-JJ)", "int": "un nombre entier",
            "num": "un nombre", "bool": "oui/non", "ts": "un horodatage"}


# labels of the columns that are neither identifiers nor length-limited texts
_OTHER_LABELS = {
    "source_id": "source", "nature": "nature du dossier", "base_numero_interne": "contrat de base",
    "statut": "statut", "site_code": "site", "source_modifie_le": "date de modification",
    "date_rupture": "date de rupture", "motif_rupture": "motif de rupture",
    "convention_cout_pedagogique": "coût pédagogique de la convention",
    "convention_cout_annee1": "montant de la 1re année de la convention",
    "convention_cout_annee2": "montant de la 2e année de la convention",
    "convention_cout_annee3": "montant de la 3e année de la convention",
    "convention_cout_annee4": "montant de la 4e année de la convention",
    "convention_frais_equipement": "frais de premier équipement de la convention",
    "convention_frais_repas": "frais de restauration de la convention",
    "convention_frais_hebergement": "frais d'hébergement de la convention",
    "convention_date_debut": "date de début de la convention", "convention_date_fin": "date de fin de la convention",
    "employeur_type": "type d'employeur", "employeur_specifique": "employeur spécifique",
    "employeur_naf": "code NAF de l'employeur", "employeur_effectif": "effectif de l'employeur",
    "employeur_public": "employeur public", "apprenti_sexe": "sexe de l'apprenti",
    "apprenti_date_naissance": "date de naissance de l'apprenti",
    "apprenti_departement_naissance": "département de naissance de l'apprenti",
    "apprenti_nationalite": "nationalité de l'apprenti", "apprenti_regime_social": "régime social de l'apprenti",
    "apprenti_handicap": "RQTH de l'apprenti", "apprenti_sportif_haut_niveau": "sportif de haut niveau",
    "apprenti_projet_creation": "projet de création d'entreprise",
    "apprenti_situation_avant": "situation avant le contrat", "apprenti_dernier_diplome": "dernier diplôme",
    "maitre1_date_naissance": "date de naissance du maître d'apprentissage",
    "maitre2_date_naissance": "date de naissance du maître d'apprentissage 2",
    "contrat_type": "type de contrat", "contrat_derogation": "dérogation",
    "contrat_numero_precedent": "numéro du contrat précédent",
    "contrat_date_conclusion": "date de signature du contrat", "contrat_date_debut": "date de début du contrat",
    "contrat_date_fin": "date de fin du contrat", "contrat_date_effet_avenant": "date d'effet de l'avenant",
    "contrat_hebdo_heures": "durée hebdomadaire (heures)", "contrat_hebdo_minutes": "durée hebdomadaire (minutes)",
    "contrat_salaire_embauche": "salaire à l'embauche", "contrat_smc": "salaire minimum conventionnel",
    "formation_date_debut": "date de début de formation", "formation_date_fin": "date de fin de formation",
    "formation_duree_heures": "durée de la formation (heures)",
}


def label(column: str) -> str:
    """French label of a canonical column (for messages)."""
    if column in TEXT_LIMITS:
        return TEXT_LIMITS[column][1]
    if column in IDENTIFIERS:
        text = IDENTIFIERS[column][0]
        return text[0].upper() + text[1:]
    m = re.match(r"remu(\d)_(date_debut|date_fin|taux|base)$", column)
    if m:
        what = {"date_debut": "début", "date_fin": "fin", "taux": "taux", "base": "base"}[m[2]]
        return f"Rémunération année {m[1]} ({what})"
    text = _OTHER_LABELS.get(column, column)
    return text[0].upper() + text[1:]


# personal data: never shown whole in a message (birth dates as month/year, NIR masked)
PERSONAL = {"apprenti_nir", "apprenti_date_naissance", "maitre1_date_naissance", "maitre2_date_naissance"}


def masked(column: str, raw: str) -> str:
    """How a raw value is shown in messages: personal data masked (a NIR or an IBAN typed in
    any other field too)."""
    if column not in PERSONAL:
        return mask_text(raw)
    m = _FR.match(raw.strip())
    if m:
        return f"**/{m[2]}/{m[3]}"
    m = _ISO.match(raw.strip())
    if m:
        return f"{m[1]}-{m[2]}-**"
    return "*" * min(len(raw), 15)


def _shown(raw: str) -> str:
    raw = raw if len(raw) <= 40 else raw[:37] + "..."
    return "« " + raw + " »"


def _show(column: str | None, raw: str) -> str:
    """A value quoted in an Unreadable message, masked as :func:`masked` shows it; computed
    only when the message is (extraction parses every cell, masking is for the few bad ones)."""
    return _shown(masked(column or "", raw))


def parse_date(raw: str, column: str | None = None) -> dt.date:
    m = _ISO.match(raw)
    if m:
        y, mo, d = int(m[1]), int(m[2]), int(m[3])
    else:
        m = _FR.match(raw)
        if not m:
            raise Unreadable(f"{_show(column, raw)} n'est pas une date (format attendu : JJ/MM/AAAA ou AAAA-MM-JJ)")
        d, mo, y = int(m[1]), int(m[2]), int(m[3])
    try:
        return dt.date(y, mo, d)
    except ValueError:
        raise Unreadable(f"{_show(column, raw)} est une date impossible (ce jour n'existe pas en "
                         f"{mo:02d}/{y})" if 1 <= mo <= 12 else
                         f"{_show(column, raw)} est une date impossible (il n'y a pas de mois {mo})") from None


def parse_value(typ: str, raw: str | None, column: str | None = None):
    """Raw text -> canonical value (None for blank); raises :class:`Unreadable`, whose
    message shows the value (personal data of ``column`` masked)."""
    if raw is None:
        return None
    s = raw.strip()
    if not s:
        return None
    if typ == "text":
        if MOJIBAKE.search(s):
            raise Unreadable(f"{_show(column, s)} contient des caractères mal encodés (texte enregistré "
                             "dans un autre encodage que l'UTF-8) : à ressaisir dans l'ERP")
        return s
    if typ == "date":
        return parse_date(s, column)
    if typ == "ts":
        return s
    if typ == "bool":
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise Unreadable(f"{_show(column, s)} n'est pas une valeur oui/non")
    if typ in ("int", "num"):
        compact = _NUM_BLANKS.sub("", s).replace(",", ".")
        try:
            value = Decimal(compact)
            if not value.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise Unreadable(f"{_show(column, s)} n'est pas {EXPECTED[typ]}") from None
        if typ == "int":
            if value != value.to_integral_value():
                raise Unreadable(f"{_show(column, s)} n'est pas {EXPECTED['int']}")
            if abs(value) > 2_147_483_647:
                raise Unreadable(f"{_show(column, s)} est hors limites pour {EXPECTED['int']}")
            return int(value)
        if abs(value) >= Decimal("100000000"):
            raise Unreadable(f"{_show(column, s)} est hors limites (au plus 99 999 999,99)")
        return value.quantize(Decimal("0.01"))
    raise ValueError(f"unknown column type {typ!r}")

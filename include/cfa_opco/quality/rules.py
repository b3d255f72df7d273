"""The rule engine: one vectorised implementation of every rule of the dossier.

The batch (one row per dossier, :mod:`cfa_opco.dossier.model` columns) is split into five
*domains*. The four reference domains are deduplicated first — companies by
``entreprise_ref``, learners by ``apprenant_ref``, sessions by ``session_ref``, CFA sites by
``etablissement_ref`` — so that a company typed once and reused by 40 dossiers is checked
once and reported once (the root cause), then its anomalies are mapped back to every
dossier that uses it. The fifth domain, ``contrat``, is the dossier itself (dates, ages at
contract start, pay, amendments).

Each domain frame is *prepared* once (dates parsed, identifiers compacted and checked
through python-stdnum on the unique values, ages and SMIC computed with numpy), then
every :class:`Rule` is a cheap boolean expression over the prepared columns. Both the
Great Expectations suites (:mod:`cfa_opco.quality.expectations`) and the plain-pandas
path (:func:`evaluate`) call exactly these functions.

Rules are guarded on their preconditions: a missing value is reported once, by
``CHAMP_OBLIGATOIRE`` (or its specific rule, e.g. ``APPRENTI_NIR_MANQUANT``), never by the
rules that read it; an end date before the start date is ``CONTRAT_DATES_ORDRE`` and the
duration rules are then not evaluated, and so on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from stdnum.fr import nir as stdnum_nir
from stdnum.fr import siret as stdnum_siret

from cfa_opco.dossier.model import BY_NAME
from cfa_opco.providers.opco.reading import mask as mask_text
from cfa_opco.quality.reference import Reference, catalogue, reference

DOMAIN_KEYS = {               # reference domain -> the ERP reference its rows are deduplicated on
    "entreprise": "entreprise_ref",
    "apprenant": "apprenant_ref",
    "session": "session_ref",
    "etablissement": "etablissement_ref",
}
DOMAINS = ("entreprise", "apprenant", "session", "etablissement", "contrat")
RECORD_REFS = {"entreprise": "entreprise_ref", "apprenant": "apprenant_ref", "session": "session_ref",
               "etablissement": "etablissement_ref", "maitre1": "maitre1_ref", "maitre2": "maitre2_ref",
               "contrat": "numero_interne"}
DOMAIN_LABELS = {"entreprise": "Entreprise", "apprenant": "Apprenant", "session": "Session de formation",
                 "etablissement": "Établissement CFA", "contrat": "Contrat", "maitre1": "Maître d'apprentissage",
                 "maitre2": "Maître d'apprentissage"}

# columns of each domain (besides its key); the contract domain reads every dossier row
DOMAIN_COLUMNS = {
    "entreprise": ["employeur_siret", "employeur_denomination", "employeur_naf", "employeur_idcc",
                   "employeur_type", "employeur_specifique", "employeur_adresse_code_postal"],
    "apprenant": ["apprenti_nom", "apprenti_prenom", "apprenti_sexe", "apprenti_date_naissance",
                  "apprenti_departement_naissance", "apprenti_nir", "apprenti_nationalite",
                  "apprenti_regime_social"],
    "session": ["formation_rncp", "formation_cfd", "formation_intitule", "formation_date_debut",
                "formation_date_fin", "formation_duree_heures"],
    "etablissement": ["cfa_siret", "cfa_uai", "cfa_denomination"],
}
CONTRAT_COLUMNS = [
    "source_id", "numero_interne", "nature", "base_numero_interne", "statut", "site_code",
    "etablissement_ref", "entreprise_ref", "apprenant_ref", "session_ref", "maitre1_ref", "maitre2_ref",
    "date_rupture", "employeur_adresse_code_postal", "employeur_denomination",
    "apprenti_nom", "apprenti_prenom", "apprenti_date_naissance", "apprenti_handicap",
    "apprenti_sportif_haut_niveau", "apprenti_projet_creation", "representant_nom",
    "maitre1_nom", "maitre1_prenom", "maitre1_date_naissance", "maitre2_nom", "maitre2_prenom",
    "maitre2_date_naissance", "contrat_type", "contrat_derogation", "contrat_numero_precedent",
    "contrat_date_conclusion", "contrat_date_debut", "contrat_date_fin", "contrat_date_effet_avenant",
    "contrat_hebdo_heures", "contrat_hebdo_minutes", "contrat_salaire_embauche", "contrat_smc",
    *[f"remu{n}_{c}" for n in range(1, 5) for c in ("date_debut", "taux", "base")],
    "formation_date_debut", "formation_date_fin", "formation_duree_heures", "formation_intitule",
    "cfa_denomination",
    *[c for c in BY_NAME if c.startswith("convention_")],
]
# length limits (cfa_opco.dossier.fields.TEXT_LIMITS): each text is checked on the record it
# belongs to (the employer's address on the company, once for all its dossiers)
from cfa_opco.dossier.fields import TEXT_LIMITS  # noqa: E402


def _length_domain(col: str) -> tuple[str, str]:
    """(domain frame, record) of a length-limited column."""
    if col.startswith("employeur_"):
        return "entreprise", "entreprise"
    if col.startswith(("apprenti_", "representant_")):
        return "apprenant", "apprenant"
    if col.startswith("formation_"):
        return "session", "session"
    if col.startswith("cfa_"):
        return "etablissement", "etablissement"
    if col.startswith(("maitre1_", "maitre2_")):
        return "contrat", col[:7]
    return "contrat", "contrat"


for _col in TEXT_LIMITS:
    _dom = _length_domain(_col)[0]
    _target = DOMAIN_COLUMNS[_dom] if _dom != "contrat" else CONTRAT_COLUMNS
    if _col not in _target:
        _target.append(_col)

# every canonical column a rule or a report reads (what the gate loads from staged_dossier)
NEEDED_COLUMNS = tuple(dict.fromkeys(
    CONTRAT_COLUMNS + [c for cols in DOMAIN_COLUMNS.values() for c in cols]))

REQUIRED = {   # CHAMP_OBLIGATOIRE: field -> (domain, French label)
    "employeur_siret": ("entreprise", "le SIRET de l'employeur"),
    "employeur_denomination": ("entreprise", "la raison sociale de l'employeur"),
    "employeur_naf": ("entreprise", "le code NAF de l'employeur"),
    "employeur_idcc": ("entreprise", "le code IDCC de l'employeur"),
    "employeur_type": ("entreprise", "le type d'employeur"),
    "apprenti_nom": ("apprenant", "le nom de l'apprenti"),
    "apprenti_prenom": ("apprenant", "le prénom de l'apprenti"),
    "apprenti_sexe": ("apprenant", "le sexe de l'apprenti"),
    "apprenti_date_naissance": ("apprenant", "la date de naissance de l'apprenti"),
    "apprenti_departement_naissance": ("apprenant", "le département de naissance de l'apprenti"),
    "apprenti_nationalite": ("apprenant", "la nationalité de l'apprenti"),
    "formation_rncp": ("session", "le code RNCP de la formation"),
    "formation_cfd": ("session", "le code diplôme (CFD) de la formation"),
    "formation_date_debut": ("session", "la date de début de formation"),
    "formation_date_fin": ("session", "la date de fin de formation"),
    "formation_duree_heures": ("session", "la durée de la formation en heures"),
    "cfa_siret": ("etablissement", "le SIRET du CFA"),
    "cfa_uai": ("etablissement", "l'UAI du CFA"),
    "contrat_type": ("contrat", "le type de contrat"),
    "contrat_date_conclusion": ("contrat", "la date de signature du contrat"),
    "contrat_date_debut": ("contrat", "la date de début du contrat"),
    "contrat_date_fin": ("contrat", "la date de fin du contrat"),
    "contrat_hebdo_heures": ("contrat", "la durée hebdomadaire de travail"),
    "contrat_salaire_embauche": ("contrat", "le salaire à l'embauche"),
    "remu1_taux": ("contrat", "le taux de rémunération de la 1re année"),
    "maitre1_nom": ("contrat", "le nom du maître d'apprentissage"),
    "maitre1_date_naissance": ("contrat", "la date de naissance du maître d'apprentissage"),
}

CONTRACT_TYPES = {11, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 38}
AVENANT_TYPES = {31, 32, 33, 34, 35, 36, 37, 38}
AVENANT_NEEDS_PREVIOUS = [31, 32, 33, 34, 35, 36, 37]
IDCC_NO_OPCO = {"9998": "convention collective en cours de négociation (9998)",
                "9999": "sans convention collective (9999)"}
UAI_LETTERS = np.array(list("ABCDEFGHJKLMNPRSTUVWXYZ"))   # the alphabet without I, O and Q
HOURS_PER_YEAR = 1607
THEORY_SHARE = 0.25


# -- the rule type -------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    code: str
    domain: str                     # the frame it is evaluated on (and the GX suite it is in)
    field: str                      # the canonical field reported
    inputs: tuple[str, ...]         # prepared columns it reads (the GX expectation's column_list)
    fails: Callable[[pd.DataFrame], pd.Series]                         # True = anomaly
    describe: Callable[[pd.DataFrame], tuple[pd.Series, pd.Series]]    # (masked value, message)
    title: str                      # what the rule checks, in French (docs, Data Docs)
    record: str = ""                # the source record to fix (entreprise, apprenant, ... contrat)
    name: str = field(default="")   # unique id (a code may have several fields)

    @property
    def id(self) -> str:
        return self.name or f"{self.code}:{self.field}"


RULES: list[Rule] = []


def add_rule(code, domain, field, inputs, title, fails, describe, record=None):
    RULES.append(Rule(code, domain, field, tuple(inputs), fails, describe, title, record or domain))


# -- vectorised helpers --------------------------------------------------------------------
def _text(s: pd.Series) -> pd.Series:
    """Stripped text, blanks as missing."""
    s = s.astype("str").str.strip()
    return s.where(s != "")


def _date(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s.astype("datetime64[us]")
    return pd.to_datetime(s.astype("str"), format="%Y-%m-%d", errors="coerce").astype("datetime64[us]")


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


def _bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    mapped = s.map({True: True, False: False, "t": True, "f": False, "true": True, "false": False,
                    "True": True, "False": False})   # (1 and 0 are True and False as keys)
    return mapped.fillna(False).astype(bool)


def _age(birth: pd.Series, day: pd.Series) -> pd.Series:
    """Age in whole years on ``day`` (NaN when either date is missing)."""
    by, bm, bd = birth.dt.year, birth.dt.month, birth.dt.day
    dy, dm, dd = day.dt.year, day.dt.month, day.dt.day
    before = (dm * 100 + dd) < (bm * 100 + bd)
    return (dy - by - before.astype("float64")).astype("float64")


def _add_months(d: pd.Series, months: int) -> pd.Series:
    return d + pd.DateOffset(months=months)


def _isin_map(values: pd.Series, fn: Callable[[str], object]) -> pd.Series:
    """Apply a scalar function (python-stdnum) once per unique value, map the result back."""
    uniq = values.dropna().unique()
    table = {v: fn(v) for v in uniq}
    return values.map(table)


def fmt_siret(s: pd.Series) -> pd.Series:
    s = s.fillna("")
    return (s.str[:3] + " " + s.str[3:6] + " " + s.str[6:9] + " " + s.str[9:]).where(s.str.len() == 14, s)


def mask_nir(s: pd.Series) -> pd.Series:
    """``2 07 03 ** *** *** 44``: sex, year and month of birth and the key stay readable."""
    s = s.fillna("")
    masked = s.str[0] + " " + s.str[1:3] + " " + s.str[3:5] + " ** *** *** " + s.str[13:15]
    other = pd.Series(np.where(s.str.len() > 2, "*" * 5 + " (" + s.str.len().astype(str) + " caractères)", s),
                      index=s.index)
    return masked.where(s.str.len() == 15, other)


def mask_birth(d: pd.Series) -> pd.Series:
    """Birth dates are shown as month/year only."""
    return d.dt.strftime("%m/%Y").fillna("")


def fmt_date(d: pd.Series) -> pd.Series:
    return d.dt.strftime("%d/%m/%Y").fillna("(vide)")


def fmt_num(s: pd.Series, decimals: int = 0) -> pd.Series:
    return s.map(lambda v: "" if pd.isna(v) else f"{v:,.{decimals}f}".replace(",", " ").replace(".", ","))


def _s(x) -> pd.Series:
    return x.astype("str") if isinstance(x, pd.Series) else x


# -- preparation (once per domain frame) ---------------------------------------------------
def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes for the columns the rules read (missing columns added as empty):
    text stripped with blanks as missing, dates as datetime64, numbers as float64,
    booleans as bool. Accepts rows straight from the database or hand-made frames."""
    out = {}
    n = len(df)
    for col in NEEDED_COLUMNS:
        s = df[col] if col in df.columns else pd.Series([None] * n, index=df.index, dtype="object")
        typ = BY_NAME[col].type
        if typ == "text":
            out[col] = _text(s)
        elif typ == "date":
            out[col] = _date(s)
        elif typ in ("int", "num"):
            out[col] = _num(s)
        elif typ == "bool":
            out[col] = _bool(s)
        else:
            out[col] = s
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def split_domains(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The normalized batch -> one frame per domain (reference domains deduplicated)."""
    frames = {}
    for domain, key in DOMAIN_KEYS.items():
        # a dossier without a reference id is its own record
        ref = df[key].fillna("dossier:" + df["numero_interne"].fillna(""))
        sub = df[["source_id", *DOMAIN_COLUMNS[domain]]].assign(**{key: ref})
        sub = sub.drop_duplicates(["source_id", key]).reset_index(drop=True)
        frames[domain] = sub
    frames["contrat"] = df[CONTRAT_COLUMNS].copy()
    return frames


def prepare(domain: str, frame: pd.DataFrame, ref: Reference | None = None) -> pd.DataFrame:
    ref = ref or reference()
    return PREPARE[domain](frame.copy(), ref)


def _prep_siret(frame: pd.DataFrame, col: str, prefix: str) -> None:
    s = frame[col].str.replace(r"[\s.]", "", regex=True)
    frame[f"_{prefix}_siret"] = s
    frame[f"_{prefix}_siret_fmt"] = s.str.fullmatch(r"\d{14}")
    frame[f"_{prefix}_siret_ok"] = _isin_map(s.where(frame[f"_{prefix}_siret_fmt"]),
                                             stdnum_siret.is_valid).eq(True)


def _prep_entreprise(f: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    _prep_siret(f, "employeur_siret", "emp")
    idcc = f["employeur_idcc"]
    idcc = idcc.where(~idcc.str.fullmatch(r"\d{1,4}").astype(bool), idcc.str.zfill(4))
    f["_idcc"] = idcc
    f["_opco"] = idcc.map(ref.idcc_opco)
    f["_naf_ok"] = f["employeur_naf"].str.upper().str.fullmatch(r"\d{2}\.?\d{2}[A-Z]").astype(bool)
    return f


def _prep_apprenant(f: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    nir = f["apprenti_nir"].str.replace(r"[\s.]", "", regex=True).str.upper()
    f["_nir"] = nir
    fmt = nir.str.fullmatch(r"\d{5}(?:\d{2}|2A|2B)\d{8}").astype(bool)
    f["_nir_fmt"] = fmt
    f["_nir_ok"] = _isin_map(nir.where(fmt), stdnum_nir.is_valid).eq(True)
    birth = f["apprenti_date_naissance"]
    f["_nir_yy"] = _num(nir.str[1:3].where(fmt))
    f["_nir_mm"] = _num(nir.str[3:5].where(fmt))
    f["_birth_yy"] = (birth.dt.year % 100).astype("float64")
    f["_birth_mm"] = birth.dt.month.astype("float64")
    f["_birth_y"] = birth.dt.year.astype("float64")
    dep = f["apprenti_departement_naissance"].str.upper()
    dep = dep.where(~dep.str.fullmatch(r"\d").astype(bool), dep.str.zfill(2))
    f["_dep2"] = dep.str[:2]
    f["_nir_dep"] = nir.str[5:7].where(fmt)
    return f


def _prep_session(f: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    rncp = f["formation_rncp"].str.replace(r"\s", "", regex=True).str.upper()
    cfd = f["formation_cfd"].str.replace(r"\s", "", regex=True).str.upper()
    f["_rncp"], f["_cfd"] = rncp, cfd
    f["_rncp_fmt"] = rncp.str.fullmatch(r"RNCP\d{3,6}").astype(bool)
    f["_cfd_fmt"] = cfd.str.fullmatch(r"[0-9A-Z]{8}").astype(bool)
    f["_rncp_cfd"] = rncp.map(ref.formations)
    d, e = f["formation_date_debut"], f["formation_date_fin"]
    f["_f_ordre_ok"] = (e > d).astype(bool)
    f["_f_min"] = _add_months(d, 6) - pd.Timedelta(days=1)
    f["_f_max"] = _add_months(d, 48) - pd.Timedelta(days=1)
    return f


def _prep_etablissement(f: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    _prep_siret(f, "cfa_siret", "cfa")
    uai = f["cfa_uai"].str.replace(r"\s", "", regex=True).str.upper()
    fmt = uai.str.fullmatch(r"\d{7}[A-Z]").astype(bool)
    f["_uai"], f["_uai_fmt"] = uai, fmt
    num = pd.to_numeric(uai.str[:7].where(fmt), errors="coerce").fillna(0).astype("int64").to_numpy()
    expected = pd.Series(UAI_LETTERS[num % 23], index=f.index)
    f["_uai_key"] = expected.where(fmt)
    f["_uai_ok"] = (fmt & (uai.str[7] == expected)).astype(bool)
    return f


def _prep_contrat(f: pd.DataFrame, ref: Reference) -> pd.DataFrame:
    start, end = f["contrat_date_debut"], f["contrat_date_fin"]
    f["_ordre_ok"] = (end > start).astype(bool)
    f["_age"] = _age(f["apprenti_date_naissance"], start)
    f["_m1_age"] = _age(f["maitre1_date_naissance"], start)
    f["_m2_age"] = _age(f["maitre2_date_naissance"], start)
    f["_min_fin"] = _add_months(start, 6) - pd.Timedelta(days=1)
    f["_max_fin"] = _add_months(start, 54) - pd.Timedelta(days=1)
    f["_f_fin_3m"] = _add_months(f["formation_date_fin"], 3)
    f["_debut_m3"] = _add_months(start, -3)
    f["_debut_p3"] = _add_months(start, 3)
    f["_hebdo"] = f["contrat_hebdo_heures"] + f["contrat_hebdo_minutes"].fillna(0) / 60
    f["_exception"] = (f["apprenti_handicap"] | f["apprenti_sportif_haut_niveau"]
                       | f["apprenti_projet_creation"])
    years = (end - start).dt.days / 365.25
    f["_heures_min"] = np.ceil(THEORY_SHARE * HOURS_PER_YEAR * years)
    # pay: SMIC in force at contract start (Mayotte has its own), grid by year and age band
    mayotte = f["employeur_adresse_code_postal"].str.startswith("976").fillna(False).astype(bool)
    days = start.to_numpy().astype("datetime64[D]")
    smic = np.where(mayotte, ref.smic_on("mayotte", days), ref.smic_on("metropole", days))
    f["_smic"] = smic
    smc = f["contrat_smc"].to_numpy()
    first_bad = pd.Series(np.nan, index=f.index)
    worst_taux = pd.Series(np.nan, index=f.index)
    worst_min = pd.Series(np.nan, index=f.index)
    worst_age = pd.Series(np.nan, index=f.index)
    for n in range(1, 5):
        taux = f[f"remu{n}_taux"]
        y_start = f[f"remu{n}_date_debut"].fillna(_add_months(start, 12 * (n - 1)))
        age = _age(f["apprenti_date_naissance"], y_start)
        idx = age.fillna(0).clip(0, 150).astype("int64").to_numpy()
        pct = ref.pay_grid[n, idx]
        # from 21, the base is the agreement's minimum (SMC) when it is higher than the SMIC
        smc_factor = np.where((age.to_numpy() >= 21) & (smc > smic), smc / smic, 1.0)
        on_smc = (f[f"remu{n}_base"].str.upper() == "SMC").fillna(False).to_numpy()
        required = np.where(on_smc, pct, pct * smc_factor)
        bad = (taux.to_numpy() < required - 0.005) & age.notna().to_numpy()
        f[f"_r{n}_min"] = required
        f[f"_r{n}_bad"] = bad
        new = pd.Series(bad, index=f.index) & first_bad.isna()
        first_bad = first_bad.mask(new, n)
        worst_taux = worst_taux.mask(new, taux)
        worst_min = worst_min.mask(new, pd.Series(required, index=f.index))
        worst_age = worst_age.mask(new, age)
    f["_remu_bad_year"], f["_remu_bad_taux"] = first_bad, worst_taux
    f["_remu_bad_min"], f["_remu_bad_age"] = worst_min, worst_age
    base = np.where((f["remu1_base"].str.upper() == "SMC").fillna(False).to_numpy() & ~np.isnan(smc),
                    smc, smic)
    _prep_convention(f)
    f["_salaire_min"] = np.floor(f["remu1_taux"].to_numpy() / 100 * base * f["_hebdo"].to_numpy() / 35 * 100) / 100
    return f


# the convention de formation (POST /v1/conventions): its costs and the period it covers
CONVENTION_COSTS = {"convention_cout_pedagogique": "coût pédagogique",
                    **{f"convention_cout_annee{n}": f"montant de l'année {n}" for n in range(1, 5)},
                    "convention_frais_equipement": "frais de premier équipement",
                    "convention_frais_repas": "frais de restauration",
                    "convention_frais_hebergement": "frais d'hébergement"}
CONVENTION_YEARS = [f"convention_cout_annee{n}" for n in range(1, 5)]


def _convention_missing(f: pd.DataFrame) -> pd.Series:
    """'coût pédagogique manquant, date de fin manquante'... per row."""
    out = pd.Series("", index=f.index, dtype="object")
    for col, what in (("convention_cout_pedagogique", "coût pédagogique manquant"),
                      ("convention_date_debut", "date de début manquante"),
                      ("convention_date_fin", "date de fin manquante")):
        out = out + np.where(f[col].isna(), what + ", ", "")
    return out.str.removesuffix(", ")


def _prep_convention(f: pd.DataFrame) -> None:
    costs = f[list(CONVENTION_COSTS)]
    f["_cv"] = (costs.notna().any(axis=1) | f["convention_date_debut"].notna()
                | f["convention_date_fin"].notna()).astype(bool)
    neg_label = pd.Series(pd.NA, index=f.index, dtype="object")
    neg_value = pd.Series(np.nan, index=f.index)
    for col, label in reversed(CONVENTION_COSTS.items()):   # the first negative line is named
        bad = f[col] < 0
        neg_label, neg_value = neg_label.mask(bad, label), neg_value.mask(bad, f[col])
    f["_cv_neg_label"], f["_cv_neg"] = neg_label, neg_value
    f["_cv_annees"] = f[CONVENTION_YEARS].sum(axis=1, min_count=1)


PREPARE = {"entreprise": _prep_entreprise, "apprenant": _prep_apprenant, "session": _prep_session,
           "etablissement": _prep_etablissement, "contrat": _prep_contrat}


# -- the rules -----------------------------------------------------------------------------
def _missing_rule(col: str, domain: str, label: str) -> None:
    add_rule("CHAMP_OBLIGATOIRE", domain, col, [col], f"{label[0].upper()}{label[1:]} est renseigné(e)",
             lambda f, c=col: f[c].isna(),
             lambda f, label=label: (pd.Series("(vide)", index=f.index),
                                     pd.Series(f"Champ obligatoire manquant : {label}", index=f.index)))


for _col, (_dom, _label) in REQUIRED.items():
    _missing_rule(_col, _dom, _label)


def _length_rule(col: str, limit: int, label: str) -> None:
    domain, record = _length_domain(col)
    add_rule("CHAMP_LONGUEUR", domain, col, [col], f"{label} : {limit} caractères au plus",
             lambda f, c=col, n=limit: f[c].str.len() > n,
             lambda f, c=col, n=limit, lab=label: (
                 f[c].str.slice(0, 40) + f[c].str.len().gt(40).map({True: "…", False: ""}),
                 lab + " : " + f[c].str.len().astype("Int64").astype(str) + f" caractères, {n} au plus"),
             record=record)


for _col, (_limit, _label) in TEXT_LIMITS.items():
    _length_rule(_col, _limit, _label)

# entreprise ------------------------------------------------------------------------------
for _prefix, _dom, _col, _who in (("emp", "entreprise", "employeur_siret", "de l'employeur"),
                                   ("cfa", "etablissement", "cfa_siret", "du CFA")):
    _code = "EMPLOYEUR" if _prefix == "emp" else "CFA"
    add_rule(f"{_code}_SIRET_FORMAT", _dom, _col, [_col, f"_{_prefix}_siret_fmt"],
             f"Le SIRET {_who} compte 14 chiffres",
             lambda f, p=_prefix, c=_col: f[c].notna() & ~f[f"_{p}_siret_fmt"],
             lambda f, c=_col, w=_who: (f[c], "Le SIRET " + w + " « " + f[c] + " » doit compter 14 chiffres"))
    add_rule(f"{_code}_SIRET_CLE", _dom, _col, [f"_{_prefix}_siret", f"_{_prefix}_siret_fmt", f"_{_prefix}_siret_ok"],
             f"Le SIRET {_who} a une clé de contrôle valide (Luhn ; La Poste : somme des chiffres multiple de 5)",
             lambda f, p=_prefix: f[f"_{p}_siret_fmt"] & ~f[f"_{p}_siret_ok"],
             lambda f, p=_prefix, w=_who: (fmt_siret(f[f"_{p}_siret"]),
                                           "Le SIRET " + w + " " + fmt_siret(f[f"_{p}_siret"])
                                           + " a une clé de contrôle invalide"))

add_rule("EMPLOYEUR_IDCC_INCONNU", "entreprise", "employeur_idcc", ["_idcc", "_opco"],
         "Le code IDCC existe dans la table de référence (et détermine l'OPCO)",
         lambda f: f["_idcc"].notna() & ~f["_idcc"].isin(list(IDCC_NO_OPCO)) & f["_opco"].isna(),
         lambda f: (f["_idcc"], "Le code IDCC " + f["_idcc"] + " de l'employeur " + f.get("employeur_denomination", "")
                    .fillna("") + " est inconnu de la table IDCC → OPCO : l'OPCO ne peut pas être déterminé"))
add_rule("EMPLOYEUR_IDCC_SANS_OPCO", "entreprise", "employeur_idcc", ["_idcc"],
         "L'IDCC 9999 (sans convention) ou 9998 (en négociation) ne permet pas de déduire l'OPCO",
         lambda f: f["_idcc"].isin(list(IDCC_NO_OPCO)),
         lambda f: (f["_idcc"], "IDCC " + f["_idcc"].map(IDCC_NO_OPCO)
                    + " : l'OPCO de l'employeur ne peut pas être déduit, une décision du CFA est nécessaire"))
add_rule("EMPLOYEUR_NAF_FORMAT", "entreprise", "employeur_naf", ["employeur_naf", "_naf_ok"],
         "Le code NAF respecte le masque 00.00A",
         lambda f: f["employeur_naf"].notna() & ~f["_naf_ok"],
         lambda f: (f["employeur_naf"], "Le code NAF « " + f["employeur_naf"]
                    + " » de l'employeur ne respecte pas le format 00.00A (ex. 56.10A)"))
add_rule("EMPLOYEUR_TYPE_INVALIDE", "entreprise", "employeur_type", ["employeur_type"],
         "Le type d'employeur est un code de 11 à 16",
         lambda f: f["employeur_type"].notna() & ~f["employeur_type"].between(11, 16),
         lambda f: (fmt_num(f["employeur_type"]), "Le type d'employeur " + fmt_num(f["employeur_type"])
                    + " n'existe pas (codes 11 à 16)"))
add_rule("EMPLOYEUR_TYPE_INVALIDE", "entreprise", "employeur_specifique", ["employeur_specifique"],
         "Le code employeur spécifique est compris entre 0 et 4",
         lambda f: f["employeur_specifique"].notna() & ~f["employeur_specifique"].between(0, 4),
         lambda f: (fmt_num(f["employeur_specifique"]), "Le code employeur spécifique "
                    + fmt_num(f["employeur_specifique"]) + " n'existe pas (codes 0 à 4)"))

# établissement ---------------------------------------------------------------------------
add_rule("CFA_UAI_FORMAT", "etablissement", "cfa_uai", ["_uai", "_uai_fmt"],
         "L'UAI du CFA compte 7 chiffres et une lettre",
         lambda f: f["_uai"].notna() & ~f["_uai_fmt"],
         lambda f: (f["_uai"], "L'UAI du CFA « " + f["_uai"] + " » doit compter 7 chiffres suivis d'une lettre"))
add_rule("CFA_UAI_CLE", "etablissement", "cfa_uai", ["_uai", "_uai_fmt", "_uai_ok", "_uai_key"],
         "La lettre clé de l'UAI correspond aux 7 chiffres (modulo 23, alphabet sans I, O, Q)",
         lambda f: f["_uai_fmt"] & ~f["_uai_ok"],
         lambda f: (f["_uai"], "L'UAI du CFA " + f["_uai"] + " a une lettre clé invalide (attendu : "
                    + f["_uai"].str[:7] + f["_uai_key"].fillna("") + ")"))

# apprenant -------------------------------------------------------------------------------
add_rule("APPRENTI_NIR_MANQUANT", "apprenant", "apprenti_nir", ["apprenti_nir"],
         "Le NIR (numéro de sécurité sociale) de l'apprenti est renseigné",
         lambda f: f["apprenti_nir"].isna(),
         lambda f: (pd.Series("(vide)", index=f.index), "Le numéro de sécurité sociale (NIR) de l'apprenti "
                    + f["apprenti_prenom"].fillna("") + " " + f["apprenti_nom"].fillna("") + " n'est pas renseigné"))
add_rule("APPRENTI_NIR_FORMAT", "apprenant", "apprenti_nir", ["_nir", "_nir_fmt"],
         "Le NIR compte 15 caractères (13 + clé ; 2A/2B pour la Corse)",
         lambda f: f["_nir"].notna() & ~f["_nir_fmt"],
         lambda f: (mask_nir(f["_nir"]), "Le NIR de l'apprenti " + f["apprenti_prenom"].fillna("") + " "
                    + f["apprenti_nom"].fillna("") + " n'a pas le bon format (15 caractères attendus)"))
add_rule("APPRENTI_NIR_CLE", "apprenant", "apprenti_nir", ["_nir", "_nir_fmt", "_nir_ok"],
         "La clé du NIR vaut 97 − (numéro modulo 97)",
         lambda f: f["_nir_fmt"] & ~f["_nir_ok"],
         lambda f: (mask_nir(f["_nir"]), "Le NIR " + mask_nir(f["_nir"]) + " de l'apprenti "
                    + f["apprenti_prenom"].fillna("") + " " + f["apprenti_nom"].fillna("")
                    + " a une clé de contrôle invalide"))
add_rule("APPRENTI_NIR_SEXE", "apprenant", "apprenti_nir", ["_nir", "_nir_fmt", "apprenti_sexe"],
         "Le 1er chiffre du NIR (1 homme, 2 femme) correspond au sexe",
         lambda f: f["_nir_fmt"] & (~f["_nir"].str[0].isin(["1", "2"])
                                    | (f["apprenti_sexe"].isin(["M", "F"])
                                       & (f["_nir"].str[0] != f["apprenti_sexe"].map({"M": "1", "F": "2"})))),
         lambda f: (mask_nir(f["_nir"]), "Le NIR " + mask_nir(f["_nir"]) + " commence par "
                    + f["_nir"].str[0] + " alors que l'apprenti est de sexe " + f["apprenti_sexe"].fillna("?")
                    + " (1 = homme, 2 = femme)"))


def _nir_birth_fails(f):
    special = (f["_nir_mm"].between(20, 42) | (f["_nir_mm"] >= 50))
    return (f["_nir_fmt"] & f["_birth_yy"].notna()
            & ((f["_nir_yy"] != f["_birth_yy"]) | ((f["_nir_mm"] != f["_birth_mm"]) & ~special)))


add_rule("APPRENTI_NIR_NAISSANCE", "apprenant", "apprenti_nir",
         ["_nir", "_nir_fmt", "_nir_yy", "_nir_mm", "_birth_yy", "_birth_mm", "apprenti_date_naissance"],
         "Les chiffres 2-3 et 4-5 du NIR sont l'année et le mois de naissance",
         _nir_birth_fails,
         lambda f: (mask_nir(f["_nir"]), "Le NIR " + mask_nir(f["_nir"]) + " ne correspond pas à la date de "
                    "naissance " + mask_birth(f["apprenti_date_naissance"]) + " de l'apprenti "
                    + f["apprenti_prenom"].fillna("") + " " + f["apprenti_nom"].fillna("")
                    + " (année et mois de naissance)"))
add_rule("APPRENTI_NIR_DEPARTEMENT", "apprenant", "apprenti_nir",
         ["_nir", "_nir_fmt", "_nir_dep", "_dep2", "_birth_y", "apprenti_departement_naissance"],
         "Les chiffres 6-7 du NIR sont le département de naissance (2A/2B Corse, 99 étranger)",
         lambda f: (f["_nir_fmt"] & f["_dep2"].notna() & (f["_nir_dep"] != f["_dep2"])
                    & ~((f["_nir_dep"] == "20") & f["_dep2"].isin(["2A", "2B"]) & (f["_birth_y"] < 1976))),
         lambda f: (mask_nir(f["_nir"]), "Le NIR " + mask_nir(f["_nir"]) + " indique le département "
                    + f["_nir_dep"].fillna("") + " alors que l'apprenti est né(e) dans le département "
                    + f["apprenti_departement_naissance"].fillna("") + " (99 = né à l'étranger)"))
for _col, _allowed, _label in (("apprenti_sexe", ["M", "F"], "Le sexe de l'apprenti (M ou F)"),
                               ("apprenti_nationalite", [1, 2, 3], "La nationalité de l'apprenti (1, 2 ou 3)")):
    add_rule("APPRENTI_CODE_INVALIDE", "apprenant", _col, [_col], f"{_label} est un code connu",
             lambda f, c=_col, a=_allowed: f[c].notna() & ~f[c].isin(a),
             lambda f, c=_col, lab=_label: (f[c].astype("str"), lab + " : valeur « " + f[c].astype("str")
                                            + " » inconnue"))
add_rule("APPRENTI_CODE_INVALIDE", "apprenant", "apprenti_regime_social", ["apprenti_regime_social"],
         "Le régime social de l'apprenti (1 MSA, 2 URSSAF) est un code connu",
         lambda f: f["apprenti_regime_social"].notna() & ~f["apprenti_regime_social"].isin([1, 2]),
         lambda f: (fmt_num(f["apprenti_regime_social"]), "Le régime social de l'apprenti « "
                    + fmt_num(f["apprenti_regime_social"]) + " » est inconnu (1 MSA, 2 URSSAF)"))

# session ---------------------------------------------------------------------------------
add_rule("FORMATION_RNCP_FORMAT", "session", "formation_rncp", ["_rncp", "_rncp_fmt"],
         "Le code RNCP a la forme RNCP suivi de chiffres",
         lambda f: f["_rncp"].notna() & ~f["_rncp_fmt"],
         lambda f: (f["_rncp"], "Le code RNCP « " + f["_rncp"] + " » de la formation "
                    + f["formation_intitule"].fillna("") + " n'a pas le format RNCP + chiffres"))
add_rule("FORMATION_RNCP_INACTIF", "session", "formation_rncp", ["_rncp", "_rncp_fmt", "_rncp_cfd"],
         "Le code RNCP est actif (présent dans le catalogue formations.csv)",
         lambda f: f["_rncp_fmt"] & f["_rncp_cfd"].isna(),
         lambda f: (f["_rncp"], "La certification " + f["_rncp"] + " (" + f["formation_intitule"].fillna("")
                    + ") n'est pas active au répertoire national : vérifier le code RNCP de la session"))
add_rule("FORMATION_CFD_FORMAT", "session", "formation_cfd", ["_cfd", "_cfd_fmt"],
         "Le code diplôme (CFD) compte 8 caractères",
         lambda f: f["_cfd"].notna() & ~f["_cfd_fmt"],
         lambda f: (f["_cfd"], "Le code diplôme (CFD) « " + f["_cfd"] + " » doit compter 8 caractères"))
add_rule("FORMATION_RNCP_CFD", "session", "formation_cfd", ["_rncp_cfd", "_cfd", "_cfd_fmt", "_rncp"],
         "Le CFD correspond au RNCP dans le catalogue",
         lambda f: f["_rncp_cfd"].notna() & f["_cfd_fmt"] & (f["_cfd"] != f["_rncp_cfd"]),
         lambda f: (f["_cfd"], "Le code diplôme " + f["_cfd"] + " ne correspond pas à la certification "
                    + f["_rncp"] + " (CFD attendu : " + f["_rncp_cfd"].fillna("") + ")"))
add_rule("FORMATION_DATES_ORDRE", "session", "formation_date_fin",
         ["formation_date_debut", "formation_date_fin", "_f_ordre_ok"],
         "La formation finit après son début",
         lambda f: f["formation_date_debut"].notna() & f["formation_date_fin"].notna() & ~f["_f_ordre_ok"],
         lambda f: (fmt_date(f["formation_date_fin"]), "La session " + f["formation_intitule"].fillna("")
                    + " finit le " + fmt_date(f["formation_date_fin"]) + ", avant son début le "
                    + fmt_date(f["formation_date_debut"])))
add_rule("FORMATION_DUREE", "session", "formation_date_fin",
         ["formation_date_debut", "formation_date_fin", "_f_ordre_ok", "_f_min", "_f_max"],
         "La formation dure de 6 à 48 mois",
         lambda f: f["_f_ordre_ok"] & ((f["formation_date_fin"] < f["_f_min"]) | (f["formation_date_fin"] > f["_f_max"])),
         lambda f: (fmt_date(f["formation_date_debut"]) + " → " + fmt_date(f["formation_date_fin"]),
                    "La session " + f["formation_intitule"].fillna("") + " du " + fmt_date(f["formation_date_debut"])
                    + " au " + fmt_date(f["formation_date_fin"]) + " doit durer entre 6 et 48 mois"))
add_rule("FORMATION_HEURES_MAX", "session", "formation_duree_heures", ["formation_duree_heures"],
         "La formation dure au plus 9 999 heures",
         lambda f: f["formation_duree_heures"] > 9999,
         lambda f: (fmt_num(f["formation_duree_heures"]), "La session " + f["formation_intitule"].fillna("")
                    + " déclare " + fmt_num(f["formation_duree_heures"])
                    + " heures de formation : le maximum est de 9 999 heures"))

# contrat ---------------------------------------------------------------------------------
_who = lambda f: f["apprenti_prenom"].fillna("") + " " + f["apprenti_nom"].fillna("")  # noqa: E731

add_rule("CONTRAT_TYPE_INVALIDE", "contrat", "contrat_type", ["contrat_type", "nature"],
         "Le type de contrat est connu (11, 21-23, 31-38) et cohérent avec la nature (contrat/avenant)",
         lambda f: f["contrat_type"].notna() & (
             ~f["contrat_type"].isin(list(CONTRACT_TYPES))
             | ((f["nature"] == "AVENANT") & ~f["contrat_type"].isin(list(AVENANT_TYPES)))
             | ((f["nature"] == "CONTRAT") & f["contrat_type"].isin(list(AVENANT_TYPES)))),
         lambda f: (fmt_num(f["contrat_type"]), "Le type de contrat " + fmt_num(f["contrat_type"])
                    + " n'est pas valide pour un dossier de nature " + f["nature"].fillna("?").str.lower()
                    + " (11 initial, 21-23 successif, 31-38 avenant)"))
add_rule("CONTRAT_DATES_ORDRE", "contrat", "contrat_date_fin", ["contrat_date_debut", "contrat_date_fin", "_ordre_ok"],
         "Le contrat finit après son début",
         lambda f: f["contrat_date_debut"].notna() & f["contrat_date_fin"].notna() & ~f["_ordre_ok"],
         lambda f: (fmt_date(f["contrat_date_fin"]), "La date de fin du contrat (" + fmt_date(f["contrat_date_fin"])
                    + ") est antérieure ou égale à sa date de début (" + fmt_date(f["contrat_date_debut"]) + ")"))
add_rule("CONTRAT_DUREE_MIN", "contrat", "contrat_date_fin", ["contrat_date_fin", "_ordre_ok", "_min_fin"],
         "Le contrat dure au moins 6 mois",
         lambda f: f["_ordre_ok"] & (f["contrat_date_fin"] < f["_min_fin"]),
         lambda f: (fmt_date(f["contrat_date_debut"]) + " → " + fmt_date(f["contrat_date_fin"]),
                    "Le contrat du " + fmt_date(f["contrat_date_debut"]) + " au " + fmt_date(f["contrat_date_fin"])
                    + " dure moins de 6 mois (minimum légal)"))
add_rule("CONTRAT_DUREE_MAX", "contrat", "contrat_date_fin", ["contrat_date_fin", "_ordre_ok", "_max_fin"],
         "Le contrat dure au plus 54 mois",
         lambda f: f["_ordre_ok"] & (f["contrat_date_fin"] > f["_max_fin"]),
         lambda f: (fmt_date(f["contrat_date_debut"]) + " → " + fmt_date(f["contrat_date_fin"]),
                    "Le contrat du " + fmt_date(f["contrat_date_debut"]) + " au " + fmt_date(f["contrat_date_fin"])
                    + " dure plus de 54 mois (maximum légal)"))
add_rule("CONTRAT_FIN_APRES_FORMATION", "contrat", "contrat_date_fin", ["contrat_date_fin", "_ordre_ok", "_f_fin_3m"],
         "Le contrat finit au plus 3 mois après la formation",
         lambda f: f["_ordre_ok"] & (f["contrat_date_fin"] > f["_f_fin_3m"]),
         lambda f: (fmt_date(f["contrat_date_fin"]), "Le contrat finit le " + fmt_date(f["contrat_date_fin"])
                    + ", plus de 3 mois après la fin de la formation (" + fmt_date(f["formation_date_fin"]) + ")"))
add_rule("CONTRAT_SIGNATURE_APRES_DEBUT", "contrat", "contrat_date_conclusion",
         ["contrat_type", "contrat_date_conclusion", "contrat_date_debut"],
         "Un contrat initial est signé au plus tard le jour de son début",
         lambda f: (f["contrat_type"] == 11) & (f["contrat_date_conclusion"] > f["contrat_date_debut"]),
         lambda f: (fmt_date(f["contrat_date_conclusion"]), "Le contrat initial est signé le "
                    + fmt_date(f["contrat_date_conclusion"]) + ", après son début le " + fmt_date(f["contrat_date_debut"])))
add_rule("CONTRAT_FORMATION_DEBUT", "contrat", "formation_date_debut",
         ["formation_date_debut", "_debut_m3", "_debut_p3"],
         "La formation commence dans les 3 mois avant ou après le début du contrat",
         lambda f: (f["formation_date_debut"] < f["_debut_m3"]) | (f["formation_date_debut"] > f["_debut_p3"]),
         lambda f: (fmt_date(f["formation_date_debut"]), "La formation commence le " + fmt_date(f["formation_date_debut"])
                    + ", à plus de 3 mois du début du contrat (" + fmt_date(f["contrat_date_debut"]) + ")"))
add_rule("CONTRAT_THEORIE_MIN", "contrat", "formation_duree_heures",
         ["formation_duree_heures", "_ordre_ok", "_heures_min"],
         "La formation théorique représente au moins 25 % du temps de travail du contrat (base 1 607 h/an)",
         lambda f: f["_ordre_ok"] & (f["formation_duree_heures"] < f["_heures_min"]),
         lambda f: (fmt_num(f["formation_duree_heures"]), "La formation (" + fmt_num(f["formation_duree_heures"])
                    + " h) représente moins de 25 % du temps de travail du contrat : au moins "
                    + fmt_num(f["_heures_min"]) + " h attendues (base 1 607 h/an)"))
add_rule("CONTRAT_DUREE_HEBDO_MAX", "contrat", "contrat_hebdo_heures", ["_hebdo"],
         "La durée hebdomadaire de travail est d'au plus 40 heures",
         lambda f: f["_hebdo"] > 40,
         lambda f: (fmt_num(f["_hebdo"], 2), "La durée hebdomadaire de travail (" + fmt_num(f["_hebdo"], 2)
                    + " h) dépasse 40 heures"))
add_rule("APPRENTI_AGE_MIN", "contrat", "apprenti_date_naissance", ["_age", "contrat_derogation"],
         "L'apprenti a au moins 16 ans au début du contrat (15 ans avec la dérogation 11, jamais moins)",
         lambda f: (f["_age"] < 15) | ((f["_age"] < 16) & (f["contrat_derogation"] != 11)),
         lambda f: (mask_birth(f["apprenti_date_naissance"]), "L'apprenti " + _who(f) + " (né(e) en "
                    + mask_birth(f["apprenti_date_naissance"]) + ") a " + fmt_num(f["_age"])
                    + " ans au début du contrat : 16 ans minimum (15 ans après la 3e avec la dérogation 11)"),
         record="apprenant")
add_rule("APPRENTI_AGE_MAX", "contrat", "apprenti_date_naissance", ["_age", "_exception"],
         "L'apprenti a au plus 29 ans au début du contrat, sauf RQTH, sportif de haut niveau ou projet de création",
         lambda f: (f["_age"] >= 30) & ~f["_exception"],
         lambda f: (mask_birth(f["apprenti_date_naissance"]), "L'apprenti " + _who(f) + " (né(e) en "
                    + mask_birth(f["apprenti_date_naissance"]) + ") a " + fmt_num(f["_age"])
                    + " ans au début du contrat : au-delà de 29 ans, il faut une RQTH, le statut de sportif "
                    "de haut niveau ou un projet de création d'entreprise"),
         record="apprenant")
add_rule("APPRENTI_DEROGATION", "contrat", "contrat_derogation", ["_age", "contrat_derogation"],
         "La dérogation 11 est réservée aux moins de 16 ans, la 12 aux 29 ans et plus",
         lambda f: ((f["contrat_derogation"] == 11) & (f["_age"] >= 16)) | ((f["contrat_derogation"] == 12) & (f["_age"] < 29)),
         lambda f: (fmt_num(f["contrat_derogation"]), "La dérogation " + fmt_num(f["contrat_derogation"])
                    + " ne s'applique pas à un apprenti de " + fmt_num(f["_age"])
                    + " ans (11 : moins de 16 ans ; 12 : 29 ans et plus)"))
add_rule("APPRENTI_REPRESENTANT_LEGAL", "contrat", "representant_nom", ["_age", "representant_nom"],
         "Un apprenti mineur au début du contrat a un représentant légal",
         lambda f: (f["_age"] < 18) & f["representant_nom"].isna(),
         lambda f: (pd.Series("(vide)", index=f.index), "L'apprenti " + _who(f) + " est mineur(e) au début du "
                    "contrat (" + fmt_num(f["_age"]) + " ans) : le représentant légal doit être renseigné"),
         record="apprenant")
for _n in (1, 2):
    add_rule("MAITRE_AGE_MIN", "contrat", f"maitre{_n}_date_naissance", [f"_m{_n}_age"],
             f"Le maître d'apprentissage {_n} a au moins 18 ans au début du contrat",
             lambda f, n=_n: f[f"_m{n}_age"] < 18,
             lambda f, n=_n: (mask_birth(f[f"maitre{n}_date_naissance"]), "Le maître d'apprentissage "
                              + f[f"maitre{n}_prenom"].fillna("") + " " + f[f"maitre{n}_nom"].fillna("")
                              + " a " + fmt_num(f[f"_m{n}_age"]) + " ans au début du contrat : 18 ans minimum"),
             record=f"maitre{_n}")
add_rule("CONTRAT_REMUNERATION_MIN", "contrat", "remu1_taux",
         ["_r1_bad", "_r2_bad", "_r3_bad", "_r4_bad", "_remu_bad_year", "_remu_bad_taux", "_remu_bad_min"],
         "Le taux de rémunération de chaque année atteint le minimum légal (année du contrat, tranche d'âge, SMIC/SMC)",
         lambda f: f["_r1_bad"] | f["_r2_bad"] | f["_r3_bad"] | f["_r4_bad"],
         lambda f: (fmt_num(f["_remu_bad_taux"], 1) + " %",
                    "Année " + fmt_num(f["_remu_bad_year"]) + " du contrat : rémunération de "
                    + fmt_num(f["_remu_bad_taux"], 1) + " % du SMIC pour un apprenti de "
                    + fmt_num(f["_remu_bad_age"]) + " ans, inférieure au minimum légal de "
                    + fmt_num(f["_remu_bad_min"], 1) + " %"))
add_rule("CONTRAT_SALAIRE_EMBAUCHE", "contrat", "contrat_salaire_embauche",
         ["contrat_salaire_embauche", "_salaire_min", "_r1_bad"],
         "Le salaire à l'embauche atteint le taux de 1re année × SMIC en vigueur au début × durée hebdo / 35",
         lambda f: ~f["_r1_bad"] & (f["contrat_salaire_embauche"] < f["_salaire_min"] - 0.01),
         lambda f: (fmt_num(f["contrat_salaire_embauche"], 2) + " €",
                    "Le salaire à l'embauche (" + fmt_num(f["contrat_salaire_embauche"], 2)
                    + " €) est inférieur au taux de 1re année appliqué au SMIC en vigueur au début du contrat ("
                    + fmt_num(f["_salaire_min"], 2) + " € minimum)"))
add_rule("AVENANT_CONTRAT_PRECEDENT", "contrat", "contrat_numero_precedent",
         ["contrat_type", "contrat_numero_precedent", "base_numero_interne"],
         "Un avenant de type 31 à 37 référence le contrat qu'il modifie",
         lambda f: (f["contrat_type"].isin(AVENANT_NEEDS_PREVIOUS) & f["contrat_numero_precedent"].isna()
                    & f["base_numero_interne"].isna()),
         lambda f: (pd.Series("(vide)", index=f.index), "L'avenant (type " + fmt_num(f["contrat_type"])
                    + ") ne référence pas le contrat qu'il modifie : numéro du contrat précédent manquant"))
add_rule("AVENANT_DATE_EFFET", "contrat", "contrat_date_effet_avenant",
         ["contrat_type", "contrat_date_effet_avenant", "contrat_date_debut", "contrat_date_fin", "_ordre_ok"],
         "Un avenant a une date d'effet (types 31-37), comprise entre le début et la fin du contrat",
         lambda f: (f["contrat_type"].isin(AVENANT_NEEDS_PREVIOUS) & f["contrat_date_effet_avenant"].isna()) | (
             f["contrat_type"].isin(list(AVENANT_TYPES)) & f["_ordre_ok"]
             & ((f["contrat_date_effet_avenant"] < f["contrat_date_debut"])
                | (f["contrat_date_effet_avenant"] > f["contrat_date_fin"]))),
         lambda f: (fmt_date(f["contrat_date_effet_avenant"]), pd.Series(np.where(
             f["contrat_date_effet_avenant"].isna(), "La date d'effet de l'avenant n'est pas renseignée",
             "La date d'effet de l'avenant (" + fmt_date(f["contrat_date_effet_avenant"])
             + ") n'est pas comprise entre le début (" + fmt_date(f["contrat_date_debut"]) + ") et la fin ("
             + fmt_date(f["contrat_date_fin"]) + ") du contrat"), index=f.index)))
add_rule("CONTRAT_RUPTURE_DATE", "contrat", "date_rupture", ["date_rupture", "contrat_date_debut", "contrat_date_fin", "_ordre_ok"],
         "Une date de rupture est comprise entre le début et la fin du contrat",
         lambda f: f["_ordre_ok"] & ((f["date_rupture"] < f["contrat_date_debut"]) | (f["date_rupture"] > f["contrat_date_fin"])),
         lambda f: (fmt_date(f["date_rupture"]), "La date de rupture (" + fmt_date(f["date_rupture"])
                    + ") est hors de la période du contrat (" + fmt_date(f["contrat_date_debut"]) + " → "
                    + fmt_date(f["contrat_date_fin"]) + ")"))

# -- the convention de formation (reported; the dossier still leaves, the convention waits) ---
add_rule("CONVENTION_COUT_NEGATIF", "contrat", "convention_cout_pedagogique", ["_cv", "_cv_neg", "_cv_neg_label"],
         "Les coûts de la convention de formation sont positifs ou nuls",
         lambda f: f["_cv"] & f["_cv_neg"].notna(),
         lambda f: (fmt_num(f["_cv_neg"], 2), "La convention de formation porte un montant négatif ("
                    + f["_cv_neg_label"].astype("str") + " : " + fmt_num(f["_cv_neg"], 2)
                    + " €) : un coût est positif ou nul ; la convention n'est pas transmise tant qu'il n'est "
                    "pas corrigé dans l'ERP"))
add_rule("CONVENTION_INCOMPLETE", "contrat", "convention_cout_pedagogique",
         ["_cv", "convention_cout_pedagogique", "convention_date_debut", "convention_date_fin"],
         "Une convention de formation a son coût pédagogique et ses dates",
         lambda f: f["_cv"] & (f["convention_cout_pedagogique"].isna() | f["convention_date_debut"].isna()
                               | f["convention_date_fin"].isna()),
         lambda f: (pd.Series("(vide)", index=f.index), "La convention de formation est incomplète ("
                    + _convention_missing(f)
                    + ") : la compléter dans l'ERP pour qu'elle soit transmise"))
add_rule("CONVENTION_COUTS_INCOHERENTS", "contrat", "convention_cout_pedagogique",
         ["_cv", "_cv_neg", "_cv_annees", "convention_cout_pedagogique"],
         "Le coût pédagogique de la convention est la somme de ses montants annuels",
         lambda f: f["_cv"] & f["_cv_neg"].isna() & f["convention_cout_pedagogique"].notna()
         & f["_cv_annees"].notna() & ((f["_cv_annees"] - f["convention_cout_pedagogique"]).abs() > 1),
         lambda f: (fmt_num(f["convention_cout_pedagogique"], 2),
                    "Le coût pédagogique de la convention (" + fmt_num(f["convention_cout_pedagogique"], 2)
                    + " €) ne correspond pas à la somme de ses montants annuels (" + fmt_num(f["_cv_annees"], 2)
                    + " €) : corriger l'un ou l'autre dans l'ERP"))
add_rule("CONVENTION_DATES_HORS_CONTRAT", "contrat", "convention_date_fin",
         ["_cv", "_ordre_ok", "convention_date_debut", "convention_date_fin", "contrat_date_debut", "contrat_date_fin"],
         "La convention de formation couvre une période comprise dans celle du contrat",
         lambda f: f["_cv"] & f["_ordre_ok"] & f["convention_date_debut"].notna() & f["convention_date_fin"].notna()
         & ((f["convention_date_debut"] < f["contrat_date_debut"]) | (f["convention_date_fin"] > f["contrat_date_fin"])
            | (f["convention_date_fin"] <= f["convention_date_debut"])),
         lambda f: (fmt_date(f["convention_date_fin"]),
                    "La convention de formation couvre du " + fmt_date(f["convention_date_debut"]) + " au "
                    + fmt_date(f["convention_date_fin"]) + ", hors de la période du contrat ("
                    + fmt_date(f["contrat_date_debut"]) + " → " + fmt_date(f["contrat_date_fin"])
                    + ") : corriger ses dates dans l'ERP"))

RULES_BY_ID = {r.id: r for r in RULES}
assert len(RULES_BY_ID) == len(RULES), "duplicate rule id"
# rules of other record kinds checked by their own suite (the invoices: cfa_opco.quality.invoices)
EXTRA_RULES: dict[str, Rule] = {}


def rule_by_id(rule_id: str) -> Rule:
    return RULES_BY_ID.get(rule_id) or EXTRA_RULES[rule_id]
RULES_BY_DOMAIN = {d: [r for r in RULES if r.domain == d] for d in DOMAINS}
# codes found outside the rule engine: values extraction could not read (extraction_issue)
EXTRACTION_CODE = "EXTRACTION_VALEUR_ILLISIBLE"
RULE_CODES = tuple(dict.fromkeys([r.code for r in RULES] + [EXTRACTION_CODE]))


# -- severities ----------------------------------------------------------------------------
def severities(overrides: dict | None = None) -> dict[str, str]:
    """Severity of every rule code: the YAML catalogue's, overridden by ``overrides``
    ({code: "error" | "warning" | "off"}), e.g. read from an Airflow Variable."""
    cat = catalogue()
    codes = RULE_CODES + tuple(dict.fromkeys(r.code for r in EXTRA_RULES.values()))
    out = {code: str(cat.get(code, {}).get("severity", "error")).lower() for code in codes}
    for code, sev in (overrides or {}).items():
        sev = str(sev).lower()
        if code not in out:
            raise ValueError(f"unknown quality rule code in severity overrides: {code}")
        if sev not in ("error", "warning", "off"):
            raise ValueError(f"severity of {code} must be error, warning or off, not {sev!r}")
        out[code] = sev
    return out


def active_rules(sev: dict[str, str]) -> list[Rule]:
    return [r for r in RULES if sev.get(r.code, "error") != "off"]


# -- evaluation ----------------------------------------------------------------------------
@dataclass
class Batch:
    """A normalized batch split into prepared domain frames."""
    dossiers: pd.DataFrame
    frames: dict[str, pd.DataFrame]


def prepare_batch(df: pd.DataFrame, ref: Reference | None = None) -> Batch:
    ref = ref or reference()
    norm = normalize(df)
    frames = {d: prepare(d, f, ref) for d, f in split_domains(norm).items()}
    return Batch(norm, frames)


def failing_positions(batch: Batch, rules: list[Rule]) -> dict[str, np.ndarray]:
    """The plain-pandas evaluation: rule id -> positions (in its domain frame) of failures."""
    out = {}
    for r in rules:
        mask = r.fails(batch.frames[r.domain])
        out[r.id] = np.flatnonzero(mask.fillna(False).to_numpy(dtype=bool))
    return out


ANOMALY_COLUMNS = ["source_id", "numero_interne", "site_code", "rule_code", "severity", "domain", "field",
                   "valeur", "message", "record_type", "record_ref", "record_label"]


def _record_label(record: str, f: pd.DataFrame) -> pd.Series:
    if record == "entreprise":
        return f["employeur_denomination"].fillna("") + " (SIRET " + fmt_siret(f.get("_emp_siret", f["employeur_siret"])) + ")"
    if record == "apprenant":
        return f["apprenti_prenom"].fillna("") + " " + f["apprenti_nom"].fillna("")
    if record == "session":
        return f["formation_intitule"].fillna("") + " (du " + fmt_date(f["formation_date_debut"]) + ")"
    if record == "etablissement":
        return f["cfa_denomination"].fillna("")
    if record in ("maitre1", "maitre2"):
        return f[f"{record}_prenom"].fillna("") + " " + f[f"{record}_nom"].fillna("")
    return "Dossier " + f["numero_interne"].fillna("")


def _masked_text(s: pd.Series) -> np.ndarray:
    """An anomaly's value or message as every report, export and alert shows it: a NIR or an
    IBAN typed in any text field (an address complement, a name) masked, here, once."""
    return s.fillna("").astype(str).map(mask_text).to_numpy()


def build_anomalies(batch: Batch, failing: dict[str, np.ndarray], sev: dict[str, str]) -> pd.DataFrame:
    """Failures -> one row per (dossier, anomaly), reference-record anomalies mapped back to
    every dossier that uses the record."""
    parts = []
    dossier_cols = ["source_id", "numero_interne", "site_code"]
    for rid, pos in failing.items():
        if len(pos) == 0:
            continue
        r = RULES_BY_ID[rid]
        frame = batch.frames[r.domain]
        sub = frame.iloc[pos]
        value, message = r.describe(sub)
        rec = pd.DataFrame({
            "rule_code": r.code, "severity": sev.get(r.code, "error"), "domain": r.domain, "field": r.field,
            "valeur": _masked_text(_s(value)), "message": _masked_text(_s(message)),
            "record_type": r.record, "record_label": _record_label(r.record, sub).to_numpy()})
        if r.domain == "contrat":
            ref_col = RECORD_REFS[r.record]
            rec["record_ref"] = sub[ref_col].fillna(sub["numero_interne"]).to_numpy()
            for c in dossier_cols:
                rec[c] = sub[c].to_numpy()
            parts.append(rec)
        else:
            key = DOMAIN_KEYS[r.domain]
            rec["source_id"] = sub["source_id"].to_numpy()
            rec["record_ref"] = sub[key].to_numpy()
            parts.append(rec.assign(_key=rec["record_ref"], _domain=r.domain))
    if not parts:
        return pd.DataFrame(columns=ANOMALY_COLUMNS)
    contract_parts = [p for p in parts if "_key" not in p.columns]
    ref_parts = [p for p in parts if "_key" in p.columns]
    out = list(contract_parts)
    if ref_parts:
        refs = pd.concat(ref_parts, ignore_index=True)
        d = batch.dossiers
        for domain, grp in refs.groupby("_domain", sort=False):
            key = DOMAIN_KEYS[domain]
            link = pd.DataFrame({"source_id": d["source_id"],
                                 "_key": d[key].fillna("dossier:" + d["numero_interne"].fillna("")),
                                 "numero_interne": d["numero_interne"], "site_code": d["site_code"]})
            out.append(grp.drop(columns=["_domain"]).merge(link, on=["source_id", "_key"]).drop(columns=["_key"]))
    res = pd.concat(out, ignore_index=True)[ANOMALY_COLUMNS]
    return res.sort_values(["source_id", "numero_interne", "rule_code", "field"], kind="stable").reset_index(drop=True)


def evaluate(df: pd.DataFrame, severity_overrides: dict | None = None) -> pd.DataFrame:
    """Plain-pandas evaluation of every rule on a batch; returns the anomalies (one row
    per dossier and anomaly, ANOMALY_COLUMNS)."""
    sev = severities(severity_overrides)
    batch = prepare_batch(df)
    return build_anomalies(batch, failing_positions(batch, active_rules(sev)), sev)

"""Intake validation of the payloads (what an OPCO's intake checks, not the whole rulebook).

Each check appends ``{"code", "champ", "message"}`` to the error list; ``champ`` is the
dotted path of the faulty field (list items as ``remunerationsAnnuelles.0.taux``)."""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Callable


RE_NAF = re.compile(r"^\d{2}\.\d{2}[A-Z]$")
RE_IDCC = re.compile(r"^\d{4}$")
RE_RNCP = re.compile(r"^RNCP\d{4,6}$")
RE_CFD = re.compile(r"^[0-9A-Z]{8}$")
RE_UAI = re.compile(r"^\d{7}[A-Z]$")
RE_NIR = re.compile(r"^[12]\d{4}(\d{2}|2A|2B)\d{8}$")
RE_DECA = re.compile(r"^[0-9A-Z]{15}$")
RE_CP = re.compile(r"^\d{5}$")
RE_MAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
RE_PHONE = re.compile(r"^\+?[0-9 .\-]{6,20}$")
RE_NI = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")

CONTRACT_TYPES = frozenset([11, 21, 22, 23] + list(range(31, 39)))
MAX_DEPTH = 20


class Errors(list):
    def add(self, code: str, champ: str | None, message: str) -> None:
        self.append({"code": code, "champ": champ, "message": message})


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        total += _LUHN_DOUBLE[d] if i & 1 else d
    return total % 10 == 0


def valid_siret(value: str) -> bool:
    """14 digits, Luhn key (SIREN and SIRET); La Poste (SIREN 356000000): digit sum of the
    SIRET divisible by 5. Same answers as stdnum.fr.siret (cross-checked in the tests)."""
    if not isinstance(value, str) or len(value) != 14 or not value.isascii() or not value.isdigit():
        return False
    if value.startswith("356000000"):
        return sum(ord(c) - 48 for c in value) % 5 == 0
    return _luhn_ok(value[:9]) and _luhn_ok(value)


def canonical_text(body) -> bytes | None:
    """UTF-8 of the canonical JSON (sorted keys), or None when the payload holds text
    that is not valid Unicode (lone surrogates)."""
    try:
        return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return None


def _check_sanity(body, e: "Errors", facts: dict) -> bool:
    canon = canonical_text(body)
    if canon is None:
        sanity(body, e)
        if not e:
            e.add("ENCODAGE", None, "texte UTF-8 invalide")
        return False
    facts["_canon"] = canon
    return True


def sanity(value: Any, errors: Errors, path: str = "", depth: int = 0) -> None:
    """Reject what would break storage or echo: lone surrogates, NaN/inf, absurd nesting."""
    if depth > MAX_DEPTH:
        errors.add("PROFONDEUR", path or None, "structure trop profonde")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            errors.add("ENCODAGE", path or None, "texte UTF-8 invalide")
    elif isinstance(value, float):
        if not math.isfinite(value):
            errors.add("NOMBRE", path or None, "nombre non fini")
    elif isinstance(value, dict):
        for k, v in value.items():
            sanity(k, errors, path, depth + 1)
            sanity(v, errors, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            sanity(v, errors, f"{path}.{i}" if path else str(i), depth + 1)


def parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


class V:
    """Field accessors bound to an error list."""

    def __init__(self, errors: Errors):
        self.e = errors

    def obj(self, parent: dict, name: str, path: str, required: bool = True) -> dict | None:
        v = parent.get(name) if isinstance(parent, dict) else None
        p = f"{path}.{name}" if path else name
        if v is None:
            if required:
                self.e.add("OBLIGATOIRE", p, f"{p} est obligatoire")
            return None
        if not isinstance(v, dict):
            self.e.add("TYPE", p, f"{p} doit être un objet")
            return None
        return v

    def _get(self, parent, name, path, required):
        p = f"{path}.{name}" if path else name
        v = parent.get(name) if isinstance(parent, dict) else None
        if v is None and required:
            self.e.add("OBLIGATOIRE", p, f"{p} est obligatoire")
        return p, v

    def string(self, parent, name, path, required=True, regex=None, maxlen=255,
               fmt_msg=None, check: Callable[[str], bool] | None = None) -> str | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        if not isinstance(v, str):
            self.e.add("TYPE", p, f"{p} doit être une chaîne")
            return None
        if required and not v.strip():
            self.e.add("OBLIGATOIRE", p, f"{p} est vide")
            return None
        if len(v) > maxlen:
            self.e.add("LONGUEUR", p, f"{p} dépasse {maxlen} caractères")
            return None
        if (regex is not None and not regex.match(v)) or (check is not None and not check(v)):
            self.e.add("FORMAT", p, fmt_msg or f"{p} a un format invalide")
            return None
        return v

    def integer(self, parent, name, path, required=True, lo=None, hi=None, allowed=None) -> int | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.e.add("TYPE", p, f"{p} doit être un entier")
            return None
        if (allowed is not None and v not in allowed) or (lo is not None and v < lo) or \
                (hi is not None and v > hi):
            rng = f"{sorted(allowed)}" if allowed is not None else f"[{lo}, {hi}]"
            self.e.add("VALEUR", p, f"{p} hors des valeurs admises {rng}")
            return None
        return v

    def number(self, parent, name, path, required=True, lo=None, hi=None) -> float | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                (isinstance(v, float) and not math.isfinite(v)):
            self.e.add("TYPE", p, f"{p} doit être un nombre")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.e.add("VALEUR", p, f"{p} hors de l'intervalle [{lo}, {hi}]")
            return None
        return float(v)

    def boolean(self, parent, name, path, required=False) -> bool | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        if not isinstance(v, bool):
            self.e.add("TYPE", p, f"{p} doit être un booléen")
            return None
        return v

    def date(self, parent, name, path, required=True) -> dt.date | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        d = parse_date(v)
        if d is None:
            self.e.add("FORMAT", p, f"{p} doit être une date AAAA-MM-JJ valide")
        return d

    def enum(self, parent, name, path, values, required=True) -> str | None:
        p, v = self._get(parent, name, path, required)
        if v is None:
            return None
        if not isinstance(v, str) or v not in values:
            self.e.add("VALEUR", p, f"{p} doit valoir l'une de {sorted(values)}")
            return None
        return v


def _adresse(v: V, parent: dict, path: str, required: bool = True) -> None:
    a = v.obj(parent, "adresse", path, required)
    if a is None:
        return
    p = f"{path}.adresse"
    v.string(a, "numero", p, required=False, maxlen=20)
    v.string(a, "voie", p, maxlen=200)
    v.string(a, "complement", p, required=False, maxlen=200)
    v.string(a, "codePostal", p, regex=RE_CP, fmt_msg=f"{p}.codePostal doit comporter 5 chiffres")
    v.string(a, "commune", p, maxlen=100)


def _personne(v: V, obj: dict, path: str) -> None:
    v.string(obj, "nom", path, maxlen=100)
    v.string(obj, "prenom", path, maxlen=100)


def _begin(body: Any) -> tuple["Errors", dict, "V | None"]:
    """The common start of every body's validation: a JSON object within sane bounds
    (no validator when it is not: the errors say why)."""
    e = Errors()
    facts: dict = {}
    if not isinstance(body, dict):
        e.add("TYPE", None, "le corps doit être un objet JSON")
        return e, facts, None
    if not _check_sanity(body, e, facts):
        return e, facts, None
    return e, facts, V(e)


def validate_dossier(body: Any) -> tuple[Errors, dict]:
    """Returns (errors, facts) — facts holds the parsed values the engine needs."""
    e, facts, v = _begin(body)
    if v is None:
        return e, facts
    facts["numeroInterne"] = v.string(body, "numeroInterne", "", regex=RE_NI, maxlen=64,
                                      fmt_msg="numeroInterne: 1 à 64 caractères imprimables")
    emp = v.obj(body, "employeur", "")
    if emp is not None:
        p = "employeur"
        facts["employeur_siret"] = v.string(emp, "siret", p, check=valid_siret, maxlen=14,
                                            fmt_msg="employeur.siret: 14 chiffres et clé de contrôle (Luhn) valide")
        v.string(emp, "denomination", p, maxlen=200)
        _adresse(v, emp, p)
        v.integer(emp, "typeEmployeur", p, lo=11, hi=16)
        v.integer(emp, "employeurSpecifique", p, required=False, lo=0, hi=4)
        v.string(emp, "naf", p, regex=RE_NAF, fmt_msg="employeur.naf doit suivre le masque 00.00A")
        v.integer(emp, "nombreDeSalaries", p, lo=0, hi=10_000_000)
        facts["codeIdcc"] = v.string(emp, "codeIdcc", p, regex=RE_IDCC,
                                     fmt_msg="employeur.codeIdcc doit comporter 4 chiffres")
        v.string(emp, "libelleIdcc", p, required=False, maxlen=300)
        v.boolean(emp, "employeurPublic", p)
        v.string(emp, "telephone", p, required=False, regex=RE_PHONE, maxlen=20)
        v.string(emp, "courriel", p, required=False, regex=RE_MAIL, maxlen=200)
    app = v.obj(body, "apprenti", "")
    if app is not None:
        p = "apprenti"
        _personne(v, app, p)
        v.string(app, "nomUsage", p, required=False, maxlen=100)
        v.enum(app, "sexe", p, {"M", "F"})
        facts["dateNaissance"] = v.date(app, "dateNaissance", p)
        v.string(app, "communeNaissance", p, required=False, maxlen=100)
        v.string(app, "departementNaissance", p, required=False,
                 regex=re.compile(r"^(\d{2,3}|2A|2B|99)$"))
        v.string(app, "nir", p, required=False, regex=RE_NIR, maxlen=15,
                 fmt_msg="apprenti.nir: 15 caractères (13 chiffres, 2A/2B admis, + clé)")
        v.integer(app, "nationalite", p, lo=1, hi=3)
        v.integer(app, "regimeSocial", p, lo=1, hi=2)
        _adresse(v, app, p)
        v.string(app, "telephone", p, required=False, regex=RE_PHONE, maxlen=20)
        v.string(app, "courriel", p, required=False, regex=RE_MAIL, maxlen=200)
        for flag in ("handicap", "sportifDeHautNiveau", "projetCreationEntreprise"):
            facts[flag] = bool(v.boolean(app, flag, p))
        v.integer(app, "situationAvantContrat", p, required=False, lo=1, hi=99)
        v.integer(app, "dernierDiplome", p, required=False, lo=0, hi=99)
        rl = v.obj(app, "representantLegal", p, required=False)
        if rl is not None:
            _personne(v, rl, p + ".representantLegal")
            _adresse(v, rl, p + ".representantLegal", required=False)
    for mname, req in (("maitre1", True), ("maitre2", False)):
        m = v.obj(body, mname, "", required=req)
        if m is not None:
            _personne(v, m, mname)
            v.date(m, "dateNaissance", mname)
            v.string(m, "emploiOccupe", mname, required=False, maxlen=200)
            v.string(m, "diplome", mname, required=False, maxlen=200)
    c = v.obj(body, "contrat", "")
    if c is not None:
        p = "contrat"
        t = facts["typeContratApp"] = v.integer(c, "typeContratApp", p, allowed=CONTRACT_TYPES)
        v.integer(c, "typeDerogation", p, required=False, lo=0, hi=99)
        is_av = t is not None and 31 <= t <= 38
        facts["numeroContratPrecedent"] = v.string(
            c, "numeroContratPrecedent", p, required=is_av, regex=RE_DECA, maxlen=15,
            fmt_msg="contrat.numeroContratPrecedent: numéro DECA de 15 caractères")
        v.date(c, "dateConclusion", p)
        deb = facts["dateDebutContrat"] = v.date(c, "dateDebutContrat", p)
        fin = facts["dateFinContrat"] = v.date(c, "dateFinContrat", p)
        if deb and fin and fin <= deb:
            e.add("DATES", "contrat.dateFinContrat", "contrat.dateFinContrat doit suivre dateDebutContrat")
            facts["dateFinContrat"] = None
        v.date(c, "dateEffetAvenant", p, required=t is not None and 31 <= t <= 37)
        v.integer(c, "dureeTravailHebdoHeures", p, lo=0, hi=40)
        v.integer(c, "dureeTravailHebdoMinutes", p, required=False, lo=0, hi=59)
        v.number(c, "salaireEmbauche", p, lo=0, hi=1_000_000)
        rem = c.get("remunerationsAnnuelles")
        if rem is not None:
            if not isinstance(rem, list) or len(rem) > 20:
                e.add("TYPE", "contrat.remunerationsAnnuelles", "liste d'au plus 20 périodes attendue")
            else:
                for i, r in enumerate(rem):
                    rp = f"contrat.remunerationsAnnuelles.{i}"
                    if not isinstance(r, dict):
                        e.add("TYPE", rp, f"{rp} doit être un objet")
                        continue
                    v.integer(r, "annee", rp, lo=1, hi=5)
                    v.date(r, "dateDebut", rp)
                    v.date(r, "dateFin", rp)
                    v.number(r, "taux", rp, lo=0, hi=200)
                    v.enum(r, "typeSalaire", rp, {"SMIC", "SMC"})
        v.number(c, "smc", p, required=False, lo=0, hi=1_000_000)
        v.string(c, "caisseRetraiteSupplementaire", p, required=False, maxlen=200)
    f = v.obj(body, "formation", "")
    if f is not None:
        p = "formation"
        facts["rncp"] = v.string(f, "rncp", p, regex=RE_RNCP, fmt_msg="formation.rncp: RNCP + 4 à 6 chiffres")
        v.string(f, "codeDiplome", p, regex=RE_CFD, fmt_msg="formation.codeDiplome: 8 caractères")
        v.string(f, "intituleQualification", p, maxlen=300)
        fd = v.date(f, "dateDebutFormation", p)
        ff = v.date(f, "dateFinFormation", p)
        if fd and ff and ff <= fd:
            e.add("DATES", "formation.dateFinFormation", "formation.dateFinFormation doit suivre dateDebutFormation")
        v.integer(f, "dureeFormation", p, lo=1, hi=9999)
    o = v.obj(body, "organismeFormation", "")
    if o is not None:
        p = "organismeFormation"
        facts["of_siret"] = v.string(o, "siret", p, check=valid_siret, maxlen=14,
                                     fmt_msg="organismeFormation.siret: 14 chiffres et clé de contrôle (Luhn) valide")
        v.string(o, "uaiCfa", p, regex=RE_UAI, fmt_msg="organismeFormation.uaiCfa: 7 chiffres + 1 lettre")
        v.string(o, "denomination", p, maxlen=200)
        _adresse(v, o, p)
        ef = o.get("etablissementFormation")
        if ef is not None and not isinstance(ef, dict):
            e.add("TYPE", "organismeFormation.etablissementFormation", "objet ou null attendu")
        elif isinstance(ef, dict):
            v.string(ef, "siret", p + ".etablissementFormation", required=False, check=valid_siret, maxlen=14)
    return e, facts


def validate_convention(body: Any) -> tuple[Errors, dict]:
    e, facts, v = _begin(body)
    if v is None:
        return e, facts
    facts["numeroInterneDossier"] = v.string(body, "numeroInterneDossier", "", regex=RE_NI, maxlen=64)
    emp = v.obj(body, "employeur", "")
    if emp is not None:
        facts["siret"] = v.string(emp, "siret", "employeur", check=valid_siret, maxlen=14,
                                  fmt_msg="employeur.siret: 14 chiffres et clé de contrôle valide")
    d1 = v.date(body, "dateDebut", "")
    d2 = v.date(body, "dateFin", "")
    if d1 and d2 and d2 <= d1:
        e.add("DATES", "dateFin", "dateFin doit suivre dateDebut")
    v.integer(body, "dureeFormation", "", lo=1, hi=9999)
    v.string(body, "rncp", "", regex=RE_RNCP)
    couts = v.obj(body, "couts", "")
    if couts is not None:
        v.number(couts, "coutPedagogique", "couts", lo=0, hi=1_000_000)
    return e, facts


def validate_facture(body: Any) -> tuple[Errors, dict]:
    e, facts, v = _begin(body)
    if v is None:
        return e, facts
    facts["numeroInterneFacture"] = v.string(body, "numeroInterneFacture", "", regex=RE_NI, maxlen=64)
    v.string(body, "referenceFactureCFA", "", maxlen=64)
    facts["numeroInterneDossier"] = v.string(body, "numeroInterneDossier", "", regex=RE_NI, maxlen=64)
    ech = v.obj(body, "echeance", "")
    if ech is not None:
        facts["echeance"] = v.integer(ech, "numero", "echeance", lo=1, hi=1000)
    facts["montant"] = v.number(body, "montant", "", lo=0.01, hi=1_000_000)
    v.date(body, "dateFacture", "")
    return e, facts


def validate_rupture(body: Any) -> tuple[Errors, dict]:
    e, facts, v = _begin(body)
    if v is None:
        return e, facts
    facts["numeroInterne"] = v.string(body, "numeroInterne", "", regex=RE_NI, maxlen=64)
    facts["dateRupture"] = v.date(body, "dateRupture", "")
    v.string(body, "motif", "", maxlen=500)
    return e, facts


def validate_certificat(body: Any) -> tuple[Errors, dict]:
    e, facts, v = _begin(body)
    if v is None:
        return e, facts
    facts["numeroInterneDossier"] = v.string(body, "numeroInterneDossier", "", regex=RE_NI, maxlen=64)
    v.enum(body, "typeCertificat", "", {"Intermediaire", "Final"})
    facts["typeCertificat"] = body.get("typeCertificat")
    ech = v.obj(body, "echeance", "")
    if ech is not None:
        facts["echeance"] = v.integer(ech, "numero", "echeance", lo=1, hi=1000)
        v.string(ech, "codification", "echeance", required=False, maxlen=50)
        v.number(ech, "duree", "echeance", required=False, lo=0, hi=100_000)
        d1 = v.date(ech, "dateDebut", "echeance")
        d2 = v.date(ech, "dateFin", "echeance")
        if d1 and d2 and d2 < d1:
            e.add("DATES", "echeance.dateFin", "echeance.dateFin doit suivre dateDebut")
    return e, facts

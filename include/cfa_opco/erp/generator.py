"""Deterministic seeded generator of the demo ERPs.

``python -m cfa_opco.erp.generator --seed 42 --dossiers 2000`` fills both demo ERPs
(``erp_main``: "Gestion CFA", about 85 % of the dossiers; ``erp_est``: "Ypso Formation",
the rest) with a CFA network's reference data and dossiers, and a controlled share
(``--defect-rate``, 8 % by default) of realistic defects, each recorded in
``seed_ground_truth`` (in the erp_main database) with the quality rule expected to catch
it. Same seed and arguments, same databases, row for row.

Besides business-rule defects, it seeds data as real ERPs hold it: a SIRET saved as a
number by a spreadsheet, over-long texts, impossible dates and words in number columns
(erp_est keeps them as text), text saved through the wrong encoding; and, on clean
dossiers, identifiers typed with spaces, non-breaking spaces and dots, which must pass
once normalised (``seed_formatted_identifier``).

Everything is built in memory with plain Python (about 5 s for 100,000 dossiers) and
loaded with COPY.
"""
from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import io
import math
import random
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cfa_opco import settings
from cfa_opco.db.connect import connection
from cfa_opco.db.migrate import migrate
from cfa_opco.erp import identifiers as ids
from cfa_opco.sandbox.config import load_config as load_sandbox_config
from cfa_opco.sandbox.config import npec_for, opco_settings
from cfa_opco.sandbox.store import schedule

DATA_DIR = Path(__file__).resolve().parent / "data"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

DEFECTS = (
    "EMPLOYEUR_SIRET_CLE", "EMPLOYEUR_IDCC_INCONNU", "APPRENTI_AGE_MAX",
    "APPRENTI_NIR_MANQUANT", "APPRENTI_NIR_NAISSANCE", "CONTRAT_DUREE_MIN",
    "CONTRAT_DATES_ORDRE", "CONTRAT_REMUNERATION_MIN", "FORMATION_HEURES_MAX",
    # data as real ERPs hold it (issue 10): each kind with the rule that must catch it
    "EMPLOYEUR_SIRET_FORMAT",          # a number in a text column: SIRET saved by a spreadsheet (5.52100554E+13)
    "CHAMP_LONGUEUR",                  # an over-long text (street of several hundred characters)
    "DATE_IMPOSSIBLE",                 # 30/02 in a text date column (erp_est)
    "TYPE_INVALIDE",                   # words in a number column (erp_est: training hours as free text)
    "ENCODAGE",                        # text saved through the wrong encoding ("ChambÃ©ry")
    "CONTRAT_FIN_APRES_FORMATION",     # CERFA: the contract ends more than 3 months after the training
    "CONTRAT_DUREE_HEBDO_MAX",         # CERFA: more than 40 hours a week
    "CONTRAT_SIGNATURE_APRES_DEBUT",   # CERFA: an initial contract signed after it started
)
# the seeded kind -> the rule code the gate reports it with (ground truth)
DEFECT_RULE = {"DATE_IMPOSSIBLE": "EXTRACTION_VALEUR_ILLISIBLE", "TYPE_INVALIDE": "EXTRACTION_VALEUR_ILLISIBLE",
               "ENCODAGE": "EXTRACTION_VALEUR_ILLISIBLE"}
EST_ONLY_DEFECTS = ("DATE_IMPOSSIBLE", "TYPE_INVALIDE")   # text columns that only erp_est has
MOJIBAKE_COMMUNES = ("ChambÃ©ry", "GenÃ¨ve", "OrlÃ©ans", "BesanÃ§on", "Saint-Ã‰tienne")
HOURS_AS_TEXT = ("NC", "1200h", "env. 900", "à définir", "12OO")
AVENANT_DEFECT = "AVENANT_CONTRAT_PRECEDENT"
# defects of the convention de formation (reported, the dossier still leaves: rule -> kind)
CONVENTION_DEFECTS = ("CONVENTION_COUT_NEGATIF", "CONVENTION_COUTS_INCOHERENTS",
                      "CONVENTION_DATES_HORS_CONTRAT", "CONVENTION_INCOMPLETE")
# defects of the invoices (issue 12, point 3): the quality rule that must catch each one
INVOICE_DEFECTS = ("FACTURE_MONTANT_SUPERIEUR",       # amount above the échéance's
                   "FACTURE_AVANT_ECHEANCE",          # dated before the échéance starts
                   "FACTURE_NUMERO_DOUBLON",          # an invoice number typed twice
                   "FACTURE_DOSSIER_NON_ENGAGE",      # for a dossier the OPCO has not engaged (quarantined)
                   "FACTURE_ECHEANCE_MANQUANTE",      # no échéance number
                   "FACTURE_MONTANT_INVALIDE",        # negative, or three decimals
                   "FACTURE_SIRET")                   # another establishment's SIRET, or a wrong key
INVOICE_DEFECT_RATE = 0.07
INVOICE_SHARE = 0.55              # contracts with an échéance due by the invoicing day that the CFA invoiced
INVOICING_DAYS = 100              # the invoicing day: the reference date + this
SANDBOX_CONFIG = settings.PROJECT_DIR / "config" / "sandbox.yaml"
UNKNOWN_IDCCS = ("0001", "0002", "0999", "1212", "1999", "2001", "3333")
NAFS = ("10.71C", "10.71D", "56.10A", "56.10C", "45.20A", "43.21A", "43.22A", "41.20A",
        "47.11F", "47.71Z", "96.02A", "96.02B", "62.01Z", "86.10Z", "88.91A", "81.30Z",
        "49.41A", "55.10Z", "70.22Z", "01.30Z")
COMPANY_FORMS = ("{nom} & Fils", "SARL {nom}", "Boulangerie {nom}", "Garage {nom}",
                 "Établissements {nom}", "SAS {nom} Bâtiment", "Pharmacie {nom}",
                 "Salon {prenom}", "Restaurant Chez {prenom}", "{nom} Informatique",
                 "Transports {nom}", "Maison {nom}", "L'Atelier de {prenom}",
                 "Crèche Les P'tits Loups", "Paysages {nom}")
VOIES = ("rue de la République", "avenue Jean-Jaurès", "rue de l'Église", "place du Marché",
         "chemin des Écoliers", "boulevard Gambetta", "allée des Tilleuls", "rue Pasteur",
         "impasse des Lilas", "route de Grenoble", "quai Saint-Antoine", "rue d'Alsace")
EMPLOIS = ("Artisan boulanger", "Chef de cuisine", "Chef d'atelier", "Responsable de magasin",
           "Conducteur de travaux", "Électricien", "Coiffeuse", "Développeur senior",
           "Comptable", "Infirmière coordinatrice", "Chef d'équipe paysagiste")
DIPLOMES_MAITRE = ("CAP", "Brevet de maîtrise", "BTS", "Licence professionnelle", "Master",
                   "Titre professionnel", "Bac pro")
FOREIGN_BIRTHPLACES = (("Dakar (Sénégal)", "341", 3), ("Porto (Portugal)", "139", 2),
                       ("Alger (Algérie)", "352", 3), ("Bruxelles (Belgique)", "131", 2))
CAISSES = (None, None, "AG2R La Mondiale", "Malakoff Humanis", "Pro BTP")


def _read_csv(name: str) -> list[dict]:
    with open(DATA_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _reference_csv(name: str) -> list[dict]:
    with open(settings.REFERENCE_DIR / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    day = min(d.day, [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
                      31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1])
    return dt.date(year, month, day)


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


class Smic:
    """Dated SMIC values (reference/smic.csv): the value in force on a given day."""

    def __init__(self, territoire: str = "metropole"):
        rows = sorted((dt.date.fromisoformat(r["date_effet"]), float(r["mensuel_brut_35h"]))
                      for r in _reference_csv("smic.csv") if r["territoire"] == territoire)
        self._dates = [d for d, _ in rows]
        self._values = [v for _, v in rows]

    def monthly(self, day: dt.date) -> float:
        i = bisect.bisect_right(self._dates, day) - 1
        if i < 0:
            raise ValueError(f"no SMIC value in force on {day}")
        return self._values[i]


class PayGrid:
    """Minimum percentage of the SMIC by contract year and age (reference data)."""

    def __init__(self):
        self._rows = [(int(r["annee_contrat"]), int(r["age_min"]), int(r["age_max"]),
                       float(r["taux_min_smic"]))
                      for r in _reference_csv("remuneration_grid.csv")]

    def minimum(self, year: int, age: int) -> float:
        year = min(year, 4)
        for y, lo, hi, pct in self._rows:
            if y == year and lo <= age <= hi:
                return pct
        raise ValueError(f"no minimum pay for contract year {year}, age {age}")


@dataclass
class Tables:
    """Rows per table, per source; each row a tuple in the table's column order."""
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)   # relative path -> content

    def add(self, table: str, row: tuple) -> None:
        self.rows.setdefault(table, []).append(row)


MAIN_COLUMNS = {
    "etablissement": "id code_site siret uai denomination adresse_numero adresse_voie "
                     "adresse_complement code_postal commune",
    "entreprise": "id siret raison_sociale code_naf code_idcc libelle_idcc effectif type_employeur "
                  "employeur_specifique secteur_public adresse_numero adresse_voie adresse_complement "
                  "code_postal commune telephone email",
    "apprenant": "id nom nom_usage prenom sexe date_naissance commune_naissance departement_naissance "
                 "nir nationalite regime_social adresse_numero adresse_voie adresse_complement "
                 "code_postal commune telephone email rqth sportif_haut_niveau projet_creation_entreprise "
                 "situation_avant_contrat dernier_diplome representant_nom representant_prenom",
    "maitre_apprentissage": "id entreprise_id nom prenom date_naissance emploi diplome",
    "formation": "id code_rncp code_cfd intitule",
    "session_formation": "id formation_id etablissement_id code_session date_debut date_fin duree_heures",
    "contrat": "id numero_interne apprenant_id entreprise_id session_id maitre1_id maitre2_id "
               "type_contrat type_derogation date_conclusion date_debut date_fin duree_hebdo_heures "
               "duree_hebdo_minutes salaire_embauche caisse_retraite",
    "contrat_remuneration": "contrat_id annee date_debut date_fin taux base",
    "avenant": "id numero_interne contrat_id contrat_precedent_id type_avenant date_effet "
               "nouveau_salaire motif",
    "piece": "id contrat_id type_piece nom_fichier type_mime contenu chemin",
    "convention_formation": "contrat_id cout_pedagogique montant_annee_1 montant_annee_2 montant_annee_3 "
                            "montant_annee_4 frais_premier_equipement frais_restauration frais_hebergement "
                            "date_debut date_fin",
}
EST_COLUMNS = {
    "T_ADRESSE": "ADR_ID ADR_NUM ADR_VOIE ADR_CPL ADR_CP ADR_VILLE",
    "T_SITE": "SITE_ID SITE_SIRET SITE_UAI SITE_LIB ADR_ID",
    "T_ENTREPRISE": "ENT_ID ENT_SIRET ENT_RS ENT_APE ENT_CCN ENT_CCN_LIB ENT_EFF ENT_TYPE ENT_SPEC "
                    "ENT_PUBLIC ADR_ID ENT_TEL ENT_MAIL",
    "T_STAGIAIRE": "STG_ID STG_NOM STG_NOM_USAGE STG_PRENOM STG_CIVILITE STG_DNAIS STG_LIEU_NAIS "
                   "STG_DEP_NAIS STG_NSS STG_NATIO STG_REGIME ADR_ID STG_TEL STG_MAIL STG_RQTH STG_SHN "
                   "STG_CREA STG_SITU STG_DIPL STG_RESP_LEGAL",
    "T_TUTEUR": "TUT_ID ENT_ID TUT_NOM TUT_PRENOM TUT_DNAIS TUT_FONCTION TUT_DIPLOME",
    "T_ACTION": "ACT_ID SITE_ID ACT_RNCP ACT_CFD ACT_LIB ACT_DEBUT ACT_FIN ACT_HEURES",
    "T_CONTRAT": "CTR_ID CTR_REF CTR_NATURE CTR_PARENT_ID CTR_TYPE CTR_DEROG STG_ID ENT_ID ACT_ID "
                 "TUT1_ID TUT2_ID CTR_DSIGN CTR_DDEB CTR_DFIN CTR_DEFFET CTR_HEBDO CTR_SALAIRE "
                 "CTR_TAUX_A1 CTR_TAUX_A2 CTR_TAUX_A3 CTR_TAUX_A4 CTR_BASE CTR_RETRAITE",
    "T_DOCUMENT": "DOC_ID CTR_ID DOC_TYPE DOC_FICHIER",
    "T_CONVENTION": "CTR_ID CNV_COUT_PEDA CNV_MT_A1 CNV_MT_A2 CNV_MT_A3 CNV_MT_A4 CNV_EQUIP CNV_REPAS "
                    "CNV_HEBERG CNV_DDEB CNV_DFIN",
    "T_ECHEANCIER": "ECH_ID CTR_ID ECH_NUM ECH_DATE ECH_MONTANT ECH_STATUT",
    "T_FACTURE": "FAC_ID FAC_NUM CTR_ID FAC_ECH FAC_DATE FAC_MT FAC_SIRET",
}
MAIN_COLUMNS.update({
    "echeance": "id contrat_id numero date_echeance montant statut",
    "facture": "id numero_facture contrat_id echeance_numero date_facture montant siret_cfa",
})
EXTRA_TABLES = {"erp_main": ("retour_opco",), "erp_est": ()}
INVOICE_TRUTH_COLUMNS = "source_id ligne numero_facture numero_interne echeance_numero opco_code rule_code"
GROUND_TRUTH_COLUMNS = "source_id numero_interne rule_code detail"


def minimal_pdf(text: str) -> bytes:
    """A small but valid one-page PDF carrying ``text`` (the demo's documents)."""
    safe = text.encode("latin-1", "replace").replace(b"(", b"[").replace(b")", b"]")
    stream = b"BT /F1 11 Tf 50 780 Td (" + safe + b") Tj ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


class Generator:
    def __init__(self, seed: int, dossiers: int, reference_date: dt.date,
                 defect_rate: float = 0.08, avenant_rate: float = 0.05, est_share: float = 0.15):
        self.rng = random.Random(seed)
        self.seed, self.n = seed, dossiers
        self.ref = reference_date
        self.defect_rate, self.avenant_rate, self.est_share = defect_rate, avenant_rate, est_share
        self.prenoms = _read_csv("prenoms.csv")
        self.noms = (DATA_DIR / "noms.txt").read_text(encoding="utf-8").split("\n")
        self.noms = [n for n in self.noms if n]
        self.communes = _read_csv("communes.csv")
        self.formations = _reference_csv("formations.csv")
        self.sites = _read_csv("etablissements.csv")
        self.idccs = [(r["idcc"], r["opco_name"]) for r in _reference_csv("idcc_opco.csv")]
        self.smic, self.grid = Smic(), PayGrid()
        self.main, self.est = Tables(), Tables()
        self.truth: list[tuple] = []
        # (source, record, identifier, column, as typed): identifiers typed with spaces/dots
        self.formatted: list[tuple] = []
        # a second stream for the clean formatting variations: the main stream (and so every
        # table) does not depend on them
        self.fmt_rng = random.Random(seed * 7919 + 1)
        # and a third for the conventions de formation (their defects are reported, not blocking:
        # their own ground truth, seed_convention_truth)
        self.conv_rng = random.Random(seed * 104729 + 3)
        self.conv_truth: list[tuple] = []
        # and a fourth for the payment schedules and invoices (issue 12): seed_invoice_truth
        self.inv_rng = random.Random(seed * 15485863 + 5)
        self.invoice_truth: list[tuple] = []
        self.contracts: list[tuple[dict, str | None]] = []
        self._ids: dict[str, int] = {}
        self._pdf_cache: dict[str, bytes] = {}

    # -- small helpers ---------------------------------------------------------------
    def next_id(self, table: str) -> int:
        self._ids[table] = self._ids.get(table, 0) + 1
        return self._ids[table]

    def person(self, sexe: str | None = None) -> tuple[str, str, str]:
        rng = self.rng
        p = rng.choice(self.prenoms) if sexe is None else rng.choice(
            [x for x in self.prenoms if x["sexe"] == sexe])
        return rng.choice(self.noms), p["prenom"], p["sexe"]

    def address(self) -> tuple[str, str, str | None, str, str]:
        c = self.rng.choice(self.communes[:25])  # metropolitan addresses
        return (str(self.rng.randint(1, 180)), self.rng.choice(VOIES),
                "Bâtiment B" if self.rng.random() < 0.05 else None, c["code_postal"], c["commune"])

    def phone(self, mobile: bool) -> str:
        return ("06" if mobile else "04") + "".join(str(self.rng.randint(0, 9)) for _ in range(8))

    @staticmethod
    def email(prenom: str, nom: str, domain: str) -> str:
        def ascii_(s: str) -> str:
            s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
            return "".join(ch for ch in s.lower() if ch.isalnum() or ch == "-")
        return f"{ascii_(prenom)}.{ascii_(nom)}@{domain}"

    # -- reference data --------------------------------------------------------------
    def make_company(self, source: str, defect: str | None = None) -> dict:
        rng = self.rng
        nom, prenom, _ = self.person()
        if rng.random() < 0.01 and defect is None:
            siren = ids.LA_POSTE_SIREN   # La Poste establishment: digit-sum rule, not Luhn
            name = f"La Poste - Plateforme {rng.choice(self.communes)['commune']}"
        else:
            siren = ids.siren_from(f"{rng.randint(10_000_000, 99_999_999)}")
            name = rng.choice(COMPANY_FORMS).format(nom=nom, prenom=prenom)
        siret = ids.siret_from(siren, f"{rng.randint(1, 99):04d}")
        idcc, idcc_name = rng.choice(self.idccs)
        libelle = f"Convention collective nationale IDCC {idcc} ({idcc_name})"
        address = self.address()
        typed_siret, typed_idcc = siret, idcc
        if defect == "EMPLOYEUR_SIRET_CLE":
            siret = typed_siret = ids.with_wrong_luhn_key(siret)
        elif defect == "EMPLOYEUR_IDCC_INCONNU":
            idcc, libelle = rng.choice(UNKNOWN_IDCCS), "Convention collective (à vérifier)"
            typed_idcc = idcc
        elif defect == "EMPLOYEUR_SIRET_FORMAT":
            typed_siret = f"{int(siret) / 1e13:.8f}".rstrip("0") + "E+13"   # 5.52100554E+13
        elif defect == "CHAMP_LONGUEUR":
            # the whole address typed in the street field, several times over (copy-paste)
            street = ", ".join([f"{address[1]} {address[3]} {address[4]}"] * rng.randint(4, 12))
            address = (address[0], street[:600] if source == "erp_main" else street[:120], *address[2:])
        elif defect is None and source == "erp_main" and self.fmt_rng.random() < 0.08:
            # identifiers as CFA staff type them: spaces, non-breaking spaces, dots, outer blanks;
            # valid once normalised (the gate must pass them, the OPCO must receive them compact)
            sep = self.fmt_rng.choice((" ", "\u00a0", ".", "\u202f"))
            typed_siret = sep.join((siret[:3], siret[3:6], siret[6:9], siret[9:]))
            typed_idcc = self.fmt_rng.choice((f" {idcc}", f"{idcc} ", idcc))
            self.formatted.append(("erp_main", "entreprise", siret, "employeur_siret", typed_siret))
        company = {
            "source": source, "siret": siret, "name": name, "naf": rng.choice(NAFS),
            "idcc": idcc, "libelle_idcc": libelle, "effectif": rng.choice((1, 3, 8, 12, 25, 60, 240)),
            "type": rng.randint(11, 16), "specifique": 0, "address": address,
            "phone": self.phone(False), "email": self.email("contact", nom, "entreprise.fr"),
            "masters": [], "dossiers": 0,
        }
        company["id"] = self.next_id(f"{source}:entreprise")
        if source == "erp_main":
            self.main.add("entreprise", (company["id"], typed_siret, name, company["naf"], typed_idcc, libelle,
                                         company["effectif"], company["type"], 0, False,
                                         *company["address"], company["phone"], company["email"]))
        else:
            adr = self.est_address(company["address"])
            typed = f"{siret[:3]} {siret[3:6]} {siret[6:9]} {siret[9:]}" if rng.random() < 0.3 else siret
            if typed_siret != siret:
                typed = typed_siret
            self.est.add("T_ENTREPRISE", (company["id"], typed, name, company["naf"].replace(".", ""),
                                          idcc, libelle, company["effectif"], company["type"], 0,
                                          "N", adr, company["phone"], company["email"]))
        for _ in range(1 if rng.random() < 0.7 else 2):
            self.make_master(company)
        return company

    def make_master(self, company: dict) -> None:
        rng = self.rng
        nom, prenom, _ = self.person()
        birth = self.ref - dt.timedelta(days=rng.randint(26 * 365, 60 * 365))
        mid = self.next_id(f"{company['source']}:maitre")
        emploi, diplome = rng.choice(EMPLOIS), rng.choice(DIPLOMES_MAITRE)
        if company["source"] == "erp_main":
            self.main.add("maitre_apprentissage", (mid, company["id"], nom, prenom, birth, emploi, diplome))
        else:
            self.est.add("T_TUTEUR", (mid, company["id"], nom.upper(), prenom,
                                      birth.strftime("%d/%m/%Y"), emploi, diplome))
        company["masters"].append(mid)

    def est_address(self, address: tuple) -> int:
        adr_id = self.next_id("erp_est:adresse")
        self.est.add("T_ADRESSE", (adr_id, *address))
        return adr_id

    def make_sites_and_sessions(self) -> dict[str, list[dict]]:
        """CFA sites (fixed network) and, per site, sessions of the coming school year."""
        sessions: dict[str, list[dict]] = {"erp_main": [], "erp_est": []}
        year = self.ref.year if self.ref.month < 9 else self.ref.year
        formation_ids = {}
        for i, f in enumerate(self.formations, 1):
            formation_ids[f["rncp"]] = i
            self.main.add("formation", (i, f["rncp"], f["cfd"], f["intitule"]))
        for site_no, site in enumerate(self.sites, 1):
            source = site["source"]
            address = (site["adresse_numero"], site["adresse_voie"], None, site["code_postal"], site["commune"])
            if source == "erp_main":
                self.main.add("etablissement", (site_no, site["code_site"], site["siret"], site["uai"],
                                                site["denomination"], *address))
                site_id = site_no
            else:
                site_id = int(site["code_site"])
                self.est.add("T_SITE", (site_id, site["siret"], site["uai"], site["denomination"],
                                        self.est_address(address)))
            offered = self.rng.sample(self.formations, 10 if source == "erp_main" else 8)
            for f in offered:
                months = int(f["duree_mois"])
                start = dt.date(year, 9, 1) + dt.timedelta(days=self.rng.randint(0, 14))
                end = add_months(start, months) - dt.timedelta(days=self.rng.randint(45, 75))
                span = (end - start).days / 30.44
                # at least 28 % of the working time of a contract ending 3 months after it
                hours = max(int(f["heures_an"]) * months // 12, math.ceil(0.28 * 1607 * (span + 3) / 12))
                session = self.new_session(source, site_id, f, formation_ids[f["rncp"]], start, end, hours)
                sessions[source].append(session)
        return sessions

    def new_session(self, source: str, site_id: int, formation: dict, formation_id: int,
                    start: dt.date, end: dt.date, hours: int | str) -> dict:
        sid = self.next_id(f"{source}:session")
        session = {"id": sid, "source": source, "site_id": site_id, "formation": formation,
                   "formation_id": formation_id, "start": start, "end": end, "hours": hours}
        if source == "erp_main":
            self.main.add("session_formation", (sid, formation_id, site_id,
                                                f"S{start.year}-{site_id:02d}-{sid:04d}", start, end, hours))
        else:
            self.est.add("T_ACTION", (sid, site_id, formation["rncp"], formation["cfd"],
                                      formation["intitule"], start.strftime("%d/%m/%Y"),
                                      end.strftime("%d/%m/%Y"), hours))
        return session

    # -- dossiers --------------------------------------------------------------------
    def make_learner(self, source: str, contract_start: dt.date, defect: str | None) -> dict:
        rng = self.rng
        nom, prenom, sexe = self.person()
        exception = {"rqth": False, "shn": False, "crea": False}
        derogation = None
        if defect == "APPRENTI_AGE_MAX":
            age = rng.randint(31, 38)
        elif rng.random() < 0.02:
            age = rng.randint(30, 34)   # over 29 with an exception: valid
            exception[rng.choice(("rqth", "shn", "crea"))] = True
            derogation = 12
        else:
            age = rng.choices((16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28),
                              (8, 12, 16, 14, 12, 10, 8, 6, 5, 3, 2, 2, 2))[0]
        birth = contract_start - dt.timedelta(days=age * 365 + rng.randint(20, 340))
        if rng.random() < 0.05:
            commune, code_commune, nationalite = rng.choice(FOREIGN_BIRTHPLACES)
            departement = "99"
        else:
            c = rng.choice(self.communes)
            commune, departement, code_commune, nationalite = (c["commune"], c["departement"],
                                                                c["code_commune"], 1)
        if defect == "ENCODAGE":
            commune = rng.choice(MOJIBAKE_COMMUNES)
        nir_year = birth.year
        if defect == "APPRENTI_NIR_NAISSANCE":
            nir_year = birth.year + rng.choice((-3, -2, -1, 1, 2, 3))
        nir = ids.nir_from(sexe, nir_year, birth.month, departement, code_commune, rng.randint(1, 999))
        if defect == "APPRENTI_NIR_MANQUANT":
            nir = None
        typed_nir = nir
        if nir and defect is None and source == "erp_main" and self.fmt_rng.random() < 0.08:
            typed_nir = " ".join((nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:])) + " "
            self.formatted.append(("erp_main", "apprenant", nir, "apprenti_nir", typed_nir))
        minor = age_on(birth, contract_start) < 18
        rep_nom, rep_prenom = (nom, self.person()[1]) if minor else (None, None)
        lid = self.next_id(f"{source}:apprenant")
        address = self.address()
        phone, email = self.phone(True), self.email(prenom, nom, "example.fr")
        situation, diplome = rng.randint(1, 12), rng.choice((13, 25, 26, 33, 34, 35, 38, 41, 42))
        if source == "erp_main":
            self.main.add("apprenant", (lid, nom, None, prenom, sexe, birth, commune, departement, typed_nir,
                                        nationalite, 2, *address, phone, email, exception["rqth"],
                                        exception["shn"], exception["crea"], situation, diplome,
                                        rep_nom, rep_prenom))
        else:
            self.est.add("T_STAGIAIRE", (lid, nom.upper(), None, prenom, "M." if sexe == "M" else "Mme",
                                         birth.strftime("%d/%m/%Y"), commune, departement, nir or "",
                                         nationalite, 2, self.est_address(address), phone, email,
                                         "O" if exception["rqth"] else "N", "O" if exception["shn"] else "N",
                                         "O" if exception["crea"] else "N", situation, diplome,
                                         f"{rep_nom.upper()} {rep_prenom}" if rep_nom else None))
        return {"id": lid, "birth": birth, "derogation": derogation}

    def pay_schedule(self, birth: dt.date, start: dt.date, end: dt.date, defect: str | None,
                     hebdo: float) -> tuple[list[tuple], float]:
        """remunerationsAnnuelles and the hiring salary, at or above the legal grid
        (evaluated at the highest age reached in each year, so whichever convention a
        checker uses, a clean contract passes)."""
        rng = self.rng
        years = []
        last = max(end, start)
        n = 1
        while True:
            y_start = add_months(start, 12 * (n - 1))
            if n > 1 and (y_start > last or n > 4):
                break
            y_end = add_months(start, 12 * n) - dt.timedelta(days=1)
            if end >= start:
                y_end = min(y_end, end)
            minimum = self.grid.minimum(n, age_on(birth, y_end))
            taux = min(100.0, minimum + rng.choice((0, 0, 0, 2, 5, 10)))
            if defect == "CONTRAT_REMUNERATION_MIN" and n == 1:
                # below the grid whatever the age convention (start or end of the year)
                taux = self.grid.minimum(n, age_on(birth, y_start)) - rng.choice((5, 8, 10, 12))
            years.append((n, y_start, y_end, taux, "SMIC"))
            n += 1
        salary = math.ceil(years[0][3] / 100 * self.smic.monthly(start) * hebdo / 35 * 100) / 100
        return years, salary

    def make_contract(self, source: str, numero: str, company: dict, session: dict,
                      defect: str | None) -> dict:
        rng = self.rng
        start = session["start"] + dt.timedelta(days=rng.randint(-20, 60))
        end = session["end"] + dt.timedelta(days=rng.randint(0, 45))
        if defect == "CONTRAT_DUREE_MIN":
            end = add_months(start, rng.randint(3, 5))
        elif defect == "CONTRAT_DATES_ORDRE":
            end = start - dt.timedelta(days=rng.randint(10, 200))
        elif defect == "CONTRAT_FIN_APRES_FORMATION":
            # starts with the training (so that the theory share stays above 25 %) and ends
            # 3 months and 10 to 25 days after it
            start = session["start"] + dt.timedelta(days=rng.randint(0, 30))
            end = add_months(session["end"], 3) + dt.timedelta(days=rng.randint(10, 25))
        signature = start - dt.timedelta(days=rng.randint(1, 30))
        typed_signature = signature
        if defect == "CONTRAT_SIGNATURE_APRES_DEBUT":
            signature = typed_signature = start + dt.timedelta(days=rng.randint(1, 20))
        elif defect == "DATE_IMPOSSIBLE":
            day, month = rng.choice(((30, 2), (31, 2), (31, 4), (31, 6), (31, 9), (31, 11)))
            typed_signature = f"{day:02d}/{month:02d}/{signature.year}"
        learner = self.make_learner(source, start, defect)
        hebdo_h, hebdo_m = rng.choices(((35, 0), (39, 0), (35, 30)), (80, 10, 10))[0]
        if defect == "CONTRAT_DUREE_HEBDO_MAX":
            hebdo_h, hebdo_m = rng.choice(((41, 0), (42, 0), (45, 0), (40, 30)))
        years, salary = self.pay_schedule(learner["birth"], start, end, defect, hebdo_h + hebdo_m / 60)
        masters = company["masters"]
        m1 = masters[0]
        m2 = masters[1] if len(masters) > 1 and rng.random() < 0.5 else None
        cid = self.next_id(f"{source}:contrat")
        caisse = rng.choice(CAISSES)
        if source == "erp_main":
            self.main.add("contrat", (cid, numero, learner["id"], company["id"], session["id"], m1, m2,
                                      11, learner["derogation"], signature, start, end, hebdo_h, hebdo_m,
                                      salary, caisse))
            for y in years:
                self.main.add("contrat_remuneration", (cid, *y))
        else:
            taux = [y[3] for y in years] + [None] * (4 - len(years))
            self.est.add("T_CONTRAT", self.est_contract_row(
                cid, numero, "C", None, 11, learner["derogation"], learner["id"], company["id"],
                session["id"], m1, m2, typed_signature, start, end, None, hebdo_h + hebdo_m / 60, salary,
                taux, caisse))
        self.add_documents(source, cid, numero)
        if defect is None:
            self.add_convention(source, cid, numero, start, end, session, len(years))
        return {"id": cid, "numero": numero, "start": start, "end": end, "learner": learner,
                "company": company, "session": session, "m1": m1, "m2": m2, "signature": signature,
                "salary": salary, "years": years, "hebdo": hebdo_h + hebdo_m / 60, "caisse": caisse}

    @staticmethod
    def est_contract_row(cid, numero, nature, parent, typ, derog, stg, ent, act, t1, t2, sign,
                         start, end, effet, hebdo, salary, taux, caisse) -> tuple:
        fmt = lambda d: d if isinstance(d, str) else (d.strftime("%d/%m/%Y") if d else None)  # noqa: E731
        return (cid, numero, nature, parent, typ, derog, stg, ent, act, t1, t2, fmt(sign), fmt(start),
                fmt(end), fmt(effet), round(hebdo, 2), salary, *taux, "SMIC", caisse)

    def add_documents(self, source: str, contract_id: int, numero: str) -> None:
        """The signed training agreement (convention de formation), missing for about 3 %
        of the contracts: those stay incomplete at the OPCO until it is attached."""
        if self.rng.random() < 0.03:
            return
        name = f"convention_{numero}.pdf"
        if source == "erp_main":
            pid = self.next_id("erp_main:piece")
            content = minimal_pdf(f"Convention de formation - dossier {numero}")
            self.main.add("piece", (pid, contract_id, "CONVENTION_FORMATION", name, "application/pdf",
                                    content, None))
        else:
            did = self.next_id("erp_est:document")
            path = f"conventions/{name}"
            self.est.files[path] = minimal_pdf(f"Convention de formation - dossier {numero}")
            self.est.add("T_DOCUMENT", (did, contract_id, "CONV", path))

    def add_convention(self, source: str, contract_id: int, numero: str, start: dt.date, end: dt.date,
                       session: dict, years: int) -> None:
        """The convention de formation's costs, held by the ERP for about 92 % of the contracts,
        with a reported defect on about 4 % of those (ground truth: seed_convention_truth)."""
        rng = self.conv_rng
        if rng.random() < 0.08:
            return
        yearly = round(rng.uniform(5500, 9800) / 50) * 50
        per_year = [float(yearly)] * min(years, 4) + [None] * (4 - min(years, 4))
        cout = float(yearly * min(years, 4))
        equip = float(rng.choice((150, 300, 500))) if rng.random() < 0.3 else None
        repas = round(rng.uniform(300, 900), 2) if rng.random() < 0.4 else None
        heberg = round(rng.uniform(600, 2400), 2) if rng.random() < 0.15 else None
        debut, fin = max(start, session["start"]), min(end, session["end"])
        defect = rng.choice(CONVENTION_DEFECTS) if rng.random() < 0.04 else None
        if defect == "CONVENTION_COUT_NEGATIF":
            equip = -float(rng.choice((150, 300, 500)))
        elif defect == "CONVENTION_COUTS_INCOHERENTS":
            cout += rng.choice((150, 400, 900))
        elif defect == "CONVENTION_DATES_HORS_CONTRAT":
            fin = end + dt.timedelta(days=rng.randint(30, 120))
        elif defect == "CONVENTION_INCOMPLETE":
            cout = None
        if defect:
            self.conv_truth.append((source, numero, defect))
        if source == "erp_main":
            self.main.add("convention_formation", (contract_id, cout, *per_year, equip, repas, heberg, debut, fin))
        else:
            fmt = lambda d: d.strftime("%d/%m/%Y")  # noqa: E731
            self.est.add("T_CONVENTION", (contract_id, cout, *per_year, equip, repas, heberg, fmt(debut), fmt(fin)))

    def make_avenant(self, base: dict, defect: str | None) -> str:
        rng = self.rng
        source = base["company"]["source"]
        numero = base["numero"] + "-A1"
        typ = rng.randint(31, 37)
        latest = min(base["end"], base["start"] + dt.timedelta(days=300))
        effet = base["start"] + dt.timedelta(days=rng.randint(30, max(31, (latest - base["start"]).days)))
        raise_pct = rng.choice((0, 0, 3, 5))
        salary = round(base["salary"] * (1 + raise_pct / 100), 2)
        previous = None if defect == AVENANT_DEFECT else base["id"]
        if source == "erp_main":
            aid = self.next_id("erp_main:avenant")
            self.main.add("avenant", (aid, numero, base["id"], previous, typ, effet,
                                      salary if raise_pct else None,
                                      "Revalorisation de la rémunération" if raise_pct else "Modification du contrat"))
        else:
            aid = self.next_id("erp_est:contrat")
            taux = [y[3] for y in base["years"]] + [None] * (4 - len(base["years"]))
            self.est.add("T_CONTRAT", self.est_contract_row(
                aid, numero, "A", previous, typ, base["learner"]["derogation"], base["learner"]["id"],
                base["company"]["id"], base["session"]["id"], base["m1"], base["m2"], base["signature"],
                base["start"], base["end"], effet, base["hebdo"], salary, taux, base["caisse"]))
        return numero

    def generate(self) -> "Generator":
        rng = self.rng
        sessions = self.make_sites_and_sessions()
        companies: dict[str, list[dict]] = {"erp_main": [], "erp_est": []}
        defect_company: dict[tuple[str, str], dict] = {}
        defect_session: dict[tuple[str, str], dict] = {}
        counters = {"erp_main": {}, "erp_est": 0}
        site_prefix = {"775672272": "MR", "324578137": "BTP"}
        clean_contracts: list[dict] = []
        n_avenants = int(round(self.n * self.avenant_rate))
        n_contracts = self.n - n_avenants
        for i in range(n_contracts):
            source = "erp_est" if rng.random() < self.est_share else "erp_main"
            defect = rng.choice(DEFECTS) if rng.random() < self.defect_rate else None
            if defect in EST_ONLY_DEFECTS:
                source = "erp_est"
            session = rng.choice(sessions[source])
            if defect in ("FORMATION_HEURES_MAX", "TYPE_INVALIDE"):
                bad = defect_session.get((source, defect))
                if bad is None or rng.random() < 0.4:
                    s = session
                    hours = (rng.randint(10_000, 12_500) if defect == "FORMATION_HEURES_MAX"
                             else rng.choice(HOURS_AS_TEXT))
                    bad = self.new_session(source, s["site_id"], s["formation"], s["formation_id"],
                                           s["start"], s["end"], hours)
                    defect_session[(source, defect)] = bad
                session = bad
            if defect in ("EMPLOYEUR_SIRET_CLE", "EMPLOYEUR_IDCC_INCONNU", "EMPLOYEUR_SIRET_FORMAT",
                          "CHAMP_LONGUEUR"):
                # a faulty company row, shared by up to 3 dossiers (one root cause)
                company = defect_company.get((source, defect))
                if company is None or company["dossiers"] >= 3 or rng.random() < 0.3:
                    company = self.make_company(source, defect)
                    defect_company[(source, defect)] = company
            else:
                pool = companies[source]
                if not pool or rng.random() < 0.35:
                    pool.append(self.make_company(source))
                company = rng.choice(pool)
            company["dossiers"] += 1
            if source == "erp_main":
                siren = self.sites[session["site_id"] - 1]["siren"]
                prefix = site_prefix[siren]
                counters["erp_main"][prefix] = counters["erp_main"].get(prefix, 0) + 1
                numero = f"{prefix}-{session['start'].year}-{counters['erp_main'][prefix]:06d}"
            else:
                counters["erp_est"] += 1
                numero = f"SMB{session['start'].year % 100}-{counters['erp_est']:05d}"
            contract = self.make_contract(source, numero, company, session, defect)
            self.contracts.append((contract, defect))
            if defect:
                self.truth.append((source, numero, DEFECT_RULE.get(defect, defect),
                                   defect if defect in DEFECT_RULE else None))
            else:
                clean_contracts.append(contract)
        for base in rng.sample(clean_contracts, min(n_avenants, len(clean_contracts))):
            defect = AVENANT_DEFECT if rng.random() < self.defect_rate else None
            numero = self.make_avenant(base, defect)
            if defect:
                self.truth.append((base["company"]["source"], numero, defect, None))
        self.make_invoices()
        return self

    # -- payment schedules and invoices (issue 12) -------------------------------------
    def opco_of(self, idcc: str) -> str | None:
        if not hasattr(self, "_idcc_opco"):
            self._idcc_opco = {r["idcc"]: r["opco_code"].lower() for r in _reference_csv("idcc_opco.csv")}
        return self._idcc_opco.get(idcc)

    def site_siret(self, contract: dict) -> str:
        session = contract["session"]
        if contract["company"]["source"] == "erp_main":
            return self.sites[session["site_id"] - 1]["siret"]
        return next(s["siret"] for s in self.sites if s["source"] == "erp_est"
                    and int(s["code_site"]) == session["site_id"])

    def make_invoices(self) -> None:
        """Each contract's payment schedule as the CFA holds it — the OPCO's own (the sandbox's
        schedule() with the NPEC of config/sandbox.yaml for its OPCO and RNCP) — and, for about
        55 % of the contracts, an invoice for each échéance due by the invoicing day; about 7 %
        of the invoices carry one of INVOICE_DEFECTS (ground truth: seed_invoice_truth, clean
        invoices with rule_code NULL). Its own random stream: the other tables do not change."""
        rng = self.inv_rng
        cfg = load_sandbox_config(SANDBOX_CONFIG)
        day = self.ref + dt.timedelta(days=INVOICING_DAYS)
        numbers = {"erp_main": 0, "erp_est": 0}
        issued: dict[str, list[tuple]] = {"erp_main": [], "erp_est": []}     # clean invoices: (ligne, numero)
        defective_contracts = [c for c, d in self.contracts if d is not None]
        other_sites = [s["siret"] for s in self.sites]

        def new_number(source: str, date: dt.date) -> str:
            numbers[source] += 1
            return (f"FAC-{date.year}-{numbers[source]:06d}" if source == "erp_main"
                    else f"F{date.year % 100}/{numbers[source]:05d}")

        def add(contract: dict, numero_ech: int | None, date: dt.date, montant, siret: str, opco: str | None,
                rule: str | None, numero: str | None = None) -> None:
            source = contract["company"]["source"]
            numero = numero or new_number(source, date)
            if source == "erp_main":
                ligne = self.next_id("erp_main:facture")
                self.main.add("facture", (ligne, numero, contract["id"], numero_ech, date, montant, siret))
            else:
                ligne = self.next_id("erp_est:facture")
                self.est.add("T_FACTURE", (ligne, numero, contract["id"],
                                           None if numero_ech is None else str(numero_ech),
                                           date.strftime("%d/%m/%Y"), montant, siret))
            self.invoice_truth.append((source, str(ligne), numero, contract["numero"], numero_ech, opco, rule))
            if rule is None:
                issued[source].append((len(self.invoice_truth) - 1, numero))

        for contract, defect in self.contracts:
            if defect is not None:
                continue
            opco = self.opco_of(contract["company"]["idcc"])
            npec = npec_for(opco_settings(cfg, opco), contract["session"]["formation"]["rncp"]) if opco else None
            plan = schedule({"contrat": {"dateDebutContrat": contract["start"].isoformat(),
                                         "dateFinContrat": contract["end"].isoformat()}}, npec)
            source = contract["company"]["source"]
            for e in plan:
                if source == "erp_main":
                    self.main.add("echeance", (self.next_id("erp_main:echeance"), contract["id"], e["numero"],
                                               e["dateEcheance"], e["montant"], "A_FACTURER"))
                else:
                    d = dt.date.fromisoformat(e["dateEcheance"])
                    self.est.add("T_ECHEANCIER", (self.next_id("erp_est:echeance"), contract["id"], e["numero"],
                                                  d.strftime("%d/%m/%Y"), e["montant"], "A FACTURER"))
            if not plan or rng.random() >= INVOICE_SHARE:
                continue
            siret = self.site_siret(contract)
            for e in plan:
                start = dt.date.fromisoformat(e["dateEcheance"])
                if start > day:
                    break
                date = start + dt.timedelta(days=rng.randint(1, 20))
                montant, numero_ech, rule, typed_siret = e["montant"], e["numero"], None, siret
                if rng.random() < INVOICE_DEFECT_RATE:
                    rule = rng.choice(INVOICE_DEFECTS)
                if rule == "FACTURE_MONTANT_SUPERIEUR":
                    montant = round(montant + rng.choice((50, 120, 300)), 2)
                elif rule == "FACTURE_AVANT_ECHEANCE":
                    date = start - dt.timedelta(days=rng.randint(5, 40))
                elif rule == "FACTURE_ECHEANCE_MANQUANTE":
                    numero_ech = None
                elif rule == "FACTURE_MONTANT_INVALIDE":
                    montant = -montant if rng.random() < 0.5 else round(montant - 1, 2) + 0.125
                elif rule == "FACTURE_SIRET":
                    typed_siret = (rng.choice([s for s in other_sites if s != siret]) if rng.random() < 0.5
                             else ids.with_wrong_luhn_key(siret))
                elif rule == "FACTURE_NUMERO_DOUBLON":
                    if not issued[source]:
                        rule = None
                    else:       # the number of an earlier clean invoice, typed again: both are reported
                        k, numero = rng.choice(issued[source])
                        issued[source] = [x for x in issued[source] if x[0] != k]
                        self.invoice_truth[k] = (*self.invoice_truth[k][:-1], rule)
                        add(contract, numero_ech, date, montant, typed_siret, opco, rule, numero)
                        continue
                elif rule == "FACTURE_DOSSIER_NON_ENGAGE":
                    rule = None   # placed on a quarantined contract below
                    if defective_contracts:
                        bad = defective_contracts.pop(rng.randrange(len(defective_contracts)))
                        bad_opco = self.opco_of(bad["company"]["idcc"])
                        bad_plan = schedule({"contrat": {"dateDebutContrat": bad["start"].isoformat(),
                                                         "dateFinContrat": max(bad["end"], bad["start"]).isoformat()}},
                                            8000.0)
                        if bad_plan:
                            b0 = bad_plan[0]
                            add(bad, 1, dt.date.fromisoformat(b0["dateEcheance"]) + dt.timedelta(days=3),
                                b0["montant"], self.site_siret(bad), bad_opco, "FACTURE_DOSSIER_NON_ENGAGE")
                add(contract, numero_ech, date, montant, typed_siret, opco, rule)

    # -- loading ---------------------------------------------------------------------
    def load(self, main_dsn: str, est_dsn: str, files_root: Path) -> dict[str, int]:
        counts = {}
        for dsn, folder, tables, columns in (
                (main_dsn, "erp_main", self.main, MAIN_COLUMNS),
                (est_dsn, "erp_est", self.est, EST_COLUMNS)):
            migrate(dsn, MIGRATIONS_DIR / folder)
            with connection(dsn) as conn, conn.cursor() as cur:
                quoted = [f'"{t}"' for t in (*columns, *EXTRA_TABLES[folder])]
                cur.execute(f"TRUNCATE {', '.join(quoted)} RESTART IDENTITY CASCADE")
                for table, cols in columns.items():
                    rows = tables.rows.get(table, [])
                    collist = ", ".join(f'"{c}"' for c in cols.split())
                    copy_rows(cur, f'"{table}"', collist, rows)
                    counts[f"{folder}.{table}"] = len(rows)
                if folder == "erp_main":
                    cur.execute("""CREATE TABLE IF NOT EXISTS seed_ground_truth (
                                     source_id text NOT NULL, numero_interne text NOT NULL,
                                     rule_code text NOT NULL, detail text,
                                     PRIMARY KEY (source_id, numero_interne, rule_code))""")
                    cur.execute("""CREATE TABLE IF NOT EXISTS seed_info (
                                     seed integer, dossiers integer, reference_date date,
                                     defect_rate numeric, generated_at timestamptz DEFAULT now())""")
                    cur.execute("""CREATE TABLE IF NOT EXISTS seed_formatted_identifier (
                                     source_id text NOT NULL, record text NOT NULL, normalised text NOT NULL,
                                     field text NOT NULL, typed text NOT NULL)""")
                    cur.execute("""CREATE TABLE IF NOT EXISTS seed_convention_truth (
                                     source_id text NOT NULL, numero_interne text NOT NULL,
                                     rule_code text NOT NULL, PRIMARY KEY (source_id, numero_interne))""")
                    cur.execute("""CREATE TABLE IF NOT EXISTS seed_invoice_truth (
                                     source_id text NOT NULL, ligne text NOT NULL, numero_facture text NOT NULL,
                                     numero_interne text NOT NULL, echeance_numero integer, opco_code text,
                                     rule_code text, PRIMARY KEY (source_id, ligne))""")
                    cur.execute("TRUNCATE seed_ground_truth, seed_info, seed_formatted_identifier, "
                                "seed_convention_truth, seed_invoice_truth")
                    copy_rows(cur, "seed_invoice_truth", ", ".join(INVOICE_TRUTH_COLUMNS.split()),
                              self.invoice_truth)
                    copy_rows(cur, "seed_convention_truth", "source_id, numero_interne, rule_code", self.conv_truth)
                    copy_rows(cur, "seed_ground_truth", ", ".join(GROUND_TRUTH_COLUMNS.split()), self.truth)
                    copy_rows(cur, "seed_formatted_identifier", "source_id, record, normalised, field, typed",
                              self.formatted)
                    cur.execute("INSERT INTO seed_info (seed, dossiers, reference_date, defect_rate) "
                                "VALUES (%s, %s, %s, %s)", (self.seed, self.n, self.ref, self.defect_rate))
                # keep the ERP's own sequences past the ids we wrote
                cur.execute("""SELECT table_name, column_name,
                                      pg_get_serial_sequence(quote_ident(table_name), column_name)
                               FROM information_schema.columns
                               WHERE table_schema = 'public' AND column_default LIKE 'nextval%%'""")
                for table, column, sequence in cur.fetchall():
                    cur.execute(f'SELECT setval(%s, COALESCE((SELECT max("{column}") FROM "{table}"), 0) + 1, false)',
                                (sequence,))
        est_files = files_root / "erp_est"
        for rel, content in self.est.files.items():
            path = est_files / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        counts["files"] = len(self.est.files)
        return counts


def copy_rows(cur, table: str, collist: str, rows: list[tuple]) -> None:
    """COPY rows (None = NULL; dates, numbers, booleans and bytes as PostgreSQL reads them)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(["\\x" + v.hex() if isinstance(v, bytes) else v for v in row])
    buf.seek(0)
    cur.copy_expert(f"COPY {table} ({collist}) FROM STDIN WITH (FORMAT csv)", buf)


def seed(seed: int = 42, dossiers: int = 2000, reference_date: dt.date = dt.date(2026, 8, 15),
         defect_rate: float = 0.08, main_dsn: str | None = None, est_dsn: str | None = None,
         files_root: Path | None = None) -> dict[str, int]:
    gen = Generator(seed, dossiers, reference_date, defect_rate).generate()
    return gen.load(main_dsn or settings.dsn("erp_main"), est_dsn or settings.dsn("erp_est"),
                    files_root or settings.ERP_FILES_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.erp.generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--reference-date", type=dt.date.fromisoformat, default=dt.date(2026, 8, 15),
                        help="the day the dossiers are typed (sessions start the following September)")
    parser.add_argument("--defect-rate", type=float, default=0.08)
    args = parser.parse_args(argv)
    if args.dossiers < 1:
        parser.error("--dossiers must be at least 1")
    t0 = time.perf_counter()
    counts = seed(args.seed, args.dossiers, args.reference_date, args.defect_rate)
    elapsed = time.perf_counter() - t0
    print(f"seeded {args.dossiers} dossiers (seed {args.seed}) in {elapsed:.1f} s: "
          + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Unit tests per rule family on small hand-made DataFrames (plain-pandas engine and the
Great Expectations suites give the same failures)."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from cfa_opco.erp import identifiers as ids
from cfa_opco.quality import rules as R

START = dt.date(2026, 9, 1)


def clean(**over) -> dict:
    siret = ids.siret_from(ids.siren_from("73282932"), "0007")
    row = {
        "source_id": "erp_main", "numero_interne": "D-1", "nature": "CONTRAT", "statut": "ACTIF",
        "site_code": "LYON", "etablissement_ref": "etab:1", "entreprise_ref": "ent:1", "apprenant_ref": "app:1",
        "session_ref": "ses:1", "maitre1_ref": "m:1",
        "employeur_siret": siret, "employeur_denomination": "Boulangerie Martin", "employeur_naf": "10.71C",
        "employeur_idcc": "0843", "employeur_type": 11, "employeur_specifique": 0,
        "employeur_adresse_code_postal": "69003",
        "apprenti_nom": "MARTIN", "apprenti_prenom": "Léa", "apprenti_sexe": "F",
        "apprenti_date_naissance": dt.date(2009, 3, 14), "apprenti_departement_naissance": "69",
        "apprenti_nir": ids.nir_from("F", 2009, 3, "69", "123", 44), "apprenti_nationalite": 1,
        "apprenti_regime_social": 2, "apprenti_handicap": False, "apprenti_sportif_haut_niveau": False,
        "apprenti_projet_creation": False, "representant_nom": "MARTIN",
        "maitre1_nom": "DURAND", "maitre1_prenom": "Paul", "maitre1_date_naissance": dt.date(1975, 1, 1),
        "contrat_type": 11, "contrat_derogation": None, "contrat_date_conclusion": dt.date(2026, 8, 20),
        "contrat_date_debut": START, "contrat_date_fin": dt.date(2028, 7, 31),
        "contrat_hebdo_heures": 35, "contrat_hebdo_minutes": 0, "contrat_salaire_embauche": 1000.0,
        "remu1_taux": 43.0, "remu1_base": "SMIC", "remu1_date_debut": START,
        "remu2_taux": 51.0, "remu2_base": "SMIC", "remu2_date_debut": dt.date(2027, 9, 1),
        "formation_rncp": "RNCP37125", "formation_cfd": "50022135", "formation_intitule": "CAP Boulanger",
        "formation_date_debut": dt.date(2026, 9, 7), "formation_date_fin": dt.date(2028, 6, 30),
        "formation_duree_heures": 840, "cfa_siret": "77567227200017", "cfa_uai": "0693456G",
        "cfa_denomination": "CFA Lyon",
    }
    row.update(over)
    return row


def codes(*rows, overrides=None) -> set[tuple[str, str]]:
    an = R.evaluate(pd.DataFrame(list(rows)), overrides)
    return set(zip(an["numero_interne"], an["rule_code"]))


def errors_of(**over) -> set[str]:
    an = R.evaluate(pd.DataFrame([clean(**over)]))
    return set(an.loc[an["severity"] == "error", "rule_code"])


def test_clean_dossier_passes():
    assert codes(clean()) == set()


# -- identifiers ---------------------------------------------------------------------------
def test_siret_luhn_and_format():
    good = clean()["employeur_siret"]
    assert errors_of(employeur_siret=ids.with_wrong_luhn_key(good)) == {"EMPLOYEUR_SIRET_CLE"}
    assert errors_of(employeur_siret=good[:13]) == {"EMPLOYEUR_SIRET_FORMAT"}
    assert errors_of(employeur_siret="7328293200A07") == {"EMPLOYEUR_SIRET_FORMAT"}
    assert errors_of(employeur_siret=f"{good[:3]} {good[3:6]} {good[6:9]} {good[9:]}") == set()  # spaces typed
    assert errors_of(employeur_siret=None) == {"CHAMP_OBLIGATOIRE"}


def test_siret_la_poste_digit_sum():
    la_poste = ids.siret_from(ids.LA_POSTE_SIREN, "0456")
    assert sum(map(int, la_poste)) % 5 == 0
    assert errors_of(employeur_siret=la_poste) == set()
    bad = la_poste[:-1] + str((int(la_poste[-1]) + 1) % 10)
    assert errors_of(employeur_siret=bad) == {"EMPLOYEUR_SIRET_CLE"}


def test_cfa_siret_and_uai():
    assert errors_of(cfa_siret="77567227200018") == {"CFA_SIRET_CLE"}
    assert errors_of(cfa_uai=ids.uai_from("0691983")) == set()
    assert errors_of(cfa_uai="0693456H") == {"CFA_UAI_CLE"}
    assert errors_of(cfa_uai="069345G") == {"CFA_UAI_FORMAT"}
    msg = R.evaluate(pd.DataFrame([clean(cfa_uai="0693456H")]))["message"].iloc[0]
    assert "0693456G" in msg


def test_nir_rules_incl_corsica_and_abroad():
    assert errors_of(apprenti_nir=None) == {"APPRENTI_NIR_MANQUANT"}
    corse = ids.nir_from("F", 2009, 3, "2A", "004", 12)
    assert corse[5:7] == "2A"
    assert errors_of(apprenti_nir=corse, apprenti_departement_naissance="2A") == set()
    assert errors_of(apprenti_nir=ids.nir_from("F", 2009, 3, "2B", "033", 12),
                     apprenti_departement_naissance="2B") == set()
    assert errors_of(apprenti_nir=corse, apprenti_departement_naissance="2B") == {"APPRENTI_NIR_DEPARTEMENT"}
    abroad = ids.nir_from("F", 2009, 3, "99", "352", 7)
    assert errors_of(apprenti_nir=abroad, apprenti_departement_naissance="99") == set()
    assert errors_of(apprenti_nir=abroad) == {"APPRENTI_NIR_DEPARTEMENT"}
    good = clean()["apprenti_nir"]
    assert errors_of(apprenti_nir=good[:13] + f"{(int(good[13:]) % 97) + 1:02d}") == {"APPRENTI_NIR_CLE"}
    assert errors_of(apprenti_nir=ids.nir_from("M", 2009, 3, "69", "123", 44)) == {"APPRENTI_NIR_SEXE"}
    assert errors_of(apprenti_nir=ids.nir_from("F", 2007, 3, "69", "123", 44)) == {"APPRENTI_NIR_NAISSANCE"}
    assert errors_of(apprenti_nir=ids.nir_from("F", 2009, 4, "69", "123", 44)) == {"APPRENTI_NIR_NAISSANCE"}
    # special month codes (20-42, 50+) are accepted
    assert errors_of(apprenti_nir=ids.nir_from("F", 2009, 31, "69", "123", 44)) == set()
    assert errors_of(apprenti_nir="2080369") == {"APPRENTI_NIR_FORMAT"}
    an = R.evaluate(pd.DataFrame([clean(apprenti_nir=ids.nir_from("F", 2007, 3, "69", "123", 44))]))
    assert an["valeur"].iloc[0].startswith("2 07 03 ** *** *** ")
    assert "03/2009" in an["message"].iloc[0] and "14/03/2009" not in an["message"].iloc[0]


def test_idcc_naf_rncp():
    assert errors_of(employeur_idcc="0001") == {"EMPLOYEUR_IDCC_INCONNU"}
    assert errors_of(employeur_idcc="843") == set()         # typed without the leading zero
    assert errors_of(employeur_idcc="9999") == {"EMPLOYEUR_IDCC_SANS_OPCO"}
    assert errors_of(employeur_naf="1071C") == set()         # without the dot (erp_est)
    assert errors_of(employeur_naf="10.7C") == {"EMPLOYEUR_NAF_FORMAT"}
    assert errors_of(formation_rncp="RNCP99999") == {"FORMATION_RNCP_INACTIF"}
    assert errors_of(formation_rncp="37125") == {"FORMATION_RNCP_FORMAT"}
    assert errors_of(formation_cfd="50022136") == {"FORMATION_RNCP_CFD"}
    assert errors_of(formation_cfd="5002213") == {"FORMATION_CFD_FORMAT"}


# -- people --------------------------------------------------------------------------------
def _born(years: int, days: int = 30) -> dt.date:
    return dt.date(START.year - years, START.month, START.day) - dt.timedelta(days=days)


def _nir_for(birth: dt.date) -> str:
    return ids.nir_from("F", birth.year, birth.month, "69", "123", 44)


def test_ages():
    b30 = _born(30)
    assert errors_of(apprenti_date_naissance=b30, apprenti_nir=_nir_for(b30), remu1_taux=100.0, remu2_taux=100.0,
                     contrat_salaire_embauche=2000.0) == {"APPRENTI_AGE_MAX"}
    assert errors_of(apprenti_date_naissance=b30, apprenti_nir=_nir_for(b30), remu1_taux=100.0, remu2_taux=100.0,
                     contrat_salaire_embauche=2000.0, apprenti_handicap=True, contrat_derogation=12) == set()
    b29 = _born(29)   # 29 at start: still allowed
    assert errors_of(apprenti_date_naissance=b29, apprenti_nir=_nir_for(b29), remu1_taux=100.0, remu2_taux=100.0,
                     contrat_salaire_embauche=2000.0) == set()
    b15 = _born(15)
    assert errors_of(apprenti_date_naissance=b15, apprenti_nir=_nir_for(b15)) == {"APPRENTI_AGE_MIN"}
    assert errors_of(apprenti_date_naissance=b15, apprenti_nir=_nir_for(b15), contrat_derogation=11) == set()
    b14 = _born(14)
    assert "APPRENTI_AGE_MIN" in errors_of(apprenti_date_naissance=b14, apprenti_nir=_nir_for(b14),
                                           contrat_derogation=11)
    assert errors_of(contrat_derogation=11) == {"APPRENTI_DEROGATION"}
    assert errors_of(representant_nom=None) == {"APPRENTI_REPRESENTANT_LEGAL"}
    b18 = _born(18)
    assert errors_of(apprenti_date_naissance=b18, apprenti_nir=_nir_for(b18), representant_nom=None,
                     contrat_salaire_embauche=1300.0, remu1_taux=53.0, remu2_taux=61.0) == set()
    assert errors_of(maitre1_date_naissance=_born(17)) == {"MAITRE_AGE_MIN"}


# -- dates and durations -------------------------------------------------------------------
def test_dates_guarded():
    # end before start: only CONTRAT_DATES_ORDRE (not the duration/theory rules)
    assert errors_of(contrat_date_fin=dt.date(2026, 6, 1)) == {"CONTRAT_DATES_ORDRE"}
    assert errors_of(contrat_date_fin=dt.date(2027, 1, 31)) == {"CONTRAT_DUREE_MIN"}
    assert errors_of(contrat_date_fin=dt.date(2027, 2, 28)) == set()          # exactly 6 months
    assert "CONTRAT_DUREE_MAX" in errors_of(contrat_date_fin=dt.date(2031, 3, 1))
    assert errors_of(contrat_date_conclusion=dt.date(2026, 9, 2)) == {"CONTRAT_SIGNATURE_APRES_DEBUT"}
    assert errors_of(formation_date_debut=dt.date(2027, 1, 5)) == {"CONTRAT_FORMATION_DEBUT"}
    assert errors_of(contrat_hebdo_heures=41) == {"CONTRAT_DUREE_HEBDO_MAX"}
    assert errors_of(contrat_date_debut=None) == {"CHAMP_OBLIGATOIRE"}
    assert errors_of(formation_duree_heures=10_000) == {"FORMATION_HEURES_MAX"}
    assert errors_of(formation_date_fin=dt.date(2026, 12, 1)) == {"FORMATION_DUREE", "CONTRAT_FIN_APRES_FORMATION"}  # contract ends > 3 months after


def test_end_more_than_3_months_after_training_blocks_unless_configured_as_warning():
    late = clean(contrat_date_fin=dt.date(2028, 10, 15), formation_duree_heures=900)
    an = R.evaluate(pd.DataFrame([late]))
    assert set(zip(an["rule_code"], an["severity"])) == {("CONTRAT_FIN_APRES_FORMATION", "error")}
    assert "plus de 3 mois après la fin de la formation" in an["message"].iloc[0]
    an = R.evaluate(pd.DataFrame([late]), {"CONTRAT_FIN_APRES_FORMATION": "warning"})
    assert set(zip(an["rule_code"], an["severity"])) == {("CONTRAT_FIN_APRES_FORMATION", "warning")}
    # exactly 3 months after the training: allowed
    ok = clean()
    ok["contrat_date_fin"] = R._add_months(pd.Series([pd.Timestamp(ok["formation_date_fin"])]), 3)[0].date()
    assert ("D-1", "CONTRAT_FIN_APRES_FORMATION") not in codes(ok)


def test_text_lengths_are_checked_with_a_french_message():
    an = R.evaluate(pd.DataFrame([clean(employeur_adresse_voie="r" * 600, apprenti_nom="N" * 51)]))
    got = an[an["rule_code"] == "CHAMP_LONGUEUR"].set_index("field")
    assert got.loc["employeur_adresse_voie", "message"] == "Adresse de l'employeur (voie) : 600 caractères, 38 au plus"
    assert got.loc["employeur_adresse_voie", "record_type"] == "entreprise"
    assert got.loc["apprenti_nom", "message"] == "Nom de naissance de l'apprenti : 51 caractères, 50 au plus"
    assert set(got["severity"]) == {"error"}
    assert codes(clean(employeur_adresse_voie="r" * 38)) == set()


def test_a_nir_or_an_iban_typed_in_a_text_field_is_masked_in_the_anomaly():
    nir = clean()["apprenti_nir"]
    an = R.evaluate(pd.DataFrame([clean(apprenti_adresse_complement="RIB : FR76 3000 6000 0112 3456 7890 189",
                                        employeur_adresse_voie=f"NIR {nir[:1]} {nir[1:3]} {nir[3:5]} {nir[5:7]} "
                                                               f"{nir[7:10]} {nir[10:13]} {nir[13:]} rue X" * 2)]))
    got = an[an["rule_code"] == "CHAMP_LONGUEUR"].set_index("field")
    assert got.loc["apprenti_adresse_complement", "valeur"] == "RIB : FR76 **** **** 189"
    assert got.loc["employeur_adresse_voie", "valeur"].startswith("NIR *** rue X")
    assert "3456" not in " ".join(an["valeur"]) + " ".join(an["message"])


def test_theory_share():
    # 23 months of contract: 25 % of 1,607 h/year = ~770 h
    assert errors_of(formation_duree_heures=760) == {"CONTRAT_THEORIE_MIN"}
    assert errors_of(formation_duree_heures=771) == set()


# -- pay -----------------------------------------------------------------------------------
def test_pay_grid_edges():
    # 18 at start: year 1 >= 43 %, year 2 (19) >= 51 %
    b18 = _born(18)
    base = dict(apprenti_date_naissance=b18, apprenti_nir=_nir_for(b18), representant_nom=None)
    smic = 1823.03   # in force on 2026-09-01 (reference/smic.csv)
    ok_salary = round(0.43 * smic + 0.005, 2)
    assert errors_of(**base, remu1_taux=43.0, contrat_salaire_embauche=ok_salary) == set()
    assert errors_of(**base, remu1_taux=42.0, contrat_salaire_embauche=ok_salary) == {"CONTRAT_REMUNERATION_MIN"}
    assert errors_of(**base, remu1_taux=43.0, remu2_taux=50.0,
                     contrat_salaire_embauche=ok_salary) == {"CONTRAT_REMUNERATION_MIN"}
    assert errors_of(**base, remu1_taux=43.0, contrat_salaire_embauche=ok_salary - 5) == {"CONTRAT_SALAIRE_EMBAUCHE"}
    # 39 h a week: pro rata
    assert errors_of(**base, remu1_taux=43.0, contrat_hebdo_heures=39,
                     contrat_salaire_embauche=ok_salary) == {"CONTRAT_SALAIRE_EMBAUCHE"}
    # 21+: base is the SMC when higher than the SMIC
    b22 = _born(22)
    adult = dict(apprenti_date_naissance=b22, apprenti_nir=_nir_for(b22), representant_nom=None,
                 remu2_taux=61.0, contrat_salaire_embauche=1500.0)
    assert errors_of(**adult, remu1_taux=53.0) == set()
    assert errors_of(**adult, remu1_taux=53.0, contrat_smc=2200.0) == {"CONTRAT_REMUNERATION_MIN"}
    assert errors_of(**{**adult, "remu2_taux": 74.0}, remu1_taux=64.0, contrat_smc=2200.0) == set()
    # Mayotte has its own SMIC
    assert errors_of(**base, remu1_taux=43.0, contrat_salaire_embauche=round(0.43 * 1415.05 + 0.005, 2),
                     employeur_adresse_code_postal="97600") == set()


# -- amendments ----------------------------------------------------------------------------
def test_avenant_rules():
    av = dict(nature="AVENANT", numero_interne="D-1-A1", contrat_type=33,
              contrat_date_effet_avenant=dt.date(2027, 1, 10), base_numero_interne="D-1")
    assert errors_of(**av) == set()
    assert errors_of(**{**av, "base_numero_interne": None}) == {"AVENANT_CONTRAT_PRECEDENT"}
    assert errors_of(**{**av, "base_numero_interne": None, "contrat_numero_precedent": "069202612000123"}) == set()
    assert errors_of(**{**av, "contrat_date_effet_avenant": None}) == {"AVENANT_DATE_EFFET"}
    assert errors_of(**{**av, "contrat_date_effet_avenant": dt.date(2029, 1, 1)}) == {"AVENANT_DATE_EFFET"}
    assert errors_of(**{**av, "contrat_type": 11}) == {"CONTRAT_TYPE_INVALIDE"}


# -- deduplication and mapping back ---------------------------------------------------------
def test_company_checked_once_mapped_to_all_its_dossiers():
    bad = ids.with_wrong_luhn_key(clean()["employeur_siret"])
    rows = [clean(numero_interne=f"D-{i}", apprenant_ref=f"app:{i}", employeur_siret=bad) for i in range(5)]
    rows.append(clean(numero_interne="D-9", entreprise_ref="ent:2"))
    an = R.evaluate(pd.DataFrame(rows))
    assert set(an["numero_interne"]) == {f"D-{i}" for i in range(5)}
    assert an["record_ref"].unique().tolist() == ["ent:1"] and an["message"].nunique() == 1


def test_cancelled_dossier_and_unparseable_values_do_not_crash():
    an = R.evaluate(pd.DataFrame([clean(contrat_date_debut="31/02/2026", contrat_hebdo_heures="abc",
                                        apprenti_sexe="X")]))
    assert {"CHAMP_OBLIGATOIRE", "APPRENTI_CODE_INVALIDE"} <= set(an["rule_code"])


def test_severity_overrides():
    assert R.severities()["CONTRAT_FIN_APRES_FORMATION"] == "error"
    assert R.severities({"CONTRAT_FIN_APRES_FORMATION": "warning"})["CONTRAT_FIN_APRES_FORMATION"] == "warning"
    assert R.severities({"CONTRAT_DUREE_MIN": "warning"})["CONTRAT_DUREE_MIN"] == "warning"
    assert codes(clean(contrat_date_fin=dt.date(2027, 1, 31)), overrides={"CONTRAT_DUREE_MIN": "off"}) == set()
    with pytest.raises(ValueError):
        R.severities({"CONTRAT_DUREE_MIN": "fatal"})


def test_catalogue_covers_every_rule():
    from cfa_opco.quality.reference import catalogue

    cat = catalogue()
    assert set(R.RULE_CODES) <= set(cat)
    seeded = {c for c, spec in cat.items() if spec.get("seeded")}
    assert len(seeded) == 13 and seeded <= set(R.RULE_CODES)


def test_gx_suites_agree_with_pandas():
    import numpy as np

    from cfa_opco.quality.expectations import GxRunner

    bad_siret = ids.with_wrong_luhn_key(clean()["employeur_siret"])
    rows = [clean(), clean(numero_interne="D-2", entreprise_ref="ent:2", employeur_siret=bad_siret),
            clean(numero_interne="D-3", apprenant_ref="app:3", apprenti_nir=None),
            clean(numero_interne="D-4", contrat_date_fin=dt.date(2026, 6, 1)),
            clean(numero_interne="D-5", session_ref="ses:5", formation_duree_heures=12000)]
    sev = R.severities()
    batch = R.prepare_batch(pd.DataFrame(rows))
    rules = R.active_rules(sev)
    pandas_fail = R.failing_positions(batch, rules)
    gx_fail, stats = GxRunner().validate(batch, rules, sev)
    assert set(stats) == set(R.DOMAINS)
    for rid, pos in pandas_fail.items():
        assert np.array_equal(np.sort(pos), np.sort(gx_fail[rid])), rid
    an = R.build_anomalies(batch, gx_fail, sev)
    assert set(zip(an["numero_interne"], an["rule_code"])) == {
        ("D-2", "EMPLOYEUR_SIRET_CLE"), ("D-3", "APPRENTI_NIR_MANQUANT"), ("D-4", "CONTRAT_DATES_ORDRE"),
        ("D-5", "FORMATION_HEURES_MAX")}


def test_decide_verdicts():
    from cfa_opco.quality.gate import decide

    bad = ids.with_wrong_luhn_key(clean()["employeur_siret"])
    rows = [clean(numero_interne="OK"), clean(numero_interne="BAD", entreprise_ref="ent:2", employeur_siret=bad),
            clean(numero_interne="FORCED", entreprise_ref="ent:2", employeur_siret=bad),
            clean(numero_interne="CANCEL", entreprise_ref="ent:2", employeur_siret=bad, statut="ANNULE"),
            clean(numero_interne="WARN", contrat_date_fin=dt.date(2028, 10, 15), formation_duree_heures=900)]
    df = pd.DataFrame(rows).assign(content_hash="h")
    an = R.evaluate(df, {"CONTRAT_FIN_APRES_FORMATION": "warning"})
    forces = pd.DataFrame([{"source_id": "erp_main", "numero_interne": "FORCED", "force_id": 7}])
    v = decide(df, an, forces).set_index("numero_interne")
    assert v["verdict"].to_dict() == {"OK": "TRANSMIT", "BAD": "QUARANTINE", "FORCED": "FORCED",
                                      "CANCEL": "TRANSMIT", "WARN": "TRANSMIT"}
    assert v.loc["WARN", "warnings"] == 1 and v.loc["CANCEL", "warnings"] == 1
    assert v.loc["BAD", "rule_codes"] == ["EMPLOYEUR_SIRET_CLE"]


def test_empty_batch():
    from cfa_opco.quality.gate import check_batch

    empty = pd.DataFrame(columns=list(clean()))
    for engine in ("pandas", "gx"):
        assert len(check_batch(empty, engine=engine)["anomalies"]) == 0


def test_reports_of_an_empty_run(tmp_path):
    from cfa_opco.quality.gate import decide
    from cfa_opco.quality.reports import write_run_reports

    empty = pd.DataFrame(columns=list(clean()) + ["content_hash"])
    an = R.evaluate(empty)
    index = write_run_reports(None, "empty", tmp_path / "empty", anomalies=an, verdicts=decide(empty, an))
    assert index.exists() and (tmp_path / "empty" / "a_corriger.xlsx").exists()

"""The gate against the generator's ground truth: recall and precision of 100 %."""
from __future__ import annotations

from collections import Counter

import psycopg2
import pytest

from cfa_opco.extraction import extract
from cfa_opco.quality.gate import (dossier_history, force_dossiers, quarantined_numeros, run_quality_gate,
                                   transmittable_numeros)
from tests.helpers import rows


def _truth(erp_dsn):
    return set(rows(erp_dsn, "SELECT source_id, numero_interne, rule_code FROM seed_ground_truth"))


@pytest.fixture()
def gated(seeded_erp, sources, connector_dsn, tmp_path):
    extract("run-1", sources, connector_dsn)
    summary = run_quality_gate("run-1", connector_dsn, reports_dir=tmp_path / "reports")
    return summary, connector_dsn, tmp_path / "reports"


def test_recall_and_precision_against_ground_truth(seeded_erp, gated):
    summary, dsn, _ = gated
    truth = _truth(seeded_erp["erp_main"])
    errors = set(rows(dsn, "SELECT DISTINCT source_id, numero_interne, rule_code FROM quality_anomaly "
                            "WHERE run_id = 'run-1' AND severity = 'error'"))
    missed = truth - errors
    assert not missed, f"{len(missed)} seeded defects not found by their rule: {sorted(missed)[:10]}"
    defective = {(s, n) for s, n, _ in truth}
    quarantined = set(quarantined_numeros(dsn, "run-1"))
    assert quarantined == defective, (f"clean dossiers quarantined: {sorted(quarantined - defective)[:10]}; "
                                      f"defective not quarantined: {sorted(defective - quarantined)[:10]}")
    # each defective dossier is reported by its expected rule only (no overlapping rule)
    extra = errors - truth
    assert not extra, f"unexpected errors on defective dossiers: {sorted(extra)[:10]}"
    assert summary["checked"] == 2000
    assert summary["quarantined"] == len(defective)
    assert summary["passed"] == 2000 - len(defective)
    assert set(summary["by_rule"]) >= {c for _, _, c in truth}
    sendable = set(transmittable_numeros(dsn, "run-1"))
    assert len(sendable) == summary["passed"] and not (sendable & quarantined)


def test_faulty_company_is_one_root_cause(gated):
    _, dsn, _ = gated
    found = rows(dsn, """SELECT record_ref, count(DISTINCT numero_interne), count(DISTINCT message)
                         FROM quality_anomaly WHERE run_id = 'run-1' AND rule_code = 'EMPLOYEUR_SIRET_CLE'
                         GROUP BY record_ref""")
    assert found and any(n > 1 for _, n, _ in found)   # one company, several dossiers
    assert all(m == 1 for _, _, m in found)             # reported once (same message)


def test_messages_mask_personal_data(gated):
    _, dsn, _ = gated
    found = rows(dsn, "SELECT valeur, message FROM quality_anomaly WHERE rule_code = 'APPRENTI_NIR_NAISSANCE'")
    assert found
    import re
    for valeur, message in found:
        assert re.fullmatch(r"[12] \d\d \d\d \*\* \*\*\* \*\*\* \d\d", valeur)
        assert not re.search(r"\d{13}", message)
        assert re.search(r"naissance \d\d/\d{4} ", message)   # month/year only
    siret = rows(dsn, "SELECT message FROM quality_anomaly WHERE rule_code = 'EMPLOYEUR_SIRET_CLE' LIMIT 1")[0][0]
    assert re.fullmatch(r"Le SIRET de l'employeur \d{3} \d{3} \d{3} \d{5} a une clé de contrôle invalide", siret)


def test_reports_written(gated):
    summary, _, reports = gated
    index = reports / "index.html"
    assert summary["report_index"] == str(index) and index.exists()
    for name in ("rapport.html", "a_corriger.xlsx", "a_corriger.csv", "anomalies.csv", "data_docs/index.html"):
        assert (reports / name).exists(), name
    assert list((reports / "sites").glob("*.html"))
    page = (reports / "rapport.html").read_text(encoding="utf-8")
    assert "<svg" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    import openpyxl
    ws = openpyxl.load_workbook(reports / "a_corriger.xlsx", read_only=True)["À corriger"]
    lines = list(ws.iter_rows(min_row=2, values_only=True))
    assert lines and [r[0] for r in lines if r[6] == "error"] == sorted([r[0] for r in lines if r[6] == "error"],
                                                                        reverse=True)


def test_force_fix_and_history(seeded_erp, sources, gated):
    summary, dsn, reports = gated
    (src, numero), *_ = quarantined_numeros(dsn, "run-1")
    res = force_dossiers(dsn, [{"numero_interne": numero, "reason": "Validé par l'OPCO au téléphone",
                                "by": "qualite@cfa"}], run_id="run-1")
    assert res[0]["status"] == "forced" and res[0]["updated_verdict"]
    assert (src, numero) in set(transmittable_numeros(dsn, "run-1"))
    assert rows(dsn, "SELECT verdict FROM quality_verdict WHERE run_id='run-1' AND numero_interne=%s",
                 numero) == [("FORCED",)]
    # refused without a reason
    assert force_dossiers(dsn, [{"numero_interne": numero, "reason": " ", "by": "x"}])[0]["status"] == "refused"
    # next run: the never-transmitted dossiers are re-staged; the force still holds for the
    # same content, the others stay in quarantine
    extract("run-2", sources, dsn)
    s2 = run_quality_gate("run-2", dsn, reports_dir=reports.parent / "r2")
    assert s2["forced"] == 1 and s2["quarantined"] == summary["quarantined"] - 1
    hist = dossier_history(dsn, numero, src)
    assert [h["verdict"] for h in hist] == ["FORCED", "FORCED"] and hist[0]["reason"]


def test_fixed_in_erp_passes_next_run(seeded_erp, sources, connector_dsn, tmp_path):
    extract("r1", sources, connector_dsn)
    run_quality_gate("r1", connector_dsn, reports_dir=tmp_path / "a", data_docs=False)
    bad = rows(connector_dsn, """SELECT a.numero_interne, s.session_ref FROM quality_anomaly a
                                  JOIN staged_dossier s USING (run_id, source_id, numero_interne)
                                  WHERE a.run_id = 'r1' AND a.rule_code = 'FORMATION_HEURES_MAX'
                                    AND a.source_id = 'erp_main' LIMIT 1""")
    numero, session_ref = bad[0]
    sid = int(session_ref.split(":")[1])
    conn = psycopg2.connect(seeded_erp["erp_main"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT duree_heures FROM session_formation WHERE id = %s", (sid,))
            old = cur.fetchone()[0]
            cur.execute("UPDATE session_formation SET duree_heures = 1200 WHERE id = %s", (sid,))
        extract("r2", sources, connector_dsn)
        run_quality_gate("r2", connector_dsn, reports_dir=tmp_path / "b", data_docs=False)
        assert rows(connector_dsn, "SELECT verdict FROM quality_verdict WHERE run_id='r2' AND numero_interne=%s",
                     numero) == [("TRANSMIT",)]
        assert ("erp_main", numero) not in {(r[1], r[2]) for r in
                                            rows(connector_dsn, "SELECT * FROM quarantine_current")}
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE session_formation SET duree_heures = %s WHERE id = %s", (old, sid))
        conn.close()


def test_severity_override_downgrades_to_warning(sources, connector_dsn, tmp_path):
    extract("r1", sources, connector_dsn)
    s = run_quality_gate("r1", connector_dsn, reports_dir=tmp_path, engine="pandas", write_reports=False,
                         severity_overrides={"CONTRAT_DUREE_MIN": "warning", "FORMATION_HEURES_MAX": "off"})
    assert s["by_rule"]["CONTRAT_DUREE_MIN"]["severity"] == "warning"
    assert "FORMATION_HEURES_MAX" not in s["by_rule"]
    with pytest.raises(ValueError):
        run_quality_gate("r1", connector_dsn, severity_overrides={"NOPE": "error"}, write_reports=False)


# -- data as real ERPs hold it (issue 10, point 7) ----------------------------------------
# seeded kind -> (rule code, what the French message must say)
DATA_SHAPE = {
    "DATE_IMPOSSIBLE": ("EXTRACTION_VALEUR_ILLISIBLE",
                        r"^Date de signature du contrat : « 3[01]/\d\d/\d{4} » est une date impossible "
                        r"\(ce jour n'existe pas en \d\d/\d{4}\)$"),
    "TYPE_INVALIDE": ("EXTRACTION_VALEUR_ILLISIBLE",
                      r"^Durée de la formation \(heures\) : « [^»]+ » n'est pas un nombre entier$"),
    "ENCODAGE": ("EXTRACTION_VALEUR_ILLISIBLE",
                 r"^Commune de naissance de l'apprenti : « [^»]*Ã[^»]* » contient des caractères mal encodés"),
    "CHAMP_LONGUEUR": ("CHAMP_LONGUEUR", r"^Adresse de l'employeur \(voie\) : \d{2,3} caractères, 38 au plus$"),
    "EMPLOYEUR_SIRET_FORMAT": ("EMPLOYEUR_SIRET_FORMAT",
                               r"^Le SIRET de l'employeur « \d+E\+13 » doit compter 14 chiffres$"),
    "CONTRAT_FIN_APRES_FORMATION": ("CONTRAT_FIN_APRES_FORMATION",
                                    r"^Le contrat finit le \d\d/\d\d/\d{4}, plus de 3 mois après la fin de la "
                                    r"formation \(\d\d/\d\d/\d{4}\)$"),
    "CONTRAT_DUREE_HEBDO_MAX": ("CONTRAT_DUREE_HEBDO_MAX", r"dépasse 40 heures$"),
    "CONTRAT_SIGNATURE_APRES_DEBUT": ("CONTRAT_SIGNATURE_APRES_DEBUT", r"^Le contrat initial est signé le "),
}


@pytest.mark.parametrize("kind", sorted(DATA_SHAPE))
def test_each_data_shape_defect_is_quarantined_with_its_message(seeded_erp, gated, kind):
    """Every seeded dossier of the kind is quarantined by its rule, with a message saying
    what was found and what is expected; its source was extracted whole."""
    import re

    summary, dsn, _ = gated
    code, pattern = DATA_SHAPE[kind]
    seeded = set(rows(seeded_erp["erp_main"], "SELECT source_id, numero_interne FROM seed_ground_truth "
                                              "WHERE rule_code = %s AND coalesce(detail, rule_code) = %s",
                      code, kind))
    assert seeded, f"seed 42 has no {kind} dossier"
    found = rows(dsn, """SELECT a.source_id, a.numero_interne, a.message, v.verdict FROM quality_anomaly a
                         JOIN quality_verdict v USING (run_id, source_id, numero_interne)
                         WHERE a.run_id = 'run-1' AND a.rule_code = %s AND a.severity = 'error'""", code)
    by_dossier = {(s, n): (m, v) for s, n, m, v in found}
    for key in seeded:
        message, verdict = by_dossier[key]
        assert verdict == "QUARANTINE", key
        assert re.search(pattern, message), message
    # the other rows of the source were extracted: nothing failed, every dossier checked
    assert summary["checked"] == 2000
    sources_of_kind = {s for s, _ in seeded}
    staged = dict(rows(dsn, "SELECT source_id, count(*) FROM staged_dossier WHERE run_id = 'run-1' GROUP BY 1"))
    for source in sources_of_kind:
        assert staged[source] > len(seeded)


def test_unreadable_values_are_counted_in_the_extraction_summary(seeded_erp, sources, connector_dsn):
    summary = extract("run-issues", sources, connector_dsn)
    unreadable = rows(seeded_erp["erp_main"], "SELECT count(*) FROM seed_ground_truth "
                                              "WHERE rule_code = 'EXTRACTION_VALEUR_ILLISIBLE'")[0][0]
    assert summary["failed_sources"] == [] and summary["extracted"] == 2000
    assert summary["rows_with_issues"] == unreadable > 0
    assert summary["by_source"]["erp_est"]["rows_with_issues"] == unreadable - summary["by_source"]["erp_main"][
        "rows_with_issues"]
    # the value is NULL in the batch, and the missing-field rule does not report it a second time
    run_quality_gate("run-issues", connector_dsn, write_reports=False, engine="pandas")
    assert rows(connector_dsn, """SELECT count(*) FROM quality_anomaly a JOIN extraction_issue i
                                  USING (run_id, source_id, numero_interne, field)
                                  WHERE a.run_id = 'run-issues' AND a.rule_code = 'CHAMP_OBLIGATOIRE'""") == [(0,)]


def test_identifiers_typed_with_spaces_and_dots_are_checked_and_sent_normalised(seeded_erp, gated):
    """SIRET with spaces/NBSP/dots, NIR with spaces and a trailing blank, IDCC with outer
    blanks: normalised at extraction, so the gate passes them and the payload carries
    exactly the compact value."""
    from cfa_opco.dossier.payload import build_payload
    from cfa_opco.db.connect import connection
    from cfa_opco.dossier.model import COLUMN_NAMES

    _, dsn, _ = gated
    typed = rows(seeded_erp["erp_main"], "SELECT field, normalised, typed FROM seed_formatted_identifier")
    assert {f for f, _, _ in typed} == {"employeur_siret", "apprenti_nir"}
    assert any("\u00a0" in t or "\u202f" in t for f, _, t in typed if f == "employeur_siret")
    used = Counter()
    for field, normalised, typed_value in typed:
        assert typed_value != normalised
        found = rows(dsn, f"""SELECT s.{field}, v.verdict, s.employeur_idcc FROM staged_dossier s
                              JOIN quality_verdict v USING (run_id, source_id, numero_interne)
                              WHERE s.run_id = 'run-1' AND s.source_id = 'erp_main' AND s.{field} = %s""",
                     normalised)
        used[field] += bool(found)   # (a company may have been created and never given a contract)
        assert {v for _, v, _ in found} <= {"TRANSMIT", "QUARANTINE"}
        assert all(idcc == idcc.strip() for _, _, idcc in found)
        assert not rows(dsn, f"SELECT 1 FROM quality_anomaly a JOIN staged_dossier s USING (run_id, source_id, "
                             f"numero_interne) WHERE a.run_id = 'run-1' AND a.field = %s AND s.{field} = %s "
                             f"AND a.rule_code LIKE '%%FORMAT'", field, normalised)
    assert used["employeur_siret"] > 5 and used["apprenti_nir"] > 20, used
    # the payload of such a dossier carries the compact SIRET
    siret = next(n for f, n, _ in typed if f == "employeur_siret")
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMN_NAMES)} FROM staged_dossier WHERE run_id = 'run-1' "
                    "AND employeur_siret = %s LIMIT 1", (siret,))
        row = dict(zip(COLUMN_NAMES, cur.fetchone()))
    assert build_payload(row)["employeur"]["siret"] == siret
    assert build_payload(dict(row, employeur_siret=" " + siret[:3] + "\u00a0" + siret[3:] + "."))[
        "employeur"]["siret"] == siret

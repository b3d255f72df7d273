"""Extraction by state on a real PostgreSQL: the batch is what differs from the last
transmission, frozen per run, and one broken source does not hold back the others."""
from __future__ import annotations

import dataclasses


from cfa_opco.db.connect import connection
from cfa_opco.dossier.model import COLUMN_NAMES
from cfa_opco.extraction import extract


def _scalar(dsn, sql, args=None):
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def test_first_run_stages_every_dossier_of_both_sources(sources, connector_dsn, seeded_erp):
    summary = extract("run-1", sources, connector_dsn)
    assert summary["extracted"] == summary["read"] == 2000
    assert summary["new"] == 2000 and summary["changed"] == 0 and summary["failed_sources"] == []
    assert summary["by_source"]["erp_main"]["read"] > summary["by_source"]["erp_est"]["read"] > 0
    assert _scalar(connector_dsn, "SELECT count(*) FROM staged_dossier WHERE run_id = 'run-1'") == 2000
    # both vendors land in the same canonical shape: dates parsed, SIRET spaces removed
    assert _scalar(connector_dsn, """SELECT count(*) FROM staged_dossier WHERE source_id = 'erp_est'
                                     AND (employeur_siret ~ '\\s' OR contrat_date_debut IS NULL)""") == 0
    assert _scalar(connector_dsn, "SELECT count(DISTINCT left(cfa_siret, 9)) FROM staged_dossier") == 3


def test_rerun_of_the_same_run_reuses_its_frozen_batch(sources, connector_dsn):
    first = extract("run-1", sources, connector_dsn)
    again = extract("run-1", sources, connector_dsn)
    assert again["reused"] is True and again["extracted"] == first["extracted"]
    redone = extract("run-1", sources, connector_dsn, reextract=True)
    assert redone["reused"] is False and redone["extracted"] == first["extracted"]
    assert _scalar(connector_dsn, "SELECT count(*) FROM staged_dossier WHERE run_id = 'run-1'") == 2000


def test_next_run_takes_only_new_or_changed_dossiers(sources, connector_dsn, seeded_erp):
    extract("run-1", sources, connector_dsn)
    # transmission marks what it sent (here: everything but ten dossiers)
    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("""UPDATE dossier_registry r SET transmitted_hash = s.content_hash, transmitted_at = now()
                       FROM staged_dossier s WHERE s.run_id = 'run-1' AND s.source_id = r.source_id
                       AND s.numero_interne = r.numero_interne
                       AND s.numero_interne NOT IN (SELECT numero_interne FROM staged_dossier
                                                    WHERE run_id = 'run-1' ORDER BY 1 LIMIT 10)""")
    assert extract("run-2", sources, connector_dsn)["extracted"] == 10
    # a real change in the ERP (the employer moved) → that company's dossiers come back as CHANGED;
    # touching a row without changing it (modifie_le) resends nothing
    with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
        cur.execute("UPDATE entreprise SET modifie_le = now() WHERE id IN (SELECT id FROM entreprise LIMIT 50)")
        cur.execute("""UPDATE entreprise SET adresse_voie = 'rue Garibaldi' WHERE id =
                       (SELECT entreprise_id FROM contrat ORDER BY numero_interne DESC LIMIT 1)
                       RETURNING (SELECT count(*) FROM contrat c WHERE c.entreprise_id = entreprise.id)""")
        n_company = cur.fetchone()[0]
    try:
        summary = extract("run-3", sources, connector_dsn)
        assert summary["changed"] >= n_company and summary["new"] == 10
        assert summary["changed"] <= n_company + 1   # (+ its avenant when it has one)
    finally:
        with connection(seeded_erp["erp_main"]) as conn, conn.cursor() as cur:
            cur.execute("""UPDATE entreprise SET adresse_voie = 'x' WHERE adresse_voie = 'rue Garibaldi'""")


def test_a_broken_source_is_reported_and_the_others_go_on(sources, connector_dsn):
    broken = dataclasses.replace(sources[1], target="postgresql://postgres@127.0.0.1:1/nowhere")
    summary = extract("run-x", [sources[0], broken], connector_dsn)
    assert summary["failed_sources"] == [broken.id]
    assert "OperationalError" in summary["by_source"][broken.id]["error"]
    assert summary["extracted"] == summary["by_source"][sources[0].id]["read"] > 0


def test_a_mapping_without_the_canonical_columns_is_named(sources, connector_dsn):
    wrong = dataclasses.replace(sources[0], dossiers_sql="SELECT numero_interne FROM contrat")
    summary = extract("run-y", [wrong], connector_dsn)
    error = summary["by_source"][wrong.id]["error"]
    assert error.startswith("MappingError") and "employeur_siret" in error


def test_duplicate_numeros_are_kept_out_and_named(sources, connector_dsn):
    cols = ", ".join(COLUMN_NAMES)
    dup_sql = (f"SELECT {cols} FROM ({sources[0].dossiers_sql}) m UNION ALL "
               f"SELECT {cols} FROM ({sources[0].dossiers_sql}) m2 WHERE m2.numero_interne = "
               f"(SELECT min(numero_interne) FROM contrat)")
    summary = extract("run-z", [dataclasses.replace(sources[0], dossiers_sql=dup_sql)], connector_dsn)
    by = summary["by_source"][sources[0].id]
    assert by["duplicates_count"] == 1 and by["read"] == summary["extracted"] + 2


# -- one bad row never stops the others (issue 10, point 7) -------------------------------
def test_an_impossible_date_quarantines_its_row_not_the_source(sources, connector_dsn, seeded_erp):
    """31 February in the contract start of one erp_est row: before, to_date() in the
    mapping failed the whole query; now that row is staged with an issue and the rest of
    the source is extracted."""
    with connection(seeded_erp["erp_est"]) as conn, conn.cursor() as cur:
        cur.execute("""SELECT "CTR_ID", "CTR_REF", "CTR_DDEB" FROM "T_CONTRAT" WHERE "CTR_NATURE" = 'C'
                       ORDER BY "CTR_ID" LIMIT 1""")
        ctr_id, numero, old = cur.fetchone()
        cur.execute("""UPDATE "T_CONTRAT" SET "CTR_DDEB" = '31/02/' || right("CTR_DDEB", 4) WHERE "CTR_ID" = %s""",
                    (ctr_id,))
    try:
        summary = extract("run-date", sources, connector_dsn)
    finally:
        with connection(seeded_erp["erp_est"]) as conn, conn.cursor() as cur:
            cur.execute("""UPDATE "T_CONTRAT" SET "CTR_DDEB" = %s WHERE "CTR_ID" = %s""", (old, ctr_id))
    assert summary["failed_sources"] == [] and summary["extracted"] == 2000
    issues = _rows(connector_dsn, "SELECT field, message FROM extraction_issue WHERE run_id = 'run-date' "
                                  "AND numero_interne = %s", (numero,))
    assert ("contrat_date_debut", f"Date de début du contrat : « 31/02/{old[-4:]} » est une date impossible "
            f"(ce jour n'existe pas en 02/{old[-4:]})") in issues
    assert _scalar(connector_dsn, "SELECT contrat_date_debut IS NULL FROM staged_dossier WHERE run_id = 'run-date' "
                                  "AND numero_interne = %s", (numero,)) is True


def _rows(dsn, sql, args=None):
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_legacy_encoding_wrong_types_and_rows_without_number(database_factory, connector_dsn):
    """An ERP in a SQL_ASCII database holding Latin-1 bytes (a classic of old products),
    a birth date that does not exist, a word in a number column and a row without a
    numero: each is recorded with a French message (birth date masked), the readable rows
    are staged, and nothing fails."""
    import psycopg2

    from cfa_opco.dossier.model import COLUMN_NAMES
    from cfa_opco.sources import Source
    from tests.conftest import _admin_conn

    admin = _admin_conn()
    with admin.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "test_legacy_latin1" WITH (FORCE)')
        cur.execute("CREATE DATABASE test_legacy_latin1 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                    "TEMPLATE template0")
    admin.close()
    dsn = database_factory("test_legacy_probe").rsplit("/", 1)[0] + "/test_legacy_latin1"
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE eleve (num text, nom text, naiss text, heures text)")
        cur.execute(r"""INSERT INTO eleve VALUES ('L-1', 'Martin', '12/03/2005', '1200'),
                                                 ('L-2', E'H\xe9l\xe8ne', '04/07/2006', '900'),
                                                 ('L-3', 'Durand', '31/02/2005', '1 350'),
                                                 ('L-4', 'Petit', '2006-01-09', 'NC'),
                                                 (NULL, 'Sans numero', '01/01/2006', '800')""")
    conn.close()
    given = {"source_id": "'legacy'", "numero_interne": "num", "nature": "'CONTRAT'", "apprenti_nom": "nom",
             "apprenti_date_naissance": "naiss", "formation_duree_heures": "heures"}
    sql = "SELECT " + ", ".join(f"{given.get(c, 'NULL::text')} AS {c}" for c in COLUMN_NAMES) + " FROM eleve"
    summary = extract("run-legacy", [Source("legacy", "unused", sql, target=dsn)], connector_dsn)
    by = summary["by_source"]["legacy"]
    assert summary["failed_sources"] == [] and by["error"] is None
    assert by["read"] == 4 and by["rows_with_issues"] == 3 and by["rejected_rows"] == 1
    issues = dict(((n, f), m) for n, f, m in _rows(
        connector_dsn, "SELECT numero_interne, field, message FROM extraction_issue WHERE run_id = 'run-legacy'"))
    assert issues[("L-2", "apprenti_nom")].startswith(
        "Nom de naissance de l'apprenti : « Hélène » n'est pas du texte UTF-8 valide")
    assert issues[("L-3", "apprenti_date_naissance")] == (
        "Date de naissance de l'apprenti : « **/02/2005 » est une date impossible (ce jour n'existe pas en 02/2005)")
    assert issues[("L-4", "formation_duree_heures")] == "Durée de la formation (heures) : « NC » n'est pas un nombre entier"
    assert "numero_interne" in {f for (n, f) in issues if n is None}
    staged = dict(_rows(connector_dsn, "SELECT numero_interne, formation_duree_heures FROM staged_dossier "
                                       "WHERE run_id = 'run-legacy'"))
    assert staged == {"L-1": 1200, "L-2": 900, "L-3": 1350, "L-4": None}
    assert not _rows(connector_dsn, "SELECT 1 FROM extraction_issue WHERE message LIKE '%%31/02%%'")


def test_content_hash_is_the_one_computed_before_values_were_parsed_in_python(sources, connector_dsn):
    """Upgrading must not resend what the OPCOs already hold: for the rows that read
    cleanly, the content hash (now computed in the connector's database over the parsed
    values) equals the one the previous version computed in the ERP's database — except
    where an identifier was typed with spaces or dots (the OPCO refused those: they are
    sent again, normalised)."""
    from cfa_opco.extraction import HASHED_COLUMNS

    extract("run-hash", sources, connector_dsn)
    new = dict(((s, n), h) for s, n, h in _rows(
        connector_dsn, "SELECT source_id, numero_interne, content_hash FROM staged_dossier WHERE run_id = 'run-hash' "
                       "AND (source_id, numero_interne) NOT IN (SELECT source_id, numero_interne "
                       "FROM extraction_issue WHERE run_id = 'run-hash' AND numero_interne IS NOT NULL)"))
    main = sources[0]
    hashed = ", ".join(f"m.{c}" for c in HASHED_COLUMNS)
    old, formatted = {}, set()
    for n, h, typed in _rows(main.target, f"""SELECT m.numero_interne, md5(ROW({hashed})::text),
                                                 concat(m.employeur_siret, m.apprenti_nir, m.employeur_idcc) ~ '[^0-9A-Za-z]'
                                          FROM ({main.dossiers_sql}) m"""):
        old[("erp_main", n)] = h
        if typed:
            formatted.add(("erp_main", n))
    common = set(new) & set(old)
    assert len(common) > 1500 and formatted
    differing = {k for k in common if new[k] != old[k]}
    assert differing - formatted == set(), sorted(differing - formatted)[:5]
    assert differing == formatted & common

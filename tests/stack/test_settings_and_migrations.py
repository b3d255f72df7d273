"""The committed Airflow settings agree with the sandbox and the reference data; schema
migrations are applied once and refuse an edited file."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from cfa_opco import settings
from cfa_opco.db.migrate import MigrationError, migrate
from cfa_opco.stack import airflow_settings

PROJECT = settings.PROJECT_DIR


@pytest.fixture(scope="module")
def airflow_cfg():
    return airflow_settings.load(PROJECT / "airflow_settings.yaml")


def test_opco_connections_follow_the_naming_and_match_sandbox_keys(airflow_cfg):
    with open(settings.REFERENCE_DIR / "idcc_opco.csv", encoding="utf-8") as f:
        opcos = {r["opco_code"].lower() for r in csv.DictReader(f)}
    # a key per company (SIREN) or per establishment (SIRET): opco_<code>_<siren or siret>
    sandbox_keys = {(k["opco"], k.get("siret") or k["siren"]): k["key"]
                    for k in yaml.safe_load((PROJECT / "config" / "sandbox.yaml").read_text())["keys"]}
    http = [c for c in airflow_cfg.connections if c["conn_type"] == "opco"]
    assert http
    assert any(len(c["conn_id"].rsplit("_", 1)[1]) == 14 for c in http)    # the demo shows both scopes
    for c in http:
        _, rest = c["conn_id"].split("_", 1)
        code, siren = rest.rsplit("_", 1)
        assert code in opcos and len(siren) in (9, 14), c["conn_id"]
        assert c["conn_host"].endswith(f"/{code}/ApiEchangeCFA")
        assert sandbox_keys[(code, siren)] == c["conn_password"], c["conn_id"]
    assert {c["conn_id"].split("_", 1)[1].rsplit("_", 1)[0] for c in http} == opcos


def test_one_pool_per_opco_and_the_databases(airflow_cfg):
    assert {p["pool_name"] for p in airflow_cfg.pools} == {
        "opco_" + c for c in ("akto", "atlas", "afdas", "constructys", "ocapiat", "opco_2i", "opco_ep",
                              "mobilites", "sante", "opcommerce", "uniformation")}
    ids = {c["conn_id"] for c in airflow_cfg.connections}
    assert {"cfa_erp_main", "cfa_erp_est", "cfa_connector"} <= ids


def test_env_form_rewrites_connections(airflow_cfg):
    env = airflow_settings.as_env(airflow_cfg, rewrite=lambda p: {**p, "port": 9999}
                                  if p["conn_type"] == "postgres" else p)
    conn = json.loads(env["AIRFLOW_CONN_CFA_CONNECTOR"])
    assert conn["port"] == 9999 and conn["schema"] == "cfa_connector"
    airflow_settings.rewrite_sandbox_port(airflow_cfg, 18085)
    assert all(":18085/" in c["conn_host"] for c in airflow_cfg.connections if c["conn_type"] == "opco")


def test_migrations_apply_once_and_refuse_edits(database_factory, tmp_path):
    dsn = database_factory("test_migrations")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "V001__first.sql").write_text("CREATE TABLE t (id int);")
    (folder / "V002__second.sql").write_text("ALTER TABLE t ADD COLUMN name text;")
    assert migrate(dsn, folder) == ["V001__first.sql", "V002__second.sql"]
    assert migrate(dsn, folder) == []
    (folder / "V002__second.sql").write_text("ALTER TABLE t ADD COLUMN other text;")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(dsn, folder)
    (folder / "V3_bad.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="V<number>__<name>.sql"):
        migrate(dsn, folder)


def test_staged_table_matches_the_canonical_model(connector_dsn):
    from cfa_opco.db.connect import connection
    from cfa_opco.dossier.model import COLUMNS

    with connection(connector_dsn) as conn, conn.cursor() as cur:
        cur.execute("""SELECT column_name, data_type FROM information_schema.columns
                       WHERE table_name = 'staged_dossier'""")
        cols = dict(cur.fetchall())
    for c in COLUMNS:
        assert c.name in cols, c.name
    assert cols["contrat_date_debut"] == "date" and cols["employeur_public"] == "boolean"


def test_embedded_server_start_is_idempotent(pg_server):
    import os

    if os.environ.get("CFA_PG_EXTERNAL") == "1":
        pytest.skip("external PostgreSQL: nothing embedded to start")
    from cfa_opco.stack import embedded_pg

    assert embedded_pg.is_running()
    embedded_pg.start()
    assert embedded_pg.is_running()


# -- every postgres connection follows the configured server (issue 10, point 8) ----------
def test_postgres_connections_follow_the_configured_server_not_the_committed_port(pg_server):
    """The tests' server is not on the committed 55432 (conftest moves CFA_PG_PORT): the
    generated connections must reach it, and a real query through them must succeed."""
    import os

    from cfa_opco.db.connect import connect

    host, port = pg_server
    env = airflow_settings.sandbox_connection_env(18085)
    for conn_id, db in (("CFA_ERP_MAIN", "erp_main"), ("CFA_ERP_EST", "erp_est"),
                        ("CFA_CONNECTOR", "connector")):
        parts = json.loads(env["AIRFLOW_CONN_" + conn_id])
        assert (parts["host"], int(parts["port"]), parts["schema"]) == (host, port, settings.DATABASES[db])
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from cfa_opco.stack import embedded_pg

        embedded_pg.create_databases()
        conn = connect("cfa_connector")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_database(), inet_server_port()")
                dbname, server_port = cur.fetchone()
        finally:
            conn.close()
        assert dbname == settings.DATABASES["connector"]
        assert server_port == port
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_moved_port_moves_every_project_connection(tmp_path):
    """CFA_PG_HOST/CFA_PG_PORT given to a fresh process (as `make up` reads them) move the
    cfa_erp_*/cfa_connector connections, both in the environment form and in what
    `airflow_env init` writes to the metadata database; CFA_<NAME>_DSN wins for its
    database; an ERP connection added by hand to another server is left alone."""
    import subprocess
    import sys

    cfg = yaml.safe_load((PROJECT / "airflow_settings.yaml").read_text())
    cfg["airflow"]["connections"].append({"conn_id": "cfa_erp_nord", "conn_type": "postgres",
                                          "conn_host": "erp.nord.example", "conn_port": 5432,
                                          "conn_schema": "gescola", "conn_login": "lecteur"})
    settings_file = tmp_path / "airflow_settings.yaml"
    settings_file.write_text(yaml.safe_dump(cfg))
    code = f"""
import json
from pathlib import Path
from cfa_opco.stack import airflow_settings as a
env = a.sandbox_connection_env(18085, settings_file=Path({str(settings_file)!r}))
loaded = a.load(Path({str(settings_file)!r}))
moved = a.rewrite_postgres(loaded)
print(json.dumps({{"env": {{k: json.loads(v) for k, v in env.items() if "CFA_" in k}},
                  "moved": moved,
                  "init": {{c["conn_id"]: [c["conn_host"], c["conn_port"], c["conn_schema"]]
                           for c in loaded.connections if c["conn_type"] == "postgres"}}}}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CFA_")}
    env.update(CFA_PG_HOST="10.1.2.3", CFA_PG_PORT="55999", CFA_PG_PASSWORD="s3cret",
               CFA_ERP_EST_DSN="postgresql://ypso:pw@erp-est.example:6543/ypso_prod")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    main = res["env"]["AIRFLOW_CONN_CFA_ERP_MAIN"]
    assert (main["host"], main["port"], main["schema"], main["password"]) == ("10.1.2.3", 55999,
                                                                              "cfa_erp_main", "s3cret")
    assert res["env"]["AIRFLOW_CONN_CFA_CONNECTOR"]["port"] == 55999
    est = res["env"]["AIRFLOW_CONN_CFA_ERP_EST"]
    assert (est["host"], est["port"], est["schema"], est["login"]) == ("erp-est.example", 6543, "ypso_prod", "ypso")
    assert res["env"]["AIRFLOW_CONN_CFA_ERP_NORD"]["host"] == "erp.nord.example"
    assert sorted(res["moved"]) == ["cfa_connector", "cfa_erp_est", "cfa_erp_main"]
    assert res["init"]["cfa_erp_main"] == ["10.1.2.3", 55999, "cfa_erp_main"]
    assert res["init"]["cfa_erp_nord"] == ["erp.nord.example", 5432, "gescola"]

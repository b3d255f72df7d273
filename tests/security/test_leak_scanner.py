"""The leak scanner itself, on planted leaks: each must be found where it is planted (text,
JSON, Excel sheet, zip member, database row, URL), in every form an ERP or a report writes
it, while the masked forms the project writes are not reported."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.helpers import rows
from tests.security.leak_scan import Watchlist, iban_valid, nir_body

KEY = "demo-atlas-775672272"
NIR = "107037512345678"          # 1 07 03 75 123 456, key 78
IBAN = "FR7630006000011234567890189"


@pytest.fixture
def watch() -> Watchlist:
    w = Watchlist()
    w.add_secret(KEY, "clé API opco_atlas_775672272")
    w.add_secret("demo-akto-secret", "secret OAuth d'AKTO")
    w.add_nir(NIR)
    w.add_iban(IBAN)
    return w


def whats(leaks) -> list[str]:
    return sorted(leak.what for leak in leaks)


def test_identifiers():
    assert nir_body("1 07 03 75 123 456 78 ") == nir_body("1070375123456") == "1070375123456"
    assert nir_body("2 07 03 2A 123 456") == "207032A123456"
    assert nir_body("NC") is None and nir_body("12345") is None and nir_body(None) is None
    assert iban_valid(IBAN) and not iban_valid(IBAN[:-1] + "8") and not iban_valid("FR76")


@pytest.mark.parametrize("text", [
    "NIR 107037512345678.", "nir=1070375123456", "1 07 03 75 123 456 78", "1\u00a007\u00a003\u00a075 123 456 78",
    '{"nir": "1 07 03 75 123 456 78"}', '{"nir": "1\\u00a007\\u00a003 75 123 456"}', "1.07.03.75.123.456.78",
    "<td>1 07 03 75 123 456 78</td>", "1-07-03-75-123-456-78",
])
def test_a_full_nir_is_found_in_every_form(watch, text):
    assert whats(watch.scan_text("t", text)) == ["1 NIR complet(s)"]


@pytest.mark.parametrize("text", [
    "1 07 03 ** *** *** 78", "*****  (15 caractères)", "1070375******", "NIR 107037512345", "2070375123456",
    "sha256 0a1070375123455f",
])
def test_masked_or_other_numbers_are_not_a_leak(watch, text):
    assert watch.scan_text("t", text) == []


@pytest.mark.parametrize("text", ["RIB : FR76 3000 6000 0112 3456 7890 189", "iban=FR7630006000011234567890189",
                                  "fr76 3000 6000 0112 3456 7890 189",
                                  # another valid French IBAN than the planted one: found by its key
                                  "FR14 2004 1010 0505 0001 3M02 606"])
def test_a_full_iban_is_found(watch, text):
    assert whats(watch.scan_text("t", text)) == ["1 IBAN complet(s)"]


def test_a_wrong_iban_key_or_a_masked_iban_is_not(watch):
    assert watch.scan_text("t", "FR76 3000 6000 0112 3456 7890 188 / FR76 **** **** **** **** **** 189") == []


def test_secrets_raw_escaped_and_url_encoded(watch):
    assert whats(watch.scan_text("t", f"X-API-KEY: {KEY}")) == ["clé API opco_atlas_775672272"]
    assert whats(watch.scan_text("t", "client_secret=demo%2Dakto%2Dsecret".replace("%2D", "-"))) == [
        "secret OAuth d'AKTO"]
    w = Watchlist()
    w.add_secret("s3cr/t+key", "clé")
    assert whats(w.scan_text("t", "https://x/?k=s3cr%2Ft%2Bkey")) == ["clé"]
    w.add_secret("abc", "trop court")      # too short to be searched without false hits
    assert "abc" not in w.secrets


def test_excel_and_zip_members_are_read(watch, tmp_path):
    from openpyxl import Workbook   # lazy: only for an Excel file

    wb = Workbook()
    wb.active.append(["Numéro", "NIR"])
    wb.active.append(["MR-1", "1 07 03 75 123 456 78"])
    xlsx = io.BytesIO()
    wb.save(xlsx)
    leaks = watch.scan_bytes("a_corriger.xlsx", xlsx.getvalue())
    assert whats(leaks) == ["1 NIR complet(s)"] and leaks[0].where.startswith("a_corriger.xlsx!xl/")

    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"files": ["echanges.json"]}))
        zf.writestr("echanges.json", json.dumps({"headers": {"X-API-KEY": KEY}}))
        zf.writestr("corps/1.txt", f"RIB {IBAN}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "preuves.zip").write_bytes(bundle.getvalue())
    (tmp_path / "run" / "propre.md").write_text("rien à signaler : 1 07 03 ** *** *** 78")
    leaks, files = watch.scan_tree(tmp_path, "reports")
    assert files == 2
    assert sorted(map(str, leaks)) == ["reports/run/preuves.zip!corps/1.txt: 1 IBAN complet(s)",
                                       "reports/run/preuves.zip!echanges.json: clé API opco_atlas_775672272"]


def test_database_rows_outside_the_allowed_columns(watch, connector_dsn):
    rows(connector_dsn, """CREATE TABLE leak_probe (id int, payload jsonb, message text);
                           INSERT INTO leak_probe VALUES (1, '{"nir": "107037512345678"}', 'ok'),
                                                         (2, '{}', 'clé refusée : demo-atlas-775672272')
                           RETURNING id""")
    leaks, n = watch.scan_database(connector_dsn, "connector")
    assert n >= 2 and sorted(map(str, leaks)) == ["connector.leak_probe: 1 NIR complet(s)",
                                                  "connector.leak_probe: clé API opco_atlas_775672272"]
    # the OPCO-bound payload may carry the NIR; the message column still may not carry a key
    leaks, _ = watch.scan_database(connector_dsn, "connector", opco_bound={"leak_probe": {"payload"}})
    assert [str(x) for x in leaks] == ["connector.leak_probe: clé API opco_atlas_775672272"]
    # ... and an OPCO-bound column is still searched for secrets
    rows(connector_dsn, """UPDATE leak_probe SET payload = '{"k": "demo-akto-secret"}', message = 'ok'
                           WHERE id = 2 RETURNING id""")
    leaks, _ = watch.scan_database(connector_dsn, "connector", opco_bound={"leak_probe": "*"})
    assert [str(x) for x in leaks] == ["connector.leak_probe: secret OAuth d'AKTO"]

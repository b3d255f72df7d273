"""Reading ERP values and normalising identifiers (cfa_opco.dossier.fields): the value the
gate checks is the value the payload sends; what cannot be read says what was found and
what is expected, in French, with personal data masked."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cfa_opco.dossier import fields
from cfa_opco.dossier.fields import Unreadable, normalize_identifier, parse_value
from cfa_opco.dossier.model import BY_NAME


@pytest.mark.parametrize("column, typed, expected", [
    ("employeur_siret", "552 100 554 00016", "55210055400016"),
    ("employeur_siret", "\u00a0552\u00a0100\u00a0554\u00a000016 ", "55210055400016"),
    ("employeur_siret", "552.100.554.00016", "55210055400016"),
    ("cfa_siret", "552-100-554-00016\t", "55210055400016"),
    ("apprenti_nir", "1 85 03 2a 004 123 45 ", "18503" + "2A00412345"),
    ("cfa_uai", " 0693456g", "0693456G"),
    ("employeur_idcc", " 1597 ", "1597"),
    ("employeur_idcc", "1597.0", "1597"),          # a spreadsheet's number, not "15970"
    ("employeur_idcc", "15.97", "15.97"),          # left for the gate to report
    ("employeur_adresse_code_postal", "69\u202f001", "69001"),
    ("formation_rncp", "rncp 35 316", "RNCP35316"),
    ("employeur_siret", "   ", None),
    ("employeur_siret", "5.52100554E+13", "552100554E+13"),   # stays invalid: quarantined
])
def test_identifiers_are_normalised(column, typed, expected):
    assert normalize_identifier(column, typed) == expected


def test_every_identifier_and_limited_text_is_a_canonical_text_column():
    for column in (*fields.IDENTIFIERS, *fields.TEXT_LIMITS):
        assert BY_NAME[column].type == "text", column
    assert not set(fields.IDENTIFIERS) & set(fields.TEXT_LIMITS)
    assert fields.TEXT_LIMITS["employeur_adresse_voie"] == (38, "Adresse de l'employeur (voie)")


@pytest.mark.parametrize("typ, raw, expected", [
    ("date", "2026-09-01", dt.date(2026, 9, 1)),
    ("date", "01/09/2026", dt.date(2026, 9, 1)),
    ("date", "1/9/2026", dt.date(2026, 9, 1)),
    ("date", "29/02/2028", dt.date(2028, 2, 29)),
    ("date", "  ", None),
    ("int", "1 350", 1350),
    ("int", "35.0", 35),
    ("num", "1 234,50", Decimal("1234.50")),
    ("num", "53", Decimal("53.00")),
    ("bool", "O", True), ("bool", "non", False), ("bool", "t", True),
    ("text", "  Chambéry ", "Chambéry"),
])
def test_values_are_read_in_their_column_type(typ, raw, expected):
    assert parse_value(typ, raw) == expected


@pytest.mark.parametrize("typ, raw, column, message", [
    ("date", "31/02/2026", None, "« 31/02/2026 » est une date impossible (ce jour n'existe pas en 02/2026)"),
    ("date", "29/02/2027", None, "« 29/02/2027 » est une date impossible (ce jour n'existe pas en 02/2027)"),
    ("date", "2026-13-01", None, "« 2026-13-01 » est une date impossible (il n'y a pas de mois 13)"),
    ("date", "NC", None, "« NC » n'est pas une date (format attendu : JJ/MM/AAAA ou AAAA-MM-JJ)"),
    ("date", "31/02/2005", "apprenti_date_naissance",
     "« **/02/2005 » est une date impossible (ce jour n'existe pas en 02/2005)"),
    ("int", "12OO", None, "« 12OO » n'est pas un nombre entier"),
    ("int", "35,5", None, "« 35,5 » n'est pas un nombre entier"),
    ("num", "NaN", None, "« NaN » n'est pas un nombre"),
    ("bool", "peut-être", None, "« peut-être » n'est pas une valeur oui/non"),
    ("text", "ChambÃ©ry", None, "« ChambÃ©ry » contient des caractères mal encodés"),
    ("text", "Lâ€™Atelier", None, "« Lâ€™Atelier » contient des caractères mal encodés"),
    ("text", "Martin\ufffd", None, "contient des caractères mal encodés"),
    ("text", "Mar\x01tin", None, "contient des caractères mal encodés"),
    # a NIR or an IBAN typed where it does not belong is masked in the message too
    ("text", "RÃ©f. FR76 3000 6000 0112 3456 7890 189", "apprenti_adresse_complement",
     "« RÃ©f. FR76 **** **** 189 » contient des caractères mal encodés"),
    ("num", "1 07 03 75 123 456 78 €", "contrat_salaire_embauche", "« *** € » n'est pas un nombre"),
])
def test_unreadable_values_say_what_was_found_and_what_is_expected(typ, raw, column, message):
    with pytest.raises(Unreadable) as err:
        parse_value(typ, raw, column)
    assert message in str(err.value)
    if column in fields.PERSONAL or "456" in raw:
        assert raw not in str(err.value) and "456" not in str(err.value)


def test_labels_are_french():
    assert fields.label("contrat_date_conclusion") == "Date de signature du contrat"
    assert fields.label("remu2_taux") == "Rémunération année 2 (taux)"
    assert fields.label("employeur_siret") == "SIRET de l'employeur"

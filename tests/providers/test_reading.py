"""The reading layer (providers/opco/reading.py) on raw bodies as OPCO servers may send them:
bare and wrapped lists, three pagination styles, empty, text, HTML, 200 + erreurs, renamed
fields and wrong types. Each case states what is read, or the French Unreadable it gives."""
from __future__ import annotations

import json

import pytest

from cfa_opco.providers.opco import reading
from cfa_opco.providers.opco.reading import Unreadable, classify, next_page, read_items, read_state

BASE = "https://api.opco.example/ApiEchangeCFA"
ITEM = {"numeroInterne": "A-1", "etat": "TRANSMIS", "dateEtat": "2026-12-01T10:00:00Z", "numeroDeca": "0" * 15}


def body(obj) -> reading.Body:
    return classify(json.dumps(obj).encode(), "application/json")


# ---- lists ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [
    [ITEM],
    {"dossiers": [ITEM], "inconnus": []},
    {"items": [ITEM], "total": 1},
    {"data": [ITEM]},
    {"resultats": [ITEM]},
    {"results": [ITEM], "count": 1},
    {"elements": [ITEM]},
    {"EtatDossierResult": [ITEM], "total": 1, "numeroPage": 1, "taillePage": 100},
    {"data": {"items": [ITEM]}, "meta": {"total": 1}},
    {"whatever_name": [ITEM], "total": 1},
])
def test_lists_bare_or_wrapped(shape):
    items = read_items(body(shape), 200, "akto", "GET", "liste_v1")
    assert [s.numero_interne for s in reading.read_states(items, "akto", "GET", "liste_v1")] == ["A-1"]


def test_an_object_without_a_list_is_unreadable_with_a_french_message():
    with pytest.raises(Unreadable) as exc:
        read_items(body({"ok": True, "message": 3}), 200, "akto", "GET", "liste_v1")
    assert str(exc.value).startswith("Réponse illisible de AKTO sur GET /v1/dossiers/liste : aucune liste")


@pytest.mark.parametrize("raw, ctype, expected", [
    (b"", None, "Réponse illisible de AKTO sur GET /v1/dossiers/liste : corps de réponse vide (200)"),
    (b"   \n", "application/json", "corps de réponse vide (200)"),
    (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html",
     "page HTML de passerelle (200) « 502 Bad Gateway »"),
    (b"Service Unavailable", "text/plain", "texte au lieu de JSON (200) : « Service Unavailable »"),
    (b'{"dossiers": [', "application/json", "JSON invalide (200)"),
])
def test_empty_text_html_and_broken_bodies(raw, ctype, expected):
    with pytest.raises(Unreadable) as exc:
        read_items(classify(raw, ctype), 200, "akto", "GET", "liste_v1")
    assert expected in str(exc.value)


def test_html_gateway_message_as_in_the_issue():
    b = classify(b"<html><body><h1>502</h1></body></html>", "text/html")
    u = Unreadable("akto", "GET", "liste_v1", b.describe(502))
    assert str(u) == "Réponse illisible de AKTO sur GET /v1/dossiers/liste : page HTML de passerelle (502)"


def test_a_200_carrying_erreurs_is_unreadable_with_the_opcos_words():
    with pytest.raises(Unreadable) as exc:
        read_items(body({"erreurs": [{"code": "INDISPONIBLE", "message": "base en maintenance"}]}), 200, "atlas",
                   "GET", "etats_v2")
    assert str(exc.value).startswith("Réponse illisible de OPCO Atlas sur GET /v2/dossiers/etats : réponse portant")
    assert "INDISPONIBLE" in str(exc.value) and "base en maintenance" in str(exc.value)


def test_items_without_any_dossier_number_are_unreadable():
    with pytest.raises(Unreadable) as exc:
        reading.read_states([{"foo": 1}], "akto", "GET", "etats_v2")
    assert "sans numéro de dossier" in str(exc.value)


# ---- renamed fields, wrong types ---------------------------------------------------------
@pytest.mark.parametrize("item", [
    {"numeroInterne": "A-1", "etat": "ENGAGE", "dateEtat": "2026-12-01"},
    {"numeroDossier": "A-1", "statut": "engage", "dateStatut": "2026-12-01"},
    {"numero": "A-1", "status": {"code": "ENGAGE"}, "dateMaj": "2026-12-01"},
    {"NUMEROINTERNE": "A-1", "ETAT": "ENGAGEE", "date_etat": "2026-12-01"},
    {"dossier": {"numeroInterne": "A-1"}, "etat": "ENGAGE", "dateEtat": "2026-12-01"},
])
def test_renamed_fields(item):
    st = read_state(item)
    assert (st.numero_interne, st.etat, st.date_etat) == ("A-1", "ENGAGE", "2026-12-01")
    assert st.as_item()["numeroInterne"] == "A-1" and st.as_item()["etat"] == "ENGAGE"


def test_unexpected_types_are_coerced_not_crashed():
    st = read_state({"numeroInterne": 12345, "etat": "TRANSMIS", "numeroDeca": 123456789012345, "dateEtat": None})
    assert (st.numero_interne, st.numero_deca, st.date_etat) == ("12345", "123456789012345", None)
    assert read_state("not a dict") is None and read_state({"etat": "X"}) is None
    assert read_state({"numeroInterne": "A", "etat": True}).etat is None


def test_errors_from_any_shape():
    assert reading.read_errors({"errors": [{"code": "X", "field": "a.b", "detail": "bad"}]}) == [
        {"code": "X", "champ": "a.b", "message": "bad"}]
    assert reading.read_errors({"error": "quota dépassé"})[0]["message"] == "quota dépassé"
    assert reading.read_errors({"message": "non"})[0]["message"] == "non"
    assert reading.read_errors(classify(b"Bad Request", "text/plain"))[0]["message"] == "Bad Request"
    assert reading.read_errors(classify("Erreur 422 : [NIR_INVALIDE] apprenti.nir : NIR invalide ; [X] autre".encode(),
                                        "text/plain")) == [
        {"code": "NIR_INVALIDE", "champ": "apprenti.nir", "message": "NIR invalide"},
        {"code": "X", "champ": None, "message": "autre"}]


# ---- pagination ------------------------------------------------------------------------
def test_page_number_pagination():
    p = {"numeroPage": 1, "taillePage": 2, "dateDebut": "x"}
    nxt = next_page({"EtatDossierResult": [1, 2], "total": 5, "numeroPage": 1, "taillePage": 2}, {}, BASE, BASE, p, 2, 2)
    assert nxt.params == {"numeroPage": 2, "taillePage": 2, "dateDebut": "x"}
    assert next_page({"items": [1], "total": 5, "numeroPage": 3, "taillePage": 2}, {}, BASE, BASE,
                     {**p, "numeroPage": 3}, 1, 2) is None
    assert next_page({"items": [1, 2], "totalPages": 2, "page": 2}, {}, BASE, BASE, {"page": 2}, 2, 2) is None
    # no paging information at all: a full page asks for the next one, a short page ends
    assert next_page([1, 2], {}, BASE, BASE, p, 2, 2).params["numeroPage"] == 2
    assert next_page([1], {}, BASE, BASE, p, 1, 2) is None


def test_offset_limit_pagination():
    nxt = next_page({"items": [1, 2], "offset": 0, "limit": 2, "total": 5}, {}, BASE, BASE,
                    {"numeroPage": 1, "taillePage": 2}, 2, 2)
    assert nxt.params == {"taillePage": 2, "offset": 2, "limit": 2}
    assert next_page({"items": [1], "offset": 4, "limit": 2, "total": 5}, {}, BASE, BASE,
                     {"offset": 4, "limit": 2}, 1, 2) is None


def test_next_link_in_body_or_link_header_relative_resolved():
    url = BASE + "/v2/dossiers/etats?numeroPage=1"
    nxt = next_page({"items": [1], "next": "/ApiEchangeCFA/v2/dossiers/etats?curseur=abc"}, {}, url, BASE, {}, 1, 2)
    assert nxt.url == "https://api.opco.example/ApiEchangeCFA/v2/dossiers/etats?curseur=abc"
    nxt = next_page({"items": [1], "_links": {"next": {"href": "etats?curseur=def"}}}, {}, url, BASE, {}, 1, 2)
    assert nxt.url == BASE + "/v2/dossiers/etats?curseur=def"
    nxt = next_page([1], {"Link": '<?curseur=ghi>; rel="next", <?p=1>; rel="first"'}, url, BASE, {}, 1, 2)
    assert nxt.url == BASE + "/v2/dossiers/etats?curseur=ghi"
    assert next_page({"items": [1, 2], "next": None}, {}, url, BASE, {}, 2, 2) is None
    assert reading.same_origin(BASE + "/v2/dossiers/etats?x=1", BASE)
    assert not reading.same_origin("https://evil.example/ApiEchangeCFA/v2", BASE)


# ---- proof bodies are masked ---------------------------------------------------------------
def test_proof_body_masks_nir_birth_date_and_secrets():
    raw = json.dumps({"nir": "1 85 05 78 006 084 36", "dateNaissance": "1985-05-12", "cle": "SECRET-KEY"}).encode()
    text = reading.proof_body(raw, ["SECRET-KEY"])
    assert "006 084" not in text and "1985-05-12" not in text and "SECRET-KEY" not in text
    assert len(reading.proof_body(b"x" * 100_000)) < 20_000


@pytest.mark.parametrize("typed", ["FR76 3000 6000 0112 3456 7890 189", "fr7630006000011234567890189",
                                   "FR14\u00a02004\u00a01010\u00a00505\u00a00001\u00a03M02\u00a0606"])
def test_an_iban_in_any_text_is_masked(typed):
    text = reading.mask(f"RIB : {typed}.")
    compact = typed.replace(" ", "").replace("\u00a0", "").upper()
    assert compact[4:-3] not in text.replace(" ", "").replace("\u00a0", "")
    assert text == f"RIB : {compact[:4]} **** **** {compact[-3:]}."
    assert "3456" not in reading.proof_body(json.dumps({"commentaire": typed}).encode())


def test_a_reference_that_only_looks_like_an_iban_is_left_alone():
    # wrong mod-97 key, or a reference of the norm (numéro DECA, numéro interne)
    for text in ("FR76 3000 6000 0112 3456 7890 188", "02B202212000000", "MR-2026-000123", "RNCP37125"):
        assert reading.mask(text) == text

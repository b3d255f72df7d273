"""OpcoHook.send_once (one attempt, a clear outcome per fault kind) and find_dossiers (settle
presence through each read route) against the real sandbox server and its fault injection;
plus a raw HTTP server for answers the strict sandbox never gives (bare list, HTML gateway)."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cfa_opco.providers.opco.hooks.opco import OpcoHook, Pacer
from cfa_opco.providers.opco.outcomes import SendKind
from cfa_opco.providers.opco.proofs import MemoryProofSink
from cfa_opco.providers.opco.reading import DossierState, Unreadable
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE


@pytest.fixture(autouse=True)
def fresh_pacers():
    """Pacers are shared per key across hooks (by design): a 429 pause must not leak between tests."""
    from cfa_opco.providers.opco.hooks import opco

    opco._PACERS.clear()
    yield
    opco._PACERS.clear()


def hook(conn_id, **kw) -> OpcoHook:
    kw.setdefault("software", SOFTWARE)
    return OpcoHook(conn_id, **kw)


def sandbox_posts(sbx, opco: str) -> int:
    return sum(sbx.stats(opco)["requests_by_status"].values())


# ---- send_once: one attempt, one outcome ----------------------------------------------------
def test_created_then_idempotent(opco_conn, sandbox):
    h = hook(opco_conn("akto"))
    out = h.send_once(sample_dossier("akto", SIREN, "SO-1"))
    assert out.kind is SendKind.CREATED and out.status == 201 and out.etat == "TRANSMIS"
    assert out.numero_deca and len(out.numero_deca) == 15 and out.numero_interne == "SO-1"
    again = h.send_once(sample_dossier("akto", SIREN, "SO-1"))
    assert again.kind is SendKind.CREATED and again.numero_deca == out.numero_deca
    assert sandbox.creations("akto")["total"] == 1


def test_rejected_with_french_text(opco_conn, sandbox):
    h = hook(opco_conn("atlas"))
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-422", **{"apprenti.nir": "123"}))
    assert out.kind is SendKind.REJECTED and out.status == 422
    assert out.message.startswith("Refusé par l'OPCO Atlas (HTTP 422) : ") and "apprenti.nir" in out.message


def test_503_is_retry_later_with_retry_after_and_one_request(opco_conn, sandbox):
    h = hook(opco_conn("atlas"))
    h.status()
    sandbox.set_faults(error_503=1.0, methods=["POST"])
    before = sandbox_posts(sandbox, "atlas")
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-503"))
    assert out.kind is SendKind.RETRY_LATER and out.status == 503 and out.retry_after == 1.0
    assert sandbox_posts(sandbox, "atlas") - before == 1            # no retry loop inside


def test_a_single_429_does_not_pause_the_key(opco_conn, sandbox):
    """A random 429 is this request's RETRY_LATER with its Retry-After (the caller honours it
    for this request); the next dossier of the same key is sent at once."""
    h = hook(opco_conn("atlas"))
    sandbox.set_faults(error_429=1.0, methods=["POST"], opcos=["atlas"])
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-429"))
    assert out.kind is SendKind.RETRY_LATER and out.status == 429 and out.retry_after == 1.0
    sandbox.clear_faults()
    t0 = time.monotonic()
    nxt = h.send_once(sample_dossier("atlas", SIREN, "SO-429-next"))
    assert nxt.kind is SendKind.CREATED and time.monotonic() - t0 < 0.5    # no pause of the key
    assert h.stats.get("deferred_by_pause", 0) == 0


def test_429s_in_a_row_pause_this_key_only(opco_conn, sandbox):
    """429s in a row (real rate limiting): the key pauses for Retry-After — nothing more is
    sent on it meanwhile — while another key goes on."""
    atlas, ep = hook(opco_conn("atlas")), hook(opco_conn("opco_ep"))
    atlas.status()
    start = sandbox_posts(sandbox, "atlas")
    sandbox.set_faults(error_429=1.0, methods=["POST"], opcos=["atlas"])
    for i in range(Pacer.PAUSE_AFTER):
        out = atlas.send_once(sample_dossier("atlas", SIREN, f"SO-429-{i}"))
        assert out.kind is SendKind.RETRY_LATER and out.status == 429 and out.retry_after == 1.0
    assert sandbox_posts(sandbox, "atlas") - start == Pacer.PAUSE_AFTER   # each of them was sent
    before = sandbox_posts(sandbox, "atlas")
    t0 = time.monotonic()
    paused = atlas.send_once(sample_dossier("atlas", SIREN, "SO-429b"))  # key paused: nothing sent, no wait
    assert paused.kind is SendKind.RETRY_LATER and paused.status is None and 0 < paused.retry_after <= 1.0
    assert sandbox_posts(sandbox, "atlas") == before and time.monotonic() - t0 < 0.2
    other = ep.send_once(sample_dossier("opco_ep", SIREN, "SO-EP"))      # another key is not idled
    assert other.kind is SendKind.CREATED and time.monotonic() - t0 < 0.5


def test_drop_before_processing_is_ambiguous_then_settled_absent(opco_conn, sandbox):
    h = hook(opco_conn("atlas"))
    sandbox.set_faults(drop=1.0, methods=["POST"])
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-DROP"))
    assert out.kind is SendKind.AMBIGUOUS and out.status is None and "peut-être" in out.message
    sandbox.clear_faults()
    assert h.find_dossiers(["SO-DROP"]) == {"SO-DROP": None}             # provably absent: resend
    assert h.send_once(sample_dossier("atlas", SIREN, "SO-DROP")).kind is SendKind.CREATED


def test_lost_answer_after_processing_is_ambiguous_then_settled_present(opco_conn, sandbox):
    h = hook(opco_conn("atlas"))
    sandbox.set_faults(lost_response=1.0, lost_response_mode="drop", methods=["POST"])
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-LOST"))
    assert out.kind is SendKind.AMBIGUOUS
    sandbox.clear_faults()
    found = h.find_dossiers(["SO-LOST"])["SO-LOST"]
    assert isinstance(found, DossierState) and found.etat in ("TRANSMIS", "EN_COURS_INSTRUCTION") and found.numero_deca
    assert sandbox.creations("atlas")["total"] == 1


def test_held_answer_is_ambiguous_within_the_read_timeout(opco_conn, sandbox):
    h = hook(opco_conn("atlas", read_timeout=0.5))
    h.status()
    sandbox.set_faults(hang=1.0, hang_seconds=3, methods=["POST"])
    t0 = time.monotonic()
    out = h.send_once(sample_dossier("atlas", SIREN, "SO-HANG"))
    assert out.kind is SendKind.AMBIGUOUS and "délai" in out.message
    assert time.monotonic() - t0 < 1.5


def test_default_timeouts_are_short_and_configurable(opco_conn, sandbox):
    h = hook(opco_conn("atlas"))
    assert (h.get_conn().connect_timeout, h.get_conn().read_timeout) == (3.0, 5.0)
    h2 = hook(opco_conn("atlas", connect_timeout=1, read_timeout="2.5"))
    assert (h2.get_conn().connect_timeout, h2.get_conn().read_timeout) == (1.0, 2.5)


def test_connection_refused_is_retry_later_not_sent(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                      # closed again: nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_OPCO_ATLAS_775672272", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}/atlas/ApiEchangeCFA", "password": "k",
         "extra": {"siren": SIREN}}))
    out = hook("opco_atlas_775672272").send_once(sample_dossier("atlas", SIREN, "SO-REFUSED"))
    assert out.kind is SendKind.RETRY_LATER and out.sent is False and out.retry_after > 0
    assert "non envoyée" in out.message


# ---- find_dossiers through each read route ------------------------------------------------------
@pytest.mark.parametrize("route", ["liste_v1", "dossier_read_v2", "etats_v2"])
def test_find_dossiers_through_each_read_route(opco_conn, sandbox, route):
    """An OPCO serving only this read route: presence read there, absence proven by it."""
    from cfa_opco.providers.opco.capabilities import Capabilities
    from cfa_opco.providers.opco.norm import ROUTES

    sink = MemoryProofSink()
    only = Capabilities("atlas", "OPCO Atlas", frozenset({"dossiers_v2", "status", route}))
    h = hook(opco_conn("atlas"), proof_sink=sink, capabilities=only)
    assert h.send_once(sample_dossier("atlas", SIREN, "FD-1")).kind is SendKind.CREATED
    got = h.find_dossiers(["FD-1", "FD-NONE"])
    assert isinstance(got["FD-1"], DossierState) and got["FD-1"].etat in ("TRANSMIS", "EN_COURS_INSTRUCTION")
    assert got["FD-1"].numero_deca and got["FD-NONE"] is None
    assert {r.route.split("?")[0] for r in sink.records[1:]} == {ROUTES[route].path}


def test_find_dossiers_without_any_read_route(opco_conn, sandbox):
    from cfa_opco.providers.opco.capabilities import Capabilities

    none = Capabilities("atlas", "OPCO Atlas", frozenset({"dossiers_v2", "status"}))
    got = hook(opco_conn("atlas"), capabilities=none).find_dossiers(["FD-2"])
    assert isinstance(got["FD-2"], Unreadable) and "aucune route de lecture" in str(got["FD-2"])


def test_find_dossiers_v1_only_opco(opco_conn, sandbox):
    h = hook(opco_conn("constructys"))
    assert h.send_once(sample_dossier("constructys", SIREN, "FD-C")).kind is SendKind.CREATED
    got = h.find_dossiers(["FD-C", "FD-C-NONE"])
    assert got["FD-C"].numero_interne == "FD-C" and got["FD-C-NONE"] is None


def test_find_dossiers_unreadable_when_no_route_answers(opco_conn, sandbox):
    h = hook(opco_conn("atlas"), backoff_base=0.01, backoff_max=0.02)
    sandbox.set_faults(error_503=1.0)
    got = h.find_dossiers(["FD-X"], max_attempts=1)
    assert isinstance(got["FD-X"], Unreadable) and "OPCO Atlas" in str(got["FD-X"])


def test_find_dossiers_first_route_only_stops_after_the_liste(opco_conn, sandbox):
    """The runner's first read-backs: a failed liste call is not followed by one GET per
    dossier (read again soon instead); without the flag, the next routes settle it."""
    sink = MemoryProofSink()
    h = hook(opco_conn("atlas"), proof_sink=sink, backoff_base=0.01, backoff_max=0.02)
    assert h.send_once(sample_dossier("atlas", SIREN, "FD-F")).kind is SendKind.CREATED
    sandbox.set_faults(error_503=1.0, routes=["liste_v1"])
    before = len(sink.records)
    got = h.find_dossiers(["FD-F", "FD-F-NONE"], max_attempts=1, first_route_only=True)
    assert all(isinstance(v, Unreadable) for v in got.values()), got
    assert {r.route.split("?")[0] for r in sink.records[before:]} == {"/v1/dossiers/liste"}
    got = h.find_dossiers(["FD-F", "FD-F-NONE"], max_attempts=1)
    assert isinstance(got["FD-F"], DossierState) and got["FD-F-NONE"] is None


# ---- a server that answers differently from the sandbox --------------------------------------------
class Raw:
    """A tiny HTTP server answering each GET with the next (status, content-type, body)."""

    def __init__(self):
        self.answers: list[tuple[int, str, bytes, dict]] = []
        self.paths: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                status, ctype, body, headers = outer.answers.pop(0) if outer.answers else (404, "text/plain", b"", {})
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/x/ApiEchangeCFA"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def raw(monkeypatch):
    r = Raw()
    monkeypatch.setenv("AIRFLOW_CONN_OPCO_CONSTRUCTYS_775672272", json.dumps(
        {"conn_type": "http", "host": r.base, "password": "k", "extra": {"siren": SIREN}}))
    monkeypatch.setenv("AIRFLOW_CONN_OPCO_ATLAS_775672272", json.dumps(
        {"conn_type": "http", "host": r.base, "password": "k", "extra": {"siren": SIREN}}))
    yield r
    r.close()


def test_list_dossiers_reads_a_bare_array(raw):
    """The issue's bug: GET /v1/dossiers/liste answered with a bare JSON array."""
    raw.answers.append((200, "application/json", json.dumps(
        [{"numeroInterne": "B-1", "statut": "EN_COURS_INSTRUCTION"}]).encode(), {}))
    items = hook("opco_constructys_775672272").list_dossiers(["B-1", "B-2"])
    assert [(i["numeroInterne"], i["etat"]) for i in items] == [("B-1", "EN_COURS_INSTRUCTION")]


def test_html_gateway_page_is_unreadable_and_kept_in_the_proof(raw):
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    raw.answers += [(200, "text/html", page, {})] * 2
    sink = MemoryProofSink()
    with pytest.raises(Unreadable) as exc:     # a read is tried again (a maintenance page passes), then given up
        hook("opco_constructys_775672272", proof_sink=sink, max_attempts=2, backoff_base=0.01).list_dossiers(["B-1"])
    assert str(exc.value).startswith("Réponse illisible de Constructys sur GET /v1/dossiers/liste : page HTML "
                                     "de passerelle (200)")
    assert len(sink.records) == 2 and raw.answers == []
    assert all(r.response_body == page.decode() and r.content_type == "text/html" for r in sink.records)
    assert sink.records[-1].error.startswith("Réponse illisible")


def test_states_followed_by_next_link_header(raw):
    page1 = json.dumps({"items": [{"numero": "L-1", "etat": "ENGAGE"}]}).encode()
    page2 = json.dumps({"items": [{"numero": "L-2", "etat": "REFUSE"}]}).encode()
    raw.answers += [(200, "application/json", page1, {"Link": '<etats?curseur=2>; rel="next"'}),
                    (200, "application/json", page2, {})]
    import datetime as dt
    h = hook("opco_atlas_775672272")
    items = list(h.iter_state_changes(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), None, page_size=1))
    assert [(i["numeroInterne"], i["etat"]) for i in items] == [("L-1", "ENGAGE"), ("L-2", "REFUSE")]
    assert raw.paths[1] == "/x/ApiEchangeCFA/v2/dossiers/etats?curseur=2"

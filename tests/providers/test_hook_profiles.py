"""The hook's reading against every response-shape profile of the sandbox (issue 10, point 4):
the same cases — send, reject, read back, list, page through the state changes, settle
presence, the async twin — whatever shape the server answers in."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.hooks.opco_async import AsyncOpcoHook
from cfa_opco.providers.opco.outcomes import SendKind
from cfa_opco.providers.opco.proofs import MemoryProofSink
from cfa_opco.providers.opco.reading import DossierState
from cfa_opco.sandbox.profiles import PROFILES
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE

CASES = list(PROFILES) + ["bare_lists+renamed_fields+text_errors", "next_link+renamed_fields+empty_bodies",
                          "wrapped_items_offset+html_gateway"]
OPEN = ("TRANSMIS", "EN_COURS_INSTRUCTION")


@pytest.fixture
def profiled(sandbox):
    sandbox.patch_settings(page_size={"default": 2, "max": 1000})     # several pages, whatever the style
    yield sandbox
    sandbox.set_profile(None, "strict")


@pytest.fixture(autouse=True)
def fresh_pacers():
    from cfa_opco.providers.opco.hooks import opco

    opco._PACERS.clear()
    yield


def hook(conn_id, **kw) -> OpcoHook:
    kw.setdefault("software", SOFTWARE)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpcoHook(conn_id, **kw)


def send(h: OpcoHook, opco: str, numero: str) -> None:
    """Created, or (a 2xx without a body: empty_bodies) ambiguous then read back present."""
    out = h.send_once(sample_dossier(opco, SIREN, numero))
    if out.kind is SendKind.AMBIGUOUS:
        assert out.status in (202, 204) and "peut-être" in out.message
        found = h.find_dossiers([numero])[numero]
        assert isinstance(found, DossierState), found
        return
    assert out.kind is SendKind.CREATED, out.message
    assert out.etat in OPEN and out.numero_deca and len(out.numero_deca) == 15


@pytest.mark.parametrize("profile", CASES)
def test_every_read_and_write_case(opco_conn, profiled, profile):
    profiled.set_profile(None, profile)
    sink = MemoryProofSink()
    atlas = hook(opco_conn("atlas"), proof_sink=sink)
    numeros = [f"PR-{i}" for i in range(5)]
    t0 = atlas.server_now() - dt.timedelta(seconds=5)
    for n in numeros:
        send(atlas, "atlas", n)
    assert profiled.creations("atlas")["total"] == 5

    # a refused dossier: REJECTED with the field named, whatever the error body's form
    bad = atlas.send_once(sample_dossier("atlas", SIREN, "PR-BAD", **{"apprenti.nir": "123"}))
    assert bad.kind is SendKind.REJECTED and bad.status == 422 and "apprenti.nir" in bad.message

    # liste: the norm's item names, unknown numbers absent
    items = atlas.list_dossiers(numeros + ["PR-NONE"])
    assert sorted(i["numeroInterne"] for i in items) == numeros
    assert all(i["etat"] in OPEN and i["numeroDeca"] for i in items)

    # every page of the state changes (page size 2: three pages or more)
    changes = list(atlas.iter_state_changes(t0, None, page_size=2))
    assert {c["numeroInterne"] for c in changes} == set(numeros)
    assert len([r for r in sink.records if r.route.startswith("/v2/dossiers/etats")]) >= 3

    # one dossier read back; an unknown one
    got = atlas.find_dossiers(["PR-0", "PR-NONE"])
    assert isinstance(got["PR-0"], DossierState) and got["PR-0"].numero_deca and got["PR-NONE"] is None
    assert atlas.get_dossier("PR-1").etat in OPEN

    # v1-only OPCO: its liste route
    cons = hook(opco_conn("constructys"))
    send(cons, "constructys", "PR-C")
    got = cons.find_dossiers(["PR-C", "PR-C-NONE"])
    assert isinstance(got["PR-C"], DossierState) and got["PR-C-NONE"] is None

    # the async twin reads the same answers the same way
    async def go():
        async with AsyncOpcoHook(opco_conn("atlas"), software=SOFTWARE, backoff_base=0.01) as ah:
            ch = [c async for c in ah.state_changes(t0, None, page_size=2)]
            found, absent = await ah.liste_states(numeros + ["PR-NONE"])
            return ch, found, absent
    ch, found, absent = asyncio.run(asyncio.wait_for(go(), 60))
    assert {c["numeroInterne"] for c in ch} == set(numeros)
    assert sorted(s.numero_interne for s in found) == numeros and absent == {"PR-NONE"}


@pytest.mark.parametrize("profile", ["strict", "text_errors", "html_gateway", "empty_bodies"])
def test_retry_later_outcomes_in_every_error_style(opco_conn, profiled, profile):
    profiled.set_profile(None, profile)
    h = hook(opco_conn("atlas"))
    for kind, status in (("error_503", 503), ("error_502", 502), ("error_504", 504), ("error_429", 429)):
        profiled.clear_faults()
        from cfa_opco.providers.opco.hooks import opco
        opco._PACERS.clear()
        profiled.set_faults(**{kind: 1.0}, methods=["POST"])
        out = h.send_once(sample_dossier("atlas", SIREN, f"RL-{status}"))
        assert out.kind is SendKind.RETRY_LATER and out.status == status, (kind, out)
        assert out.retry_after is not None and out.retry_after >= 0
    assert profiled.creations("atlas")["total"] == 0


def test_heavy_preset_send_once_then_settle_no_duplicate(opco_conn, profiled):
    """The heavy preset with a short read timeout: each dossier ends created, once."""
    profiled.set_fault_preset("heavy", held_seconds=2, seed=11)
    h = hook(opco_conn("atlas", read_timeout=0.5))
    numeros = [f"HV-{i:02d}" for i in range(20)]
    todo = list(numeros)
    kinds: set = set()
    import time
    for _ in range(60):
        if not todo:
            break
        nxt, waits = [], []
        for n in todo:
            out = h.send_once(sample_dossier("atlas", SIREN, n), max_pause=0)
            kinds.add(out.kind)
            if out.kind is SendKind.AMBIGUOUS:
                state = h.find_dossiers([n], max_attempts=6)[n]
                if isinstance(state, DossierState):
                    continue
                nxt.append(n)
            elif out.kind is not SendKind.CREATED:
                assert out.kind is SendKind.RETRY_LATER, out.message
                nxt.append(n)
                waits.append(out.retry_after)
        todo = nxt
        if todo and len(waits) == len(todo):   # everything left waits: as a runner, sleep the shortest
            time.sleep(min(2.0, min(waits)))
    assert todo == []
    c = profiled.creations("atlas")
    assert c["total"] == 20 and c["distinct"] == 20
    assert SendKind.RETRY_LATER in kinds

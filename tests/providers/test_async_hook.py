"""AsyncOpcoHook and the trigger against the real sandbox: same connection parsing, OAuth2,
routes and reading as the sync hook; every exchange recorded as a proof (in memory and in
the connector's exchange_proof table); per-key poll failures carried by the events."""
from __future__ import annotations

import asyncio
import datetime as dt
from datetime import timedelta

import pytest

from cfa_opco.providers.opco.exceptions import OpcoAuthError, OpcoUnavailable
from cfa_opco.providers.opco.hooks.opco import OpcoHook
from cfa_opco.providers.opco.hooks.opco_async import AsyncOpcoHook
from cfa_opco.providers.opco.proofs import MemoryProofSink
from cfa_opco.providers.opco.triggers.opco_states import OpcoStateChangeTrigger
from cfa_opco.sandbox.seed import sample_dossier

from tests.helpers import SIREN, SOFTWARE, rows


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def first(trigger):
    async for ev in trigger.run():
        return ev


def test_both_hooks_parse_the_connection_the_same_way(opco_conn, sandbox):
    cid = opco_conn("akto", read_timeout=2, rate_limit_per_second=4)
    sync = OpcoHook(cid, software=SOFTWARE)._conn_info()

    async def go():
        async with AsyncOpcoHook(cid, software=SOFTWARE) as h:
            return await h.conn_info()
    a = run(go())
    assert a == sync and (a.read_timeout, a.connect_timeout, a.rate) == (2.0, 3.0, 4.0)
    assert a.token_url.endswith("/akto/oauth/token") and a.caps.needs_oauth_v2
    assert a.pacer is None and sync.pacer is not None              # pacing is the sync hook's (threads)


def test_async_reads_with_oauth_token_and_proofs(opco_conn, sandbox):
    cid = opco_conn("akto")
    sent = OpcoHook(cid, software=SOFTWARE).send_dossier(sample_dossier("akto", SIREN, "AS-1"))
    assert sent.status == 201
    sink = MemoryProofSink()

    async def go():
        async with AsyncOpcoHook(cid, software=SOFTWARE, proof_sink=sink, run_id="run-A") as h:
            changes = [i async for i in h.state_changes(now() - timedelta(minutes=5))]
            n = await h.count_changes_since(now() - timedelta(minutes=5))
            return changes, n
    changes, n = run(go())
    assert [c["numeroInterne"] for c in changes] == ["AS-1"] and n == 1
    routes = [r.route.split("?")[0] for r in sink.records]
    assert routes == ["/akto/oauth/token", "/v2/dossiers/etats", "/v2/dossiers/etats"]   # one token, reused
    assert all(r.run_id == "run-A" and r.http_status == 200 and r.conn_id == cid for r in sink.records)
    assert sink.records[0].response_body is None                       # a token answer is never kept


def test_async_liste_of_a_v1_only_opco(opco_conn, sandbox):
    cid = opco_conn("constructys")
    OpcoHook(cid, software=SOFTWARE).send_dossier(sample_dossier("constructys", SIREN, "AS-C"))

    async def go():
        async with AsyncOpcoHook(cid, software=SOFTWARE) as h:
            return await h.liste_states(["AS-C", "AS-NONE"])
    found, absent = run(go())
    assert [s.numero_interne for s in found] == ["AS-C"] and absent == {"AS-NONE"}


def test_async_errors_are_the_sync_hooks_errors(opco_conn, sandbox):
    bad = opco_conn("atlas", key="nope")

    async def refused():
        async with AsyncOpcoHook(bad, software=SOFTWARE) as h:
            await h.status()
    with pytest.raises(OpcoAuthError) as exc:
        run(refused())
    assert "OPCO Atlas" in str(exc.value) and "nope" not in str(exc.value)
    sandbox.set_faults(error_503=1.0)

    async def down():
        async with AsyncOpcoHook(opco_conn("atlas"), software=SOFTWARE, max_attempts=2, backoff_base=0.01) as h:
            await h.status()
    with pytest.raises(OpcoUnavailable):
        run(down())


# ---- the trigger records its exchanges as proofs ----------------------------------------------
def test_trigger_exchanges_are_proofs_in_the_connector(opco_conn, sandbox, connector_dsn):
    atlas = opco_conn("atlas")
    since = now() - timedelta(seconds=5)
    OpcoHook(atlas, software=SOFTWARE).send_dossier(sample_dossier("atlas", SIREN, "TP-1"))
    t = OpcoStateChangeTrigger([atlas], {atlas: since.isoformat()}, 0.1, (now() + timedelta(minutes=1)).isoformat(),
                               software=SOFTWARE, proof_sink="cfa_opco.proofs.ProofRecorder",
                               proof_target=connector_dsn, run_id="run-TP")
    ev = run(first(t))
    assert ev.payload["status"] == "changed" and ev.payload["changed"] == {atlas: 1}
    got = rows(connector_dsn, "SELECT method, route, http_status, run_id FROM exchange_proof WHERE run_id = 'run-TP'")
    assert len(got) == 1 and got[0][0] == "GET" and got[0][1].startswith("/v2/dossiers/etats?")
    assert got[0][2] == 200


def test_trigger_counts_failed_polls_per_key_and_fires(opco_conn, sandbox):
    atlas, ep = opco_conn("atlas"), opco_conn("opcommerce")
    sandbox.set_faults(error_503=1.0, opcos=["atlas"])
    later = (now() + timedelta(hours=1)).isoformat()
    t = OpcoStateChangeTrigger([atlas, ep], {atlas: later, ep: later}, 0.05, (now() + timedelta(minutes=1)).isoformat(),
                               software=SOFTWARE, max_poll_failures=3)
    ev = run(first(t))
    assert ev.payload["status"] == "poll_failures"
    f = ev.payload["poll_failures"]
    assert set(f) == {atlas} and f[atlas]["count"] == 3
    assert f[atlas]["last_reason"].startswith("L'API de l'OPCO Atlas ne répond pas")
    # carried over to the next trigger (the sensor passes them back)
    again = OpcoStateChangeTrigger(**{**t.serialize()[1], "poll_failures": f})
    assert again.serialize()[1]["poll_failures"][atlas]["count"] == 3


def test_trigger_reports_an_unreadable_answer(opco_conn, sandbox):
    """An OPCO answering its etats route with a maintenance page (HTML, 200): a French reason per key."""
    atlas = opco_conn("atlas")
    sandbox.set_profile(None, "html_gateway")
    sandbox.patch_settings(profile_options={"html_200_share": 1.0})
    try:
        t = OpcoStateChangeTrigger([atlas], {atlas: now().isoformat()}, 0.05,
                                   (now() + timedelta(minutes=1)).isoformat(), software=SOFTWARE, max_poll_failures=2)
        ev = run(first(t))
    finally:
        sandbox.patch_settings(profile_options={"html_200_share": 0.02})
        sandbox.set_profile(None, "strict")
    assert ev.payload["status"] == "poll_failures"
    reason = ev.payload["poll_failures"][atlas]["last_reason"]
    assert reason.startswith("Réponse illisible de OPCO Atlas sur GET /v2/dossiers/etats : page HTML de passerelle "
                             "(200) « Maintenance »")

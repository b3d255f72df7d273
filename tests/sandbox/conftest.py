import httpx
import pytest

from cfa_opco.sandbox.testing import run_sandbox

from _sandbox_helpers import SIREN, Api


@pytest.fixture(scope="session")
def sbx():
    """One shared sandbox: instant instruction, no rate limit."""
    with run_sandbox(instant=True, rate_limit=0) as server:
        yield server


@pytest.fixture(scope="session")
def http():
    with httpx.Client(trust_env=False, timeout=20.0) as c:
        yield c


@pytest.fixture
def api(sbx, http):
    def make(opco="atlas", siren=SIREN, key=None):
        return Api(sbx, http, opco, siren, key)
    return make

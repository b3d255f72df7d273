import httpx
import pytest

from _sandbox_helpers import SIREN, Api


@pytest.fixture(autouse=True)
def _strict_and_faultless(sbx):
    """The shared sandbox (tests/conftest.py) is also used by other folders' tests: each
    sandbox test starts with the strict profile and no fault (its data is kept)."""
    sbx.clear_faults()
    sbx.set_profile(None, "strict")


@pytest.fixture(scope="session")
def http():
    with httpx.Client(trust_env=False, timeout=20.0) as c:
        yield c


@pytest.fixture
def api(sbx, http):
    def make(opco="atlas", siren=SIREN, key=None):
        return Api(sbx, http, opco, siren, key)
    return make

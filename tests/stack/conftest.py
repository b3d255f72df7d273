"""The Celery stack, started once for the tests that need it (tests/stack/test_celery_*.py):
skipped, with the reason, unless CFA_CELERY_STACK=1 and the system PostgreSQL and Redis answer."""
from __future__ import annotations

import pytest

from tests.stack import celery_stack


@pytest.fixture(scope="session")
def celery():
    reason = celery_stack.skip_reason()
    if reason:
        pytest.skip(reason)
    ts = celery_stack.start(fault_preset="heavy")
    yield ts
    celery_stack.stop(ts)

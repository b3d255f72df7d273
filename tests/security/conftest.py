"""Fixtures of the security tests: the root conftest (test database, Airflow home) and the
alert tests' local receivers (SMTP and webhook) with ``alerts_on``."""
from __future__ import annotations

import tests.conftest  # noqa: F401  (the test database and Airflow home)
from tests.alerts.conftest import alerts_on, smtp, webhook  # noqa: F401  (fixtures, reused)

"""The Variable cfa_opco_alerts: off when absent, every key checked with a French message."""
from __future__ import annotations

import json

import pytest

from cfa_opco.alerts import config


def test_no_variable_means_alerts_off(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_CFA_OPCO_ALERTS", raising=False)
    cfg = config.load()
    assert cfg == config.OFF and not cfg.enabled and not cfg.wants("key")


def test_a_variable_without_channel_or_switched_off_stays_off(monkeypatch):
    assert not config.parse({"to": ["a@cfa.test"]}).enabled            # no e-mail connection
    assert not config.parse({"email_conn_id": "smtp_default"}).enabled   # nobody to write to
    on = {"email_conn_id": "smtp_default", "to": "a@cfa.test; b@cfa.test"}
    assert config.parse(on).enabled and config.parse(on).to == ("a@cfa.test", "b@cfa.test")
    assert not config.parse({**on, "enabled": False}).enabled
    assert config.parse({"webhook_conn_id": "chat"}).enabled
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_ALERTS", json.dumps(on))
    assert config.load().enabled


def test_defaults_and_site_leads():
    cfg = config.parse({"webhook_conn_id": "chat", "to": ["ops@cfa.test"],
                        "site_leads": {"PAR": "qualite.paris@cfa.test", "LYO": ["a@cfa.test", "b@cfa.test"]}})
    assert (cfg.refusal_rate_threshold, cfg.error_rate_threshold, cfg.key_expiry_days, cfg.repeat_hours) == \
        (0.2, 0.1, None, 24)
    assert cfg.kinds == set(config.KINDS)
    assert cfg.recipients("PAR") == ("qualite.paris@cfa.test",)
    assert cfg.recipients("LYO") == ("a@cfa.test", "b@cfa.test")
    assert cfg.recipients("NAN") == ("ops@cfa.test",)   # a site without a lead: the general list
    assert cfg.recipients() == ("ops@cfa.test",)
    assert config.parse({"webhook_conn_id": "chat", "kinds": ["key"]}).wants("key")
    assert not config.parse({"webhook_conn_id": "chat", "kinds": ["key"]}).wants("rates")


@pytest.mark.parametrize("raw, says", [
    ("{not json", "pas du JSON"),
    ({"refusal_rate_threshold": 20}, "refusal_rate_threshold"),
    ({"to": ["pas-une-adresse"]}, "adresse(s) e-mail invalide(s)"),
    ({"kinds": ["tout"]}, "kinds"),
    ({"key_expiry_days": -1}, "key_expiry_days"),
    ({"emails_to": ["a@b.c"]}, "clé(s) inconnue(s) emails_to"),
    ({"site_leads": ["a@b.c"]}, "site_leads"),
])
def test_a_wrong_setting_is_named(raw, says):
    with pytest.raises(config.AlertsConfigError, match=None) as err:
        config.parse(raw)
    assert says in str(err.value)

"""Alerts through Airflow's own mechanisms: notifiers given to task callbacks and an
end-of-run task, e-mail through the SMTP provider, chats through a generic webhook notifier.

- :mod:`.config`    the Variable ``cfa_opco_alerts`` (off when not set)
- :mod:`.messages`  the alerts and their French texts; every text masked before it leaves
- :mod:`.channels`  SmtpNotifier (provider) and :class:`~.channels.WebhookNotifier`
- :mod:`.evaluate`  what a run alerts about, from the connector's database
- :mod:`.journal`   what was already sent (no repeat on retries, key alerts once a day)
- :mod:`.callbacks` the entry points the DAGs use
"""

-- The connector's own database, quality gate: verdicts per run (the history of every
-- dossier's verdicts), the anomalies found, operators' forcing (audit trail) and the view
-- transmission reads.

CREATE TABLE quality_run (                  -- one row per gated run (a rerun replaces it)
    run_id              text PRIMARY KEY REFERENCES extraction_run(run_id) ON DELETE CASCADE,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    engine              text NOT NULL DEFAULT 'great_expectations',
    checked             integer NOT NULL DEFAULT 0,
    passed              integer NOT NULL DEFAULT 0,
    quarantined         integer NOT NULL DEFAULT 0,
    forced              integer NOT NULL DEFAULT 0,
    warnings            integer NOT NULL DEFAULT 0,
    severity_overrides  jsonb,
    by_rule             jsonb,
    by_site             jsonb,
    report_index        text
);

-- The verdict of every dossier of a run: TRANSMIT, QUARANTINE or FORCED (quarantined but
-- forced through by an operator). History = the rows of the successive runs.
CREATE TABLE quality_verdict (
    run_id          text NOT NULL REFERENCES quality_run(run_id) ON DELETE CASCADE,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    content_hash    text NOT NULL,
    site_code       text,
    verdict         text NOT NULL CHECK (verdict IN ('TRANSMIT', 'QUARANTINE', 'FORCED')),
    errors          integer NOT NULL DEFAULT 0,
    warnings        integer NOT NULL DEFAULT 0,
    rule_codes      text[] NOT NULL DEFAULT '{}',
    force_id        bigint,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, numero_interne)
);
CREATE INDEX quality_verdict_dossier ON quality_verdict (source_id, numero_interne, decided_at DESC);

-- Every anomaly found, per dossier (a faulty company appears on each of its dossiers with
-- the same record_type/record_ref: the root cause). Personal data is masked in `valeur`.
CREATE TABLE quality_anomaly (
    run_id          text NOT NULL REFERENCES quality_run(run_id) ON DELETE CASCADE,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    rule_code       text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('error', 'warning')),
    domain          text NOT NULL,
    field           text NOT NULL,
    valeur          text,
    message         text NOT NULL,
    record_type     text NOT NULL,
    record_ref      text NOT NULL,
    record_label    text
);
CREATE INDEX quality_anomaly_run ON quality_anomaly (run_id, source_id, numero_interne);
CREATE INDEX quality_anomaly_record ON quality_anomaly (run_id, record_type, record_ref);

-- Operators forcing a quarantined dossier through (audit trail, never deleted). A force
-- holds for the dossier's content as it was when forced (content_hash): once the dossier
-- changes in the ERP, it is checked again like any other.
CREATE TABLE quality_force (
    force_id        bigserial PRIMARY KEY,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    content_hash    text NOT NULL,
    run_id          text,
    reason          text NOT NULL CHECK (length(btrim(reason)) > 0),
    forced_by       text NOT NULL CHECK (length(btrim(forced_by)) > 0),
    forced_at       timestamptz NOT NULL DEFAULT now(),
    rule_codes      text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX quality_force_dossier ON quality_force (source_id, numero_interne, content_hash);

-- What transmission sends for a run: the dossiers whose verdict lets them go.
CREATE VIEW dossier_to_transmit AS
SELECT run_id, source_id, numero_interne, verdict, content_hash
FROM quality_verdict
WHERE verdict IN ('TRANSMIT', 'FORCED');

-- The current quarantine: dossiers whose latest verdict is QUARANTINE (a dossier fixed in
-- the ERP leaves it at the next run that re-stages it).
CREATE VIEW quarantine_current AS
SELECT v.run_id, v.source_id, v.numero_interne, v.site_code, v.errors, v.warnings, v.rule_codes,
       v.decided_at
FROM (SELECT DISTINCT ON (source_id, numero_interne) *
      FROM quality_verdict
      ORDER BY source_id, numero_interne, decided_at DESC, run_id DESC) v
WHERE v.verdict = 'QUARANTINE';

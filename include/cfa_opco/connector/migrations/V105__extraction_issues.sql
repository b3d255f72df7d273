-- Values of an ERP row that extraction could not read (impossible date, text in a number
-- column, bad encoding...): the row is still staged, the value set to NULL, and the quality
-- gate turns each issue into a quarantine reason (rule EXTRACTION_VALEUR_ILLISIBLE). A row
-- without a readable numero_interne cannot be staged: it is recorded with its position.
CREATE TABLE extraction_issue (
    run_id          text NOT NULL REFERENCES extraction_run(run_id) ON DELETE CASCADE,
    source_id       text NOT NULL,
    numero_interne  text,                   -- NULL when the row had none (not staged)
    row_number      integer NOT NULL,       -- position of the row in the source's answer
    field           text NOT NULL,
    valeur          text,                   -- masked for personal data
    message         text NOT NULL
);
CREATE INDEX extraction_issue_run ON extraction_issue (run_id, source_id, numero_interne);

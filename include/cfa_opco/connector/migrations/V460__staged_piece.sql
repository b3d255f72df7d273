-- The supporting documents (pièces) of a run's batch, frozen at extraction with the
-- dossiers they belong to: the bytes and their SHA-256 are read from the ERP once, when
-- the batch is staged, so a send never reads the ERP (cfa_opco.dossier.pieces). A document
-- that could not be read (file missing, unreadable) is a row with its reason in `error`
-- and no content: the dossier is still staged, the send reports the missing document.
-- Keyed like staged_dossier, plus the document's rank in the source's answer; deleting
-- a staged dossier (re-extraction of its run) deletes its documents.
CREATE TABLE staged_piece (
    run_id          text NOT NULL,
    source_id       text NOT NULL,
    numero_interne  text NOT NULL,
    position        integer NOT NULL,       -- rank of the document within its dossier (source's order)
    piece_ref       text,                   -- the document's id in the ERP, when the mapping gives one
    type_piece      text,
    nom_fichier     text,
    type_mime       text,
    sha256          text,                   -- hex digest of content; NULL when it could not be read
    size            bigint,                 -- bytes of content; NULL when it could not be read
    content         bytea,
    error           text,                   -- why it could not be read (French, path relative to files_root)
    staged_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_id, numero_interne, position),
    FOREIGN KEY (run_id, source_id, numero_interne)
        REFERENCES staged_dossier (run_id, source_id, numero_interne) ON DELETE CASCADE,
    CHECK ((content IS NULL) = (sha256 IS NULL) AND (content IS NULL) = (error IS NOT NULL))
);
-- the documents are stored out of line and not compressed: PDFs and images are already
-- compressed, and the batch reads them back whole
ALTER TABLE staged_piece ALTER COLUMN content SET STORAGE EXTERNAL;

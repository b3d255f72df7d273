-- Ypso Formation 7.2 made the training hours of an action a free-text field (the screen
-- accepts "1200h", "NC"...): the connector reads it row by row and quarantines the
-- dossiers whose value is not a number.
ALTER TABLE "T_ACTION" ALTER COLUMN "ACT_HEURES" TYPE varchar(12) USING "ACT_HEURES"::text;

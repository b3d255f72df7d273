-- The raw answer of an exchange the client could not read (HTML gateway page, plain text,
-- empty or malformed body...), masked (NIR, birth dates) and capped, with its Content-Type:
-- an unreadable answer is kept as proof, never guessed at.
ALTER TABLE exchange_proof ADD COLUMN response_body text;
ALTER TABLE exchange_proof ADD COLUMN content_type text;

"""Local runtime stack: the embedded PostgreSQL and the commands that prepare it."""

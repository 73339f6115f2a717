"""The history projector bench: rows per second into PostgreSQL, and the lag at a steady rate."""

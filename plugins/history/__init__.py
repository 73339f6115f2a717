"""The history plugin: orders, trades and payments projected from the journal into PostgreSQL.

``config`` (the ``[history]`` section), ``schema`` (the tables, created at
start-up), ``decoders`` (each stateful plugin's records as rows),
``projector`` (the task that tails the journal and commits rows with the
seq they cover) and ``plugin`` (the hooks). ``README.md`` documents the schema.
"""

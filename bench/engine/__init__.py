"""The matching-engine bench: sprintd's price-time engine against liquibook and
lightmatchingengine, in process, on the same command streams.

``python -m bench.engine --help`` runs it; bench/README.md says how to read it.
"""

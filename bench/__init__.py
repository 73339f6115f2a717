"""sprintd's benchmarks; each subpackage is one bench, run with ``python -m bench.<name>``."""

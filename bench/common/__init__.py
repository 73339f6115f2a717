"""What every bench shares: its command line, paths, servers and ports, CPU
pinning, machine facts, plots and report skeleton. A bench imports these and
the package (``sprintd``, ``sprintd.testing``), never another bench's
internals for them, and never ``tests``."""

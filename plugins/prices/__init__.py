"""The ``prices`` plugin: a price map with sub-millisecond updates and its own figures.

``updates`` checks what clients send; ``engine`` applies it in arrival
order, publishes fast-path snapshots and times every update from the wire
to its snapshot; ``api`` serves HTTP and the binary feed; ``perftest`` runs
the performance test; ``plugin`` wires them into the daemon. ``README.md``
describes the whole. Importing this package imports nothing.
"""

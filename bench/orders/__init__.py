"""The orders plugin through its ports, with the journal on: ``python -m bench.orders``.

The core journal alone (appends/s under group commit, replay of 1M records),
then a daemon per tier driven through the binary order-entry port (batched
and one order per frame) and over HTTP (wrk's closed loop and k6's constant
rate), written up as a Markdown report with plots.
"""

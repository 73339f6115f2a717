"""The ``orders`` plugin: price-time matching, order entry, market data.

The matching engine is ``engine`` (the built-in price-time engine, one per
symbol), on the data structures in ``book``; ``spec`` converts between the
decimal strings clients send and the integer ticks and lots the engine works
in. The plugin's other modules (settings, HTTP API, order-entry port, client)
build on them; ``README.md`` describes the whole. Importing this package
imports nothing, so a client can use one submodule without the rest.
"""

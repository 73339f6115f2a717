"""The ``orders`` plugin: price-time matching, order entry, market data.

The matching engine is ``engine`` (the built-in price-time engine's hot core,
one per symbol), on the data structures in ``book`` and ``done``, with its
persistence in ``snapshot``; ``spec`` converts between the decimal strings
clients send and the integer ticks and lots the engine works in. The write
path is ``api`` over ``commands`` (parsing), ``service`` (state) and
``render`` (answers); ``README.md`` describes the whole, module by module. Importing this package
imports nothing, so a client can use one submodule without the rest.
"""

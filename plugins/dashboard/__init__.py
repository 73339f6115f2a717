"""The ``dashboard`` plugin: the daemon's figures live, in a browser and a terminal.

``page`` serves ``GET /dashboard``, one self-contained HTML page
(``dashboard.html``: inline CSS and JavaScript, a hand-drawn canvas chart,
nothing fetched from elsewhere) that polls /v1/stats,
/v1/price-engine/metrics and /health each second. ``top`` is ``sprintd
top``: the same figures in a terminal, from a running daemon's endpoints.
Importing this package imports nothing.
"""

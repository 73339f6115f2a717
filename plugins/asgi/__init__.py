"""The ``asgi`` plugin: an ASGI 3 application served beside the plugins.

``[asgi] app = "module:attribute"`` names the application and ``mount`` the
path it answers under (``/`` by default: every path no plugin takes). Each
worker imports it and serves it in its own trio loop: ``exchange`` turns one
request into the application's HTTP exchange, ``lifespan`` runs its
start-up and shut-down around the worker's life. Frameworks on anyio
(Starlette, FastAPI) run on trio as they do on asyncio.
"""

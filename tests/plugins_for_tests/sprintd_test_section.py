"""A plugin with its own settings section, ``[greeter]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sprintd import App, PluginSection, Request, Response, Route, hookimpl


class GreeterSection(PluginSection):
    greeting: str = "hello"
    repeat: int = 1


@hookimpl
def sprintd_settings_sections() -> Mapping[str, type[PluginSection]]:
    return {"greeter": GreeterSection}


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    section = app.settings.section("greeter", GreeterSection)

    def greet(request: Request) -> Response:
        return Response.data(
            {"greeting": section.greeting, "repeat": section.repeat, "enabled": section.enabled}
        )

    return [Route("GET", "/test/greeter", greet)]

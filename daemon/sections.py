"""What every settings section is: the core's (``[server]``, ``[journal]`` ...),
auth's and each plugin's own."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["PluginSection", "Section"]


class Section(BaseModel):
    """A settings section: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSection(Section):
    """Base of a plugin's own section; ``enabled = false`` unregisters it.

    A plugin whose state lives in the process (an order book, an in-memory
    store) sets ``process_local = True``: it then needs one owner, and more
    than one worker is a configuration error while it is enabled.
    """

    process_local: ClassVar[bool] = False
    enabled: bool = True

    def keeps_state_locally(self) -> bool:
        """Whether this configuration keeps the plugin's state in the process.

        ``process_local`` by default; a plugin whose store is chosen in its
        section (memory or a shared server) answers from its values.
        """
        return self.process_local

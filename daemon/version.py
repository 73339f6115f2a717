"""The release, in one place: the package facade, the CLI, /health and /metrics read it."""

__version__ = "0.1.0"

"""sprintd: a tier-tuned, low-latency service daemon on Trio and h11."""

__version__ = "0.1.0"

__all__ = ["__version__"]

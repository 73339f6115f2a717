"""The payments plugin: the Rinha de Backend 2025 payment gateway (see README.md)."""

from .plugin import PaymentsPlugin

__all__ = ["PaymentsPlugin"]

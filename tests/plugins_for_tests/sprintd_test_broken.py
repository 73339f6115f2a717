"""A plugin that cannot be imported: its dependency is not installed."""

from __future__ import annotations

import sprintd_test_dependency_that_is_not_installed  # noqa: F401

"""The tier profiles (one TOML file per tier), shipped as package data and read by
``sprintd.tiers``. A regular package, not a namespace one: setuptools' default
editable finder resolves a mapped sub-package only when it has an ``__init__``."""

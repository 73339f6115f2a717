"""Coverage-guided fuzzing of sprintd's parsers with atheris (optional, never in CI)."""

"""GET /metrics read back: samples by name and labels, and promtool's verdict."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from .daemons import Daemon

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample of an exposition by name and labels, and every family's type."""
    samples: Samples = defaultdict(dict)
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples, types


def scrape(served: Daemon) -> tuple[str, Samples, dict[str, str]]:
    """The body of GET /metrics, every sample by name and labels, and every family's type."""
    result = served.get("/metrics")
    assert result.status == 200
    assert result.headers["content-type"].startswith("text/plain; version=")
    text = result.body.decode("utf-8")
    return (text, *parse(text))


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [v for key, v in samples[name].items() if set(labels.items()) <= set(key)]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def promtool_complaints(text: str) -> str:
    """What ``promtool check metrics`` says of an exposition; "" when it is clean."""
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    complaints = (check.stdout + check.stderr).decode().strip()
    if check.returncode != 0 and not complaints:
        complaints = f"promtool exited with {check.returncode}"
    return complaints

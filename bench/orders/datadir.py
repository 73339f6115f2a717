"""The data directory over a long run: ``python -m bench.orders.datadir [--minutes N]``.

One daemon takes orders through its binary port for the whole run (buys and
sells at one price in turn, so the books stay small and the state bounded)
while this process samples the bytes its data directory holds on disk
(allocated blocks: preallocated segments count in full). Without checkpoints
the directory would grow with every order; with them it stays near the state,
two snapshots, the records since the older one and the active and spare
segments. The report gives the figure per sample and plots it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.cli import add_run_options, positive, say, start
from bench.common.net import free_port, running
from bench.common.paths import BIN, REPO, short
from bench.common.plotting import DPI, figure
from bench.orders import entry_load

SYMBOL = "BTC-USD"
PER_FRAME, WINDOW = 50, 8
SAMPLE_S = 1.0
MIB = 1024 * 1024


@dataclass
class Sample:
    at_s: float
    disk_bytes: int
    orders: int


@dataclass
class DataDirRun:
    argv: list[str]
    env: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    orders: int = 0
    refused: int = 0


def disk_bytes(directory: Path) -> int:
    """Allocated bytes of every file under ``directory`` (what ``du`` counts)."""
    total = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_blocks * 512
        except FileNotFoundError:
            pass  # compacted between listing and stat
    return total


def measure(minutes: float, out: Path, env: dict[str, str]) -> DataDirRun:
    port, entry_port = free_port(), free_port()
    data = out / "data"
    argv = [f"{BIN}/sprintd", "run", "--tier", "pro", "--port", str(port), "--data-dir", str(data)]
    env = {"SPRINTD_ORDERS__ENTRY_PORT": str(entry_port), **env}
    run = DataDirRun(argv, env)
    frames = entry_load.order_frames(SYMBOL, PER_FRAME, 2000)
    stop = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not stop.wait(SAMPLE_S):
            run.samples.append(Sample(time.monotonic() - began, disk_bytes(data), run.orders))

    sampler = threading.Thread(target=sample, daemon=True)
    log = out / "sprintd.log"
    # Ready is /readyz's 200; that orders are taken, the entry load's refusals say.
    with running(argv, port, (REPO,), log, ready_path="/readyz", check=lambda _: None, env=env):
        sampler.start()
        deadline = began + minutes * 60
        # Chunks of 10 s, so the order count the sampler reads moves along.
        while (left := deadline - time.monotonic()) > 0:
            result = entry_load.drive(
                "127.0.0.1", entry_port, frames, PER_FRAME, WINDOW, min(10.0, left)
            )
            run.orders += result.orders
            run.refused += result.refused
            say(
                f"{time.monotonic() - began:6.0f} s  {run.orders:12,} orders  "
                f"data dir {disk_bytes(data) / MIB:8.1f} MiB"
            )
        stop.set()
        sampler.join()
    return run


def write_report(run: DataDirRun, out: Path) -> Path:
    samples = run.samples
    peak = max(s.disk_bytes for s in samples)
    half = samples[len(samples) // 2 :]
    lines = [
        "# The data directory over a long run",
        "",
        f"`{' '.join(run.argv)}` with {json.dumps(run.env)}; orders through the binary "
        f"port, {PER_FRAME} per frame, {WINDOW} frames in flight.",
        "",
        f"- orders taken: {run.orders:,} in {samples[-1].at_s:.0f} s "
        f"({run.orders / samples[-1].at_s:,.0f}/s)",
        f"- replies not ok (sampled): {run.refused}",
        f"- data directory on disk: peak {peak / MIB:.1f} MiB; second half of the run "
        f"{min(s.disk_bytes for s in half) / MIB:.1f}-{max(s.disk_bytes for s in half) / MIB:.1f}"
        " MiB",
        f"- without compaction the journal alone would hold about "
        f"{run.orders * 90 / MIB:,.0f} MiB (about 90 bytes a record)",
        "",
        "| t (s) | orders | data dir (MiB) |",
        "|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 30)
    lines.extend(
        f"| {s.at_s:.0f} | {s.orders:,} | {s.disk_bytes / MIB:.1f} |" for s in samples[::step]
    )
    plot = out / "datadir.png"
    _plot(samples, plot)
    lines += ["", f"![data directory size]({plot.name})"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "samples.json").write_text(json.dumps([s.__dict__ for s in samples]))
    return report


def _plot(samples: list[Sample], path: Path) -> None:
    fig, ax = figure()
    ax.plot([s.at_s for s in samples], [s.disk_bytes / MIB for s in samples], label="data dir")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MiB on disk")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot([s.at_s for s in samples], [s.orders for s in samples], "--", color="grey")
    twin.set_ylabel("orders taken (dashed)")
    ax.set_title("Data directory size while taking orders (checkpoints compact the journal)")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orders.datadir", description=__doc__)
    parser.add_argument("--minutes", type=positive, default=5, help="length of the run")
    add_run_options(parser, "datadir", pin=None)
    parser.add_argument(
        "--checkpoint-records",
        type=positive,
        default=100_000,
        help="[journal] checkpoint_records for the daemon (default 100000)",
    )
    parser.add_argument(
        "--segment-mib", type=positive, default=16, help="[journal] segment_bytes in MiB"
    )
    args = parser.parse_args(argv)
    _, out = start("datadir", args.out)
    env = {
        "SPRINTD_JOURNAL__CHECKPOINT_RECORDS": str(args.checkpoint_records),
        "SPRINTD_JOURNAL__SEGMENT_BYTES": str(args.segment_mib * MIB),
        "SPRINTD_JOURNAL__CHECKPOINT_BYTES": str(args.segment_mib * MIB),
    }
    run = measure(args.minutes, out, env)
    say(f"report: {short(write_report(run, out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

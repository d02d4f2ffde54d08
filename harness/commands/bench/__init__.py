"""``harness bench``: run the Table 6 speed suite and print it beside the paper and peer figures.

    harness bench                              # prints the table, writes results/benchmarks/<device>.json
    harness bench --save baseline              # also store a pytest-benchmark baseline in .benchmarks/
    harness bench --compare baseline --max-regression 10%   # exit 1 if any step's median regressed > 10 %
    harness bench --record                     # also write the speedups the CI gate compares against
    harness bench --paths                      # generic vs fast path (vs bf16) per step, interleaved in one run
    harness bench --floor [--measure]          # FLOPs, bytes moved and the floor of every step (and its distance)
    harness bench --peers                      # the peer libraries' steps beside the harness's, interleaved
    harness bench --algo boil --compare boil   # any algorithm, as ratios to MAML timed beside it (bench_algo)

The suite itself is ``harness/speed/suite`` (pytest-benchmark), shipped in the package, so an installed
harness times itself; results go under ``./results/benchmarks``. ``--save``/``--compare`` map to ``--benchmark-save``/``--benchmark-compare`` and
``--benchmark-compare-fail=median:<N>%``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

from tabulate import tabulate

import harness
from harness.errors import HarnessError
from harness.speed.benchmarks import PAPER_TABLE6, speedups
from harness.speed.records import PEERS_LEARN2LEARN, RESULTS, SUITE, device_file_name


def summarise(report: dict) -> tuple[list[list], dict]:
    """Table rows, and speedups per device, from a pytest-benchmark JSON report."""
    stats = {}
    for bench in report["benchmarks"]:
        info = bench["extra_info"]
        stats[(info["algorithm"], info["config"], info["phase"], info["device"])] = bench["stats"]
    devices = {key[3] for key in stats}
    ratios = {d: speedups({k: v["median"] for k, v in stats.items() if k[3] == d}) for d in devices}
    rows = []
    for key in sorted(stats, key=lambda k: (k[3], k[1], k[2], k[0])):
        algorithm, config, phase, device = key
        speedup = ratios[device].get(f"{algorithm}/maml {config} {phase}")
        paper = PAPER_TABLE6.get(config, (None, None))[0 if phase == "train" else 1] if algorithm == "anil" else None
        peers = PEERS_LEARN2LEARN.get((config, phase))
        peer = peers[("maml", "fomaml", "anil").index(algorithm)] if peers and device == "cpu" else None
        rows.append(
            [
                config,
                phase,
                device,
                algorithm,
                f"{stats[key]['mean']:.4f}",
                f"{stats[key]['median']:.4f}",
                f"{speedup:.2f}x" if speedup else "",
                f"{paper}x" if paper else "",
                f"{peer}" if peer else "",
            ]
        )
    return rows, {d: {name: round(value, 3) for name, value in r.items()} for d, r in ratios.items()}


def add_report_arguments(parser) -> None:
    """The flags of the reports beside the suite (``harness.commands.bench.reports``)."""
    parser.add_argument(
        "--floor",
        action="store_true",
        help="only print each step's FLOPs, bytes moved by the other kernels, and its floor at this "
        "machine's measured matmul rate and memory bandwidth (Table 6 steps and the paper's training iterations)",
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="with --floor: also time each step (median of --rounds, default 3) and print its distance to the floor",
    )
    parser.add_argument(
        "--paths",
        action="store_true",
        help="time every step on the generic path (before the fast paths), the fast path and, "
        "where it applies, bf16, rounds interleaved in one run; writes <device>-paths.json",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="time each Table 6 step as every installed peer library writes it (learn2learn, higher, torchopt, "
        "torch.func) beside the harness's, rounds interleaved; prints the lead over the fastest; "
        "writes <device>-peers.json",
    )
    parser.add_argument("--peer", action="append", default=None, help="with --peers: only this peer (repeatable)")
    parser.add_argument(
        "--backbone",
        default=None,
        help="with --paths: the same step shapes on this backbone (e.g. resnet12); writes <device>-paths-BACKBONE.json",
    )
    parser.add_argument(
        "--config", action="append", default=None, help="with --paths: only this step shape (repeatable)"
    )


class BenchCommand:
    name = "bench"
    description = "run the Table 6 speed suite (pytest-benchmark) and print times and speedups beside the paper's"

    def add_arguments(self, parser):
        parser.add_argument("--save", metavar="NAME", help="store this run as a pytest-benchmark baseline")
        parser.add_argument("--compare", metavar="NAME", help="compare against a saved baseline (e.g. 0001 or NAME)")
        parser.add_argument(
            "--max-regression",
            default=None,
            help="with --compare: fail when a median grows more (default 10%%; with --algo, a ratio: 25%%)",
        )
        parser.add_argument(
            "--algo",
            default=None,
            help="time any registered algorithm's Table 6 steps as ratios to a reference timed in the same run "
            "(rounds interleaved); --save / --compare NAME or FILE.json then work on those ratios",
        )
        parser.add_argument(
            "--reference",
            default=None,
            help="with --algo: the algorithm to time against (default maml; fomaml for a first-order algorithm)",
        )
        parser.add_argument(
            "--rounds", type=int, default=None, help="rounds per benchmark (default: 10, 5 for slow MAML steps)"
        )
        parser.add_argument("--out", default=None, help="JSON output (default results/benchmarks/<device>.json)")
        parser.add_argument(
            "--record",
            action="store_true",
            help="append the gate's speedups (its own interleaved rounds) to results/benchmarks/<device>-ratios.json "
            "(the CI gate compares against the lowest recorded value)",
        )
        parser.add_argument(
            "-k", dest="keyword", default=None, help="only benchmarks matching this pytest -k expression"
        )
        add_report_arguments(parser)

    def run(self, args) -> int:
        if args.max_regression is not None and not re.fullmatch(r"\d+(\.\d+)?%", args.max_regression):
            raise HarnessError(f"--max-regression must look like 10%, got {args.max_regression!r}")
        if args.reference and not args.algo:
            raise HarnessError("--reference names what --algo is timed against; give --algo too")
        if args.algo:
            from harness.commands.bench.algo import bench_algorithm

            return bench_algorithm(args, float(args.max_regression[:-1]) / 100 if args.max_regression else None)
        missing = [name for name in ("pytest", "pytest_benchmark") if importlib.util.find_spec(name) is None]
        if missing and not (args.floor or args.paths or args.peers):
            raise HarnessError(
                f"harness bench runs the pytest-benchmark suite, and {', '.join(missing)} is not installed: "
                f"pip install 'feature-reuse-harness[test]' (--floor, --paths and --peers do without it)"
            )
        import torch

        from harness.commands.bench.reports import print_floor, print_paths, print_peers

        if args.floor:
            return print_floor(args)
        if args.paths:
            return print_paths(args)
        if args.peers:
            return print_peers(args)
        compare = compare_flags(args.compare, args.max_regression or "10%") if args.compare else []  # before any write
        device = "cuda" if torch.cuda.is_available() else "cpu"
        out = Path(args.out) if args.out else RESULTS / f"{device_file_name(device)}.json"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"cannot write benchmark results to {out.parent}: {exc.strerror or exc}") from None
        # no cache: an installed suite lives in site-packages, which pytest must not write to
        pytest_args = [
            str(SUITE),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={out}",
            "--benchmark-columns=mean,median,stddev,rounds",
        ]
        if args.save:
            pytest_args.append(f"--benchmark-save={args.save}")
        pytest_args += compare
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        if args.rounds:
            os.environ["HARNESS_BENCH_ROUNDS"] = str(args.rounds)
        if args.record:  # the gate's own interleaved ratios are what it later compares against
            os.environ["HARNESS_RECORD_RATIOS"] = str(out)
        import pytest

        status = pytest.main(pytest_args)
        print_suite_report(out, device, args.record)
        return int(status)


def print_suite_report(out: Path, device: str, record: bool) -> None:
    """The suite's table beside the paper and the peers, its speedups, and (``--record``) where the gate's went."""

    if out.exists():
        rows, ratios_by_device = summarise(json.loads(out.read_text()))
        ratios = ratios_by_device.get(device, {})
        print(
            tabulate(
                rows,
                headers=[
                    "config",
                    "phase",
                    "device",
                    "algorithm",
                    "mean s",
                    "median s",
                    "speedup vs MAML",
                    "paper ANIL speedup",
                    "learn2learn s (same CPU; its inference: 5 steps)",
                ],
                tablefmt="github",
            )
        )
        print(f"raw pytest-benchmark JSON: {out}")
        if ratios:
            print("speedups: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
        if record:
            print(
                f"recorded the gate's speedups (appended to the runs there): {out.with_name(f'{device}-ratios.json')}"
            )


def compare_flags(name: str, max_regression: str) -> list[str]:
    """pytest-benchmark's flags comparing with saved baseline ``name``, refused at once when none matches."""
    # pytest-benchmark's default storage, ./.benchmarks/<machine>/<NNNN>_<name>.json, searched as it searches
    # it; checked here so that a wrong name fails at once, not after the whole suite has run.
    saved = sorted(p for p in Path(".benchmarks").glob("*/*.json") if p.parent.name != "ratios")  # not --algo's
    if not any(path.stem.startswith(name) or name in path.stem for path in saved):
        names = ", ".join(path.stem for path in saved[-5:]) or "none saved yet"
        raise HarnessError(
            f"--compare {name}: no saved baseline matches in {Path('.benchmarks').resolve()} "
            f"(saved: {names}); save one with harness bench --save NAME"
        )
    return [
        f"--benchmark-compare={name}",
        f"--benchmark-compare-fail=median:{max_regression}",
    ]


@harness.hookimpl
def register_commands(registry):
    registry.add(BenchCommand())

"""What ``harness bench`` prints beside the pytest-benchmark suite: ``--paths``, ``--peers`` and ``--floor``.

Each times or counts the steps of ``harness.speed.benchmarks`` in this process and writes its JSON under
``results/benchmarks/`` (``--floor`` only prints).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tabulate import tabulate

from harness.errors import HarnessError
from harness.speed.records import PEERS_LEARN2LEARN, RESULTS, device_file_name, machine_description


def print_paths(args) -> int:
    import torch

    from harness.run.files import write_json
    from harness.speed.benchmarks import CONFIGS, compare_paths

    device = "cuda" if torch.cuda.is_available() else "cpu"
    plugins = args.plugins
    suffix = f"-{args.backbone}" if args.backbone else ""
    out = Path(args.out) if args.out else RESULTS / f"{device_file_name(device)}-paths{suffix}.json"
    for name in args.config or []:
        if name not in CONFIGS:
            raise HarnessError(f"unknown step shape {name!r}; shapes: {', '.join(CONFIGS)}")
    if args.backbone:
        plugins.backbones.get(args.backbone)  # an unknown name lists the valid ones
    configs = [
        dataclasses.replace(config, backbone=args.backbone or config.backbone)
        for name, config in CONFIGS.items()
        if not args.config or name in args.config
    ]
    rows = compare_paths(plugins, device, rounds=args.rounds or 5, configs=configs)
    print(tabulate(paths_table(rows, args.backbone, device), headers=PATHS_HEADERS, tablefmt="github"))
    write_json(
        out,
        {
            "machine": machine_description(device),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "rows": rows,
        },
    )
    print(f"written to {out}")
    return 0


PATHS_HEADERS = [
    "config",
    "phase",
    "algorithm",
    "generic s",
    "fast s",
    "fast speedup",
    "composite s",
    "fused / composite",
    "bf16 s",
    "bf16 speedup",
    "learn2learn s",
]


def paths_table(rows: list[dict], backbone: str | None, device: str) -> list[list]:
    """``--paths`` rows as the printed table: each step's generic, fast, composite and bf16 medians and speedups."""
    table = []
    for row in rows:
        generic, fast, bf16 = row["generic_median_s"], row["fast_median_s"], row.get("bf16_median_s")
        composite = row.get("composite_median_s")
        # learn2learn was measured on the paper's Conv4 only
        peers = None if backbone else PEERS_LEARN2LEARN.get((row["config"], row["phase"]))
        peer = peers[("maml", "fomaml", "anil").index(row["algorithm"])] if peers and device == "cpu" else None
        table.append(
            [
                f"{row['config']} ({row['backbone']})" if backbone else row["config"],
                row["phase"],
                row["algorithm"],
                f"{generic:.4f}",
                f"{fast:.4f}",
                f"{generic / fast:.2f}x",
                f"{composite:.4f}" if composite else "",
                f"{composite / fast:.2f}x" if composite else "",
                f"{bf16:.4f}" if bf16 else "",
                f"{generic / bf16:.2f}x" if bf16 else "",
                peer or "",
            ]
        )
    return table


def print_peers(args) -> int:
    import torch

    from harness.run.allocator import malloc_setting
    from harness.run.files import write_json
    from harness.speed.benchmarks import CONFIGS
    from harness.speed.peers import PEERS, available, compare

    for name in args.peer or []:
        if name not in PEERS:
            raise HarnessError(f"unknown peer {name!r}; peers: {', '.join(PEERS)}")
        if name not in available():
            raise HarnessError(f"peer {name!r} is not installed (pip install -e '.[peers]')")
    for name in args.config or []:
        if name not in CONFIGS:
            raise HarnessError(f"unknown step shape {name!r}; shapes: {', '.join(CONFIGS)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = [config for name, config in CONFIGS.items() if not args.config or name in args.config]
    peers = args.peer or available()
    print(f"malloc, the same for the harness and every peer in this process: {malloc_setting()}")
    rows = compare(args.plugins, rounds=args.rounds or 3, configs=configs, peers=peers, device=device)
    table = [
        [
            row["config"],
            row["phase"],
            row["algorithm"],
            f"{row['median_s']['harness']:.4f}",
            *(f"{row['median_s'][p]:.4f}" if p in row["median_s"] else "n/a" for p in peers),
            f"{row['lead']:.2f}x ({row['fastest_peer']})",
        ]
        for row in rows
    ]
    print(
        tabulate(
            table,
            headers=["config", "phase", "algorithm", "harness s", *(f"{p} s" for p in peers), "lead"],
            tablefmt="github",
        )
    )
    out = Path(args.out) if args.out else RESULTS / f"{device_file_name(device)}-peers.json"
    versions = {p: _version(p) for p in peers}
    write_json(
        out,
        {
            "machine": machine_description(device),
            "torch": torch.__version__,
            "peers": versions,
            "malloc": malloc_setting(),
            "date": time.strftime("%Y-%m-%d"),
            "rows": rows,
        },
    )
    print(f"written to {out}")
    return 0


def print_floor(args) -> int:
    import torch

    from harness.speed.floors import FAMILIES, floor_rows, matmul_rate, memory_bandwidth

    rate, bandwidth = matmul_rate(), memory_bandwidth()
    rows = floor_rows(args.plugins, rate, bandwidth, rounds=(args.rounds or 3) if args.measure else 0)
    print(
        f"float32 matmul rate (1024x1024, torch.mm, {torch.get_num_threads()} threads): {rate / 1e9:.1f} GFLOP/s; "
        f"memory bandwidth (torch.add of 128 MiB tensors): {bandwidth / 1e9:.1f} GB/s"
    )
    families = (*FAMILIES, "other")
    headers = ["config", "phase", "algorithm", "GFLOP", "GB moved", *(f"GB {f}" for f in families)]
    headers += ["compute floor s", "memory floor s", "floor s"]
    if args.measure:
        headers += ["measured s", "measured / floor"]
    table = []
    for row in rows:
        line = [row["config"], row["phase"], row["algorithm"], f"{row['gflop']:.2f}", f"{row['gbyte']:.2f}"]
        line += [f"{row[f'gbyte {f}']:.2f}" for f in families]
        line += [f"{row['compute_floor_s']:.4f}", f"{row['memory_floor_s']:.4f}", f"{row['floor_s']:.4f}"]
        if args.measure:
            line += [f"{row['measured_s']:.4f}", f"{row['distance']:.1f}x"]
        table.append(line)
    print(tabulate(table, headers=headers, tablefmt="github"))
    return 0


def _version(peer: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch" if peer == "torch.func" else peer)
    except PackageNotFoundError:
        return "unknown"

"""``harness bench --algo NAME``: any algorithm's Table 6 steps as ratios to a reference, saved and compared.

    harness bench --algo boil --save boil                 # .benchmarks/ratios/boil.json
    harness bench --algo boil --compare boil              # exit 1 when a step's ratio grew > 25 %
    harness bench --algo reptile --reference fomaml --compare ci/reptile-speed.json --max-regression 30%

See ``harness.speed.algorithm_speed`` for what is measured and why ratios.
"""

from __future__ import annotations

import sys

from tabulate import tabulate

from harness.errors import HarnessError
from harness.speed import algorithm_speed

#: Flags of the pytest-benchmark suite and its reports that time something else than --algo does.
OTHER_MODES = ("floor", "measure", "paths", "peers", "record", "keyword")


def bench_algorithm(args, max_regression: float | None) -> int:
    """Validate everything, then time; 1 when a step regressed against ``--compare``'s baseline."""
    import torch

    from harness.run.devices import describe_device

    given = [f"--{mode.replace('keyword', 'k')}" for mode in OTHER_MODES if getattr(args, mode)]
    if given:
        raise HarnessError(f"--algo times one algorithm against a reference; {given[0]} does not apply to it")
    plugins = args.plugins
    algorithm = plugins.algorithms.get(args.algo)
    reference = args.reference or algorithm_speed.reference_for(algorithm)
    plugins.algorithms.get(reference)
    if args.backbone:
        plugins.backbones.get(args.backbone)
    shapes = algorithm_speed.step_shapes(args.config, args.backbone)
    phases = algorithm_speed.timed_phases(algorithm)
    wanted = algorithm_speed.describe(
        args.algo, reference, args.backbone, [f"{s.name} {p}" for s in shapes for p in phases]
    )
    baseline = algorithm_speed.load_baseline(args.compare, wanted) if args.compare else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rounds = args.rounds or 5
    steps = algorithm_speed.measure(plugins, args.algo, reference, shapes, device, rounds)
    rows = [[key, step["seconds"], step["reference_seconds"], f"{step['ratio']:.2f}x"] for key, step in steps.items()]
    print(tabulate(rows, headers=["step", f"{args.algo} s", f"{reference} s", "ratio"], tablefmt="github"))
    machine = describe_device(device)
    if args.save:
        path = algorithm_speed.save_baseline(
            args.save, wanted, steps, f"{machine['device_name']}, {machine['torch_threads']} threads", rounds
        )
        print(f"saved baseline {path}")
    if baseline is None:
        return 0
    tolerance = algorithm_speed.DEFAULT_TOLERANCE if max_regression is None else max_regression
    failed = algorithm_speed.regressions(baseline, args.compare, steps, tolerance)
    for line in failed:
        print(f"harness: regression: {line}", file=sys.stderr)
    if not failed:
        print(f"no step regressed by more than {tolerance:.0%} against baseline {args.compare}")
    return 1 if failed else 0

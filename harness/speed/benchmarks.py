"""Step workloads for the speed suite (Raghu et al. 2020, Table 6), on random inputs.

A workload is one configuration (shapes, meta-batch, inner steps) x one
algorithm x one phase:

- ``train``: meta-loss forward, backward and one Adam step of the outer loop;
- ``inference``: adaptation with 10 inner steps on the support set and
  prediction of the query set, without an outer graph.

The Table 6 shapes are MiniImageNet 5-way 1-shot and 5-shot with task batch
1 and target (query) set 1; Omniglot 20-way 1-shot uses meta-batch 16 with 1
query per class, the project's training configuration. Inputs are uniform
random images (never zeros, which would make BatchNorm degenerate) and fixed
labels; BatchNorm uses batch statistics as in training.

Used by ``harness/speed/suite`` (pytest-benchmark) and ``harness bench``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from harness.data.episodes import Episodes
from harness.run.assembly import build_model, run_algorithm

#: Paper speedups of ANIL over MAML (Section 4 text, rounded from Table 6; TensorFlow, Titan Xp): a floor for our ratios.
PAPER_SPEEDUP = {"train": 1.7, "inference": 4.1}
#: Paper Table 6 per-configuration ANIL speedups, for display (training, inference).
PAPER_TABLE6 = {"mini-5w1s": (1.79, 4.15), "mini-5w5s": (1.84, 4.87)}  # Table 6 "Speedup" columns
TEST_INNER_STEPS = 10


@dataclass(frozen=True)
class BenchConfig:
    name: str
    backbone: str
    channels: int
    image_size: int
    ways: int
    shots: int
    queries: int
    tasks: int
    inner_steps: int
    inner_lr: float


CONFIGS = {
    "mini-5w1s": BenchConfig("mini-5w1s", "conv4-pool", 3, 84, 5, 1, 1, 1, 5, 0.01),
    "mini-5w5s": BenchConfig("mini-5w5s", "conv4-pool", 3, 84, 5, 5, 1, 1, 5, 0.01),
    "omniglot-20w1s": BenchConfig("omniglot-20w1s", "conv4", 1, 28, 20, 1, 1, 16, 5, 0.1),
}
#: The paper's own training iterations (Raghu et al. 2020 App. A; 15 queries per class for MiniImageNet,
#: cbfinn/maml), for the floors of ``harness bench --floor``; Omniglot 20w1s is the Table 6 shape already.
PAPER_TRAINING = {
    "paper mini-5w1s": BenchConfig("paper mini-5w1s", "conv4-pool", 3, 84, 5, 1, 15, 4, 5, 0.01),
    "paper mini-5w5s": BenchConfig("paper mini-5w5s", "conv4-pool", 3, 84, 5, 5, 15, 4, 5, 0.01),
    "paper omniglot-20w1s": CONFIGS["omniglot-20w1s"],
}
ALGORITHMS = ("maml", "fomaml", "anil")
PHASES = ("train", "inference")


#: The gate's step with PyTorch's composite BatchNorm and activation double backwards (``make_step``'s
#: ``"composite"`` path), timed beside MAML's for the ``fused/composite`` ratio.
COMPOSITE_MAML = "maml composite"


def speedups(medians: dict) -> dict[str, float]:
    """``{"anil/maml mini-5w1s train": ratio, ...}`` from medians keyed ``(step, config, phase, device)``.

    FOMAML's inference step is MAML's (no outer graph either way), so only its training ratio is
    reported; a ``COMPOSITE_MAML`` step gives ``fused/composite maml <config> train``, how much faster
    the fused kernels make MAML. Keys carry no device: the ratio file is per device.
    """
    ratios = {}
    for (step, config, phase, device), seconds in medians.items():
        maml = medians.get(("maml", config, phase, device))
        if step == "maml" or not maml or (step == "fomaml" and phase == "inference"):
            continue
        if step == COMPOSITE_MAML:
            ratios[f"fused/composite maml {config} {phase}"] = seconds / maml
        else:
            ratios[f"{step}/maml {config} {phase}"] = maml / seconds
    return ratios


def gate_medians(plugins, device, rounds: int) -> dict[tuple[str, str, str, str], float]:
    """Median seconds of every step the speed gate compares, keyed ``(step, config, phase, device)``.

    The steps of one shape and phase are timed in interleaved rounds (:func:`interleaved_medians`), so
    whatever else runs on the machine slows them alike and their ratios keep their meaning.
    """
    medians = {}
    for config in CONFIGS.values():
        for phase in PHASES:
            steps = {algorithm: make_step(plugins, algorithm, config, phase, device) for algorithm in ALGORITHMS}
            if phase == "train":
                steps[COMPOSITE_MAML] = make_step(plugins, "maml", config, phase, device, "composite")
            for step, seconds in interleaved_medians(steps, rounds).items():
                medians[(step, config.name, phase, str(device))] = seconds
    return medians


#: How far a ratio may fall below the lowest recorded value before the gate fails. Repeat
#: runs of one step on the 2-core CPU differ by up to 25 %; see ``results/benchmarks/NOTES.md``.
NOISE_TOLERANCE = 0.25


def reference_ratios(path) -> dict[str, float]:
    """The lowest recorded value of each speedup in a ratio file (``{}`` when there is none).

    The file keeps every recorded run (``{"runs": [{"source": ..., "ratios": {...}}]}``):
    machines of one kind differ (the CI machine's FOMAML/MAML ratio on MiniImageNet
    5w1s was 1.88x where the development machine's was 2.53x), so the gate compares
    against the lowest value seen on any of them rather than the latest.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return {}
    lowest: dict[str, float] = {}
    for run in json.loads(path.read_text())["runs"]:
        for key, value in run["ratios"].items():
            lowest[key] = min(value, lowest.get(key, value))
    return lowest


def record_ratios(path, ratios: dict[str, float], source: str) -> None:
    """Append one run's speedups to a ratio file, keeping the runs recorded before."""
    import json
    from pathlib import Path

    from harness.run.files import write_json

    path = Path(path)
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    write_json(path, {"runs": runs + [{"source": source, "ratios": ratios}]})


def speed_gate_failures(measured: dict[str, float], reference: dict[str, float]) -> list[str]:
    """Why the measured speedups fail the gate: the paper's floor, FOMAML <= MAML, or a drop below the record."""
    failures = []
    for key, value in sorted(measured.items()):
        if key.startswith("anil/maml mini"):
            floor = PAPER_SPEEDUP["train" if key.endswith("train") else "inference"]
            if value < floor:
                failures.append(f"{key}: {value:.2f}x is below the paper's {floor}x")
        if key.startswith("fomaml/maml") and value < 1.0:
            failures.append(f"{key}: first-order MAML is not faster than MAML ({value:.2f}x)")
        lowest = reference.get(key)
        if lowest and value < lowest * (1 - NOISE_TOLERANCE):
            failures.append(
                f"{key}: {value:.2f}x is more than {NOISE_TOLERANCE:.0%} below the lowest recorded {lowest:.2f}x"
            )
    return failures


def random_episodes(config: BenchConfig, device, seed: int = 0) -> Episodes:
    generator = torch.Generator().manual_seed(seed)
    shape = (config.tasks, config.ways, config.channels, config.image_size, config.image_size)

    def images(per_class):
        x = torch.rand(config.tasks, config.ways * per_class, *shape[2:], generator=generator)
        return x.to(device)  # [tasks, ways*per_class, C, H, W]

    labels = lambda per_class: torch.arange(config.ways).repeat_interleave(per_class).repeat(config.tasks, 1).to(device)
    return Episodes(
        images(config.shots), labels(config.shots), images(config.queries), labels(config.queries), config.ways
    )


def make_step(plugins, algorithm_name: str, config: BenchConfig, phase: str, device, path: str = "fast"):
    """A zero-argument callable running one step; synchronises CUDA so timings are complete.

    ``path``: ``"fast"`` (the default code path), ``"generic"`` (backbone fast paths off,
    ``--inner-loop generic``: the code before the fast-path work), ``"composite"`` (fast path with
    PyTorch's composite BatchNorm and activation double backwards, ``--layer-kernels composite``)
    or ``"bf16"`` (fast path, body features under bfloat16 autocast).
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
    if torch.device(device).type == "cuda":
        from harness.run.devices import full_float32_on_cuda

        full_float32_on_cuda()
    torch.manual_seed(0)
    algorithm = plugins.algorithms.get(algorithm_name)
    backbone = plugins.backbones.get(config.backbone)
    model = build_model(backbone, algorithm, config.channels, config.image_size, config.ways).to(device)
    torch.nn.init.normal_(model.head.weight, std=0.01)  # a zero head would make the first inner step trivially cheap
    episodes = random_episodes(config, device)
    hp = SimpleNamespace(
        inner_steps=config.inner_steps,
        test_inner_steps=TEST_INNER_STEPS,
        inner_lr=config.inner_lr,
        outer_lr=1e-3,
        inner_loop="generic" if path == "generic" else "fast",
        precision="bf16" if path == "bf16" else "fp32",
        layer_kernels="composite" if path == "composite" else "fused",
    )
    algorithm = run_algorithm(algorithm, model, hp, device)  # Meta-SGD's step sizes, learned with the model's
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.owned_parameters()], lr=1e-3)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        algorithm.train_step(model, episodes, hp)
        optimizer.step()
        sync()

    def inference_step():
        with torch.no_grad():
            algorithm.predict(model, episodes, hp).argmax(-1)
        sync()

    step = train_step if phase == "train" else inference_step
    step.model = model  # type: ignore[attr-defined]  # for the tests: the gradients a step leaves
    return step


#: Code paths ``compare_paths`` times against each other (see ``make_step``).
PATHS = ("generic", "fast", "composite", "bf16")


def interleaved_times(steps: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each named step in each of ``rounds`` rounds: one warm-up each, then all steps in turn, so
    that machine drift hits every step alike. The one timing loop of the harness (one step: a dict of one);
    a step synchronises its device itself (``make_step``)."""
    import time

    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up, not timed
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return times


def interleaved_medians(steps: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each named step (:func:`interleaved_times`)."""
    import statistics

    return {name: statistics.median(t) for name, t in interleaved_times(steps, rounds).items()}


def path_applies(path: str, algorithm) -> bool:
    """Whether timing ``path`` says anything about ``algorithm`` (else it runs the same kernels as ``fast``)."""
    if path == "bf16":
        return algorithm.uses_body_features
    if path == "composite":
        return not algorithm.first_order and not algorithm.uses_body_features
    return True


def compare_paths(plugins, device, rounds: int, configs=None, algorithms=ALGORITHMS) -> list[dict]:
    """Median seconds of every step on each code path, rounds interleaved so machine drift hits all alike.

    bf16 is timed only for algorithms whose body features go through ``body_features``; composite only for
    those whose meta-gradient differentiates the body's backward (second order through the body).
    """

    rows = []
    for config in configs or CONFIGS.values():
        for algorithm in algorithms:
            paths = [p for p in PATHS if path_applies(p, plugins.algorithms.get(algorithm))]
            for phase in PHASES:
                steps = {p: make_step(plugins, algorithm, config, phase, device, p) for p in paths}
                medians = interleaved_medians(steps, rounds)
                rows.append(
                    {
                        "config": config.name,
                        "backbone": config.backbone,
                        "algorithm": algorithm,
                        "phase": phase,
                        "device": str(device),
                        "rounds": rounds,
                        **{f"{p}_median_s": seconds for p, seconds in medians.items()},
                    }
                )
    return rows

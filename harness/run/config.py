"""The resolved configuration of one run.

Values come from three layers, later ones winning: the dataclass defaults
below, the task sampler's ``paper_defaults(spec)`` (the paper's
hyperparameters for that dataset, each with its source), and command-line
flags. The resolved config is written to ``config.json`` in the run
directory and stored in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

PRECISIONS = ("fp32", "bf16")  # harness.engine.meta_learning.Engine maps them to autocast dtypes
INNER_LOOPS = (
    "auto",
    "fast",
    "generic",
)  # harness.engine.meta_learning.Engine; auto is decided by a rule in harness.run.assembly.fast_or_fallback
#: The fast paths' BatchNorm and activation kernels (``--layer-kernels``): ``fused`` (``harness.engine.kernels``:
#: an explicit double backward of a few passes) or ``composite`` (PyTorch's own); equal to rounding.
LAYER_KERNELS = ("fused", "composite")
#: The head's initial weights (``--head-init``), applied after the backbone builds the network:
#: ``zero`` (weights and bias 0: every task starts from the uniform prediction; the "zeroing trick"
#: of Kao et al., ICLR 2022), ``normal`` (weights ~ N(0, 1), bias 0: the reference TF code's w5/b5,
#: cbfinn/maml ``construct_conv_weights``), ``default`` (PyTorch's ``nn.Linear`` initialisation).
HEAD_INITS = ("zero", "normal", "default")


class RecordedConfig:
    """What image and meta-RL run configs share: ``config.json`` round trips and the default run directory."""

    algo: str
    seed: int

    @property
    def task(self) -> str:
        """The task spec (image runs) or environment (meta-RL runs) the run trains on."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """The config a ``config.json`` records; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # every subclass is a dataclass
        return cls(**{k: v for k, v in values.items() if k in known})

    def default_run_dir(self) -> Path:
        """``results/runs/<algo>-<task>-seed<s>-<YYYYmmdd-HHMMSS>``, where ``harness run`` writes without ``--out``."""
        return Path("results") / "runs" / f"{self.algo}-{self.task}-seed{self.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class RunConfig(RecordedConfig):
    algo: str
    data: str  # task spec, e.g. "omniglot-20w1s"
    backbone: str | None = None  # None: the task sampler's default_backbone
    seed: int = 0
    iterations: int = (
        30_000  # Raghu et al. 2020, App. B.1 / C.4 ("all models were trained for 30000 iterations"); datasets override
    )
    meta_batch_size: int = 16  # tasks per outer step; datasets override
    inner_steps: int = 5  # inner-loop steps during meta-training
    test_inner_steps: int = 10  # inner-loop steps at validation/test
    inner_lr: float = 0.1  # alpha
    outer_lr: float = 1e-3  # beta, Adam (Finn et al. 2017, Section 5.2)
    queries: int = 1  # query images per class; datasets override
    bn_mode: str = "batch"  # see harness_plugins.backbones.conv4
    precision: str = "fp32"  # body features' compute dtype; the paper's code trains in float32
    head_init: str = "zero"  # see HEAD_INITS; zero: the backbones' own (conv4.py measures why)
    inner_loop: str = "auto"  # fast paths or generic vmap; auto: fast wherever the model has them (a rule, no timing)
    layer_kernels: str = "fused"  # see LAYER_KERNELS
    split: str = "default"  # dataset-specific class split (omniglot: "maml" or "vinyals")
    val_every: int = 500  # iterations between validations (0: never)
    val_tasks: int = 100  # validation tasks (fixed seed, same tasks every time)
    test_tasks: int = 600  # Raghu et al. 2020 / Finn et al. 2017: 600 test tasks, 95% CI
    eval_batch_size: int = 32  # tasks per vectorised evaluation chunk (speed only)
    checkpoint_every: int = 0  # also keep checkpoints/step-XXXXXXX.pt every N iterations (0: off)
    log_every: int = 50  # iterations between training rows in metrics.jsonl
    device: str = "auto"
    data_root: str | None = None  # resolved at run time; not part of the identity of a run
    sources: dict[str, str] = field(default_factory=dict)  # where each non-default value came from

    @property
    def task(self) -> str:
        return self.data

    def validate(self) -> None:
        for spec in dataclasses.fields(self):
            value, kind = getattr(self, spec.name), str(spec.type)
            wanted = {"int": (int,), "float": (int, float), "str": (str,)}.get(kind.replace(" | None", ""))
            if (
                wanted
                and not (value is None and "None" in kind)
                and (not isinstance(value, wanted) or isinstance(value, bool))
            ):
                raise HarnessError(
                    f"{spec.name.replace('_', '-')} must be {'an integer' if kind == 'int' else 'a ' + kind.split()[0]}"
                    f", got {value!r}"
                )
        if not 0 <= self.seed < 2**32:
            raise HarnessError(
                f"--seed must be between 0 and {2**32 - 1} (numpy and torch seed range), got {self.seed}"
            )
        positive = ["iterations", "meta_batch_size", "test_tasks", "eval_batch_size", "log_every", "val_tasks"]
        for name in positive:
            if getattr(self, name) < 1:
                raise HarnessError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ["inner_steps", "test_inner_steps", "val_every", "checkpoint_every"]:
            if getattr(self, name) < 0:
                raise HarnessError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise HarnessError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.head_init not in HEAD_INITS:
            raise HarnessError(f"unknown head initialisation {self.head_init!r}; valid: {', '.join(HEAD_INITS)}")
        if self.inner_loop not in INNER_LOOPS:
            raise HarnessError(f"unknown inner loop {self.inner_loop!r}; valid: {', '.join(INNER_LOOPS)}")
        if self.layer_kernels not in LAYER_KERNELS:
            raise HarnessError(f"unknown layer kernels {self.layer_kernels!r}; valid: {', '.join(LAYER_KERNELS)}")
        if not self.inner_lr >= 0 or not self.outer_lr > 0:
            raise HarnessError(f"learning rates must be positive: inner {self.inner_lr}, outer {self.outer_lr}")


def resolve_config(algo: str, data: str, task_sampler, spec, overrides: dict[str, Any]) -> RunConfig:
    """Defaults, then the dataset's paper defaults, then explicit overrides."""
    config = RunConfig(algo=algo, data=data)
    for name, (value, source) in task_sampler.paper_defaults(spec).items():
        setattr(config, name, value)
        config.sources[name] = source
    if spec.queries is not None:
        config.queries = spec.queries
        config.sources["queries"] = "task spec"
    if config.backbone is None:
        config.backbone = task_sampler.default_backbone
        config.sources["backbone"] = f"default of task sampler {task_sampler.name!r}"
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
            config.sources[name] = "command line"
    config.validate()
    return config

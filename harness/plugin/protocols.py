"""What each kind of plugin object must have, as typing protocols, and the check made when one registers.

The hook specs (``harness/plugin/hookspecs.py``) are the prose reference; these protocols say the same
for a type checker (``class MyAlgorithm(harness.plugin.protocols.Algorithm)`` is not needed: any object
with the members satisfies them). :func:`missing_members` is checked when a plugin registers an
object, so a plugin whose algorithm lacks ``predict`` is reported by name and disabled at load
time, not when a run reaches its first test hours later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Algorithm(Protocol):
    """A meta-learning algorithm as the core sees it (``register_algorithms``): the optional members are set to
    ``harness.plugin.algorithm.ImageAlgorithm``'s defaults when it registers, so every one is present."""

    name: str
    description: str
    domain: str
    trains: bool
    batch_kind: str
    uses_body_features: bool
    first_order: bool
    ignored_options: Mapping[str, str]
    adapt: Callable[..., Any] | None
    adapts: Callable[[str], bool] | None
    owns_parameters: bool
    inner_lr_transfers: bool
    progress_spans_run: bool

    def prepare_model(self, model) -> Any: ...

    def inner_lr(self, hp) -> Any: ...

    def train_step(self, model, episodes, hp) -> dict: ...

    def predict(self, model, episodes, hp): ...

    def head_outputs(self, spec, train_sampler) -> int: ...

    def for_run(self, model, hp) -> Any: ...

    def progress(self, step: int, iterations: int) -> float: ...

    def initial_parameters(self, model, ways: int) -> dict: ...

    def owned_parameters(self) -> Iterator: ...


@runtime_checkable
class MetaRLAlgorithm(Protocol):
    """A meta-RL algorithm: ``domain = "rl"`` (``harness.rl.meta_rl.MetaRLAlgorithm`` implements it)."""

    name: str
    domain: str

    def adapt_detached(self, policy, episodes, lr): ...

    def outer_step(self, policy, train, valid, lr, max_kl) -> dict: ...


@runtime_checkable
class Backbone(Protocol):
    name: str
    description: str

    def build(self, in_channels: int, image_size: int, ways: int, bn_mode: str): ...


@runtime_checkable
class OwnForwardTasks(Protocol):
    """A model with its own side-by-side forward, used instead of ``harness.engine.side_by_side``'s rules:
    ``params`` ``{name: [tasks, *shape]}``, ``images`` ``[tasks, n, C, H, W]`` -> logits ``[tasks, n, ways]``."""

    def forward_tasks(self, params: dict, images: Any, channels_last: bool) -> Any: ...


@runtime_checkable
class OwnBodyPerSet(Protocol):
    """A model with its own body-once forward: ``images`` ``[sum(set_sizes), C, H, W]``, each consecutive set
    normalised as its own batch -> features ``[sum(set_sizes), features]``."""

    def body_per_set(self, images: Any, set_sizes: list[int]) -> Any: ...


@runtime_checkable
class TaskSampler(Protocol):
    name: str
    description: str
    default_backbone: str

    def paper_defaults(self, spec) -> dict: ...

    def open(self, spec, split: str, data_root, options: dict): ...


@runtime_checkable
class Environment(Protocol):
    name: str
    description: str
    episode_steps: int
    observation_dim: int
    action_dim: int
    paper_defaults: dict
    paper_returns: Mapping[str, Any]

    def sample_tasks(self, count: int, rng): ...

    def make_vector_env(self, num_envs: int): ...


@runtime_checkable
class Evaluator(Protocol):
    name: str
    description: str
    options: Any  # a sequence of harness.evaluation.options.Option, or None: options passed as given

    def evaluate(self, run, options: dict) -> dict: ...


@runtime_checkable
class Tracker(Protocol):
    name: str
    description: str

    def start(self, run_dir, config: dict, step: int, kept: dict): ...


@runtime_checkable
class Command(Protocol):
    name: str
    description: str

    def add_arguments(self, parser) -> None: ...

    def run(self, args) -> int: ...


#: Registry kind (singular, as ``harness.plugin.registry.Registry.kind``) -> its protocol.
PROTOCOLS = {
    "algorithm": Algorithm,
    "backbone": Backbone,
    "task sampler": TaskSampler,
    "environment": Environment,
    "evaluator": Evaluator,
    "tracker": Tracker,
    "command": Command,
}


def missing_members(kind: str, obj: Any) -> list[str]:
    """The members of ``kind``'s protocol that ``obj`` lacks (``description`` is optional everywhere)."""
    protocol = PROTOCOLS.get(kind)
    if protocol is None:
        return []
    if kind == "algorithm" and obj.domain == "rl":  # set when it registered (harness.plugin.registry)
        protocol = MetaRLAlgorithm
    members = set(protocol.__dict__.get("__annotations__", {})) | {
        m for m, value in vars(protocol).items() if callable(value) and not m.startswith("_")
    }
    return sorted(m for m in members - {"description"} if not hasattr(obj, m))

"""The optional members of an image algorithm, with their defaults, resolved once when it registers.

``harness.plugin.protocols.Algorithm`` says what every algorithm must have; :class:`ImageAlgorithm`
gives every optional member its default, so a subclass states only where it differs. An algorithm
that does not subclass it gets the same defaults set on it by :func:`with_defaults` when its plugin
registers it, so the core reads every member directly (``harness/plugin/hookspecs.py``,
``register_algorithms``, documents each).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from harness.errors import HarnessError

NOTHING_IGNORED: Mapping[str, str] = MappingProxyType({})


class ImageAlgorithm:
    """An image meta-learning algorithm; a subclass defines ``train_step`` and ``predict`` (not defaulted, so
    that registering one without them is refused by name)."""

    name = "image-algorithm"
    description = ""
    #: ``"rl"`` for meta-RL algorithms (``harness.rl.meta_rl.MetaRLAlgorithm``).
    domain = "image"
    #: False: the model is never trained (random features); the initialisation is saved and tested.
    trains = True
    #: ``"classification"``: ``train_step`` gets ``(images [batch, C, H, W], labels [batch])`` over all
    #: training classes instead of episodes (pretraining regimes).
    batch_kind = "episodes"
    #: True when the body is never adapted, so its features are computed once per meta-batch
    #: (``harness.engine.meta_learning.body_features``) and ``--precision bf16`` may apply to them.
    uses_body_features = False
    #: True when the inner loop drops second-order terms (FOMAML is then its speed reference).
    first_order = False
    #: Run options (``RunConfig`` field -> why) that training and testing never read: given on
    #: the command line they are refused, and ``config.json`` records them as not used.
    ignored_options: Mapping[str, str] = NOTHING_IGNORED
    #: The inner loop: ``adapt`` is the algorithm's own, ``adapts(name)`` says which parameters the shared
    #: one updates (``harness.evaluation.fewshot.adapt_with``); neither: no inner loop (Prototypical Networks).
    adapt: Callable[..., Any] | None = None
    adapts: Callable[[str], bool] | None = None
    #: False when the run's ``--inner-lr`` is a step on something other than weights (CAVIA's context):
    #: ``-o adapt_as=NAME`` on its runs then needs ``-o adapt_lr=X`` instead of reusing it.
    inner_lr_transfers = True
    #: True when ``progress`` depends on the run's total iterations (MAML++'s cosine annealing): lengthening a
    #: finished run would start the annealing over mid-run, so a budget's ``until_plateau`` never extends it.
    progress_spans_run = False

    def prepare_model(self, model):
        """The model this algorithm trains, from the backbone's (add a context, wrap layers): applied wherever a
        run's model is built (training, ``--resume``, ``harness eval``), before the checkpoint's weights load."""
        return model

    def inner_lr(self, hp) -> Any:
        """The inner loop's step size: ``hp.inner_lr`` (a learned one: ``{name: tensor}``)."""
        return hp.inner_lr

    def head_outputs(self, spec, train_sampler) -> int:
        """Size of the model's head: the task spec's ways (all training classes for pretraining regimes)."""
        return spec.ways

    def for_run(self, model, hp) -> Any:
        """The run's instance of the algorithm: this one, or (an algorithm with parameters of its own) a new
        ``nn.Module`` holding them for ``model``."""
        return self

    def progress(self, step: int, iterations: int) -> float:
        """The factor on ``--outer-lr`` for the next step; an algorithm anneals with training progress here."""
        return 1.0

    def initial_parameters(self, model, ways: int) -> dict:
        """Where the inner loop starts, for parameter names whose start is not the model's own value."""
        return {}

    @property
    def owns_parameters(self) -> bool:
        """True for an algorithm that is an ``nn.Module``: the outer optimiser learns its parameters with the
        model's, and every checkpoint saves them under ``"algorithm"``."""
        import torch

        return isinstance(self, torch.nn.Module)

    def owned_parameters(self) -> Iterator:
        """The parameters of its own (none unless it is an ``nn.Module``)."""
        return iter(self.parameters()) if self.owns_parameters else iter(())  # type: ignore[attr-defined]


#: What :func:`with_defaults` sets on an algorithm that lacks it (methods bound to the algorithm).
OPTIONAL_MEMBERS = (
    "description",
    "domain",
    "trains",
    "batch_kind",
    "uses_body_features",
    "first_order",
    "ignored_options",
    "adapt",
    "adapts",
    "inner_lr",
    "inner_lr_transfers",
    "progress_spans_run",
    "prepare_model",
    "head_outputs",
    "for_run",
    "progress",
    "initial_parameters",
    "owns_parameters",
    "owned_parameters",
)


def with_defaults(algorithm: Any) -> Any:
    """``algorithm`` with every optional member it lacks set to :class:`ImageAlgorithm`'s default, once, so
    that the core never probes for one. A subclass of ``ImageAlgorithm`` is returned as it is; an object
    that refuses new attributes is refused in one line."""
    if isinstance(algorithm, ImageAlgorithm):
        return algorithm
    for member in OPTIONAL_MEMBERS:
        if hasattr(algorithm, member):
            continue
        default = ImageAlgorithm.__dict__[member]
        if isinstance(default, property):
            value = default.fget(algorithm)  # type: ignore[misc]
        elif isinstance(default, types.FunctionType):
            value = types.MethodType(default, algorithm)
        else:
            value = default
        try:
            setattr(algorithm, member, value)
        except (AttributeError, TypeError):
            raise HarnessError(
                f"algorithm {algorithm.name!r} has no {member!r} and takes no default for it; "
                f"subclass harness.plugin.algorithm.ImageAlgorithm"
            ) from None
    return algorithm


def refuse_ignored_options(algorithm: ImageAlgorithm, given: Mapping[str, object]) -> None:
    """One line naming the first option in ``given`` (non-None values) that ``algorithm`` never reads."""
    for name, value in given.items():
        if value is not None and name in algorithm.ignored_options:
            raise HarnessError(
                f"{algorithm.name} does not use --{name.replace('_', '-')} ({algorithm.ignored_options[name]}); "
                f"leave it out"
            )


def mark_ignored_options(algorithm: ImageAlgorithm, sources: dict[str, str]) -> None:
    """Record in the config's sources that the values of ignored options do not matter."""
    for name, why in algorithm.ignored_options.items():
        sources[name] = f"not used by {algorithm.name}: {why}"

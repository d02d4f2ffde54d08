"""Defaults for the optional members of an image algorithm, as a base class to subclass.

``harness.plugin.protocols.Algorithm`` says what every algorithm must have; this class gives the
optional members their defaults, so a subclass states only where it differs. An algorithm
that does not subclass it still works: the core reads each optional member with the same
default (``harness/plugin/hookspecs.py``, ``register_algorithms``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from harness.errors import HarnessError

NOTHING_IGNORED: Mapping[str, str] = MappingProxyType({})


class ImageAlgorithm:
    """An image meta-learning algorithm; a subclass defines ``train_step`` and ``predict`` (not defaulted, so
    that registering one without them is refused by name)."""

    name = "image-algorithm"
    description = ""
    #: True when the body is never adapted, so its features are computed once per meta-batch
    #: (``harness.engine.meta_learning.body_features``) and ``--precision bf16`` may apply to them.
    uses_body_features = False
    #: True when the inner loop drops second-order terms (FOMAML is then its speed reference).
    first_order = False
    #: Run options (``RunConfig`` field -> why) that training and testing never read: given on
    #: the command line they are refused, and ``config.json`` records them as not used.
    ignored_options: Mapping[str, str] = NOTHING_IGNORED


def refuse_ignored_options(algorithm, given: Mapping[str, object]) -> None:
    """One line naming the first option in ``given`` (non-None values) that ``algorithm`` never reads."""
    ignored = getattr(algorithm, "ignored_options", NOTHING_IGNORED)
    for name, value in given.items():
        if value is not None and name in ignored:
            raise HarnessError(
                f"{algorithm.name} does not use --{name.replace('_', '-')} ({ignored[name]}); leave it out"
            )


def mark_ignored_options(algorithm, sources: dict[str, str]) -> None:
    """Record in the config's sources that the values of ignored options do not matter."""
    for name, why in getattr(algorithm, "ignored_options", NOTHING_IGNORED).items():
        sources[name] = f"not used by {algorithm.name}: {why}"

"""feature-reuse-harness: MAML, FOMAML, ANIL and the analyses of Raghu et al. (ICLR 2020).

The public API for plugin authors, importable from ``harness`` directly::

    import harness

    class MyAlgorithm(harness.GradientMetaLearner): ...

    @harness.hookimpl
    def register_algorithms(registry):
        registry.add(MyAlgorithm())

Everything but ``hookimpl`` and ``HarnessError`` is imported on first use, so ``import harness``
stays cheap (the command line prints its first line before torch loads).
"""

import importlib

import pluggy

from harness.errors import HarnessError

__version__ = "0.1.0"

#: Decorator for hook implementations in plugins: ``@harness.hookimpl``.
hookimpl = pluggy.HookimplMarker("harness")

#: Public name -> the module that defines it (imported when first used).
_LAZY = {
    "GradientMetaLearner": "harness.engine.meta_learning",
    "Engine": "harness.engine.meta_learning",
    "adapt_and_predict": "harness.engine.meta_learning",
    "body_features": "harness.engine.meta_learning",
    "query_accuracy": "harness.engine.meta_learning",
    "Episodes": "harness.data.episodes",
    "ClassPoolSampler": "harness.data.episodes",
    "Option": "harness.evaluation.options",
    "NUM_TASKS": "harness.evaluation.options",
    "TEST_INNER_STEPS": "harness.evaluation.options",
    "ADAPT_AS": "harness.evaluation.options",
    "ADAPT_LR": "harness.evaluation.options",
    "adapt_with": "harness.evaluation.fewshot",
    "mean_and_ci95": "harness.evaluation.fewshot",
    "per_task_accuracies": "harness.evaluation.fewshot",
    "RunConfig": "harness.run.config",
    "LoadedRun": "harness.run.loaded_run",
    "Registry": "harness.plugin.registry",
}

__all__ = ["HarnessError", "__version__", "hookimpl", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")

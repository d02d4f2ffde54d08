"""feature-reuse-harness: MAML, FOMAML, ANIL and the analyses of Raghu et al. (ICLR 2020)."""

import pluggy

__version__ = "0.1.0"

#: Decorator for hook implementations in plugins: ``@harness.hookimpl``.
hookimpl = pluggy.HookimplMarker("harness")

__all__ = ["hookimpl", "__version__"]

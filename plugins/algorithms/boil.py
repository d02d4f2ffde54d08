"""BOIL: Body Only update in Inner Loop (Oh, Yoo, Kim, Yun, ICLR 2021, "BOIL: Towards
Representation Change for Few-shot Learning").

The mirror image of ANIL: the inner loop adapts every body layer and leaves the head at its
meta-learned value; the outer loop learns both, second order as MAML. Where ANIL asks whether
the head alone suffices (feature reuse), BOIL forces representation change.

With a zero head (the backbones' default, ``--head-init zero``) the support loss has no
gradient with respect to the body until the outer loop has moved the head away from zero,
so BOIL's first inner loops change nothing; ``--head-init normal`` or ``default`` avoid that
(``tests/test_new_algorithms.py`` pins both behaviours). The step size is the run's
``--inner-lr`` for every body layer.

    harness run --algo boil --data omniglot-20w1s --head-init default
"""

import harness
from harness.engine.meta_learning import GradientMetaLearner


class BOIL(GradientMetaLearner):
    name = "boil"
    description = "BOIL (Oh et al. 2021): inner loop on the body only, head fixed; second order"
    first_order = False

    def adapts(self, parameter_name: str) -> bool:
        return not parameter_name.startswith("head.")


@harness.hookimpl
def register_algorithms(registry):
    registry.add(BOIL())

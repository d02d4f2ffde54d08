"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel, Levine, ICML 2017), second order.

The inner loop adapts every parameter on the support set; the outer loss is
the query loss of the adapted parameters, differentiated through the inner
loop (Finn et al. 2017, Eq. 1 and Algorithm 2).

    harness run --algo maml --data omniglot-20w1s
    # paper (Raghu et al. 2020, Table 2): 93.7 +- 0.7 % on Omniglot 20w1s
"""

import harness
from harness.engine.meta_learning import GradientMetaLearner


class MAML(GradientMetaLearner):
    name = "maml"
    description = "MAML (Finn et al. 2017), second-order meta-gradient, inner loop on all layers"
    first_order = False


@harness.hookimpl
def register_algorithms(registry):
    registry.add(MAML())

"""First-order MAML (Finn et al. 2017, Section 5.2; Nichol et al. 2018).

Identical to MAML except that the inner-loop gradients are treated as
constants, so the meta-gradient is the query-loss gradient evaluated at the
adapted parameters (the Hessian-vector terms of Eq. 1 are dropped).

    harness run --algo fomaml --data omniglot-20w1s
"""

import harness
from harness.engine.meta_learning import GradientMetaLearner


class FOMAML(GradientMetaLearner):
    name = "fomaml"
    description = "First-order MAML: inner-loop gradients detached, no second-order terms"
    first_order = True


@harness.hookimpl
def register_algorithms(registry):
    registry.add(FOMAML())

"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio, Vinyals, ICLR 2020, Section 4).

The inner loop adapts only the head (the final linear layer), at training and
at test time; the body is meta-learned by the outer loop only. Because the
body does not change inside the inner loop, it runs once per meta-batch and
the head adapts on the cached features (``harness.engine.meta_learning``). The
meta-gradient is second order through the head's adaptation, as in the paper.

    harness run --algo anil --data omniglot-20w1s
    # paper (Table 2): 96.2 +- 0.5 % on Omniglot 20w1s; MAML 93.7 +- 0.7 %
"""

import harness
from harness.engine.meta_learning import GradientMetaLearner


class ANIL(GradientMetaLearner):
    name = "anil"
    description = "ANIL (Raghu et al. 2020): inner loop on the head only, body reused"
    first_order = False
    uses_body_features = True

    def adapts(self, parameter_name: str) -> bool:
        return parameter_name.startswith("head.")


@harness.hookimpl
def register_algorithms(registry):
    registry.add(ANIL())

"""MAML-RL and ANIL-RL (Finn et al. 2017, Section 5.3; Raghu et al. 2020, Section 4 and Table 2).

    harness run --algo maml --env 2d-navigation      # resolves to maml-rl for an RL environment
    harness run --algo anil --env halfcheetah-dir    # resolves to anil-rl

Both share the inner policy-gradient step and the TRPO outer loop of
:mod:`harness.rl.meta_rl`; they differ in what the inner loop adapts.
"""

import harness
from harness.rl.meta_rl import MetaRLAlgorithm


class MAMLRL(MetaRLAlgorithm):
    name = "maml-rl"
    description = "MAML for RL: one policy-gradient step on every policy parameter, TRPO outer loop"


class ANILRL(MetaRLAlgorithm):
    name = "anil-rl"
    description = "ANIL for RL: the inner policy-gradient step adapts only the policy's last layer (head)"

    def adapts(self, parameter_name: str) -> bool:
        return parameter_name.startswith("head.")


@harness.hookimpl
def register_algorithms(registry):
    registry.add(MAMLRL())
    registry.add(ANILRL())

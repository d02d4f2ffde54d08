"""MAML for reinforcement learning (Finn et al. 2017, Algorithm 3 with TRPO; Raghu et al. 2020, Section 4, ANIL-RL).

Inner loop: one vanilla policy-gradient step (REINFORCE with GAE advantages
on the linear baseline) on ``episodes_per_task`` trajectories of the task::

    theta'_i = theta - alpha * grad_theta L_i(theta),   L_i = -mean_t[log pi_theta(a_t|o_t) A_t]

Outer loop: TRPO on the meta-objective, the importance-weighted surrogate of
the adapted policies on fresh trajectories collected with them::

    min_theta  mean_i -mean_t[pi_theta'_i(a|o) / pi_old'_i(a|o) A'_t]   s.t.  mean_i KL(pi_old'_i || pi_theta'_i) <= max_kl

Gradients flow through the inner step (second order), as in the reference
implementation. All tasks of a meta-batch are adapted at once: the
meta-parameters are expanded to ``[tasks, ...]`` copies, the policy runs
vmapped over them, and one ``autograd.grad`` of the summed task losses gives
every task its own gradient (a task's loss depends only on its copy). A
subclass chooses which parameters the inner loop adapts (``adapts``): all for
MAML-RL, the last layer for ANIL-RL.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from harness.engine.meta_learning import sgd_step
from harness.rl.policy import distribution
from harness.rl.rollouts import TaskEpisodes, policy_forward
from harness.rl.trpo import trpo_step


def task_means(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each task's valid steps: ``[tasks, T, E] -> [tasks]``."""
    return (values * mask).sum((1, 2)) / mask.sum((1, 2))


class MetaRLAlgorithm:
    domain = "rl"

    def adapts(self, parameter_name: str) -> bool:
        return True

    def adapt(self, policy, episodes: TaskEpisodes, inner_lr: float, create_graph: bool) -> dict:
        """Per-task parameters ``{name: [tasks, ...]}`` after one policy-gradient step on ``episodes``."""
        tasks = episodes.num_tasks
        with torch.enable_grad():
            return self._adapt(policy, episodes, inner_lr, create_graph, tasks)

    def _adapt(self, policy, episodes, inner_lr, create_graph, tasks):
        params = {name: p.unsqueeze(0).expand(tasks, *p.shape) for name, p in policy.named_parameters()}
        mean, std = policy_forward(policy, params, episodes.observations)  # [tasks, T, E, act]
        log_prob = distribution(mean, std).log_prob(episodes.actions)  # [tasks, T, E]
        losses = -task_means(log_prob * episodes.advantages, episodes.mask)  # [tasks]
        adapted_names = [name for name in params if self.adapts(name)]
        grads = torch.autograd.grad(losses.sum(), [params[n] for n in adapted_names], create_graph=create_graph)
        adapted = sgd_step({n: params[n] for n in adapted_names}, dict(zip(adapted_names, grads)), inner_lr)
        return {**params, **adapted}

    def adapt_detached(self, policy, episodes: TaskEpisodes, inner_lr: float) -> dict:
        """Adapted parameters without a graph (for sampling with the adapted policies)."""
        return {name: value.detach() for name, value in self.adapt(policy, episodes, inner_lr, False).items()}

    def outer_step(self, policy, train: TaskEpisodes, valid: TaskEpisodes, inner_lr: float, max_kl: float) -> dict:
        """One TRPO step on the meta-parameters from pre- (``train``) and post-adaptation (``valid``) episodes."""
        collecting = self.adapt_detached(policy, train, inner_lr)
        with torch.no_grad():  # the adapted policies that collected ``valid``: reference of the ratio and the KL
            old = distribution(*policy_forward(policy, collecting, valid.observations))
            old_log_prob = old.log_prob(valid.actions)  # [tasks, T, E]

        def surrogate():
            # A graph through the inner step only when gradients are wanted (not in the line search).
            adapted = self.adapt(policy, train, inner_lr, create_graph=torch.is_grad_enabled())
            new = distribution(*policy_forward(policy, adapted, valid.observations))
            ratio = torch.exp(new.log_prob(valid.actions) - old_log_prob)
            loss = -task_means(ratio * valid.advantages, valid.mask).mean()
            kl = task_means(kl_divergence(old, new), valid.mask).mean()
            return loss, kl

        return trpo_step(list(policy.parameters()), surrogate, max_kl)

"""Reptile (Nichol, Achiam, Schulman, "On First-Order Meta-Learning Algorithms", 2018).

For each task, run ``k`` steps of SGD from the meta-parameters theta to get
phi_i; the meta-update moves theta towards the adapted weights. Written as a
gradient, ``g = theta - mean_i(phi_i)`` (Nichol et al. 2018, Algorithm 2 with
the batched update), which the harness feeds to its outer optimiser (Adam, as
the paper's Section 6 allows).

Here the inner loop trains on the union of each task's support and query
images, as Reptile has no separate query loss; at test time it adapts on the
support set only, like every other algorithm in the harness.

    pip install ./examples/harness-reptile
    harness run --algo reptile --data omniglot-5w1s
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import harness
from harness.data.episodes import Episodes
from harness.engine.meta_learning import GradientMetaLearner, query_accuracy


class Reptile(GradientMetaLearner):
    name = "reptile"
    description = "Reptile (Nichol et al. 2018): move the initialisation towards task-adapted weights"
    first_order = True  # Reptile never differentiates through the inner loop

    def train_step(self, model, episodes: Episodes, hp) -> dict:
        # Adapt on all labelled images of the task: support and query together.
        # [tasks, ways*(shots+queries), C, H, W]
        joint = Episodes(
            torch.cat([episodes.support_x, episodes.query_x], dim=1),
            torch.cat([episodes.support_y, episodes.query_y], dim=1),
            episodes.query_x,
            episodes.query_y,
            episodes.ways,
        )
        with torch.no_grad():
            logits, adapted = self.inner_loop(model, joint, hp.inner_steps, hp.inner_lr, return_adapted=True)
            for name, parameter in model.named_parameters():
                # adapted[name]: [tasks, *parameter.shape]
                parameter.grad = parameter - adapted[name].mean(dim=0)
            loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())
        return {"loss": loss.item(), "accuracy": query_accuracy(logits, episodes.query_y).mean().item()}


@harness.hookimpl
def register_algorithms(registry):
    registry.add(Reptile())

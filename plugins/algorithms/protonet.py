"""Prototypical Networks (Snell, Swersky, Zemel, NeurIPS 2017): no inner loop at all.

Each class's prototype is the mean of its support embeddings; a query is scored by the
negative squared Euclidean distance to every prototype (Snell et al. 2017, Eq. 1-2), and
training minimises the cross-entropy of those scores on the query set. The pure feature-reuse
end of the spectrum, next to NIL (which scores by cosine similarity, without a learned head):
the network's ``head`` is never used, the body is the embedding.

    harness run --algo protonet --data omniglot-20w1s
    harness eval RUN_DIR --evaluator nil      # the same body with NIL's cosine head
"""

import torch
import torch.nn.functional as F

import harness
from harness.engine.meta_learning import Engine, body_features, query_accuracy
from harness.plugin.algorithm import ImageAlgorithm


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """``-||query - prototype_c||^2``: support ``[tasks, ways*shots, F]``, query ``[tasks, n, F]`` -> ``[tasks, n, ways]``."""
    onehot = F.one_hot(support_y, ways).to(support.dtype)  # [tasks, ways*shots, ways]
    prototypes = onehot.transpose(1, 2) @ support / onehot.sum(1).unsqueeze(-1)  # [tasks, ways, F] class means
    return -torch.cdist(query, prototypes).pow(2)


class PrototypicalNetworks(ImageAlgorithm):
    name = "protonet"
    description = "Prototypical Networks (Snell et al. 2017): class means of body features, squared Euclidean distance"
    uses_body_features = True
    ignored_options = {
        "inner_steps": "it has no inner loop",
        "test_inner_steps": "it has no inner loop",
        "inner_lr": "it has no inner loop",
        "head_init": "class prototypes replace the head",
    }

    def _logits(self, model, episodes, hp) -> torch.Tensor:
        support, query = body_features(model, episodes.support_x, episodes.query_x, engine=Engine.of(hp))
        return prototype_logits(support, episodes.support_y, query, episodes.ways)

    def train_step(self, model, episodes, hp) -> dict:
        logits = self._logits(model, episodes, hp)  # [tasks, ways*queries, ways]
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())
        loss.backward()
        return {"loss": loss.item(), "accuracy": query_accuracy(logits.detach(), episodes.query_y).mean().item()}

    def predict(self, model, episodes, hp) -> torch.Tensor:
        return self._logits(model, episodes, hp)


@harness.hookimpl
def register_algorithms(registry):
    registry.add(PrototypicalNetworks())

"""NIL: No Inner Loop classification (Raghu et al. 2020, Section 5.1).

The head is removed; support and query images are embedded with the body
(the penultimate layer), and each query is classified by the cosine
similarities to the support embeddings, which weight the support labels as
in Matching Networks (Vinyals et al. 2016, Eq. 1-2):

    a(q, s_i) = softmax_i(cos(f(q), f(s_i)))        P(y = c | q) = sum_i a(q, s_i) [y_i = c]

No gradient step is taken at test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.data.episodes import Episodes
from harness.engine.meta_learning import DEFAULT_ENGINE, Engine, body_features


def nil_probabilities(
    support_features: torch.Tensor, support_y: torch.Tensor, query_features: torch.Tensor, ways: int
) -> torch.Tensor:
    """Class probabilities ``[tasks, ways*queries, ways]``.

    support_features ``[tasks, ways*shots, F]``, support_y ``[tasks, ways*shots]``,
    query_features ``[tasks, ways*queries, F]``.
    """
    cosine = F.normalize(query_features, dim=-1) @ F.normalize(support_features, dim=-1).transpose(1, 2)  # [T, NQ, NK]
    attention = cosine.softmax(dim=-1)
    return attention @ F.one_hot(support_y, ways).to(attention.dtype)  # [T, NQ, ways]


def embed(model, episodes: Episodes, engine: Engine = DEFAULT_ENGINE) -> tuple[torch.Tensor, torch.Tensor]:
    """Body features of support and query, each set a separate batch (batch-statistics BN per set)."""
    support, query = body_features(model, episodes.support_x, episodes.query_x, engine=engine)
    return support, query


def nil_predict(model, episodes: Episodes, engine: Engine = DEFAULT_ENGINE) -> torch.Tensor:
    """NIL class probabilities for a meta-batch (usable as logits: argmax is the prediction)."""
    support, query = embed(model, episodes, engine)
    return nil_probabilities(support, episodes.support_y, query, episodes.ways)

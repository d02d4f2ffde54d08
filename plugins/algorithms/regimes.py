"""Training regimes for the body (Raghu et al. 2020, Section 5.2, Tables 5 and 7).

Each regime trains (or not) a network whose body is then judged with the NIL
head (``harness eval RUN --evaluator nil``) or with a fresh head meta-trained
by MAML on the frozen body (``--evaluator maml-head``). Validation during
training and ``predict`` use NIL, since none of these regimes has a head
that adapts to a new task.

- ``multiclass``: standard supervised classification over all training
  classes (head size = number of training classes, thrown away afterwards).
  A batch holds ``meta_batch_size * ways * (shots + queries)`` images, the
  number a meta-learner sees per step.
- ``multitask``: no inner loop and no task-specific head: one N-way network
  is trained on the support and query images of all tasks of the meta-batch
  at once, with each task's own labels 0..N-1.
- ``random-features``: initialised and never trained.
- ``nil-train``: no head; the NIL cosine-similarity classifier of the query
  set given the support set is the training loss.

    harness run --algo multiclass --data omniglot-20w1s
    harness eval RUN_DIR --evaluator nil
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import harness
from harness.engine.meta_learning import Engine, body_features, query_accuracy
from harness.evaluation.nil import nil_predict
from harness.plugin.algorithm import ImageAlgorithm


class _NILPredictor(ImageAlgorithm):
    uses_body_features = True  # NIL embeds support and query with harness.engine.meta_learning.body_features

    def predict(self, model, episodes, hp):
        return nil_predict(model, episodes, Engine.of(hp))


class Multiclass(_NILPredictor):
    name = "multiclass"
    description = "multiclass pretraining over all training classes; head discarded, body judged by NIL or MAML head"
    batch_kind = "classification"

    def head_outputs(self, spec, train_sampler) -> int:
        return train_sampler.num_classes

    def train_step(self, model, batch, hp) -> dict:
        images, labels = batch  # [batch, C, H, W], [batch]
        (features,) = body_features(
            model, images[None], engine=Engine.of(hp)
        )  # [1, batch, F]: the whole batch is one BN batch
        logits = model.head(features[0])  # [batch, training classes]
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        return {"loss": loss.item(), "accuracy": (logits.argmax(-1) == labels).float().mean().item()}


class Multitask(_NILPredictor):
    name = "multitask"
    description = "multitask training: no inner loop, no task-specific head, one network on all tasks at once"

    def train_step(self, model, episodes, hp) -> dict:
        images = torch.cat([episodes.support_x, episodes.query_x], dim=1)  # [tasks, ways*(shots+queries), C, H, W]
        labels = torch.cat([episodes.support_y, episodes.query_y], dim=1)  # [tasks, ways*(shots+queries)]
        (features,) = body_features(
            model, images, engine=Engine.of(hp)
        )  # [tasks, ways*(shots+queries), F], one BN batch per task
        logits = model.head(features)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        return {"loss": loss.item(), "accuracy": query_accuracy(logits.detach(), labels).mean().item()}


class RandomFeatures(_NILPredictor):
    name = "random-features"
    description = "random features: the initialised network, never trained"
    trains = False

    def train_step(self, model, episodes, hp) -> dict:  # pragma: no cover - the trainer never calls it
        raise RuntimeError("random features are never trained")


class NILTraining(_NILPredictor):
    name = "nil-train"
    description = "NIL training: no head; cosine-similarity (Matching Networks) classification loss on the body"

    def train_step(self, model, episodes, hp) -> dict:
        probabilities = nil_predict(model, episodes, Engine.of(hp))  # [tasks, ways*queries, ways]
        loss = F.nll_loss(probabilities.clamp_min(1e-12).log().flatten(0, 1), episodes.query_y.flatten())
        loss.backward()
        return {"loss": loss.item(), "accuracy": query_accuracy(probabilities.detach(), episodes.query_y).mean().item()}


@harness.hookimpl
def register_algorithms(registry):
    for regime in (Multiclass(), Multitask(), RandomFeatures(), NILTraining()):
        registry.add(regime)

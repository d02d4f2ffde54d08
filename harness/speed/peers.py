"""The Table 6 steps as the peer libraries write them, timed beside the harness's own in one process.

``harness bench --peers`` builds, for every step of ``harness.speed.benchmarks`` (same network, same
initialisation, same random episodes, same inner learning rate and steps), the step as each peer
library's documented MAML recipe writes it, and times them round by round with the harness's step
(rounds interleaved, so machine drift hits all alike). Peers, each used only if importable
(``pip install 'meta-harness[peers]'`` installs the first two):

- ``higher`` 0.2.x (Grefenstette et al. 2019): ``higher.innerloop_ctx`` per task with a
  differentiable SGD; first order with ``track_higher_grads=False`` and the query gradient
  taken at the adapted weights, as higher's documentation describes.
- ``torchopt`` 0.7 (Ren et al. 2023): ``torchopt.MetaSGD`` per task, ``extract_state_dict`` /
  ``recover_state_dict`` between tasks (its MAML example). Its inner step always builds the
  second-order graph, so it has no FOMAML step.
- ``learn2learn`` 0.2 (Arnold et al. 2020): ``l2l.algorithms.MAML`` ``clone()`` / ``adapt()`` per
  task, ``first_order=True`` for FOMAML. Its release does not build on Python 3.11 from PyPI
  (its generated C files predate CPython 3.11), hence not in the extra.
- ``torch.func``: the harness's generic path, ``vmap`` over tasks of ``torch.func.grad`` (the
  plain functional implementation a user would write first). Its second-order MAML meta-gradient
  through batch-statistics BatchNorm is off by about 1e-3 relative (vmap's BatchNorm rule; the
  harness's own paths avoid it, ``harness.engine.meta_learning``); timed all the same.

Every other peer's training step leaves the harness's gradients to 1e-12 in float64
(``tests/test_peers.py``), so the steps timed are the same computation.

ANIL in every peer: the body runs once per task on the support and once on the query set, the
head is what the peer adapts. Inference: 10 inner steps on the support set, query predicted
without an outer graph. The lead of a step is the fastest peer's median over the harness's.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from harness.speed.benchmarks import (
    ALGORITHMS,
    PHASES,
    TEST_INNER_STEPS,
    BenchConfig,
    interleaved_medians,
    make_step,
    random_episodes,
)

PEERS = ("learn2learn", "higher", "torchopt", "torch.func")


def available() -> list[str]:
    """Peers importable here (``torch.func`` always is)."""
    return [p for p in PEERS if p == "torch.func" or importlib.util.find_spec(p) is not None]


def _adapt_higher(model, x, y, steps, lr, first_order):
    import higher

    fmodel = higher.monkeypatch(model, copy_initial_weights=False, track_higher_grads=not first_order)
    inner = higher.get_diff_optim(
        torch.optim.SGD(model.parameters(), lr=lr),
        model.parameters(),
        fmodel=fmodel,
        track_higher_grads=not first_order,
    )
    for _ in range(steps):
        inner.step(F.cross_entropy(fmodel(x), y))
    return fmodel, list(fmodel.parameters())


def _adapt_torchopt(model, x, y, steps, lr, first_order):
    import torchopt

    inner = torchopt.MetaSGD(model, lr=lr)
    for _ in range(steps):
        inner.step(F.cross_entropy(model(x), y))
    return model, None


def _adapt_learn2learn(model, x, y, steps, lr, first_order):
    import learn2learn as l2l

    learner = l2l.algorithms.MAML(model, lr=lr, first_order=first_order).clone()
    for _ in range(steps):
        learner.adapt(F.cross_entropy(learner(x), y))
    return learner, None


ADAPT = {"higher": _adapt_higher, "torchopt": _adapt_torchopt, "learn2learn": _adapt_learn2learn}


def supports(peer: str, algorithm: str, phase: str) -> bool:
    return not (peer == "torchopt" and algorithm == "fomaml" and phase == "train")


def make_peer_step(plugins, peer: str, algorithm: str, config: BenchConfig, phase: str, device="cpu"):
    """A zero-argument callable running one step the peer's way (``make_step``'s model and episodes)."""
    if peer == "torch.func":
        return make_step(plugins, algorithm, config, phase, device, path="generic")
    torch.manual_seed(0)
    model = plugins.backbones.get(config.backbone).build(config.channels, config.image_size, config.ways).to(device)
    torch.nn.init.normal_(model.head.weight, std=0.01)  # as make_step
    episodes = random_episodes(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = phase == "train"
    steps = config.inner_steps if train else TEST_INNER_STEPS
    first_order = algorithm == "fomaml" or not train
    adapt = ADAPT[peer]
    if peer == "torchopt":
        import torchopt

    def one_task(t):
        xs, ys, xq, yq = (episodes.support_x[t], episodes.support_y[t], episodes.query_x[t], episodes.query_y[t])
        if algorithm == "anil":
            with torch.set_grad_enabled(train):
                support_features, query_features = model.body(xs), model.body(xq)  # [n, features]
            adapted, fast = adapt(model.head, support_features, ys, steps, config.inner_lr, first_order)
            inputs = query_features
        else:
            adapted, fast = adapt(model, xs, ys, steps, config.inner_lr, first_order)
            inputs = xq
        if not train:
            with torch.no_grad():
                adapted(inputs).argmax(-1)
            return
        loss = F.cross_entropy(adapted(inputs), yq) / config.tasks
        if fast is not None and first_order:  # higher without higher grads: the query gradient at the adapted weights
            module = model.head if algorithm == "anil" else model
            for p, g in zip(module.parameters(), torch.autograd.grad(loss, fast)):
                p.grad = g if p.grad is None else p.grad + g
        else:
            loss.backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        target = model.head if algorithm == "anil" else model
        for t in range(config.tasks):
            saved = torchopt.extract_state_dict(target) if peer == "torchopt" else None
            one_task(t)
            if saved is not None:
                torchopt.recover_state_dict(target, saved)
        if train:
            optimizer.step()

    step.model = model  # type: ignore[attr-defined]  # for the tests: the gradients a step leaves
    return step


def compare(plugins, rounds: int, configs, peers=None, device="cpu") -> list[dict]:
    """Median seconds of the harness's step and every peer's, per step, rounds interleaved."""
    peers = peers or available()
    rows = []
    for config in configs:
        for algorithm in ALGORITHMS:
            for phase in PHASES:
                if algorithm == "fomaml" and phase == "inference":
                    continue  # MAML's inference step
                steps = {"harness": make_step(plugins, algorithm, config, phase, device)}
                for peer in peers:
                    if supports(peer, algorithm, phase):
                        steps[peer] = make_peer_step(plugins, peer, algorithm, config, phase, device)
                medians = interleaved_medians(steps, rounds)
                fastest = min((p for p in medians if p != "harness"), key=lambda peer: medians[peer])
                rows.append(
                    {
                        "config": config.name,
                        "algorithm": algorithm,
                        "phase": phase,
                        "rounds": rounds,
                        "median_s": medians,
                        "fastest_peer": fastest,
                        "lead": medians[fastest] / medians["harness"],
                    }
                )
    return rows

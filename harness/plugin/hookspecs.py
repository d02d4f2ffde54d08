"""Hook specifications: the plugin author's reference.

A plugin is a module (or object) with functions decorated by
``harness.hookimpl`` whose names match the specs below. Bundled plugins
(``harness_plugins.*``, the ``plugins/`` folder of the repository) use exactly
these hooks; third-party plugins are found through the ``harness`` entry-point
group::

    # pyproject.toml of your package
    [project.entry-points.harness]
    reptile = "harness_reptile"

    # harness_reptile.py
    import harness

    @harness.hookimpl
    def register_algorithms(registry):
        registry.add(Reptile())

Registration hooks receive a :class:`harness.plugin.registry.Registry`. Every
registered object needs a unique string attribute ``name`` (what users type on
the command line) and should have a one-line ``description``. A name two
plugins register is an error, naming both, for the commands that use it.

Lifecycle hooks are called by ``harness run`` for every plugin that implements
them (loggers, trackers, notifiers). They must not modify their arguments.

``harness/plugin/protocols.py`` states the same contracts as typing protocols; an
object missing a required member is refused when its plugin registers it. A
hook name that is not below (a misspelling) disables its plugin with a "did you
mean" message. The names a plugin needs are importable from ``harness``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("harness")


# -- registration -----------------------------------------------------------


@hookspec
def register_algorithms(registry) -> None:
    """Register meta-learning algorithms.

    An algorithm is an object with

    - ``name: str`` and ``description: str``;
    - ``train_step(model, episodes, hp) -> dict``: compute the meta-loss of one
      meta-batch (:class:`harness.data.episodes.Episodes`, tensors shaped
      ``[tasks, ways*shots, C, H, W]``) and leave the meta-gradient in
      ``p.grad`` of ``model.parameters()``; the harness zeroes gradients
      before and calls the outer optimiser after. Return at least
      ``{"loss": float, "accuracy": float}`` (query-set values, mean over
      tasks). ``hp`` is the resolved :class:`harness.run.config.RunConfig`;
    - ``predict(model, episodes, hp) -> Tensor``: adapt to each task's support
      set with ``hp.test_inner_steps`` steps and return query logits shaped
      ``[tasks, ways*queries, ways]``. Called under ``torch.no_grad()``.

    Optional attributes:

    - ``adapts(parameter_name) -> bool``: which parameters the inner loop
      updates; the freezing and representation evaluators need it;
    - ``adapt(model, episodes, steps, hp, first_order=None, frozen=frozenset(),
      return_adapted=False)``: the algorithm's inner loop (``GradientMetaLearner``
      has it). Every evaluator adapts through it, first order, with ``frozen``
      parameter names held at the meta-initialisation, so an algorithm is
      evaluated with its own inner loop (``harness.evaluation.fewshot.adapt_with``);
    - ``inner_lr(hp) -> float | dict[str, Tensor]``: the inner step size
      (``GradientMetaLearner``: ``hp.inner_lr``); a dict gives one tensor per
      parameter name, shaped like the parameter (``harness.engine.meta_learning.step_size``);
    - ``initial_parameters(model, ways) -> dict[str, Tensor]``: where the inner
      loop starts, for parameter names whose start is not the model's own value
      (``GradientMetaLearner``: ``{}``; UNICORN-MAML: a head of ``ways`` copies of
      one learned vector). The representation and weight-distance evaluators
      measure "before adaptation" there (``harness.evaluation.activations.starting_point``);
    - ``for_run(model, hp) -> torch.nn.Module``: an algorithm with parameters
      of its own (Meta-SGD's learned step sizes): returns the run's instance,
      an ``nn.Module`` whose parameters the outer optimiser learns with the
      model's; they are saved in every checkpoint under ``"algorithm"``,
      restored by ``--resume`` and loaded by ``harness eval`` / ``analyze``
      (``plugins/algorithms/meta_sgd.py``, 40 lines, is the example);
    - ``prepare_model(model) -> nn.Module``: change the model the backbone
      built before it trains (add a context vector, wrap layers; CAVIA). Called
      wherever a run's model is built (training, ``--resume``, ``harness eval``,
      the speed workloads: ``harness.run.assembly``), before a checkpoint loads,
      so what it adds is saved and restored with the model. A parameter it adds
      in a new body layer (``model.body.append(...)``) is a layer of its own for
      the representation and weight-distance evaluators;
    - ``inner_lr_transfers = False``: the run's ``--inner-lr`` steps something
      other than weights (a context), so ``-o adapt_as=NAME`` on its runs needs
      ``-o adapt_lr=X`` instead of reusing it;
    - ``owns_parameters`` and ``owned_parameters()``: whether the run's instance
      has parameters of its own, and which (default: it is an ``nn.Module``, and
      its ``parameters()``); the core learns, saves and restores exactly these;
    - ``progress(step, iterations) -> float``: called before every training
      step with the steps done and the run's total; an algorithm anneals what
      depends on training progress there (MAML++'s loss weights and derivative
      order) and returns the factor applied to ``--outer-lr`` for this step
      (1.0 keeps it). A pure function of ``step``, so ``--resume`` is exact;
    - ``progress_spans_run = True``: ``progress`` depends on ``iterations``
      (MAML++'s cosine annealing), so a finished run is not lengthened by a
      reproduce budget's ``until_plateau`` (its annealing would start over);
    - ``batch_kind = "classification"``: ``train_step`` receives
      ``(images [batch, C, H, W], labels [batch])`` over all training classes
      instead of episodes (pretraining regimes);
    - ``head_outputs(spec, train_sampler) -> int``: head size when it is not
      the number of ways (e.g. all training classes);
    - ``trains = False``: the model is never trained (random features);
    - ``uses_body_features = True``: the inner loop never adapts the body, so
      body features are computed once per meta-batch
      (``harness.engine.meta_learning.body_features``) and ``--precision bf16`` may
      lower their precision (refused for other algorithms);
    - ``first_order = True``: the inner loop drops second-order terms; the
      speed check (``harness bench --algo``) then times it against FOMAML
      instead of MAML;
    - ``ignored_options = {"inner_lr": "it has no inner loop", ...}``: run
      options (``RunConfig`` fields) that training and testing never read;
      ``harness run`` refuses them on the command line in one line, and
      ``config.json`` records them as not used (Prototypical Networks).

    :class:`harness.plugin.algorithm.ImageAlgorithm` gives every optional member its
    default; an algorithm that does not subclass it has each member it lacks set to
    that default when it registers (``harness.plugin.algorithm.with_defaults``); subclassing :class:`harness.engine.meta_learning.GradientMetaLearner`
    (an ``ImageAlgorithm``) gives a vmapped inner loop; see
    ``plugins/algorithms/anil.py`` for a short example.

    Meta-RL algorithms set ``domain = "rl"`` and subclass
    :class:`harness.rl.meta_rl.MetaRLAlgorithm` (``adapt``, ``outer_step``);
    ``--algo NAME`` with an RL environment picks ``NAME`` or ``NAME-rl``, so
    ``--algo anil --env 2d-navigation`` runs ``anil-rl``.
    """


@hookspec
def register_backbones(registry) -> None:
    """Register network architectures.

    A backbone has ``name``, ``description`` and
    ``build(in_channels: int, image_size: int, ways: int, bn_mode: str)
    -> torch.nn.Module``. The module must expose ``body`` (feature extractor,
    an ``nn.Sequential`` of blocks, returning ``[batch, features]``) and
    ``head`` (the final ``nn.Linear``); algorithms such as ANIL rely on that
    split, and analyses address layers by ``body.<i>``.

    Fast paths come without extra code: a network built from ``nn.Conv2d``,
    ``nn.BatchNorm1d/2d`` (``track_running_stats=False``), ``nn.Linear`` and
    parameter-free per-channel operations (ReLU, pooling, flatten, means,
    residual additions) runs MAML-style inner loops with the tasks side by side
    and ANIL-style bodies once per meta-batch through the rules of
    ``harness.engine.side_by_side``, checked against running each task on its own at
    first use (a mismatch falls back to ``torch.func.vmap`` with a warning).
    A module may override either with its own method (typed as
    ``harness.plugin.protocols.OwnBodyPerSet`` / ``OwnForwardTasks``):

    - ``body_per_set(images, set_sizes) -> [sum(set_sizes), features]``: the
      body on consecutive image sets, each normalised as its own batch (ANIL,
      NIL, regimes: the body once per meta-batch);
    - ``forward_tasks(params, images, channels_last) -> [tasks, n, ways]``:
      every task with its own parameters (``{name: [tasks, *shape]}``) on
      ``[tasks, n, C, H, W]`` (MAML-style inner loops without vmap).

    ``harness.engine.side_by_side.mismatch(model, images)`` is the equivalence check
    any backbone can reuse; ``tests/test_side_by_side.py`` runs it, and the
    meta-gradients against the generic path (``harness.engine.meta_learning.Engine(fast=False)``,
    a run's ``--inner-loop generic``), on every registered backbone. A run
    with ``--inner-loop auto`` (the default) takes the fast path wherever the rules cover the model.
    """


@hookspec
def register_task_samplers(registry) -> None:
    """Register few-shot datasets (task samplers).

    A task sampler has ``name`` (the ``<dataset>`` part of a task spec such as
    ``omniglot-20w1s``), ``description`` and

    - ``default_backbone: str``;
    - ``paper_defaults(spec) -> dict``: default hyperparameters for this
      dataset and ``N``-way ``K``-shot, every value with its source;
    - ``open(spec, split, data_root, options) -> EpisodeSampler``: load the
      split (``"train"``, ``"val"`` or ``"test"``) and return an object with
      ``sample(num_tasks, rng) -> Episodes``, ``ways``, ``num_classes``,
      ``in_channels`` and ``image_size``, and, for algorithms with
      ``batch_kind = "classification"``, ``sample_classification(size, rng)
      -> (images [size, C, H, W], labels [size])`` over all the split's
      classes. ``harness.data.episodes.ClassPoolSampler`` implements all of it, for
      a dense ``[classes, images, C, H, W]`` uint8 tensor or, with
      ``counts=[images per class]``, a flat ``[images, C, H, W]`` uint8 array
      whose classes may differ in size; a numpy memory map there is read
      lazily, so data larger than RAM need only their cache file
      (``plugins/datasets/miniimagenet.py`` uses both). ``options`` holds
      ``split`` (the ``--split`` scheme), ``queries`` and ``download``.

    Raise :class:`harness.errors.HarnessError` with a one-line message when
    data are missing or malformed; say where you looked.
    """


@hookspec
def register_environments(registry) -> None:
    """Register meta-RL environments (``harness run --algo maml --env NAME``).

    An environment has ``name``, ``description``, ``episode_steps``,
    ``observation_dim``, ``action_dim``, ``paper_defaults`` (a dict of
    :class:`harness.rl.training.RLConfig` overrides such as the meta-batch),
    optionally ``paper_returns`` (``{algorithm: (mean, std)}``, quoted from the
    paper) and

    - ``sample_tasks(count, rng: numpy.random.Generator) -> ndarray``: task
      parameters, one row per task (a goal, a direction, a velocity);
    - ``make_vector_env(num_envs) -> gymnasium.vector.VectorEnv`` whose
      ``reset(seed=..., options={"tasks": per_env_tasks})`` sets each copy's
      task. The harness runs ``tasks x episodes_per_task`` copies, task-major,
      for ``episode_steps`` steps and masks steps after ``terminated``.

    See ``plugins/envs/navigation.py``.
    """


@hookspec
def register_evaluators(registry) -> None:
    """Register evaluators used by ``harness eval RUN_DIR --evaluator NAME``.

    An evaluator has ``name``, ``description`` and
    ``evaluate(run, options) -> dict`` where ``run`` is a
    :class:`harness.run.loaded_run.LoadedRun` (config, model, algorithm, task sampler).
    Return ``{"rows": [{"name", "mean", "ci95", "tasks", ...}, ...]}``; the
    command prints the rows as a table and writes them as JSON into the run
    directory. Raise ``HarnessError`` when the run does not fit the evaluator.

    Declare the ``-o KEY=VALUE`` options it takes as ``options``, a tuple of
    :class:`harness.evaluation.options.Option` (``NUM_TASKS``,
    ``TEST_INNER_STEPS``, ``ADAPT_AS`` and ``ADAPT_LR`` are shared ones): ``evaluate`` then
    receives every declared option, converted to its type or set to its
    default, and unknown keys, malformed and out-of-range values are refused
    with one line before anything runs (``--test-tasks`` and
    ``--test-inner-steps`` arrive as ``num_tasks`` and ``test_inner_steps``).
    Without ``options`` the evaluator gets the given strings unchecked.
    """


@hookspec
def register_trackers(registry) -> None:
    """Register experiment trackers, chosen per run with ``harness run/reproduce --report-to NAME,...``.

    A tracker subclasses :class:`harness.run.trackers.Tracker`: ``name``, ``description``, ``requirement``
    (the pip extra that installs its library) and ``start(run_dir, config, step, kept) ->
    TrackerRun``. The :class:`harness.run.trackers.TrackerRun` it returns receives every metrics row as
    scalars (``log_scalars``), the test results and the files worth keeping at the end (``finish``),
    or ``close`` when the run stops unfinished; its ``state()`` is kept in ``RUN_DIR/trackers.json``
    and handed back as ``kept`` when the run resumes, so that the same tracker run continues.

    Import the tracker's library inside ``start``, so that a missing library costs one line at
    the run that asks for it, not the plugin. Anything a tracker raises is contained: one line on
    stderr and the run goes on without it. See ``plugins/trackers/tensorboard.py``.
    """


@hookspec
def register_commands(registry) -> None:
    """Register CLI subcommands (``harness <name> ...``).

    A command has ``name``, ``description`` (the one-line help),
    ``add_arguments(parser: argparse.ArgumentParser)`` and
    ``run(args: argparse.Namespace) -> int`` (the exit status). ``args.plugins``
    holds the loaded plugins (:class:`harness.plugin.manager.Plugins`: the
    registries ``algorithms``, ``backbones``, ...). Raise ``HarnessError`` for bad
    input: the CLI prints it on one line and exits 2.
    """


# -- run lifecycle (loggers) ------------------------------------------------


# Image and meta-RL runs call all four. An implementation that raises is reported by
# name and disabled for the rest of the run; the run and the other plugins go on.


@hookspec
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    """A run starts (or resumes) in ``run_dir`` with the resolved config (``config.json``)."""


@hookspec
def on_metrics(run_dir: str, step: int, row: dict[str, Any]) -> None:
    """A metrics row was appended to ``metrics.jsonl``.

    Image runs: ``{"step", "split": "train", "loss", "accuracy", "train_seconds"}`` every
    ``log_every`` iterations and ``{"step", "split": "val", "accuracy", "ci95", "tasks",
    "inner_steps"}`` every ``val_every``. Meta-RL runs, every iteration: ``{"step", "split":
    "train", "return_before_adaptation", "return", "sampling_seconds", "update_seconds"}`` plus
    the algorithm's outer-step statistics (TRPO: surrogate and KL before/after, line-search steps).
    """


@hookspec
def on_checkpoint(run_dir: str, step: int, path: str) -> None:
    """A checkpoint for ``step`` was written atomically to ``path``: ``checkpoint.pt`` (the
    latest state), ``best.pt`` (best validation so far) or ``checkpoints/step-NNNNNNN.pt``
    (``--checkpoint-every``)."""


@hookspec
def on_run_end(run_dir: str, summary: dict[str, Any]) -> None:
    """The run finished and was tested; ``summary`` is what was written to ``summary.json``.

    Image runs: ``algo``, ``data``, ``seed``, ``precision``, ``test`` (``accuracy``, ``ci95``,
    ``tasks``, ``inner_steps``), ``tested_checkpoint`` (``file``, ``step``), ``best_val``,
    ``iterations``, ``train_seconds``, ``seconds_per_iteration``, ``test_seconds``,
    ``environment`` (device, its name, torch threads and versions). Meta-RL runs: ``algo``,
    ``env``, ``seed``, ``test`` (``return``, ``ci95``, ``tasks``, ...), ``tested_checkpoint``,
    ``best_train_return``, ``iterations``, ``paper_return`` (the paper's value, or None) and the
    same timing and environment keys.
    """

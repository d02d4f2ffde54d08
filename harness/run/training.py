"""The meta-training loop behind ``harness run``: train, validate, checkpoint, test.

A run is deterministic on the CPU given its config: training episodes come
from one ``numpy`` generator seeded with ``config.seed``, validation and test
tasks from fixed task sets (``harness.evaluation.fewshot``). Everything the loop
needs to continue (model, optimiser, step, generator and torch RNG states,
best validation so far) is in ``checkpoint.pt``, so ``--resume`` ends with the
same numbers as an uninterrupted run. A run stopped by ``--time-limit`` or a
signal (``harness.run.stopping``) writes that checkpoint at an iteration boundary
and raises ``RunStopped``; resuming it gives the same numbers too.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness.data.root import resolve_data_root
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError
from harness.evaluation.fewshot import TEST_TASK_SEED, VAL_TASK_SEED, evaluate, progress_shown
from harness.run.assembly import build_model, fast_or_fallback, initialise_head, run_algorithm
from harness.run.config import RunConfig
from harness.run.devices import describe_device, resolve_device
from harness.run.distributed import context_from_environment
from harness.run.files import copy_file, load_torch, load_weights
from harness.run.lifecycle import RunLifecycle
from harness.run.memory_estimate import activation_bytes_per_image, refuse_if_too_big
from harness.run.provenance import file_sha256
from harness.run.resuming import newest_checkpoint
from harness.run.stopping import StopConditions


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        plugins,
        run_dir: Path,
        download: bool = True,
        progress: bool = True,
        stop: StopConditions | None = None,
        report_to: list[str] | None = None,
    ):
        self.config = config
        self.plugins = plugins
        self.spec = parse_task_spec(config.data)
        self.algorithm = plugins.algorithms.get(config.algo)
        if config.precision != "fp32" and not self.algorithm.uses_body_features:
            raise HarnessError(
                f"--precision {config.precision} lowers the precision of body features computed once per meta-batch; "
                f"{config.algo!r} does not compute them that way (it adapts the body or trains it directly); "
                f"use it with anil, nil-train, multitask or multiclass"
            )
        self.task_sampler = plugins.task_samplers.get(self.spec.dataset)
        self.backbone = plugins.backbones.get(config.backbone)
        self.device = resolve_device(config.device)
        self.distributed = context_from_environment(self.device)
        if self.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.distributed.local_rank)
        self.is_main = self.distributed is None or self.distributed.is_main
        # Ranks of a torchrun job would decide to stop at different iterations and hang in the
        # gradient all-reduce; there the launcher's signals end the job as before.
        stop = StopConditions(signals=False) if stop is None or self.distributed else stop
        self.life = RunLifecycle(
            plugins,
            run_dir,
            config.iterations,
            config.checkpoint_every,
            f"{config.algo} {config.data}",
            is_main=self.is_main,
            progress=progress,
            stop=stop,
            report_to=report_to,
        )
        self.run_dir = self.life.run_dir
        self._open_data_and_model(download)
        self.optimizer = torch.optim.Adam(self.meta_parameters(), lr=config.outer_lr)
        self.rng = np.random.default_rng(config.seed)
        self.step = 0
        self.train_seconds = 0.0
        self.best = {"accuracy": -1.0, "step": 0}
        self.metrics = self.life.metrics
        self.inner_loop: dict | None = None  # which inner loop runs and why; decided once per run (_choose_inner_loop)
        self.hp = config  # the config the algorithm sees, with the inner loop decided
        self._refuse_oversized()

    def _open_data_and_model(self, download: bool) -> None:
        """The task samplers of the three splits, and the model built for their images (seeded by the run)."""
        options = {"split": self.config.split, "queries": self.config.queries, "download": download}
        data_root = resolve_data_root(self.config.data_root)
        self.samplers = {
            split: self.task_sampler.open(self.spec, split, data_root, options) for split in ("train", "val", "test")
        }
        train = self.samplers["train"]
        # Pretraining regimes (multiclass) classify all training classes, not N ways.
        head_outputs = self.algorithm.head_outputs(self.spec, train)
        self.geometry = {"in_channels": train.in_channels, "image_size": train.image_size, "head_outputs": head_outputs}
        torch.manual_seed(self.config.seed)
        self.model = build_model(
            self.backbone, self.algorithm, train.in_channels, train.image_size, head_outputs, self.config.bn_mode
        )
        initialise_head(self.model, self.config.head_init)
        self.model.to(self.device)
        self.algorithm = run_algorithm(self.algorithm, self.model, self.config, self.device)

    def _refuse_oversized(self) -> None:
        """A meta-batch or evaluation chunk that cannot fit in memory is refused before any step."""
        config = self.config
        images_per_task = self.spec.ways * (self.spec.shots + config.queries)
        per_image = activation_bytes_per_image(self.model, self.geometry["in_channels"], self.geometry["image_size"])
        chunk = min(config.eval_batch_size, max(config.val_tasks, config.test_tasks))
        for what, flag, tasks in (
            (f"a meta-batch of {config.meta_batch_size} tasks", "--meta-batch-size", config.meta_batch_size),
            (f"an evaluation chunk of {chunk} tasks", "--eval-batch-size", chunk),
        ):
            refuse_if_too_big(what, flag, tasks * images_per_task, per_image, self.device)

    def meta_parameters(self) -> list[torch.nn.Parameter]:
        """What the outer loop learns: the model's parameters, then the algorithm's own (if any)."""
        return [*self.model.parameters(), *self.algorithm.owned_parameters()]

    # -- state ---------------------------------------------------------------

    def _owned_state(self) -> dict:
        return {"algorithm": self.algorithm.state_dict()} if self.algorithm.owns_parameters else {}

    def _state(self) -> dict:
        return {
            **self._owned_state(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
            "geometry": self.geometry,
            "rng": {
                "episodes": self.rng.bit_generator.state,
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy_global": np.random.get_state(),
            },
            "best": dict(self.best),
            "train_seconds": self.train_seconds,
            "inner_loop": self.inner_loop,
        }

    def save_checkpoint(self) -> None:
        if self.is_main:
            self.life.checkpoint(self.step, self._state())

    def restore(self, found: tuple[Path, dict] | None = None) -> None:
        """Continue from ``found`` (``harness.run.resuming.newest_checkpoint``), by default the newest that loads."""
        found = found or newest_checkpoint(self.run_dir)
        if found is None:  # stopped or killed before its first checkpoint: start over, with its config
            self.life.truncate_metrics(-1)
            return
        path, state = found
        if path.name != "checkpoint.pt" and self.is_main:
            print(f"harness: continuing from {path} (step {state['step']}), the newest checkpoint", file=sys.stderr)
            copy_file(path, self.run_dir / "checkpoint.pt")  # checkpoint.pt is always the newest state
        load_weights(self.model, state["model"], path)
        self._restore_owned(state, path)
        load_weights(self.optimizer, state["optimizer"], path)
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]["episodes"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy_global"])
        self.best = state["best"]
        self.train_seconds = state["train_seconds"]
        # A resumed run keeps the inner loop it started with (the paths agree to rounding, not bit for bit);
        # checkpoints from before the choice was recorded ran the fast paths.
        self.inner_loop = state.get("inner_loop") or {"path": "fast", "how": "checkpoint without a recorded choice"}
        self.life.truncate_metrics(self.step)

    def _restore_owned(self, state: dict, path: Path) -> None:
        if self.algorithm.owns_parameters:
            if "algorithm" not in state:
                raise HarnessError(f"{path} has no 'algorithm' entry: {self.config.algo!r} keeps parameters of its own")
            load_weights(self.algorithm, state["algorithm"], path)

    # -- loop ----------------------------------------------------------------

    def validate(self) -> dict | None:
        if not self.is_main:
            return None
        self.model.train()  # batch-statistics BatchNorm either way; see conv4.py
        result = evaluate(
            self.algorithm,
            self.model,
            self.samplers["val"],
            self.hp,
            self.config.val_tasks,
            VAL_TASK_SEED,
            self.device,
        )
        self.life.log({"step": self.step, "split": "val", **result})
        if result["accuracy"] > self.best["accuracy"]:
            self.best = {"accuracy": result["accuracy"], "ci95": result["ci95"], "step": self.step}
            self.life.save_best(
                self.step,
                {
                    "model": self.model.state_dict(),
                    "step": self.step,
                    "config": self.config.to_dict(),
                    "geometry": self.geometry,
                    **self._owned_state(),
                },
            )
        return result

    def train(self) -> dict | None:
        """Train, then test the best checkpoint: the summary (None on a torchrun rank other than 0)."""
        self.choose_inner_loop()
        with self.life.running(self.config.to_dict(), self.step):
            return self._train()

    def _stop_if_asked(self, next_seconds: float) -> None:
        self.life.stop_if_asked(self.step, next_seconds, self._state)

    def _train(self) -> dict | None:
        config = self.config
        last = {"loss": float("nan"), "accuracy": float("nan")}
        loop_started, steps_before = time.perf_counter(), self.step
        while self.step < config.iterations and self.algorithm.trains:
            done_here = self.step - steps_before
            # Stop early enough that one more iteration (validations averaged in) fits the time limit.
            self._stop_if_asked((time.perf_counter() - loop_started) / done_here if done_here else 0.0)
            started = time.perf_counter()
            batch = self._training_batch()
            if self.distributed:
                batch = self.distributed.shard(batch, config.meta_batch_size)
            self.optimizer.zero_grad(set_to_none=True)
            for group in self.optimizer.param_groups:  # annealed with training progress (MAML++), else 1.0
                group["lr"] = config.outer_lr * self.algorithm.progress(self.step, config.iterations)
            last = self.algorithm.train_step(self.model, batch, self.hp)
            if self.distributed:
                self.distributed.average_gradients(self.meta_parameters())
                last = self.distributed.average_metrics(last)
            grads = [p.grad for p in self.meta_parameters() if p.grad is not None]
            # One host-device synchronisation for all gradients, not one per tensor.
            grads_finite = not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
            if not math.isfinite(last["loss"]) or not grads_finite:
                raise self.life.non_finite(f"non-finite loss or gradient ({last['loss']}) at step {self.step + 1}")
            self.optimizer.step()
            self.step += 1
            self.train_seconds += time.perf_counter() - started
            shown = {"loss": f"{last['loss']:.3f}", "acc": f"{last['accuracy']:.3f}"}
            if self.best["accuracy"] >= 0:  # -1 until the first validation
                shown["best_val"] = f"{self.best['accuracy']:.3f}"
            self.life.advanced(shown)
            logged = False
            if self.step % config.log_every == 0 or self.step == config.iterations:
                self.life.log(
                    {
                        "step": self.step,
                        "split": "train",
                        "loss": last["loss"],
                        "accuracy": last["accuracy"],
                        "train_seconds": round(self.train_seconds, 3),
                    }
                )
                logged = True
            if config.val_every and (self.step % config.val_every == 0 or self.step == config.iterations):
                self.validate()
                logged = True
            if logged or (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                self.save_checkpoint()
        if not self.algorithm.trains:
            self.save_checkpoint()  # the untrained initialisation is the model (random features)
        if self.distributed:
            self.distributed.close()  # rank 0 tests alone, without collectives
        if self.is_main:
            self._stop_if_asked(0.0)  # a resumed run with step == iterations only tests
        return self.test() if self.is_main else None

    def _training_batch(self, rng: np.random.Generator | None = None):
        config, rng = self.config, rng or self.rng
        train = self.samplers["train"]
        if self.algorithm.batch_kind == "classification":
            size = config.meta_batch_size * self.spec.ways * (self.spec.shots + config.queries)
            images, labels = train.sample_classification(size, rng)
            return images.to(self.device), labels.to(self.device)
        return train.sample(config.meta_batch_size, rng).to(self.device)

    # -- the inner loop's implementation, decided once per run -----------------

    def choose_inner_loop(self) -> dict:
        """Fast paths or generic vmap (``--inner-loop``), decided once per run by a rule, never by a clock.

        ``auto`` takes the fast paths wherever the model has them (its own, or side-by-side rules for
        every parametrised layer) and the generic path otherwise. The two paths agree to rounding, not
        bit for bit, so a choice that depended on a timing would make the same command give different
        numbers under different load (docs/usage.md, "Reproducibility").
        """
        config = self.config
        if self.inner_loop is None:
            if config.inner_loop == "generic":
                self.inner_loop = {"path": "generic", "how": "--inner-loop generic"}
            else:  # two training tasks for the side-by-side check, from their own generator: the run's is untouched
                sample = self.samplers["train"].sample(2, np.random.default_rng(0)).support_x.to(self.device)
                self.inner_loop = fast_or_fallback(self.model, config.inner_loop, sample)
        self.hp = dataclasses.replace(config, inner_loop=self.inner_loop["path"])
        return self.inner_loop

    def test(self) -> dict:
        best_path = self.run_dir / "best.pt"
        tested_step = self.step
        if best_path.exists():
            state = load_torch(best_path, needs=("model", "step"))
            load_weights(self.model, state["model"], best_path)
            self._restore_owned(state, best_path)
            tested_step = state["step"]
        started = time.perf_counter()
        with progress_shown(self.life.progress):
            result = evaluate(
                self.algorithm,
                self.model,
                self.samplers["test"],
                self.hp,
                self.config.test_tasks,
                TEST_TASK_SEED,
                self.device,
            )
        summary = {
            "algo": self.config.algo,
            "data": self.config.data,
            "seed": self.config.seed,
            "precision": self.config.precision,
            "inner_loop": self.inner_loop,
            "test": result,
            "tested_checkpoint": {"file": best_path.name, "step": tested_step, "sha256": file_sha256(best_path)}
            if best_path.exists()
            else {"file": "final model", "step": tested_step},
            "best_val": self.best,
            "iterations": self.step,
            "train_seconds": round(self.train_seconds, 3),
            "seconds_per_iteration": round(self.train_seconds / max(self.step, 1), 5),
            "test_seconds": round(time.perf_counter() - started, 3),
            "environment": describe_device(self.device),
        }
        return self.life.finish(summary)

"""MiniImageNet sampler on the real data in ../shared/data/miniimagenet, and its error messages."""

import csv
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, written_file

import harness_plugins.datasets.miniimagenet as mini
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError
from harness.plugin.manager import get_plugins


@pytest.fixture(scope="module")
def mini_root(data_root):
    root = data_root / "miniimagenet"
    if not (root / "test.csv").is_file():
        pytest.skip(f"no MiniImageNet under {root}")
    return data_root


def open_split(data_root, split, spec="miniimagenet-5w1s", queries=15):
    sampler = get_plugins().task_samplers.get("miniimagenet")
    return sampler.open(
        parse_task_spec(spec), split, data_root, {"split": "default", "queries": queries, "download": False}
    )


def test_split_sizes_disjoint_and_images(mini_root):
    splits = {s: open_split(mini_root, s) for s in ("train", "val", "test")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert splits["test"].images.shape == (20, 600, 3, 84, 84)  # the complete test split
    assert splits["train"].images.shape[1] == 200  # the reduced copy in shared/data
    names = {s: set(splits[s].class_names) for s in splits}
    assert (
        not (names["train"] & names["val"])
        and not (names["train"] & names["test"])
        and not (names["val"] & names["test"])
    )
    episodes = splits["test"].sample(3, np.random.default_rng(0))
    assert episodes.support_x.shape == (3, 5, 3, 84, 84) and episodes.query_x.shape == (3, 75, 3, 84, 84)
    assert episodes.support_x.dtype == torch.float32
    assert 0.0 <= episodes.query_x.min() and episodes.query_x.max() <= 1.0 and episodes.query_x.std() > 0.1
    for t in range(3):
        assert torch.equal(episodes.query_y[t], torch.arange(5).repeat_interleave(15))


def make_small_copy(data_root, tmp_path, classes=6, per_class=20):
    """A real-data subset in the Ravi layout: first `classes` test classes, `per_class` images each."""
    source = data_root / "miniimagenet"
    target = tmp_path / "mini" / "miniimagenet"
    (target / "images").mkdir(parents=True)
    rows = list(csv.reader(open(source / "test.csv")))[1:]
    kept, counts = [], {}
    for filename, label in rows:
        if (label in counts or len(counts) < classes) and counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            kept.append((filename, label))
            shutil.copy(source / "images" / filename, target / "images" / filename)
    for split in ("train", "val", "test"):
        with open(target / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            writer.writerows(kept)
    return tmp_path / "mini", target, kept


def test_cache_is_reused_and_rebuilt_when_the_source_changes(mini_root, tmp_path, monkeypatch):
    root, target, kept = make_small_copy(mini_root, tmp_path)
    first = open_split(root, "train", queries=5).images.clone()
    calls = []
    real_decode = mini._decode
    monkeypatch.setattr(mini, "_decode", lambda path: calls.append(path) or real_decode(path))
    again = open_split(root, "train", queries=5).images
    assert calls == [] and torch.equal(first, again)  # memory-mapped cache, nothing decoded
    # Replace one image with another class's picture: the fingerprint changes and the split is decoded again.
    shutil.copy(target / "images" / kept[-1][0], target / "images" / kept[0][0])
    changed = open_split(root, "train", queries=5).images
    assert len(calls) == len(kept)
    assert torch.equal(changed[0, 0], first[-1, -1]) and not torch.equal(changed[0, 0], first[0, 0])


def test_missing_image_class_too_small_and_bad_pickle(mini_root, tmp_path):
    root, target, kept = make_small_copy(mini_root, tmp_path, classes=6, per_class=20)
    (target / "images" / kept[3][0]).unlink()
    with pytest.raises(
        HarnessError, match=rf"^MiniImageNet image listed in {target / 'train.csv'} is missing: .*{kept[3][0]}$"
    ):
        open_split(root, "train", queries=5)
    with pytest.raises(HarnessError, match=rf"class {kept[0][1]} has 20 images, fewer than the 21 a task needs$"):
        open_split(root, "val", spec="miniimagenet-5w1s", queries=20)
    (target / "images" / kept[3][0]).write_bytes(b"not a jpeg")
    with pytest.raises(HarnessError, match=rf"^cannot read MiniImageNet image .*{kept[3][0]}"):
        open_split(root, "test", queries=5)

    pickles = tmp_path / "pickles" / "miniimagenet"
    pickles.mkdir(parents=True)
    for split in ("train", "val", "test"):
        with open(pickles / f"mini-imagenet-cache-{split}.pkl", "wb") as handle:
            pickle.dump({"images": np.zeros((2, 84, 84, 3), np.uint8)}, handle)
    with pytest.raises(
        HarnessError,
        match=r"^.*mini-imagenet-cache-train.pkl: expected a dict with keys 'image_data' and 'class_dict', found \['images'\]$",
    ):
        open_split(tmp_path / "pickles", "train")


def test_pickle_format_is_read(tmp_path):
    root = tmp_path / "miniimagenet"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        pixels = rng.integers(0, 256, size=(6 * 20, 84, 84, 3), dtype=np.uint8)
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as handle:
            pickle.dump(
                {"image_data": pixels, "class_dict": {f"n{c:03d}": list(range(c * 20, c * 20 + 20)) for c in range(6)}},
                handle,
            )
    sampler = open_split(tmp_path, "val", queries=5)
    assert sampler.images.shape == (6, 20, 3, 84, 84)
    with open(root / "mini-imagenet-cache-val.pkl", "rb") as handle:
        raw = pickle.load(handle)["image_data"]
    assert torch.equal(sampler.images[1, 2], torch.from_numpy(raw[22].transpose(2, 0, 1).copy()))


def test_missing_data_names_both_formats(tmp_path):
    with pytest.raises(HarnessError) as error:
        open_split(tmp_path, "train")
    message = str(error.value)
    assert message.startswith(f"MiniImageNet not found: expected either {tmp_path}/miniimagenet/images/*.jpg")
    assert "mini-imagenet-cache-{train,val,test}.pkl" in message and "\n" not in message


def test_paper_defaults_for_the_specs():
    sampler = get_plugins().task_samplers.get("miniimagenet")
    defaults = {k: v for k, (v, _) in sampler.paper_defaults(parse_task_spec("miniimagenet-5w5s")).items()}
    assert defaults["meta_batch_size"] == 4 and defaults["inner_lr"] == 0.01 and defaults["queries"] == 15
    assert defaults["inner_steps"] == 5 and defaults["test_inner_steps"] == 10
    assert sampler.default_backbone == "conv4-pool"


def test_short_anil_run_learns(mini_root, tmp_path):
    import json

    out = tmp_path / "anil"
    # A CPU-sized budget: 5 query images per class and 2 tasks per meta-batch (measured: 38.3 +- 1.9 %, ~1 min).
    result = run_cli(
        "run",
        "--algo",
        "anil",
        "--data",
        "miniimagenet-5w5s5q",
        "--meta-batch-size",
        "2",
        "--iterations",
        "80",
        "--val-every",
        "80",
        "--val-tasks",
        "20",
        "--test-tasks",
        "100",
        "--no-progress",
        "--no-download",
        "--data-root",
        mini_root,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.28, summary["test"]  # chance is 20 %
    # The evaluators that work on Omniglot work here too (conv4-pool body, 3-channel images).
    for evaluator, extra in (("nil", []), ("freeze", ["-o", "layers=1-2"])):
        result = run_cli(
            "eval",
            out,
            "--evaluator",
            evaluator,
            "--test-tasks",
            "10",
            "--data-root",
            mini_root,
            "--no-download",
            *extra,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(written_file(result).read_text())["rows"][0]["tasks"] == 10
    result = run_cli("analyze", "similarity", out, "--tasks", "3", "--data-root", mini_root, "--no-download")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "analysis-similarity-cca-num_tasks=3.json").read_text())["rows"]
    assert [row["layer"] for row in rows] == ["body.0", "body.1", "body.2", "body.3", "head", "body mean"]
    assert rows[-1]["mean"] == pytest.approx(sum(row["mean"] for row in rows[:4]) / 4)  # mean of per-task means


def test_classes_of_unequal_size_are_kept_whole_and_memory_mapped(mini_root, tmp_path):
    root, target, kept = make_small_copy(mini_root, tmp_path, classes=6, per_class=20)
    first = kept[0][1]
    rows = [row for row in kept if row[1] != first] + [row for row in kept if row[1] == first][:12]
    with open(target / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    sampler = open_split(root, "train", queries=5)
    assert sampler.ragged and isinstance(sampler.images, np.memmap)  # not copied into memory
    assert sorted(sampler.counts.tolist()) == [12, 20, 20, 20, 20, 20]  # nothing cut to the smallest class
    episodes = sampler.sample(4, np.random.default_rng(0))
    assert episodes.query_x.shape == (4, 25, 3, 84, 84) and episodes.query_x.std() > 0.1
    dense = open_split(root, "test", queries=5)  # equal classes: the dense in-memory pool, as before
    assert not dense.ragged and dense.images.shape == (6, 20, 3, 84, 84)


@pytest.mark.parametrize("algo", ["boil", "maml++", "unicorn-maml", "meta-sgd", "protonet"])
def test_the_algorithms_beyond_the_paper_train_and_evaluate_on_miniimagenet(algo, mini_root, tmp_path):
    out = tmp_path / algo
    inner = [] if algo == "protonet" else ["--inner-steps", "2", "--test-inner-steps", "2"]  # no inner loop
    flags = ["--data", "miniimagenet-5w1s", "--meta-batch-size", "1", *inner]
    flags += ["--val-every", "2", "--val-tasks", "2", "--test-tasks", "6"]
    flags += ["--no-progress", "--no-download", "--data-root", mini_root, "--out", out]
    result = run_cli("run", "--algo", algo, "--iterations", "2", *flags)
    assert result.returncode == 0, result.stderr
    test = json.loads((out / "summary.json").read_text())["test"]
    assert test["tasks"] == 6 and 0 <= test["accuracy"] <= 1
    if algo == "protonet":  # no inner loop: its body under NIL instead
        evaluated = run_cli("eval", out, "--evaluator", "nil", "--data-root", mini_root, "--no-download")
        assert evaluated.returncode == 0, evaluated.stderr
        return
    evaluated = run_cli("eval", out, "--evaluator", "freeze", "-o", "layers=none", "--data-root", mini_root)
    assert evaluated.returncode == 0, evaluated.stderr
    rows = json.loads((out / "eval-freeze-layers=none.json").read_text())["rows"]
    assert rows[0]["mean"] == pytest.approx(test["accuracy"], abs=1e-12)  # the algorithm's own inner loop

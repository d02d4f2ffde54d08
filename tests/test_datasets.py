"""tieredImageNet, CIFAR-FS, FC100, CUB and MiniImageNet's parquet copies, each decoded and sampled from a
small data set written here in that release's exact on-disk format; and ``harness eval --data`` across
data sets. Every image is one flat colour that encodes its class, so a task shows which classes it drew."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from harness.data.labelled_pools import read_split_file
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError
from harness.plugin.manager import get_plugins
from harness.reproduce.planning import PlannedRun
from harness.reproduce.tables import evaluate_run

SPLITS = Path(__file__).resolve().parent.parent / "plugins" / "datasets" / "splits"


def listed(name: str, split: str) -> list[str]:
    return read_split_file(SPLITS / name / f"{split}.txt")


def drawn_classes(dataset: str, spec_text: str, split: str, root: Path, code_to_class: dict, tolerance=0) -> set:
    """The classes 200 tasks of ``split`` drew, checking each task: one flat colour per label, distinct labels."""
    spec = parse_task_spec(spec_text)
    sampler = get_plugins().task_samplers.get(dataset).open(spec, split, root, {"queries": spec.queries or 1})
    rng, seen = np.random.default_rng(0), set()
    for _ in range(10):
        episodes = sampler.sample(20, rng)
        for task in range(20):
            codes = []
            for label in range(spec.ways):
                support = episodes.support_x[task][episodes.support_y[task] == label]  # [shots, C, H, W]
                query = episodes.query_x[task][episodes.query_y[task] == label]
                values = np.round(np.concatenate([support, query]) * 255).astype(int)
                assert values.max() - values.min() <= 2 * tolerance, "a label mixes classes"
                codes.append(int(np.round(values.mean())))
            classes = [min(code_to_class, key=lambda code: abs(code - value)) for value in codes]
            assert all(abs(code - value) <= tolerance for code, value in zip(classes, codes, strict=True))
            assert len(set(classes)) == spec.ways
            seen.update(code_to_class[code] for code in classes)
    return seen


# -- CIFAR-FS and FC100: CIFAR-100's python format ----------------------------------------------------------


def write_cifar100(root: Path) -> dict[int, str]:
    """100 fine classes (the CIFAR-FS lists' names), 20 superclasses of 5 (the FC100 lists' names); 3 train and
    1 test image per class. Returns pixel value -> fine class."""
    fine = sorted(sum((listed("cifar-fs", s) for s in ("train", "val", "test")), []))
    coarse = sorted(sum((listed("fc100", s) for s in ("train", "val", "test")), []))
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per_class in (("train", 3), ("test", 1)):
        labels = np.repeat(np.arange(100), per_class)
        data = np.repeat((2 * labels + 1).astype(np.uint8)[:, None], 3072, axis=1)  # flat colour 2f+1
        record = {"data": data, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}
        (folder / name).write_bytes(pickle.dumps(record))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": fine, "coarse_label_names": coarse}))
    return {2 * index + 1: name for index, name in enumerate(fine)}


def test_cifar_fs_and_fc100_sample_their_published_classes_from_cifar100(tmp_path):
    code_to_class = write_cifar100(tmp_path)
    fine = sorted(code_to_class.values())
    for split in ("train", "val", "test"):
        assert drawn_classes("cifar-fs", "cifar-fs-5w1s3q", split, tmp_path, code_to_class) == set(
            listed("cifar-fs", split)
        )
    superclasses = sorted(sum((listed("fc100", s) for s in ("train", "val", "test")), []))
    members = {name: superclasses[index // 5] for index, name in enumerate(fine)}
    for split in ("val", "test"):
        drawn = drawn_classes("fc100", "fc100-5w1s3q", split, tmp_path, code_to_class)
        assert {members[name] for name in drawn} == set(listed("fc100", split)) and len(drawn) == 20


def test_cifar_images_are_32x32_rgb_channel_planes(tmp_path):
    fine = sorted(write_cifar100(tmp_path).values())
    folder = tmp_path / "cifar-100-python"
    record = pickle.loads((folder / "train").read_bytes())
    record["data"][0] = np.arange(3072) % 251  # the first image of fine class 0: a known pattern
    (folder / "train").write_bytes(pickle.dumps(record))
    split = next(s for s in ("train", "val", "test") if fine[0] in listed("cifar-fs", s))
    spec = parse_task_spec("cifar-fs-5w1s3q")
    sampler = get_plugins().task_samplers.get("cifar-fs").open(spec, split, tmp_path, {"queries": 3})
    assert (sampler.in_channels, sampler.image_size) == (3, 32)
    first = np.asarray(sampler.images[sampler.class_names.index(fine[0]), 0])  # [3, 32, 32]
    assert np.array_equal(first.reshape(-1), np.arange(3072) % 251)


# -- CUB-200-2011: the official JPEG folders ---------------------------------------------------------------


def write_cub(root: Path, per_class: int = 6, splits=("train", "val", "test")) -> dict[int, str]:
    names = sorted(sum((listed("cub", s) for s in splits), []))
    for index, name in enumerate(names):
        folder = root / "CUB_200_2011" / "images" / name
        folder.mkdir(parents=True)
        for number in range(per_class):
            Image.new("RGB", (20, 16), (index, index, index)).save(folder / f"{name}_{number}.jpg", quality=95)
    return dict(enumerate(names))


def test_cub_samples_the_chen_et_al_classes_from_the_official_jpegs(tmp_path):
    code_to_class = write_cub(tmp_path)
    for split in ("train", "val", "test"):
        assert drawn_classes("cub", "cub-5w1s5q", split, tmp_path, code_to_class, tolerance=1) == set(
            listed("cub", split)
        )
    spec = parse_task_spec("cub-5w1s")
    sampler = get_plugins().task_samplers.get("cub").open(spec, "test", tmp_path, {"queries": 1})
    assert (sampler.in_channels, sampler.image_size) == (3, 84)


# -- tieredImageNet: MetaOptNet's .npz and Ren et al.'s PNG pickles -----------------------------------------


def write_tiered(root: Path, png: bool) -> dict[int, str]:
    folder = root / "tiered-imagenet"
    folder.mkdir(parents=True)
    codes, first = {}, 0
    for split, classes in (("train", 7), ("val", 5), ("test", 6)):
        labels = np.repeat(np.arange(classes), 4)
        values = (10 * (labels + first) + 5).astype(np.uint8)
        images = np.broadcast_to(values[:, None, None, None], (len(labels), 84, 84, 3)).copy()
        names = [f"{split}-class-{c}" for c in range(classes)]
        codes.update({10 * (c + first) + 5: names[c] for c in range(classes)})
        first += classes
        record = (
            {"label_specific": labels.tolist(), "label_specific_str": names} if png else {"labels": labels.tolist()}
        )
        (folder / f"{split}_labels.pkl").write_bytes(pickle.dumps(record))
        if png:
            encoded = []
            for image in images:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
            (folder / f"{split}_images_png.pkl").write_bytes(pickle.dumps(encoded))
        else:
            np.savez(folder / f"{split}_images.npz", images=images)
    return codes


@pytest.mark.parametrize("png", [False, True], ids=["metaoptnet-npz", "ren-png-pickle"])
def test_tiered_imagenet_samples_each_split_from_its_own_files(tmp_path, png):
    codes = write_tiered(tmp_path, png)
    for split, classes in (("train", 7), ("val", 5), ("test", 6)):
        drawn = drawn_classes("tieredimagenet", "tieredimagenet-5w1s3q", split, tmp_path, codes)
        assert drawn == {f"{split}-class-{c}" for c in range(classes)}
    if png:
        spec = parse_task_spec("tieredimagenet-5w1s")
        sampler = get_plugins().task_samplers.get("tieredimagenet").open(spec, "val", tmp_path, {"queries": 1})
        assert sampler.class_names == [f"val-class-{c}" for c in range(5)]


# -- MiniImageNet: Hugging Face's parquet layout ------------------------------------------------------------


def write_parquet_miniimagenet(root: Path, per_class: int = 4) -> dict[int, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "miniimagenet" / "data"
    folder.mkdir(parents=True)
    codes, first = {}, 0
    for split, classes in (("train", 6), ("validation", 5), ("test", 5)):
        names = [f"n{first + c:08d}" for c in range(classes)]
        rows = []
        for number in range(per_class):  # classes interleaved, as shuffled hub copies are
            for c in range(classes):
                value = 12 * (first + c) + 6
                buffer = io.BytesIO()
                Image.new("RGB", (84, 84), (value, value, value)).save(buffer, format="PNG")
                rows.append({"image": {"bytes": buffer.getvalue(), "path": f"{names[c]}_{number}.png"}, "label": c})
                codes[value] = names[c]
        table = pa.Table.from_pylist(rows)
        features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
        pq.write_table(table.replace_schema_metadata(metadata), folder / f"{split}-00000-of-00001.parquet")
        first += classes
    return codes


def test_miniimagenet_reads_the_hugging_face_parquet_layout(tmp_path):
    codes = write_parquet_miniimagenet(tmp_path)
    for split, first, classes in (("train", 0, 6), ("val", 6, 5), ("test", 11, 5)):
        drawn = drawn_classes("miniimagenet", "miniimagenet-5w1s3q", split, tmp_path, codes)
        assert drawn == {f"n{first + c:08d}" for c in range(classes)}
    spec = parse_task_spec("miniimagenet-5w1s")
    sampler = get_plugins().task_samplers.get("miniimagenet").open(spec, "val", tmp_path, {"queries": 1})
    assert sampler.class_names == [f"n{6 + c:08d}" for c in range(5)]  # the ClassLabel names of the metadata


def test_a_class_too_small_for_the_task_is_named(tmp_path):
    write_cifar100(tmp_path)
    spec = parse_task_spec("cifar-fs-5w1s5q")
    with pytest.raises(HarnessError, match=r"^cifar-fs train: class \w+ has 4 images, fewer than the 6 a task needs$"):
        get_plugins().task_samplers.get("cifar-fs").open(spec, "train", tmp_path, {"queries": 5})


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("cifar-fs", "harness: error: CIFAR-100 not found: expected {root}/cifar-100-python/{{train,test,meta}}"),
        ("cub", "harness: error: CUB-200-2011 not found: expected {root}/CUB_200_2011/images/<NNN.Class_name>/*.jpg"),
        ("tieredimagenet", "harness: error: tieredImageNet not found: expected {root}/tiered-imagenet/"),
    ],
)
def test_missing_data_is_one_line_naming_the_expected_layout(tmp_path, dataset, expected):
    result = run_cli(
        "run", "--algo", "anil", "--data", f"{dataset}-5w1s", "--data-root", tmp_path, "--out", tmp_path / "r"
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(expected.format(root=tmp_path))
    assert not (tmp_path / "r").exists()


# -- harness eval --data: a MiniImageNet-trained run on CUB's test classes -----------------------------------


def test_eval_on_another_data_set_uses_its_test_classes_and_records_them(tmp_path):
    write_parquet_miniimagenet(tmp_path)
    write_cub(tmp_path, per_class=20, splits=("test",))  # NIL's query set takes 15 images per class
    out = tmp_path / "run"
    trained = run_cli(
        "run", "--algo", "anil", "--data", "miniimagenet-5w1s1q", "--iterations", "2", "--meta-batch-size", "2",
        "--val-every", "2", "--val-tasks", "2", "--test-tasks", "2", "--no-progress",
        "--data-root", tmp_path, "--out", out,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = run_cli("eval", out, "--data", "cub-5w5s", "--test-tasks", "6", "--data-root", tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "eval-fewshot-num_tasks=6-data=cub-5w5s.json").read_text())
    assert written["provenance"]["data"] == "cub-5w5s" and written["rows"][0]["tasks"] == 6
    for evaluator, options in (
        ("nil", []),
        ("freeze", ["-o", "layers=1-4"]),
        ("similarity", []),
    ):  # the paper's instruments
        other = run_cli(
            "eval", out, "--data", "cub-5w5s", "--evaluator", evaluator, *options, "--test-tasks", "4", "--data-root", tmp_path
        )  # fmt: skip
        assert other.returncode == 0, other.stderr
        assert next(out.glob(f"eval-{evaluator}-*data=cub-5w5s.json"))
    row = PlannedRun("cross", "anil", "miniimagenet-5w1s1q", "image", 0, {}, "k", out, eval_data="cub-5w5s")
    assert evaluate_run(row, str(tmp_path))["tasks"] == 2  # harness reproduce's eval_data rows: the run's 2 test tasks
    assert json.loads((out / "eval-fewshot-data=cub-5w5s.json").read_text())["provenance"]["data"] == "cub-5w5s"
    wrong_ways = run_cli("eval", out, "--data", "cub-20w1s", "--data-root", tmp_path)
    assert wrong_ways.returncode == 2 and wrong_ways.stderr == (
        f"harness: error: --data cub-20w1s: 20-way tasks, but {out} was trained on miniimagenet-5w1s1q and its head "
        f"has 5 outputs; evaluate 5-way tasks\n"
    )
    write_cifar100(tmp_path)
    wrong_size = run_cli("eval", out, "--data", "cifar-fs-5w1s", "--data-root", tmp_path)
    assert wrong_size.returncode == 2 and wrong_size.stderr == (
        f"harness: error: --data cifar-fs-5w1s: 3-channel 32x32 images, but the model of {out} was built for "
        f"3-channel 84x84 ones (miniimagenet-5w1s1q)\n"
    )

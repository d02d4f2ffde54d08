"""MiniImageNet task sampler (Vinyals et al. 2016; split of Ravi & Larochelle 2017).

64 training, 16 validation and 20 test classes of 84x84 RGB images. Two
on-disk formats are read, from ``ROOT/miniimagenet/`` (or ``ROOT/`` itself):

- the Ravi & Larochelle release: ``images/<filename>.jpg`` and
  ``train.csv``, ``val.csv``, ``test.csv`` with header ``filename,label``;
- the widely shared pickle caches ``mini-imagenet-cache-{train,val,test}.pkl``:
  a dict with ``image_data`` (uint8, N x 84 x 84 x 3) and ``class_dict``
  (class -> list of row indices);
- the parquet layout of Hugging Face ``datasets`` hub copies:
  ``data/{train,validation,test}-*.parquet`` (``val`` also accepted) with an
  ``image`` column (``{bytes, path}``, encoded JPEG or PNG) and a ``label``
  column (class index or name; the names of a ``ClassLabel`` are read from the
  file's ``huggingface`` metadata). Needs ``pyarrow`` (the ``parquet`` extra).

JPEGs are decoded once into a uint8 ``.npy`` (channels first) in the decoded
cache directory (``harness.data.root.cache_dir``), keyed by a fingerprint of
the CSV and the image files, so a changed source is decoded again; later runs
memory-map it. Episodes are sampled from memory and scaled to [0, 1] on the
fly, as the reference MAML code feeds them (``/ 255``, no mean subtraction).
Images that are not 84x84 are resized with Lanczos.

Every class keeps all its images (600 in the original release; 200 for the
reduced train/val copy in ``shared/data``). When the classes of a split are of
equal size the decoded images are copied into memory as one dense
``[classes, images, 3, 84, 84]`` array (the fastest gather); when they are not,
they stay a memory map of the decoded cache and each task reads only its
images (``harness.data.episodes.ClassPoolSampler``, ragged pool).

    harness run --algo anil --data miniimagenet-5w1s
"""

from __future__ import annotations

import csv
import hashlib
import io
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

import harness
from harness.data.episodes import ClassPoolSampler
from harness.data.images import decode_image
from harness.data.labelled_pools import class_pool, labelled_sampler
from harness.data.root import decode_all, fingerprint, load_or_build_array
from harness.errors import HarnessError

IMAGE_SIZE = 84
SPLITS = ("train", "val", "test")


PARQUET_SPLITS = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}


def parquet_files(root: Path, split: str) -> list[Path]:
    """The parquet shards of ``split`` (Hugging Face's ``data/<split>-00000-of-00001.parquet`` naming)."""
    for name in PARQUET_SPLITS[split]:
        files = sorted((root / "data").glob(f"{name}-*.parquet"))
        if files:
            return files
    return []


def find_root(data_root: Path) -> Path | None:
    for candidate in (data_root / "miniimagenet", data_root):
        if all(parquet_files(candidate, s) for s in SPLITS):
            return candidate
        if all((candidate / f"{s}.csv").is_file() for s in SPLITS) and (candidate / "images").is_dir():
            return candidate
        if all((candidate / f"mini-imagenet-cache-{s}.pkl").is_file() for s in SPLITS):
            return candidate
    return None


def missing_data_error(data_root: Path) -> HarnessError:
    expected = data_root / "miniimagenet"
    return HarnessError(
        f"MiniImageNet not found: expected either {expected}/images/*.jpg with {expected}/train.csv, val.csv, test.csv "
        f"(Ravi & Larochelle format, header filename,label) or {expected}/mini-imagenet-cache-{{train,val,test}}.pkl "
        f"(dict with image_data uint8 N x 84 x 84 x 3 and class_dict) or {expected}/data/{{train,validation,test}}-*.parquet "
        f"(a Hugging Face datasets copy: image and label columns); there is no reliable public download, so copy "
        f"your own copy there or pass --data-root / set HARNESS_DATA_ROOT"
    )


def read_csv(path: Path) -> OrderedDict[str, list[str]]:
    """``{label: [filename, ...]}`` in file order."""
    classes: OrderedDict[str, list[str]] = OrderedDict()
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
                raise HarnessError(f"{path}: expected a header line 'filename,label', got {header!r}")
            for number, row in enumerate(reader, start=2):
                if len(row) < 2:
                    raise HarnessError(f"{path}:{number}: expected 'filename,label', got {row!r}")
                classes.setdefault(row[1].strip(), []).append(row[0].strip())
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not classes:
        raise HarnessError(f"{path} lists no images")
    return classes


def _decode(path: Path) -> np.ndarray:
    return decode_image(path, "RGB", IMAGE_SIZE, "MiniImageNet").transpose(2, 0, 1)  # [3, 84, 84]


def _class_sizes(classes: dict, needed: int, source: str) -> list[int]:
    """Images per class; a class below ``needed`` (support + queries) is an error naming it."""
    for label, members in classes.items():
        if len(members) < needed:
            raise HarnessError(
                f"{source}: class {label} has {len(members)} images, fewer than the {needed} a task needs"
            )
    return [len(members) for members in classes.values()]


def load_csv_split(root: Path, split: str, needed: int) -> tuple:
    csv_path = root / f"{split}.csv"
    classes = read_csv(csv_path)
    counts = _class_sizes(classes, needed, str(csv_path))
    files = [root / "images" / name for members in classes.values() for name in members]
    for path in files:
        if not path.is_file():
            raise HarnessError(f"MiniImageNet image listed in {csv_path} is missing: {path}")
    key = fingerprint(files, extra=hashlib.sha256(csv_path.read_bytes()).hexdigest() + "/all/v2")

    def build(allocate) -> np.ndarray:
        return decode_all(files, _decode, f"MiniImageNet {split}", allocate)

    array = load_or_build_array(f"miniimagenet-{split}-84", key, build)  # [images, 3, 84, 84], class after class
    return (*class_pool(array, counts), list(classes))


def load_pickle_split(root: Path, split: str, needed: int) -> tuple:
    path = root / f"mini-imagenet-cache-{split}.pkl"
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise HarnessError(f"{path}: expected a dict with keys 'image_data' and 'class_dict', found {found}")
    pixels, class_dict = np.asarray(data["image_data"]), data["class_dict"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise HarnessError(f"{path}: image_data must be uint8 N x 84 x 84 x 3, got {pixels.dtype} {pixels.shape}")
    if not isinstance(class_dict, dict) or not class_dict:
        raise HarnessError(f"{path}: class_dict must be a non-empty dict of class -> image indices")
    counts = _class_sizes(class_dict, needed, str(path))
    try:
        indices = np.concatenate([np.asarray(list(members), dtype=np.int64) for members in class_dict.values()])
        chosen = pixels[indices]  # [images, 84, 84, 3], class after class
    except (IndexError, ValueError, TypeError) as exc:
        raise HarnessError(f"{path}: class_dict indices do not fit image_data ({exc})") from None
    return (*class_pool(np.ascontiguousarray(chosen.transpose(0, 3, 1, 2)), counts), list(class_dict))


def parquet_sampler(spec, split: str, files: list[Path], options: dict):
    """A split in Hugging Face's parquet layout: labels read at every start, images decoded once into the cache."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HarnessError(
            "MiniImageNet in parquet files needs pyarrow: pip install 'feature-reuse-harness[parquet]'"
        ) from None
    tables = [pq.read_table(path, columns=["label"]) for path in files]
    labels = np.concatenate([table.column("label").to_numpy(zero_copy_only=False) for table in tables])
    names = _class_label_names(pq.read_schema(files[0]))
    classes = list(dict.fromkeys(labels.tolist()))  # in file order

    def pixels(order: np.ndarray, allocate) -> np.ndarray:
        images = [
            item["bytes"]
            for path in files
            for item in pq.read_table(path, columns=["image"]).column("image").to_pylist()
        ]
        out = allocate((len(order), 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        for row, index in enumerate(order):
            out[row] = decode_image(io.BytesIO(images[index]), "RGB", IMAGE_SIZE, "MiniImageNet").transpose(2, 0, 1)
        return out

    return labelled_sampler(
        spec,
        options,
        split_name=f"MiniImageNet {split}",
        cache_name=f"miniimagenet-parquet-{split}-84",
        key=fingerprint(files, extra="parquet/v1"),
        labels=labels,
        classes=classes,
        pixels=pixels,
        class_names=[names[c] if names and isinstance(c, int) else str(c) for c in classes],
    )


def _class_label_names(schema) -> list[str] | None:
    """The ``ClassLabel`` names that ``datasets`` writes into a parquet file's metadata, if any."""
    import json

    metadata = (schema.metadata or {}).get(b"huggingface")
    if not metadata:
        return None
    features = json.loads(metadata).get("info", {}).get("features", {})
    return features.get("label", {}).get("names")


class MiniImageNet:
    name = "miniimagenet"
    description = (
        "MiniImageNet, Ravi & Larochelle split (64/16/20 classes), 84x84 RGB; CSV+JPEG, pickle caches or "
        "Hugging Face parquet"
    )
    default_backbone = "conv4-pool"

    def paper_defaults(self, spec) -> dict:
        return {
            "meta_batch_size": (4, "Raghu et al. 2020 App. A / Finn et al. 2017: meta-batch 4 for MiniImageNet"),
            "inner_steps": (5, "Raghu et al. 2020 App. A: 5 inner steps in training"),
            "test_inner_steps": (10, "Raghu et al. 2020 App. A: 10 inner steps at test"),
            "inner_lr": (0.01, "Raghu et al. 2020 App. A: inner lr 0.01"),
            "outer_lr": (1e-3, "cbfinn/maml main.py: meta_lr 0.001 (Adam); Raghu et al. 2020 use that code (App. C.4)"),
            "queries": (15, "cbfinn/maml main.py: DataGenerator(update_batch_size+15) for MiniImageNet training"),
            "iterations": (30_000, "Raghu et al. 2020 App. B.1 and C.4: models trained for 30,000 iterations"),
            # Speed/memory only: 32 tasks x 80 images of 84x84 per vectorised evaluation chunk peaked at 8.2 GB.
            "eval_batch_size": (4, "memory: evaluation chunk of 4 tasks for 84x84 images"),
        }

    def open(self, spec, split: str, data_root: Path, options: dict) -> ClassPoolSampler:
        if options.get("split", "default") not in ("default", "ravi"):
            raise HarnessError(f"unknown MiniImageNet split {options['split']!r}; valid splits: ravi")
        root = find_root(Path(data_root))
        if root is None:
            raise missing_data_error(Path(data_root))
        needed = spec.shots + options["queries"]
        if parquet_files(root, split):
            return parquet_sampler(spec, split, parquet_files(root, split), options)
        if (root / f"{split}.csv").is_file() and (root / "images").is_dir():
            images, counts, class_names = load_csv_split(root, split, needed)
        else:
            images, counts, class_names = load_pickle_split(root, split, needed)
        return ClassPoolSampler(
            images,
            spec.ways,
            spec.shots,
            options["queries"],
            rotate_classes=False,
            split_name=f"MiniImageNet {split}",
            class_names=class_names,
            counts=counts,
        )


@harness.hookimpl
def register_task_samplers(registry):
    registry.add(MiniImageNet())

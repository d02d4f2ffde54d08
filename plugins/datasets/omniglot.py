"""Omniglot task sampler (Lake et al. 2015), as used by Finn et al. (2017) and Raghu et al. (2020).

Data: the layout ``torchvision.datasets.Omniglot`` extracts,
``ROOT/omniglot/omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/*.png``
(``ROOT/omniglot-py/...`` is accepted too). When it is missing the official
zips are fetched with torchvision's md5-checked downloader, unless
``--no-download``.

Preprocessing, as the reference MAML code (cbfinn/maml, ``resize_images.py``
and ``data_generator.py``): 105x105 -> 28x28 with PIL's Lanczos filter,
pixels scaled to [0, 1] and inverted (strokes = 1, background = 0).

Splits (``--split``):

- ``maml`` (default): all 1623 characters, sorted by set/alphabet/character,
  shuffled with ``random.Random(1)``; the first 1100 train, the next 100
  validate, the remaining 423 test (the reference code's 1200 = 1100 + 100 and
  ``random.seed(1)``; its own order came from ``os.listdir`` and is not
  reproducible, so the sort makes ours fixed). Every sampled class gets a
  random rotation by 0/90/180/270 degrees, the same for all its images in that
  task, at training, validation and test time alike, as the reference code
  applies it.
- ``lake``: the protocol of Lake et al. (2015): train on the 30 background
  alphabets (``images_background``), test on the 20 evaluation alphabets
  (``images_evaluation``, 659 characters), so no character of a test
  alphabet is seen in training. Validation holds out whole background
  alphabets: every sixth of the 30 in sorted order (the 6th, 12th, 18th,
  24th and 30th), the other 25 train. Tasks are augmented with rotations as
  in the ``maml`` split.
- ``vinyals``: the character+rotation classes of Vinyals et al. (2016) read
  from ``ROOT/omniglot/splits/vinyals/{train,val,test}.txt`` (1028/172/423
  characters x 4 rotations); each class has its fixed rotation and no further
  augmentation.

    harness run --algo anil --data omniglot-20w1s
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

import harness
from harness.data.episodes import ClassPoolSampler
from harness.data.images import decode_image
from harness.data.root import decode_all, fingerprint, load_or_build_array
from harness.errors import HarnessError

SETS = ("images_background", "images_evaluation")
IMAGES_PER_CHARACTER = 20
IMAGE_SIZE = 28
SPLITS = ("maml", "lake", "vinyals")
LAKE_VAL_EVERY = 6  # the 6th, 12th, ... background alphabet (sorted) validates under --split lake
MAML_SPLIT_SEED = 1  # cbfinn/maml data_generator.py: random.seed(1)
MAML_TRAIN, MAML_VAL = 1100, 100  # cbfinn/maml: num_train = 1200 - num_val, num_val = 100

_pool_cache: dict[str, tuple[np.ndarray, list[str]]] = {}


def find_images_root(data_root: Path) -> Path | None:
    for candidate in (data_root / "omniglot" / "omniglot-py", data_root / "omniglot-py"):
        if all((candidate / name).is_dir() for name in SETS):
            return candidate
    return None


def download(data_root: Path) -> None:
    """Fetch and extract both zips with torchvision's md5-checked helpers."""
    from torchvision.datasets import Omniglot as TorchvisionOmniglot

    for background in (True, False):
        TorchvisionOmniglot(str(data_root / "omniglot"), background=background, download=True)


def locate(data_root: Path, allow_download: bool) -> Path:
    images_root = find_images_root(data_root)
    if images_root is not None:
        return images_root
    expected = data_root / "omniglot" / "omniglot-py"
    reason = "downloading is disabled (--no-download)"
    if allow_download:
        try:
            download(data_root)
            images_root = find_images_root(data_root)
            if images_root is not None:
                return images_root
            reason = "the download finished but the folders are still missing"
        except Exception as exc:  # network errors come in many types
            reason = f"download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    raise HarnessError(
        f"Omniglot not found: expected {expected}/images_background and {expected}/images_evaluation "
        f"(the layout torchvision.datasets.Omniglot extracts); {reason}. Unzip images_background.zip and "
        f"images_evaluation.zip from github.com/brendenlake/omniglot (python/) there, or pass --data-root / "
        f"set HARNESS_DATA_ROOT to a folder that contains omniglot/omniglot-py"
    )


def list_characters(images_root: Path) -> list[tuple[str, Path]]:
    """``[(\"Alphabet/characterNN\", folder)]`` sorted by set, alphabet, character."""
    characters = []
    for set_name in SETS:
        for alphabet in sorted(p for p in (images_root / set_name).iterdir() if p.is_dir()):
            for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                characters.append((f"{alphabet.name}/{character.name}", character))
    if not characters:
        raise HarnessError(f"no character folders under {images_root}/images_background or images_evaluation")
    return characters


def _decode(path: Path) -> np.ndarray:
    return decode_image(path, "L", IMAGE_SIZE, "Omniglot")  # [28, 28]


def load_pool(images_root: Path) -> tuple[np.ndarray, list[str]]:
    """All characters decoded once: uint8 ``[1623, 20, 28, 28]`` and their names."""
    key = str(images_root.resolve())
    if key in _pool_cache:
        return _pool_cache[key]
    characters = list_characters(images_root)
    files = []
    for _name, folder in characters:
        pngs = sorted(folder.glob("*.png"))
        if len(pngs) < IMAGES_PER_CHARACTER:
            raise HarnessError(f"Omniglot character {folder} has {len(pngs)} images; expected {IMAGES_PER_CHARACTER}")
        files.extend(pngs[:IMAGES_PER_CHARACTER])

    def build(allocate) -> np.ndarray:
        shape = (len(characters), IMAGES_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE)
        return decode_all(files, _decode, "Omniglot", allocate, shape)

    pool = load_or_build_array("omniglot-28x28-lanczos", fingerprint(files, extra="v1"), build)
    _pool_cache[key] = (np.array(pool), [name for name, _ in characters])  # a writable in-memory copy of the memory map
    return _pool_cache[key]


def maml_split(names: list[str], split: str) -> list[int]:
    order = list(range(len(names)))
    random.Random(MAML_SPLIT_SEED).shuffle(order)
    bounds = {
        "train": (0, MAML_TRAIN),
        "val": (MAML_TRAIN, MAML_TRAIN + MAML_VAL),
        "test": (MAML_TRAIN + MAML_VAL, None),
    }
    start, stop = bounds[split]
    return order[start:stop]


def lake_split(images_root: Path, split: str) -> list[int]:
    """Character indices (into ``list_characters`` order) of one split of the Lake et al. (2015) protocol."""
    characters = list_characters(images_root)
    background = sorted({name.split("/")[0] for name, folder in characters if folder.parent.parent.name == SETS[0]})
    held_out = set(background[LAKE_VAL_EVERY - 1 :: LAKE_VAL_EVERY])
    keep = {
        "train": lambda alphabet, set_name: set_name == SETS[0] and alphabet not in held_out,
        "val": lambda alphabet, set_name: set_name == SETS[0] and alphabet in held_out,
        "test": lambda alphabet, set_name: set_name == SETS[1],
    }[split]
    return [i for i, (name, folder) in enumerate(characters) if keep(name.split("/")[0], folder.parent.parent.name)]


def vinyals_split(images_root: Path, names: list[str], split: str) -> list[tuple[int, int]]:
    """``[(character index, quarter turns)]`` from the Vinyals split file."""
    split_file = images_root.parent / "splits" / "vinyals" / f"{split}.txt"
    if not split_file.exists():
        raise HarnessError(
            f"Vinyals split file not found: {split_file} (lines like 'Angelic/character01/rot090'; "
            f"see github.com/jakesnell/prototypical-networks data/omniglot/splits/vinyals)"
        )
    index = {name: i for i, name in enumerate(names)}
    classes = []
    for number, line in enumerate(split_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            alphabet, character, rotation = line.strip().split("/")
            turns = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}[rotation]
            classes.append((index[f"{alphabet}/{character}"], turns))
        except (ValueError, KeyError):
            raise HarnessError(f"{split_file}:{number}: unknown class {line.strip()!r}") from None
    return classes


class Omniglot:
    name = "omniglot"
    description = (
        "Omniglot (Lake et al. 2015), 28x28, MAML split (1100/100/423), Lake alphabet split or Vinyals split; "
        "spec omniglot-<N>w<K>s"
    )
    default_backbone = "conv4"

    def paper_defaults(self, spec) -> dict:
        """``{field: (value, source)}`` for N-way K-shot Omniglot."""
        defaults = {
            # cbfinn/maml main.py builds omniglot tasks with update_batch_size*2
            # samples per class: K support and K query.
            "queries": (spec.shots, "cbfinn/maml main.py: K query images per class for Omniglot"),
            "outer_lr": (1e-3, "cbfinn/maml main.py: meta_lr 0.001 (Adam); Raghu et al. 2020 use that code (App. C.4)"),
        }
        if spec.ways <= 5:
            defaults.update(
                {
                    "meta_batch_size": (32, "Finn et al. 2017 Sec. 5.2: meta batch 32 for 5-way Omniglot"),
                    "inner_steps": (1, "Finn et al. 2017 Sec. 5.2: 1 inner step for 5-way Omniglot"),
                    "inner_lr": (0.4, "Finn et al. 2017 Sec. 5.2: step size 0.4 for 5-way Omniglot"),
                    "test_inner_steps": (3, "Finn et al. 2017 Sec. 5.2: 3 gradient steps at test"),
                    "iterations": (60_000, "Finn et al. 2017 Sec. 5.2: 60,000 iterations"),
                }
            )
        else:
            defaults.update(
                {
                    "meta_batch_size": (16, "Raghu et al. 2020 App. A: meta-batch 16 for 20-way Omniglot"),
                    "inner_steps": (5, "Raghu et al. 2020 App. A: 5 inner steps for 20-way Omniglot"),
                    "inner_lr": (0.1, "Raghu et al. 2020 App. A: inner lr 0.1 for 20-way Omniglot"),
                    "test_inner_steps": (10, "cbfinn/maml main.py: test_num_updates = 10 at test time"),
                    "iterations": (30_000, "Raghu et al. 2020 App. C.4: all models trained for 30,000 iterations"),
                }
            )
        return defaults

    def open(self, spec, split: str, data_root: Path, options: dict) -> ClassPoolSampler:
        split_scheme = options.get("split", "default")
        split_scheme = "maml" if split_scheme == "default" else split_scheme
        if split_scheme not in SPLITS:
            raise HarnessError(f"unknown Omniglot split {split_scheme!r}; valid splits: {', '.join(SPLITS)}")
        images_root = locate(Path(data_root), options.get("download", True))
        pool, names = load_pool(images_root)
        queries = options["queries"]
        if split_scheme in ("maml", "lake"):
            indices = maml_split(names, split) if split_scheme == "maml" else lake_split(images_root, split)
            images = torch.from_numpy(pool[indices]).unsqueeze(2)  # [classes, 20, 1, 28, 28]
            class_names = [names[i] for i in indices]
            rotate = True
        else:
            classes = vinyals_split(images_root, names, split)
            images = torch.stack([torch.rot90(torch.from_numpy(pool[i]), turns, dims=(-2, -1)) for i, turns in classes])
            images = images.unsqueeze(2)
            class_names = [f"{names[i]}/rot{90 * turns:03d}" for i, turns in classes]
            rotate = False
        return ClassPoolSampler(
            images,
            spec.ways,
            spec.shots,
            queries,
            rotate_classes=rotate,
            invert=True,
            split_name=f"Omniglot {split_scheme} {split}",
            class_names=class_names,
        )


@harness.hookimpl
def register_task_samplers(registry):
    registry.add(Omniglot())

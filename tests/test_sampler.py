"""Episode sampler invariants, on a synthetic pool and on real Omniglot."""

import numpy as np
import pytest
import torch

from harness.data.episodes import ClassPoolSampler
from harness.data.taskspec import parse_task_spec
from harness.errors import HarnessError
from harness.evaluation.fewshot import fixed_tasks
from harness.plugin.manager import get_plugins


def synthetic_pool(classes=12, per_class=6, size=4):
    # Pixel value encodes (class, image) so samples can be traced back.
    values = torch.arange(classes * per_class, dtype=torch.uint8).view(classes, per_class, 1, 1, 1)
    images = values.expand(classes, per_class, 1, size, size).clone()
    images[..., 0, 0] = 255  # a corner marker to observe rotations
    return images


def test_episode_shapes_labels_and_counts():
    sampler = ClassPoolSampler(synthetic_pool(), ways=5, shots=2, queries=3, rotate_classes=False)
    episodes = sampler.sample(7, np.random.default_rng(0))
    assert episodes.support_x.shape == (7, 10, 1, 4, 4)
    assert episodes.query_x.shape == (7, 15, 1, 4, 4)
    for t in range(7):
        assert torch.equal(episodes.support_y[t], torch.arange(5).repeat_interleave(2))
        assert torch.equal(episodes.query_y[t], torch.arange(5).repeat_interleave(3))
        ids = (episodes.support_x[t, :, 0, 1, 1] * 255).round().long()  # [10] = class*6 + image
        query_ids = (episodes.query_x[t, :, 0, 1, 1] * 255).round().long()
        classes = ids.view(5, 2) // 6
        assert (classes == classes[:, :1]).all()  # one class per label
        assert len(set(classes[:, 0].tolist())) == 5  # distinct classes
        assert torch.equal(query_ids.view(5, 3) // 6, classes[:, :1].expand(5, 3))
        all_ids = torch.cat([ids, query_ids]).tolist()
        assert len(set(all_ids)) == len(all_ids)  # support and query images never overlap


def test_same_seed_same_episodes_and_different_seed_differs():
    sampler = ClassPoolSampler(synthetic_pool(), ways=3, shots=1, queries=1, rotate_classes=True)
    a = sampler.sample(4, np.random.default_rng(5))
    b = sampler.sample(4, np.random.default_rng(5))
    c = sampler.sample(4, np.random.default_rng(6))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_rotation_is_per_class_and_shared_by_its_images():
    sampler = ClassPoolSampler(synthetic_pool(), ways=4, shots=2, queries=2, rotate_classes=True)
    episodes = sampler.sample(20, np.random.default_rng(1))
    corner_positions = set()
    for t in range(20):
        for way in range(4):
            images = torch.cat(
                [episodes.support_x[t, way * 2 : (way + 1) * 2], episodes.query_x[t, way * 2 : (way + 1) * 2]]
            )
            markers = [tuple((img[0] == 1.0).nonzero()[0].tolist()) for img in images]
            assert len(set(markers)) == 1  # same rotation for all images of the class
            corner_positions.add(markers[0])
    assert corner_positions == {(0, 0), (0, 3), (3, 3), (3, 0)}  # all four rotations occur


def test_fixed_tasks_do_not_depend_on_chunking():
    sampler = ClassPoolSampler(synthetic_pool(), ways=3, shots=1, queries=2, rotate_classes=True)
    whole = fixed_tasks(sampler, 0, 6, set_seed=2)
    parts = [fixed_tasks(sampler, 0, 4, set_seed=2), fixed_tasks(sampler, 4, 6, set_seed=2)]
    assert torch.equal(whole.support_x, torch.cat([p.support_x for p in parts]))


def test_too_many_ways_and_too_few_images_are_clear_errors():
    with pytest.raises(HarnessError, match=r"^13-way tasks need 13 classes but the toy train split has only 12$"):
        ClassPoolSampler(synthetic_pool(), ways=13, shots=1, queries=1, rotate_classes=False, split_name="toy train")
    with pytest.raises(
        HarnessError, match=r"^5-shot tasks with 2 queries need 7 images per class but the toy split has 6$"
    ):
        ClassPoolSampler(synthetic_pool(), ways=2, shots=5, queries=2, rotate_classes=False, split_name="toy")


# -- real Omniglot -------------------------------------------------------------


def open_omniglot(data_root, split, scheme="maml", spec="omniglot-5w1s", queries=1):
    sampler = get_plugins().task_samplers.get("omniglot")
    return sampler.open(
        parse_task_spec(spec), split, data_root, {"split": scheme, "queries": queries, "download": False}
    )


def test_omniglot_maml_split_sizes_disjoint_and_fixed(data_root):
    splits = {name: open_omniglot(data_root, name) for name in ("train", "val", "test")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [1100, 100, 423]
    names = {s: set(splits[s].class_names) for s in splits}
    assert (
        not (names["train"] & names["test"])
        and not (names["train"] & names["val"])
        and not (names["val"] & names["test"])
    )
    assert len(names["train"] | names["val"] | names["test"]) == 1623
    train = splits["train"]
    assert train.images.shape[1:] == (20, 1, 28, 28) and train.images.dtype == torch.uint8
    # The split is a pure function of the data: fixed seed, sorted listing.
    assert open_omniglot(data_root, "test").class_names == splits["test"].class_names


def test_omniglot_vinyals_split_sizes(data_root):
    sizes = [open_omniglot(data_root, s, scheme="vinyals").num_classes for s in ("train", "val", "test")]
    assert sizes == [4112, 688, 1692]  # 1028/172/423 characters x 4 rotations


def test_omniglot_lake_split_tests_on_alphabets_never_seen_in_training(data_root):
    from harness_plugins.datasets.omniglot import find_images_root, list_characters

    splits = {s: open_omniglot(data_root, s, scheme="lake") for s in ("train", "val", "test")}
    alphabets = {s: {name.split("/")[0] for name in splits[s].class_names} for s in splits}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [806, 158, 659]
    assert [len(alphabets[s]) for s in ("train", "val", "test")] == [25, 5, 20]
    assert not (alphabets["train"] & alphabets["test"]) and not (alphabets["train"] & alphabets["val"])
    assert not (alphabets["val"] & alphabets["test"])
    # Test: exactly images_evaluation; train and validation: exactly images_background.
    sets = {}
    for name, folder in list_characters(find_images_root(data_root)):
        sets.setdefault(folder.parent.parent.name, set()).add(name)
    assert set(splits["test"].class_names) == sets["images_evaluation"]
    assert set(splits["train"].class_names) | set(splits["val"].class_names) == sets["images_background"]
    assert sorted(alphabets["val"]) == [
        "Balinese",
        "Early_Aramaic",
        "Inuktitut_(Canadian_Aboriginal_Syllabics)",
        "Mkhedruli_(Georgian)",
        "Tifinagh",
    ]  # every sixth, sorted: the documented rule


def test_omniglot_unknown_split_names_the_valid_ones(data_root):
    with pytest.raises(HarnessError, match=r"^unknown Omniglot split 'lakes'; valid splits: maml, lake, vinyals$"):
        open_omniglot(data_root, "train", scheme="lakes")


def test_omniglot_pixels_inverted_to_strokes_on_black(data_root):
    episodes = open_omniglot(data_root, "train", spec="omniglot-20w1s").sample(4, np.random.default_rng(0))
    x = episodes.support_x
    assert x.min() >= 0 and x.max() <= 1
    assert 0.03 < x.mean() < 0.2  # strokes (1) are a small fraction of the image


def test_omniglot_more_ways_than_classes(data_root):
    with pytest.raises(
        HarnessError, match=r"^500-way tasks need 500 classes but the Omniglot maml test split has only 423$"
    ):
        open_omniglot(data_root, "test", spec="omniglot-500w1s")


def test_omniglot_missing_data_message(tmp_path):
    with pytest.raises(HarnessError) as error:
        open_omniglot(tmp_path, "train")
    message = str(error.value)
    assert message.startswith(f"Omniglot not found: expected {tmp_path}/omniglot/omniglot-py/images_background")
    assert "downloading is disabled (--no-download)" in message and "\n" not in message


def test_omniglot_unreadable_image_is_named(tmp_path):
    character = tmp_path / "omniglot" / "omniglot-py" / "images_background" / "Alpha" / "character01"
    character.mkdir(parents=True)
    (tmp_path / "omniglot" / "omniglot-py" / "images_evaluation").mkdir()
    for i in range(20):
        (character / f"0001_{i:02d}.png").write_bytes(b"not a png")
    with pytest.raises(HarnessError, match=r"^cannot read Omniglot image .*character01/0001_00.png"):
        open_omniglot(tmp_path, "train", spec="omniglot-2w1s")


def ragged_pool(tmp_path, counts=(7, 30, 5, 12)):
    """A memory-mapped flat pool whose every image holds (class, index within class) in its pixels."""
    pixels = np.lib.format.open_memmap(tmp_path / "pool.npy", mode="w+", dtype=np.uint8, shape=(sum(counts), 2, 3, 3))
    row = 0
    for label, count in enumerate(counts):
        for index in range(count):
            pixels[row, 0], pixels[row, 1] = label, index
            row += 1
    pixels.flush()
    return np.load(tmp_path / "pool.npy", mmap_mode="r"), list(counts)


def test_a_ragged_pool_keeps_every_class_whole_and_reads_it_lazily(tmp_path):
    pixels, counts = ragged_pool(tmp_path)
    sampler = ClassPoolSampler(pixels, 3, 2, 3, rotate_classes=False, counts=counts)
    assert isinstance(sampler.images, np.memmap) and sampler.num_classes == 4 and sampler.in_channels == 2
    seen = {label: set() for label in range(4)}
    rng = np.random.default_rng(0)
    for _ in range(200):
        episodes = sampler.sample(4, rng)
        for x, y in ((episodes.support_x, episodes.support_y), (episodes.query_x, episodes.query_y)):
            raw = torch.round(x * 255).long()  # [tasks, n, 2, 3, 3]
            classes, indices = raw[:, :, 0, 0, 0], raw[:, :, 1, 0, 0]
            # every image of a task position comes from the class that position's label stands for
            for task in range(4):
                for way in range(3):
                    members = classes[task][y[task] == way]
                    assert members.unique().numel() == 1
            for c, i in zip(classes.flatten().tolist(), indices.flatten().tolist()):
                assert i < counts[c]
                seen[c].add(i)
        task_images = torch.cat([episodes.support_x, episodes.query_x], 1)  # no image twice within a task
        for task in task_images:
            keys = {tuple(img[:, 0, 0].tolist()) for img in torch.round(task * 255).long()}
            assert len(keys) == task.shape[0]
    assert all(seen[c] == set(range(n)) for c, n in enumerate(counts))  # the big class is reachable, all of it


def test_a_ragged_pool_refuses_a_class_too_small_for_the_task_naming_it(tmp_path):
    pixels, counts = ragged_pool(tmp_path)
    with pytest.raises(HarnessError) as error:
        ClassPoolSampler(pixels, 3, 5, 1, rotate_classes=False, counts=counts, class_names=["a", "b", "c", "d"])
    assert str(error.value) == "5-shot tasks with 1 queries need 6 images per class but the split split has 5 (class c)"


def test_a_ragged_pool_of_equal_classes_samples_what_the_dense_pool_samples(tmp_path):
    dense = torch.randint(0, 256, (6, 8, 1, 4, 4), dtype=torch.uint8)
    a = ClassPoolSampler(dense, 3, 1, 2, rotate_classes=True)
    b = ClassPoolSampler(dense.flatten(0, 1).numpy(), 3, 1, 2, rotate_classes=True, counts=[8] * 6)
    for first, second in zip(
        a.sample(5, np.random.default_rng(3)).__dict__.values(), b.sample(5, np.random.default_rng(3)).__dict__.values()
    ):
        assert torch.equal(first, second) if isinstance(first, torch.Tensor) else first == second


def test_a_decoded_split_goes_straight_to_a_memory_map_on_disk(tmp_path, monkeypatch):
    """No in-memory copy of the whole split: build writes into the cache's memory map, image by image."""
    from pathlib import Path

    from harness.data.root import decode_all, load_or_build_array

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    files = [Path(f"image{i}") for i in range(6)]
    seen = {}

    def build(allocate):
        pixels = decode_all(
            files, lambda path: np.full((2, 3), int(path.name[-1]), np.uint8), "test", allocate, (3, 2, 2, 3)
        )
        seen["memory map"] = isinstance(pixels, np.memmap)
        return pixels

    pool = load_or_build_array("synthetic", "k1", build)
    assert seen["memory map"] and isinstance(pool, np.memmap)
    assert pool.shape == (3, 2, 2, 3) and [int(pool[c, i, 0, 0]) for c in range(3) for i in range(2)] == list(range(6))
    again = load_or_build_array("synthetic", "k1", lambda allocate: pytest.fail("decoded twice"))
    np.testing.assert_array_equal(again, pool)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "synthetic-k1.npy",
        "synthetic-k1.npy.sha256",
    ]

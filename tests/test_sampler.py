"""Episode sampler invariants, on a synthetic pool and on real Omniglot."""


import numpy as np
import pytest
import torch

from harness.episodes import ClassPoolSampler
from harness.errors import HarnessError
from harness.evaluation import fixed_tasks
from harness.plugin_manager import get_plugins
from harness.taskspec import parse_task_spec


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
            images = torch.cat([episodes.support_x[t, way * 2:(way + 1) * 2], episodes.query_x[t, way * 2:(way + 1) * 2]])
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
    with pytest.raises(HarnessError, match=r"^5-shot tasks with 2 queries need 7 images per class but the toy split has 6$"):
        ClassPoolSampler(synthetic_pool(), ways=2, shots=5, queries=2, rotate_classes=False, split_name="toy")


# -- real Omniglot -------------------------------------------------------------


def open_omniglot(data_root, split, scheme="maml", spec="omniglot-5w1s", queries=1):
    sampler = get_plugins().task_samplers.get("omniglot")
    return sampler.open(parse_task_spec(spec), split, data_root, {"split": scheme, "queries": queries, "download": False})


def test_omniglot_maml_split_sizes_disjoint_and_fixed(data_root):
    splits = {name: open_omniglot(data_root, name) for name in ("train", "val", "test")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [1100, 100, 423]
    names = {s: set(splits[s].class_names) for s in splits}
    assert not (names["train"] & names["test"]) and not (names["train"] & names["val"]) and not (names["val"] & names["test"])
    assert len(names["train"] | names["val"] | names["test"]) == 1623
    train = splits["train"]
    assert train.images.shape[1:] == (20, 1, 28, 28) and train.images.dtype == torch.uint8
    # The split is a pure function of the data: fixed seed, sorted listing.
    assert open_omniglot(data_root, "test").class_names == splits["test"].class_names


def test_omniglot_vinyals_split_sizes(data_root):
    sizes = [open_omniglot(data_root, s, scheme="vinyals").num_classes for s in ("train", "val", "test")]
    assert sizes == [4112, 688, 1692]  # 1028/172/423 characters x 4 rotations


def test_omniglot_pixels_inverted_to_strokes_on_black(data_root):
    episodes = open_omniglot(data_root, "train", spec="omniglot-20w1s").sample(4, np.random.default_rng(0))
    x = episodes.support_x
    assert x.min() >= 0 and x.max() <= 1
    assert 0.03 < x.mean() < 0.2  # strokes (1) are a small fraction of the image


def test_omniglot_more_ways_than_classes(data_root):
    with pytest.raises(HarnessError, match=r"^500-way tasks need 500 classes but the Omniglot maml test split has only 423$"):
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

"""NIL, training regimes, layer freezing and the MAML-head evaluator (paper Section 5, Tables 1, 4, 5, 7)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli, written_file

from harness.data.episodes import ClassPoolSampler, Episodes
from harness.engine.meta_learning import adapt_and_predict
from harness.errors import HarnessError
from harness.evaluation.nil import nil_probabilities
from harness.plugin.manager import get_plugins
from harness_plugins.evaluators.freeze import parse_layers
from harness_plugins.evaluators.maml_head import train_maml_head


def test_nil_on_hand_built_embeddings():
    support = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [1 task, 2 ways x 1 shot, 2]
    query = torch.tensor([[[3.0, 0.3], [0.0, -2.0]]])  # q0 leans to class 0; q1 points away from class 1
    probabilities = nil_probabilities(support, torch.tensor([[0, 1]]), query, ways=2)
    cos_q0 = torch.tensor([1 / math.sqrt(1.01), 0.1 / math.sqrt(1.01)])
    expected_q0 = torch.softmax(cos_q0, dim=0)
    expected_q1 = torch.softmax(torch.tensor([0.0, -1.0]), dim=0)
    torch.testing.assert_close(probabilities[0, 0], expected_q0)
    torch.testing.assert_close(probabilities[0, 1], expected_q1)
    assert probabilities.argmax(-1).tolist() == [[0, 0]]


def test_cosine_weighting_worked_example_with_two_shots():
    # Two shots per class: class 0 at angles 0 and 90 degrees, class 1 at 180 degrees (twice).
    support = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-2.0, 0.0]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    query = torch.tensor([[[1.0, 1.0]]])  # 45 degrees: cos = .7071, .7071, -.7071, -.7071
    c = 1 / math.sqrt(2)
    weights = torch.softmax(torch.tensor([c, c, -c, -c]), dim=0)
    expected = torch.tensor([weights[0] + weights[1], weights[2] + weights[3]])
    torch.testing.assert_close(nil_probabilities(support, labels, query, 2)[0, 0], expected)
    assert expected[0].item() == pytest.approx(1 / (1 + math.exp(-2 * c)), abs=1e-6)  # = sigmoid(2c)


def conv_model(ways=5, head_std=0.1, seed=0):
    torch.manual_seed(seed)
    model = get_plugins().backbones.get("conv4").build(1, 28, ways)
    torch.nn.init.normal_(model.head.weight, std=head_std)
    return model


def random_episodes(tasks=2, ways=5, shots=1, queries=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Episodes(
        torch.rand(tasks, ways * shots, 1, 28, 28, generator=g),
        torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1),
        torch.rand(tasks, ways * queries, 1, 28, 28, generator=g),
        torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1),
        ways,
    )


def test_freezing_keeps_frozen_layers_bit_identical_and_moves_the_others():
    model = conv_model()
    episodes = random_episodes()
    frozen = {"body.0", "body.1"}
    adapts = lambda name: name.split(".")[0] == "head" or ".".join(name.split(".")[:2]) not in frozen
    _, adapted = adapt_and_predict(model, episodes, 3, 0.5, adapts, first_order=True, return_adapted=True)
    for name, initial in model.named_parameters():
        after = adapted.get(name, initial.detach().unsqueeze(0).expand(2, *initial.shape))
        layer = ".".join(name.split(".")[:2])
        if layer in frozen:
            assert name not in adapted and torch.equal(after[0], initial.detach())
        else:
            assert not torch.equal(after[0], initial.detach()), name


def test_parse_layers_and_errors():
    assert parse_layers("none", 4, "conv4") is None
    assert parse_layers("1-3", 4, "conv4") == (1, 3)
    assert parse_layers("2", 4, "conv4") == (2, 2)
    with pytest.raises(HarnessError, match=r"^cannot freeze layers 1-5: backbone 'conv4' has 4 body layers \(1-4\)$"):
        parse_layers("1-5", 4, "conv4")
    with pytest.raises(HarnessError, match=r"^malformed layers 'first': expected none, i or i-j"):
        parse_layers("first", 4, "conv4")


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_layers(before, model):
    return sorted(
        {
            ".".join(n.split(".")[:2]) if n.startswith("body") else "head"
            for n, p in model.named_parameters()
            if not torch.equal(before[n], p.detach())
        }
    )


@pytest.mark.parametrize(
    "algo, expected",
    [
        ("multitask", ["body.0", "body.1", "body.2", "body.3", "head"]),
        ("nil-train", ["body.0", "body.1", "body.2", "body.3"]),  # no head in NIL training
        ("maml", ["body.0", "body.1", "body.2", "body.3", "head"]),
        ("anil", ["body.0", "body.1", "body.2", "body.3", "head"]),
    ],
)
def test_each_episodic_regime_trains_what_it_should(algo, expected):
    model = conv_model()
    before = snapshot(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    optimizer.zero_grad()
    get_plugins().algorithms.get(algo).train_step(
        model, random_episodes(), SimpleNamespace(inner_steps=1, inner_lr=0.1)
    )
    optimizer.step()
    assert changed_layers(before, model) == expected


def test_multiclass_trains_body_and_class_head():
    algo = get_plugins().algorithms.get("multiclass")
    model = get_plugins().backbones.get("conv4").build(1, 28, 10)
    before = snapshot(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = (torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,)))
    for _ in range(2):  # the zero-initialised head passes no gradient to the body on the first step
        optimizer.zero_grad()
        algo.train_step(model, batch, None)
        optimizer.step()
    assert changed_layers(before, model) == ["body.0", "body.1", "body.2", "body.3", "head"]
    assert algo.head_outputs(None, SimpleNamespace(num_classes=10)) == 10


def test_maml_head_trains_only_a_new_head():
    model = conv_model(ways=7)
    before = snapshot(model)
    pool = torch.randint(0, 256, (10, 6, 1, 28, 28), dtype=torch.uint8)
    sampler = ClassPoolSampler(pool, ways=5, shots=1, queries=2, rotate_classes=False)
    config = SimpleNamespace(outer_lr=1e-2, meta_batch_size=2, inner_steps=2, inner_lr=0.1)
    trained = train_maml_head(model, sampler, config, iterations=3, seed=0, device="cpu")
    assert trained.head.out_features == 5
    for name, value in trained.body.named_parameters():
        assert torch.equal(value, before[f"body.{name}"])
    assert trained.head.weight.abs().sum() > 0  # moved away from its zero initialisation
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())  # the run's model untouched


# -- real data -------------------------------------------------------------------


def train(data_root, out, algo, *extra):
    result = run_cli(
        "run",
        "--algo",
        algo,
        "--data",
        "omniglot-20w1s",
        "--val-tasks",
        "20",
        "--test-tasks",
        "100",
        "--no-progress",
        "--no-download",
        "--data-root",
        data_root,
        "--out",
        out,
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return out


def evaluate(run_dir, data_root, evaluator, *extra):
    result = run_cli(
        "eval",
        run_dir,
        "--evaluator",
        evaluator,
        "--test-tasks",
        "100",
        "--data-root",
        data_root,
        "--no-download",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(written_file(result).read_text())


def test_trained_body_beats_random_features_with_nil(data_root, tmp_path):
    """Paper Table 5: meta-learned features beat random ones under the NIL head."""
    random_run = train(data_root, tmp_path / "random", "random-features")
    anil_run = train(
        data_root,
        tmp_path / "anil",
        "anil",
        "--iterations",
        "150",
        "--val-every",
        "150",
        "--seed",
        "1",
        "--checkpoint-every",
        "75",
    )
    assert json.loads((random_run / "summary.json").read_text())["iterations"] == 0
    random_nil = evaluate(random_run, data_root, "nil")["rows"][0]["mean"]
    anil_nil = evaluate(anil_run, data_root, "nil")["rows"][0]["mean"]
    assert anil_nil > random_nil + 0.05, (anil_nil, random_nil)

    freeze = evaluate(anil_run, data_root, "freeze", "-o", "layers=1-4", "-o", "all_checkpoints=1")
    assert [(row["checkpoint"], row["step"], row["frozen"]) for row in freeze["rows"]] == [
        ("step-0000075.pt", 75, "1-4"),
        ("step-0000150.pt", 150, "1-4"),
        ("best.pt", 150, "1-4"),
    ]
    assert freeze["figure"].endswith("analysis-freeze.png") and (anil_run / "analysis-freeze.png").stat().st_size > 0
    # ANIL never adapts the body, so freezing it must reproduce the standard evaluation on the same tasks.
    standard = evaluate(anil_run, data_root, "fewshot")["rows"][0]["mean"]
    assert freeze["rows"][2]["mean"] == pytest.approx(standard, abs=1e-9)
    # adapt_as=maml: MAML's inner loop on the ANIL network moves the body (a different accuracy); with the
    # whole body frozen it adapts the head alone, which is ANIL's own test-time adaptation.
    as_maml = evaluate(anil_run, data_root, "freeze", "-o", "adapt_as=maml")
    assert as_maml["inner_loop"] == "maml" and [row["frozen"] for row in as_maml["rows"]] == [
        "none",
        "1",
        "1-2",
        "1-3",
        "1-4",
    ]
    assert as_maml["rows"][4]["mean"] == pytest.approx(standard, abs=1e-9)
    assert as_maml["rows"][0]["mean"] != pytest.approx(standard, abs=1e-9)
    unknown = run_cli("eval", anil_run, "--evaluator", "freeze", "-o", "adapt_as=nope", "--data-root", data_root)
    assert unknown.returncode == 2 and unknown.stderr.startswith("harness: error: unknown algorithm 'nope'")
    assert unknown.stderr.count("\n") == 1
    bad = run_cli("eval", anil_run, "--evaluator", "freeze", "-o", "layers=1-6", "--data-root", data_root)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "harness: error: cannot freeze layers 1-6: backbone 'conv4' has 4 body layers (1-4)"

"""CCA / CKA: invariances, independent formulas, degenerate inputs, and the ANIL feature-reuse check."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.data.episodes import Episodes
from harness.evaluation.activations import pre_post
from harness.evaluation.similarity import as_neurons_by_datapoints, canonical_correlations, cca_similarity, linear_cka
from harness.plugin.manager import get_plugins


def rng_matrix(seed, neurons=8, datapoints=200):
    return np.random.default_rng(seed).standard_normal((neurons, datapoints))


def cca_by_whitened_covariances(x, y):
    """Independent formula: singular values of Sxx^-1/2 Sxy Syy^-1/2 (full-rank inputs)."""
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    sxx, syy, sxy = x @ x.T, y @ y.T, x @ y.T

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        return v @ np.diag(w**-0.5) @ v.T

    return np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)


def cka_by_hsic_formula(x, y):
    """Independent formula: HSIC with the centring matrix H, Kornblith et al. Eq. 3."""
    n = x.shape[1]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x.T @ x, y.T @ y
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize(
    "measure",
    [
        cca_similarity,
        lambda x, y: cca_similarity(x, y, keep_variance=0.99),
        linear_cka,
        lambda x, y: linear_cka(x, y, unbiased=True),
    ],
)
def test_identical_inputs_give_one(measure):
    x = rng_matrix(0)
    assert measure(x, x) == pytest.approx(1.0, abs=1e-9)


def test_cca_agrees_with_whitened_covariance_formula():
    x, y = rng_matrix(1, 6), rng_matrix(2, 4) + 0.5 * rng_matrix(1, 6)[:4]
    ours = canonical_correlations(x, y)
    reference = cca_by_whitened_covariances(x, y)
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert cca_similarity(x, y) == pytest.approx(reference.mean(), abs=1e-6)


def test_cka_agrees_with_hsic_formula():
    x, y = rng_matrix(3, 6, 50), rng_matrix(4, 9, 50)
    assert linear_cka(x, y) == pytest.approx(cka_by_hsic_formula(x, y), abs=1e-10)


def test_cca_invariant_to_invertible_linear_maps():
    x, y = rng_matrix(5), rng_matrix(6) + rng_matrix(5)
    a = np.random.default_rng(7).standard_normal((8, 8)) + 3 * np.eye(8)
    assert cca_similarity(a @ x, y) == pytest.approx(cca_similarity(x, y), abs=1e-9)


def test_cka_invariant_to_orthogonal_maps_and_isotropic_scaling_but_not_to_general_linear_maps():
    x, y = rng_matrix(8), rng_matrix(9) + rng_matrix(8)
    q, _ = np.linalg.qr(np.random.default_rng(10).standard_normal((8, 8)))
    base = linear_cka(x, y)
    assert linear_cka(q @ x, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, abs=1e-12)
    stretch = np.diag([10.0, 1, 1, 1, 1, 1, 1, 0.1])
    assert abs(linear_cka(stretch @ x, y) - base) > 1e-3


def test_independent_random_representations_are_near_zero():
    x, y = rng_matrix(11, 10, 20000), rng_matrix(12, 10, 20000)
    assert cca_similarity(x, y) < 0.03
    assert linear_cka(x, y) < 0.01
    assert abs(linear_cka(x, y, unbiased=True)) < 0.01


def test_more_neurons_than_datapoints_and_constant_neurons_are_finite():
    x, y = rng_matrix(13, 50, 20), rng_matrix(14, 30, 20)
    for value in (cca_similarity(x, y), linear_cka(x, y), linear_cka(x, y, unbiased=True)):
        assert np.isfinite(value)
    small = rng_matrix(15, 4, 100)
    with_constant = np.vstack([small, np.full((1, 100), 3.0)])
    other = rng_matrix(16, 4, 100) + small
    assert cca_similarity(with_constant, other) == pytest.approx(cca_similarity(small, other), abs=1e-9)
    assert linear_cka(with_constant, other) == pytest.approx(linear_cka(small, other), abs=1e-12)


def test_constant_representation_is_a_clear_error():
    constant = np.full((5, 40), 2.0)
    with pytest.raises(ValueError, match="^representation x is constant over all datapoints; similarity is undefined$"):
        cca_similarity(constant, rng_matrix(0, 5, 40))
    with pytest.raises(ValueError, match="^representation y is constant"):
        linear_cka(rng_matrix(0, 5, 40), constant)
    with pytest.raises(ValueError, match="^unbiased CKA needs at least 4 datapoints, got 3$"):
        linear_cka(rng_matrix(0, 2, 3), rng_matrix(1, 2, 3), unbiased=True)
    with pytest.raises(ValueError, match="^representations must share datapoints: 40 vs 41$"):
        cca_similarity(rng_matrix(0, 5, 40), rng_matrix(0, 5, 41))


def test_conv_activations_use_channels_as_neurons():
    activations = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)  # [N, C, H, W]
    matrix = as_neurons_by_datapoints(activations)
    assert matrix.shape == (3, 8)
    assert matrix[1].tolist() == [4, 5, 6, 7, 16, 17, 18, 19]  # channel 1 of image 0, then image 1


def conv_setup():
    torch.manual_seed(0)
    model = get_plugins().backbones.get("conv4").build(1, 28, 5)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a non-zero head so the body gets inner-loop gradients
    episodes = Episodes(
        torch.rand(3, 5, 1, 28, 28),
        torch.arange(5).repeat(3, 1),
        torch.rand(3, 50, 1, 28, 28),
        torch.arange(5).repeat_interleave(10).repeat(3, 1),
        5,
    )
    return model, episodes


def test_anil_body_similarity_is_exactly_one_and_head_changes():
    model, episodes = conv_setup()
    anil, maml = get_plugins().algorithms.get("anil"), get_plugins().algorithms.get("maml")
    for before, after, _ in pre_post(model, anil, episodes, steps=5, hp=SimpleNamespace(inner_lr=0.5)):
        for layer in ("body.0", "body.1", "body.2", "body.3"):
            assert torch.equal(before[layer], after[layer])
            assert cca_similarity(
                as_neurons_by_datapoints(before[layer]), as_neurons_by_datapoints(after[layer])
            ) == pytest.approx(1.0, abs=1e-9)
        assert not torch.allclose(before["head"], after["head"])
    changed = [
        not torch.equal(b["body.3"], a["body.3"])
        for b, a, _ in pre_post(model, maml, episodes, steps=5, hp=SimpleNamespace(inner_lr=0.5))
    ]
    assert all(changed)  # MAML's inner loop does move the body


def test_unbiased_cka_matches_gram_matrix_formula():
    x, y = (
        rng_matrix(20, 5, 30),
        rng_matrix(21, 7, 30) + 0.3 * np.vstack([rng_matrix(20, 5, 30), rng_matrix(22, 2, 30)]),
    )

    def hsic_u(k, l):
        n = k.shape[0]
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (
            np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one
        ) / (n * (n - 3))

    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    k, l = xc.T @ xc, yc.T @ yc
    reference = hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))
    assert linear_cka(x, y, unbiased=True) == pytest.approx(reference, abs=1e-10)


def test_analyze_cli_writes_table_json_and_figure(data_root, tmp_path):
    import json

    from conftest import run_cli, written_file

    runs = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        result = run_cli(
            "run",
            "--algo",
            "anil",
            "--data",
            "omniglot-5w1s",
            "--iterations",
            "3",
            "--val-every",
            "3",
            "--val-tasks",
            "4",
            "--test-tasks",
            "4",
            "--meta-batch-size",
            "2",
            "--seed",
            seed,
            "--no-progress",
            "--no-download",
            "--data-root",
            data_root,
            "--out",
            out,
        )
        assert result.returncode == 0, result.stderr
        runs.append(out)
    common = ["--tasks", "4", "--data-root", data_root, "--no-download"]
    result = run_cli("analyze", "similarity", runs[0], "--measure", "cka", *common)
    assert result.returncode == 0, result.stderr
    saved = json.loads((runs[0] / "analysis-similarity-cka-num_tasks=4.json").read_text())
    assert [row["layer"] for row in saved["rows"]] == ["body.0", "body.1", "body.2", "body.3", "head", "body mean"]
    body = [row for row in saved["rows"] if row["layer"] != "head"]
    assert all(row["mean"] == pytest.approx(1.0, abs=1e-9) for row in body)  # ANIL: body untouched
    assert (runs[0] / "analysis-similarity-cka.png").read_bytes()[:4] == b"\x89PNG"
    assert "body.3 cka pre vs post" in result.stdout

    seeds = run_cli("analyze", "seeds", runs[0], "--against", runs[1], *common)
    assert seeds.returncode == 0, seeds.stderr
    fits = json.loads(written_file(seeds).read_text())["fits"]
    assert set(fits) == {"pre,post", "post,pre", "post,post"}
    assert fits["post,post"]["r2"] == pytest.approx(1.0)  # ANIL bodies do not change: post = pre

    missing = run_cli("analyze", "seeds", runs[0], *common)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "harness: error: this analysis compares two runs: pass --against OTHER_RUN_DIR"

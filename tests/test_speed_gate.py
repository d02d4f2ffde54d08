"""The speed gate's logic on fixed numbers (the timings themselves live in harness/speed/suite)."""

from conftest import run_cli

from harness.speed.benchmarks import COMPOSITE_MAML, record_ratios, reference_ratios, speed_gate_failures, speedups


def test_reference_is_the_lowest_recorded_run(tmp_path):
    path = tmp_path / "cpu-ratios.json"
    assert reference_ratios(path) == {}
    record_ratios(path, {"fomaml/maml mini-5w1s train": 2.53, "anil/maml mini-5w1s train": 7.1}, source="dev")
    record_ratios(path, {"fomaml/maml mini-5w1s train": 1.88, "anil/maml mini-5w1s train": 7.4}, source="ci")
    assert reference_ratios(path) == {"fomaml/maml mini-5w1s train": 1.88, "anil/maml mini-5w1s train": 7.1}


def test_speedups_are_over_maml_and_the_fused_kernels_ratio_is_composite_over_fused():
    medians = {
        ("maml", "omniglot-20w1s", "train", "cpu"): 1.0,
        (COMPOSITE_MAML, "omniglot-20w1s", "train", "cpu"): 1.6,
        ("anil", "omniglot-20w1s", "train", "cpu"): 0.125,
        ("fomaml", "omniglot-20w1s", "inference", "cpu"): 0.5,  # MAML's own inference step: no ratio
        ("maml", "omniglot-20w1s", "inference", "cpu"): 0.5,
    }
    assert speedups(medians) == {
        "fused/composite maml omniglot-20w1s train": 1.6,
        "anil/maml omniglot-20w1s train": 8.0,
    }


def test_gate_failures_name_the_ratio_and_the_reason():
    reference = {
        "fomaml/maml mini-5w1s train": 2.0,
        "anil/maml omniglot-20w1s train": 10.0,
        "fused/composite maml omniglot-20w1s train": 1.6,
    }
    measured = {
        "fomaml/maml mini-5w1s train": 1.6,  # 20 % below: noise, passes
        "anil/maml omniglot-20w1s train": 7.4,  # 26 % below the record
        "anil/maml mini-5w5s inference": 4.0,  # below the paper's 4.1x
        "fomaml/maml omniglot-20w1s train": 0.9,  # first order slower than second order
        "fused/composite maml omniglot-20w1s train": 1.1,  # the fused kernels' lead gone
    }
    assert speed_gate_failures(measured, reference) == [
        "anil/maml mini-5w5s inference: 4.00x is below the paper's 4.1x",
        "anil/maml omniglot-20w1s train: 7.40x is more than 25% below the lowest recorded 10.00x",
        "fomaml/maml omniglot-20w1s train: first-order MAML is not faster than MAML (0.90x)",
        "fused/composite maml omniglot-20w1s train: 1.10x is more than 25% below the lowest recorded 1.60x",
    ]
    assert speed_gate_failures({"fomaml/maml mini-5w1s train": 1.6}, reference) == []


def test_the_floor_covers_the_papers_training_iterations():
    """ANIL's body sees 4 tasks x 80 images at the paper's MiniImageNet 5w1s settings, 32x the Table 6 shape's 10."""
    result = run_cli("bench", "--floor")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("|") and "---" not in line]
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]
    headers = split(lines[0])
    rows = {
        (row["config"], row["phase"], row["algorithm"]): row
        for row in (dict(zip(headers, split(l))) for l in lines[1:])
    }
    paper, table6 = rows[("paper mini-5w1s", "train", "anil")], rows[("mini-5w1s", "train", "anil")]
    assert ("paper mini-5w5s", "train", "maml") in rows and ("omniglot-20w1s", "inference", "maml") in rows
    assert 30 < float(paper["GFLOP"]) / float(table6["GFLOP"]) < 34
    # The first block's BatchNorm alone reads and writes the [320, 32, 84, 84] float32 map (289 MB) once each.
    assert float(paper["GB batch norm"]) > 2 * 320 * 32 * 84 * 84 * 4 / 1e9
    for row in (paper, table6):
        compute, memory, floor = (float(row[k]) for k in ("compute floor s", "memory floor s", "floor s"))
        assert compute > 0 and memory > 0 and abs(compute + memory - floor) < 2e-4


def test_memory_traffic_counts_kernels_not_views_or_arithmetic():
    import torch

    from harness.speed.floors import MemoryTraffic

    x = torch.randn(10, 4, 5, 5)
    weight = torch.randn(3, 4, 3, 3)
    with MemoryTraffic() as traffic:
        y = torch.relu(x)  # reads 4,000 bytes, writes 4,000
        y.view(10, -1).transpose(0, 1)  # views: nothing moves
        torch.nn.functional.conv2d(y, weight)  # arithmetic: the FLOP counter's
        torch.nn.functional.batch_norm(x, None, None, training=True)
    assert traffic.bytes["relu"] == 8000
    assert traffic.bytes["batch norm"] >= 8000  # the map in and out, plus its statistics
    assert traffic.bytes["other"] == 0  # allocations (empty) move nothing


def test_the_allocator_switch_is_applied_and_can_be_declined(monkeypatch):
    import sys

    from harness.run.allocator import keep_freed_memory

    monkeypatch.setenv("HARNESS_MALLOC", "default")
    assert keep_freed_memory() is False
    monkeypatch.delenv("HARNESS_MALLOC")
    assert keep_freed_memory() is sys.platform.startswith("linux")  # this project's CI runs glibc Linux


def test_float32_on_a_gpu_is_float32():
    """TF32 (PyTorch's default for cuDNN convolutions) would make a GPU run a different computation."""
    import torch

    from harness.run.devices import full_float32_on_cuda

    # torch.backends' flag objects are not plain attributes (monkeypatch cannot undo them): restore by hand.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        full_float32_on_cuda()
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

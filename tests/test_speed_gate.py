"""The speed gate's logic on fixed numbers (the timings themselves live in tests/benchmarks)."""

from conftest import run_cli

from harness.benchmarks import record_ratios, reference_ratios, speed_gate_failures


def test_reference_is_the_lowest_recorded_run(tmp_path):
    path = tmp_path / "cpu-ratios.json"
    assert reference_ratios(path) == {}
    record_ratios(path, {"fomaml/maml mini-5w1s train": 2.53, "anil/maml mini-5w1s train": 7.1}, source="dev")
    record_ratios(path, {"fomaml/maml mini-5w1s train": 1.88, "anil/maml mini-5w1s train": 7.4}, source="ci")
    assert reference_ratios(path) == {"fomaml/maml mini-5w1s train": 1.88, "anil/maml mini-5w1s train": 7.1}


def test_gate_failures_name_the_ratio_and_the_reason():
    reference = {"fomaml/maml mini-5w1s train": 2.0, "anil/maml omniglot-20w1s train": 10.0}
    measured = {
        "fomaml/maml mini-5w1s train": 1.6,  # 20 % below: noise, passes
        "anil/maml omniglot-20w1s train": 7.4,  # 26 % below the record
        "anil/maml mini-5w5s inference": 4.0,  # below the paper's 4.1x
        "fomaml/maml omniglot-20w1s train": 0.9,  # first order slower than second order
    }
    assert speed_gate_failures(measured, reference) == [
        "anil/maml mini-5w5s inference: 4.00x is below the paper's 4.1x",
        "anil/maml omniglot-20w1s train: 7.40x is more than 25% below the lowest recorded 10.00x",
        "fomaml/maml omniglot-20w1s train: first-order MAML is not faster than MAML (0.90x)",
    ]
    assert speed_gate_failures({"fomaml/maml mini-5w1s train": 1.6}, reference) == []


def test_the_floor_covers_the_papers_training_iterations():
    """ANIL's body sees 4 tasks x 80 images at the paper's MiniImageNet 5w1s settings, 32x the Table 6 shape's 10."""
    result = run_cli("bench", "--floor")
    assert result.returncode == 0, result.stderr
    gflop = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1] == "train":
            gflop[(cells[0], cells[2])] = float(cells[3])
    assert {("paper mini-5w1s", "anil"), ("paper mini-5w5s", "maml"), ("mini-5w1s", "anil")} <= set(gflop)
    assert 30 < gflop[("paper mini-5w1s", "anil")] / gflop[("mini-5w1s", "anil")] < 34

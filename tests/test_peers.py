"""``harness bench --peers`` times the same step in every peer: each leaves the harness's gradients.

Peers that are not installed (``pip install -e '.[peers]'``) are skipped; CI installs the extra.
"""

import importlib.util

import pytest
import torch
from conftest import run_cli

from harness.plugin.manager import get_plugins
from harness.speed.benchmarks import BenchConfig, make_step
from harness.speed.peers import PEERS, make_peer_step, supports

TINY = BenchConfig("tiny", "conv4", 1, 28, 3, 1, 2, 2, 2, 0.1)  # 3-way 1-shot, 2 tasks, 2 inner steps


def gradients(step) -> dict[str, torch.Tensor]:
    step()
    return {name: p.grad.clone() for name, p in step.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
@pytest.mark.parametrize("peer", PEERS)
def test_every_peer_step_is_the_harness_step(peer, algorithm):
    if peer != "torch.func" and importlib.util.find_spec(peer) is None:
        pytest.skip(f"{peer} is not installed")
    if not supports(peer, algorithm, "train"):
        pytest.skip(f"{peer} has no {algorithm} step")
    if peer == "torch.func" and algorithm == "maml":
        pytest.skip(
            "vmap's BatchNorm rule: this peer's second-order meta-gradient is off by ~1e-3 (harness.speed.peers)"
        )
    plugins = get_plugins()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        want = gradients(make_step(plugins, algorithm, TINY, "train", "cpu"))
        got = gradients(make_peer_step(plugins, peer, algorithm, TINY, "train"))
    finally:
        torch.set_default_dtype(previous)
    assert sorted(got) == sorted(want)
    scale = max(g.abs().max() for g in want.values())
    for name in want:  # the convolution biases before BatchNorm have a true gradient of 0: absolute tolerance
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12 * scale, msg=name)


def test_bench_peers_refuses_an_unknown_peer():
    result = run_cli("bench", "--peers", "--peer", "nosuch")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "harness: error: unknown peer 'nosuch'; peers: learn2learn, higher, torchopt, torch.func"
    )

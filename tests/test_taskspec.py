import pytest

from harness.data.taskspec import TaskSpec, parse_task_spec
from harness.errors import HarnessError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("omniglot-20w1s", TaskSpec("omniglot", 20, 1, None)),
        ("omniglot-5w5s", TaskSpec("omniglot", 5, 5, None)),
        ("miniimagenet-5w1s15q", TaskSpec("miniimagenet", 5, 1, 15)),
        ("my-data_set-3w2s", TaskSpec("my-data_set", 3, 2, None)),
    ],
)
def test_parses(text, expected):
    assert parse_task_spec(text) == expected
    assert str(parse_task_spec(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "omniglot",
        "omniglot-20w",
        "omniglot-20x1s",
        "20w1s",
        "omniglot-w1s",
        "Omniglot-5w1s",
        "omniglot-5w1s15",
        "omniglot-5w1s-15q",
    ],
)
def test_malformed_spec_message(text):
    with pytest.raises(HarnessError) as error:
        parse_task_spec(text)
    assert str(error.value) == (
        f"malformed task spec {text!r}: expected <dataset>-<N>w<K>s[<Q>q], e.g. omniglot-20w1s or omniglot-5w5s15q"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("omniglot-1w1s", "task spec 'omniglot-1w1s': a task needs at least 2 ways, got 1"),
        ("omniglot-5w0s", "task spec 'omniglot-5w0s': a task needs at least 1 shot, got 0"),
        ("omniglot-5w1s0q", "task spec 'omniglot-5w1s0q': a task needs at least 1 query per class, got 0"),
    ],
)
def test_degenerate_specs(text, message):
    with pytest.raises(HarnessError, match=f"^{message}$"):
        parse_task_spec(text)

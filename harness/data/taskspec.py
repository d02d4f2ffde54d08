"""The task-spec grammar: ``<dataset>-<N>w<K>s[<Q>q]``.

``omniglot-20w1s`` is 20-way 1-shot Omniglot with the dataset's default query
size; ``miniimagenet-5w5s15q`` asks for 15 query images per class explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import HarnessError

_GRAMMAR = re.compile(
    r"^(?P<dataset>[a-z][a-z0-9_]*(?:-[a-z][a-z0-9_]*)*)-(?P<ways>\d+)w(?P<shots>\d+)s(?:(?P<queries>\d+)q)?$"
)
GRAMMAR_HELP = "<dataset>-<N>w<K>s[<Q>q], e.g. omniglot-20w1s or omniglot-5w5s15q"


@dataclass(frozen=True)
class TaskSpec:
    dataset: str
    ways: int  # N classes per task
    shots: int  # K support images per class
    queries: int | None  # Q query images per class; None = the dataset's default

    def __str__(self) -> str:
        text = f"{self.dataset}-{self.ways}w{self.shots}s"
        return text if self.queries is None else f"{text}{self.queries}q"


def parse_task_spec(text: str) -> TaskSpec:
    match = _GRAMMAR.match(text.strip())
    if match is None:
        raise HarnessError(f"malformed task spec {text!r}: expected {GRAMMAR_HELP}")
    ways, shots = int(match["ways"]), int(match["shots"])
    queries = int(match["queries"]) if match["queries"] is not None else None
    if ways < 2:
        raise HarnessError(f"task spec {text!r}: a task needs at least 2 ways, got {ways}")
    if shots < 1:
        raise HarnessError(f"task spec {text!r}: a task needs at least 1 shot, got {shots}")
    if queries is not None and queries < 1:
        raise HarnessError(f"task spec {text!r}: a task needs at least 1 query per class, got {queries}")
    return TaskSpec(match["dataset"], ways, shots, queries)

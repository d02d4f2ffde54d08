"""Typed evaluator options: ``harness eval -o KEY=VALUE`` checked before any work is done.

An evaluator declares what it accepts as a tuple of :class:`Option` in its
``options`` attribute; ``harness eval`` and ``harness analyze`` (and
``harness reproduce`` through them) convert every given value to the declared
type, fill in defaults and refuse unknown keys and out-of-range values with one
line, so a misspelt ``-o nmu_tasks=5`` can never be silently ignored::

    class MyEvaluator:
        name = "my-evaluator"
        options = (NUM_TASKS, Option("temperature", "softmax temperature", kind="float", default=1.0, minimum=0.0),)

        def evaluate(self, run, options):  # options["temperature"] is a float here
            ...

An evaluator without ``options`` receives the given options as they are
(strings from ``-o``), unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

KINDS = ("int", "float", "str", "bool", "run", "algorithm")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Option:
    """One evaluator option.

    ``kind``: ``int``, ``float``, ``str``, ``bool`` (1/0, true/false, yes/no, on/off), ``run`` (a run
    directory, opened by the command and passed as a ``LoadedRun``) or ``algorithm`` (a registered
    algorithm name). ``default``: a value, or ``callable(run) -> value`` for defaults taken from the run
    (e.g. its number of test tasks); None means "not given". ``minimum`` bounds numbers from below;
    ``choices`` lists the accepted values.
    """

    name: str
    help: str
    kind: str = "str"
    default: Any = None
    minimum: float | None = None
    choices: tuple | None = None

    def convert(self, value: Any, where: str) -> Any:
        """``value`` as this option's type; ``where`` names it in errors (``option X of evaluator 'Y'``)."""
        if self.kind in ("int", "float"):
            number = _number(value, int if self.kind == "int" else float)
            if number is None:
                article = "an integer" if self.kind == "int" else "a number"
                raise HarnessError(f"{where} must be {article}, got {value!r}")
            if self.minimum is not None and not number >= self.minimum:
                raise HarnessError(f"{where} must be at least {_plain(self.minimum)}, got {_plain(number)}")
            value = number
        elif self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE + _FALSE:
                raise HarnessError(f"{where} must be 1 or 0 (true/false), got {value!r}")
            return text in _TRUE
        elif self.kind in ("str", "algorithm"):
            value = str(value)
        if self.choices is not None and value not in self.choices:
            raise HarnessError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if self.kind == "algorithm":
            from harness.plugin.manager import get_plugins

            get_plugins().algorithms.get(value)  # an unknown name lists the valid ones
        return value


def _number(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and kind is float:
        return float(value)
    if isinstance(value, int):
        return value
    try:
        return kind(str(value).strip())
    except ValueError:
        return None


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def resolve_options(
    evaluator, given: dict[str, Any], run, open_run: Callable[[str], Any], flags: dict[str, str] | None = None
) -> dict[str, Any]:
    """``given`` (strings or values, None = not given) checked against ``evaluator.options``, defaults filled in.

    ``open_run(path)`` opens the run directory of a ``run`` option; ``flags`` names the command-line flag
    an option came from (``{"num_tasks": "--test-tasks"}``), for the error message.
    """
    flags = flags or {}
    declared = evaluator.options
    given = {key: value for key, value in given.items() if value is not None}
    if declared is None:  # an evaluator that predates typed options: as given
        return given
    by_name = {option.name: option for option in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        valid = ", ".join(by_name) or "none"
        named = f"{flags[unknown[0]]} (option {unknown[0]!r})" if unknown[0] in flags else f"option {unknown[0]!r}"
        raise HarnessError(
            f"evaluator {evaluator.name!r} has no {named}; its options: {valid} (harness list evaluators --options)"
        )
    resolved = {}
    for name, option in by_name.items():
        if name in given:
            value = given[name]
            if option.kind == "run":
                value = value if not isinstance(value, str) else open_run(value)
            else:
                where = flags.get(name) or f"option {name} of evaluator {evaluator.name!r}"
                value = option.convert(value, where)
        else:
            value = option.default(run) if callable(option.default) else option.default
        resolved[name] = value
    return resolved


# Options several evaluators share.
NUM_TASKS = Option(
    "num_tasks",
    "test tasks (default: the run's, 600)",
    kind="int",
    minimum=1,
    default=lambda run: run.config.test_tasks,
)
TEST_INNER_STEPS = Option(
    "test_inner_steps",
    "inner-loop steps at test (default: the run's)",
    kind="int",
    minimum=0,
    default=lambda run: run.config.test_inner_steps,
)
ADAPT_AS = Option(
    "adapt_as", "adapt with this algorithm's inner loop instead of the run's (maml: every layer)", kind="algorithm"
)
ADAPT_LR = Option(
    "adapt_lr",
    "inner learning rate for adapt_as (default: the run's --inner-lr, where its algorithm's steps weights)",
    kind="float",
    minimum=0.0,
)


def describe_options(evaluator) -> str:
    """One line per option, for ``harness list evaluators --options``."""
    declared = evaluator.options
    if declared is None:
        return "    (options not declared: passed as given)"
    if not declared:
        return "    (no options)"
    lines = []
    for option in declared:
        default = "from the run" if callable(option.default) else option.default
        extra = f", one of {'/'.join(map(str, option.choices))}" if option.choices else ""
        extra += f", >= {_plain(option.minimum)}" if option.minimum is not None else ""
        lines.append(f"    {option.name} ({option.kind}{extra}; default {default}): {option.help}")
    return "\n".join(lines)

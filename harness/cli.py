"""``harness`` command line: subcommands come from the ``register_commands`` hook.

Every error a user can cause ends as one line on stderr and exit status 2;
nothing a run has already written is removed. A run stopped on purpose
(``--time-limit``, SIGTERM, SIGINT, SIGUSR1) ends with one line naming the
resume command and exit status 75 (``harness.run.stopping.EXIT_STOPPED``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from harness.errors import HarnessError
from harness.plugin.manager import get_plugins, report_load_errors
from harness.run.allocator import keep_freed_memory
from harness.run.stopping import EXIT_STOPPED, RunStopped, Terminated, interrupted_message, terminate_outside_training


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --data must never be read as --data-root
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line instead of usage + message
        raise HarnessError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser(plugins) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Meta-learning harness: MAML, FOMAML, ANIL and the analyses of Raghu et al. (ICLR 2020).",
    )
    subparsers = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)
    for name in plugins.commands.names():
        try:
            command = plugins.commands.get(name)
        except HarnessError as collision:  # two plugins add this command: an error only when it is used
            sub = subparsers.add_parser(name, help=f"(unusable: {collision})", add_help=False)
            sub.add_argument("rest", nargs=argparse.REMAINDER)
            sub.set_defaults(command=_Unusable(str(collision)))
            continue
        sub = subparsers.add_parser(name, help=command.description, description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


class _Unusable:
    def __init__(self, error: str):
        self.error = error

    def run(self, _args) -> int:
        raise HarnessError(self.error)


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # SIGTERM or SIGUSR1 while data loads or a run is tested ends with one line; the training loop
    # installs its own handler (a clean stop at the next iteration boundary).
    previous = {
        signum: signal.signal(signum, terminate_outside_training) for signum in (signal.SIGTERM, signal.SIGUSR1)
    }
    try:
        return _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


#: Commands that go on to load data or train: at a terminal they say so before the plugins (and torch) load.
SLOW_COMMANDS = ("run", "eval", "analyze", "reproduce", "check")


def _main(argv: list[str] | None) -> int:
    keep_freed_memory()
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in SLOW_COMMANDS and not {"-h", "--help"} & set(words) and sys.stderr.isatty():
        print(
            f"harness {words[0]}: starting (loading torch and the plugins takes a few seconds)",
            file=sys.stderr,
            flush=True,
        )
    try:
        plugins = get_plugins()
        report_load_errors(plugins)
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
        args.plugins = plugins  # commands use the plugins loaded here (a command's run(args) reads args.plugins)
        if getattr(args, "command", None) is None:
            parser.print_help()
            return 2
        return int(args.command.run(args) or 0)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as stopped:
        print(f"harness: {stopped}", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"harness: {interrupted_message('interrupted')}", file=sys.stderr)
        return 130
    except Terminated as terminated:
        print(f"harness: {interrupted_message(f'terminated ({terminated})')}", file=sys.stderr)
        return 128 + signal.Signals[str(terminated)]
    except OSError as exc:  # a write or read the commands did not expect to fail (full disk, read-only mount)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"harness: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

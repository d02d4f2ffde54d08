"""``harness`` command line: subcommands come from the ``register_commands`` hook.

Every error a user can cause ends as one line on stderr and exit status 2;
nothing a run has already written is removed. A run stopped on purpose
(``--time-limit``, SIGTERM, SIGINT, SIGUSR1) ends with one line naming the
resume command and exit status 75 (``harness.stopping.EXIT_STOPPED``).
"""

from __future__ import annotations

import argparse
import os
import sys

from harness.errors import HarnessError
from harness.plugin_manager import get_plugins, report_load_errors
from harness.stopping import EXIT_STOPPED, RunStopped


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise HarnessError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser(plugins) -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Meta-learning harness: MAML, FOMAML, ANIL and the analyses of Raghu et al. (ICLR 2020).")
    subparsers = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)
    for name, command, _plugin in plugins.commands.items():
        sub = subparsers.add_parser(name, help=command.description, description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        plugins = get_plugins()
        report_load_errors(plugins)
        parser = build_parser(plugins)
        args = parser.parse_args(argv)
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
        print("harness: interrupted; the last checkpoint is kept (continue with --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

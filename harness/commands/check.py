"""``harness check``: a short fixed-seed training run on real data, compared with a saved baseline.

    harness check --algo anil --data omniglot-5w1s --save ci/anil.json        # once, to make the baseline
    harness check --algo anil --data omniglot-5w1s --baseline ci/anil.json    # in CI: exit 1 on a change

Writes ``--report`` (JSON) and ``--junit`` (JUnit XML, which CI systems display). What is
compared, exactly or within the intervals, is in ``harness.run.learning_check``.
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import harness
from harness.errors import HarnessError
from harness.run import learning_check
from harness.run.files import write_json
from harness.run.rundir import run_state


class CheckCommand:
    name = "check"
    description = "train ALGO briefly on real data with a fixed seed and compare with a saved baseline (CI)"

    def add_arguments(self, parser):
        parser.add_argument("--algo", required=True, help="algorithm name (harness list)")
        parser.add_argument("--data", required=True, help="task spec, e.g. omniglot-5w1s")
        parser.add_argument("--data-root", default=None, help="where the data sets are (never downloaded here)")
        parser.add_argument("--baseline", metavar="FILE", help="compare with this baseline; exit 1 on a difference")
        parser.add_argument("--save", metavar="FILE", help="save this run as the baseline")
        parser.add_argument("--iterations", type=int, default=learning_check.BUDGET["iterations"])
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--report", metavar="FILE", help="JSON report (default harness-check-ALGO-DATA.json)")
        parser.add_argument("--junit", metavar="FILE", help="JUnit XML (default harness-check-ALGO-DATA.xml)")
        parser.add_argument("--keep-run", metavar="DIR", help="keep the training run here (default: deleted)")

    def run(self, args) -> int:

        plugins = args.plugins
        plugins.algorithms.get(args.algo)
        budget = {**learning_check.BUDGET, "iterations": args.iterations, "seed": args.seed}
        identity = learning_check.check_identity(args.algo, args.data, budget)
        baseline = learning_check.load_baseline(Path(args.baseline), identity) if args.baseline else None
        if args.keep_run and run_state(Path(args.keep_run)):
            raise HarnessError(f"{args.keep_run} already holds a run; --keep-run needs a new directory")
        stem = f"harness-check-{args.algo}-{args.data}"
        report_path, junit_path = Path(args.report or f"{stem}.json"), Path(args.junit or f"{stem}.xml")
        started = time.perf_counter()
        keep = Path(args.keep_run) if args.keep_run else None
        measured = learning_check.train(plugins, args.algo, args.data, budget, args.data_root, keep)
        comparison, failures = learning_check.compare(baseline, measured) if baseline else ("no baseline given", [])
        report = {
            **identity,
            "comparison": comparison,
            "passed": not failures,
            "failures": failures,
            "seconds": round(time.perf_counter() - started, 1),
            "baseline": args.baseline,
            **measured,
        }
        write_json(report_path, report)
        junit_path.write_text(junit_xml(report))
        if args.save:
            write_json(Path(args.save), {"kind": learning_check.BASELINE_KIND, **identity, **measured})
        test = measured["test"]
        print(
            f"{args.algo} on {args.data}, {budget['iterations']} iterations: test {100 * test['accuracy']:.2f} ± "
            f"{100 * test['ci95']:.2f} % ({test['tasks']} tasks); {comparison}; "
            f"{'passed' if not failures else 'FAILED'}; report {report_path}, {junit_path}"
            + (f"; baseline saved to {args.save}" if args.save else "")
        )
        for line in failures:
            print(f"harness: check failed: {line}", file=sys.stderr)
        return 1 if failures else 0


def junit_xml(report: dict) -> str:
    """One test case per check, as JUnit XML (the format GitHub Actions and GitLab CI display)."""
    failed = not report["passed"]
    suite = ElementTree.Element("testsuite", name="harness check", tests="1", failures=str(int(failed)), errors="0")
    case = ElementTree.SubElement(
        suite,
        "testcase",
        classname=f"harness.check.{report['algorithm']}",
        name=f"{report['algorithm']} on {report['data']}",
        time=str(report["seconds"]),
    )
    if failed:
        ElementTree.SubElement(case, "failure", message=report["failures"][0]).text = "\n".join(report["failures"])
    ElementTree.SubElement(case, "system-out").text = json.dumps(
        {"comparison": report["comparison"], "test": report["test"], "budget": report["budget"]}
    )
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


@harness.hookimpl
def register_commands(registry):
    registry.add(CheckCommand())

"""Bundled evaluators (harness eval RUN_DIR --evaluator NAME)."""

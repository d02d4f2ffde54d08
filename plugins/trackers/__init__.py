"""Experiment trackers for ``--report-to`` (``harness.run.trackers``), one module per tracker, each library optional."""

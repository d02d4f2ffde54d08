"""Experiment trackers for ``--report-to`` (``harness.trackers``), one module per tracker, each library optional."""

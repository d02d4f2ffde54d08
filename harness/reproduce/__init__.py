"""Reproducing the paper: experiment definitions, planning runs, executors, tables, scoreboards and figures."""

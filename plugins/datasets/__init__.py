"""Bundled few-shot datasets (task samplers)."""

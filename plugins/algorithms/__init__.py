"""Bundled meta-learning algorithms."""

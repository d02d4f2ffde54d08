"""Bundled plugins, installed as the package ``harness_plugins``.

They are registered from the built-in list in ``harness.plugin.manager`` and
use exactly the hooks a third-party plugin uses.
"""

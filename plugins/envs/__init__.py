"""Bundled meta-RL environment plugins (the ``register_environments`` hook)."""

"""Bundled meta-RL environment plugins (task samplers with ``kind = "rl"``)."""

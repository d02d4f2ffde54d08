"""The plugin contract: hook specs (the plugin author's reference), typed protocols, base classes with defaults, registries and the plugin manager that loads built-in and installed plugins."""

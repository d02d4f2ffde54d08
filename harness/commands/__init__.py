"""Built-in CLI subcommands, one module each, registered through ``register_commands``."""

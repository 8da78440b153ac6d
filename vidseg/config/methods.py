"""Explicit imports of every method's config module; each registers its keys with ``register_config_extender``.

Add one line here when a method lands (no import hooks, no globbing).
"""

"""toolchain.toml off the hot path: its keys, reading and merging its layers, the memory budget.

Imported by a step only on a toolchain cache miss (layers) or for a budget of `auto` or a
percentage (budget); never by an exec'd step that hits the cache.
"""

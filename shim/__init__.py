"""shim: a toolchain wrapper for Ninja and Bazel builds."""

__version__ = "0.1.0"

"""The build driver: a build tool (ninja, cargo) run as a CI build under a memory budget.

What `shim build` and `shim cargo` share, and what bench/ and the tests measure builds with.
No click here: shim/cli/build.py and shim/cli/cargo.py are the commands in front of it.
"""

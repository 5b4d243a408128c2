"""Writing shim into build files and tool paths: ninja manifests (wrap), Bazel toolchains,
launchers. Cold; return data or lines, never print (shim/cli does).
"""

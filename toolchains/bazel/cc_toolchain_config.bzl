"""cc_toolchain_config: a gcc toolchain whose `gcc` and `ar` tools are shim wrappers.

Kept small on purpose: Bazel adds its legacy features (include paths, defines,
dependency files, params files, archiver flags...) to any toolchain that does not
declare `no_legacy_features`; this rule adds what a usable gcc toolchain needs on
top: default, opt and dbg flags, libstdc++ for C++ links, PIC and shared libraries,
and deterministic __DATE__/__TIME__. Machine-specific values (include directories,
paths of the tools that do not go through shim) come from local.bzl, which
`shim bazel init` writes.
"""

load("@bazel_tools//tools/build_defs/cc:action_names.bzl", "ACTION_NAMES")
load(
    "@bazel_tools//tools/cpp:cc_toolchain_config_lib.bzl",
    "feature",
    "flag_group",
    "flag_set",
    "tool_path",
    "with_feature_set",
)

_COMPILE = [
    ACTION_NAMES.assemble,
    ACTION_NAMES.preprocess_assemble,
    ACTION_NAMES.c_compile,
    ACTION_NAMES.cpp_compile,
    ACTION_NAMES.cpp_header_parsing,
    ACTION_NAMES.cpp_module_compile,
    ACTION_NAMES.cpp_module_codegen,
    ACTION_NAMES.linkstamp_compile,
]

_LINK = [
    ACTION_NAMES.cpp_link_executable,
    ACTION_NAMES.cpp_link_dynamic_library,
    ACTION_NAMES.cpp_link_nodeps_dynamic_library,
]

def _flags(actions, flags, with_features = []):
    return flag_set(actions = actions, flag_groups = [flag_group(flags = flags)], with_features = with_features)

def _impl(ctx):
    features = [
        feature(name = "supports_pic", enabled = True),
        feature(name = "supports_dynamic_linker", enabled = True),
        feature(name = "opt"),
        feature(name = "dbg"),
        feature(
            name = "default_compile_flags",
            enabled = True,
            flag_sets = [s for s in [
                _flags(_COMPILE, ctx.attr.compile_flags) if ctx.attr.compile_flags else None,
                _flags(_COMPILE, ctx.attr.opt_compile_flags, [with_feature_set(features = ["opt"])]),
                _flags(_COMPILE, ctx.attr.dbg_compile_flags, [with_feature_set(features = ["dbg"])]),
            ] if s],
        ),
        feature(
            name = "default_link_flags",
            enabled = True,
            flag_sets = [
                _flags(_LINK, ctx.attr.link_flags + ctx.attr.link_libs),
                _flags(_LINK, ctx.attr.opt_link_flags, [with_feature_set(features = ["opt"])]),
            ],
        ),
        feature(
            # After user flags, as Bazel's own toolchains: builds do not depend on the clock.
            name = "unfiltered_compile_flags",
            enabled = True,
            flag_sets = [_flags(_COMPILE, ctx.attr.unfiltered_compile_flags)],
        ),
    ]
    tool_paths = dict(ctx.attr.tool_paths)
    tool_paths["gcc"] = "gcc"     # the shim wrappers beside this file
    tool_paths["ar"] = "ar"
    return cc_common.create_cc_toolchain_config_info(
        ctx = ctx,
        features = features,
        toolchain_identifier = "shim-" + ctx.attr.cpu,
        host_system_name = "local",
        target_system_name = "local",
        target_cpu = ctx.attr.cpu,
        target_libc = "local",
        compiler = "gcc",
        abi_version = "local",
        abi_libc_version = "local",
        cxx_builtin_include_directories = ctx.attr.include_directories,
        tool_paths = [tool_path(name = name, path = path) for name, path in sorted(tool_paths.items())],
    )

cc_toolchain_config = rule(
    implementation = _impl,
    attrs = {
        "cpu": attr.string(mandatory = True),
        "include_directories": attr.string_list(doc = "The compiler's built-in include directories."),
        "tool_paths": attr.string_dict(doc = "Tools other than gcc and ar (ld, cpp, nm, strip...)."),
        "compile_flags": attr.string_list(default = [
            "-U_FORTIFY_SOURCE",
            "-fstack-protector",
            "-Wall",
            "-fno-omit-frame-pointer",
        ]),
        "opt_compile_flags": attr.string_list(default = [
            "-g0",
            "-O2",
            "-D_FORTIFY_SOURCE=1",
            "-DNDEBUG",
            "-ffunction-sections",
            "-fdata-sections",
        ]),
        "dbg_compile_flags": attr.string_list(default = ["-g"]),
        "unfiltered_compile_flags": attr.string_list(default = [
            "-Wno-builtin-macro-redefined",
            "-D__DATE__=\"redacted\"",
            "-D__TIMESTAMP__=\"redacted\"",
            "-D__TIME__=\"redacted\"",
        ]),
        "link_flags": attr.string_list(default = ["-Wl,-z,relro,-z,now", "-pass-exit-codes"]),
        "link_libs": attr.string_list(default = ["-lstdc++", "-lm"]),
        "opt_link_flags": attr.string_list(default = ["-Wl,--gc-sections"]),
    },
    provides = [CcToolchainConfigInfo],
)

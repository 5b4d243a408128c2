"""The subcommands, declared once: the entry point's reserved words, the CLI's group and
`shim --help` all derive from COMMANDS.

Hot: shim/entry.py reads it at its first branch (is argv[1] a subcommand or a tool?)
without importing click. Each command's module (under shim/cli/) is imported only when
that command runs.
"""

# (name, module, attribute, one-line summary). The summary is what `shim --help` lists, so
# the listing needs no import; tests/cli_test.py keeps it equal to the command's own help.
COMMANDS = (
    ("build", "shim.cli.build", "build", "Run ninja in DIR, admitting its steps into a memory budget."),
    ("cargo", "shim.cli.cargo", "cargo", "Run cargo with every rustc through shim, under a memory budget."),
    ("go", "shim.cli.go", "go", "Run go with every compile and link through shim, under a memory budget."),
    ("report", "shim.cli.report", "report", "Summarise the last build: steps, wall, CPU, memory, failures."),
    ("compdb", "shim.cli.report", "compdb",
     "Write compile_commands.json for the compile steps shim ran (all builds, newest wins)."),
    ("wrap", "shim.cli.wrap", "wrap", "Put shim in front of the compilers and linkers of a generated build.ninja."),
    ("bazel", "shim.cli.bazel", "bazel", "Use shim as the compiler and archiver of a Bazel cc_toolchain."),
    ("config", "shim.cli.config", "config", "Show, check and document toolchain.toml."),
    ("launcher", "shim.cli.launcher", "launcher",
     "Write the fast direct launcher `shim` (and masquerades) into DIRECTORY."),
    ("doctor", "shim.cli.doctor", "doctor",
     "Show what shim detects here: interpreter, launcher, toolchain, memory budget, slots."),
    ("help", "shim.cli.main", "help_command", "Show the help of shim, or of COMMAND."),
)

# Words that are subcommands, never tools (a tool with such an id: `shim run ID`).
RESERVED = frozenset(name for name, _module, _attribute, _summary in COMMANDS)

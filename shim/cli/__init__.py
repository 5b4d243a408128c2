"""The management commands (`shim build`, `shim report`, ...): click, and only here.

shim/cli/main.py is the group; each subcommand of shim/commands.py has its module here.
Domain code (shim/config, shim/reports, shim/generators) returns data or lines; these
modules print them and write the files the user asked for (shim/cli/outfile.py).
"""

"""`shim cargo`: the command in front of shim/driver/cargo.py."""

from shim.cli import wrapped


@wrapped.command("cargo", "its workspace or package", "rustc")
def cargo(directory, mode, budget, cargo_args):
    """Run cargo with every rustc through shim, under a memory budget.

    CARGO_ARGS go to cargo unchanged (build --release, test, check -p foo ...). Without
    -j, cargo gets 2 jobs per core and shim admits its rustc steps by CPU and memory.
    Ends with a summary; `shim report` in the workspace tells the rest.
    """
    from shim.driver import cargo as driver
    return wrapped.run(driver, driver.cargo_binary, directory, mode, budget, cargo_args)

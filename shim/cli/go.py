"""`shim go`: the command in front of shim/driver/go.py."""

from shim.cli import wrapped


@wrapped.command("go", "its module or GOPATH package", "go tool")
def go(directory, mode, budget, go_args):
    """Run go with every compile and link through shim, under a memory budget.

    GO_ARGS go to go unchanged (build ./..., test -race, install ./cmd/x ...). Without -p,
    go gets 2 packages in flight per core and shim admits its compile and link steps by CPU
    and memory. Ends with a summary; `shim report` in this directory tells the rest.
    """
    from shim.driver import go as driver
    return wrapped.run(driver, driver.go_binary, directory, mode, budget, go_args)

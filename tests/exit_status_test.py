"""Shim's own exit statuses are distinct, documented in one table, and shown by --help."""

from conftest import REPO, run_shim
from shim import exit_status


def test_codes_are_distinct_and_not_signal_deaths():
    codes = [code for code, _name, _doc in exit_status.TABLE]
    assert len(set(codes)) == len(codes)
    assert all(0 < code < 128 or code in (126, 127) for code in codes)


def test_help_and_readme_list_every_code(env):
    shown = run_shim(["--help"], env=env).stdout
    readme = (REPO / "README.md").read_text()
    for code, _name, doc in exit_status.TABLE:
        assert "%3d  %s" % (code, doc) in shown
        assert "| %d |" % code in readme, code

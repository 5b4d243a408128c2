"""What the ledger tells: the step record declared once, reading it back, and every report.

Cold: never imported by a build step (steps write the ledger with shim/ledger.py).
"""

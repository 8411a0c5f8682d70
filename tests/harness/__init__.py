"""What several test files share, importable as ``harness.*`` (``pythonpath = ["tests"]``).

- :mod:`harness.engine`: engines on an emulator through its URL, and secret checks.
- :mod:`harness.dialect`: one check through every ``auroradsql`` driver.
- :mod:`harness.clinic`: the pet clinic's tables, writes and environments.
- :mod:`harness.soak`: what the fault-injection soak is built from.
"""

"""Test-wide settings.

Hypothesis's per-example deadline (200 ms by default) measures the machine's load as much as the
code: on a shared 2-core CI machine a busy neighbour makes a fast property fail. Speed is
measured by `make bench`, not by tests, so the deadline is off everywhere.
"""

from hypothesis import settings

settings.register_profile("fedloom", deadline=None)
settings.load_profile("fedloom")

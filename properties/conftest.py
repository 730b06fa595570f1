"""Shared pytest configuration: Hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one: ``ci`` (default; derandomized, bounded, what
``.ci/run`` uses), ``dev`` (random, a few more examples) or ``deep`` (thousands of
examples for long runs on demand).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, Verbosity, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
settings.register_profile("dev", max_examples=150, deadline=None, print_blob=True)
settings.register_profile(
    "deep",
    max_examples=5_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=list(Phase),
    verbosity=Verbosity.normal,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

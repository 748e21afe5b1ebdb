"""Evaluation: metrics, feature extractors and the ``magicflow evaluate`` command.

The maths (generation, classification, attribution) are pure functions on arrays, so reports
and tests share one source of truth; reading files (inputs), figures and the command line
live in their own modules. Submodules are not imported here so that importing one part does
not pay for the others' dependencies."""

"""The built-in synthetic demo cohort: a small BIDS dataset made from nilearn's bundled
MNI152 2009a template so that every pipeline stage does real work without any download."""

from magicflow.demo.cohort import write_demo_cohort

__all__ = ["write_demo_cohort"]

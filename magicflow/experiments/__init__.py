"""Experiments: an experiment is datasets + a label column + slice offsets + a model kind.
This package turns the per-dataset slices into subject-level splits and runs the learning
stages (train, sample, classify, attribution) on them."""

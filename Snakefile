"""MAGIC-Flow pipeline. Stages are plain `magicflow` commands; the rules here only wire files.

snakemake --cores 8                 # everything the config asks for
snakemake --cores 8 manifest        # one stage (named targets are listed in README.md)
snakemake --report results/snakemake-report.html   # Snakemake's own report of the main outputs
"""

import sys

sys.path.insert(0, workflow.basedir)  # the magicflow package, importable without installing it

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/translation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/use.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        rules.manifest.input,
        rules.preprocess.input,
        rules.slices.input,
        rules.sample.input,
        rules.attribution.input,
        rules.baselines.input,
        rules.translate.input,
        rules.report.input,
        rules.predict.input,

"""Config of the SLURM cluster test: python write_config.py SHIPPED_CONFIG OUT_CONFIG.

The tiny experiment of tests/test_workflow.py made smaller, since registration is most of the
work on 2 cores: 3 demo subjects (the fewest that fill 3 folds), MRI only, T1w vs T2w (each class
then has an image in every fold, which diagnosis would not with 3 subjects), one fold trained for
one epoch, the demo registration preset without bias correction. device auto: the GPU rules ask
SLURM for a GPU (the test node's /dev/null one) in the GPU partition, with 2 CPUs, and train on
the CPU. A second experiment, broken, classifies diagnosis on T1w: the 3 subjects are 2 AD and 1
CN, fewer than the 3 folds in every class, which only the data shows (a config the parse-time
checks refuse would stop the run before SLURM sees a job), so its data-check job fails on the cluster
while tiny trains on.
"""

import sys
from pathlib import Path

import yaml

shipped, out = Path(sys.argv[1]), Path(sys.argv[2])
config = yaml.safe_load(shipped.read_text())
config["datasets"]["demo"].update(subjects=3, t1w_only=0, tracers=[])
config["training"].update(epochs=1, batch_size=4, device="auto")
config["registration"].update(backend="ants", preset="demo", bias_correction=False)
config["slurm"] = {"gpu_partition": "gpu", "cpus_per_gpu": 2}  # the test cluster's GPU partition (slurm.conf.in)
tiny = {
    "datasets": ["demo"],
    "label": "modality",
    "modalities": ["T1w", "T2w"],
    "offsets": {"train": [-1, 0], "eval": [0]},
    "model": "classification",
    "preset": "small",
    "folds": 3,
    "run_folds": 1,
}
config["experiments"] = {"tiny": tiny, "broken": {**tiny, "label": "diagnosis", "modalities": ["T1w"]}}
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(yaml.safe_dump(config))

"""Preprocessing: T1 to MNI152 (FSL or ANTs), T2w/FLAIR/PET rigidly to the T1 then to MNI, QC.

Modules: ``template`` (the MNI152 grid and files), ``backend`` (auto|fsl|ants, threads),
``volumes`` (checked NIfTI loading), ``ants_backend`` / ``fsl_backend`` (the registrations),
``pet`` (frame collapse and timing checks), ``coregister`` (secondary modalities),
``qc`` (overlays and correlation), ``naming`` (derivative file names), ``commands`` (CLI)."""

"""Evaluation maths: generation (FID, KID, PRDC, MS-SSIM, memorisation), classification
(Table 3 metrics, calibration, accuracy-rejection) and attribution-map checks (threshold
analysis of Section 7.3). Pure functions on arrays, so reports and tests share one source
of truth; reading files, plotting and the command line live elsewhere. Submodules are not
imported here so that importing one part does not pay for the others' dependencies."""

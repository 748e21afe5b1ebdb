"""Reports: self-contained HTML pages built from the evaluation outputs."""

"""Dataset adapters: each turns a download, laid out as its source distributes it, into the
shared manifest (one row per usable image, plus the exclusions with their reasons)."""

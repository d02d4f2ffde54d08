"""One run: configuration, training, its directory and files, stopping and resuming, provenance, devices, trackers."""

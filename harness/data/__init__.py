"""Few-shot data: task specs, episodes and class-pool samplers, image loading, labelled pools and the data root."""

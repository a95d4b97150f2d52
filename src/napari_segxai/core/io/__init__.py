"""Every file format in one place: cases (NIfTI), segmentations, relevance maps, training manifests, the cache."""

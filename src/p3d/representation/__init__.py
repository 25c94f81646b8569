"""Video representations: extraction, feature stores, encoders of local descriptors."""

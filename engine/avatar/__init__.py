"""Step 1, avatar design: portrait prompt rendering and the portrait suitability check."""

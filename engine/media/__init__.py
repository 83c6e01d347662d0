"""Audio and video I/O (PyAV) and the lazily read frame stream."""

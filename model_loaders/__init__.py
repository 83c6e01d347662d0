"""Model catalogue, downloads, state-dict checks and wrapping engine networks for ComfyUI."""

"""LatentSync 1.6 / 1.5 lip sync (bytedance/LatentSync, Apache-2.0): our own implementation.

Modules: ``config`` (hyper-parameters from ``latentsync.json``), ``unet`` + ``blocks`` (the 3-D
latent UNet with audio cross-attention and motion modules, feature reuse), ``ddim`` (the sampler),
``whisper`` + ``audio`` (Whisper tiny encoder in OpenAI's format, per-frame audio windows),
``align`` (face template alignment and paste-back), ``mask`` (the mouth mask), ``pipeline`` (the
lip-sync loop), ``random_models`` (seeded stand-in weights). Build the networks from the published
files with ``model_loaders.latentsync``. Submodules import torch, numpy and cv2 only (diffusers for
the VAE when it is built).
"""

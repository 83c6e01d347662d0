"""MuseTalk 1.5 lip sync: networks, audio features, blending, offline and real-time pipelines.

Public API: ``pipeline.prepare_avatar``, ``pipeline.speak``, ``pipeline.lip_sync``,
``pipeline.AvatarCache``, ``pipeline.MuseTalkModels``; build the models with
``model_loaders.musetalk.load_musetalk``. Submodules import torch only (diffusers/transformers
are imported when a network is built).
"""

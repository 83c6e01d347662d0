"""LivePortrait (KwaiVGI) re-implemented for the pack: networks, keypoint math and the animation algorithm.

Modules: ``networks`` (F, M, W, G, S from ``models.json``), ``blocks``, ``keypoints`` (pose bins,
rotation, keypoint transform, stitching/retargeting calls), ``motion`` (per-frame composition),
``animate`` (still portrait, chunked two-pass pipeline), ``video_source`` (video-to-video),
``edit`` (retargeting and expression sliders), ``runtime`` (device, dtype, fp16 guard),
``faces`` (the face operations it needs), ``options`` (reference defaults), ``smoothing``.
Nothing here imports ComfyUI; weights are loaded by ``model_loaders.liveportrait``.
"""

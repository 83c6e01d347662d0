"""Face analysis: detection, 468 landmarks, pose, tracking, LivePortrait crops, paste-back.

Modules: ``analyzer`` (FaceAnalyzer), ``types`` (Face), ``tracking`` (track_faces, FaceTrack),
``schemes`` (ibug68, eye/lip ratios, MuseTalk box), ``align`` (crop_liveportrait, paste_back),
``pipeline`` (the node-level video operations). Backend: MediaPipe BlazeFace + FaceMesh from
their ``.tflite`` files (``tflite_reader`` + ``tflite_torch``), Apache-2.0.
"""

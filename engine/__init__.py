"""The ComfyUI-free engine: networks, algorithms, face analysis, audio and video I/O.

Nothing here imports ``comfy``, ``folder_paths`` or ``server``; long loops take plain
``progress(done, total)`` and ``check_interrupt()`` callbacks.
"""

"""Shipping a model: the files it is written as, the runtimes that run them, their timing.

- ``formats``: every export format from one table (``FORMATS``), each file checked against
  the PyTorch model before it is written (``check``); ONNX (``onnx_export``) and plain
  Darknet sections (``lower``), both from the BN-folded model (``fold``).
- ``backends``: one way to run a model or any exported file in any runtime:
  ``backend(images) -> [B, N, 5 + C]`` decoded detections.
- ``timing``: the one way every form is timed.

Writing a file and running it are kept apart (a backend never exports, a format never
times), the way Ultralytics keeps ``exporter.py`` apart from ``autobackend.py``.
"""

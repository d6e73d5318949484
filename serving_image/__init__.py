"""The serving image: an ONNX Runtime server for the Open Inference Protocol (KServe V2)."""

__version__ = "0.1.0"

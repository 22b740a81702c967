"""Inference without torch: the bundle's ONNX graphs, face detection, tracking, frames."""

"""The trained ensemble as one torch graph for ONNX, and its int8 quantisation."""

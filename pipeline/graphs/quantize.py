"""int8 graphs from exported fp32 ones: onnxruntime static quantisation, calibrated on real faces.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantised operator, which TensorRT
and onnxruntime both read), per-channel int8 weights, uint8 activations whose ranges are the
min/max seen on the calibration faces. The graph is first put through `quant_pre_process`
(shape inference, batch-norm folding) as onnxruntime advises. Static, not dynamic: the activation
ranges are fixed by calibration rather than measured on every run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from pipeline.files import atomic_path

CALIBRATION_BATCH = 64  # faces per calibration run: bounds the memory of the collected activations

logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)  # its progress lines say nothing a user acts on


class FaceBatches(CalibrationDataReader):
    """The calibration faces, batch by batch, as the graph's input."""

    def __init__(self, input_name: str, faces: np.ndarray, dtype: type):
        self.input_name, self.faces, self.dtype = input_name, faces, dtype
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.faces):
            return None
        batch = self.faces[self.start : self.start + CALIBRATION_BATCH].astype(self.dtype)
        self.start += CALIBRATION_BATCH
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.start = 0


def quantize_int8(fp32_path: Path, int8_path: Path, faces: np.ndarray) -> None:
    """Write the int8 version of `fp32_path`, its metadata kept, calibrated on `faces` (N×S×S×C)."""
    source = onnx.load(str(fp32_path))
    graph_input = source.graph.input[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            FaceBatches(graph_input.name, faces, dtype),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
    del result.metadata_props[:]
    result.metadata_props.extend(source.metadata_props)
    with atomic_path(int8_path) as tmp:
        onnx.save(result, str(tmp))

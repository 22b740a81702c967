"""onnxruntime sessions on the CPU, sized on purpose: shared by the classifier and the face detector."""

from __future__ import annotations

import onnxruntime as ort


def cpu_session(model: str | bytes, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session on exactly `threads` threads.

    Set on purpose: a runtime's default of one thread per core, beside another runtime doing the
    same, oversubscribes the cores and slows both many times over. Idle threads sleep instead of
    spinning, so the detector's session and the classifier's do not steal cores from each other.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

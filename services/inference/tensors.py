"""Open Inference Protocol tensors <-> numpy, with the checks a served model needs.

The protocol sends a tensor either as raw little-endian bytes (`raw_input_contents`, what
tritonclient sends) or as typed repeated fields (`contents.fp32_contents`); both are accepted.
Whatever arrives is checked before it can reach a batch: name, datatype, shape against the
model card, byte count, finite values.
"""

from __future__ import annotations

import numpy as np

from ucadi.errors import UcadiError
from ucadi.v1 import open_inference_pb2 as oip

INPUT_NAME = "ct_volume"
OUTPUT_NAME = "probabilities"
INPUT_DATATYPE = "FP32"
# The protocol's variable-size dimension marker in metadata shapes.
VARIABLE_DIM = -1


class InvalidTensorError(UcadiError):
    """A ModelInfer input is not the tensor the model accepts."""

    status = "INVALID_ARGUMENT"


def _expected_shape_text(input_shape: tuple[int, ...]) -> str:
    return "[batch, " + ", ".join(map(str, input_shape)) + "]"


def decode_input(request: oip.ModelInferRequest, input_shape: tuple[int, ...],
                 max_batch_rows: int) -> np.ndarray:
    """The request's single FP32 input as an array [batch, *input_shape], checked."""
    expected = _expected_shape_text(input_shape)
    if len(request.inputs) != 1:
        raise InvalidTensorError(f"ModelInfer needs exactly one input ({INPUT_NAME!r} FP32 "
                                 f"{expected}); got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise InvalidTensorError(f"unknown input {tensor.name!r}; the model's input is "
                                 f"{INPUT_NAME!r}")
    if tensor.datatype != INPUT_DATATYPE:
        raise InvalidTensorError(f"input datatype {tensor.datatype!r} is not accepted; send "
                                 f"{INPUT_DATATYPE} (float32) preprocessed CT values")
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 1 + len(input_shape) or shape[1:] != tuple(input_shape) or shape[0] < 1:
        raise InvalidTensorError(f"input shape {list(shape)} does not fit the model: it takes "
                                 f"{expected} (batch >= 1)")
    if shape[0] > max_batch_rows:
        raise InvalidTensorError(f"batch of {shape[0]} is larger than this server's limit of "
                                 f"{max_batch_rows} rows per request; split it")
    count = int(np.prod(shape))
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidTensorError("raw_input_contents must hold one entry per input (1)")
        raw = request.raw_input_contents[0]
        if len(raw) != count * 4:
            raise InvalidTensorError(f"raw input holds {len(raw)} bytes; shape {list(shape)} "
                                     f"FP32 needs {count * 4}")
        values = np.frombuffer(raw, dtype="<f4")
    else:
        if len(tensor.contents.fp32_contents) != count:
            raise InvalidTensorError(f"input holds {len(tensor.contents.fp32_contents)} FP32 "
                                     f"values; shape {list(shape)} needs {count}")
        values = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
    array = values.astype(np.float32).reshape(shape)
    if not np.isfinite(array).all():
        raise InvalidTensorError("input contains NaN or infinite values; send preprocessed, "
                                 "z-scored CT values (always finite)")
    return array


def check_requested_outputs(request: oip.ModelInferRequest) -> None:
    """Raise InvalidTensorError when the request asks for an output the model lacks."""
    for wanted in request.outputs:
        if wanted.name != OUTPUT_NAME:
            raise InvalidTensorError(f"unknown output {wanted.name!r}; the model's output is "
                                     f"{OUTPUT_NAME!r}")


def encode_output(response: oip.ModelInferResponse, probabilities: np.ndarray,
                  class_names: tuple[str, ...]) -> None:
    """Append the probabilities [batch, classes] as the raw FP32 output 'probabilities'."""
    output = response.outputs.add(name=OUTPUT_NAME, datatype=INPUT_DATATYPE,
                                  shape=list(probabilities.shape))
    output.parameters["class_names"].string_param = ",".join(class_names)
    response.raw_output_contents.append(
        np.ascontiguousarray(probabilities, dtype="<f4").tobytes())


def tensor_metadata(input_shape: tuple[int, ...], num_classes: int) -> tuple[
        oip.ModelMetadataResponse.TensorMetadata, oip.ModelMetadataResponse.TensorMetadata]:
    """(input, output) metadata with a variable batch dimension."""
    meta = oip.ModelMetadataResponse.TensorMetadata
    return (meta(name=INPUT_NAME, datatype=INPUT_DATATYPE,
                 shape=[VARIABLE_DIM, *input_shape]),
            meta(name=OUTPUT_NAME, datatype=INPUT_DATATYPE, shape=[VARIABLE_DIM, num_classes]))

"""ONNX weights of a bioimage.io package, run by onnxruntime behind a torch module.

onnxruntime is optional (``pip install 'napari-segnet[onnx]'``); an ONNX graph is data
for its runtime, not Python code, so it needs no ``trust_code``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ModelFileError

INSTALL = "pip install 'napari-segnet[onnx]'"


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxModule(nn.Module):
    """An ONNX graph with one input and (at least) one output, as a torch module.

    ``forward`` hands the tensor to onnxruntime on the CPU and returns its first output
    as a tensor on the input's device. No gradients flow through it.

    Parameters
    ----------
    data : bytes
        The ``.onnx`` file's content.
    where : str
        The package, for error messages.
    """

    def __init__(self, data: bytes, where: str):
        super().__init__()
        self.data, self.where = data, where
        self.session = _session(data, where)
        # The engine reads a model's device from its parameters: an empty one says "cpu".
        self.device_marker = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.input_name = self.session.get_inputs()[0].name

    # A session cannot be copied or pickled: copies (the engine's, a cluster's) make
    # their own from the graph's bytes.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["session"]
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.session = _session(self.data, self.where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        try:
            out = self.session.run(None, {self.input_name: array})[0]
        except Exception as e:
            raise ModelFileError(
                f"{self.where}: onnxruntime failed on an input of shape {array.shape}: {e}"
            ) from None
        return torch.from_numpy(np.asarray(out)).to(x.device)


def _session(data: bytes, where: str):
    try:
        import onnxruntime
    except ImportError:
        raise ModelFileError(
            f"{where} has ONNX weights, which run with onnxruntime: {INSTALL}"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelFileError(f"{where}: the ONNX weights cannot be read: {e}") from None

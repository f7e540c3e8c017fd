"""Where the sentence-transformers models (embedding encoder, NLI cross-encoder) run: torch's device, chosen once.

"auto" (the default) is the CUDA GPU when torch sees one, else the CPU; nothing is fetched either way. An explicit
"cuda" without a GPU is refused when the backend is built, before any answer is generated. The LM runs in JAX on the
same GPU: JAX preallocates 75% of its memory unless told otherwise, which the process (not this library) bounds;
see docs/architecture.md, "Semantic models on the accelerator"."""

from __future__ import annotations

import re

from calib.errors import CalibError

_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str, backend: str) -> str:
    """The requested device, checked now: a known name, and for an explicit CUDA device a GPU torch can see."""
    if not isinstance(device, str) or not _PATTERN.match(device):
        raise CalibError(f"{backend} backend: device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise CalibError(
                f"{backend} backend: device {device!r} requested but torch sees {count} CUDA GPU(s); "
                "use device=auto (the GPU when there is one) or device=cpu"
            )
    return device


def resolve_device(device: str) -> str:
    """The torch device string for a checked request: "auto" becomes "cuda" when torch sees a GPU, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

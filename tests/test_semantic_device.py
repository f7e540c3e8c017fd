"""Where the embedding and NLI models run: device "auto" (the default) is CUDA when torch sees a GPU, else the CPU;
an explicit CUDA device without a GPU is one CalibError line when the backend is built."""

import pytest
import torch

from calib.errors import CalibError
from calib.semantic import EmbeddingSimilarity, NLIEquivalence, get_backend
from calib.semantic.device import resolve_device

NO_GPU = not torch.cuda.is_available()


def test_auto_is_the_default_and_follows_torch():
    assert EmbeddingSimilarity().device == "auto"
    assert NLIEquivalence(model="cross-encoder/nli-deberta-v3-base").device == "auto"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only machine")
def test_auto_loads_the_encoder_on_the_cpu_here():
    backend = get_backend("embedding")  # the config's estimators.semantic_options reach the backend this way
    assert backend.encoder.device.type == "cpu"
    vectors = backend.encode(["Paris", "Paris, France"])
    assert vectors.shape[0] == 2 and abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: cuda is valid there")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_explicit_cuda_without_a_gpu_is_one_clear_line(device):
    for build in (
        lambda: get_backend("embedding", device=device),
        lambda: NLIEquivalence(model="cross-encoder/nli-deberta-v3-base", device=device),
    ):
        with pytest.raises(CalibError, match="torch sees 0 CUDA GPU") as err:
            build()
        assert "\n" not in str(err.value) and device in str(err.value)


def test_unknown_device_is_refused():
    with pytest.raises(CalibError, match="embedding backend: device 'gpu' is not one of auto, cpu, cuda"):
        EmbeddingSimilarity(device="gpu")
    with pytest.raises(CalibError, match="nli backend: device 'mps'"):
        NLIEquivalence(model="x", device="mps")

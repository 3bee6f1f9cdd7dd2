import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network; unknown hub ids fail fast
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n: one thread per worker (and per process a test starts), or the workers' thread pools fight over the
    # cores and every test runs several times slower
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import clva_lite  # noqa: E402
from clva_lite.models.tiny import TINY_KINDS, save_tiny_model  # noqa: E402

torch.set_grad_enabled(False)
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Tiny random-weight models of every supported family, saved as hub snapshots would be."""
    root = tmp_path_factory.mktemp("tiny")
    return {kind: save_tiny_model(kind, root / kind) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def toy():
    return clva_lite.load_model("toy", device="cpu")


@pytest.fixture(scope="session")
def untrained():
    return clva_lite.load_model("toy-untrained", device="cpu")


@pytest.fixture(scope="session", params=["toy-untrained", *TINY_KINDS])
def any_model(request, tiny_dirs):
    """The toy architecture and every tiny architecture, loaded through ``load_model``."""
    name = request.param
    source = name if name.startswith("toy") else tiny_dirs[name]
    return clva_lite.load_model(source, device="cpu")

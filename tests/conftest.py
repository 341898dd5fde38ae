"""Shared fixtures: random `transformers` models saved once per session.

`hf_checkpoint(architecture, fmt="safetensors", seed=0, **config_overrides)` (the architecture's
family kit, `<family>_kit.make_hf_model`, makes the model) returns an
`HFCheckpoint(model, folder, config)`: the HF model in eval mode and the folder it was saved to
(save_pretrained; `fmt="bin"` writes a classic `pytorch_model.bin`). Folders are shared across
tests: copy one (`copy_checkpoint`) before editing its files.
"""

from __future__ import annotations

import importlib
import shutil
from typing import NamedTuple

import pytest

from oracle import file_hashes, save_hf_model
from vlexport import families


def make_hf_model(architecture: str, seed: int = 0, **overrides):
    kit = importlib.import_module(f"{families.for_architecture(architecture).name}_kit")
    return kit.make_hf_model(architecture, seed, **overrides)


# The README's `pytest -n 2` runs whole files on two workers (pyproject: --dist loadfile, in collection order).
# These files take minutes each (a trained build in a module fixture, or killed builds): they go first, so
# that neither worker is left running one of them alone at the end. Measured on a 2-core AVX-512 EPYC: the
# suite in 1256 s serially, 939 s on two workers with xdist's own order (these files came last).
SLOW_FILES = ("test_vip_llava_trained.py", "test_dual_encoder_trained.py", "test_build_faults.py",
              "test_int8_search.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: the rest keep their order


class HFCheckpoint(NamedTuple):
    model: object  # the transformers model, eval mode
    folder: object  # pathlib.Path
    config: dict  # the saved config.json


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    import json

    cache: dict = {}

    def get(architecture: str, fmt: str = "safetensors", seed: int = 0, **overrides) -> HFCheckpoint:
        assert fmt in ("safetensors", "bin"), fmt
        key = (architecture, fmt, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            model = make_hf_model(architecture, seed, **overrides)
            folder = tmp_path_factory.mktemp(f"hf-{architecture}-{fmt}")
            save_hf_model(model, folder, safe=fmt == "safetensors")
            cache[key] = HFCheckpoint(model, folder, json.loads((folder / "config.json").read_text()))
        return cache[key]

    return get


@pytest.fixture
def copy_checkpoint(tmp_path):
    """copy_checkpoint(folder) -> a private copy of a saved model folder, safe to edit."""
    count = iter(range(1000))

    def copy(folder):
        dest = tmp_path / f"copy{next(count)}"
        shutil.copytree(folder, dest)
        return dest

    return copy


# ----------------------------------------------------------------------------- hypothesis profiles
# Property tests (tests/test_properties.py) run the "ci" profile by default: a few dozen examples per
# test, derandomized so every CI run draws the same cases. The full run, >= 1000 examples per entry
# point:  VLEXPORT_HYPOTHESIS=full pytest tests/test_properties.py -q --hypothesis-show-statistics
# No example database: nothing is written into the checkout (.hypothesis/ is not git-ignored).
import os as _os  # noqa: E402

try:
    from hypothesis import HealthCheck as _HealthCheck, settings as _settings
except ImportError:  # hypothesis is in the test extra; without it only the property tests skip
    _settings = None
if _settings is not None:
    _quiet = [_HealthCheck.too_slow, _HealthCheck.data_too_large, _HealthCheck.filter_too_much]
    _settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                               suppress_health_check=_quiet, print_blob=True)
    _settings.register_profile("full", max_examples=1000, deadline=None, derandomize=False, database=None,
                               suppress_health_check=_quiet, print_blob=True)
    _settings.load_profile(_os.environ.get("VLEXPORT_HYPOTHESIS", "ci"))


# ----------------------------------------------------------------------------- tiny artifacts, built once
TINY_IDS = sorted(i for f in families.all_families() for i in f.tiny)  # every family's built-in tiny models


class TinyArtifacts(dict):
    """{tiny model id: artifact folder}, plus `logs[id]`: the (stdout, stderr) its build printed."""

    logs: dict


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """Every family's built-in tiny model built once per session, as a user builds it
    (`vlexport build --model ID --fp16 --int8`, side by side, one thread each): fp32, fp16 and int8
    graphs, validated. The registry-driven tests (build layout, CLI, properties, serving, artifact
    errors) all read these folders, so each tiny model is exported once per run, not once per test
    module. Shared and read-only: copy a folder before changing anything in it (the session checks
    at its end that no test did)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny-artifacts")
    procs = {m: subprocess.Popen([sys.executable, "-m", "vlexport", "build", "--model", m, "--fp16", "--int8",
                                  "--out", str(root / m), "--threads", "1"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**_os.environ, "COLUMNS": "200"})
             for m in TINY_IDS}
    arts = TinyArtifacts()
    arts.logs = {}
    for m, p in procs.items():
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, f"building {m} failed:\n{err[-3000:]}"
        arts[m], arts.logs[m] = root / m, (out, err)
    before = {m: file_hashes(f) for m, f in arts.items()}
    yield arts
    changed = [m for m, f in arts.items() if file_hashes(f) != before[m]]
    assert not changed, f"a test changed the shared tiny artifacts {changed}: copy a folder before editing it"

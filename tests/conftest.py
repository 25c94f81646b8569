import os
from pathlib import Path

import pytest
import torch

# Deterministic, quiet, and polite on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
torch.manual_seed(0)

REPO = Path(__file__).resolve().parents[1]
# The authors' deploy files (github.com/ZhaofanQiu/pseudo-3d-residual-networks): not part of the repository.
DEPLOY_FILES = {"kinetics": "deploy_p3d_resnet_kinetics.prototxt", "sports1m": "deploy_p3d_resnet_sports1m.prototxt"}


def find_reference_dir() -> tuple[Path | None, str]:
    """The folder of the authors' deploy prototxts: ``$P3D_REFERENCE_DIR``, else ``../shared/reference/official-p3d``
    beside the checkout; ``(None, why)`` when it is not there."""
    env = os.environ.get("P3D_REFERENCE_DIR")
    where = Path(env) if env else REPO.parent / "shared" / "reference" / "official-p3d"
    missing = [f for f in DEPLOY_FILES.values() if not (where / f).is_file()]
    if missing:
        source = "P3D_REFERENCE_DIR" if env else "the default location"
        return None, (
            f"the authors' deploy prototxts are not in {where} ({source}; missing {', '.join(missing)}): set "
            f"P3D_REFERENCE_DIR to a folder holding them (from github.com/ZhaofanQiu/pseudo-3d-residual-networks)"
        )
    return where, ""


@pytest.fixture(scope="session")
def official_p3d() -> Path:
    """Folder holding ``deploy_p3d_resnet_{kinetics,sports1m}.prototxt``; the test is skipped when it is absent."""
    where, why = find_reference_dir()
    if where is None:
        pytest.skip(why)
    return where

"""The README's commands, run as written, in the README's order (documentation that cannot rot).

Every line of every ```` ```bash ```` block of README.md is a command (``\\`` continues a line, ``#`` starts a
comment, ``&&`` chains, ``> FILE`` redirects the output); each runs through :func:`p3d.cli.main` in one working
directory, where the test first puts what the README's commands name:

* ``UCF101/`` — a synthetic dataset in the UCF101 layout (``UCF-101/<Class>/*.mp4``, ``ucfTrainTestlist/``);
* ``my_videos/`` — the same videos as one folder per class;
* ``video.mp4`` — one of them;  ``pairs.txt`` — ASLAN-style pairs of its videos;
* ``ActivityNet/`` — long synthetic videos with ActivityNet v1.3 annotations (``make_synthetic_untrimmed``);
* ``p3d_resnet_kinetics.caffemodel`` and ``deploy_p3d_resnet_kinetics.prototxt`` — a tiny deploy net in the
  authors' naming scheme with random weights (``tests/convert/caffe_reference.py``), as the real files are 260 MB.

The only rewrites (:data:`SUBSTITUTIONS`): iteration counts are divided by 500 (a CPU recipe of 2000 iterations
becomes 4), ``p3d demo`` gets a toy budget, and optical flow (``p3d flow``, ``--flow-from-rgb``) is computed with
one TV-L1 pyramid level and one warp instead of OpenCV's 5 x 5 (the same code, a fraction of the iterations).
Not run: ``pip install`` (the package is installed) and ``python -m pytest`` (this is it).  A command must exit
with status 0.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from p3d.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

# (pattern, replacement) applied to each command line before it is split into arguments
FAST_TVL1 = ("nscales=1", "warps=1", "inner_iterations=10", "outer_iterations=2")
SUBSTITUTIONS: list[tuple[str, object]] = [
    (r"(--iterations |--lr-step )(\d+)", lambda m: f"{m.group(1)}{max(1, int(m.group(2)) // 500)}"),
    (r"^p3d demo\b", "p3d demo --classes 2 --videos-per-class 6 --iterations 2 --test-clips 1 --workers 0"),
    (
        r"^(p3d flow\b.*|.*--flow-from-rgb\b.*)$",
        lambda m: m.group(1) + " " + " ".join(f"--tvl1 {kv}" for kv in FAST_TVL1),
    ),
]
SKIPPED = ("pip install", "python -m pytest")


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks, in order: continuation lines joined, comments dropped, ``&&`` split."""
    out: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            cmd: list[str] = []
            for tok in [*tokens, "&&"]:
                if tok != "&&":
                    cmd.append(tok)
                elif cmd:
                    out.append(" ".join(t if t == ">" else shlex.quote(t) for t in cmd))
                    cmd = []
    return out


def rewrite(cmd: str) -> str:
    for pattern, repl in SUBSTITUTIONS:
        cmd = re.sub(pattern, repl, cmd)
    return cmd


COMMANDS = [c for c in readme_commands(README.read_text()) if not c.startswith(SKIPPED)]


def test_the_readme_documents_the_chain():
    """The commands the issue names are all there, in the order a user runs them."""
    firsts = [" ".join(shlex.split(c)[:2]) for c in COMMANDS]
    order = ["p3d demo", "p3d train", "p3d test", "p3d extract", "p3d svm", "p3d predict", "p3d similarity"]
    order += ["p3d embed", "p3d pca-study", "p3d convert", "p3d export"]
    positions = [firsts.index(c) for c in order]
    assert positions[:7] == sorted(positions[:7]), firsts
    assert firsts.index("p3d convert") < len(firsts) - 1 - firsts[::-1].index("p3d predict")  # convert → predict
    block = '```bash\np3d a \\\n  b  # note\nx && p3d c "d e" > f\n```\n'
    assert readme_commands(block) == ["p3d a b", "x", "p3d c 'd e' > f"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from p3d.data import make_synthetic_dataset, make_synthetic_untrimmed
    from p3d.data.video import normalize_id
    from tests.convert.conftest import make_caffe

    w = tmp_path_factory.mktemp("readme")
    make_synthetic_dataset(w / "UCF101", num_classes=3, videos_per_class=6, num_frames=24, size=(48, 64), seed=0)
    shutil.copytree(w / "UCF101" / "UCF-101", w / "my_videos")
    videos = sorted((w / "UCF101" / "UCF-101").rglob("*.mp4"))
    shutil.copy(videos[0], w / "video.mp4")
    ids = [normalize_id(str(v.relative_to(w / "UCF101" / "UCF-101"))) for v in videos]
    pairs = [f"{a} {b} {int(a.split('/')[0] == b.split('/')[0])}\n" for i, a in enumerate(ids) for b in ids[i + 1 :]]
    (w / "pairs.txt").write_text("".join(pairs))
    make_synthetic_untrimmed(w / "ActivityNet", num_videos=4, num_classes=3, size=(48, 64), seed=0)
    proto, model, *_ = make_caffe(w, name="tiny", x_shape=(1, 3, 8, 64, 64))
    proto.rename(w / "deploy_p3d_resnet_kinetics.prototxt")
    model.rename(w / "p3d_resnet_kinetics.caffemodel")
    return w


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_readme_command(workspace, cmd, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    argv = shlex.split(rewrite(cmd))
    if argv[:2] == ["p3d", "export"] and any(a.endswith(".onnx") for a in argv):
        for extra in ("onnx", "onnxruntime", "onnxscript"):  # pip install -e ".[export]"
            pytest.importorskip(extra)
    assert argv[0] == "p3d", f"not a p3d command: {cmd}"
    target = None
    if ">" in argv:
        i = argv.index(">")
        argv, target = argv[:i], argv[i + 1]
    if target is None:
        rc = main(argv[1:])
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(argv[1:])
        Path(target).write_text(buf.getvalue())
    err = capsys.readouterr().err
    assert rc == 0, f"{cmd}\n{err}"

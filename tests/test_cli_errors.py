"""Bad input never reaches a traceback: every command answers a missing, empty, binary or wrong-kind file, a folder
where a file is expected (and the reverse), an out-of-range number or a size whose memory cannot fit with ONE line
``p3d COMMAND: error: ...`` naming the argument or file, and a non-zero exit status; ``--debug`` / ``P3D_DEBUG=1``
show the traceback.

The commands run in-process through :func:`p3d.cli.main` on a tiny workspace (a synthetic UCF101-layout dataset, a
2-iteration run of a width-4 P3D, its feature store, and a folder of broken files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from p3d.cli import describe_error, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    from p3d.data import make_synthetic_dataset

    w = tmp_path_factory.mktemp("ws")
    make_synthetic_dataset(w / "data", num_classes=3, videos_per_class=3, num_frames=16, size=(40, 40), seed=0)
    tiny = ["--model", "p3d63", "--width", "4", "--layers", "1", "1", "1", "1", "--clip-len", "8"]
    tiny += ["--size", "32", "32", "--resize", "36", "36", "--batch-size", "2", "--accum-steps", "1"]
    argv = ["train", "--dataset", "ucf101", "--data-root", str(w / "data"), *tiny, "--iterations", "1"]
    assert main([*argv, "--val-every", "0", "--workers", "0", "--no-progress", "--out", str(w / "run")]) == 0
    store = ["-o", str(w / "feats"), "--weights", str(w / "run"), "--num-clips", "1", "--workers", "0"]
    assert main(["extract", "ucf101", str(w / "data"), *store, "--no-progress"]) == 0
    b = w / "bad"
    (b / "folder").mkdir(parents=True)
    (b / "empty.txt").write_text("")
    (b / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (b / "garbage.pt").write_bytes(b"not a pickle" * 20)
    (b / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (b / "bad.yaml").write_text("optim: [1, 2\n")
    (b / "list.yaml").write_text("- 1\n- 2\n")
    (b / "lr.yaml").write_text("optim:\n  lr: abc\n")
    (b / "deep.prototxt").write_text("layer { " * 5000 + "}" * 5000)
    (b / "longint.prototxt").write_text('name: "x"\nlayer {\n  num_output: ' + "9" * 5000 + "\n}\n")
    (b / "open.prototxt").write_text('layer {\n  name: "a"\n')
    (b / "pairs.txt").write_text("a b maybe\n")
    (b / "split.txt").write_text("MoveLeft/v_MoveLeft_g01_c01 1 extra\n")
    return w


VIDEO = "data/UCF-101/MoveLeft/v_MoveLeft_g01_c01.mp4"
SPLIT = ["data/ucfTrainTestlist/trainlist01.txt", "data/ucfTrainTestlist/testlist01.txt"]
TRAIN = ["train", "--dataset", "ucf101", "--data-root", "data", "--model", "p3d63", "--width", "4", "--layers", "1",
         "1", "1", "1", "--clip-len", "8", "--size", "32", "32", "--resize", "36", "36", "--batch-size", "2",
         "--iterations", "1", "--workers", "0", "--no-progress", "--out", "runs/x"]  # fmt: skip

# (argv relative to the workspace, substrings the one error line must hold)
CASES: list[tuple[list[str], list[str]]] = [
    # numbers: zero, negative, huge, not finite
    (["test", "run", "--topk", "0"], ["--topk must be >= 1, got 0"]),
    (["test", "run", "--clips", "-3"], ["--clips must be >= 1, got -3"]),
    (["test", "run", "--max-videos", "0"], ["--max-videos"]),
    (["test", "run", "--workers", "-1"], ["--workers must be >= 0"]),
    (["test", "run", "--data-root", "data", "--split", "abc"], ["split must be 1, 2 or 3", "'abc'"]),
    (["test", "run", "--data-root", "data", "--split", "7"], ["testlist07.txt", "not found"]),
    (["test", "run", "--data-root", "data", "--subset", "validation"], ["subset must be 'train' or 'test'"]),
    (["test", "run", "--num-classes", "0"], ["0-way classifier"]),
    (["predict", "--weights", "run", VIDEO, "--topk", "0"], ["--topk must be >= 1"]),
    (["predict", "--weights", "run", VIDEO, "--batch-size", "-1"], ["--batch-size must be >= 1"]),
    (["predict", "--weights", "run", VIDEO, "--num-classes", "0"], ["no classifier"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--num-clips", "0"], ["--num-clips must be >= 1"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--flush-every", "-2"], ["--flush-every must be >= 1"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--clip-len", "3"], ["clip length T=3"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--size", "0"], ["--size must be >= 1"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--resize", "8", "8"], ["larger than --resize"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--layers", "prob", "--num-classes", "0"], ["no classifier"]),
    (
        ["extract", "data", "-o", "f1", "--weights", "run", "--layers", "logits", "--num-classes", "0"],
        ["no classifier"],
    ),
    (["extract", "data", "-o", "f1", "--weights", "run", "--layers", "res9"], ["unknown layer 'res9'"]),
    (["extract", "data", "-o", "f1", "--model", "p3d63", "--model-option", "width=abc"], ["width='abc'", "int"]),
    (["extract", "data", "-o", "f1", "--model", "p3d63", "--model-option", "width"], ["KEY=VALUE"]),
    (["extract", "data", "-o", "f1", "--weights", "run", "--model", "p3d199"], ["'p3d63', not 'p3d199'"]),
    (["svm", "feats", "--split", *SPLIT, "--C", "0"], ["--C must be a finite number > 0"]),
    (["svm", "feats", "--split", *SPLIT, "--C", "nan"], ["--C must be a finite number > 0, got nan"]),
    (["svm", "feats", "--split", *SPLIT, "--pca", "-4"], ["--pca must be >= 1"]),
    (["svm", "feats", "--split", *SPLIT, "--topk", "0"], ["--topk must be >= 1"]),
    (["svm", "feats", "--kfold", "1"], ["k-fold needs 2 <= k"]),
    (["svm", "feats", "--kfold", "100000"], ["k-fold needs 2 <= k"]),
    (["svm", "feats", "--kfold", "2", "--seed", "-1"], ["--seed must be >= 0"]),
    (["svm", "feats", "--split", *SPLIT, "--layer", "res9"], ["no layer 'res9'"]),
    (["similarity", "feats", "--pairs", "bad/pairs.txt"], ["bad/pairs.txt", "'same' must be"]),
    (["similarity", "feats", "--pairs", SPLIT[0], "--C", "-1"], ["--C must be a finite number > 0"]),
    (["embed", "feats", "-o", "t.png", "--max-videos", "-1"], ["--max-videos must be >= 1"]),
    (["embed", "feats", "-o", "t.png", "--perplexity", "0"], ["--perplexity must be a finite number > 0"]),
    (["embed", "feats", "-o", "t.txt"], ["t.txt", "PNG"]),
    (["pca-study", "feats", "--kfold", "2", "--dims", "0", "-o", "p.png"], ["--dims must be positive"]),
    (["summary", "p3d63", "--size", "0"], ["--size must be >= 1"]),
    (["summary", "p3d63", "--clip-len", "5"], ["clip length T=5"]),
    (["summary", "p3d63", "--num-classes", "-1"], ["--num-classes must be >= 0"]),
    (["summary", "p3d63", "--pattern", "X"], ["pattern"]),
    (["summary", "nonexistent-model"], ["unknown model 'nonexistent-model'"]),
    (["export", "run", "-o", "x.onnx", "--batch", "0"], ["--batch must be >= 1"]),
    (["export", "run", "-o", "x.pt", "--atol", "-1"], ["--atol must be >= 0"]),
    (["export", "run", "-o", "x.xyz"], ["cannot tell the format"]),
    (["export", "run", "-o", "x.onnx", "--opset", "99"], ["opset must be in 1..", "got 99"]),
    (["visualize", "--weights", "run", "--class", "0", "-o", "v.gif", "--blur", "nan", "1"], ["--blur must be"]),
    (["visualize", "--weights", "run", "--class", "7", "-o", "v.gif"], ["class index 7"]),
    (["visualize", "--weights", "run", "--class", "0", "-o", "v.gif", "--lr", "inf"], ["--lr must be a finite"]),
    (["visualize", "--weights", "run", "--class", "0", "-o", "v.txt"], ["v.txt", ".gif or .mp4"]),
    (["check-data", "data", "--workers", "0"], ["--workers must be >= 1"]),
    (["check-data", "data", "--min-frames", "-1"], ["--min-frames must be >= 0"]),
    (["prepare", "data", "p", "--crf", "99"], ["--crf must be in 0..51"]),
    (["prepare", "data", "p", "--gop", "0"], ["--gop must be >= 1"]),
    (["demo", "--out", "d", "--iterations", "0"], ["--iterations must be >= 1"]),
    (["demo", "--out", "d", "--videos-per-class", "-2"], ["--videos-per-class must be >= 1"]),
    (["demo", "--out", "d", "--classes", "9"], ["--classes must be in 2..8"]),
    ([*TRAIN, "--lr", "nan"], ["--lr", "lr=nan"]),
    ([*TRAIN, "--workers", "-2"], ["--workers:", "num_workers=-2"]),
    ([*TRAIN, "--set", "optim.iterations=ten"], ["optim.iterations", "'ten'"]),
    ([*TRAIN, "--set", "model.layers=5"], ["model.layers"]),
    # files: missing, empty, binary, a folder where a file is expected and the reverse, the wrong kind
    (["test", "missing-run"], ["missing-run", "no such file or run folder"]),
    (["test", "bad/folder"], ["bad/folder", "not a `p3d train` run"]),
    (["test", "bad/empty.txt"], ["bad/empty.txt", "empty"]),
    (["test", "bad/garbage.pt"], ["bad/garbage.pt"]),
    (["test", "bad/garbage.safetensors"], ["bad/garbage.safetensors", "safetensors"]),
    (["test", "run", "--out", "bad/empty.txt"], ["bad/empty.txt", "not a folder"]),
    (["test", "run", "--data-root", "missing-data"], ["missing-data", "classInd.txt"]),
    (["test", "run", "--data-root", "data", "--annotations", "bad/empty.txt"], ["bad/empty.txt"]),
    (["predict", "--weights", "run", "missing.mp4"], ["missing.mp4", "not found"]),
    (["predict", "--weights", "run", "bad/folder"], ["bad/folder", "is a folder"]),
    (["predict", "--weights", "run", VIDEO, "--classes", "bad/binary.bin"], ["bad/binary.bin", "not a text"]),
    (["predict", "--weights", "run", VIDEO, "--classes", "missing.txt"], ["missing.txt", "not found"]),
    (["predict", "--weights", "run", VIDEO, "--classes", "bad/folder"], ["bad/folder", "is a folder"]),
    (["predict", "--weights", "run", VIDEO, "--classes", "bad/empty.txt"], ["bad/empty.txt", "0 class names"]),
    (["predict", "--weights", "bad/garbage.safetensors", VIDEO], ["bad/garbage.safetensors"]),
    (["extract", "missing-root", "-o", "f1", "--weights", "run"], ["missing-root"]),
    (["extract", "bad/empty.txt", "-o", "f1", "--weights", "run"], ["bad/empty.txt", "empty video list"]),
    (["extract", "manifest", "bad/empty.txt", "-o", "f1", "--weights", "run"], ["bad/empty.txt", "no videos"]),
    (
        ["extract", "kinetics", "data", "--annotations", "bad/binary.bin", "-o", "f1", "--weights", "run"],
        ["bad/binary.bin"],
    ),  # fmt: skip
    (
        ["extract", "activitynet", "data", "--annotations", "bad/empty.txt", "-o", "f1", "--weights", "run"],
        ["bad/empty.txt", "ActivityNet JSON"],
    ),  # fmt: skip
    (["extract", "folder", "bad/folder", "-o", "f1", "--weights", "run"], ["bad/folder", "no videos"]),
    (
        ["extract", "kinetics", "data", "--annotations", "bad/folder", "-o", "f1", "--weights", "run"],
        ["bad/folder", "is a folder"],
    ),  # fmt: skip
    (["extract", "manifest", "bad/folder", "-o", "f1", "--weights", "run"], ["bad/folder", "is a folder"]),
    (["extract", "data", "-o", "bad/empty.txt", "--weights", "run"], ["bad/empty.txt", "directory"]),
    (["extract", "data", "-o", "f1", "--weights", "bad/folder"], ["bad/folder"]),
    (["svm", "missing-feats", "--kfold", "2"], ["missing-feats"]),
    (["svm", "bad/folder", "--kfold", "2"], ["bad/folder", "no feature parts"]),
    (["svm", "bad/empty.txt", "--kfold", "2"], ["bad/empty.txt"]),
    (["svm", "feats", "--split", "bad/binary.bin", SPLIT[1]], ["bad/binary.bin", "not a text split list"]),
    (["svm", "feats", "--split", "bad/folder", SPLIT[1]], ["bad/folder", "is a folder"]),
    (["svm", "feats", "--split", "bad/empty.txt", SPLIT[1]], ["bad/empty.txt", "empty split list"]),
    (["svm", "feats", "--split", "bad/split.txt", SPLIT[1]], ["bad/split.txt", "line 1"]),
    (["svm", "feats", "--split", "missing.txt", SPLIT[1]], ["missing.txt", "not found"]),
    (["svm", "feats", "--kfold", "2", "--classes", "bad/binary.bin"], ["bad/binary.bin", "class index"]),
    (["svm", "feats", "--kfold", "2", "--classes", "bad/empty.txt"], ["bad/empty.txt", "empty class index"]),
    (["svm", "feats", "--kfold", "2", "--labels", "bad/folder"], ["bad/folder", "label file"]),
    (["svm", "feats", "--split", *SPLIT, "--json", "bad/folder"], ["bad/folder"]),
    (["similarity", "feats", "--pairs", "missing.txt"], ["missing.txt", "pair list not found"]),
    (["similarity", "feats", "--pairs", "bad/empty.txt"], ["bad/empty.txt", "empty pair list"]),
    (["similarity", "feats", "--pairs", "bad/binary.bin"], ["bad/binary.bin", "not a text pair list"]),
    (["embed", "feats", "-o", "bad/folder"], ["bad/folder"]),
    (["merge-features", "bad/folder", "-o", "m.safetensors"], ["bad/folder", "no feature parts"]),
    (["merge-features", "feats", "-o", "bad/folder"], ["bad/folder"]),
    (["summary", "bad/garbage.pt"], ["bad/garbage.pt"]),
    (["summary", "bad/folder"], ["bad/folder"]),
    (["export", "p3d63", "-o", "bad/empty.txt/x.onnx"], ["bad/empty.txt"]),
    (["visualize", "--weights", "run", "--class", "0", "-o", "bad/empty.txt/v.gif"], ["bad/empty.txt"]),
    (["convert", "missing.caffemodel", "--prototxt", "bad/open.prototxt", "-o", "x.safetensors"], ["missing"]),
    (["convert", "bad/open.prototxt", "-o", "x.safetensors"], ["bad/open.prototxt", "holds no weights", "--prototxt"]),
    (
        ["convert", "bad/garbage.safetensors", "--from", "caffe", "--prototxt", "bad/deep.prototxt", "-o", "x.st"],
        ["bad/deep.prototxt", "nested deeper than 100"],
    ),  # fmt: skip
    (
        ["convert", "bad/garbage.safetensors", "--from", "caffe", "--prototxt", "bad/longint.prototxt", "-o", "x.st"],
        ["bad/longint.prototxt:3", "5000 digits"],
    ),  # fmt: skip
    (
        ["convert", "bad/garbage.safetensors", "--from", "caffe", "--prototxt", "bad/open.prototxt", "-o", "x.st"],
        ["bad/open.prototxt", "end of file"],
    ),  # fmt: skip
    (
        ["convert", "bad/garbage.safetensors", "--from", "caffe", "--prototxt", "bad/binary.bin", "-o", "x.st"],
        ["bad/binary.bin", "not a text file"],
    ),  # fmt: skip
    (
        ["convert", "bad/garbage.safetensors", "--from", "caffe", "--prototxt", "bad/folder", "-o", "x.st"],
        ["bad/folder", "is a folder"],
    ),  # fmt: skip
    (["convert", "bad/garbage.pt", "-o", "x.safetensors"], ["bad/garbage.pt"]),
    (["check-data", "missing-root"], ["missing-root"]),
    (["check-data", "data", "--json", "bad/folder"], ["bad/folder"]),
    (["prepare", "missing-root", "p"], ["missing-root", "not found"]),
    (["prepare", "data", "bad/empty.txt"], ["bad/empty.txt", "not a folder"]),
    (["demo", "--out", "bad/empty.txt"], ["bad/empty.txt", "not a folder"]),
    ([*TRAIN, "--config", "missing.yaml"], ["missing.yaml", "not found"]),
    ([*TRAIN, "--config", "bad/binary.bin"], ["bad/binary.bin", "not a text YAML config file"]),
    ([*TRAIN, "--config", "bad/folder"], ["bad/folder", "is a folder"]),
    ([*TRAIN, "--config", "bad/bad.yaml"], ["bad/bad.yaml", "not valid YAML"]),
    ([*TRAIN, "--config", "bad/list.yaml"], ["bad/list.yaml", "mapping"]),
    ([*TRAIN, "--config", "bad/lr.yaml"], ["bad/lr.yaml", "optim.lr", "'abc'"]),
    ([*TRAIN, "--pretrained", "bad/garbage.pt"], ["bad/garbage.pt"]),
    ([*TRAIN, "--imagenet-2d", "bad/binary.bin"], ["bad/binary.bin"]),
    ([*TRAIN, "--out", "bad/empty.txt"], ["bad/empty.txt", "not a folder"]),
    ([*TRAIN, "--resume", "bad/garbage.pt"], ["bad/garbage.pt"]),
]

# sizes whose memory cannot fit on any machine: refused before allocation, with the estimate and the limit
MEMORY_CASES: list[list[str]] = [
    ["test", "run", "--clips", "1000000000"],
    ["test", "run", "--clips", "3000000", "--batch-size", "3000000", "--max-videos", "1"],
    ["predict", "--weights", "run", VIDEO, "--clips", "200000000"],
    ["extract", "data", "-o", "f2", "--weights", "run", "--size", "40000", "--num-clips", "1"],
    ["extract", "data", "-o", "f2", "--weights", "run", "--num-clips", "300000000"],
    ["extract", "data", "-o", "f2", "--model", "p3d63", "--size", "9000"],
    ["summary", "p3d63", "--size", "100000"],
    ["summary", "p3d63", "--clip-len", "2000000"],
    ["export", "run", "-o", "x.pt", "--size", "60000"],
    ["export", "run", "-o", "x.pt", "--batch", "80000000"],
    ["visualize", "--weights", "run", "--class", "0", "-o", "v.gif", "--scale", "300000"],
    ["prepare", "data", "p", "--size", "100000x100000"],
    [*TRAIN, "--size", "60000", "60000", "--resize", "60000", "60000"],
    [*TRAIN, "--set", "data.size=[30000,30000]", "--set", "data.resize=[30000,30000]"],
    [*TRAIN, "--batch-size", "9", "--clip-len", "2048", "--size", "2000", "2000", "--resize", "2000", "2000"],
]


def _run(ws: Path, argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(ws)
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"p3d {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("argv,expect", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_bad_input_is_one_line(ws, argv, expect, capsys, monkeypatch):
    if "--opset" in argv:
        pytest.importorskip("onnx")
    rc, _, err = _run(ws, argv, capsys, monkeypatch)
    line = _one_error_line(err, argv[0])
    assert rc == 2, line
    for s in expect:
        assert s in line, line
    assert not (ws / "f1").exists()  # refused before anything was written


@pytest.mark.parametrize("argv", MEMORY_CASES, ids=[" ".join(a)[:70] for a in MEMORY_CASES])
def test_sizes_that_cannot_fit_are_refused_before_allocation(ws, argv, capsys, monkeypatch):
    rc, _, err = _run(ws, argv, capsys, monkeypatch)
    line = _one_error_line(err, argv[0])
    assert rc == 2 and "needs about" in line and "is available" in line, line
    assert not (ws / "f2").exists() and not (ws / "runs" / "x" / "checkpoints").exists()


def test_normal_sizes_are_not_refused(ws, capsys, monkeypatch):
    """The same commands at ordinary sizes run (the tiny model at 112 px, 20 clips, batch 32)."""
    rc, out, _ = _run(ws, ["test", "run", "--clips", "20", "--batch-size", "32", "--out", "t"], capsys, monkeypatch)
    assert rc == 0 and "video hit@1" in out
    argv = ["extract", "data", "-o", "f3", "--weights", "run", "--size", "112", "--num-clips", "2", "--no-progress"]
    rc, out, _ = _run(ws, argv, capsys, monkeypatch)
    assert rc == 0 and "9 video(s) written" in out


def test_unexpected_errors_are_one_line_with_a_hint():
    assert describe_error(KeyError("x")) == ("KeyError: 'x' (run with --debug for the traceback)", 1)
    hint = "(run with --debug for the traceback)"
    assert describe_error(RuntimeError("boom\n  detail")) == (f"RuntimeError: boom; detail {hint}", 1)
    assert describe_error(ValueError("bad:\n  a 1\n  b 2\nfix it")) == ("bad: a 1; b 2; fix it", 2)
    assert describe_error(IsADirectoryError(21, "Is a directory", "out")) == ("out: Is a directory", 2)
    assert describe_error(PermissionError(13, "Permission denied", "a", None, "b")) == ("a -> b: Permission denied", 2)
    alloc = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes"
    msg, rc = describe_error(RuntimeError(alloc))
    assert rc == 2 and msg.startswith("out of memory: could not allocate 2.0 GiB")
    assert describe_error(MemoryError())[0].startswith("out of memory")


def _subprocess(ws: Path, *argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "p3d", *argv], cwd=ws, env=e, capture_output=True, text=True)


def test_debug_shows_the_traceback(ws):
    """As a program: one line and exit status 2; --debug (before or after the command) or P3D_DEBUG=1 add the
    traceback; an argparse error stays argparse's (usage + one line, status 2)."""
    plain = _subprocess(ws, "summary", "bad/garbage.pt")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    for argv, env in (
        (["--debug", "summary", "bad/garbage.pt"], None),
        (["summary", "bad/garbage.pt", "--debug"], None),
        (["summary", "bad/garbage.pt"], {"P3D_DEBUG": "1"}),
    ):
        r = _subprocess(ws, *argv, env=env)
        assert r.returncode == 2 and "Traceback" in r.stderr and r.stderr.rstrip().endswith(plain.stderr.strip())
    usage = _subprocess(ws, "test", "run", "--clips", "many")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "invalid int value: 'many'" in usage.stderr

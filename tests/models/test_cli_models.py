import subprocess
import sys

from p3d.cli import main


def test_summary_command(capsys):
    assert main(["summary", "p3d199", "--num-classes", "487"]) == 0
    out = capsys.readouterr().out
    assert "66,670,503" in out and "layers        199" in out and "2 × MACs" in out


def test_list_models_command(capsys):
    assert main(["list-models", "p3d*"]) == 0
    out = capsys.readouterr().out
    assert "p3d199" in out and "16×160×160" in out and "c3d" not in out


def test_unknown_model_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "p3d", "summary", "p3d7"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "p3d summary: error: unknown model 'p3d7'" in r.stderr and "Traceback" not in r.stderr

from cvkit.cli import doctor
from cvkit.cli.main import main as cvkit


def test_doctor_reports_versions_and_passes_here(capsys):
    assert cvkit(["doctor", "--check"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "torchvision", "numba", "albumentations", "cuda available", "cpu bfloat16"):
        assert name in out
    assert "All good." in out


def test_doctor_explains_the_cpu_torch_with_cuda_torchvision_breakage(monkeypatch, capsys):
    real = doctor._version

    def broken(module):
        if module == "torchvision":
            return "NOT IMPORTABLE (RuntimeError: operator torchvision::nms does not exist)"
        return real(module)

    monkeypatch.setattr(doctor, "_version", broken)
    assert cvkit(["doctor", "--check"]) == 1
    out = capsys.readouterr().out
    assert "torchvision::nms" in out and "--isolated" in out and "torch==2.13.0 torchvision==0.28.0" in out


def test_unknown_command_suggests(capsys):
    assert cvkit(["doctr"]) == 2
    assert "did you mean 'doctor'" in capsys.readouterr().err.lower()


def test_help_lists_commands(capsys):
    assert cvkit(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "infer" in out and "doctor" in out

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from crashcast.cli import app

runner = CliRunner()


def test_import_crashcast_does_not_import_torch():
    code = "import sys, crashcast, crashcast.cli, crashcast.types, crashcast.data.windows; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_library_api_is_reachable_from_crashcast_without_torch_or_the_cli():
    code = ("import sys, crashcast; crashcast.api.extract, crashcast.evaluate, crashcast.predict_many; "
            "print(sorted(m for m in ('torch', 'typer', 'pandas', 'crashcast.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_everywhere():
    import typer.main

    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = sorted(typer.main.get_command(app).commands)  # every registered command, not a hand-kept list
    assert {"synth", "windows", "extract", "evaluate", "report", "predict", "demo"} <= set(commands)
    for cmd in commands:
        assert cmd in result.output, cmd
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and f"Usage: crashcast {cmd}" in r.output.replace("root ", "crashcast "), (cmd, r.output)
        assert (typer.main.get_command(app).commands[cmd].help or "").strip(), f"{cmd} has no help text"


def test_windows_on_real_annotations_lists_clamped_ccd_windows(real_dir, tmp_path):
    out = tmp_path / "w.csv"
    r = runner.invoke(app, ["windows", "--annotations", str(real_dir / "annotations.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "ccd_000007_max" in r.output and "0.00 / 1.55 / 3.10" in r.output
    assert "0.10 / 1.60 / 3.10" in r.output  # mid: E-3, E-1.5, E
    assert "1.60 / 2.35 / 3.10" in r.output  # mini: E-1.5, E-0.75, E
    assert "bus_dashcam_rollover" in r.output and "no time_of_event" in r.output  # reported, skipped
    import pandas as pd

    df = pd.read_csv(out)
    row = df[df.window_id == "ccd_000007_max"].iloc[0]
    assert bool(row.clamped) and row.start_s == 0.0


def test_windows_cli_reports_bad_annotation_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,target\n1,1\n")
    r = runner.invoke(app, ["windows", "--annotations", str(bad)])
    assert r.exit_code != 0
    assert "missing column" in str(r.exception) or "missing column" in r.output

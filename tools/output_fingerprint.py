"""Fingerprint what crashcast writes, to prove a refactor changed no output.

Runs the CLI end to end into a scratch folder: synthetic clips and the real clips of
../shared/data/real, extracted with the `classic` and `tiny` presets; `evaluate` with the physics,
tabular and tiny-VLM models; `predict` timelines with the physics model and a saved LightGBM folder.
Then writes one JSON manifest {relative path: sha256} of every window_meta.json, features.parquet,
predictions/*.csv, model.json and timeline file. Run it before and after a change and compare:

    python tools/output_fingerprint.py --out fp-before      # on the old commit
    python tools/output_fingerprint.py --out fp-after       # on the new one
    python tools/output_fingerprint.py --compare fp-before/manifest.json fp-after/manifest.json

Slow on purpose (a few minutes on 2 cores): it runs what users run. `--quick` keeps 3 real clips.
The `tiny` preset builds some of its random models from the global random state, so each CLI call
runs with Python's, numpy's and torch's generators seeded (same seed, same models); text files are
hashed with the output folder's path replaced by `<OUT>` (timeline.json names its input video).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real"
#: files whose bytes must not change (PNG overlays are covered by window_meta's content and are
#: listed too; config.yaml, metrics and errors carry timings or messages and are left out)
KEEP = ("window_meta.json", "features.parquet", ".csv", "timeline.json", "model.json", ".png")
TINY_VLM = ["vlm.base_model=random:tiny", "vlm.max_pixels=3136", "vlm.learning_rate=0.02",
            "vlm.gradient_accumulation=1", "vlm.epochs=1"]


SEEDED = ("import random, sys, numpy\n"
          "random.seed(0); numpy.random.seed(0)\n"
          "try:\n    import torch; torch.manual_seed(0)\nexcept ImportError:\n    pass\n"
          "from crashcast.cli import main\n"
          "main(sys.argv[1:])\n")


def cli(*args: str) -> None:
    cmd = [sys.executable, "-c", SEEDED, *args]
    print("+ crashcast", " ".join(args), flush=True)
    r = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    if r.returncode not in (0, 1):  # 1: some clip or video failed (recorded), which is an output too
        raise SystemExit(f"{' '.join(cmd)} exited with {r.returncode}")


def run_all(out: Path, real: Path, quick: bool) -> dict[str, str]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    syn = out / "synthetic"
    cli("synth", "--n", "8", "--out", str(syn), "--seed", "3")
    real_csv = real / "annotations.csv"
    if quick:
        rows = real_csv.read_text().splitlines()
        real_csv = out / "real_annotations.csv"
        real_csv.write_text("\n".join(rows[:4]) + "\n")
    for preset in ("classic", "tiny"):
        cli("extract", "--annotations", str(syn / "annotations.csv"), "--out", str(out / f"syn-{preset}"),
            "--backend", preset, "--horizons", "0,0.5")
    cli("extract", "--annotations", str(real_csv), "--videos", str(real), "--out", str(out / "real-classic"),
        "--backend", "classic")
    tiny_real = out / "real_tiny.csv"
    tiny_real.write_text("\n".join(real_csv.read_text().splitlines()[:3]) + "\n")
    cli("extract", "--annotations", str(tiny_real), "--videos", str(real), "--out", str(out / "real-tiny"),
        "--backend", "tiny")
    run = out / "syn-classic"
    cli("evaluate", str(run), "--models", "ttc,physics,lightgbm,xgboost,mlp")
    vlm_sets = [a for s in TINY_VLM for a in ("--set", s)]
    cli("evaluate", str(out / "syn-tiny"), "--models", "physics,vlm-zero-shot,vlm-baseline", *vlm_sets)
    videos = [*sorted(syn.glob("*.mp4"))[:2], real / "ccd_000007.mp4"]
    cli("predict", *map(str, videos), "--backend", "classic", "--out", str(out / "pred-physics"))
    cli("predict", *map(str, videos[:2]), "--backend", "classic", "--model", str(run / "models" / "lightgbm"),
        "--out", str(out / "pred-lightgbm"))
    cli("predict", str(videos[0]), "--backend", "tiny", "--out", str(out / "pred-tiny"))
    manifest = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name.endswith(KEEP) and "/report/" not in str(p):
            data = p.read_bytes()
            if p.suffix in (".json", ".csv"):
                data = data.replace(str(out).encode(), b"<OUT>")
            manifest[str(p.relative_to(out))] = hashlib.sha256(data).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest)} files fingerprinted: {out / 'manifest.json'}")
    return manifest


def compare(a: Path, b: Path) -> int:
    ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
    only_a, only_b = sorted(set(ma) - set(mb)), sorted(set(mb) - set(ma))
    changed = sorted(k for k in set(ma) & set(mb) if ma[k] != mb[k])
    for k in only_a:
        print("only before:", k)
    for k in only_b:
        print("only after: ", k)
    for k in changed:
        print("changed:    ", k)
    print(f"{len(ma)} before, {len(mb)} after: {len(changed)} changed, {len(only_a)} only before, {len(only_b)} only after")
    return 1 if (changed or only_a or only_b) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--real", type=Path, default=REAL)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compare", nargs=2, type=Path)
    args = ap.parse_args()
    if args.compare:
        raise SystemExit(compare(*args.compare))
    if args.out is None:
        ap.error("--out is required")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    run_all(args.out.resolve(), args.real.resolve(), args.quick)


if __name__ == "__main__":
    main()

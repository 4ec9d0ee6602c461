"""`crashcast reproduce paper`: the paper's Table III in one command (docs/PAPER_PROTOCOL.md).

From a downloaded dataset's root folder (`crashcast.data.layouts`: Nexar's Kaggle or Hugging Face
layout, DAD, CCD, DoTA) to Table III beside the paper's:
1. import the dataset (its clips; bad entries recorded in the run's errors.jsonl and skipped);
2. extract with the paper's perception (preset `paper`: every 30 fps frame, YOLOv8x + Grounding
   DINO, SAM2, Video Depth Anything, RAFT; `perception` picks another preset, e.g. `tiny`);
3. write the prompts (Fig. 3's table, template paper_fig3) for every split;
4. evaluate the zero-shot, baseline and enhanced VLMs (presets paper-<mode>, `vlm.*` overrides on
   top) under the paper's protocol: the number each model wrote, uncalibrated, threshold 0.5;
5. write reproduce/table_iii.md: the table beside the paper's, the zero-shot scores' range (the
   paper: "0.75-0.95 for everything"), the unreadable answers, and every command of the run.

It resumes: extraction skips the clips already extracted with the same config, and an adapter
already trained on the same windows with the same settings is used as it is (a killed run loses at
most the clip or the training it was in).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crashcast import api
from crashcast.errors import CrashcastError
from crashcast.evaluation.experiments import PAPER_CITATION, PAPER_THRESHOLD, paper_table_rows, protocol_text
from crashcast.runtime.layout import RunLayout, record_error
from crashcast.runtime.store import atomic_write_text

log = logging.getLogger(__name__)

PAPER_MODELS = ("vlm-zero-shot", "vlm-baseline", "vlm-enhanced")
FOLDER = "reproduce"  # inside the run: table_iii.md, commands.txt, import.json


@dataclass
class Reproduction:
    """What `reproduce_paper` did: the run folder, its Table III file, the results of `evaluate`
    (metrics.json's content), the dataset's layout and how many clips it gave, and the problems
    recorded (bad entries of the dataset, clips that failed extraction)."""

    run: Path
    table: Path
    results: dict
    layout: str
    clips: int
    problems: list[str]
    failed_clips: int


def _command(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def reproduce_paper(data: str | Path, out: str | Path, *, perception: str = "paper", overrides: Sequence[str] = (),
                    models: Sequence[str] = PAPER_MODELS, workers: int = 1, executor: str = "local",
                    address: str | None = None, progress: bool = True, argv: Sequence[str] | None = None) -> Reproduction:
    """Table III from the dataset at `data` into the run folder `out` (see the module docstring).
    `overrides`: `section.field=value`; the `vlm.*` ones change the three VLM presets (e.g.
    `vlm.base_model=random:tiny`), the others the run's config. `argv`: the command line to record
    (default: the equivalent `crashcast reproduce paper` line)."""
    from crashcast.data.domain import record_domains
    from crashcast.data.layouts import import_dataset
    from crashcast.errors import AnnotationError
    from crashcast.extract import extract_run

    out = api.writable_dir(out)
    folder = out / FOLDER
    folder.mkdir(exist_ok=True)
    vlm_overrides = [o for o in overrides if o.strip().startswith("vlm.")]
    run_overrides = [o for o in overrides if not o.strip().startswith("vlm.")]
    argv = list(argv) if argv is not None else [
        "crashcast", "reproduce", "paper", "--data", str(data), "--out", str(out), "--perception", perception,
        *(a for o in overrides for a in ("--set", o)), "--models", ",".join(models), "--workers", str(workers)]
    log_file = folder / "commands.txt"  # every session's steps, a resumed one after the killed one
    earlier = log_file.read_text(encoding="utf-8").splitlines() if log_file.is_file() else []
    commands = [*earlier, f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: {_command(argv)}"
                + ("   # resumes the run above" if earlier else "")]

    def step(text: str) -> None:
        commands.append(text)
        atomic_write_text(log_file, "\n".join(commands) + "\n")
        log.info("%s", text)

    errors: list[AnnotationError] = []
    imported = import_dataset(data, errors=errors)
    if not imported.clips:
        raise CrashcastError(f"{data}: the {imported.layout} layout gave no readable clip "
                             f"({len(errors)} bad entries; first: {errors[0] if errors else '-'})")
    positives = sum(c.target for c in imported.clips)
    if positives in (0, len(imported.clips)):  # checked now, not after hours of extraction
        which = "positive" if positives else "negative"
        raise CrashcastError(f"{data}: every clip the {imported.layout} layout gave is {which} ({len(imported.clips)} "
                             "clips); Table III needs both classes (DoTA has no negatives; CCD's come from "
                             "videos/Normal/)")
    step(f"import: {len(imported.clips)} clips of layout {imported.layout} from {imported.root} "
         f"({sum(c.target for c in imported.clips)} positive; {len(errors)} bad entries, recorded in errors.jsonl)")
    atomic_write_text(folder / "import.json", json.dumps({
        "layout": imported.layout, "root": str(imported.root), "clips": len(imported.clips),
        "positives": sum(c.target for c in imported.clips), "official_split": imported.split is not None,
        "problems": [str(e) for e in errors], "notes": list(imported.notes)}, indent=2))

    split = _official_split(imported)
    if split is not None:
        atomic_write_text(RunLayout(out).split, json.dumps({"source": f"{imported.layout}: the dataset's own split",
                                                            "clips": split}, indent=1))
        n_test = sum(v == "test" for v in split.values())
        step(f"split: the dataset's own ({len(split) - n_test} train, {n_test} test clips; run/split.json, "
             "evaluation.split=official)")
    else:
        step("split: by video at random, stratified, seeded (the dataset has no official split with both classes "
             "on each side; evaluation.split=random)")
    # the run's config: the perception preset, the paper's headline protocol and prompt template, the split
    cfg = api.load(perception, ["evaluation.protocol=paper", "vlm.prompt_template=paper_fig3",
                                f"evaluation.split={'official' if split else 'random'}", *run_overrides,
                                *vlm_overrides])  # the user's vlm.* (a template too) as the VLMs get them
    step(f"extract: preset {perception}" + (f" with {' '.join(run_overrides)}" if run_overrides else "")
         + f" (frame_step {cfg.perception.frame_step}, object depth {cfg.perception.object_depth}); "
         f"resumes: clips already extracted with this config are skipped")
    summary = extract_run(list(imported.clips), out, cfg, workers=workers, progress=progress, executor=executor,
                          address=address)
    record_domains(out, list(imported.clips))
    for e in errors:
        record_error(out, None, "import", str(e), type(e).__name__, file=str(getattr(e, "path", "") or ""),
                     row=getattr(e, "row", None))
    if summary.ok == 0:
        raise CrashcastError(f"{out}: no clip could be extracted ({summary.failed} failed; see {RunLayout(out).errors})")

    step(_command(["crashcast", "prompts", out]) + "   # Fig. 3's table (template paper_fig3), every split")
    api.prompts(out, config=cfg)

    eval_argv = ["crashcast", "evaluate", out, "--models", ",".join(models), "--protocol", "paper",
                 *(a for o in vlm_overrides for a in ("--set", o))]
    step(_command(eval_argv) + "   # VLM presets paper-zero-shot / paper-baseline / paper-enhanced; "
         "adapters already trained on these windows with these settings are reused")
    results = api.evaluate(out, list(models), "platt", config=cfg, overrides=vlm_overrides, protocol="paper")

    table = folder / "table_iii.md"
    atomic_write_text(table, table_iii_markdown(results, out, imported.layout, len(imported.clips), commands))
    step(f"wrote {table}")
    problems = [str(e) for e in errors]
    return Reproduction(out, table, results, imported.layout, len(imported.clips), problems, summary.failed)


def _official_split(imported) -> dict[str, str] | None:
    """The dataset's own train/test assignment of its clips when each side holds both classes (DAD's
    training/testing, CCD's and DoTA's lists, Kaggle's labelled test.csv); else None (a random split)."""
    if imported.split is None:
        return None
    split = {c.id: imported.split[c.id] for c in imported.clips if c.id in imported.split}
    labels = {part: {c.target for c in imported.clips if split.get(c.id) == part} for part in ("train", "test")}
    return split if labels["train"] == {0, 1} and labels["test"] == {0, 1} else None


def zero_shot_range(run: Path, model: str = "vlm-zero-shot") -> tuple[float, float, int] | None:
    """(lowest, highest, count) of the numbers the zero-shot model wrote (None: no predictions)."""
    import pandas as pd

    path = RunLayout(run).prediction(model)
    if not path.is_file():
        return None
    written = pd.to_numeric(pd.read_csv(path, keep_default_na=False).get("written", pd.Series(dtype=float)),
                            errors="coerce").dropna()
    if written.empty:
        return None
    return float(written.min()), float(written.max()), len(written)


def table_iii_markdown(results: dict, run: Path, layout: str, n_clips: int, commands: list[str]) -> str:
    """Table III of this run under the paper's protocol, the paper's rows beside it, and the commands."""
    models = results["models"]
    lines = [f"# Table III reproduced ({layout}: {n_clips} clips; scored: {protocol_text(results)}; the number each "
             f"model wrote, uncalibrated, threshold {PAPER_THRESHOLD})", "", *paper_table_rows(results)]
    lines += ["", f"All values in percent. Paper rows: {PAPER_CITATION}, on the paper's own data.", ""]
    rng = zero_shot_range(run) if "vlm-zero-shot" in models else None
    if rng is not None:
        lo, hi, n = rng
        lines += [f"Zero-shot: the numbers it wrote range {lo:.2f}-{hi:.2f} over {n} readable answers (the paper: "
                  "\"0.75-0.95 for everything\", not separating the classes).", ""]
    lines += ["crashcast's own protocol (calibrated expected-digit scores, AP, AUC, bootstrap intervals) is in "
              "metrics.md beside this one; docs/PAPER_PROTOCOL.md gives every choice where the paper is silent.", "",
              "## Commands", "", "```", *commands, "```", ""]
    return "\n".join(lines)

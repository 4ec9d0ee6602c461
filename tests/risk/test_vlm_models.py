"""The VLM risk models behind the common interface, end to end on a real (synthetic) run.

- Fast units: `WindowSet` (`subset` keeps order; its prompts are the builder's and `crashcast
  prompts`'s; a bare table, a missing or a damaged window_meta.json raise CrashcastError naming the
  problem), `check_request` (no fine-tuned VLM under folds), `vlm_config` (paper presets with
  `vlm.*` overrides, a contradicting mode refused) and `reason_of`.
- `crashcast evaluate RUN --models physics,lightgbm,vlm-baseline` on the tiny random VLM: metrics
  rows for all three on the same windows, the VLM's prediction columns (answer, written, parse_error,
  score_source) consistent with its rationale and with `parse_failures`, and a model folder that
  `load_model` reloads to the same raw and calibrated scores.
- The adapter is reused by a second evaluate with the same settings; with a changed training
  setting evaluate refuses to replace it (naming the difference) unless --retrain-vlm. `crashcast
  train vlm` writes a folder `load_model` reads and that a following evaluate (without vlm
  overrides) uses as it is.
- `predict` with the VLM folder: timeline with the VLM's columns and reasons derived from its
  answers; a physics timeline has none of them.

The tiny random model writes no sensible answers: only the plumbing is asserted, never quality.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.splits import train_val_test
from crashcast.errors import ConfigError, CrashcastError, ModelError
from crashcast.evaluation.experiments import check_request
from crashcast.extract import extract_run
from crashcast.features.window_meta import read_window_meta
from crashcast.prompts.builder import build_prompt
from crashcast.risk.vlm import training_record
from crashcast.risk.vlm_model import reason_of, vlm_config
from crashcast.risk.vlm_output import parse_probability
from crashcast.risk.windows import WindowSet

VLM_COLUMNS = ("answer", "written", "parse_error", "score_source")
TINY = ["vlm.base_model=random:tiny", "vlm.max_pixels=3136", "vlm.learning_rate=0.02", "vlm.gradient_accumulation=1"]
TEXT_COLUMNS = {c: str for c in ("window_id", "clip_id", "rationale", *VLM_COLUMNS)}
ADAPTER = "adapter_model.safetensors"


# --------------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------------


def _cli(argv) -> int:
    return cli_exit_code(argv)


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _vlm_deps() -> None:
    for module in ("torch", "transformers", "peft", "bitsandbytes"):
        pytest.importorskip(module)


def _go_offline(mp: pytest.MonkeyPatch, home: Path) -> None:
    """What tests/conftest.py's offline_caches does, for a module-scoped fixture."""

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_HOME", str(home / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "CRASHCAST_WEIGHTS_DIR", "XDG_CACHE_HOME"):
        mp.delenv(var, raising=False)
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    mp.setattr(socket, "getaddrinfo", no_network)


def _fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _read_predictions(path: Path) -> pd.DataFrame:
    """A predictions/timeline CSV with its text columns as written ('' for an empty cell)."""
    return pd.read_csv(path, dtype=TEXT_COLUMNS, keep_default_na=False)


def _expected_reason(answer: str, has_number: bool) -> str:
    """`reason_of` spelled out: the answer's Reason line; else 'no reason given' when a number was
    read; else what was wrong with the answer."""
    parsed = parse_probability(answer)
    if parsed.rationale:
        return parsed.rationale
    return "no reason given" if has_number else f"unreadable answer: {parsed.error}"


def _check_answer_columns(answer: str, written, parse_error: str, reason: str, source: str) -> None:
    """One window's VLM outputs agree with each other and with `parse_probability` of its answer."""
    parsed = parse_probability(answer)
    has_number = not (written == "" or written is None or (isinstance(written, float) and np.isnan(written)))
    assert has_number == (parsed.probability is not None), (answer, written)
    if has_number:
        assert float(written) == pytest.approx(parsed.probability)
    assert parse_error == (parsed.error or ""), answer
    assert reason == _expected_reason(answer, has_number)
    assert source in ("generated", "forced")


@pytest.fixture(scope="module")
def extracted(synth_small, tmp_path_factory) -> Path:
    """The eight synthetic clips extracted with the classic preset (24 windows); never modified."""
    run = tmp_path_factory.mktemp("vlm_models") / "extracted"
    summary = extract_run(read_csv(synth_small / "annotations.csv"), run, load_config("classic"), workers=2, progress=False)
    assert (summary.ok, summary.failed, summary.windows) == (8, 0, 24)
    return run


@pytest.fixture(scope="module")
def vlm_run(extracted, tiny_cache, tmp_path_factory):
    """A copy of the extracted run after `crashcast evaluate --models physics,lightgbm,vlm-baseline`
    on the tiny VLM (one epoch), offline. Tests that change a run work on their own copy."""
    _vlm_deps()
    home = tmp_path_factory.mktemp("vlm_models_home")
    run = home / "run"
    shutil.copytree(extracted, run)
    mp = pytest.MonkeyPatch()
    _go_offline(mp, home)
    try:
        rc = _cli(["evaluate", run, "--models", "physics,lightgbm,vlm-baseline", *_sets([*TINY, "vlm.epochs=1"])])
        assert rc == 0
        folder = run / "models" / "vlm-baseline"
        yield SimpleNamespace(run=run, folder=folder, adapter=_fingerprint(folder / ADAPTER))
    finally:
        mp.undo()


# --------------------------------------------------------------------------------------------------
# fast units
# --------------------------------------------------------------------------------------------------


def test_subset_keeps_order_and_its_prompts_are_the_builders(extracted):
    ws = WindowSet.from_run(extracted)
    assert len(ws) == 24
    ws.meta(2)  # read before subsetting: the subset keeps what was read
    rows = [17, 2, 9, 0]
    sub = ws.subset(rows)
    assert sub.ids == [ws.ids[r] for r in rows]
    assert sub.labels.tolist() == [int(ws.labels[r]) for r in rows]
    assert sub.soft_targets.tolist() == [float(ws.soft_targets[r]) for r in rows]
    for j, r in enumerate(rows):
        row = ws.table.iloc[r]
        folder = sub.window_dir(j)
        assert folder == ws.window_dir(r) and folder.parent == extracted / "clips" / str(row["clip_id"])
        meta = read_window_meta(folder / "window_meta.json")
        assert sub.meta(j) == meta and meta.window_id == row["window_id"]
        for rationale in (False, True):
            assert sub.prompt(j, 3, rationale) == build_prompt(meta, folder, 3, rationale=rationale)
        assert sub.prompt(j).images and all(p.is_file() for p in sub.prompt(j).images)
    assert sub.prompts(2) == [ws.prompt(r, 2) for r in rows]


def test_run_prompts_are_those_crashcast_prompts_and_train_vlm_use(extracted):
    """evaluate's VLM and `crashcast train vlm` see the same training prompts (so an adapter trained by
    one is reused by the other), and windows held in memory (predict) prompt as the run's do."""
    from crashcast.features.table import feature_columns
    from crashcast.prompts.dataset import split_prompts

    cfg = load_config(extracted / "config.yaml")
    ws = WindowSet.from_run(extracted)
    part = train_val_test(ws.table, cfg.evaluation.test_fraction, cfg.evaluation.val_fraction, cfg.evaluation.seed)
    splits, skipped = split_prompts(extracted, cfg, ("train", "val"))
    assert not skipped
    assert ws.subset(part.train).prompts(cfg.features.top_k) == splits["train"]
    assert ws.subset(part.val).prompts(cfg.features.top_k) == splits["val"]

    rows = [0, 5, 23]
    metas = [ws.meta(r) for r in rows]
    held = WindowSet.from_metas(metas, [ws.window_dir(r) for r in rows], cfg.features.top_k)
    assert held.ids == [ws.ids[r] for r in rows]
    assert held.prompts() == ws.subset(rows).prompts()
    cols = feature_columns()
    np.testing.assert_allclose(held.table[cols].to_numpy(float), ws.table.iloc[rows][cols].to_numpy(float),
                               rtol=1e-9, atol=1e-12)


def test_a_bare_table_has_no_prompts(extracted):
    ws = WindowSet.from_frame(pd.read_parquet(extracted / "features.parquet"))
    assert ws.window_dir(0) is None
    with pytest.raises(CrashcastError, match="window_meta"):
        ws.prompt(0)
    with pytest.raises(CrashcastError, match="window_meta"):
        ws.meta(3)


def test_missing_or_damaged_window_meta_is_named(extracted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(extracted, run)
    ws = WindowSet.from_run(run)
    gone = ws.window_dir(0) / "window_meta.json"
    gone.unlink()
    damaged = ws.window_dir(1) / "window_meta.json"
    damaged.write_text('{"window_id": ', encoding="utf-8")
    for i, path in ((0, gone), (1, damaged)):
        with pytest.raises(CrashcastError) as e:
            ws.meta(i)
        assert str(path) in str(e.value)
    with pytest.raises(CrashcastError, match=r"window_meta\.json"):
        ws.subset([2, 0]).prompts()
    assert ws.meta(2).window_id == ws.ids[2]  # the others still read


def test_no_fine_tuned_vlm_under_cross_validation():
    for name in ("vlm-baseline", "vlm-enhanced"):
        with pytest.raises(ModelError, match=name):
            check_request([name], "platt", folds=5)
        assert check_request([name, "physics"], "platt") == [name, "physics"]  # the split is fine
    assert check_request(["vlm-zero-shot", "physics"], "platt", 5) == ["vlm-zero-shot", "physics"]


def test_vlm_config_is_the_paper_preset_with_vlm_overrides():
    cfg = vlm_config("enhanced", ["vlm.base_model=random:tiny", "evaluation.seed=3"])
    assert cfg.mode == "enhanced" and cfg.base_model == "random:tiny"
    assert cfg.mse_weight == 5.0 and cfg.positive_weight == 3.0
    assert cfg.negative_fraction == pytest.approx(1 / 3)
    assert cfg.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.lora.dropout == pytest.approx(0.10) and cfg.scheduler == "cosine_with_restarts"
    assert cfg.quantization == "nf4"
    base = vlm_config("baseline")
    assert base.lora.target_modules == ["q_proj", "v_proj"] and base.mse_weight == 0.0 and base.negative_fraction == 1.0
    assert base.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    with pytest.raises(ConfigError, match=r"vlm\.mode"):
        vlm_config("baseline", ["vlm.mode=enhanced"])
    from crashcast.risk.models import create_model

    with pytest.raises(ConfigError):
        create_model("vlm-baseline", cfg.model_dump(mode="json"))  # enhanced settings for the baseline model


@pytest.mark.parametrize(("text", "reason"), [
    ("Collision Probability: 0.82\nReason: car A 4 m ahead", "car A 4 m ahead"),
    ("Collision Probability: 0.3", "no reason given"),
    ("Collision Probability: 1.000", "no reason given"),
    ("banana", "unreadable answer: no number in the answer 'banana'"),
    ("Collision Probability: 1.7", "unreadable answer: number"),
    ("Reason: the van brakes hard", "the van brakes hard"),
])
def test_reason_of_a_scored_answer(text, reason):
    from crashcast.risk.vlm import VlmAnswer

    parsed = parse_probability(text)
    scored = VlmAnswer("w", 0.5, parsed.probability, parsed.rationale, parsed.error, text, "generated")
    got = reason_of(scored)
    if reason.startswith("unreadable answer:"):
        assert got.startswith(reason) and got == f"unreadable answer: {parsed.error}"
    else:
        assert got == reason


# --------------------------------------------------------------------------------------------------
# evaluate, reload, reuse, train, predict (tiny VLM)
# --------------------------------------------------------------------------------------------------


def test_evaluate_writes_the_vlm_beside_the_tabular_models(vlm_run):
    run = vlm_run.run
    results = json.loads((run / "metrics.json").read_text())
    assert list(results["models"]) == ["physics", "lightgbm", "vlm-baseline"]
    n = results["protocol"]["scored_windows"]
    assert n > 0 and {r["window"]["n"] for r in results["models"].values()} == {n}
    md = (run / "metrics.md").read_text().splitlines()
    assert any(line.startswith("| vlm-baseline |") for line in md)

    physics = _read_predictions(run / "predictions" / "physics.csv")
    vlm = _read_predictions(run / "predictions" / "vlm-baseline.csv")
    assert vlm.window_id.tolist() == physics.window_id.tolist() and len(vlm) == n
    assert set(VLM_COLUMNS) <= set(vlm.columns) and not set(VLM_COLUMNS) & set(physics.columns)
    assert list(vlm.columns[: len(physics.columns)]) == list(physics.columns)
    raw = vlm.score_raw.to_numpy(float)
    assert np.isfinite(raw).all() and ((raw >= 0) & (raw <= 1)).all()
    for r in vlm.itertuples(index=False):
        _check_answer_columns(r.answer, r.written, r.parse_error, r.rationale, r.score_source)
    entry = results["models"]["vlm-baseline"]
    assert entry["parse_failures"] == int((vlm.parse_error != "").sum())
    assert "parse_failures" not in results["models"]["physics"]

    folder = vlm_run.folder
    for name in ("model.json", "adapter_config.json", ADAPTER):
        assert (folder / name).is_file(), name
    assert not (folder / "crashcast_model.json").exists()  # one card per model folder
    card = json.loads((folder / "model.json").read_text())
    assert card["kind"] == "vlm-baseline" and card["features"] == [] and card["adapter"] is True
    assert card["params"]["base_model"] == "random:tiny" and card["params"]["epochs"] == 1
    trained = training_record(folder)
    assert trained["config"] == card["params"]  # the adapter was trained with the settings model.json names

    # it was trained on the split's training windows and validated on its validation windows only
    from crashcast.risk.finetune import downsample, prompts_hash
    from crashcast.risk.vlm_model import vlm_config as settings_of

    cfg = load_config(run / "config.yaml")
    ws = WindowSet.from_run(run)
    part = train_val_test(ws.table, cfg.evaluation.test_fraction, cfg.evaluation.val_fraction, cfg.evaluation.seed)
    vlm_cfg = settings_of("baseline", [*TINY, "vlm.epochs=1"])
    assert vlm_cfg.prompt_template == "paper_fig3"  # the paper preset's: Fig. 3's table
    tpl = vlm_cfg.prompt_template
    train = downsample(ws.subset(part.train).prompts(cfg.features.top_k, template=tpl), vlm_cfg.negative_fraction,
                       vlm_cfg.seed)
    assert trained["data"]["train_hash"] == prompts_hash(train)
    assert trained["data"]["val_hash"] == prompts_hash(ws.subset(part.val).prompts(cfg.features.top_k, template=tpl))
    assert trained["data"]["n_val"] == len(part.val)
    assert not set(ws.table.clip_id.iloc[part.train]) & set(vlm.clip_id)


def test_paper_protocol_is_table_iii_from_the_written_numbers(vlm_run, offline_caches, tmp_path):
    """`evaluate --protocol paper`: Table III from the number each model wrote, uncalibrated, at 0.5,
    recomputed here with scikit-learn from predictions/*.csv; an unreadable answer counts as 0.0 and
    is counted; metrics.md leads with that table, the paper's rows beside it."""
    from sklearn.metrics import brier_score_loss, f1_score, mean_absolute_error, precision_score, recall_score

    run = tmp_path / "run"
    shutil.copytree(vlm_run.run, run)
    assert _cli(["evaluate", run, "--models", "physics,vlm-baseline", "--protocol", "paper",
                 *_sets([*TINY, "vlm.epochs=1"])]) == 0  # the adapter is reused (same settings)
    results = json.loads((run / "metrics.json").read_text())
    assert results["headline"] == "paper"
    for name, column in (("vlm-baseline", "written"), ("physics", "score_raw")):
        pred = _read_predictions(run / "predictions" / f"{name}.csv")
        written = pd.to_numeric(pred[column], errors="coerce").to_numpy(float)
        unreadable = int(np.isnan(written).sum())
        score = np.nan_to_num(written, nan=0.0)
        y, said = pred.label.to_numpy(int), (score >= 0.5).astype(int)
        paper = results["models"][name]["paper"]
        assert paper["threshold"] == 0.5 and paper["calibration"] == "none"
        m = paper["window"]
        assert m["n"] == len(pred)
        # nothing called positive: precision (and F1) read 0, as crashcast's metrics say
        assert m["precision"] == pytest.approx(precision_score(y, said, zero_division=0.0))
        assert m["recall"] == pytest.approx(recall_score(y, said))
        assert m["f1"] == pytest.approx(f1_score(y, said, zero_division=0.0))
        # predictions/*.csv round scores to 6 decimals
        assert m["mae"] == pytest.approx(mean_absolute_error(pred.soft_target.to_numpy(float), score), abs=1e-5)
        assert m["brier"] == pytest.approx(brier_score_loss(y, score), abs=1e-5)
        if name == "vlm-baseline":
            assert paper["parse_failures"] == unreadable == int((pred.parse_error.fillna("") != "").sum())
        else:
            assert paper["parse_failures"] == 0
    md = (run / "metrics.md").read_text()
    assert md.startswith("# Table III, the paper's protocol (")
    assert md.index("# Table III, the paper's protocol") < md.index("# Window-level results (")
    vlm_line = next(line for line in md.splitlines() if line.startswith("| vlm-baseline |"))
    assert vlm_line.endswith(f"| {results['models']['vlm-baseline']['paper']['parse_failures']} of "
                             f"{results['models']['vlm-baseline']['paper']['window']['n']} |")
    assert "| paper: Enhanced FT | 94.05 | 46.34 | 64.41 | 29.98 | 28.22 | 27.21 | n/a |" in md


def test_the_saved_folder_reloads_and_scores_the_same(vlm_run):
    from crashcast.risk.models import load_model
    from crashcast.risk.vlm_model import VlmBaseline

    pred = _read_predictions(vlm_run.run / "predictions" / "vlm-baseline.csv")
    ws = WindowSet.from_run(vlm_run.run)
    position = {w: i for i, w in enumerate(ws.ids)}
    test = ws.subset([position[w] for w in pred.window_id])
    model = load_model(vlm_run.folder)
    assert isinstance(model, VlmBaseline) and model.adapter == vlm_run.folder
    scores = model.score(test)
    np.testing.assert_allclose(scores.raw, pred.score_raw.to_numpy(float), rtol=1e-4, atol=1e-5)
    assert scores.rationale == pred.rationale.tolist()
    assert scores.columns["answer"] == pred.answer.tolist()
    np.testing.assert_allclose(model.predict(test), pred.score.to_numpy(float), rtol=0, atol=2e-6)
    assert _fingerprint(vlm_run.folder / ADAPTER) == vlm_run.adapter  # loading changes nothing


def test_a_second_evaluate_reuses_the_adapter_and_a_new_setting_retrains_only_when_asked(
        vlm_run, offline_caches, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(vlm_run.run, run)
    folder = run / "models" / "vlm-baseline"
    adapter, card = folder / ADAPTER, folder / "model.json"
    before, card_before = _fingerprint(adapter), card.read_bytes()
    first = _read_predictions(run / "predictions" / "vlm-baseline.csv")

    # the same settings: the adapter is used as it is, and scores the same
    assert _cli(["evaluate", run, "--models", "vlm-baseline", *_sets([*TINY, "vlm.epochs=1"])]) == 0
    assert _fingerprint(adapter) == before and card.read_bytes() == card_before
    again = _read_predictions(run / "predictions" / "vlm-baseline.csv")
    assert again.window_id.tolist() == first.window_id.tolist()
    assert np.array_equal(again.score_raw.to_numpy(float), first.score_raw.to_numpy(float))
    assert again.answer.tolist() == first.answer.tolist()

    # another training setting: refused, naming the difference, nothing replaced; and the models
    # evaluated before it (on another split here) leave no output behind either
    capsys.readouterr()
    outputs = {p: p.read_bytes() for p in [run / "metrics.json", *sorted((run / "predictions").iterdir()),
                                           *sorted((run / "models" / "physics").iterdir())]}
    refused = ["evaluate", run, "--models", "physics,vlm-baseline",
               *_sets([*TINY, "vlm.epochs=1", "vlm.lora.r=4", "evaluation.seed=5"])]
    assert _cli(refused) == 2
    err = capsys.readouterr().err
    assert "lora" in err and "--retrain-vlm" in err
    assert _fingerprint(adapter) == before and card.read_bytes() == card_before
    assert {p: p.read_bytes() for p in outputs} == outputs
    changed = ["evaluate", run, "--models", "vlm-baseline", *_sets([*TINY, "vlm.epochs=1", "vlm.lora.r=4"])]

    # ... and retrained with --retrain-vlm
    assert _cli([*changed, "--retrain-vlm"]) == 0
    after = _fingerprint(adapter)
    assert after[0] != before[0] or after[1] != before[1]
    assert json.loads(card.read_text())["params"]["lora"]["r"] == 4
    assert json.loads((folder / "model.json").read_text())["params"]["lora"]["r"] == 4


def test_evaluate_refuses_a_damaged_adapter_it_would_reuse(vlm_run, offline_caches, tmp_path, capsys):
    """(issue 23, item 7) an adapter in run/models/ cut short is named, before torch reads it ("header
    too large", or a size mismatch deep in peft, before), through the CLI and the API; it is not
    replaced and no run output changes."""
    from crashcast import api

    run = tmp_path / "run"
    shutil.copytree(vlm_run.run, run)
    adapter = run / "models" / "vlm-baseline" / ADAPTER
    adapter.write_bytes(adapter.read_bytes()[:-100])
    outputs = {p: p.read_bytes() for p in [run / "metrics.json", adapter, *sorted((run / "predictions").iterdir())]}
    capsys.readouterr()
    assert _cli(["evaluate", run, "--models", "vlm-baseline", *_sets([*TINY, "vlm.epochs=1"])]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and ADAPTER in errors[0] and "cut short" in errors[0], errors
    with pytest.raises(ModelError, match=rf"{ADAPTER}: the tensors end at byte \d+, but the file has"):
        api.evaluate(run, "vlm-baseline", overrides=[*TINY, "vlm.epochs=1"])
    assert {p: p.read_bytes() for p in outputs} == outputs


def test_train_vlm_writes_a_loadable_folder_that_evaluate_uses(extracted, tiny_cache, offline_caches, tmp_path):
    _vlm_deps()
    from crashcast.risk.models import load_model
    from crashcast.risk.vlm_model import VlmBaseline

    run = tmp_path / "run"
    shutil.copytree(extracted, run)
    argv = ["train", "vlm", "--run", run, "--config", "paper-baseline", "--device", "cpu", *_sets([*TINY, "vlm.epochs=1"])]
    assert _cli(argv) == 0
    folder = run / "models" / "vlm-baseline"
    card = json.loads((folder / "model.json").read_text())
    assert card["kind"] == "vlm-baseline" and card["features"] == [] and card["adapter"] is True
    assert card["extraction_hash"] == load_config(run / "config.yaml").extraction_hash()
    model = load_model(folder)
    assert isinstance(model, VlmBaseline) and model.adapter == folder
    assert model.config.base_model == "random:tiny" and model.config.epochs == 1 and model.calibration.method == "none"
    trained = training_record(folder)["config"]
    before = _fingerprint(folder / ADAPTER)

    # no vlm overrides: the settings the adapter was trained with, not the paper preset's (Qwen 3B)
    assert _cli(["evaluate", run, "--models", "vlm-baseline"]) == 0
    assert _fingerprint(folder / ADAPTER) == before  # used as it is
    after = json.loads((folder / "model.json").read_text())
    assert after["params"] == trained and after["protocol"] == "split"
    assert len(_read_predictions(run / "predictions" / "vlm-baseline.csv")) > 0


def test_predict_with_the_vlm_folder_gives_its_answers_as_reasons(vlm_run, synth_small, offline_caches, tmp_path):
    from crashcast.prediction import predict, write_outputs
    from crashcast.risk.models import load_model

    video = read_csv(synth_small / "annotations.csv")[0].video_path
    config = vlm_run.run / "config.yaml"
    # the model sees each window's three keyframe overlays, drawn into a scratch folder removed afterwards
    model = load_model(vlm_run.folder, runtime=load_config(config).runtime)
    seen: list[tuple] = []
    score = model.score

    def recording(windows):
        prompt = windows.prompt(0, model.top_k)
        seen.append((prompt.images, [p.is_file() for p in prompt.images], windows.meta(0).end_s))
        return score(windows)

    model.score = recording
    pred = predict(video, model=model, config=config, stride_s=2.0)
    assert pred.model == "vlm-baseline"
    assert len(seen) == len(pred.timeline)
    for images, exist, _ in seen:
        assert len(images) == 3 and all(exist) and all("crashcast-predict-" in str(p) for p in images)
    assert not any(p.exists() for images, _, _ in seen for p in images)  # the scratch folder is gone
    tl = pred.timeline
    assert len(tl) >= 3 and set(VLM_COLUMNS) <= set(tl.columns)
    for r in tl.itertuples(index=False):
        _check_answer_columns(r.answer, r.written, r.parse_error, r.reason, r.score_source)

    files = write_outputs(pred, tmp_path / video.stem)
    written = pd.read_csv(files["csv"], dtype={**TEXT_COLUMNS, "reason": str}, keep_default_na=False)
    assert list(written.columns) == [*tl.columns, "perception"]  # the file also names its perception (issue 24)
    assert written.reason.tolist() == tl.reason.tolist() and written.answer.tolist() == tl.answer.tolist()
    assert json.loads(files["json"].read_text())["model"] == "vlm-baseline"

    physics = predict(video, model="physics", config=config, stride_s=2.0)
    assert physics.model == "physics"
    assert not set(VLM_COLUMNS) & set(physics.timeline.columns)
    assert physics.timeline.time_s.tolist() == tl.time_s.tolist()


def test_an_adapter_with_an_unreadable_card_is_not_replaced_unasked(extracted, tmp_path):
    from crashcast.risk.models import create_model

    folder = tmp_path / "vlm-baseline"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "model.json").write_text("{ not json")
    ws = WindowSet.from_run(extracted)
    model = create_model("vlm-baseline", vlm_config("baseline", TINY).model_dump(mode="json"))
    with pytest.raises(ModelError, match=r"card cannot be read.*--retrain-vlm"):
        model.fit(ws.subset([0, 1]), ws.subset([2]), workdir=folder)
    assert (folder / "model.json").read_text() == "{ not json"

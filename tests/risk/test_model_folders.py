"""A saved model folder is checked whole when it is loaded (issue 23, item 7): model.json (kind,
feature names, calibrator), the booster's trees and feature count, the MLP's weight shapes, a LoRA
adapter's config and safetensors header. Each damaged folder fails `load_model`, `api.predict`,
`api.predict_many` and `crashcast predict --model` with one error naming the file and the problem,
before any video is decoded or perceived (a spy on the perception backends and the decoder) and
before the output folder is made. Good folders are made by training (and, for the VLM, by peft)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli_exit_code, level_frames, write_video
from tests.evaluation.conftest import toy_table

from crashcast import api
from crashcast.errors import CrashcastError, ModelError
from crashcast.features.table import feature_columns
from crashcast.risk.models import create_model, load_model

#: the feature table's columns a tabular model trains on by default
N_FEATURES = len(feature_columns())

TINY = ["vlm.base_model=random:tiny", "vlm.max_pixels=3136"]


class PerceptionRan(Exception):
    """Raised by the spies: perception or decoding began."""


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    """Model folders as `crashcast evaluate` writes them (trained on a toy table), one per kind."""
    root = tmp_path_factory.mktemp("good_models")
    table = toy_table(12)
    folders = {kind: create_model(kind).fit(table).save(root / kind) for kind in ("lightgbm", "xgboost", "mlp")}
    folders["ttc"] = create_model("ttc").save(root / "ttc")
    # a LightGBM of another shape: trained on the first five feature columns only
    from crashcast.risk.tabular import LightGBMModel

    folders["lightgbm-5"] = LightGBMModel(feature_columns()[:5]).fit(table).save(root / "lightgbm-5")
    return folders


@pytest.fixture(scope="module")
def good_vlm(tmp_path_factory, tiny_cache) -> Path:
    """A vlm-baseline folder: a LoRA adapter peft saved on the tiny random VLM, and its model.json."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from crashcast.risk.tiny_vlm import tiny_vlm_path
    from crashcast.risk.vlm_model import vlm_config

    cfg = vlm_config("baseline", TINY)
    folder = tmp_path_factory.mktemp("good_vlm") / "vlm-baseline"
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_vlm_path()))
    targets = rf".*language_model.*\.({'|'.join(cfg.lora.target_modules)})"
    peft_model = get_peft_model(base, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, target_modules=targets))
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    create_model("vlm-baseline", cfg.model_dump(mode="json"), adapter=folder).save(folder)
    return folder


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", level_frames(12), [i / 10 for i in range(12)])


@pytest.fixture
def spies(monkeypatch) -> list[str]:
    """What began of perception: the backends built, frames decoded (each raises PerceptionRan)."""
    import crashcast.prediction as prediction

    calls: list[str] = []

    def spy(name: str) -> Callable:
        def called(*args, **kwargs):
            calls.append(name)
            raise PerceptionRan(name)
        return called

    monkeypatch.setattr(prediction.Backends, "build", spy("Backends.build"))
    monkeypatch.setattr(prediction, "iter_resampled", spy("iter_resampled"))
    return calls


def _card(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_card(folder: Path, card: dict) -> None:
    (folder / "model.json").write_text(json.dumps(card))  # allow_nan: a NaN is written as NaN


def _edit_card(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        _write_card(folder, {**_card(folder), **changes})
    return edit


def _features(edit: Callable[[list[str]], list]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        card = _card(folder)
        _write_card(folder, {**card, "features": edit(card["features"])})
    return change


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    def cut(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
    return cut


def _replace(name: str, data: bytes) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / name).write_bytes(data)
    return write


def _booster_of(other: str) -> Callable[[Path, dict], None]:
    def copy(folder: Path, good: dict) -> None:
        shutil.copy(good[other] / "booster.txt", folder / "booster.txt")
    return copy


def _xgb_tree(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        doc = json.loads((folder / "booster.json").read_text())
        change(doc["learner"]["gradient_booster"]["model"]["trees"][0])
        (folder / "booster.json").write_text(json.dumps(doc))
    return edit


def _mlp(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        w = json.loads((folder / "weights.json").read_text())
        change(w)
        (folder / "weights.json").write_text(json.dumps(w))
    return edit


#: (id, good folder, damage, the file named, the problem said)
CASES = [
    ("wrong-kind", "lightgbm", _edit_card(kind="lightgbm2"), "model.json", "unknown model kind 'lightgbm2'"),
    ("kind-of-another-folder", "lightgbm", _edit_card(kind="xgboost"), "booster.json", "missing"),
    ("card-not-an-object", "ttc", _replace("model.json", b"[1, 2]"), "model.json", "JSON object, not list"),
    ("traversal-feature", "lightgbm", _features(lambda f: ["../../etc/passwd", *f[1:]]), "model.json",
     "'../../etc/passwd' is not a feature-table column"),
    ("feature-not-a-string", "ttc", _features(lambda f: [7, *f[1:]]), "model.json", "names are strings"),
    ("feature-twice", "xgboost", _features(lambda f: [f[1], *f[1:]]), "model.json", "named more than once"),
    ("one-feature-fewer", "lightgbm", _features(lambda f: f[:-1]), "booster.txt",
     f"a model of {N_FEATURES} features, but its model.json names {N_FEATURES - 1}"),
    ("one-feature-fewer-xgb", "xgboost", _features(lambda f: f[:-1]), "booster.json",
     f"a model of {N_FEATURES} features, but its model.json names {N_FEATURES - 1}"),
    ("nan-calibrator", "lightgbm", _edit_card(calibration={"method": "platt", "a": float("nan"), "b": 0.0, "x": [], "y": []}),
     "model.json", "calibration.a: nan is not a finite number"),
    ("inf-isotonic", "mlp", _edit_card(calibration={"method": "isotonic", "x": [0.1, float("inf")], "y": [0.2, 0.9]}),
     "model.json", "calibration.x[1]: inf is not a finite number"),
    ("isotonic-ragged", "ttc", _edit_card(calibration={"method": "isotonic", "x": [0.1, 0.5], "y": [0.2]}),
     "model.json", "x and y of one length"),
    ("unknown-calibration", "ttc", _edit_card(calibration={"method": "magic"}), "model.json", "calibration.method"),
    ("booster-of-another-shape", "lightgbm", _booster_of("lightgbm-5"), "booster.txt",
     f"a model of 5 features, but its model.json names {N_FEATURES}"),
    ("cut-booster", "lightgbm", _cut("booster.txt", 0.5), "booster.txt", "cut short"),
    ("junk-booster", "lightgbm", _replace("booster.txt", b"\x00\xff junk"), "booster.txt", "not UTF-8"),
    ("xgb-cycle", "xgboost", _xgb_tree(lambda t: t["left_children"].__setitem__(0, 0)), "booster.json",
     "node 0 has child node 0; not a tree"),
    ("xgb-feature-out-of-range", "xgboost", _xgb_tree(lambda t: t["split_indices"].__setitem__(0, 4000)),
     "booster.json", "split_indices[0]: 4000"),
    ("mlp-matmul-mismatch", "mlp", _mlp(lambda w: w["coefs"].__setitem__(1, w["coefs"][1][:-1])), "weights.json",
     "layer 1: coefs"),
    ("mlp-nan", "mlp", _mlp(lambda w: w["mean"].__setitem__(0, float("nan"))), "weights.json", "mean: not a vector"),
]


def _damaged(good: dict, tmp_path: Path, base: str, damage: Callable) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(good[base], folder)
    damage(folder, good) if damage.__code__.co_argcount == 2 else damage(folder)
    return folder


def _refused_everywhere(folder: Path, file: str, problem: str, video: Path, tmp_path: Path, spies: list[str],
                        capsys, loads: bool = False) -> None:
    """load_model (unless it `loads`: a problem of the folder with the config), api.predict,
    api.predict_many and `crashcast predict` each refuse `folder` with one error naming `file` and
    `problem`; nothing was perceived and no output folder was made."""
    where = str(folder / file)
    calls = [lambda: api.predict(video, folder, "classic"),
             lambda: api.predict_many([video], folder, "classic", tmp_path / "api-out")]
    for call in calls if loads else [lambda: load_model(folder), *calls]:
        with pytest.raises(CrashcastError) as e:
            call()
        assert where in str(e.value) and problem in str(e.value), str(e.value)
    assert cli_exit_code(["predict", video, "--model", folder, "--backend", "classic", "--out", tmp_path / "cli-out"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and problem in errors[0] and file in errors[0], errors
    assert spies == []
    assert not (tmp_path / "api-out").exists() and not (tmp_path / "cli-out").exists()


@pytest.mark.parametrize("base,damage,file,problem", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_model_folder_is_refused_before_any_video_is_read(base, damage, file, problem, good, video, tmp_path,
                                                                    spies, capsys):
    folder = _damaged(good, tmp_path, base, damage)
    _refused_everywhere(folder, file, problem, video, tmp_path, spies, capsys)


def test_the_good_folders_load_and_reach_perception(good, video, tmp_path, spies):
    """The control: the folders the damaged ones are made from load, score as before, and predict gets
    as far as perception (where the spy stops it)."""
    table = toy_table(12)
    for kind in ("lightgbm", "xgboost", "mlp", "ttc"):
        model = load_model(good[kind])
        assert model.kind == kind
        np.testing.assert_array_equal(model.raw_scores(table), create_model(kind).fit(table).raw_scores(table))
    with pytest.raises(PerceptionRan):
        api.predict(video, good["lightgbm"], "classic")
    assert len(spies) == 1
    with pytest.raises(PerceptionRan):
        list(api.predict_many([video], good["xgboost"], "classic", tmp_path / "out"))
    assert spies[1:] == ["Backends.build"]


def test_a_lightgbm_booster_keeps_its_trees_and_leaves_its_parameters(good):
    """What LightGBM is given is the header and the checked trees: the same scores and contributions."""
    import lightgbm as lgb

    from crashcast.risk.booster_files import lightgbm_model

    text = (good["lightgbm"] / "booster.txt").read_text()
    n, checked = lightgbm_model(text)
    assert n == N_FEATURES and "parameters:" in text and "parameters:" not in checked
    x = toy_table(4)[feature_columns()].to_numpy(float)
    original, kept = lgb.Booster(model_str=text), lgb.Booster(model_str=checked)
    np.testing.assert_array_equal(original.predict(x), kept.predict(x))
    np.testing.assert_array_equal(original.predict(x, pred_contrib=True), kept.predict(x, pred_contrib=True))


def test_a_model_reading_objects_the_config_does_not_compute_is_refused(good, video, tmp_path, spies, capsys):
    """A model trained with features.top_k=4 reads obj4_* columns; predicting with top_k 3 would fail
    after perception ("not in index")."""
    from crashcast.risk.tabular import LightGBMModel

    cols = feature_columns(4)
    table = toy_table(12).assign(**{c: 0.0 for c in cols if c.startswith("obj4_")})
    folder = LightGBMModel(cols).fit(table).save(tmp_path / "top4")
    assert load_model(folder).features == cols
    _refused_everywhere(folder, "model.json", "features.top_k=3 does not compute", video, tmp_path, spies, capsys,
                        loads=True)


# --------------------------------------------------------------------------------------------------
# the VLM's adapter
# --------------------------------------------------------------------------------------------------


def _safetensors(folder: Path) -> Path:
    return folder / "adapter_model.safetensors"


def _header_edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = _safetensors(folder).read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        change(header)
        raw = json.dumps(header).encode()
        _safetensors(folder).write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    return edit


def _first_tensor(key: str, value) -> Callable[[dict], None]:
    def change(header: dict) -> None:
        name = next(k for k in header if k != "__metadata__")
        header[name][key] = value
    return change


def _adapter_config(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return edit


VLM_CASES = [
    ("junk-adapter", _replace("adapter_model.safetensors", b"not a safetensors file " * 40), "adapter_model.safetensors",
     "header length"),
    ("empty-adapter", _replace("adapter_model.safetensors", b""), "adapter_model.safetensors", "too short"),
    ("cut-adapter", _cut("adapter_model.safetensors", 0.9), "adapter_model.safetensors", "cut short"),
    ("header-not-json", lambda f: _safetensors(f).write_bytes((8).to_bytes(8, "little") + b"{nojson}"),
     "adapter_model.safetensors", "header is not JSON"),
    ("int-dtype", _header_edit(_first_tensor("dtype", "I64")), "adapter_model.safetensors", "dtype 'I64'"),
    ("shape-and-bytes-disagree", _header_edit(_first_tensor("shape", [9, 128])), "adapter_model.safetensors",
     "bytes for shape [9, 128]"),
    ("overlapping-tensors", _header_edit(_first_tensor("data_offsets", [4096, 8192])), "adapter_model.safetensors",
     "overlap"),
    ("other-rank", _adapter_config(r=4), "adapter_config.json", "r=4, but model.json's settings"),
    ("not-lora", _adapter_config(peft_type="PROMPT_TUNING"), "adapter_config.json", "peft_type 'PROMPT_TUNING'"),
    ("megatron-import", _adapter_config(megatron_config={"x": 1}, megatron_core="os"), "adapter_config.json",
     "megatron_config"),
    ("config-not-json", _replace("adapter_config.json", b"{"), "adapter_config.json", "not JSON"),
    ("no-config", lambda f: (f / "adapter_config.json").unlink(), "adapter_config.json", "missing"),
    ("no-adapter-flag", _edit_card(adapter=False), "model.json", "vlm-baseline is fine-tuned"),
    ("vlm-with-features", _edit_card(features=["scene_ttc_s"]), "model.json", "reads prompts, not feature columns"),
    ("odd-top-k", _edit_card(prompt_top_k="3; rm -rf"), "model.json", "prompt_top_k"),
]


@pytest.mark.parametrize("damage,file,problem", [c[1:] for c in VLM_CASES], ids=[c[0] for c in VLM_CASES])
def test_a_damaged_adapter_is_refused_before_torch_or_any_video(damage, file, problem, good_vlm, video, tmp_path,
                                                                spies, capsys):
    folder = tmp_path / "vlm-baseline"
    shutil.copytree(good_vlm, folder)
    damage(folder)
    _refused_everywhere(folder, file, problem, video, tmp_path, spies, capsys)


def test_the_adapter_check_takes_what_peft_writes_and_guards_load_vlm(good_vlm, tmp_path, offline_caches):
    """The control: peft's own folder passes and loads; `load_vlm` (train, evaluate's reuse, load_trained)
    checks a cut adapter before torch reads it."""
    from crashcast.risk.vlm import load_vlm
    from crashcast.risk.vlm_model import vlm_config

    model = load_model(good_vlm)
    assert model.kind == "vlm-baseline" and model.adapter == good_vlm
    assert load_vlm(vlm_config("baseline", TINY), adapter=good_vlm, device="cpu") is not None
    cut = tmp_path / "cut"
    shutil.copytree(good_vlm, cut)
    _cut("adapter_model.safetensors", 0.5)(cut)
    with pytest.raises(ModelError, match=r"cut/adapter_model\.safetensors: the tensors end at byte \d+, but the file"):
        load_vlm(vlm_config("baseline", TINY), adapter=cut, device="cpu")

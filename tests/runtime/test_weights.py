"""Weights: resolving from a weights folder, finding files on disk (weights folder, a Hugging Face cache
laid out as huggingface_hub lays it out, ultralytics' and torch's folders), the per-preset readiness
check behind `--backend auto`, and `download` offline saying what to fetch and where to put it.

The backends here are registered by this file under names no real backend uses; their factories are
never called (readiness never builds a model). No test touches the network: HF_HUB_OFFLINE=1 and every
socket connection or name lookup raises.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from crashcast import readiness as R
from crashcast.config import BackendConfig, load_config
from crashcast.errors import ConfigError
from crashcast.perception import registry
from crashcast.runtime import packages as P
from crashcast.runtime import weights as W
from crashcast.runtime.context import weights_dir_for
from crashcast.runtime.weights import WeightFile, candidates, is_random, resolve

HUB_ID = "cc-wtest-org/tiny-detector"
HUB_FILES = ("config.json", "model.safetensors")
YOLO_FILE = "cc-wtest-yolo.pt"


class HubDetCfg(BackendConfig):
    name: str = "cc-wtest-hub"
    weights: str = HUB_ID


class UltraSegCfg(BackendConfig):
    name: str = "cc-wtest-ultra"
    weights: str = YOLO_FILE


class NoPkgCfg(BackendConfig):
    name: str = "cc-wtest-nopkg"


def _hub_weights(cfg: HubDetCfg) -> list[WeightFile]:
    if is_random(cfg.weights):
        return []
    return [WeightFile(cfg.weights, "huggingface", "Apache-2.0", size_mb=2.0, files=HUB_FILES)]


def _ultra_weights(cfg: UltraSegCfg) -> list[WeightFile]:
    return [WeightFile(cfg.weights, "ultralytics", "AGPL-3.0", size_mb=131.0,
                       url=f"https://github.com/ultralytics/assets/releases/download/v8.4.0/{cfg.weights}")]


def _never_built(cfg, ctx):
    raise AssertionError("readiness checks never build a backend")


def _register(stage: str, name: str, cfg_cls, **kw) -> None:
    if name not in registry.available(stage):
        registry.register(stage, name, cfg_cls, **kw)(_never_built)


_register("detector", "cc-wtest-hub", HubDetCfg, requires=("json",), weights=_hub_weights)
_register("segmenter", "cc-wtest-ultra", UltraSegCfg, requires=(), weights=_ultra_weights)
_register("detector", "cc-wtest-nopkg", NoPkgCfg, requires=("crashcast_test_no_such_module",))


@pytest.fixture(autouse=True)
def isolated(offline_caches, monkeypatch):
    """Offline, with every cache inside tmp_path (conftest), run from an empty folder."""
    cwd = offline_caches / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    P.torchvision_problem.cache_clear()
    return offline_caches


def preset(tmp_path: Path, name: str, **stages: object) -> Path:
    """A config YAML using the given stage backends (the other stages keep the classic defaults)."""
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "perception": stages}))
    return path


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "0123abcd" * 5) -> Path:
    """The layout huggingface_hub writes: blobs named by hash, snapshot files linking to them, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)  # no newline, as huggingface_hub writes it
    return snap


# ----------------------------------------------------------------------------- resolve


def test_resolve_from_a_weights_folder(tmp_path):
    d = tmp_path / "weights"
    (d / "cc-org" / "model").mkdir(parents=True)
    (d / "yolov8x.pt").write_bytes(b"x")
    (d / "other--model").mkdir()
    assert resolve("yolov8x.pt", d) == str(d / "yolov8x.pt")
    assert resolve("cc-org/model", d) == str(d / "cc-org" / "model")
    assert resolve("other/model", d) == str(d / "other--model")  # the flat spelling is accepted too
    assert candidates("a/b", d) == [d / "a/b", d / "a--b", d / "b"]
    with pytest.raises(ConfigError, match=r"not in the weights folder .*crashcast weights list"):
        resolve("facebook/sam2.1-hiera-large", d)
    assert resolve("facebook/sam2.1-hiera-large") == "facebook/sam2.1-hiera-large"  # no folder: the library's
    absolute = tmp_path / "elsewhere.pt"
    absolute.write_bytes(b"x")
    assert resolve(str(absolute), d) == str(absolute)  # an existing path is used as is


def test_weights_dir_precedence(tmp_path, monkeypatch):
    cfg = load_config("classic", [f"runtime.weights_dir={tmp_path / 'from-config'}"])
    monkeypatch.setenv("CRASHCAST_WEIGHTS_DIR", str(tmp_path / "from-env"))
    assert weights_dir_for(cfg.runtime, tmp_path / "flag") == tmp_path / "flag"
    assert weights_dir_for(cfg.runtime) == tmp_path / "from-config"
    assert weights_dir_for(load_config("classic").runtime) == tmp_path / "from-env"
    monkeypatch.delenv("CRASHCAST_WEIGHTS_DIR")
    assert weights_dir_for(load_config("classic").runtime) is None


# ----------------------------------------------------------------------------- locate


def test_locate_in_a_weights_folder_needs_every_listed_file(tmp_path):
    d = tmp_path / "weights"
    wf = WeightFile(HUB_ID, "huggingface", "Apache-2.0", files=HUB_FILES)
    folder = d / HUB_ID
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert W.locate(wf, d) is None  # half a download is not present
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    assert W.locate(wf, d) == folder
    assert W.size_on_disk_mb(folder) == pytest.approx((1000 + 2) / 1e6)
    # with a weights folder set, a copy in the Hugging Face cache does not count (resolve would not use it)
    other = WeightFile("cc-wtest-org/only-in-cache", "huggingface", "MIT", files=("config.json",))
    fake_hf_cache(W.hf_cache_dir(), other.name, {"config.json": b"{}"})
    assert W.locate(other, None) is not None and W.locate(other, d) is None


def test_locate_in_a_hugging_face_cache(isolated):
    cache = W.hf_cache_dir()
    assert cache == isolated / "hf" / "hub"  # read from HF_HOME now, not at import
    wf = WeightFile(HUB_ID, "huggingface", "Apache-2.0", files=HUB_FILES)
    assert W.locate(wf) is None
    data = {"config.json": b'{"a": 1}', "model.safetensors": b"\1" * 5000}
    snap = fake_hf_cache(cache, HUB_ID, data)
    assert W.locate(wf) == snap
    assert W.size_on_disk_mb(snap) == pytest.approx(sum(map(len, data.values())) / 1e6)
    # huggingface_hub's own scan sees the same repository and size
    from huggingface_hub import scan_cache_dir

    info = {r.repo_id: r for r in scan_cache_dir(cache).repos}
    assert info[HUB_ID].size_on_disk == sum(map(len, data.values()))
    # a file the backend needs but the snapshot lacks: not present
    assert W.locate(WeightFile(HUB_ID, "huggingface", "Apache-2.0", files=(*HUB_FILES, "extra.bin"))) is None
    # a whole snapshot (no files listed) is present once refs/main points at a non-empty snapshot
    assert W.locate(WeightFile(HUB_ID, "huggingface", "Apache-2.0")) == snap


def test_locate_ultralytics_and_url_files(isolated):
    ul = WeightFile(YOLO_FILE, "ultralytics", "AGPL-3.0")
    assert W.locate(ul) is None
    settings = isolated / "yolo-config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"weights_dir": "%s"}' % (isolated / "ul-weights"))
    assert W.ultralytics_weights_dir() == isolated / "ul-weights"
    assert W.target(ul) == isolated / "ul-weights" / YOLO_FILE
    (isolated / "ul-weights").mkdir()
    (isolated / "ul-weights" / YOLO_FILE).write_bytes(b"y" * 10)
    assert W.locate(ul) == isolated / "ul-weights" / YOLO_FILE
    (isolated / "ul-weights" / YOLO_FILE).unlink()
    (isolated / "cwd" / YOLO_FILE).write_bytes(b"y")  # a file of that name in the working directory is not it
    assert W.locate(ul) is None and W.weights_path(YOLO_FILE) == str(isolated / "ul-weights" / YOLO_FILE)
    assert W.resolve(YOLO_FILE) == YOLO_FILE  # a name, for the backend to place (`weights_path`), not the cwd file
    assert W.resolve("./" + YOLO_FILE) == "./" + YOLO_FILE  # said as a path: used as one

    url = WeightFile("raft_small.pth", "url", "BSD-3-Clause", url="https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth")
    assert W.target(url) == isolated / "torch" / "hub" / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth"
    assert W.locate(url) is None
    W.target(url).parent.mkdir(parents=True)
    W.target(url).write_bytes(b"r")
    assert W.locate(url) == W.target(url)


def test_clip_is_located_where_ultralytics_reads_it(isolated):
    """YOLO-World's CLIP checkpoint: `<ultralytics weights_dir>/clip/` without a weights folder (where
    ultralytics' text model loads and downloads it), `<weights folder>/ViT-B-32.pt` with one (where the
    YOLO backend loads it from); torch's hub cache, where a plain `url` file goes, never counts."""
    from crashcast.perception.models.yolo import CLIP_WEIGHTS as clip

    assert clip.source == W.ULTRALYTICS_CLIP and clip.name == "ViT-B-32.pt"
    # no ultralytics settings yet: its default folder, `weights/` in the working directory
    assert W.target(clip) == isolated / "cwd" / "weights" / "clip" / "ViT-B-32.pt"
    settings = isolated / "yolo-config" / "Ultralytics" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"weights_dir": "%s"}' % (isolated / "ul-weights"))
    where = isolated / "ul-weights" / "clip" / "ViT-B-32.pt"
    assert W.target(clip) == where and W.locate(clip) is None
    hub = W.torch_hub_checkpoints() / "ViT-B-32.pt"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"c")
    (isolated / "ul-weights").mkdir()
    (isolated / "ul-weights" / "ViT-B-32.pt").write_bytes(b"c")  # not in clip/: ultralytics does not read it
    assert W.locate(clip) is None
    where.parent.mkdir()
    where.write_bytes(b"c")
    assert W.locate(clip) == where

    d = isolated / "weights"
    assert W.target(clip, d) == d / "ViT-B-32.pt"
    assert W.locate(clip, d) is None  # with a weights folder only the folder counts
    d.mkdir()
    (d / "ViT-B-32.pt").write_bytes(b"c")
    assert W.locate(clip, d) == d / "ViT-B-32.pt"
    assert resolve(clip.name, d) == str(d / "ViT-B-32.pt")  # what the backend loads: the same file

    # a preset naming a YOLO-World vocabulary lists it, missing from an empty weights folder
    cfg = load_config("classic", ["perception.detector.name=yolo", "perception.detector.weights=yolov8s-worldv2.pt",
                                  "perception.detector.text_classes=[car, bus]"])
    (yolo_st, clip_st) = R.weight_status(cfg, isolated / "empty")
    assert yolo_st.file.name == "yolov8s-worldv2.pt" and clip_st.file == clip and not clip_st.present
    assert clip_st.target == isolated / "empty" / "ViT-B-32.pt"
    with pytest.raises(W.WeightsUnavailable) as e:
        W.download([clip], isolated / "empty")
    assert f"put it at {isolated / 'empty' / 'ViT-B-32.pt'}" in str(e.value) and clip.url in str(e.value)


def test_clip_download_checks_the_sha256_its_url_names(tmp_path):
    """The `clip` package checks a file's SHA-256 against its URL (and re-downloads on a mismatch);
    `download` checks it too. file:// URLs: no network."""
    data = b"not really CLIP, but bytes with a known digest"
    sha = hashlib.sha256(data).hexdigest()
    src = tmp_path / "server" / sha / "ViT-B-32.pt"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    good = WeightFile("ViT-B-32.pt", W.ULTRALYTICS_CLIP, "MIT", url=src.as_uri())
    d = tmp_path / "weights"
    assert W.download([good], d, offline_only=False) == [d / "ViT-B-32.pt"]
    assert (d / "ViT-B-32.pt").read_bytes() == data

    wrong = tmp_path / "server" / ("0" * 64) / "ViT-B-32.pt"
    wrong.parent.mkdir()
    wrong.write_bytes(data)
    bad = WeightFile("ViT-B-32.pt", W.ULTRALYTICS_CLIP, "MIT", url=wrong.as_uri())
    with pytest.raises(W.WeightsUnavailable, match="SHA-256"):
        W.download([bad], tmp_path / "other", offline_only=False)
    assert not any((tmp_path / "other").iterdir())  # no partial file left


# ----------------------------------------------------------------------------- readiness


def test_required_lists_each_stage_weights_and_random_needs_none(tmp_path):
    cfg = load_config(preset(tmp_path, "both", detector={"name": "cc-wtest-hub"}, segmenter={"name": "cc-wtest-ultra"}))
    needed = R.required(cfg)
    assert [(s, b, wf.name) for s, b, wf in needed] == [("detector", "cc-wtest-hub", HUB_ID),
                                                         ("segmenter", "cc-wtest-ultra", YOLO_FILE)]
    cfg = load_config(preset(tmp_path, "rand", detector={"name": "cc-wtest-hub", "weights": "random:tiny"}))
    assert R.required(cfg) == []
    assert R.required(load_config("classic")) == []


def test_preset_status_packages_and_weights(tmp_path):
    d = tmp_path / "weights"
    nopkg = R.preset_status(preset(tmp_path, "nopkg", detector="cc-wtest-nopkg"), d)
    assert not nopkg.ready and nopkg.missing_packages == ["crashcast_test_no_such_module"]
    assert "crashcast_test_no_such_module" in nopkg.why() and "pip install" in nopkg.hint()

    hub = preset(tmp_path, "hub", detector="cc-wtest-hub")
    st = R.preset_status(hub, d)
    assert not st.ready and not st.missing_packages and [w.file.name for w in st.missing_weights] == [HUB_ID]
    assert HUB_ID in st.why() and str(d) in st.why() and "crashcast weights download" in st.hint()
    assert st.weights[0].target == d / HUB_ID
    (d / HUB_ID).mkdir(parents=True)
    for f in HUB_FILES:
        (d / HUB_ID / f).write_text("x")
    st = R.preset_status(hub, d)
    assert st.ready and st.why() == "" and st.hint() is None and st.weights[0].path == d / HUB_ID

    rand = R.preset_status(preset(tmp_path, "rand", detector={"name": "cc-wtest-hub", "weights": "random:tiny"}))
    assert rand.ready and rand.weights == []
    bad = R.preset_status(tmp_path / "no-such.yaml")
    assert not bad.ready and "no such config file" in bad.why()


def test_preset_status_reports_a_torchvision_that_does_not_import(tmp_path, monkeypatch):
    path = preset(tmp_path, "tv", detector={"name": "cc-wtest-hub", "weights": "random:tiny"})
    monkeypatch.setattr(P, "TORCHVISION_USERS", frozenset({"json"}))  # pretend the backend's package uses torchvision
    monkeypatch.setattr(P, "torchvision_problem", lambda: "RuntimeError: operator torchvision::nms does not exist")
    st = R.preset_status(path)
    assert not st.ready and "torchvision::nms" in st.why() and "torchvision" in st.hint()
    assert R.preset_status(path, check_imports=False).ready


def test_choose_backend_takes_the_best_ready_preset_and_never_downloads(tmp_path):
    d = tmp_path / "weights"
    nopkg = preset(tmp_path, "nopkg", detector="cc-wtest-nopkg")
    hub = preset(tmp_path, "hub", detector="cc-wtest-hub")
    name, reason, hint = R.choose_backend(["cc-wtest-no-such-preset", nopkg, hub, "classic"], d)
    assert name == "classic"
    assert f"{nopkg} is not ready" in reason and "crashcast_test_no_such_module" in reason
    assert f"{hub} is not ready" in reason and HUB_ID in reason
    assert hint.startswith(f"to use {nopkg}") and "pip install" in hint
    assert not d.exists()  # nothing was fetched or created

    (d / HUB_ID).mkdir(parents=True)
    for f in HUB_FILES:
        (d / HUB_ID / f).write_text("x")
    name, reason, hint = R.choose_backend([nopkg, hub, "classic"], d)
    assert name == str(hub) and f"{nopkg} is not ready" in reason
    name, reason, hint = R.choose_backend([hub, "classic"], d)
    assert name == str(hub) and hint is None and "on disk" in reason
    assert R.choose_backend()[0] in ("paper", "fast", "classic")  # the real presets: classic always runs
    with pytest.raises(ConfigError, match="none of the presets"):
        R.choose_backend(["cc-wtest-no-such-preset"])
    with pytest.raises(ConfigError, match="no preset can run here"):
        R.choose_backend([nopkg])


def test_choose_backend_applies_the_overrides_to_every_candidate(tmp_path):
    """`--set` overrides reach the readiness check: a weights folder or other weights given with --set."""
    d = tmp_path / "weights"
    (d / HUB_ID).mkdir(parents=True)
    for f in HUB_FILES:
        (d / HUB_ID / f).write_text("x")
    hub = preset(tmp_path, "hub", detector="cc-wtest-hub")
    assert R.choose_backend([hub, "classic"])[0] == "classic"  # the Hugging Face cache is empty
    name, reason, hint = R.choose_backend([hub, "classic"], overrides=[f"runtime.weights_dir={d}"])
    assert name == str(hub) and hint is None and "on disk" in reason
    name, _, _ = R.choose_backend([hub, "classic"], overrides=["perception.detector.weights=random:tiny"])
    assert name == str(hub)  # random weights need no file
    # an override a candidate cannot take makes it not ready (the run would fail on it)
    with pytest.raises(ConfigError, match=r"--set perception.detector.no_such_field=1: fits none of the presets"):
        R.choose_backend([hub, "classic"], overrides=["perception.detector.no_such_field=1"])


def test_torchvision_is_checked_only_for_presets_that_could_run(tmp_path, monkeypatch):
    """The `import torchvision` check spawns a Python process: skipped for a preset whose weights are
    missing anyway; its answer is cached, and once known it is reported for every preset."""
    from functools import lru_cache

    calls = []

    @lru_cache(maxsize=1)
    def problem() -> str:
        calls.append(1)
        return "RuntimeError: operator torchvision::nms does not exist"

    monkeypatch.setattr(P, "TORCHVISION_USERS", frozenset({"json"}))  # the test backend "uses" torchvision
    monkeypatch.setattr(P, "torchvision_problem", problem)
    d = tmp_path / "weights"
    hub = preset(tmp_path, "hub", detector="cc-wtest-hub")
    name, reason, _ = R.choose_backend([hub, "classic"], d)
    assert name == "classic" and HUB_ID in reason and "torchvision::nms" not in reason
    assert calls == []  # the weights are missing: no subprocess
    (d / HUB_ID).mkdir(parents=True)
    for f in HUB_FILES:
        (d / HUB_ID / f).write_text("x")
    name, reason, _ = R.choose_backend([hub, "classic"], d)
    assert name == "classic" and "torchvision::nms" in reason and calls == [1]
    R.choose_backend([hub, "classic"], d)
    assert calls == [1]  # cached
    st = R.preset_status(hub, tmp_path / "empty")  # weights missing, but the answer is known: reported
    assert "torchvision::nms" in st.why() and HUB_ID in st.why() and calls == [1]


# ----------------------------------------------------------------------------- download


def test_download_offline_says_what_to_fetch_and_where(tmp_path):
    d = tmp_path / "weights"
    hub = WeightFile(HUB_ID, "huggingface", "Apache-2.0", size_mb=2.0, files=HUB_FILES)
    ul = _ultra_weights(UltraSegCfg())[0]
    with pytest.raises(W.WeightsUnavailable) as e:
        W.download([hub, ul, hub], d)  # listed twice: reported once
    msg = str(e.value)
    assert "offline" in msg and msg.count(HUB_ID + " (") == 1
    assert f"https://huggingface.co/{HUB_ID}" in msg and "Apache-2.0" in msg and "2 MB" in msg
    assert f"hf download {HUB_ID} config.json model.safetensors --local-dir {d / HUB_ID}" in msg
    assert ul.url in msg and "AGPL-3.0" in msg and "131 MB" in msg and f"put it at {d / YOLO_FILE}" in msg
    assert f"--weights-dir {d}" in msg
    assert [f.name for f in e.value.files] == [HUB_ID, YOLO_FILE]
    assert not d.exists()

    # files already there are returned, only the others are reported
    (d / HUB_ID).mkdir(parents=True)
    for f in HUB_FILES:
        (d / HUB_ID / f).write_text("x")
    assert W.download([hub], d) == [d / HUB_ID]
    with pytest.raises(W.WeightsUnavailable) as e:
        W.download([hub, ul], d)
    assert [f.name for f in e.value.files] == [YOLO_FILE]
    # without a weights folder the message suggests one
    with pytest.raises(W.WeightsUnavailable, match=r"crashcast-weights"):
        W.download([ul])


def test_download_with_a_failing_network_gives_the_same_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("CRASHCAST_OFFLINE")
    url = WeightFile("cc-wtest.pth", "url", "BSD-3-Clause", size_mb=5.0, url="https://example.invalid/cc-wtest.pth")
    with pytest.raises(W.WeightsUnavailable) as e:
        W.download([url], tmp_path / "weights")
    msg = str(e.value)
    assert "network disabled in tests" in msg and url.url in msg and str(tmp_path / "weights" / "cc-wtest.pth") in msg
    assert not (tmp_path / "weights" / "cc-wtest.pth").exists()


def test_weights_module_stays_torch_free():
    code = ("import sys, crashcast.runtime.weights, crashcast.readiness as r, crashcast.doctor; "
            "r.preset_status('classic'); r.preset_status('paper-baseline'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_glob_patterns_count_as_present_when_a_file_matches(isolated, tmp_path):
    """Backends may list `allow_patterns` globs (SAM2: `*.json`); a glob is present when a file matches."""
    wf = WeightFile("cc-wtest-org/globbed", "huggingface", "Apache-2.0", size_mb=1.0, files=("*.json", "model.safetensors"))
    d = tmp_path / "weights"
    (d / wf.name).mkdir(parents=True)
    (d / wf.name / "model.safetensors").write_bytes(b"m")
    assert W.locate(wf, d) is None  # no .json yet
    (d / wf.name / "config.json").write_text("{}")
    assert W.locate(wf, d) == d / wf.name

    assert W.locate(wf) is None
    snap = fake_hf_cache(W.hf_cache_dir(), wf.name, {"model.safetensors": b"m"})
    assert W.locate(wf) is None
    (snap / "preprocessor_config.json").write_text("{}")
    assert W.locate(wf) == snap

    with pytest.raises(W.WeightsUnavailable) as e:
        W.download([wf], tmp_path / "elsewhere")
    assert (f'hf download {wf.name} --include "*.json" --include "model.safetensors" '
            f"--local-dir {tmp_path / 'elsewhere' / wf.name}") in str(e.value)


def test_vlm_weights_belong_to_the_vlm_presets_only():
    """`crashcast weights` lists Qwen2.5-VL for the presets with a vlm section (with its non-Apache
    licence), never for the perception presets, whose readiness (`--backend auto`) it must not touch."""
    from crashcast.config import load_config

    assert R.defines_vlm("paper-enhanced") and not R.defines_vlm("paper") and not R.defines_vlm("classic")
    qwen = [s for s in R.weight_status(load_config("paper-enhanced"), vlm=True) if s.stage == "vlm"]
    assert [s.file.name for s in qwen] == ["Qwen/Qwen2.5-VL-3B-Instruct"] and not qwen[0].present
    assert "Qwen-Research" in qwen[0].file.licence and qwen[0].file.size_mb > 7000
    assert not [s for s in R.weight_status(load_config("classic"), vlm=False) if s.stage == "vlm"]
    tiny = load_config("paper-enhanced", ["vlm.base_model=random:tiny"])
    assert not [s for s in R.weight_status(tiny, vlm=True) if s.stage == "vlm"]
    assert R.preset_status("classic").ready  # the VLM's missing weights do not block perception presets

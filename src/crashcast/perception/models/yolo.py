"""YOLO detection through ultralytics: YOLOv8x (the paper's detector), any ultralytics checkpoint, and
YOLO-World with a text vocabulary.

One `predict` call per batch: B frames in, B `Detections` out, boxes in the input frame's pixels
(ultralytics letterboxes and maps boxes back). ultralytics reads numpy images as OpenCV BGR, and
crashcast frames are RGB, so the channels are flipped before the call. Labels become crashcast's
coarse classes through `labels.coarse_class`; by default only the checkpoint's classes that map onto
road users are kept, filtered inside YOLO's own NMS. Each result goes through supervision's
`Detections.from_ultralytics`, so a segmentation checkpoint (yolo11n-seg.pt) also gives each box its
mask, (n, H, W) at the frame's size.

`weights: random:<arch>` builds an architecture with random weights and COCO names, offline:
`random:tiny` (the YOLOv8n layout at half its width: 1.2 M parameters, for tests), `random:tiny-world`
(the same for YOLOv8-World v2), or any ultralytics model YAML stem (`random:yolov8x`,
`random:yolo11n`, `random:yolov8s-worldv2`: full size, for speed benchmarks). ultralytics' own
initialisation leaves an untrained network whose activations fade layer by layer, so every image
gives the same boxes; here the BatchNorm statistics are then set from one pass over fixed noise, so
the random model's output depends on its input (the class-score prior of the head is kept: most
scores stay small, as for a trained model on an empty scene).

YOLO-World (`text_classes`, e.g. the authors' [car, vehicle, truck, bus]) encodes the words with
CLIP ViT-B/32 once, at build time: that needs the `clip` package (ultralytics' fork) and its
checkpoint `ViT-B-32.pt`. With a weights folder set (`runtime.weights_dir`, `--weights-dir`,
$CRASHCAST_WEIGHTS_DIR) the checkpoint is loaded from `<folder>/ViT-B-32.pt`, like every other
model, and a folder without it is a ConfigError: nothing is downloaded. ultralytics' own text model
always loads `ViT-B/32` by name from `<ultralytics weights_dir>/clip/` (downloading it there when it
is missing), so the file is handed to it the way ultralytics supports: a `CLIP` text model built
from the checkpoint's path (`clip.load` takes a path in place of a model name and then never
downloads), set as the world model's `clip_model` and used through
`WorldModel.set_classes(..., cache_clip_model=True)`. Without a weights folder ultralytics loads
(or downloads) it from its own folder. A random world model gets random text embeddings instead (its
image weights are random too), which needs neither.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from crashcast.errors import ConfigError
from crashcast.perception.base import FrameContext
from crashcast.perception.models._common import check_rgb_frames
from crashcast.perception.models.labels import ROAD_USERS, coarse_class
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.checkpoints import TRUST_ENV, UntrustedCheckpoint, is_trusted, refusal, verify_known
from crashcast.runtime.weights import (
    RANDOM_PREFIX,
    ULTRALYTICS_CLIP,
    WeightFile,
    is_path,
    is_random,
    weights_path,
)
from crashcast.settings import BackendConfig
from crashcast.types import Detections

log = logging.getLogger(__name__)

SOURCE = "yolo"
#: ultralytics downloads its checkpoints from this release of github.com/ultralytics/assets (8.4.x)
ASSETS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/"
#: known checkpoints: name -> approximate size in MB (AGPL-3.0, from ultralytics' asset releases).
#: yolov8x.pt is the paper's detector; yolov8n.pt / yolo11n.pt are the small ones for the `fast` preset;
#: the -worldv2 ones are YOLO-World (open vocabulary, `text_classes`).
CHECKPOINTS_MB: dict[str, float] = {
    "yolov8x.pt": 131.0,
    "yolov8l.pt": 83.7,
    "yolov8m.pt": 49.7,
    "yolov8s.pt": 21.5,
    "yolov8n.pt": 6.2,
    "yolo11x.pt": 109.3,
    "yolo11n.pt": 5.4,
    "yolov8x-worldv2.pt": 146.0,
    "yolov8l-worldv2.pt": 94.0,
    "yolov8m-worldv2.pt": 57.0,
    "yolov8s-worldv2.pt": 25.6,
}
#: CLIP ViT-B/32, which ultralytics' YOLO-World uses to encode `text_classes` (MIT licence); the URL is
#: the `clip` package's own (its folder name is the file's SHA-256); ultralytics reads it from
#: `<weights_dir>/clip/ViT-B-32.pt`
CLIP_WEIGHTS = WeightFile(
    "ViT-B-32.pt",
    ULTRALYTICS_CLIP,
    "MIT",
    338.0,
    "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
)
#: `random:` architectures that are not an ultralytics YAML as such: (YAML, [depth, width, max channels])
TINY_ARCHS: dict[str, tuple[str, list[float]]] = {
    "tiny": ("yolov8n.yaml", [0.33, 0.125, 1024]),
    "tiny-world": ("yolov8n-worldv2.yaml", [0.33, 0.125, 1024]),
}
RANDOM_SEED = 0


class YoloConfig(BackendConfig):
    """The YOLO detector's settings (ultralytics `predict` arguments, plus the class filter)."""

    name: str = "yolo"
    weights: str = Field(
        "yolov8x.pt",
        description="an ultralytics checkpoint name (yolov8x.pt, yolo11n.pt, "
        "yolov8x-worldv2.pt), a .pt path, or random:<arch> (random:tiny, random:yolov8x)",
    )
    conf: float = Field(0.25, ge=0, le=1, description="confidence threshold (ultralytics' default)")
    iou: float = Field(0.7, gt=0, le=1, description="IoU threshold of YOLO's own NMS (ultralytics' default)")
    imgsz: int = Field(640, ge=32, le=8192, description="inference size of the long side (a multiple of 32)")
    max_det: int = Field(300, ge=1, le=10_000, description="most boxes per frame")
    classes: Literal["road_users", "all"] | list[str] = Field(
        "road_users",
        description="which of the checkpoint's classes to keep: road_users (those labels.py maps onto "
        "vehicle/person/cyclist), all (the others become 'object'), or a list of the checkpoint's "
        "class names",
    )
    text_classes: list[str] | None = Field(
        None, description="YOLO-World vocabulary (a -world checkpoint), e.g. [car, vehicle, truck, bus]"
    )

    @field_validator("imgsz")
    @classmethod
    def _stride(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"imgsz must be a multiple of 32 (YOLO's largest stride), got {v}")
        return v

    @field_validator("classes", "text_classes")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not [c for c in v if str(c).strip()]:
            raise ValueError("give at least one class name")
        return v


class YoloDetector:
    """`Detector` running an ultralytics YOLO model on batches of RGB frames."""

    name = "yolo"

    def __init__(self, cfg: YoloConfig, ctx: BuildContext) -> None:
        import torch

        self.cfg = cfg
        self.device = ctx.device
        self.precision = _precision(ctx.dtype == torch.float16 and not self.device.startswith("cpu"))
        self.model = _load(cfg, ctx)
        names = _names(self.model)
        self.class_ids = _class_filter(names, cfg.classes, cfg.weights)
        self.coarse = {i: coarse_class(n) for i, n in names.items()}

    def detect(
        self, frames: Sequence[np.ndarray], contexts: Sequence[FrameContext] | None = None
    ) -> list[Detections]:
        """Boxes per frame (one ultralytics call for the whole batch)."""
        if len(frames) == 0:
            return []
        check_rgb_frames(frames, self.name)
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]  # ultralytics expects OpenCV BGR
        results = self.model.predict(
            bgr,
            conf=self.cfg.conf,
            iou=self.cfg.iou,
            imgsz=self.cfg.imgsz,
            max_det=self.cfg.max_det,
            classes=self.class_ids,
            device=self.device,
            verbose=False,
            **self.precision,
        )
        return [self._detections(r, f.shape) for r, f in zip(results, frames, strict=True)]

    def _detections(self, result: Any, shape: tuple[int, ...]) -> Detections:
        """One frame's result through `supervision.Detections.from_ultralytics`: boxes clipped to the
        frame, coarse classes, and a segmentation checkpoint's masks at the frame's size."""
        import supervision as sv
        import torch

        if result.masks is not None and result.masks.data.dtype == torch.float16:
            result = result.to(dtype=torch.float32)  # supervision resizes masks with OpenCV, which has no float16
        det = sv.Detections.from_ultralytics(result)
        h, w = shape[:2]
        xyxy = det.xyxy.astype(np.float32).reshape(-1, 4)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        names = np.array([self.coarse.get(int(c), "object") for c in det.class_id], dtype=object)
        conf = det.confidence if det.confidence is not None else np.ones(len(det), np.float32)
        mask = det.mask
        if mask is None and len(det) == 0 and self.model.task == "segment":  # no box: still a (0, H, W) mask
            mask = np.zeros((0, h, w), bool)
        return Detections(
            xyxy,
            conf.astype(np.float32).clip(0, 1),
            names,
            mask=mask,
            source=np.full(len(det), SOURCE, dtype=object),
        )


def _precision(half: bool) -> dict[str, Any]:
    """ultralytics' half-precision argument: `quantize=16` from 8.4 on, `half=True` before."""
    if not half:
        return {}
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


def _names(model: Any) -> dict[int, str]:
    names = model.model.names
    return (
        dict(enumerate(names))
        if isinstance(names, (list, tuple))
        else {int(k): str(v) for k, v in names.items()}
    )


def _class_filter(names: dict[int, str], classes: str | list[str], weights: str) -> list[int] | None:
    """The class ids YOLO keeps (None: all of them)."""
    if classes == "all":
        return None
    if classes == "road_users":
        ids = [i for i, n in names.items() if coarse_class(n) in ROAD_USERS]
        if not ids:
            raise ConfigError(
                f"perception.detector.classes: none of {weights}'s classes ({', '.join(names.values())}) "
                f"is a road user ({', '.join(ROAD_USERS)}); use classes: all or name them"
            )
        return ids
    by_name = {n.lower(): i for i, n in names.items()}
    unknown = [c for c in classes if c.lower() not in by_name]
    if unknown:
        raise ConfigError(
            f"perception.detector.classes: {', '.join(unknown)} not among {weights}'s classes "
            f"({', '.join(names.values())})"
        )
    return sorted({by_name[c.lower()] for c in classes})


def _load(cfg: YoloConfig, ctx: BuildContext) -> Any:
    """The ultralytics model: random, or loaded from the checkpoint; with the YOLO-World vocabulary set."""

    if is_random(cfg.weights):
        model = _random_model(cfg.weights[len(RANDOM_PREFIX) :])
    else:
        path = _checkpoint_path(cfg.weights, ctx)
        try:
            model = _load_checkpoint(path)
        except UntrustedCheckpoint:
            raise
        except Exception as e:  # ultralytics raises many kinds (download, unpickling, missing file)
            raise ConfigError(
                f"perception.detector.weights: cannot load {cfg.weights!r} ({type(e).__name__}: {e}). "
                "Offline, put the file in the weights folder (`crashcast weights list`) or give its "
                "path"
            ) from e
        if model.task not in ("detect", "segment"):
            raise ConfigError(
                f"perception.detector.weights: {cfg.weights} is a {model.task!r} model; the detector "
                "needs a detection (or segmentation) checkpoint"
            )
    if cfg.text_classes:
        _set_vocabulary(model, cfg, ctx)
    return model


def _checkpoint_path(weights: str, ctx: BuildContext) -> str:
    """Where the checkpoint is loaded from: a path as given; a bare name from the weights folder when one
    is set, else from ultralytics' weights folder (`weights_path`), never from the working directory
    (ultralytics itself would look there first)."""
    path = ctx.weights(weights)
    return weights_path(path) if path == weights else path


def _load_checkpoint(path: str) -> Any:
    """`YOLO(path)` through ultralytics' restricted loader (see `crashcast.runtime.checkpoints`): only
    known model classes are rebuilt; a checkpoint that references anything else is refused, naming what,
    unless the user trusts the file."""
    from ultralytics import YOLO

    if is_trusted(path):
        log.warning("%s: loading in full (trusted on the command line / in the API / $%s)", path, TRUST_ENV)
        return YOLO(path)
    with _restricted_loading(path):
        try:
            return YOLO(path)
        except TypeError as e:
            if "outside the supported" not in str(e):
                raise
            raise refusal(path, _refused_because(str(e.__cause__ or ""))) from e


def _refused_because(torch_message: str) -> str:
    """What the restricted loader refused, from torch's WeightsUnpickler message."""
    found = re.findall(r"GLOBAL ([\w.]+)", torch_message)
    if found:
        return f"it references {', '.join(dict.fromkeys(found))}, which is not one of ultralytics' or torch's model classes"
    op = re.search(r"WeightsUnpickler error:\s*([^\n.]+)", torch_message)
    return ("the restricted loader cannot read it" + (f" ({op.group(1).strip()})" if op else "")
            + ": it is not a torch checkpoint, or one that only a full unpickling reads")


_SAFE_LOAD_LOCK = threading.Lock()
#: the first ultralytics release with a restricted (weights_only, allow-list) checkpoint loader
SAFE_LOAD_SINCE = "8.4.67"


@contextlib.contextmanager
def _restricted_loading(path: str) -> Iterator[None]:
    """ultralytics' own switch to its restricted loader (`ULTRALYTICS_SAFE_LOAD`, read once at its import),
    turned on for this load: `torch_safe_load` and the model builder read the module's `SAFE_LOAD`."""
    import ultralytics
    import ultralytics.nn.tasks as tasks

    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None or not getattr(safe, "SUPPORTED", False) or not hasattr(tasks, "SAFE_LOAD"):
        raise refusal(path, f"ultralytics {ultralytics.__version__} (with this torch) has no restricted checkpoint "
                      f"loader; ultralytics {SAFE_LOAD_SINCE} and later have one: pip install -U "
                      f"'ultralytics>={SAFE_LOAD_SINCE}'")
    with _SAFE_LOAD_LOCK:
        before = tasks.SAFE_LOAD
        tasks.SAFE_LOAD = True
        try:
            yield
        finally:
            tasks.SAFE_LOAD = before


def _random_model(arch: str) -> Any:
    """An ultralytics model of `arch` with random weights, COCO class names and calibrated BatchNorm."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils import ROOT, YAML

    yaml_name, scale = TINY_ARCHS.get(arch, (f"{arch}.yaml", None))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        try:
            model = YOLO(yaml_name)
        except FileNotFoundError as e:
            raise ConfigError(
                f"perception.detector.weights: random:{arch}: ultralytics has no architecture {yaml_name} "
                f"(use random:tiny, random:tiny-world, or a model YAML stem such as yolov8x, yolo11n, "
                "yolov8s-worldv2)"
            ) from e
        if scale is not None:  # the same layout, narrower
            spec = yaml_model_load(yaml_name)
            spec["scales"] = {spec["scale"]: scale}
            net = type(model.model)(spec, nc=spec["nc"], verbose=False)
            net.args, net.task = model.model.args, model.model.task
            model.model = net
        model.model.names = YAML.load(ROOT / "cfg/datasets/coco.yaml")["names"]
        _calibrate_batchnorm(model.model)
    return model


def _calibrate_batchnorm(net: Any, size: int = 256) -> None:
    """Set every BatchNorm's statistics from one forward pass over fixed noise (see the module docstring)."""
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: after one batch, exactly its statistics
    noise = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(RANDOM_SEED))
    net.train()
    with torch.no_grad():
        net(noise)
    net.eval()


def _set_vocabulary(model: Any, cfg: YoloConfig, ctx: BuildContext) -> None:
    """YOLO-World: detect `cfg.text_classes` (CLIP text embeddings; random ones for a random model)."""
    import torch
    from ultralytics.nn.tasks import WorldModel

    classes = [c.strip() for c in cfg.text_classes or [] if c.strip()]
    if not isinstance(model.model, WorldModel):
        raise ConfigError(
            f"perception.detector.text_classes needs a YOLO-World checkpoint (e.g. yolov8x-worldv2.pt, "
            f"random:tiny-world); {cfg.weights} is not one"
        )
    if is_random(cfg.weights):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            feats = torch.nn.functional.normalize(
                torch.randn(1, len(classes), model.model.txt_feats.shape[-1]), dim=-1
            )
        model.model.txt_feats = feats
        model.model.model[-1].nc = len(classes)
        model.model.names = classes
        model.predictor = None
        return
    checkpoint = _clip_checkpoint(ctx)  # before the package check: a missing file is the first thing to fix
    # ultralytics' text model imports the `clip` package and, when it is missing, tries to pip-install it
    if importlib.util.find_spec("clip") is None:
        raise ConfigError(
            "perception.detector.text_classes: YOLO-World encodes its vocabulary with CLIP, which is not "
            "installed: pip install git+https://github.com/ultralytics/CLIP.git (its ViT-B/32 checkpoint, "
            f"{CLIP_WEIGHTS.name}, ~338 MB: {_clip_place(checkpoint)}); or use a checkpoint saved with its "
            "classes already set, without text_classes"
        )
    try:
        if checkpoint is None:
            model.set_classes(classes)  # ultralytics loads ViT-B/32 from its weights folder (downloads it there)
        else:
            _set_classes_from(model, classes, checkpoint)
    except Exception as e:  # the CLIP download fails offline; an unreadable checkpoint
        raise ConfigError(
            f"perception.detector.text_classes: could not encode {classes} with CLIP ViT-B/32 "
            f"({type(e).__name__}: {e}); {_clip_place(checkpoint)}"
        ) from e


def _clip_checkpoint(ctx: BuildContext) -> Path | None:
    """The CLIP checkpoint file to load: from the weights folder when one is set (a ConfigError naming
    the file and the folder when it is not there), its SHA-256 checked against the published one before
    anything reads it; None: ultralytics' own folder (`<weights_dir>/clip/`, where the `clip` package
    checks the hash itself)."""
    try:
        found = Path(ctx.weights(CLIP_WEIGHTS.name))
    except ConfigError as e:
        raise ConfigError(
            f"perception.detector.text_classes: YOLO-World needs CLIP ViT-B/32 to encode its vocabulary: {e} "
            f"(fetch it from {CLIP_WEIGHTS.url})"
        ) from e
    if not found.is_file():
        return None
    verify_known(found, CLIP_WEIGHTS.sha256 or "", "CLIP ViT-B/32 checkpoint (ViT-B-32.pt)")
    return found


def _clip_place(checkpoint: Path | None) -> str:
    """Where the CLIP checkpoint is read from, for messages."""
    if checkpoint is not None:
        return f"read from {checkpoint}"
    from ultralytics.utils import WEIGHTS_DIR

    return (
        f"ultralytics reads it from {Path(WEIGHTS_DIR) / 'clip' / CLIP_WEIGHTS.name} and downloads it there "
        f"when it is missing; offline, fetch {CLIP_WEIGHTS.url} and put it into a weights folder "
        "(--weights-dir, runtime.weights_dir; `crashcast weights list`) or that folder"
    )


def _set_classes_from(model: Any, classes: list[str], checkpoint: Path) -> None:
    """Encode `classes` with the CLIP checkpoint file `checkpoint` (what `YOLOWorld.set_classes` does,
    with ultralytics' text model built from the file instead of from the name `ViT-B/32`)."""
    from ultralytics.nn.text_model import CLIP

    net = model.model
    net.clip_model = CLIP(str(checkpoint), next(net.parameters()).device)  # `clip.load` of a path
    try:
        net.set_classes(classes, cache_clip_model=True)  # uses `net.clip_model`, builds no other
    finally:
        net.clip_model = None  # ~150 M parameters, needed only here
    net.names = list(classes)
    model.predictor = None


def yolo_weights(cfg: YoloConfig) -> list[WeightFile]:
    """The files a config needs: the checkpoint (and CLIP ViT-B/32 for a YOLO-World vocabulary)."""
    clip = [CLIP_WEIGHTS] if cfg.text_classes else []
    if is_random(cfg.weights):
        return []
    if cfg.weights in CHECKPOINTS_MB:
        return [
            WeightFile(
                cfg.weights, "ultralytics", "AGPL-3.0", CHECKPOINTS_MB[cfg.weights], ASSETS_URL + cfg.weights
            ),
            *clip,
        ]
    if is_path(cfg.weights) and Path(cfg.weights).expanduser().exists():  # a checkpoint of one's own, already here
        return clip
    if (
        "/" not in cfg.weights and "\\" not in cfg.weights
    ):  # another name ultralytics may download (yolo26n.pt)
        return [WeightFile(cfg.weights, "ultralytics", "AGPL-3.0"), *clip]
    return [
        WeightFile(cfg.weights, "local", "unknown"),
        *clip,
    ]  # a path that is not there: nobody can fetch it


@backend(
    "detector", "yolo", YoloConfig, requires=("torch", "torchvision", "ultralytics"), weights=yolo_weights
)
def _build(cfg: YoloConfig, ctx: BuildContext) -> YoloDetector:
    return YoloDetector(cfg, ctx)

"""A LoRA adapter folder (adapter_config.json + adapter_model.safetensors, as peft saves it)
checked before torch or peft read it, so a junk or cut file is named here rather than failing
deep in a library ("header too large", a size mismatch) after a video has been perceived.

The safetensors header is parsed here (an 8-byte little-endian length, then that many bytes of
JSON): every tensor a floating dtype, its shape and byte range consistent, the ranges tiling the
data exactly up to the end of the file; the LoRA matrices of the rank adapter_config.json says.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from crashcast.errors import ModelError
from crashcast.runtime.store import MODEL_FILE_LIMIT, read_head, read_text_bounded

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the safetensors library's own bound on the JSON header
MAX_HEADER_BYTES = 100_000_000
#: bytes per element of the dtypes a LoRA adapter's weights have
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
#: the peft task types (`peft.TaskType`), or none
TASK_TYPES = {None, "SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"}
#: LoRA initialisations that need data or a long computation; a saved adapter's weights replace any
#: initialisation, so crashcast's adapters use the default (true)
HEAVY_INITS = {"loftq", "eva", "corda"}


def check_adapter(folder: str | Path, rank: int | None = None) -> None:
    """ModelError naming the file and the problem unless `folder` holds a LoRA adapter peft can load:
    `adapter_config.json` (a LORA config with a positive rank, alpha and target modules; nothing that
    makes peft import a module) and `adapter_model.safetensors` (`safetensors_header`, LoRA matrices
    of that rank). `rank`: the rank the model card's settings say it was trained with."""
    folder = Path(folder)
    path = folder / ADAPTER_CONFIG
    if not path.exists():
        raise ModelError(f"{path}: missing; an adapter folder is written by `crashcast train vlm`")
    try:
        config = json.loads(read_text_bounded(path, what="adapter config"))
    except (ValueError, RecursionError) as e:
        raise ModelError(f"{path}: not JSON ({type(e).__name__}: {str(e)[:200]})") from None
    try:
        r = _check_config(config)
        if rank is not None and r != rank:
            raise ValueError(f"r={r}, but model.json's settings say the adapter was trained with lora.r={rank}")
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        raise ModelError(f"{weights}: missing; peft saves the adapter's weights there")
    try:
        tensors = safetensors_header(weights)
        _check_lora(tensors, r, bool(config.get("rank_pattern")))
    except ValueError as e:
        raise ModelError(f"{weights}: {e}") from None


def _check_config(c: Any) -> int:
    """The rank of adapter config `c` (peft's LoraConfig as JSON); ValueError naming the field."""
    if not isinstance(c, dict):
        raise ValueError(f"an object (peft's LoraConfig) is needed, not {type(c).__name__}")
    if c.get("peft_type") != "LORA":
        raise ValueError(f"peft_type {str(c.get('peft_type'))[:40]!r}: crashcast's adapters are LORA")
    r = c.get("r")
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 65536:
        raise ValueError(f"r: {str(r)[:40]} is not a LoRA rank (a positive integer)")
    alpha = c.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"lora_alpha: {str(alpha)[:40]} is not a positive number")
    targets = c.get("target_modules")
    if not (isinstance(targets, str) and targets) and not (
            isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise ValueError("target_modules: a module-name pattern or a list of module names is needed")
    if c.get("task_type") not in TASK_TYPES:
        raise ValueError(f"task_type {str(c.get('task_type'))[:40]!r} is not one of peft's")
    if c.get("megatron_config") is not None:  # peft would import the module `megatron_core` names
        raise ValueError("megatron_config: set; crashcast's adapters have none (peft would import a module it names)")
    init = c.get("init_lora_weights", True)
    if not isinstance(init, bool | str) or (isinstance(init, str) and init.split("_")[0].lower() in HEAVY_INITS):
        raise ValueError(f"init_lora_weights {str(init)[:40]!r}: an initialisation that needs data; a saved adapter needs none")
    for key in ("rank_pattern", "alpha_pattern"):
        if not isinstance(c.get(key) or {}, dict):
            raise ValueError(f"{key}: an object is needed")
    return r


def safetensors_header(path: str | Path, limit: int = MODEL_FILE_LIMIT) -> dict[str, dict]:
    """The tensors of a safetensors file ({name: {dtype, shape, data_offsets}}), read from its header
    alone; ValueError unless every tensor is of a floating dtype, its byte range holds exactly its
    shape's elements and the ranges tile the data up to the end of the file (a file of at most `limit`
    bytes: `read_head` refuses links to devices, FIFOs and larger files)."""
    head, size = read_head(path, 8, limit, "safetensors file")
    if len(head) < 8:
        raise ValueError(f"{size} bytes: too short for a safetensors file (an 8-byte header length first)")
    n = struct.unpack("<Q", head)[0]
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise ValueError(f"its header length ({n} bytes) is larger than the file ({size} bytes) allows: "
                         "not a safetensors file, or cut short")
    raw, _ = read_head(path, 8 + n, limit, "safetensors file")
    try:
        header = json.loads(raw[8:])
    except (ValueError, RecursionError) as e:
        raise ValueError(f"its header is not JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("__metadata__: a map of strings is needed")
    spans = []
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {name[:80]!r}: an entry of dtype, shape and data_offsets is needed")
        width = FLOAT_DTYPES.get(t["dtype"]) if isinstance(t["dtype"], str) else None
        if width is None:
            raise ValueError(f"tensor {name[:80]!r}: dtype {str(t['dtype'])[:20]!r}; an adapter's weights are one of "
                             f"{', '.join(FLOAT_DTYPES)}")
        shape, offsets = t["shape"], t["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ValueError(f"tensor {name[:80]!r}: shape {str(shape)[:40]} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ValueError(f"tensor {name[:80]!r}: data_offsets {str(offsets)[:40]} is not [begin, end]")
        if offsets[1] - offsets[0] != math.prod(shape) * width:
            raise ValueError(f"tensor {name[:80]!r}: {offsets[1] - offsets[0]} bytes for shape {shape} of "
                             f"{t['dtype']} ({math.prod(shape) * width} bytes)")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise ValueError(f"tensor {name[:80]!r}: its data starts at byte {begin}, not {end} (tensors overlap "
                             "or leave a gap)")
        end = stop
    if 8 + n + end != size:
        raise ValueError(f"the tensors end at byte {8 + n + end}, but the file has {size} bytes: cut short "
                         "or with bytes no tensor holds")
    return header


def _check_lora(tensors: dict[str, dict], r: int, per_module_ranks: bool) -> None:
    """That the tensors are LoRA matrices (lora_A: r x in, lora_B: out x r), at least one pair."""
    if not any(".lora_A." in name for name in tensors):
        raise ValueError("no LoRA matrices (lora_A) in it; not a LoRA adapter")
    for name, t in tensors.items():
        shape = t["shape"]
        is_a, is_b = ".lora_A." in name, ".lora_B." in name
        if (is_a or is_b) and len(shape) != 2:
            raise ValueError(f"tensor {name[:80]!r}: shape {shape}; a LoRA matrix has two dimensions")
        if not per_module_ranks and ((is_a and shape[0] != r) or (is_b and shape[1] != r)):
            raise ValueError(f"tensor {name[:80]!r}: shape {shape}, not of the rank r={r} adapter_config.json says")

"""Prompts on disk in the three forms fine-tuning tools read, one JSONL line per window:

- `<split>.jsonl`: ShareGPT as LLaMA-Factory reads it (`id`, `images`, `conversations` with
  `from` human/gpt and `value`; one `<image>` per image), plus `dataset_info.json` in the same folder
  naming every split (`crashcast_<split>`), so `--dataset_dir <folder> --dataset crashcast_train` works.
- `<split>.swift.jsonl`: ms-swift's standard `messages` form (`role`/`content`, `images`).
- `<split>.chat.jsonl`: the chat-message form of transformers' processors and TRL
  (`{"type": "image", "image": path}` entries, then `{"type": "text", ...}`; no `<image>` token).

Image paths: in the ShareGPT file they are relative to the export folder, which LLaMA-Factory joins
with its `media_dir` (default: the `dataset_dir` holding dataset_info.json), so a run folder can move
between machines. ms-swift (whose docs ask for absolute paths) and transformers/TRL (which open the
path as given, from the working directory) get absolute paths.

Every record also carries `meta` (clip, phase, horizon, label, soft target, template version): the
trainers ignore unknown keys, and crashcast's own loss needs the label and the soft target.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashcast.errors import InputLimitError, SchemaError
from crashcast.prompts.builder import IMAGE_TOKEN, Prompt
from crashcast.runtime.store import TABLE_FILE_LIMIT, atomic_write_json, atomic_write_text, read_text_bounded

log = logging.getLogger(__name__)

DATASET_INFO = "dataset_info.json"
DATASET_PREFIX = "crashcast_"


def _meta(p: Prompt) -> dict[str, Any]:
    return {
        "clip_id": p.clip_id,
        "phase": p.phase,
        "horizon_s": p.horizon_s,
        "label": p.label,
        "soft_target": p.soft_target,
        "template": p.template,
    }


def sharegpt_record(p: Prompt, folder: Path) -> dict[str, Any]:
    """LLaMA-Factory ShareGPT; image paths relative to `folder` (the export folder)."""
    return {
        "id": p.id,
        "images": [os.path.relpath(Path(i).absolute(), Path(folder).absolute()) for i in p.images],
        "conversations": [{"from": "human", "value": p.user}, {"from": "gpt", "value": p.assistant}],
        "meta": _meta(p),
    }


def swift_record(p: Prompt) -> dict[str, Any]:
    """ms-swift standard format; absolute image paths."""
    return {
        "id": p.id,
        "messages": [{"role": "user", "content": p.user}, {"role": "assistant", "content": p.assistant}],
        "images": [str(Path(i).absolute()) for i in p.images],
        "meta": _meta(p),
    }


def chat_messages(p: Prompt, include_answer: bool = True) -> list[dict[str, Any]]:
    """The chat-message form of transformers' `apply_chat_template` and TRL: image entries (absolute
    paths) before the text. Without the answer it is the input for generation or scoring."""
    content: list[dict[str, Any]] = [{"type": "image", "image": str(Path(i).absolute())} for i in p.images]
    content.append({"type": "text", "text": p.text})
    messages = [{"role": "user", "content": content}]
    if include_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": p.assistant}]})
    return messages


def chat_record(p: Prompt) -> dict[str, Any]:
    return {
        "id": p.id,
        "messages": chat_messages(p),
        "images": [str(Path(i).absolute()) for i in p.images],
        "meta": _meta(p),
    }


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for a ShareGPT file with images (its data/README.md)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def image_count_errors(record: Mapping[str, Any]) -> list[str]:
    """Why a record (any of the three forms) breaks the one-placeholder-per-image rule; [] if it does not."""
    n = len(record.get("images", []))
    if "conversations" in record:
        tokens = sum(t["value"].count(IMAGE_TOKEN) for t in record["conversations"])
        where = "conversations"
    elif record.get("messages") and isinstance(record["messages"][0]["content"], str):
        tokens = sum(m["content"].count(IMAGE_TOKEN) for m in record["messages"])
        where = "messages"
    else:
        blocks = [b for m in record["messages"] for b in m["content"]]
        tokens = sum(b["type"] == "image" for b in blocks)
        stray = sum(b["text"].count(IMAGE_TOKEN) for b in blocks if b["type"] == "text")
        if stray:
            return [f"{record.get('id')}: {stray} {IMAGE_TOKEN} inside chat text"]
        where = "image entries"
    return [] if tokens == n else [f"{record.get('id')}: {tokens} {where} placeholders for {n} images"]


def jsonl_text(path: Path, records: Iterable[Mapping[str, Any]]) -> str:
    """The JSONL text of `records` (one JSON object per line); ValueError naming `path` and the
    record when one breaks the one-placeholder-per-image rule; NaN is refused (not JSON)."""
    lines = []
    for r in records:
        errors = image_count_errors(r)
        if errors:
            raise ValueError(f"{path}: {errors[0]}")
        lines.append(json.dumps(r, ensure_ascii=False, allow_nan=False))
    return "".join(line + "\n" for line in lines)


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON object per line, UTF-8, atomically (`jsonl_text`)."""
    return atomic_write_text(path, jsonl_text(path, records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (a regular file within TABLE_FILE_LIMIT: `store.read_bounded`)."""
    text = read_text_bounded(path, TABLE_FILE_LIMIT, "JSONL file")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class SplitExport:
    """The files one split was written to."""

    sharegpt: Path
    swift: Path
    chat: Path


def _split_files(prompts: Sequence[Prompt], folder: Path, split: str) -> tuple[SplitExport, dict[Path, str]]:
    """One split's three files and their text, built and checked; nothing is written."""
    out = SplitExport(
        sharegpt=folder / f"{split}.jsonl",
        swift=folder / f"{split}.swift.jsonl",
        chat=folder / f"{split}.chat.jsonl",
    )
    texts = {
        out.sharegpt: jsonl_text(out.sharegpt, (sharegpt_record(p, folder) for p in prompts)),
        out.swift: jsonl_text(out.swift, (swift_record(p) for p in prompts)),
        out.chat: jsonl_text(out.chat, (chat_record(p) for p in prompts)),
    }
    return out, texts


def check_unique_ids(splits: Mapping[str, Sequence[Prompt]]) -> None:
    """SchemaError naming every prompt id given more than once (in one split or across splits) and
    where each copy came from: a window is one record of one split."""
    where: dict[str, list[str]] = {}
    for split, prompts in splits.items():
        for p in prompts:
            where.setdefault(p.id, []).append(f"{split}: {p.source}" if p.source else split)
    twice = {i: w for i, w in where.items() if len(w) > 1}
    if twice:
        listed = "; ".join(f"{i} ({', '.join(w)})" for i, w in list(twice.items())[:3])
        raise SchemaError(f"{len(twice)} prompt id(s) given more than once: {listed}{' ...' if len(twice) > 3 else ''}; "
                          "nothing was written")


def export_split(prompts: Sequence[Prompt], folder: Path, split: str) -> SplitExport:
    """Write one split's three files into `folder` (dataset_info.json: `write_dataset_info`)."""
    return export_prompts({split: prompts}, folder, dataset_info=False)[split]


def write_dataset_info(folder: Path, splits: Iterable[str]) -> Path:
    """LLaMA-Factory's dataset_info.json in `folder` with a `crashcast_<split>` entry per split;
    entries for other names already in the file are kept."""
    path = Path(folder) / DATASET_INFO
    info: dict[str, Any] = {}
    if path.exists():
        try:
            info = json.loads(read_text_bounded(path, what="dataset_info.json"))
        except (json.JSONDecodeError, UnicodeDecodeError, InputLimitError) as e:
            log.warning("%s: not a readable JSON file (%s); rewriting it", path, e)
        if not isinstance(info, dict):
            info = {}
    for split in splits:
        info[f"{DATASET_PREFIX}{split}"] = dataset_info_entry(f"{split}.jsonl")
    return atomic_write_json(path, info)


def export_prompts(splits: Mapping[str, Sequence[Prompt]], folder: Path, dataset_info: bool = True) -> dict[str, SplitExport]:
    """Every split's three files plus dataset_info.json, in `folder` (a run's `prompts/`). Every
    split is built and checked (unique ids, one placeholder per image) before the first file is
    written, so a refused export leaves no file behind."""
    folder = Path(folder)
    check_unique_ids(splits)
    built = {split: _split_files(prompts, folder, split) for split, prompts in splits.items()}
    for split, (_, texts) in built.items():
        for path, text in texts.items():
            atomic_write_text(path, text)
        log.info("split %s: %d prompts -> %s", split, len(splits[split]), folder)
    if dataset_info:
        write_dataset_info(folder, splits.keys())
    return {split: files for split, (files, _) in built.items()}

"""Prompt exports: LLaMA-Factory ShareGPT + dataset_info.json, ms-swift messages, the chat-message form;
one image placeholder per image in every record of every file; JSON round trips."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from crashcast.features.window_meta import WindowMeta, read_window_meta
from crashcast.prompts.builder import IMAGE_TOKEN, Prompt, build_prompt
from crashcast.prompts.exports import (
    chat_messages,
    chat_record,
    dataset_info_entry,
    export_prompts,
    image_count_errors,
    read_jsonl,
    sharegpt_record,
    swift_record,
    write_dataset_info,
    write_jsonl,
)


def _png() -> bytes:
    """A real 16x16 PNG: prompts check that each keyframe decodes."""
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()


GOLDEN = Path(__file__).parent / "golden"


def _window(
    run: Path, clip: str, phase: str, label: int, soft: float, objects: bool = True, images: bool = True
) -> tuple[WindowMeta, Path]:
    folder = run / "clips" / clip / phase
    folder.mkdir(parents=True)
    meta = read_window_meta(GOLDEN / "window_meta.json")
    update = {
        "clip_id": clip,
        "window_id": f"{clip}_{phase}",
        "phase": phase,
        "label": label,
        "soft_target": soft,
    }
    if not objects:
        update.update(objects=[], instances=[])
    if not images:
        update["frame_paths"] = [None] * 3
    meta = meta.model_copy(update=update)
    if images:
        for k in range(3):
            (folder / f"kf{k}.png").write_bytes(_png())
    return meta, folder


@pytest.fixture
def run(tmp_path) -> tuple[Path, dict[str, list[Prompt]]]:
    """A run folder with five windows: images and objects, text-only, no objects, a rationale."""
    root = tmp_path / "run"
    train = [
        build_prompt(*_window(root, "00822", "mid", 1, 0.8724)),
        build_prompt(*_window(root, "00822", "max", 1, 0.31), rationale=True),
        build_prompt(*_window(root, "00100", "mini", 0, 0.0, images=False)),
    ]
    val = [
        build_prompt(*_window(root, "00200", "mid", 0, 0.0, objects=False)),
        build_prompt(*_window(root, "00300", "max", 0, 0.0)),
    ]
    return root, {"train": train, "val": val}


def _placeholders(record: dict) -> int:
    """Placeholders counted without the module's helper: `<image>` in text turns, image blocks in chat."""
    if "conversations" in record:
        return sum(t["value"].count(IMAGE_TOKEN) for t in record["conversations"])
    n = 0
    for m in record["messages"]:
        if isinstance(m["content"], str):
            n += m["content"].count(IMAGE_TOKEN)
        else:
            n += sum(b["type"] == "image" for b in m["content"])
            assert not any(IMAGE_TOKEN in b["text"] for b in m["content"] if b["type"] == "text")
    return n


def test_every_record_has_one_placeholder_per_image(run):
    root, splits = run
    out = export_prompts(splits, root / "prompts")
    files = [f for s in out.values() for f in (s.sharegpt, s.swift, s.chat)]
    assert len(files) == 6
    counts = set()
    for f in files:
        for r in read_jsonl(f):
            assert _placeholders(r) == len(r["images"]), (f.name, r["id"])
            assert image_count_errors(r) == []
            counts.add(len(r["images"]))
    assert counts == {0, 3}  # text-only windows are in there too


def test_round_trip_equals_the_records(run):
    root, splits = run
    folder = root / "prompts"
    out = export_prompts(splits, folder)
    for split, prompts in splits.items():
        assert read_jsonl(out[split].sharegpt) == [sharegpt_record(p, folder) for p in prompts]
        assert read_jsonl(out[split].swift) == [swift_record(p) for p in prompts]
        assert read_jsonl(out[split].chat) == [chat_record(p) for p in prompts]
        # one line per prompt, UTF-8 (ΔDepth stays readable)
        text = out[split].sharegpt.read_text(encoding="utf-8")
        assert text.count("\n") == len(prompts) and "ΔDepth" in text
    assert not [p for p in folder.iterdir() if ".part" in p.name]


def test_sharegpt_layout_for_llama_factory(run):
    root, splits = run
    folder = root / "prompts"
    out = export_prompts(splits, folder)
    recs = read_jsonl(out["train"].sharegpt)
    p = splits["train"][0]
    r = recs[0]
    assert set(r) == {"id", "images", "conversations", "meta"}
    assert r["id"] == "00822_mid"
    assert [t["from"] for t in r["conversations"]] == ["human", "gpt"]
    assert r["conversations"][0]["value"] == p.user and r["conversations"][0]["value"].startswith(
        IMAGE_TOKEN * 3 + "\n"
    )
    assert r["conversations"][1]["value"] == "Collision Probability: 0.872"
    assert recs[1]["conversations"][1]["value"].splitlines()[1].startswith("Reason: ")
    assert r["meta"] == {
        "clip_id": "00822",
        "phase": "mid",
        "horizon_s": 0.0,
        "label": 1,
        "soft_target": 0.8724,
        "template": "risk_v2",
    }
    # relative to the export folder, as LLaMA-Factory joins them with media_dir (= dataset_dir)
    assert r["images"] == [
        "../clips/00822/mid/kf0.png",
        "../clips/00822/mid/kf1.png",
        "../clips/00822/mid/kf2.png",
    ]
    assert all(os.path.isfile(os.path.join(folder, i)) for i in r["images"])
    assert recs[2]["images"] == [] and IMAGE_TOKEN not in recs[2]["conversations"][0]["value"]


def test_dataset_info_for_llama_factory(run):
    root, splits = run
    folder = root / "prompts"
    folder.mkdir()
    (folder / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "x.json"}}), encoding="utf-8")
    export_prompts(splits, folder)
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["mine"] == {"file_name": "x.json"}  # other entries are kept
    assert info["crashcast_train"] == {
        "file_name": "train.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    assert info["crashcast_val"] == dataset_info_entry("val.jsonl")
    for entry in (info["crashcast_train"], info["crashcast_val"]):
        assert (folder / entry["file_name"]).is_file()
        rec = read_jsonl(folder / entry["file_name"])[0]
        tags, cols = entry["tags"], entry["columns"]
        assert {t[tags["role_tag"]] for t in rec[cols["messages"]]} == {
            tags["user_tag"],
            tags["assistant_tag"],
        }
        assert all(tags["content_tag"] in t for t in rec[cols["messages"]]) and cols["images"] in rec


def test_dataset_info_replaces_a_broken_file(tmp_path):
    (tmp_path / "dataset_info.json").write_text("{not json", encoding="utf-8")
    write_dataset_info(tmp_path, ["test"])
    assert json.loads((tmp_path / "dataset_info.json").read_text()) == {
        "crashcast_test": dataset_info_entry("test.jsonl")
    }


def test_swift_layout(run):
    root, splits = run
    out = export_prompts(splits, root / "prompts")
    r = read_jsonl(out["train"].swift)[0]
    p = splits["train"][0]
    assert set(r) == {"id", "messages", "images", "meta"}
    assert r["messages"] == [
        {"role": "user", "content": p.user},
        {"role": "assistant", "content": p.assistant},
    ]
    assert r["images"] == [str(i) for i in p.images]
    assert all(Path(i).is_absolute() and Path(i).is_file() for i in r["images"])


def test_chat_message_form(run):
    _, splits = run
    p = splits["train"][0]
    msgs = chat_messages(p)
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    user = msgs[0]["content"]
    assert [b["type"] for b in user] == ["image", "image", "image", "text"]
    assert [b["image"] for b in user[:3]] == [str(i) for i in p.images]
    assert user[3] == {"type": "text", "text": p.text} and not p.text.startswith(IMAGE_TOKEN)
    assert msgs[1]["content"] == [{"type": "text", "text": "Collision Probability: 0.872"}]
    # for generation: the user turn only
    assert chat_messages(p, include_answer=False) == msgs[:1]
    text_only = chat_messages(splits["train"][2])
    assert text_only[0]["content"] == [{"type": "text", "text": splits["train"][2].text}]
    assert json.loads(json.dumps(msgs)) == msgs


def test_image_count_errors_are_found_and_refused(tmp_path, run):
    _, splits = run
    p = splits["train"][0]
    bad_sharegpt = sharegpt_record(p, tmp_path)
    bad_sharegpt["images"] = bad_sharegpt["images"][:2]
    bad_swift = swift_record(p)
    bad_swift["messages"][0]["content"] += IMAGE_TOKEN
    bad_chat = chat_record(p)
    bad_chat["messages"][0]["content"].pop(0)
    stray = chat_record(p)
    stray["messages"][0]["content"][-1]["text"] += IMAGE_TOKEN
    for bad in (bad_sharegpt, bad_swift, bad_chat, stray):
        assert image_count_errors(bad), bad["id"]
        with pytest.raises(ValueError, match="00822_mid"):
            write_jsonl(tmp_path / "x.jsonl", [bad])
    assert not (tmp_path / "x.jsonl").exists()


def test_duplicate_ids_are_refused(run):
    root, splits = run
    with pytest.raises(ValueError, match=r"00822_mid .*more than once|more than once: 00822_mid"):
        export_prompts({"train": [splits["train"][0], splits["train"][0]]}, root / "prompts")


def test_run_folder_moves_with_sharegpt_paths(run, tmp_path):
    root, splits = run
    export_prompts(splits, root / "prompts")
    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    folder = moved / "prompts"
    for r in read_jsonl(folder / "train.jsonl"):
        assert all(os.path.isfile(os.path.join(folder, i)) for i in r["images"])

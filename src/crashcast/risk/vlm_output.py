"""Reading a collision probability out of a vision-language model's answer.

Two readings of the same answer `Collision Probability: 0.872` (the paper, §4-5):

- `parse_probability(text)`: the number as written, for any text a model may produce (zero-shot
  answers wander: `87%`, `**0.87**`, a sentence, a code fence). A failure is recorded in the result,
  never raised, so one odd answer cannot stop the scoring of a split.
- `expected_probability(logits, tokens, digits)`: the continuous reading. Each digit of the answer is
  replaced by its expected value under the model's distribution restricted to the ten digit tokens,
  and the digits are combined as a number. Under teacher forcing this is differentiable (the MSE term
  of the enhanced fine-tuning, `weighted_mse`); at inference it gives AP, AUC and calibration a real
  score instead of a string rounded to three decimals.

The leading digit is read too, restricted to the tokens "0" and "1" (the task asks for a number
between 0.00 and 1.00, and soft targets of positives are often exactly 1, written `1.000`):

    p = P(lead = 1) + P(lead = 0) * sum_k E[d_k] * 10^-k

where d_k is the k-th decimal. A leading 1 counts as exactly 1 (the format caps the value there).
The decimals are read at their positions in the sequence, so under teacher forcing E[d_2] is
conditioned on the written d_1 (the usual teacher-forcing approximation). When the written lead is 1,
the decimals that follow ("1.000") are conditioned on that 1, not on a 0: their reading still enters
the value but carries no MSE gradient (it is detached), so the MSE never pulls the digits after
"1." away from the zeros the cross-entropy teaches; the gradient goes to the leading digit.

Heavy imports (torch) happen inside the functions: `import crashcast` stays torch-free.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ANSWER_PREFIX = "Collision Probability: "
"""What the assistant turn starts with (the paper, §4); the number follows with three decimals."""
RATIONALE_PREFIX = "Reason: "
"""The optional second line of the answer."""
N_DECIMALS = 3


def format_answer(probability: float, rationale: str | None = None, decimals: int = N_DECIMALS) -> str:
    """The assistant turn for a target: `Collision Probability: 0.872` (1.0 is written `1.000`), plus
    `Reason: ...` on a second line when a rationale is given. The exact inverse of the readings here."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"a collision probability must lie in [0, 1], got {probability!r}")
    text = f"{ANSWER_PREFIX}{probability:.{decimals}f}"
    if rationale:
        text += "\n" + RATIONALE_PREFIX + " ".join(rationale.split())
    return text


# --------------------------------------------------------------------------------------------------
# The number as written
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAnswer:
    """One answer read as text. `probability` in [0, 1] or None; `error` says why it is None (None
    when the read succeeded); `rationale` is the text of a `Reason:` line, when there is one."""

    probability: float | None
    rationale: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.probability is not None


_FENCE = re.compile(r"^\s*(?:```|~~~).*$", re.M)
_MARKDOWN = re.compile(r"\*\*|__|[*`]")
# A line that carries the rationale: `Reason: ...`, `- **Rationale**: ...`, `Explanation - ...`.
_RATIONALE_LINE = re.compile(r"^[\s>#*-]*(?:reason(?:ing)?|rationale|explanation)\s*[:\-]\s*(?P<text>.*)$", re.I)
_BARE_NUMBER = re.compile(r"^\s*[-−]?[\d.,]+\s*(?:%|percent)?\s*$", re.I)
_ANCHOR = re.compile(r"probabilit(?:y|ies)|likelihood|概率", re.I)
# A number: `0.87`, `.5`, `0,87` (decimal comma), `87 %`, `87 percent`, optionally signed. Not part of
# a longer token (`v2`, `0.8.7`).
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<sign>[-−])?(?P<num>\d+(?:[.,]\d+)?|[.,]\d+)(?!\.\d)(?P<unit>[^\W\d_])?"
    r"(?:\s*(?P<pct>%|percent\b))?",
    re.I,
)


def _clean(text: str) -> str:
    """Unicode compatibility forms folded (full-width digits and colons), code fences and markdown
    emphasis removed, underscores read as spaces (`collision_probability` in a JSON answer)."""
    text = unicodedata.normalize("NFKC", text)
    text = _FENCE.sub("", text)
    text = _MARKDOWN.sub("", text)
    return text.replace("_", " ")


def _split_rationale(text: str) -> tuple[str, str | None]:
    """(the text to search for the number, the rationale). The rationale is the first labelled line
    and the lines after it, up to a line that names the probability again or holds only a number."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _RATIONALE_LINE.match(line)), None)
    if start is None:
        return text, None
    end = start + 1
    while end < len(lines) and not (_ANCHOR.search(lines[end]) or _BARE_NUMBER.match(lines[end])):
        end += 1
    first = _RATIONALE_LINE.match(lines[start])
    assert first is not None  # matched above
    parts = [first.group("text"), *lines[start + 1:end]]
    rationale = " ".join(" ".join(parts).split()) or None
    return "\n".join(lines[:start] + lines[end:]), rationale


def _value(match: re.Match[str]) -> float:
    value = float(match.group("num").replace(",", "."))
    if match.group("sign"):
        value = -value
    return value / 100.0 if match.group("pct") else value


def _looks_like_probability(match: re.Match[str]) -> bool:
    """A percentage, a decimal, or the integers 0 and 1. Used to step over counts and times in a
    sentence: `the probability of a collision within the next 3 seconds is 0.4`."""
    if match.group("pct"):
        return True
    num = match.group("num")
    return any(c in num for c in ".,") or num in ("0", "1")


def _excerpt(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= n else flat[: n - 3] + "...")


def parse_probability(text: str) -> ParsedAnswer:
    """Read the collision probability a model wrote; never raises.

    Which number: the first probability-like number after the word "probability" when there is one
    after it, else the first probability-like number in the answer; a number that is not
    probability-like (`87`) is taken only when no other candidate exists; a number glued to a unit
    (`3s`, `4.2m`, `1e5`) never is. Lines labelled `Reason:` are the rationale and are not searched.

    Decisions: a value outside [0, 1] is an error, not clamped (`1.7`, `-0.2`, `150%`): clamping would
    turn a model that misread the scale into a confident score. `87` without a percent sign is an
    error too, not 0.87: the same digits could be a score out of 10 or 100, and a recorded failure
    is visible where a silent rescale is not. `87%` and `87 percent` are 0.87.
    """
    if not isinstance(text, str):
        return ParsedAnswer(None, None, f"answer is not text but {type(text).__name__}")
    body, rationale = _split_rationale(_clean(text))
    if not body.strip():
        return ParsedAnswer(None, rationale, "empty answer" if rationale is None else "answer has only a rationale")

    def numbers(start: int = 0) -> list[re.Match[str]]:
        return [m for m in _NUMBER.finditer(body, start) if not m.group("unit")]

    anchor = _ANCHOR.search(body)
    candidates = numbers(anchor.end()) if anchor else []
    if not candidates:
        candidates = numbers()
    if not candidates:
        return ParsedAnswer(None, rationale, f"no number in the answer {_excerpt(text)}")
    match = next((m for m in candidates if _looks_like_probability(m)), candidates[0])
    value = _value(match)
    if not 0.0 <= value <= 1.0:
        hint = "" if match.group("pct") else " (no % sign, so not read as a percentage)"
        return ParsedAnswer(None, rationale, f"number {_excerpt(match.group(0), 20)} outside [0, 1]{hint}")
    return ParsedAnswer(value, rationale, None)


# --------------------------------------------------------------------------------------------------
# The expected value of the digit tokens
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitTokens:
    """The token ids the expected-digit reading needs.

    `digit_ids`: the ids of "0" ... "9", in that order. `point_ids`: ids that spell the decimal point.
    `anchor_ids`: the ids of the answer prefix as the assistant turn tokenizes it (`Collision
    Probability: `); when the anchor occurs, the number right after it is the answer, otherwise the
    first number (so unmasked prompt tokens, whose table holds numbers like `1.4`, are stepped over).
    Built from a tokenizer with `from_tokenizer`, or by hand for a toy vocabulary.
    """

    digit_ids: tuple[int, ...]
    point_ids: tuple[int, ...]
    anchor_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "digit_ids", tuple(int(i) for i in self.digit_ids))
        object.__setattr__(self, "point_ids", tuple(int(i) for i in self.point_ids))
        object.__setattr__(self, "anchor_ids", tuple(int(i) for i in self.anchor_ids))
        if len(self.digit_ids) != 10 or len(set(self.digit_ids)) != 10:
            raise ValueError(f"digit_ids must be 10 distinct ids for '0'..'9', got {self.digit_ids}")
        if not self.point_ids or set(self.point_ids) & set(self.digit_ids):
            raise ValueError(f"point_ids must be non-empty and disjoint from the digit ids, got {self.point_ids}")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, prefix: str = ANSWER_PREFIX) -> DigitTokens:
        """Find the ids with the tokenizer itself: each of "0".."9" and "." must encode to one token,
        and a written answer must tokenize digit by digit. Qwen2/Qwen2.5 (and Qwen2.5-VL's) tokenizer
        does: its pre-tokenizer regex has a lone `\\p{N}` alternative (transformers,
        models/qwen2/tokenization_qwen2.py, PRETOKENIZE_REGEX), so every digit is its own pre-token
        and no BPE merge can join two digits or a digit and a space. A tokenizer that merges digits
        (`87` as one token) cannot be read this way and raises ValueError."""

        def encode(text: str) -> list[int]:
            return list(tokenizer.encode(text, add_special_tokens=False))

        name = type(tokenizer).__name__
        digit_ids = []
        for d in "0123456789":
            ids = encode(d)
            if len(ids) != 1:
                raise ValueError(f"{name} encodes the digit {d!r} as {len(ids)} tokens {ids}; "
                                 "the expected-digit reading needs one token per digit")
            digit_ids.append(ids[0])
        point = encode(".")
        if len(point) != 1:
            raise ValueError(f"{name} encodes '.' as {len(point)} tokens {point}; expected one")
        answer = encode(format_answer(0.872))
        tail = [digit_ids[0], point[0], digit_ids[8], digit_ids[7], digit_ids[2]]
        if answer[-5:] != tail:
            raise ValueError(f"{name} does not split '0.872' into one token per character "
                             f"(got {answer[-5:]} for {tail}); digits merged with neighbours cannot be read")
        in_context = encode(prefix + "0.872")
        anchor = in_context[:-5] if in_context[-5:] == tail else encode(prefix)
        return cls(tuple(digit_ids), (point[0],), tuple(anchor))


@dataclass(frozen=True)
class AnswerDigits:
    """Where one sequence writes its answer number: `lead_index` (the token "0" or "1"),
    `decimal_indices` (up to `n_decimals` digits after the point; empty for `1` or `0`), indices into
    the token sequence; `lead` (0 or 1) and `written` (the number the tokens spell) for reference."""

    lead_index: int
    decimal_indices: tuple[int, ...]
    lead: int
    written: float


def _find_subsequence(row: Sequence[int], sub: Sequence[int], start: int, stop: int) -> int | None:
    n = len(sub)
    for i in range(start, stop - n + 1):
        if list(row[i:i + n]) == list(sub):
            return i
    return None


def find_answer(row: Sequence[int], digits: DigitTokens, *, n_decimals: int = N_DECIMALS,
                ignore_index: int = -100, min_index: int = 0) -> AnswerDigits | None:
    """Locate the answer number in one token sequence (labels, input ids or generated ids).

    Tokens equal to `ignore_index` are outside the search (the prompt part of training labels). When
    the anchor occurs, the answer is the number right after it and must start with 0 or 1; without
    it, the first number that does (not a digit inside a longer number such as `12` or `.1`). The
    point and up to `n_decimals` decimals may follow. `min_index` keeps the lead where a logit scores
    it (1 when logits are shifted by one). None when there is no such number.
    """
    row = list(row)
    valid = [i for i, t in enumerate(row) if t != ignore_index]
    if not valid:
        return None
    lo, hi = max(valid[0], min_index), valid[-1] + 1
    anchored = False
    if digits.anchor_ids:
        at = _find_subsequence(row, digits.anchor_ids, valid[0], hi)
        if at is not None:
            lo, anchored = max(lo, at + len(digits.anchor_ids)), True
    value = {t: v for v, t in enumerate(digits.digit_ids)}
    points = set(digits.point_ids)
    for i in range(lo, hi):
        lead = value.get(row[i])
        if lead is None or (i > 0 and (row[i - 1] in value or row[i - 1] in points)):
            continue  # not a digit, or a digit inside a longer number
        if lead > 1 or (i + 1 < hi and row[i + 1] in value):
            if anchored:
                return None  # the anchored answer is not a probability (`2.5`, `87`)
            continue
        decimals: list[int] = []
        if i + 2 < hi and row[i + 1] in points:
            j = i + 2
            while j < hi and row[j] in value and len(decimals) < n_decimals:
                decimals.append(j)
                j += 1
        written = lead + sum(value[row[j]] * 10.0 ** -(k + 1) for k, j in enumerate(decimals))
        return AnswerDigits(i, tuple(decimals), lead, round(written, n_decimals))
    return None


@dataclass
class DigitReading:
    """The expected-digit reading of a batch of B answers (torch tensors on the logits' device).

    `probability` (B,) float32 (float64 for float64 logits) in [0, 1], differentiable with respect to the logits; 0 where no
    answer was found. `found` (B,) bool. `p_lead_one` (B,) the probability of a leading 1.
    `digit_means` (B, n_decimals) the expected decimals (0 beyond a shorter answer). `answers` the
    positions found per sample."""

    probability: torch.Tensor
    found: torch.Tensor
    p_lead_one: torch.Tensor
    digit_means: torch.Tensor
    answers: list[AnswerDigits | None]


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision inputs (bf16/fp16 logits under QLoRA); float64 stays float64."""
    import torch

    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def expected_digit(logits: torch.Tensor, digit_ids: Sequence[int]) -> torch.Tensor:
    """E[d] = sum_j j * softmax(logits[..., digit_ids])_j: the expected digit under the distribution
    restricted to the ten digit tokens, (..., V) -> (...), at least in float32."""
    import torch

    ids = torch.as_tensor(list(digit_ids), device=logits.device)
    probs = torch.softmax(_upcast(logits.index_select(-1, ids)), dim=-1)
    return probs @ torch.arange(len(ids), device=logits.device, dtype=probs.dtype)


def read_answers(logits: torch.Tensor, answers: Sequence[AnswerDigits | None], digits: DigitTokens, *,
                 shift: int = 1, n_decimals: int = N_DECIMALS) -> DigitReading:
    """The expected-digit probability at answer positions already found (`find_answer`).

    `logits` (B, L, V); the token at index j is scored by `logits[:, j - shift]`: `shift=1` for the
    logits of a forward pass over the whole sequence (the Hugging Face causal-LM convention, labels
    aligned with input ids), `shift=0` for `torch.stack(generate(..., output_logits=True).logits, 1)`
    read against the generated ids.
    """
    import torch

    if logits.dim() != 3 or logits.shape[0] != len(answers):
        raise ValueError(f"logits must be (B, L, V) with B = {len(answers)} answers, got {tuple(logits.shape)}")
    device, b = logits.device, len(answers)
    found_list = [a is not None for a in answers]
    lead_idx = [a.lead_index - shift if a else 0 for a in answers]
    dec_idx = [[0] * n_decimals for _ in answers]
    dec_mask = [[0.0] * n_decimals for _ in answers]
    for r, a in enumerate(answers):
        for k, j in enumerate(a.decimal_indices[:n_decimals] if a else ()):
            dec_idx[r][k], dec_mask[r][k] = j - shift, 1.0
    if any(i < 0 or i >= logits.shape[1] for i in lead_idx + [j for row in dec_idx for j in row]):
        raise ValueError(f"answer positions fall outside the logits' {logits.shape[1]} positions "
                         f"with shift={shift}; pass the logits of the same sequence the tokens come from")
    rows = torch.arange(b, device=device)
    lead_idx_t = torch.tensor(lead_idx, device=device, dtype=torch.long)
    dec_idx_t = torch.tensor(dec_idx, device=device, dtype=torch.long).reshape(b, n_decimals)
    mask = torch.tensor(dec_mask, device=device, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    mask = mask.reshape(b, n_decimals)
    found = torch.tensor(found_list, device=device, dtype=torch.bool)

    lead_logits = logits[rows, lead_idx_t].index_select(-1, torch.as_tensor(digits.digit_ids[:2], device=device))
    p_lead_one = torch.softmax(_upcast(lead_logits), dim=-1)[:, 1]
    digit_means = expected_digit(logits[rows[:, None], dec_idx_t], digits.digit_ids) * mask
    scale = 10.0 ** -torch.arange(1, n_decimals + 1, device=device, dtype=digit_means.dtype)
    decimals = (digit_means * scale).sum(-1)
    written_one = torch.tensor([bool(a and a.lead == 1) for a in answers], device=device)
    decimals = torch.where(written_one, decimals.detach(), decimals)  # see the module docstring
    probability = p_lead_one + (1.0 - p_lead_one) * decimals
    probability = torch.where(found, probability, torch.zeros_like(probability))
    return DigitReading(probability, found, p_lead_one, digit_means, list(answers))


def expected_probability(logits: torch.Tensor, tokens: torch.Tensor | Sequence[Sequence[int]],
                         digits: DigitTokens, *, shift: int = 1, n_decimals: int = N_DECIMALS,
                         ignore_index: int = -100) -> DigitReading:
    """The continuous collision probability of each sequence in a batch: find the answer in `tokens`
    (B, L), then read `logits` there (`read_answers`).

    Training (teacher forcing): `expected_probability(outputs.logits, labels, digits)` with the labels
    of the batch (-100 outside the assistant turn); `.probability` is differentiable.
    Inference: after `generate(..., return_dict_in_generate=True, output_logits=True)`,
    `expected_probability(torch.stack(out.logits, 1), out.sequences[:, prompt_len:], digits, shift=0)`
    (end the prompt with `ANSWER_PREFIX` so the lead digit is the first generated token), or one
    forward pass over prompt + answer read like training, with the input ids as `tokens`.
    """
    rows = tokens.tolist() if hasattr(tokens, "tolist") else [list(r) for r in tokens]
    answers = [find_answer(r, digits, n_decimals=n_decimals, ignore_index=ignore_index, min_index=shift)
               for r in rows]
    missing = sum(a is None for a in answers)
    if missing:
        log.debug("no answer number found in %d of %d sequences", missing, len(answers))
    return read_answers(logits, answers, digits, shift=shift, n_decimals=n_decimals)


def weighted_mse(pred_prob: torch.Tensor, target: Any, positive_weight: float = 3.0, label: Any = None,
                 valid: Any = None) -> torch.Tensor:
    """The enhanced fine-tuning's MSE term: mean over samples of w_i * (p_i - t_i)^2, w_i =
    `positive_weight` for positives (label 1) and 1 for negatives (the paper, §5: CE + 5.0 x this).

    Averaged by the number of samples n, not by the sum of the weights: at the paper's batch of one
    sample per step (1 x 16 accumulation) a sum-of-weights mean would cancel the weight on every
    step. Without `label`, positives are targets >= 0.5; pass the window labels where soft targets
    of positives can be small. `valid` (B,) bool leaves samples out (an answer not found): they count
    neither in the sum nor in n; with none valid the result is a differentiable zero.
    """
    import torch

    pred = _upcast(pred_prob)
    target = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
    if pred.dim() != 1 or target.shape != pred.shape:
        raise ValueError(f"pred_prob and target must both be (B,), got {tuple(pred.shape)} and {tuple(target.shape)}")
    positive = (target >= 0.5) if label is None else torch.as_tensor(label, device=pred.device).reshape(-1) == 1
    if positive.shape != pred.shape:
        raise ValueError(f"label must be (B,) like pred_prob, got {tuple(positive.shape)}")
    weight = torch.where(positive, torch.full_like(pred, positive_weight), torch.ones_like(pred))
    n = pred.new_tensor(float(pred.shape[0]))
    if valid is not None:
        keep = torch.as_tensor(valid, device=pred.device).reshape(-1).bool()
        weight = weight * keep
        n = keep.sum().float().clamp(min=1.0)
    return (weight * (pred - target) ** 2).sum() / n

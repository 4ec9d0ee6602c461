"""Reading a VLM's answer: the text parser (a table of odd outputs), the expected-digit probability
(hand-computed on toy logits, batched, differentiable, the same under generation and teacher forcing
on a tiny Qwen2) and the weighted MSE term of the enhanced fine-tuning."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashcast.risk.vlm_output import (
    ANSWER_PREFIX,
    DigitTokens,
    expected_probability,
    find_answer,
    format_answer,
    parse_probability,
    weighted_mse,
)

# --------------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------------

# (answer, probability or None, rationale or None, substring of the error or None)
PARSER_TABLE = [
    ("Collision Probability: 0.87", 0.87, None, None),
    ("0.87", 0.87, None, None),
    ("87%", 0.87, None, None),
    ("87.5 %", 0.875, None, None),
    ("87 percent", 0.87, None, None),
    ("probability of 0.9", 0.9, None, None),
    ("1", 1.0, None, None),
    ("1.0", 1.0, None, None),
    ("0", 0.0, None, None),
    (".5", 0.5, None, None),
    ("0,87", 0.87, None, None),  # decimal comma
    ("  \n\t0.42 \n", 0.42, None, None),
    ("  **0.87**  ", 0.87, None, None),
    ("**Collision Probability:** `0.61`", 0.61, None, None),
    ("```\nCollision Probability: 0.872\n```", 0.872, None, None),
    ("```text\n0.3\n```", 0.3, None, None),
    ("Collision Probability: 0.872\nReason: car A 4.2 m ahead, closing at 3.1 m/s, TTC 1.4 s", 0.872,
     "car A 4.2 m ahead, closing at 3.1 m/s, TTC 1.4 s", None),
    ("Reason: nothing within 30 m\nCollision Probability: 0.05", 0.05, "nothing within 30 m", None),
    ("- **Rationale**: a pedestrian crosses\n  close to the bumper\n0.7", 0.7,
     "a pedestrian crosses close to the bumper", None),
    ("0.87 0.12", 0.87, None, None),  # several numbers, no anchor: the first
    ("There are 2 cars ahead. Probability: 0.3", 0.3, None, None),  # the one after 'Probability'
    ("The probability of a collision within the next 3 seconds is 0.4.", 0.4, None, None),  # 3 is a count
    ("0.35 is the collision probability", 0.35, None, None),  # anchor with nothing after it
    ("TTC 3s, so 0.2", 0.2, None, None),  # a number glued to a unit is not the probability
    ('{"collision_probability": 0.35}', 0.35, None, None),
    ("Collision Probability: 0.872<|im_end|>", 0.872, None, None),
    ("碰撞概率：0.87", 0.87, None, None),  # full-width colon, Chinese anchor
    ("０.８７", 0.87, None, None),  # full-width digits
    ("Probability: 0.87 (87%)", 0.87, None, None),
    ("0.3,0.5", 0.3, None, None),
    # failures: recorded, never raised
    ("1.7", None, None, "outside [0, 1]"),  # not clamped
    ("87", None, None, "not read as a percentage"),  # no % sign: not 0.87
    ("Collision Probability: 87", None, None, "outside [0, 1]"),
    ("-0.2", None, None, "outside [0, 1]"),
    ("−0.3", None, None, "outside [0, 1]"),  # unicode minus
    ("150%", None, None, "outside [0, 1]"),
    ("", None, None, "empty answer"),
    ("   \n ", None, None, "empty answer"),
    ("N/A", None, None, "no number"),
    ("high", None, None, "no number"),
    ("Probability: N/A", None, None, "no number"),
    ("Collision Probability:", None, None, "no number"),
    ("0.8.7", None, None, "no number"),  # malformed
    ("TTC 3s", None, None, "no number"),  # a quantity with a unit is never the probability
    ("1e5", None, None, "no number"),
    ("9" * 400, None, None, "outside [0, 1]"),
    ("Reason: I cannot tell", None, "I cannot tell", "only a rationale"),
    (None, None, None, "not text"),
]


@pytest.mark.parametrize(("answer", "probability", "rationale", "error"), PARSER_TABLE)
def test_parser_table(answer, probability, rationale, error):
    got = parse_probability(answer)
    assert got.rationale == rationale
    if probability is None:
        assert got.probability is None and not got.ok
        assert error is not None and error in got.error
    else:
        assert got.ok and got.error is None
        assert got.probability == pytest.approx(probability, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises_and_stays_in_range(text):
    got = parse_probability(text)
    assert (got.probability is None) == (got.error is not None)
    if got.probability is not None:
        assert 0.0 <= got.probability <= 1.0


@pytest.mark.parametrize("p", [0.0, 0.001, 0.5, 0.872, 0.999, 1.0])
def test_format_answer_round_trips(p):
    text = format_answer(p, rationale="car A  4.2 m ahead")
    assert text.splitlines()[0] == f"Collision Probability: {p:.3f}"
    got = parse_probability(text)
    assert got.probability == pytest.approx(round(p, 3)) and got.rationale == "car A 4.2 m ahead"
    with pytest.raises(ValueError):
        format_answer(1.2)


# --------------------------------------------------------------------------------------------------
# The expected-digit probability on a toy vocabulary
# --------------------------------------------------------------------------------------------------

# Toy vocabulary of 32 ids: digits '0'..'9' are ids 20..29 (not 0..9, so an id/value mix-up shows),
# '.' is 13, the anchor 'Collision', ' Probability', ':', ' ' is 5, 6, 7, 8, end of turn 30.
V = 32
D = [20 + d for d in range(10)]
POINT, EOS, IGNORE = 13, 30, -100
ANCHOR = [5, 6, 7, 8]
DIGITS = DigitTokens(digit_ids=D, point_ids=[POINT], anchor_ids=ANCHOR)


def _answer_tokens(number: str) -> list[int]:
    return ANCHOR + [POINT if c == "." else D[int(c)] for c in number] + [EOS]


def _toy_logits(length: int, rows: dict[int, dict[int, float]]):
    """(length, V) logits: 0 for every digit and 7.0 on the non-digit ids (which the reading must
    ignore), with log(weight) on chosen digits of chosen rows, so the softmax over the ten digits
    is weight / sum(weights) and the arithmetic can be done by hand."""
    import torch

    logits = torch.full((length, V), 7.0, dtype=torch.float64)
    logits[:, D] = 0.0
    for row, weights in rows.items():
        for digit, w in weights.items():
            logits[row, D[digit]] = math.log(w)
    return logits


def _hand_batch():
    """Two teacher-forced samples with labels -100 on the prompt.

    Sample 0, label 1, target 0.872, labels `... Collision Probability: 0.872<eos>` with the answer
    at indices 3..11 (lead '0' at 7, decimals at 9, 10, 11); shifted by one, logits row j-1 scores
    token j:
      row 6  (lead): weight 9 on '0', 1 on '1'            -> P(lead=1) = 1/10 = 0.1
      row 8  (d1):   weight 91 on '8', 1 on each other    -> E = (45-8)/100 + 8*0.91 = 0.37 + 7.28 = 7.65
      row 9  (d2):   weight 91 on '7'                     -> E = (45-7)/100 + 7*0.91 = 0.38 + 6.37 = 6.75
      row 10 (d3):   weight 91 on '2'                     -> E = (45-2)/100 + 2*0.91 = 0.43 + 1.82 = 2.25
      decimals = 0.765 + 0.0675 + 0.00225 = 0.83475
      p0 = 0.1 + 0.9 * 0.83475 = 0.851275
    Sample 1, label 0, target 0.0, two more prompt tokens, answer `0.000` (lead at 9, decimals 11..13),
    padded with -100 to the batch length:
      row 8 (lead): weight 49 on '0', 1 on '1' -> P(lead=1) = 1/50 = 0.02; decimals uniform -> E = 4.5 each
      decimals = 0.45 + 0.045 + 0.0045 = 0.4995
      p1 = 0.02 + 0.98 * 0.4995 = 0.50951
    """
    import torch

    lab0 = [IGNORE, IGNORE, IGNORE, *_answer_tokens("0.872")]
    lab1 = [IGNORE] * 5 + _answer_tokens("0.000")
    length = max(len(lab0), len(lab1)) + 1
    lab0 += [IGNORE] * (length - len(lab0))
    lab1 += [IGNORE] * (length - len(lab1))
    uniform = {d: 1.0 for d in range(10)}

    def peaked(d):
        return {**uniform, d: 91.0}

    logits0 = _toy_logits(length, {6: {0: 9.0, 1: 1.0}, 8: peaked(8), 9: peaked(7), 10: peaked(2)})
    logits1 = _toy_logits(length, {8: {0: 49.0, 1: 1.0}, 10: uniform, 11: uniform, 12: uniform})
    logits = torch.stack([logits0, logits1]).requires_grad_(True)
    return logits, torch.tensor([lab0, lab1])


P0, P1 = 0.851275, 0.50951


def test_expected_probability_matches_hand_arithmetic():
    logits, labels = _hand_batch()
    reading = expected_probability(logits, labels, DIGITS)
    assert reading.found.tolist() == [True, True]
    assert [a.lead_index for a in reading.answers] == [7, 9]
    assert reading.answers[0].decimal_indices == (9, 10, 11) and reading.answers[0].written == 0.872
    assert reading.p_lead_one.tolist() == pytest.approx([0.1, 0.02], abs=1e-12)
    assert reading.digit_means[0].tolist() == pytest.approx([7.65, 6.75, 2.25], abs=1e-12)
    assert reading.digit_means[1].tolist() == pytest.approx([4.5, 4.5, 4.5], abs=1e-12)
    assert reading.probability.tolist() == pytest.approx([P0, P1], abs=1e-12)


def test_mse_term_equals_hand_computed_value():
    """Weights 3 for the positive, 1 for the negative, averaged over n = 2 samples:
    3 * (0.851275 - 0.872)^2 = 3 * 0.020725^2 = 3 * 0.000429525625 = 0.001288576875
    1 * (0.50951 - 0)^2     = 0.2596004401
    (0.001288576875 + 0.2596004401) / 2 = 0.260889016975 / 2 = 0.1304445084875"""
    logits, labels = _hand_batch()
    reading = expected_probability(logits, labels, DIGITS)
    mse = weighted_mse(reading.probability, [0.872, 0.0], positive_weight=3.0, label=[1, 0])
    assert mse.item() == pytest.approx(0.1304445084875, abs=1e-12)
    # without labels, positives are targets >= 0.5: the same split here
    assert weighted_mse(reading.probability, [0.872, 0.0]).item() == pytest.approx(0.1304445084875, abs=1e-12)
    # the weight is not normalised away at one sample per step (mean over n, not over the weights)
    one = weighted_mse(reading.probability[:1], [0.872], label=[1])
    assert one.item() == pytest.approx(0.001288576875, abs=1e-12)


def test_mse_term_gradient_reaches_the_digit_logits_only():
    logits, labels = _hand_batch()
    reading = expected_probability(logits, labels, DIGITS)
    weighted_mse(reading.probability, [0.872, 0.0], label=[1, 0]).backward()
    grad = logits.grad
    read_rows = {0: [6, 8, 9, 10], 1: [8, 10, 11, 12]}
    for b, rows in read_rows.items():
        for r in range(grad.shape[1]):
            digit_grad = grad[b, r, D].abs().sum().item()
            assert (digit_grad > 0) == (r in rows), (b, r)
        assert grad[b][:, [i for i in range(V) if i not in D]].abs().sum().item() == 0.0
    # the lead row is read over '0' and '1' only
    assert grad[0, 6, D[2:]].abs().sum().item() == 0.0
    # the negative (target 0) pushes P(lead=1) down: d loss / d logit('1') > 0
    assert grad[1, 8, D[1]].item() > 0


def test_mse_term_gradcheck():
    """Autograd's gradient equals finite differences through the whole reading + MSE (float64)."""
    import torch

    logits, labels = _hand_batch()
    torch.manual_seed(0)
    x = (logits.detach() + 0.3 * torch.randn_like(logits)).requires_grad_(True)

    def loss(z):
        reading = expected_probability(z, labels, DIGITS)
        return weighted_mse(reading.probability, [0.872, 0.0], label=[1, 0])

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-7)


def test_written_one_reads_the_lead_and_detaches_its_decimals():
    """`1.000`: p = P(1) + P(0) * decimals; the decimals after '1.' get no gradient from the MSE.
    Lead weights 1:3 -> P(1) = 0.75; decimals uniform -> 0.4995; p = 0.75 + 0.25 * 0.4995 = 0.874875."""
    import torch

    labels = torch.tensor([[IGNORE, *_answer_tokens("1.000")]])
    logits = _toy_logits(labels.shape[1], {4: {0: 1.0, 1: 3.0}}).unsqueeze(0).requires_grad_(True)
    reading = expected_probability(logits, labels, DIGITS)
    assert reading.answers[0].lead == 1 and reading.answers[0].written == 1.0
    assert reading.probability.item() == pytest.approx(0.874875, abs=1e-12)
    weighted_mse(reading.probability, [1.0], label=[1]).backward()
    assert logits.grad[0, 4, D[1]].item() < 0  # raise P(lead=1) toward the target 1
    assert logits.grad[0, 6:9].abs().sum().item() == 0.0


def test_batching_equals_one_by_one_and_skips_missing_answers():
    import torch

    torch.manual_seed(1)
    seqs = [
        [IGNORE] * 4 + _answer_tokens("0.872"),
        [IGNORE] * 2 + _answer_tokens("0.5"),  # one decimal
        [IGNORE] * 6 + _answer_tokens("1"),  # no decimals
        [IGNORE] * 3 + ANCHOR + [D[2], POINT, D[5], EOS],  # anchored 2.5: not a probability
        [IGNORE] * 7,  # truncated: no answer at all
    ]
    length = max(map(len, seqs))
    labels = torch.tensor([s + [IGNORE] * (length - len(s)) for s in seqs])
    logits = torch.randn(len(seqs), length, V, dtype=torch.float64)
    batch = expected_probability(logits, labels, DIGITS)
    assert batch.found.tolist() == [True, True, True, False, False]
    assert [a.written if a else None for a in batch.answers] == [0.872, 0.5, 1.0, None, None]
    for i in range(3):
        alone = expected_probability(logits[i:i + 1], labels[i:i + 1], DIGITS)
        assert alone.probability.item() == pytest.approx(batch.probability[i].item(), abs=1e-12)
    assert batch.probability[3:].tolist() == [0.0, 0.0]
    assert ((batch.probability >= 0) & (batch.probability <= 1)).all()
    # missing answers are left out of the mean: the same as the MSE over the found ones
    target, label = [0.872, 0.5, 1.0, 0.3, 0.0], [1, 1, 1, 0, 0]
    full = weighted_mse(batch.probability, target, label=label, valid=batch.found)
    found_only = weighted_mse(batch.probability[:3], target[:3], label=label[:3])
    assert full.item() == pytest.approx(found_only.item(), abs=1e-12)
    assert weighted_mse(batch.probability[3:], [0.3, 0.0], valid=[False, False]).item() == 0.0


def test_find_answer_prefers_the_anchor_over_prompt_numbers():
    prompt = [D[1], POINT, D[4], 9, 10]  # a table value `1.4` in unmasked prompt tokens
    row = prompt + _answer_tokens("0.25")
    found = find_answer(row, DIGITS)
    assert found is not None and found.lead_index == len(prompt) + len(ANCHOR) and found.written == 0.25
    no_anchor = DigitTokens(digit_ids=D, point_ids=[POINT])
    assert find_answer(row, no_anchor).written == 1.4  # why the anchor is there
    # numbers inside longer numbers are stepped over without an anchor: `12` and `.1` then `0.3`
    assert find_answer([D[1], D[2], 9, POINT, D[1], 9, D[0], POINT, D[3]], no_anchor).written == 0.3


def test_digit_tokens_validation():
    with pytest.raises(ValueError, match="10 distinct"):
        DigitTokens(digit_ids=D[:9], point_ids=[POINT])
    with pytest.raises(ValueError, match="disjoint"):
        DigitTokens(digit_ids=D, point_ids=[D[0]])
    with pytest.raises(ValueError, match="outside the logits"):
        import torch

        expected_probability(torch.zeros(1, 3, V), torch.tensor([_answer_tokens("0.5")]), DIGITS)


# --------------------------------------------------------------------------------------------------
# A real Qwen2 tokenizer (built locally) and a tiny Qwen2 language model
# --------------------------------------------------------------------------------------------------


def _byte_level_qwen2_tokenizer(pre_tokenizer_regex: bool = True):
    """Qwen2's tokenizer class with a byte-level vocabulary and merges that would join digits ('87',
    ' 0', '0.') if the pre-tokenizer let them: Qwen2's regex splits every digit into its own piece."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    merges = [("8", "7"), ("Ġ", "0"), ("0", "."), ("Ġ", "P")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    if not pre_tokenizer_regex:
        tok._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return tok


def test_digit_tokens_from_qwen2_tokenizer():
    tok = _byte_level_qwen2_tokenizer()
    digits = DigitTokens.from_tokenizer(tok)
    assert digits.digit_ids == tuple(tok.convert_tokens_to_ids(list("0123456789")))
    assert digits.point_ids == (tok.convert_tokens_to_ids("."),)
    assert tok.decode(list(digits.anchor_ids)) == ANSWER_PREFIX
    ids = tok.encode(format_answer(0.872), add_special_tokens=False)
    found = find_answer(ids, digits)
    assert found.written == 0.872 and tok.decode(ids[found.lead_index:]) == "0.872"
    # the same vocabulary without Qwen2's digit-splitting regex merges '87': refused
    with pytest.raises(ValueError, match="one token per character"):
        DigitTokens.from_tokenizer(_byte_level_qwen2_tokenizer(pre_tokenizer_regex=False))


def test_generation_and_teacher_forcing_read_the_same_probability():
    """On a tiny random Qwen2: the answer generated greedily (constrained to `0.ddd`), read from
    generate's per-step logits (shift 0), equals the reading of one forward pass over prompt + answer
    (shift 1, unmasked input ids, the anchor locating the answer), and the MSE's gradient reaches the
    model's weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _byte_level_qwen2_tokenizer()
    digits = DigitTokens.from_tokenizer(tok)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=None, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config).eval()
    prompts = ["Car A at 4.2 m. " + ANSWER_PREFIX, "Nothing near: 12.5 m. " + ANSWER_PREFIX]
    plan = [[digits.digit_ids[0]], list(digits.point_ids)] + [list(digits.digit_ids)] * 3
    readings_gen, sequences = [], []
    for text in prompts:  # one at a time: no padding to reason about
        ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
        n = ids.shape[1]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=5, do_sample=False, return_dict_in_generate=True,
                                 output_logits=True,
                                 prefix_allowed_tokens_fn=lambda _b, seq, n=n: plan[len(seq) - n])
        generated = out.sequences[:, n:]
        reading = expected_probability(torch.stack(out.logits, 1), generated, digits, shift=0)
        assert reading.found.item()
        assert reading.answers[0].written == parse_probability(tok.decode(generated[0])).probability
        readings_gen.append(reading.probability.item())
        sequences.append(out.sequences[0])

    length = max(len(s) for s in sequences)
    pad = tok.pad_token_id
    input_ids = torch.stack([torch.cat([s, s.new_full((length - len(s),), pad)]) for s in sequences])
    attention = torch.stack([torch.arange(length) < len(s) for s in sequences]).long()
    model.train()
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    forced = expected_probability(logits, input_ids, digits)
    assert forced.probability.tolist() == pytest.approx(readings_gen, abs=1e-5)

    weighted_mse(forced.probability, [0.9, 0.1], label=[1, 0]).backward()
    assert model.lm_head.weight.grad[list(digits.digit_ids)].abs().sum().item() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum().item() > 0

import itertools
import math

import pytest
import torch

from bench.codecs import CECodec, CTCCodec, LabelError, beam_search_ctc, greedy_ctc, make_codec


def one_hot_logits(paths: list[list[int]], classes: int) -> torch.Tensor:
    """Logits that make each path the certain best path."""
    logits = torch.full((len(paths), len(paths[0]), classes), -10.0)
    for n, path in enumerate(paths):
        for t, c in enumerate(path):
            logits[n, t, c] = 10.0
    return logits


def test_ce_round_trip_with_variable_lengths():
    codec = CECodec("abc", max_len=4)
    labels = ["abca", "b", "cc"]
    targets = codec.encode(labels)
    assert targets.indices.tolist() == [[1, 2, 3, 1], [2, 0, 0, 0], [3, 3, 0, 0]]
    assert targets.lengths.tolist() == [4, 1, 2]
    assert codec.decode(one_hot_logits(targets.indices.tolist(), codec.num_classes)) == labels


def test_ce_loss_prefers_the_right_answer_and_checks_positions():
    codec = CECodec("ab", max_len=2, label_smoothing=0.1)
    targets = codec.encode(["ab"])
    right = codec.loss(one_hot_logits([[1, 2]], 3), targets)
    wrong = codec.loss(one_hot_logits([[2, 1]], 3), targets)
    assert right < wrong
    with pytest.raises(ValueError, match="3 positions"):
        codec.loss(torch.zeros(1, 3, 3), targets)


def test_ctc_greedy_collapses_repeats_and_keeps_doubles_split_by_blank():
    codec = CTCCodec("abc", max_len=5)
    # a a _ a b b _ _  -> "aab"; _ c c c _ -> "c"
    paths = [[1, 1, 0, 1, 2, 2, 0, 0], [0, 3, 3, 3, 0, 0, 0, 0]]
    assert codec.decode(one_hot_logits(paths, codec.num_classes)) == ["aab", "c"]
    assert greedy_ctc(one_hot_logits([[0, 0, 0]], 4)) == [[]]


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_ctc_round_trip_through_training_signal(decoder):
    """Variable-length labels, encoded as targets, get a low loss from their own paths."""
    codec = CTCCodec("xyz", max_len=3, decoder=decoder)
    labels = ["xyz", "zz", "y"]
    targets = codec.encode(labels)
    paths = [[1, 0, 2, 0, 3, 0, 0], [3, 0, 3, 0, 0, 0, 0], [0, 2, 2, 0, 0, 0, 0]]
    logits = one_hot_logits(paths, codec.num_classes)
    assert codec.decode(logits) == labels
    assert codec.loss(logits, targets) < 0.01
    shuffled = logits[[1, 2, 0]]
    assert codec.loss(shuffled, targets) > 1.0


def test_codec_errors_name_the_label():
    codec = make_codec("ce", "abc", 3)
    with pytest.raises(LabelError, match="'abd'.*'d'"):
        codec.encode(["abd"])
    with pytest.raises(LabelError, match="'abcab'.*5 characters"):
        codec.encode(["abcab"])
    with pytest.raises(LabelError, match="unique"):
        make_codec("ctc", "aab", 3)
    with pytest.raises(ValueError, match="unknown codec"):
        make_codec("attention", "ab", 2)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Probability of every labelling, summed over all alignments (C ** T paths)."""
    steps, classes = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=steps):
        score = sum(log_probs[t, c].item() for t, c in enumerate(path))
        collapsed = tuple(c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c))
        totals[collapsed] = totals.get(collapsed, 0.0) + math.exp(score)
    return totals


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_matches_exhaustive_enumeration(seed):
    generator = torch.Generator().manual_seed(seed)
    steps, classes = 5, 3 + seed % 2
    log_probs = (torch.randn(steps, classes, generator=generator) * 2).log_softmax(-1)
    exact = brute_force(log_probs)
    best_label, best_p = max(exact.items(), key=lambda kv: kv[1])
    # a beam wide enough to keep every prefix is exact
    label, score = beam_search_ctc(log_probs, beam_width=10_000)
    assert tuple(label) == best_label
    assert math.isclose(math.exp(score), best_p, rel_tol=1e-6)
    # the usual width-10 beam finds the best labelling on these small problems too
    assert tuple(beam_search_ctc(log_probs, beam_width=10)[0]) == best_label


def test_beam_search_beats_greedy_when_paths_add_up():
    """Best path says blank, but the two 'a' paths together are more likely than it."""
    p = torch.tensor([[0.45, 0.55, 0.0], [0.55, 0.45, 0.0]]).clamp_min(1e-9).log()
    # paths: __ 0.2475, a_ 0.3025, _a 0.2025, aa 0.2475 -> "a" has 0.7525
    assert greedy_ctc(p[None])[0] == [1]
    q = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    # greedy: "" (0.36); "a" via a_, _a, aa: 0.24 + 0.24 + 0.16 = 0.64
    assert greedy_ctc(q[None])[0] == []
    assert beam_search_ctc(q, beam_width=2)[0] == [1]


def test_emission_threshold_prunes_characters_but_never_the_blank():
    q = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    assert beam_search_ctc(q, emission_threshold=math.log(0.5))[0] == []
    codec = CTCCodec("a", max_len=2, decoder="beam", emission_threshold=math.log(0.01))
    assert codec.decode(q[None]) == ["a"]

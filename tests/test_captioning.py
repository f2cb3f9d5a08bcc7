"""Captioning: tokeniser and vocabulary, generated scenes, caption readers, the generation model (teacher-forced
loss, greedy = beam 1, overfitting), BLEU against a reference implementation, the alignment model, the commands."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

from cnnlab import models
from cnnlab.captioning import (
    AlignmentModel,
    CaptionModel,
    CaptionOptions,
    alignment_scores,
    cider_d,
    corpus_bleu,
    most_common_captions,
    ranking_loss,
    retrieval,
)
from cnnlab.captioning.alignment import region_mask, word_mask
from cnnlab.data.caption_readers import read_coco_captions, read_flickr_tokens, read_karpathy_split
from cnnlab.data.caption_scenes import DIGIT_NOUNS, SceneConfig, make_scenes
from cnnlab.data.captions import END_ID, PAD_ID, START_ID, UNK_ID, CaptionSplit, Vocabulary, detokenize, tokenize
from cnnlab.errors import ConfigError, DataError, UnknownNameError
from conftest import READ_ONLY_DRIVER, SHARED_DATASETS

SMALL = SceneConfig(canvas_size=48, small=(10, 12), large=(18, 22), train_size=1, val_size=1, test_size=1)
# the overfitting tests: grey 32 px scenes of two objects (short captions, a cheap CNN)
TINY = SceneConfig(canvas_size=32, small=(8, 10), large=(13, 16), colour=False, max_objects=2, train_size=1,
                   val_size=1, test_size=1)  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    """One thread (overrides conftest's two): these models are tiny, and on the shared 2-core machine handing
    their small operations between two threads made the overfitting tests 10× slower (measured)."""
    torch.set_num_threads(1)


def _digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten distinct random 'digits' (uint8 blobs, one per class): scenes without MNIST."""
    g = torch.Generator().manual_seed(seed)
    pattern = (torch.rand(10, 1, 7, 7, generator=g) > 0.5).float()
    images = torch.nn.functional.interpolate(pattern, size=(28, 28), mode="nearest")
    return (images * 255).to(torch.uint8), torch.arange(10)


# ---- tokeniser and vocabulary -------------------------------------------------------------------------------------
def test_tokenize_round_trips_and_splits_punctuation():
    text = "A small red 3, to the LEFT of a T-shirt."
    tokens = tokenize(text)
    assert tokens == ["a", "small", "red", "3", ",", "to", "the", "left", "of", "a", "t-shirt", "."]
    assert tokenize(detokenize(tokens)) == tokens
    for caption in ("two dogs play in the man's yard !", "a  b\tc\n", ""):
        assert tokenize(detokenize(tokenize(caption))) == tokenize(caption)


def test_vocabulary_encode_decode_min_count_and_unk():
    vocabulary = Vocabulary.build(["a red 3", "a blue 3", "a red 7"], min_count=2)
    assert vocabulary.tokens[:4] == ("<pad>", "<start>", "<end>", "<unk>")
    assert set(vocabulary.tokens[4:]) == {"a", "red", "3"}  # blue and 7 occur once
    encoded = vocabulary.encode(["a red 3", "a blue 7"], length=6)
    assert encoded.shape == (2, 6)
    assert encoded[0].tolist()[:5] == [START_ID, *vocabulary.ids("a red 3"), END_ID] and encoded[0, 5] == PAD_ID
    assert encoded[1, 2] == UNK_ID and encoded[1, 3] == UNK_ID
    assert vocabulary.decode(encoded[0]) == "a red 3"
    assert vocabulary.decode(encoded[1]) == "a <unk> <unk>"
    assert Vocabulary(tuple(vocabulary.to_list()), 2) == vocabulary  # what a checkpoint stores rebuilds it
    with pytest.raises(DataError, match="at most 2 fit"):
        vocabulary.encode(["a red 3"], length=4)
    with pytest.raises(DataError, match="outside this vocabulary"):
        vocabulary.decode([99])
    with pytest.raises(ConfigError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)


# ---- generated scenes ---------------------------------------------------------------------------------------------
def test_scenes_are_deterministic_and_captions_match_the_layout():
    images, labels = _digits()
    first = make_scenes(images, labels, 40, SMALL, seed=3, nouns=DIGIT_NOUNS)
    again = make_scenes(images, labels, 40, SMALL, seed=3, nouns=DIGIT_NOUNS)
    other = make_scenes(images, labels, 40, SMALL, seed=4, nouns=DIGIT_NOUNS)
    assert torch.equal(first.images, again.images) and first.captions == again.captions
    assert torch.equal(first.boxes, again.boxes) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (40, 3, 48, 48) and first.images.dtype == torch.uint8
    for boxes, object_labels, refs in zip(first.boxes, first.labels, first.captions, strict=True):
        count = int((object_labels >= 0).sum())
        assert 2 <= count <= 4 and len(refs) == 1 + min(4, count * (count - 1))
        assert all(DIGIT_NOUNS[int(label)] in refs[0] for label in object_labels[:count])
        centres = (boxes[:count, :2] + boxes[:count, 2:]) / 2  # (count, 2) x, y
        names = [refs[0].replace(" and ", ", ").split(", ")[j] for j in range(count)]  # the listing, reading order
        for relation in refs[1:]:
            for phrase, axis, sign in (("to the left of", 0, -1), ("to the right of", 0, 1), ("above", 1, -1),
                                       ("below", 1, 1)):  # fmt: skip
                if f" {phrase} " in relation:
                    a, b = (names.index(part) for part in relation.split(f" {phrase} "))
                    assert sign * (centres[a, axis] - centres[b, axis]) > 0, relation


def test_caption_split_refuses_bad_input():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match="captions for 1"):
        CaptionSplit(images, [["a"]])
    with pytest.raises(DataError, match="no reference caption"):
        CaptionSplit(images, [["a"], []])
    with pytest.raises(DataError, match="uint8"):
        CaptionSplit(images.float(), [["a"], ["b"]])
    split = CaptionSplit(images, [["a red 3"], ["a red 3", "a 3"]])
    references = split.references(Vocabulary.build(["a red 3"]))
    assert references.shape == (2, 2, 5) and references[0, 1].eq(PAD_ID).all()  # a missing reference: all padding


def test_scene_options_are_checked():
    with pytest.raises(ConfigError, match="quadrant"):
        SceneConfig(canvas_size=48)  # large objects of up to 46 px do not fit 24 px quadrants
    with pytest.raises(ConfigError, match="min_objects"):
        SceneConfig(min_objects=1)


@pytest.mark.skipif(not (SHARED_DATASETS / "MNIST").exists(), reason="needs the local MNIST")
def test_captioned_scenes_from_mnist_and_bad_options():
    from cnnlab.data.captions import load_caption_dataset

    sizes = {"train_size": 20, "val_size": 5, "test_size": 5}
    dataset = load_caption_dataset("captioned-scenes", SHARED_DATASETS, **sizes)
    again = load_caption_dataset("captioned-scenes", SHARED_DATASETS, **sizes)
    assert torch.equal(dataset.test.images, again.test.images) and dataset.train.captions == again.train.captions
    assert dataset.image_shape == (3, 96, 96) and len(dataset.val) == 5
    with pytest.raises(ConfigError, match="does not take option"):
        load_caption_dataset("captioned-scenes", SHARED_DATASETS, canvas=64)
    with pytest.raises(UnknownNameError):
        load_caption_dataset("flickr9k", SHARED_DATASETS)


# ---- readers ------------------------------------------------------------------------------------------------------
def test_flickr_karpathy_and_coco_readers(tmp_path):
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text("1000_a.jpg#0\tA dog runs .\n1000_a.jpg#1\tA brown dog running\n\n2000_b.jpg#0\tTwo cats .\n")
    flickr = read_flickr_tokens(tokens)
    assert flickr.captions == {"1000_a.jpg": ["A dog runs .", "A brown dog running"], "2000_b.jpg": ["Two cats ."]}
    karpathy = tmp_path / "dataset_flickr8k.json"
    karpathy.write_text(json.dumps({"dataset": "flickr8k", "images": [
        {"filename": "1000_a.jpg", "split": "train", "sentences": [{"raw": "A dog runs .", "tokens": ["a"]}]},
        {"filename": "2000_b.jpg", "split": "restval", "sentences": [{"tokens": ["two", "cats"]}]},
        {"filename": "3000_c.jpg", "split": "test", "sentences": [{"raw": "A bird ."}]},
    ]}))  # fmt: skip
    split = read_karpathy_split(karpathy)
    assert split.split("train") == {"1000_a.jpg": ["A dog runs ."], "2000_b.jpg": ["two cats"]}
    assert split.split("test") == {"3000_c.jpg": ["A bird ."]}
    coco = tmp_path / "captions_val2014.json"
    coco.write_text(json.dumps({"images": [{"id": 7, "file_name": "x.jpg"}, {"id": 9, "file_name": "y.jpg"}],
                                "annotations": [{"image_id": 9, "caption": "A cat."}, {"image_id": 7, "caption": "B"},
                                                {"image_id": 9, "caption": "Cat again "}]}))  # fmt: skip
    assert read_coco_captions(coco).captions == {"x.jpg": ["B"], "y.jpg": ["A cat.", "Cat again"]}


def test_readers_name_bad_input(tmp_path):
    bad = tmp_path / "bad.token"
    bad.write_text("1000_a.jpg#0\tfine\nno tab here\n")
    with pytest.raises(DataError, match="line 2"):
        read_flickr_tokens(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_coco_captions(tmp_path / "missing.json")
    coco = tmp_path / "c.json"
    listing = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}
    coco.write_text(json.dumps(listing))
    with pytest.raises(DataError, match="image id 2"):
        read_coco_captions(coco)
    karpathy = tmp_path / "k.json"
    karpathy.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}))
    with pytest.raises(DataError, match="split 'dev'"):
        read_karpathy_split(karpathy)


# ---- the generation model -----------------------------------------------------------------------------------------
def _captioner(vocab_size: int, side: int = 48, channels: int = 3, seed: int = 0) -> CaptionModel:
    torch.manual_seed(seed)
    encoder = models.create("dmnist-cnn", in_chans=channels, image_size=side)
    return CaptionModel(encoder, (channels, side, side), vocab_size, embed_dim=16, hidden_dim=32)


def test_teacher_forced_loss_equals_a_hand_computation():
    model = _captioner(vocab_size=6).eval().requires_grad_(False)
    images = torch.rand(2, 3, 48, 48)
    # <start> w w <end> <pad> / <start> w <end> <pad> <pad>, and one missing reference (all padding)
    references = torch.tensor([[[1, 4, 5, 2, 0], [0, 0, 0, 0, 0]], [[1, 5, 2, 0, 0], [1, 4, 4, 4, 2]]])
    mean, summed, count = model.loss(images, references)
    lstm, total, words = model.lstm, 0.0, 0
    w_ih, w_hh, bias = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    for b, r in ((0, 0), (1, 0), (1, 1)):
        tokens = references[b, r].tolist()
        h, c = torch.zeros(32), torch.zeros(32)
        inputs = [model.image_inputs(images[b : b + 1])[0]] + [model.embedding.weight[t] for t in tokens[:-1]]
        for step, x in enumerate(inputs):  # LSTM gates in PyTorch's order: input, forget, cell, output
            i, f, g, o = (w_ih @ x + w_hh @ h + bias).chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if step >= 1 and tokens[step] != PAD_ID:  # output after the image predicts nothing
                p = torch.softmax(model.output(h), 0)
                total, words = total - math.log(float(p[tokens[step]])), words + 1
    assert int(count) == words == 3 + 2 + 4
    assert float(summed) == pytest.approx(total, rel=1e-5)
    assert float(mean) == pytest.approx(total / words, rel=1e-5)


def test_beam_one_is_greedy_and_beam_captions_end():
    model = _captioner(vocab_size=12, seed=1).eval()
    images = torch.rand(5, 3, 48, 48)
    greedy = model.greedy(images, max_words=8)
    assert torch.equal(model.beam_search(images, beam=1, max_words=8), greedy)
    assert torch.equal(model.caption(images, beam=1, max_words=8), greedy)
    beamed = model.beam_search(images, beam=3, max_words=8)
    assert beamed.shape[0] == 5 and beamed.shape[1] <= 9
    for row in beamed.tolist():  # after the first <end> only padding
        if END_ID in row:
            assert all(t == PAD_ID for t in row[row.index(END_ID) + 1 :])
    with pytest.raises(ConfigError, match="beam width"):
        model.beam_search(images, beam=0)
    with pytest.raises(ConfigError, match="images of shape"):
        model.greedy(torch.rand(1, 3, 32, 32))


@pytest.mark.slow  # ≈ 10 s on the 2-core machine
def test_generation_model_overfits_ten_scenes_to_exact_captions():
    images, labels = _digits()
    scenes = make_scenes(images, labels, 10, TINY, seed=0, nouns=DIGIT_NOUNS)
    vocabulary = Vocabulary.build(c for refs in scenes.captions for c in refs)
    targets = vocabulary.encode([refs[0] for refs in scenes.captions])[:, None]  # the listing of each scene
    wanted = [detokenize(tokenize(refs[0])) for refs in scenes.captions]
    model = _captioner(len(vocabulary), side=32, channels=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    pixels = scenes.images.float() / 255
    for step in range(400):
        loss, _, _ = model.loss(pixels, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        # stop once greedy decoding and beam search both write every caption exactly: greedy alone can be right
        # while a sequence it passed over still scores higher in total (a beam found one on CI)
        if step % 25 == 24:
            model.eval()
            greedy = [vocabulary.decode(row) for row in model.greedy(pixels).tolist()]
            beamed = [vocabulary.decode(row) for row in model.beam_search(pixels, beam=3).tolist()]
            model.train()
            if greedy == wanted and beamed == wanted:
                break
    model.eval()
    assert [vocabulary.decode(row) for row in model.greedy(pixels).tolist()] == wanted
    assert [vocabulary.decode(row) for row in model.beam_search(pixels, beam=3).tolist()] == wanted


# ---- BLEU ---------------------------------------------------------------------------------------------------------
def _reference_bleu(hypotheses, references, n_max):
    """Papineni et al. 2002, written out: clipped n-gram precisions, geometric mean, brevity penalty from the
    closest reference length (ties: the shorter)."""
    matches, totals, length, closest = [0] * n_max, [0] * n_max, 0, 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        h, rs = hyp.split(), [r.split() for r in refs]
        length += len(h)
        closest += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, n_max + 1):
            grams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            most = Counter()
            for r in rs:
                most |= Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, most[g]) for g, c in grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / n_max
    penalty = 1.0 if length > closest else math.exp(1 - closest / length)
    return penalty * math.exp(log_precision)


def test_bleu_equals_a_reference_implementation():
    hypotheses = ["a small red 3 to the left of a large blue 7", "a large green 1 above a small white 2",
                  "a small yellow 5", "a red 3 and a blue 7 and a blue 7"]  # fmt: skip
    references = [
        ["a small red 3 to the left of a large blue 7", "a large blue 7 to the right of a small red 3"],
        ["a large green 1 below a small white 2", "a small white 2 above a large green 1", "a large green 1 , a x"],
        ["a small yellow 5 and a large red 0", "a large red 0 below a small yellow 5"],
        ["a small red 3 , a large blue 7 and a small green 1"],
    ]
    ours = corpus_bleu(hypotheses, references)
    for n in range(1, 5):
        assert ours[n] == pytest.approx(_reference_bleu(hypotheses, references, n), abs=1e-6)
    exact = corpus_bleu(["a b c d"], [["a b c d"]])
    assert exact[4] == pytest.approx(1.0)
    # one hand-computed value: "a b" against "a b c d": precisions 1 and 1, brevity penalty e^(1 − 4/2)
    assert corpus_bleu(["a b"], [["a b c d"]], max_n=2)[2] == pytest.approx(math.exp(-1), abs=1e-6)
    with pytest.raises(DataError):
        corpus_bleu(["a"], [])


# ---- CIDEr-D -------------------------------------------------------------------------------------------------------
CIDER_HYPOTHESES = ["a small red 3 to the left of a large blue 7", "a large green 1 above a small white 2",
                    "a small yellow 5", "a red 3 and a blue 7 and a blue 7", ""]  # fmt: skip
CIDER_REFERENCES = [
    ["a small red 3 to the left of a large blue 7", "a large blue 7 to the right of a small red 3"],
    ["a large green 1 below a small white 2", "a small white 2 above a large green 1", "a large green 1 , a x"],
    ["a small yellow 5 and a large red 0", "a large red 0 below a small yellow 5"],
    ["a small red 3 , a large blue 7 and a small green 1"],
    ["a small 3"],
]


def test_cider_d_by_hand_on_a_tiny_corpus():
    """Two images, N = 2: every n-gram is in one image's references, idf = log 2 − log 1 = log 2 (a word in no
    reference: idf log 2 too). Image 2 equals its reference: cosines 1, 1 for n = 1, 2 and none for n = 3, 4:
    10 · (1 + 1 + 0 + 0) / 4 = 5. Image 1, "a b b" against "a b": unigrams (log 2)·(1, 2) · (1, 1) clipped
    at the reference: (1·1 + min(2, 1)·1) / (√5 · √2); bigrams ab, bb against ab: 1 / (√2 · 1); the length
    penalty exp(−1² / 72)."""
    mean, scores = cider_d(["a b b", "c d"], [["a b"], ["c d"]])
    first = 10 * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert scores.tolist() == pytest.approx([first, 5.0])
    assert mean == pytest.approx((first + 5.0) / 2)
    # a word every image's references hold weighs nothing (idf log 2 − log 2): only "b" and "c" count
    assert cider_d(["a b", "a c"], [["a b"], ["a c"]])[1][0] == pytest.approx(10 * (1 + 1) / 4)
    with pytest.raises(DataError):
        cider_d(["a"], [[]])


def test_cider_d_equals_pycocoevalcap():
    cider_module = pytest.importorskip("pycocoevalcap.cider.cider")  # the `dev` extra; its CIDEr needs no Java
    from cnnlab.data.captions import detokenize, tokenize

    ours_mean, ours = cider_d(CIDER_HYPOTHESES, CIDER_REFERENCES)
    tokens = lambda text: detokenize(tokenize(text))  # noqa: E731  (coco-caption scores tokenised text)
    gts = {i: [tokens(r) for r in refs] for i, refs in enumerate(CIDER_REFERENCES)}
    res = {i: [tokens(h)] for i, h in enumerate(CIDER_HYPOTHESES)}
    theirs_mean, theirs = cider_module.Cider().compute_score(gts, res)
    assert ours.tolist() == pytest.approx(list(theirs), abs=1e-9)
    assert ours_mean == pytest.approx(float(theirs_mean), abs=1e-9)
    # and on generated scenes: the listing against the references of 200 scenes
    images, labels = _digits()
    scenes = make_scenes(images, labels, 200, SMALL, seed=3, nouns=DIGIT_NOUNS)
    hypotheses = [refs[-1] for refs in scenes.captions[1:]] + [scenes.captions[0][0]]  # one off by one: wrong
    _, ours = cider_d(hypotheses, scenes.captions)
    gts = {i: [tokens(r) for r in refs] for i, refs in enumerate(scenes.captions)}
    _, theirs = cider_module.Cider().compute_score(gts, {i: [tokens(h)] for i, h in enumerate(hypotheses)})
    assert ours.tolist() == pytest.approx(list(theirs), abs=1e-9)


def test_named_object_accuracy_by_hand():
    from cnnlab.data.caption_scenes import named_object_accuracy

    captions = ["a small red 3 above a large blue 8", "a small t-shirt"]
    listings = ["a small red 3, a large blue 7 and a small green 1", "a small shirt and a large t-shirt"]
    got = named_object_accuracy(captions, listings)
    # named: small red 3 (all right), large blue 8 (no 8 in the scene), small t-shirt (grey; no small t-shirt)
    assert {k: round(v, 4) for k, (v, _) in got.items()} == {"size": 100, "colour": 100, "noun": 66.6667,
                                                             "size+colour": 100, "all": 33.3333}  # fmt: skip
    # chance: scene 1 has 2 of 2 sizes, 3 of 5 colours, 3 of 10 digits; scene 2 (grey) 2 sizes, 2 of 10 clothes
    assert got["colour"][1] == pytest.approx(100 * (0.6 + 0.6 + 1) / 3)
    assert got["noun"][1] == pytest.approx(100 * (0.3 + 0.3 + 0.2) / 3)
    assert got["all"][1] == pytest.approx(100 * (3 / 100 + 3 / 100 + 2 / 20) / 3)
    assert named_object_accuracy(["nothing here"], ["a small 3 and a large 4"]) == {}


def test_most_common_caption_baseline_names_the_objects():
    images, labels = _digits()
    train = make_scenes(images, labels, 200, SMALL, seed=0, nouns=DIGIT_NOUNS)
    test = make_scenes(images, labels, 20, SMALL, seed=1, nouns=DIGIT_NOUNS)
    captions = most_common_captions(train, test.labels)
    assert len(captions) == 20
    assert captions == most_common_captions(train, test.labels)  # deterministic


# ---- the alignment model ------------------------------------------------------------------------------------------
def test_scores_ranking_loss_and_retrieval_by_hand():
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])  # 2 images, 2 regions each
    present = torch.tensor([[True, True], [True, False]])
    words = torch.tensor([[[2.0, 0.0], [0.0, 3.0]], [[1.0, 1.0], [5.0, 5.0]]])  # 2 sentences, 2 words each
    words_present = torch.tensor([[True, True], [True, False]])
    scores = alignment_scores(regions, present, words, words_present)
    # image 0, sentence 0: word (2,0) best region (1,0) → 2, word (0,3) → region (0,1) → 3: 5
    assert scores.tolist() == [[5.0, 1.0], [5.0, 2.0]]
    # eq. 9: image 0: max(0, 1 − 5 + 1) = 0; image 1 (true 2): max(0, 5 − 2 + 1) = 4 for sentence 0; sentences:
    # sentence 0 (true 5): max(0, 5 − 5 + 1) = 1; sentence 1 (true 2): max(0, 1 − 2 + 1) = 0. Sum 5, over 2.
    assert float(ranking_loss(scores)) == pytest.approx(5 / 2)
    table = retrieval(torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]), torch.tensor([0, 1, 1]))
    assert table.image_to_sentence["r1"] == 100.0 and table.image_to_sentence["median_rank"] == 1
    assert table.sentence_to_image == {"r1": 100.0, "r5": 100.0, "r10": 100.0, "median_rank": 1.0}
    assert retrieval(torch.zeros(2, 2), torch.tensor([0, 1])).image_to_sentence["r1"] == 0.0  # ties count against
    with pytest.raises(ConfigError, match="square"):
        ranking_loss(torch.zeros(2, 3))


@pytest.mark.slow  # ≈ 10 s on the 2-core machine
def test_alignment_model_overfits_ten_scenes():
    images, labels = _digits()
    scenes = make_scenes(images, labels, 20, TINY, seed=0, nouns=DIGIT_NOUNS)
    unique = list({refs[1]: i for i, refs in reversed(list(enumerate(scenes.captions)))}.values())[:10]
    scenes = CaptionSplit(
        scenes.images[unique], [scenes.captions[i] for i in unique], scenes.boxes[unique], scenes.labels[unique]
    )  # fmt: skip  (two scenes with one caption cannot be told apart)
    vocabulary = Vocabulary.build(c for refs in scenes.captions for c in refs)
    tokens = vocabulary.encode([refs[1] for refs in scenes.captions])  # one relation caption each
    torch.manual_seed(0)
    encoder = models.create("dmnist-cnn", in_chans=1, image_size=12)
    model = AlignmentModel(encoder, 1, len(vocabulary), region_size=12, embed_dim=32, word_dim=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    pixels, valid = scenes.images.float() / 255, scenes.labels >= 0
    for step in range(300):
        loss = ranking_loss(model(pixels, scenes.boxes, valid, tokens))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 24 and float(loss.detach()) == 0:  # every pair beats every other by the margin
            break
    with torch.no_grad():
        scores = alignment_scores(model.regions(pixels, scenes.boxes, valid), region_mask(valid),
                                  model.words(tokens), word_mask(tokens))  # fmt: skip
    table = retrieval(scores, torch.arange(10))
    assert table.image_to_sentence["r1"] == 100.0 and table.sentence_to_image["r1"] == 100.0


# ---- options and commands -----------------------------------------------------------------------------------------
def test_caption_options_refuse_bad_values():
    with pytest.raises(UnknownNameError):
        CaptionOptions(encoder="resnet9000")
    with pytest.raises(UnknownNameError):
        CaptionOptions(model="retrieval")
    with pytest.raises(ConfigError, match="hidden_dim"):
        CaptionOptions(hidden_dim=0)
    from cnnlab.captioning import build_captioner

    with pytest.raises(ConfigError, match="only takes 32×32"):
        build_captioner(CaptionOptions(encoder="lenet5"), (1, 96, 96), 10)
    model = build_captioner(CaptionOptions(encoder="resnet20"), (3, 40, 40), 10)  # global-pool features: 64
    assert model.image_projection[0].in_features == 64
    with pytest.raises(ConfigError, match="no such run directory or checkpoint"):
        CaptionOptions(encoder_weights="runs/no-such-encoder").check_encoder_weights()


def test_the_encoder_starts_from_a_classifier_run(tmp_path):
    """--encoder-weights RUN: the encoder's convolutions come from a classifier run of the same model (here a
    dmnist-cnn trained on the 8 px digits, the first layer split over RGB); another model's run is refused."""
    from cnnlab.captioning import build_captioner
    from cnnlab.cli import main
    from cnnlab.train.record import RunRecord

    run = tmp_path / "encoder"
    assert main(["train", "--model", "dmnist-cnn", "--data", "digits", "--epochs", "1", "--out", str(run)]) == 0
    notes = []
    model = build_captioner(CaptionOptions(encoder_weights=str(run)), (3, 96, 96), 10, notes.append)
    trained = RunRecord.load(run).build_model()
    assert torch.equal(model.encoder.features.conv2[0].weight, trained.features.conv2[0].weight)
    assert notes and "loaded 4 tensors" in notes[0]
    with pytest.raises(ConfigError, match="trained dmnist-cnn"):
        build_captioner(CaptionOptions(encoder="resnet20", encoder_weights=str(run)), (3, 40, 40), 10)
    # --encoder-lr: the encoder's weights in their own parameter group, at the factor times η
    from cnnlab.train.optim import multiplier_groups

    slow = build_captioner(CaptionOptions(encoder_lr=0.03), (3, 96, 96), 10)
    groups = multiplier_groups(slow, 0.003)
    encoder_ids = {id(p) for p in slow.encoder.parameters()}
    assert [g.get("lr") for g in groups] == [None, pytest.approx(0.003 * 0.03)]
    assert {id(p) for p in groups[1]["params"]} == encoder_ids
    assert not encoder_ids & {id(p) for p in groups[0]["params"]}
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="encoder_lr"):
            CaptionOptions(encoder_lr=bad)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATASETS / "MNIST").exists(), reason="needs the local MNIST")
def test_caption_commands_train_eval_predict(cli, tmp_path):
    sizes = ["--data-option", "train_size=64", "--data-option", "val_size=16", "--data-option", "test_size=16"]
    run, encoder = tmp_path / "gen", tmp_path / "encoder"
    code, _, err = cli("train", "--model", "dmnist-cnn", "--data", "digits", "--epochs", "1", "--out", encoder)
    assert code == 0, err
    code, out, err = cli("caption", "train", "--epochs", "1", "--out", run, "--data-root", SHARED_DATASETS, *sizes,
                         "--encoder-weights", encoder, "--encoder-lr", "0.1")  # fmt: skip
    assert code == 0, err
    assert "run directory" in out and (run / "checkpoint.pt").exists() and "loaded 4 tensors" in err + out
    shutil.rmtree(encoder)  # a resumed run has its weights: the source run is not read again
    code, out, err = cli("caption", "train", "--resume", run, "--epochs", "2", "--data-root", SHARED_DATASETS)
    assert code == 0, err
    assert "after 2 epochs" in out and len((run / "metrics.csv").read_text().splitlines()) == 3
    code, out, err = cli("caption", "eval", run, "--data-root", SHARED_DATASETS, "--limit", "8", "--samples", "2")
    assert code == 0, err
    assert "greedy: BLEU-1" in out and "baseline" in out and (run / "eval-test-samples.png").exists()
    record = json.loads((run / "eval-test.json").read_text())
    assert "CIDEr-D" in out and set(record["cider"]) == {"greedy", "beam", "baseline"} and "objects" in record
    from PIL import Image

    image = tmp_path / "scene.png"
    Image.new("RGB", (96, 96)).save(image)
    code, out, err = cli("caption", "predict", run, image, "--out", tmp_path / "pred")
    assert code == 0, err
    assert "scene.png:" in out and (tmp_path / "pred" / "scene-caption.png").exists()
    code, out, err = cli("caption", "predict", run, tmp_path / "missing.png")
    assert code != 0 and "missing.png does not" in err
    code, _, err = cli("caption", "train", "--model", "alignment", "--epochs", "1", "--out", tmp_path / "align",
                       "--data-root", SHARED_DATASETS, *sizes)  # fmt: skip
    assert code == 0, err
    code, out, err = cli("caption", "eval", tmp_path / "align", "--data-root", SHARED_DATASETS, "--samples", "2")
    assert code == 0, err
    assert "image→sentence: R@1" in out and (tmp_path / "align" / "eval-test-alignment.png").exists()
    code, out, err = cli("caption", "predict", tmp_path / "align", image, "--caption", "a small 3")
    assert code == 0, err  # an alignment run aligns a sentence (more in test_predict_for_an_alignment_run_...)
    assert (
        out.startswith(f"{image}: a small 3") and (tmp_path / "align" / "predictions" / "scene-alignment.png").exists()
    )


def test_data_list_shows_the_caption_datasets(cli):
    code, out, err = cli("data", "list")
    assert code == 0, err
    assert "captioned-scenes " in out and "captioned-fashion-scenes " in out


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A generation and an alignment run of one epoch on 64 scenes (checkpoints to load, not good models)."""
    if not (SHARED_DATASETS / "MNIST").exists():
        pytest.skip("needs the local MNIST")
    from cnnlab.cli import main

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("caption-runs")
    sizes = ["--data-option", "train_size=64", "--data-option", "val_size=16", "--data-option", "test_size=16"]
    for kind in ("generation", "alignment"):
        argv = ["caption", "train", "--model", kind, "--epochs", "1", "--out", str(folder / kind), *sizes]
        assert main([*argv, "--data-root", str(SHARED_DATASETS)]) == 0
    scenes = make_scenes(*_digits(), 1, SceneConfig(), seed=5, nouns=DIGIT_NOUNS)
    from PIL import Image

    Image.fromarray(scenes.images[0].permute(1, 2, 0).numpy()).save(folder / "scene.png")
    return folder


@pytest.mark.slow
def test_predict_for_an_alignment_run_draws_each_words_region(cli, tiny_runs, tmp_path):
    run, image = tiny_runs / "alignment", tiny_runs / "scene.png"
    sentence = "a small red 3 above a large blue 7"
    code, out, err = cli("caption", "predict", run, image, "--caption", sentence, "--out", tmp_path)
    assert code == 0, err
    assert out.startswith(f"{image}: {sentence}") and (tmp_path / "scene-alignment.png").exists()
    from cnnlab.captioning import predict_captions

    (prediction,) = predict_captions(run, [image], caption=sentence, out=tmp_path)
    assert [word for word, _, _ in prediction.regions] == sentence.split()
    for _, region, box in prediction.regions:  # region 0 is the whole image, the others proposals inside it
        assert (box == (0.0, 0.0, 96.0, 96.0)) if region == 0 else (0 <= box[0] < box[2] <= 96 >= box[3] > box[1])
    assert sum(len(line.split(": ", 1)[1].split()) for line in prediction.region_lines()) == len(sentence.split())
    # without --caption: the training caption that scores highest
    code, out, err = cli("caption", "predict", run, image, "--out", tmp_path, "--data-root", SHARED_DATASETS)
    assert code == 0, err
    (chosen,) = predict_captions(run, [image], out=tmp_path, data_root=str(SHARED_DATASETS))
    from cnnlab.data.captions import load_caption_dataset

    train = load_caption_dataset("captioned-scenes", SHARED_DATASETS, train_size=64, val_size=16, test_size=16).train
    assert chosen.caption in {c for refs in train.captions for c in refs}
    # eval on proposals instead of the scenes' boxes
    code, out, err = cli("caption", "eval", run, "--regions", "proposals", "--limit", "4", "--samples", "1",
                         "--out", tmp_path, "--data-root", SHARED_DATASETS)  # fmt: skip
    assert code == 0, err
    assert (
        "image→sentence: R@1" in out and "proposals" in json.loads((tmp_path / "eval-test.json").read_text())["seconds"]
    )
    code, _, err = cli("caption", "predict", tiny_runs / "generation", image, "--caption", sentence)
    assert code != 0 and "--caption" in err
    code, _, err = cli("caption", "predict", run, image, "--caption", "", "--out", tmp_path)
    assert code != 0 and "no word" in err


@pytest.mark.slow
def test_eval_and_predict_into_a_read_only_run_are_clear_errors(tiny_runs, tmp_path):
    """The run folders bind-mounted read-only in a private mount namespace (root ignores file modes)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount a folder read-only privately")
    runs, image = tiny_runs, tiny_runs / "scene.png"
    data = ["--data-root", str(SHARED_DATASETS)]
    commands = [
        ["caption", "eval", str(runs / "generation"), "--limit", "4", *data],
        ["caption", "eval", str(runs / "alignment"), "--limit", "4", *data],
        ["caption", "predict", str(runs / "generation"), str(image)],
        ["caption", "predict", str(runs / "alignment"), str(image), "--caption", "a small 3"],
    ]
    mounts = " && ".join(f"mount --bind {f} {f} && mount -o remount,ro,bind {f} {f}"
                         for f in (runs / "generation", runs / "alignment"))  # fmt: skip
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mounts], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount privately here: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'{mounts} && exec {sys.executable} -c "$0" "$1"', READ_ONLY_DRIVER,
         json.dumps(commands)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for argv, (code, err) in zip(commands, json.loads(result.stdout.splitlines()[-1]), strict=True):
        text = " ".join(err.split())  # the CLI wraps its messages
        assert code != 0 and "Traceback" not in err and "cannot be written" in text and "--out" in text, (argv, err)
    # and --out elsewhere works on the same read-only run
    argv = [["caption", "eval", str(runs / "generation"), "--limit", "4", "--out", str(tmp_path), *data]]
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'{mounts} && exec {sys.executable} -c "$0" "$1"', READ_ONLY_DRIVER,
         json.dumps(argv)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert json.loads(result.stdout.splitlines()[-1])[0][0] == 0, result.stdout[-2000:]
    assert (tmp_path / "eval-test.json").exists() and "cider" in json.loads((tmp_path / "eval-test.json").read_text())

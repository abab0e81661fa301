"""The demo models' world and scorers, without any model: deterministic data, held-back
combinations really held back, scorers that read back what was drawn."""

from __future__ import annotations

import numpy as np

from training import shapes


def test_dataset_is_deterministic_and_seeded():
    s1, a = shapes.dataset(50, 3)
    s2, b = shapes.dataset(50, 3)
    _, c = shapes.dataset(50, 4)
    assert s1 == s2 and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (50, 64, 64, 3) and a.dtype == np.uint8


def test_held_out_combinations_never_appear_in_training_data():
    held = set(shapes.held_out())
    assert len(held) >= 40
    scenes, _ = shapes.dataset(3000, 0)
    assert not {s.combo for s in scenes} & held
    # every colour, shape, position and background is still seen in training
    train = shapes.training_combos()
    for i, values in enumerate((shapes.COLOURS, shapes.SHAPES, shapes.POSITIONS,
                                shapes.BACKGROUNDS)):
        assert {c[i] for c in train} == set(values)


def test_scorers_read_back_rendered_scenes():
    scenes, images = shapes.dataset(300, 9, combos=shapes.held_out())
    scores = [shapes.score(img, s.colour, s.position) for s, img in zip(scenes, images)]
    assert all(c and p for c, p in scores)
    # and they can fail: the wrong colour or region scores false
    s, img = scenes[0], images[0]
    other = next(c for c in shapes.COLOURS if c != s.colour)
    assert shapes.score(img, other, s.position) == (False, True)
    blank = np.full((64, 64, 3), 128, np.uint8)
    assert shapes.score(blank, s.colour, s.position) == (False, False)


def test_edge_maps_enclose_their_shapes():
    scenes, _ = shapes.dataset(100, 5, free=True)
    for s in scenes:
        assert shapes.iou(shapes.filled(shapes.edge_map(s)), shapes.shape_mask(s) > 0.5) > 0.95


def test_half_resolution_copy():
    _, images = shapes.dataset(2, 1)
    h = shapes.half(images[0])
    assert h.shape == (32, 32, 3)
    assert abs(float(h.mean()) - float(images[0].mean())) < 2


def test_tokenizer_gives_each_caption_word_one_token(tmp_path):
    from transformers import CLIPTokenizer

    from training.vocab import write_tokenizer

    write_tokenizer(tmp_path, shapes.WORDS, 16)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    for combo in shapes.held_out():
        text = shapes.caption(*combo)
        ids = tok(text, add_special_tokens=False).input_ids
        assert len(ids) == len(text.replace(",", " ,").split())
    assert len(tok("a zebra", add_special_tokens=False).input_ids) > 2  # other text: bytes

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from clva_lite.toy import CATEGORIES, PARTNERS, Split, caption, generate_scene, mme_questions, pope_questions, world
from clva_lite.toy import questions as toy_questions
from clva_lite.toy.model import build_tokenizer
from clva_lite.toy.questions import train_statistics
from clva_lite.toy.world import SPLIT_SEED_BASE, SPLIT_SIZE_LIMIT, patch_labels, scene_seed


def test_scene_is_deterministic():
    a, b = generate_scene("test", 7), generate_scene(Split.TEST, 7)
    assert a == b
    assert np.array_equal(np.asarray(a.image()), np.asarray(b.image()))
    assert a.image().size == (96, 96)


def test_splits_use_disjoint_seed_ranges():
    ranges = sorted((SPLIT_SEED_BASE[s], SPLIT_SEED_BASE[s] + SPLIT_SIZE_LIMIT) for s in Split)
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        assert end <= start
    assert scene_seed("train", 5) != scene_seed("calibration", 5) != scene_seed("test", 5)
    with pytest.raises(ValueError, match="outside"):
        scene_seed("train", SPLIT_SIZE_LIMIT)
    with pytest.raises(ValueError, match="unknown split"):
        generate_scene("validation", 0)
    assert generate_scene("train", 3).objects != generate_scene("test", 3).objects


def test_categories_groups_and_popularity():
    assert len(CATEGORIES) == 24 == len(set(CATEGORIES))
    assert len(world.GROUPS) == 6 and all(len(g) == 4 for g in world.GROUPS)
    assert len(set(world.POPULARITY.values())) == 24  # unequal popularity
    assert world.NUM_VISUAL_TOKENS == 144


def test_scenes_hold_three_to_six_objects_with_cooccurrence():
    scenes = [generate_scene("train", i) for i in range(400)]
    assert {len(s.objects) for s in scenes} == {3, 4, 5, 6}
    for s in scenes:
        groups = [world.GROUP_OF[c] for c in s.categories]
        assert max(groups.count(g) for g in groups) <= world.GROUP_CAP
    with_star = [s for s in scenes if "star" in s.categories]
    mates = sum(any(m in s.categories for m in PARTNERS["star"]) for s in with_star) / len(with_star)
    others = sum("diamond" in s.categories for s in with_star) / len(with_star)
    assert mates > 0.5 > 0.2 > others  # group-mates co-occur, others rarely


def test_object_centres_sit_on_patch_centres():
    for s in [generate_scene("train", i) for i in range(50)]:
        for o in s.objects:
            half = world.PATCH_SIZE / 2
            assert (o.x - half) % world.PATCH_SIZE == 0 == (o.y - half) % world.PATCH_SIZE


def _digest() -> str:
    text = "|".join(caption(generate_scene("test", i)) for i in range(30))
    text += "|".join(q.text + q.label for q in pope_questions("test", 30, "adversarial"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_generation_does_not_depend_on_hash_seed():
    code = "from tests.test_world import _digest; print(_digest())"
    # one child process under a hash seed other than this process's (a second child only repeats the comparison)
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest()


def test_caption_lists_objects_left_to_right():
    scene = generate_scene("test", 11)
    words = caption(scene).split()
    named = [w for w in words if w in CATEGORIES]
    assert named == [o.category for o in sorted(scene.objects, key=lambda o: (o.x, o.y))]
    assert caption(scene).endswith(" .")


@pytest.mark.parametrize("sampling", ["random", "popular", "adversarial"])
def test_pope_sampling_rules(sampling):
    questions = pope_questions("calibration", 60, sampling)
    frequency, cooccurrence = train_statistics()
    by_scene = {}
    for q in questions:
        by_scene.setdefault(q.scene_index, []).append(q)
    assert by_scene
    for index, qs in by_scene.items():
        scene = generate_scene("calibration", index)
        assert len(scene.objects) >= 3
        positives = [q.category for q in qs if q.label == "yes"]
        negatives = [q.category for q in qs if q.label == "no"]
        assert len(positives) == len(negatives) <= 3
        assert all(c in scene.categories for c in positives)
        assert all(c not in scene.categories for c in negatives)
        assert len(set(negatives)) == len(negatives)
        for positive, negative in zip(positives, negatives):
            absent = [c for c in CATEGORIES if c not in scene.categories]
            if sampling == "adversarial":
                best = max(cooccurrence[positive, c] for c in absent if c not in negatives or c == negative)
                assert cooccurrence[positive, negative] == best
            if sampling == "popular":
                assert frequency[negative] >= min(frequency[c] for c in absent)
    share = toy_questions.adversarial_groupmate_share(questions)
    # adversarial negatives are mostly absent group-mates (GROUP_CAP leaves two absent mates per present group)
    assert share > 0.6 if sampling == "adversarial" else share < 0.45
    assert [q.label for q in questions[:4]] == ["yes", "no", "yes", "no"]


@pytest.mark.parametrize("subtask", ["existence", "count", "position", "color"])
def test_mme_pairs_are_one_yes_one_no_and_true(subtask):
    questions = mme_questions("test", 40, subtask)
    assert len(questions) >= 40 and len(questions) % 2 == 0
    for yes, no in zip(questions[::2], questions[1::2]):
        assert (yes.label, no.label) == ("yes", "no") and yes.scene_index == no.scene_index
        scene = yes.scene
        assert not yes.text.endswith("?") and "answer" not in yes.text.split()  # the asked-about word comes last
        if subtask == "existence":
            assert yes.text.split()[-1] in scene.categories and no.text.split()[-1] not in scene.categories
        if subtask == "color":
            category, colour = yes.text.split()[2:4]
            assert [o.colour for o in scene.objects if o.category == category] == [colour]
        if subtask == "count":
            words = yes.text.split()
            category = next(c for c in CATEGORIES if words[-1] in (c, world.PLURALS[c]))
            assert scene.count(category) == toy_questions.NUMBER_WORDS.index(words[-2])


def test_patch_labels_cover_objects():
    scene = generate_scene("test", 2)
    categories, colours = patch_labels(scene)
    assert categories.shape == (12, 12)
    present = {CATEGORIES[c] for c in np.unique(categories) if c < len(CATEGORIES)}
    assert present <= set(scene.categories) and present


def test_tokenizer_round_trip():
    tokenizer = build_tokenizer()
    text = caption(generate_scene("test", 4))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert tokenizer(text)["input_ids"][0] == tokenizer.bos_token_id


def test_glyph_textures_tell_categories_apart_and_leave_the_background(monkeypatch):
    scene = world.generate_scene("train", 7)
    textured = np.asarray(scene.image(), dtype=float)
    monkeypatch.setattr(world, "TEXTURES", False)
    flat = np.asarray(scene.image(), dtype=float)
    inside = np.zeros((96, 96), bool)
    for obj in scene.objects:
        inside |= world.object_mask(obj) > 0
    assert np.array_equal(textured[~inside], flat[~inside])  # no random draw added: background and clutter as before
    assert np.abs(textured[inside] - flat[inside]).mean() > 5
    monkeypatch.setattr(world, "TEXTURES", True)
    star, moon, cross = (world.ToyObject(c, "red", 48.0, 48.0, 16.0, False) for c in ("star", "moon", "cross"))
    same_group = np.abs(world.surface_texture(star) - world.surface_texture(moon)).mean()
    other_group = np.abs(world.surface_texture(star) - world.surface_texture(cross)).mean()
    assert same_group > 0.05 and other_group > 0.05  # every category its own stripes
    stripes = world.surface_texture(star)
    assert stripes.min() >= 1 - world.TEXTURE_DEPTH - 1e-9 and stripes.max() <= 1


def test_a_rendered_scene_is_a_fresh_copy_each_time():
    scene = generate_scene("calibration", 5)
    first = scene.image()
    first.putpixel((0, 0), (1, 2, 3))  # drawing on one copy must not reach the cached pixels
    second = scene.image()
    uncached = world._rendered_pixels.__wrapped__(scene, world.IMAGE_SIZE, ())
    assert second is not first
    assert np.array_equal(np.asarray(second), uncached)
    assert not np.array_equal(np.asarray(first), uncached)


def test_the_decoy_world_adds_unnamed_decoys_and_keeps_every_object():
    with_decoys = [generate_scene("calibration", i, "decoys") for i in range(300)]
    plain = [generate_scene("calibration", i, "plain") for i in range(300)]
    counts = [len(s.decoys) for s in with_decoys]
    assert set(counts) == {0, 1, 2} and 0.6 < np.mean(counts) < 1.2
    groupmates = 0
    for scene, base in zip(with_decoys, plain):
        assert scene.objects == base.objects and scene.background_seed == base.background_seed and not base.decoys
        named = {d.category for d in scene.decoys}
        assert len(named) == len(scene.decoys) and not named & set(scene.categories)  # distinct, never present
        assert caption(scene) == caption(base)  # captions never name a decoy
        groupmates += sum(any(d.category in PARTNERS[c] for c in scene.categories) for d in scene.decoys)
        for decoy in scene.decoys:
            assert decoy.x % world.PATCH_SIZE == world.PATCH_SIZE / 2 == decoy.y % world.PATCH_SIZE
    assert groupmates > 0.7 * sum(counts)
    with world.using_world("decoys"):  # the benchmarks' questions are the same in both worlds
        asked_with_decoys = pope_questions("calibration", 50, "adversarial")
    assert asked_with_decoys == pope_questions("calibration", 50, "adversarial")


def test_a_decoy_is_a_flat_glyph_under_the_objects():
    scene = next(s for i in range(50) if (s := generate_scene("train", i, "decoys")).decoys)
    with_decoys = np.asarray(scene.image(), dtype=float)
    without = np.asarray(generate_scene("train", scene.index, "plain").image(), dtype=float)
    decoy = scene.decoys[0]
    inside = world.object_mask(decoy) > 0.99
    for obj in scene.objects:
        inside &= world.object_mask(obj) == 0
    assert inside.sum() > 50 and np.abs(with_decoys[inside] - without[inside]).mean() > 5
    flat = np.array(world.COLOURS[decoy.colour]) * (1 - world.TEXTURE_DEPTH / 2)
    assert np.abs(with_decoys[inside] - flat).max() <= 1  # one colour: no stripes
    outside = np.ones((96, 96), bool)
    for d in scene.decoys:
        outside &= world.object_mask(d) == 0
    assert np.array_equal(with_decoys[outside], without[outside])


def test_the_active_world_is_scoped_and_checked():
    assert world.active_world() == "plain"
    with world.using_world("decoys"):
        assert world.active_world() == "decoys"
        assert generate_scene("test", 3) == generate_scene("test", 3, "decoys")
        with pytest.raises(RuntimeError):
            with world.using_world("plain"):
                raise RuntimeError("the block fails")
        assert world.active_world() == "decoys"  # restored after the failing block
    assert world.active_world() == "plain"
    with pytest.raises(ValueError, match="unknown toy world 'fog'.*plain, decoys"):
        generate_scene("test", 3, "fog")


def test_the_decoy_patch_mask_marks_the_decoys_the_objects_leave_visible():
    scene = next(s for i in range(50) if len((s := generate_scene("train", i, "decoys")).decoys) == 2)
    mask = world.decoy_patch_mask(scene)
    assert mask.shape == (world.NUM_VISUAL_TOKENS,) and 2 <= mask.sum() <= 2 * 16
    assert (mask & world.object_patch_mask(scene)).sum() <= mask.sum() / 2  # decoys sit clear of the objects
    for decoy in scene.decoys:  # a decoy's centre patch is marked unless an object hides it
        centre = int(decoy.y // world.PATCH_SIZE) * world.GRID + int(decoy.x // world.PATCH_SIZE)
        hidden = any(world.object_mask(o)[int(decoy.y), int(decoy.x)] > 0.5 for o in scene.objects)
        assert mask[centre] or hidden
    assert not world.decoy_patch_mask(generate_scene("train", scene.index, "plain")).any()

"""AMBER's discriminative questions: read in their published format and answered by the evaluator."""

import json
from pathlib import Path

import pytest

import clva_lite
from clva_lite.eval.benchmarks import load_amber_discriminative
from clva_lite.eval.items import pope_file_items, run_items
from clva_lite.eval.prefix import SharedPrefixes
from clva_lite.toy import generate_scene

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks" / "amber"
SHARED = Path(__file__).parents[2] / "shared" / "benchmarks" / "amber"
QUERY, ANNOTATIONS = FIXTURES / "query_discriminative-existence_mini.json", FIXTURES / "annotations_mini.json"


def test_questions_get_their_truth_and_the_split_is_named_by_the_file():
    questions = load_amber_discriminative(QUERY, ANNOTATIONS)
    assert [(q.question_id, q.image, q.label) for q in questions] == [
        (101, "AMBER_1.jpg", "yes"), (102, "AMBER_1.jpg", "no"), (103, "AMBER_2.jpg", "no"),
        (104, "AMBER_2.jpg", "yes")]
    assert {q.split for q in questions} == {"amber-existence"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="the published AMBER files are not beside this checkout")
def test_the_published_existence_file_reads_with_yes_and_no_truth():
    questions = load_amber_discriminative(SHARED / "query_discriminative-existence.json", SHARED / "annotations.json")
    # every existence probe in the published file asks about an absent object
    assert len(questions) > 4000 and {q.label for q in questions} == {"no"}
    assert all(q.text.startswith("Is there") for q in questions)


def test_bad_files_say_which_id_is_wrong(tmp_path):
    query = json.loads(QUERY.read_text())
    (tmp_path / "q.json").write_text(json.dumps(query + [{**query[0], "image": "AMBER_9.jpg"}]))
    with pytest.raises(ValueError, match="id 101 is listed twice"):
        load_amber_discriminative(tmp_path / "q.json", ANNOTATIONS)
    (tmp_path / "q2.json").write_text(json.dumps([{"id": 999, "image": "AMBER_1.jpg", "query": "Is there a cat?"}]))
    with pytest.raises(ValueError, match="id 999 has no entry in annotations_mini.json"):
        load_amber_discriminative(tmp_path / "q2.json", ANNOTATIONS)
    with pytest.raises(FileNotFoundError, match="AMBER repository"):
        load_amber_discriminative(tmp_path / "missing.json", ANNOTATIONS)


def test_the_evaluator_answers_them_with_one_prefix_per_image(tiny_dirs, tmp_path):
    loaded = clva_lite.load_model(tiny_dirs["llava-llama"], device="cpu")
    for k in (1, 2):
        generate_scene("test", k).image().save(tmp_path / f"AMBER_{k}.jpg")
    items = pope_file_items(load_amber_discriminative(QUERY, ANNOTATIONS), tmp_path)
    store = SharedPrefixes(loaded)
    shared = run_items(loaded, clva_lite.vanilla(), items, max_new_tokens=2, shared_prefix=store)
    full = run_items(loaded, clva_lite.vanilla(), items, max_new_tokens=2, shared_prefix=False)
    assert [r["response"] for r in shared] == [r["response"] for r in full]
    assert store.prefills == 1 and len(store._caches) == 2  # two images, one batched prefix pass
    assert {r["kind"] for r in shared} == {"amber-existence"}

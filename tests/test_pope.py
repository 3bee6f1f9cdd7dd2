import json
from collections import Counter
from pathlib import Path

import pytest

from clva_lite.eval.benchmarks.pope import (
    PopeQuestion,
    infer_pope_split,
    load_pope,
    load_pope_answers,
    parse_pope_answer,
    pope_metric_fn,
    pope_metrics,
    pope_metrics_by_split,
)

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
SHARED_POPE = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "pope"


def shared_file(name: str) -> Path:
    path = SHARED_POPE / name
    if not path.is_file():
        pytest.skip(f"real POPE file not available: {path}")
    return path


def test_jsonl_question_file_loads_with_split_from_name():
    questions = load_pope(FIXTURES / "coco_pope_random_mini.json")
    assert len(questions) == 6
    assert questions[0] == PopeQuestion(1, "COCO_val2014_000000000101.jpg", "Is there a snowboard in the image?",
                                        "yes", "random")
    assert [q.label for q in questions] == ["yes", "no", "yes", "yes", "no", "no"]
    assert load_pope(FIXTURES / "coco_pope_random_mini.json", split="custom")[0].split == "custom"


def test_json_array_question_file_loads():
    questions = load_pope(FIXTURES / "gqa_pope_seem_popular_mini.json")
    assert [q.question_id for q in questions] == [1, 2, 3, 4]
    assert questions[2].image == "2300002.jpg" and questions[2].text == "Is there a person in the image?"
    assert {q.split for q in questions} == {"popular"}


def test_split_is_inferred_only_when_unambiguous():
    assert infer_pope_split("coco_pope_adversarial.json") == "adversarial"
    assert infer_pope_split("coco_pope_random_e3e3926_2910q.json") == "random"
    assert infer_pope_split("my_questions.json") is None


def test_official_answer_rule():
    assert parse_pope_answer("No.") == "no"
    assert parse_pope_answer("no") == "no"
    assert parse_pope_answer("Yes, there is a dog.") == "yes"
    assert parse_pope_answer("There is no dog in the image.") == "no"
    assert parse_pope_answer("Yes, but it is not clear.") == "no"  # "not" inside the first sentence
    assert parse_pope_answer("Yes. It is not a cat.") == "yes"  # only the first sentence counts
    assert parse_pope_answer("No, there is none.") == "no"  # the comma is removed before splitting
    assert parse_pope_answer("NO") == "yes"  # the official rule is case-sensitive
    assert parse_pope_answer("") == "yes"


def test_nt_option_counts_contractions_as_no():
    assert parse_pope_answer("There isn't a dog.") == "yes"
    assert parse_pope_answer("There isn't a dog.", treat_nt_as_no=True) == "no"
    assert parse_pope_answer("I don\u2019t see one", treat_nt_as_no=True) == "no"
    assert parse_pope_answer("Yes, there is.", treat_nt_as_no=True) == "yes"


def test_metrics_on_fixture_answers_hand_computed():
    labels = [q.label for q in load_pope(FIXTURES / "coco_pope_random_mini.json")]
    answers = load_pope_answers(FIXTURES / "pope_answers_mini.json")
    assert answers[4].answer == "There isn't a giraffe in the image."
    official = pope_metrics([parse_pope_answer(a.answer) for a in answers], labels)
    assert (official["tp"], official["fp"], official["tn"], official["fn"]) == (2, 1, 2, 1)
    assert official["accuracy"] == pytest.approx(4 / 6)
    assert official["precision"] == pytest.approx(2 / 3)
    assert official["recall"] == pytest.approx(2 / 3)
    assert official["f1"] == pytest.approx(2 / 3)
    assert official["yes_ratio"] == pytest.approx(0.5)
    strict = pope_metrics([parse_pope_answer(a.answer, treat_nt_as_no=True) for a in answers], labels)
    assert strict["accuracy"] == pytest.approx(5 / 6)
    assert strict["precision"] == 1.0
    assert strict["f1"] == pytest.approx(0.8)
    assert strict["yes_ratio"] == pytest.approx(2 / 6)


def test_all_yes_answers():
    labels = ["yes", "no", "yes", "yes", "no"]
    result = pope_metrics(["yes"] * 5, labels)
    assert result["precision"] == pytest.approx(0.6)  # the label yes-rate
    assert result["recall"] == 1.0
    assert result["f1"] == pytest.approx(0.75)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["yes_ratio"] == 1.0
    assert result["n"] == 5


def test_all_no_answers_define_precision_and_f1_as_zero():
    result = pope_metrics(["no"] * 4, ["yes", "no", "no", "no"])
    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["f1"] == 0.0
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["yes_ratio"] == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        pope_metrics(["yes", "no"], ["yes", "no", "no"])
    with pytest.raises(ValueError, match="parse_pope_answer"):
        pope_metrics(["Yes, there is."], ["yes"])
    with pytest.raises(ValueError, match="no predictions"):
        pope_metrics([], [])


def test_metrics_by_split_and_metric_fn():
    records = [
        {"split": "random", "prediction": "yes", "label": "yes"},
        {"split": "random", "prediction": "no", "label": "yes"},
        {"split": "adversarial", "prediction": "yes", "label": "no"},
        {"split": "adversarial", "prediction": "no", "label": "no"},
    ]
    result = pope_metrics_by_split(records)
    assert list(result) == ["random", "adversarial"]
    assert result["random"]["accuracy"] == 0.5 and result["random"]["precision"] == 1.0
    assert result["adversarial"]["precision"] == 0.0 and result["adversarial"]["yes_ratio"] == 0.5
    assert pope_metric_fn("accuracy")(records) == 0.5
    with pytest.raises(ValueError, match="unknown POPE metric"):
        pope_metric_fn("auc")


def test_missing_file_names_path_and_source(tmp_path):
    missing = tmp_path / "coco_pope_random.json"
    with pytest.raises(FileNotFoundError) as error:
        load_pope(missing)
    assert str(missing) in str(error.value)
    assert "AoiDragon/POPE" in str(error.value) and "output/coco/" in str(error.value)


@pytest.mark.parametrize("bad_line,message", [
    ('{"question_id": 3, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"', "line 3: not valid JSON"),
    ('{"question_id": 3, "image": "a.jpg", "label": "yes"}', "line 3: missing key(s) text"),
    ('{"question_id": 3, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"}',
     "line 3: label must be 'yes' or 'no'"),
])
def test_malformed_jsonl_line_is_reported_with_line_number(tmp_path, bad_line, message):
    good = [json.dumps({"question_id": i, "image": "a.jpg", "text": "Is there a dog?", "label": "no"}) for i in (1, 2)]
    path = tmp_path / "pope_random.json"
    path.write_text("\n".join([*good, bad_line]) + "\n")
    with pytest.raises(ValueError) as error:
        load_pope(path)
    assert "pope_random.json" in str(error.value)
    assert message in str(error.value)


def test_malformed_array_item_is_reported_with_line_number(tmp_path):
    items = json.loads((FIXTURES / "gqa_pope_seem_popular_mini.json").read_text())
    del items[2]["label"]
    path = tmp_path / "seem.json"
    path.write_text(json.dumps(items, indent=4))
    with pytest.raises(ValueError, match=r"seem.json, line 14: missing key\(s\) label"):
        load_pope(path)
    path.write_text('[\n  {"question_id": 1, "image": "a.jpg", "text": "t", "label": "yes"}\n  {"oops": 1}\n]')
    with pytest.raises(ValueError, match="line 3: expected ',' or ']'"):
        load_pope(path)


def test_answer_file_passed_as_questions_gets_a_hint():
    with pytest.raises(ValueError, match="load_pope_answers"):
        load_pope(FIXTURES / "pope_answers_mini.json")


@pytest.mark.parametrize("name,split", [("coco_pope_random.json", "random"), ("coco_pope_popular.json", "popular"),
                                        ("coco_pope_adversarial.json", "adversarial")])
def test_real_coco_files_have_3000_balanced_questions_six_per_image(name, split):
    questions = load_pope(shared_file(name))
    assert len(questions) == 3000
    assert Counter(q.label for q in questions) == {"yes": 1500, "no": 1500}
    assert set(Counter(q.image for q in questions).values()) == {6}
    assert len({q.image for q in questions}) == 500
    assert {q.split for q in questions} == {split}
    assert [q.question_id for q in questions] == list(range(1, 3001))


@pytest.mark.parametrize("dataset", ["aokvqa", "gqa"])
@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_real_seem_files_are_json_arrays(dataset, split):
    path = shared_file(f"{dataset}_pope_seem_{split}.json")
    assert path.read_text().lstrip().startswith("[")
    questions = load_pope(path)
    assert len(questions) == 3000
    assert sum(q.label == "yes" for q in questions) == 1500
    assert len({q.image for q in questions}) == 500
    assert questions[0].split == split


def test_real_older_random_file_has_2910_questions():
    questions = load_pope(shared_file("coco_pope_random_e3e3926_2910q.json"))
    assert len(questions) == 2910
    assert Counter(q.label for q in questions) == {"yes": 1500, "no": 1410}
    current = load_pope(shared_file("coco_pope_random.json"))
    assert {q.image for q in questions} == {q.image for q in current}


def test_real_example_answer_file():
    answers = load_pope_answers(shared_file("example.json"))
    assert len(answers) == 1
    assert answers[0].question == "is there a bird in the image?"
    assert parse_pope_answer(answers[0].answer) == "yes"

from pathlib import Path

import pytest

from clva_lite.eval.benchmarks.mme import MmeRecord, load_mme_results, mme_scores, parse_mme_answer

RESULTS = Path(__file__).parent / "fixtures" / "benchmarks" / "mme_results"


@pytest.mark.parametrize("response,expected", [
    ("Yes", "yes"), (" no \n", "no"), ("YES.", "yes"), ("Yes, there is a dog.", "yes"), ("No.", "no"),
    ("Not at all", "no"), ("nope", "no"), ("Snow is falling", "no"),  # "no" inside the first 4 characters
    ("I think yes", "other"), ("There is no cat", "other"), ("", "other"),
])
def test_official_answer_rule(response, expected):
    assert parse_mme_answer(response) == expected


def test_fixture_directory_scores_hand_computed():
    records = load_mme_results(RESULTS)
    assert len(records) == 14
    assert {r.subtask for r in records} == {"existence", "count", "position", "color"}
    scores = mme_scores(records)
    assert list(scores["subtasks"]) == ["existence", "count", "position", "color"]
    existence = scores["subtasks"]["existence"]
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (0.75, 0.5, 125.0)
    assert scores["subtasks"]["count"]["score"] == 125.0
    assert scores["subtasks"]["count"]["n_other"] == 1  # "I cannot tell." counts as wrong
    assert scores["subtasks"]["position"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0, "n_questions": 2,
                                              "n_images": 1, "n_other": 0}
    assert scores["subtasks"]["color"]["score"] == 125.0
    assert scores["total"] == 425.0
    assert scores["max_total"] == 800


def test_single_file_takes_its_subtask_from_the_name():
    records = load_mme_results(RESULTS / "count.txt")
    assert records[3] == MmeRecord("count", "000000567886.jpg",
                                   "Are there two clocks in this image? Please answer yes or no.", "no", "  No.")
    scores = mme_scores(records)
    assert list(scores["subtasks"]) == ["count"] and scores["max_total"] == 200


def test_acc_plus_needs_both_questions_of_an_image_right():
    def record(image, truth, response):
        return MmeRecord("existence", image, "Is there a dog?", truth, response)

    both_right = [record("a.jpg", "yes", "Yes"), record("a.jpg", "no", "No")]
    one_wrong = [record("b.jpg", "yes", "Yes"), record("b.jpg", "no", "Yes")]
    other = [record("c.jpg", "yes", "Maybe"), record("c.jpg", "no", "No")]
    assert mme_scores(both_right)["subtasks"]["existence"]["score"] == 200.0
    assert mme_scores(one_wrong)["subtasks"]["existence"]["score"] == 50.0
    assert mme_scores([record("d.jpg", "Yes", "yes"), record("d.jpg", "No", "no")])["total"] == 200.0
    mixed = mme_scores(both_right + one_wrong + other)["subtasks"]["existence"]
    assert mixed["acc"] == pytest.approx(4 / 6)
    assert mixed["acc_plus"] == pytest.approx(1 / 3)
    assert mixed["score"] == pytest.approx(100 * 4 / 6 + 100 / 3)
    assert mixed["n_other"] == 1


@pytest.mark.parametrize("bad_line,message", [
    ("img.jpg\tIs there a dog?\tYes", "line 2: expected 4 tab-separated fields"),
    ("img.jpg\tIs there a dog?\tMaybe\tYes", "line 2: ground truth must be Yes or No"),
])
def test_malformed_lines_are_reported_with_line_number(tmp_path, bad_line, message):
    path = tmp_path / "existence.txt"
    path.write_text(f"img.jpg\tIs there a cat?\tNo\tNo\n{bad_line}\n")
    with pytest.raises(ValueError) as error:
        load_mme_results(path)
    assert "existence.txt" in str(error.value) and message in str(error.value)


def test_missing_results_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such MME results"):
        load_mme_results(tmp_path / "existence.txt")
    with pytest.raises(FileNotFoundError, match="no <subtask>.txt files"):
        load_mme_results(tmp_path)
    with pytest.raises(ValueError, match=r"no records for MME subtask\(s\) \['color'\]"):
        mme_scores(load_mme_results(RESULTS / "count.txt"), subtasks=["count", "color"])
    with pytest.raises(ValueError, match="hallucination subtasks"):
        mme_scores([MmeRecord("OCR", "a.jpg", "q", "yes", "yes")])

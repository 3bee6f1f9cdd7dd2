from collections import Counter

import numpy as np
import pytest

from clva_lite.eval.benchmarks.bootstrap import (
    align_by_key,
    bootstrap_ci,
    paired_bootstrap_delta,
    paired_bootstrap_test,
)
from clva_lite.eval.benchmarks.pope import pope_metric_fn


def mean(values):
    return float(np.mean(values))


def accuracy(records):
    return sum(r["correct"] for r in records) / len(records)


def pope_records(correct_images: int, n_images: int = 10, per_image: int = 6):
    """Questions whose correctness is shared by all questions of an image (perfectly clustered)."""
    return [{"question_id": image * per_image + q, "image": f"img{image}.jpg", "correct": image < correct_images}
            for image in range(n_images) for q in range(per_image)]


def test_two_point_sample_hand_computed():
    # resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    point, low, high = bootstrap_ci([0.0, 1.0], mean, n_resamples=2000)
    assert (point, low, high) == (0.5, 0.0, 1.0)


def test_constant_sample_gives_a_zero_width_interval():
    assert bootstrap_ci(np.full(20, 0.3), mean, n_resamples=50) == pytest.approx((0.3, 0.3, 0.3))


def test_deterministic_for_a_seed():
    values = np.random.default_rng(1).normal(size=50)
    first = bootstrap_ci(values, mean, n_resamples=200, seed=7)
    assert bootstrap_ci(values, mean, n_resamples=200, seed=7) == first
    assert bootstrap_ci(values, mean, n_resamples=200, seed=8) != first


def test_interval_contains_the_point_and_has_the_textbook_width():
    values = np.random.default_rng(2).integers(0, 2, size=400).astype(float)
    point, low, high = bootstrap_ci(values, mean, n_resamples=500)
    assert low < point < high
    expected_half_width = 1.96 * np.sqrt(point * (1 - point) / len(values))
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.2)
    narrow = bootstrap_ci(values, mean, n_resamples=500, confidence=0.5)
    assert low < narrow[1] < narrow[2] < high


def test_records_with_a_pope_metric():
    records = [{"prediction": p, "label": g} for p, g in [("yes", "yes"), ("no", "no"), ("yes", "no"), ("no", "no")]]
    point, low, high = bootstrap_ci(records, pope_metric_fn("accuracy"), n_resamples=300)
    assert point == 0.75
    assert 0.0 <= low <= point <= high <= 1.0


def test_cluster_resampling_keeps_images_whole_and_widens_the_interval():
    records = pope_records(correct_images=5)

    def whole_images_only(sample):
        assert all(count % 6 == 0 for count in Counter(r["image"] for r in sample).values())
        return accuracy(sample)

    clustered = bootstrap_ci(records, whole_images_only, n_resamples=300, cluster_key="image")
    independent = bootstrap_ci(records, accuracy, n_resamples=300)
    assert clustered[0] == independent[0] == 0.5
    assert clustered[2] - clustered[1] > 1.5 * (independent[2] - independent[1])
    by_function = bootstrap_ci(records, accuracy, n_resamples=300, cluster_key=lambda r: r["image"])
    assert by_function == clustered


def test_identical_records_give_exactly_zero_delta():
    records = pope_records(correct_images=4)
    assert paired_bootstrap_delta(records, records, accuracy, n_resamples=200) == (0.0, 0.0, 0.0)
    assert paired_bootstrap_delta(records, list(reversed(records)), accuracy, n_resamples=200,
                                  cluster_key="image") == (0.0, 0.0, 0.0)


def test_delta_is_method_minus_baseline_and_pairs_by_key():
    baseline = pope_records(correct_images=4)
    method = [dict(r, correct=True) if r["image"] == "img4.jpg" else dict(r) for r in baseline]
    delta, low, high = paired_bootstrap_delta(baseline, method, accuracy, n_resamples=300)
    assert delta == pytest.approx(0.1)
    assert 0.0 <= low <= delta <= high
    shuffled = [method[i] for i in np.random.default_rng(3).permutation(len(method))]
    assert paired_bootstrap_delta(baseline, shuffled, accuracy, n_resamples=300) == (delta, low, high)
    reverse = paired_bootstrap_delta(method, baseline, accuracy, n_resamples=300)
    assert reverse[0] == pytest.approx(-0.1)


def test_paired_values_by_position():
    a = np.array([0.0, 0.0, 1.0, 1.0])
    b = np.array([1.0, 0.0, 1.0, 1.0])
    delta, low, high = paired_bootstrap_delta(a, b, mean, key=None, n_resamples=400)
    assert delta == 0.25
    assert low == 0.0 and high >= 0.5


def test_mismatched_or_repeated_keys_raise():
    a = [{"question_id": 1, "correct": True}, {"question_id": 2, "correct": False}]
    b = [{"question_id": 1, "correct": True}, {"question_id": 3, "correct": False}]
    with pytest.raises(ValueError, match="different keys"):
        paired_bootstrap_delta(a, b, accuracy)
    with pytest.raises(ValueError, match="unique keys"):
        align_by_key(a, [a[0], a[0]], "question_id")
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_delta([1.0, 2.0], [1.0], mean, key=None)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], mean)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0], mean, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], mean, confidence=1.0)


def test_count_metrics_resample_exactly_as_the_item_by_item_path():
    """POPE and CHAIR metrics resample summed counts (one matrix product); the intervals, paired deltas and
    p-values are those of recomputing the metric on every resample's items, with the same draws."""
    import random

    from clva_lite.eval.benchmarks import CountMetric
    from clva_lite.eval.scoring import metric_function

    rng = random.Random(3)
    pope = [{"id": f"q{i}", "scene_index": i // 6, "label": rng.choice(["yes", "no"]),
             "response": rng.choice(["yes .", "no .", "there is no star"])} for i in range(120)]
    other = [{**r, "response": rng.choice(["yes", "no"])} for r in pope]
    chair = [{"id": f"c{i}", "scene_index": i, "chair_counts": {
        "mentions": m, "hallucinated": rng.randint(0, m), "truth": 3, "matched": rng.randint(0, 3), "words": 9}}
        for i, m in enumerate(rng.randint(0, 4) for _ in range(40))]
    cases = [("pope", name, pope, other) for name in ("accuracy", "precision", "recall", "f1", "yes_ratio")]
    cases += [("chair", name, chair, chair[::-1]) for name in ("chair_s", "chair_i", "recall", "mean_length")]
    for benchmark, name, a, b in cases:
        fast = metric_function(benchmark, name)
        assert isinstance(fast, CountMetric)
        slow = lambda items, metric=fast: metric(items)  # noqa: E731 - a plain function: item by item
        for cluster in (None, "scene_index"):
            assert bootstrap_ci(a, fast, 300, seed=1, cluster_key=cluster) == pytest.approx(
                bootstrap_ci(a, slow, 300, seed=1, cluster_key=cluster), abs=1e-12)
            b_aligned = [dict(r, id=x["id"]) for r, x in zip(b, a)]
            got = paired_bootstrap_test(a, b_aligned, fast, key="id", n_resamples=300, cluster_key=cluster)
            want = paired_bootstrap_test(a, b_aligned, slow, key="id", n_resamples=300, cluster_key=cluster)
            assert got == pytest.approx(want, abs=1e-12), (benchmark, name, cluster)

"""k-means fitting, ordering, assignment and its errors."""

import numpy as np
import pytest

from orgaseg.cluster.kmeans import KMeansModel, fit_kmeans
from orgaseg.errors import OrgasegError


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 0.0], [-5.0, 3.0], [0.0, -6.0]])
    points = np.concatenate([c + 0.3 * rng.standard_normal((200, 2)) for c in centers])
    truth = np.repeat(np.arange(3), 200)
    return points.astype(np.float32), truth


def test_recovers_separated_blobs_with_ids_ordered_by_first_feature():
    points, truth = _blobs()
    model = fit_kmeans(points, 3, seed=0)
    labels = model.predict(points)
    # ordered by first feature: the blob at x=-5 is 0, x=0 is 1, x=5 is 2
    expected = np.array([2, 0, 1])[truth]
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8


def test_same_sample_and_seed_give_same_model():
    points, _ = _blobs(3)
    a = fit_kmeans(points, 4, seed=7)
    b = fit_kmeans(points.copy(), 4, seed=7)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.predict(points), b.predict(points))


def test_state_round_trip_predicts_the_same():
    points, _ = _blobs()
    model = fit_kmeans(points, 3)
    again = KMeansModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.predict(points), model.predict(points))


def test_predict_keeps_leading_shape():
    points, _ = _blobs()
    model = fit_kmeans(points, 3)
    assert model.predict(points.reshape(3, 200, 2)).shape == (3, 200)


@pytest.mark.parametrize(
    "sample, k, message",
    [
        (np.zeros((5, 2), np.float32) + np.arange(5)[:, None], 6, "larger than the sample"),
        (np.ones((50, 2), np.float32), 3, "distinct"),
        (0.5 + 1e-8 * np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32), 3, "distinct"),
        (np.array([[np.nan, 1.0]] * 10, np.float32), 2, "NaN"),
        (np.ones((10, 2), np.float32), 0, "at least 1"),
    ],
)
def test_bad_input_is_a_clear_error(sample, k, message):
    with pytest.raises(OrgasegError, match=message):
        fit_kmeans(sample, k)


@pytest.mark.parametrize("arguments, message", [
    # scikit-learn refused these naming its own parameters ("The 'random_state' parameter of KMeans ...")
    ({"seed": -1}, "seed=N must be a whole number >= 0, got -1"),
    ({"n_init": 0}, "n_init must be a whole number >= 1, got 0"),
    ({"max_iter": 2.5}, "max_iter must be a whole number >= 1, got 2.5"),
])
def test_bad_arguments_are_refused_by_their_names(arguments, message):
    points, _ = _blobs()
    with pytest.raises(OrgasegError, match=message):
        fit_kmeans(points, 3, **arguments)


def test_feature_count_mismatch_is_an_error():
    points, _ = _blobs()
    model = fit_kmeans(points, 3)
    with pytest.raises(OrgasegError, match="channels"):
        model.predict(np.zeros((4, 5), np.float32))

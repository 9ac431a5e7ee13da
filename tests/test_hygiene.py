"""Reference hygiene: leave-one-out view consistency and outlier flagging."""

from __future__ import annotations

import numpy as np
import pytest

from focuskit.core.errors import FocusError
from focuskit.core.hygiene import flag_outliers, view_consistency, view_report


def views(n_good: int = 5, n_bad: int = 1, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    center = rng.normal(size=dim)
    good = center + 0.3 * rng.normal(size=(n_good, dim))
    bad = rng.normal(size=(n_bad, dim))
    return np.concatenate([good, bad])


def test_leave_one_out_scores() -> None:
    s = view_consistency(views())
    assert s.shape == (6,)
    assert s[:5].min() > 0.8 and s[5] < 0.4
    # Leave-one-out: a duplicated view must not vouch for itself more than the others vouch for it.
    two = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert view_consistency(two).tolist() == [0.0, 0.0]
    assert np.isnan(view_consistency(np.ones((1, 4)))).all()
    assert view_consistency(np.zeros((0, 4))).shape == (0,)
    assert view_consistency(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1]]))[0] == 0.0  # a zero view scores 0
    with pytest.raises(FocusError, match="\\(V, C\\)"):
        view_consistency(np.ones(4))


def test_scores_do_not_depend_on_scale() -> None:
    e = views()
    assert np.allclose(view_consistency(e), view_consistency(e * np.arange(1, 7)[:, None]))


@pytest.mark.parametrize(
    ("scores", "kwargs", "outliers"),
    [
        ([0.9, 0.91, 0.88, 0.9, 0.2], {}, [4]),  # far below the others
        ([0.9, 0.91, 0.88, 0.9, 0.86], {}, []),  # ordinary spread
        ([0.9, 0.9, 0.9, 0.9], {}, []),  # MAD of zero: nothing relative to flag
        ([0.9, 0.3], {}, []),  # too few views for the relative rule
        ([0.9, 0.3], {"min_score": 0.5}, [1]),  # the absolute rule applies at any count
        ([float("nan")], {"min_score": 0.5}, []),  # a lone view
    ],
)
def test_flag_outliers(scores, kwargs, outliers) -> None:
    report = flag_outliers(np.array(scores), **kwargs)
    assert report.outlier_indices == outliers
    assert all(bool(r) == o for r, o in zip(report.reasons, report.outliers, strict=True))


def test_view_report_finds_the_bad_view() -> None:
    report = view_report(views(n_good=6, n_bad=1))
    assert report.outlier_indices == [6] and "below the median" in report.reasons[6]
    with pytest.raises(FocusError, match="mad_k"):
        flag_outliers(np.ones(3), mad_k=0)

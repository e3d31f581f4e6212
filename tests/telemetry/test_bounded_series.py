import pytest

from mlcost.telemetry.sampler import BoundedSeries


def test_a_week_at_10hz_keeps_at_most_1000_bucket_means():
    series = BoundedSeries(start=0.0, width=0.1, max_points=1000)
    n = 7 * 24 * 3600 * 10 // 100  # every 100th sample of a week at 10 Hz keeps the test fast
    for i in range(n):
        series.add(i * 10.0, float(i % 2))  # alternating 0/1
    points = series.points(wall_offset=0.0)
    assert 500 <= len(points) <= 1000
    assert all(v == pytest.approx(0.5, abs=0.02) for _t, v in points[:-1])  # bucket means, not samples
    assert [t for t, _v in points] == sorted(t for t, _v in points)


def test_short_series_keeps_every_sample_and_epoch_milliseconds():
    series = BoundedSeries(start=100.0, width=1.0)
    for i in range(5):
        series.add(100.0 + i, float(i))
    assert series.points(wall_offset=1_700_000_000.0 - 100.0) == [
        (1_700_000_000_000 + i * 1000, float(i)) for i in range(5)
    ]

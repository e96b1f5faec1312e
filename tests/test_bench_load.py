"""`borealis bench load` memory arithmetic: growth after warm-up, and the trainer's floor per round."""

from __future__ import annotations

from pathlib import Path

from worker.bench.load import RoundFloors, memory_report
from worker.training.checkpoint import LATEST


def test_growth_after_warmup_ignores_the_warmup_and_reads_mean_and_floor() -> None:
    mib = 1024
    # 10 samples over 100 s: the first fifth (t < 20) is warm-up; then a saw tooth whose floor rises.
    series = [(0.0, 50 * mib), (10.0, 80 * mib)] + [
        (float(t), (100 + (t // 10) * 2 + (30 if t % 20 else 0)) * mib) for t in range(20, 100, 10)
    ]
    report = memory_report({"trainer": series}, 100.0)["trainer"]
    assert report["peak_rss_mib"] == 148.0
    assert report["rss_after_warmup_mib"] == (104 + 136) / 2  # samples at t=20, 30
    assert report["rss_at_end_mib"] == (116 + 148) / 2  # samples at t=80, 90
    assert report["growth_after_warmup_mib"] == 12.0
    assert report["floor_growth_after_warmup_mib"] == 12.0


def test_round_floors_are_the_lowest_reading_between_checkpoints(tmp_path: Path) -> None:
    pointer = tmp_path / LATEST
    floors = RoundFloors(tmp_path)  # no checkpoint yet: the first interval runs until round 1
    floors.observe(1.0, 3000 * 1024)
    floors.observe(2.0, 1000 * 1024)
    pointer.write_text("round-00000001")
    floors.observe(3.0, 2000 * 1024)  # the reading that sees round 1 still belongs to its interval
    floors.observe(4.0, 1500 * 1024)
    floors.observe(5.0, 1200 * 1024)
    pointer.write_text("round-00000002\n")
    floors.observe(6.0, 2500 * 1024)
    floors.observe(7.0, 1300 * 1024)  # round 3 never checkpointed: its interval is not reported
    assert floors.rounds == [
        {"round": 1, "t_s": 3.0, "floor_rss_mib": 1000.0},
        {"round": 2, "t_s": 6.0, "floor_rss_mib": 1200.0},
    ]


def test_round_floors_start_from_an_existing_checkpoint(tmp_path: Path) -> None:
    (tmp_path / LATEST).write_text("round-00000007")
    floors = RoundFloors(tmp_path)
    floors.observe(1.0, 1024)
    assert floors.rounds == []
    (tmp_path / LATEST).write_text("round-00000008")
    floors.observe(2.0, 2048)
    assert floors.rounds == [{"round": 8, "t_s": 2.0, "floor_rss_mib": 1.0}]

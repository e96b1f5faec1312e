"""The ``bench shift`` figure: served and draft-only tau per window for every arm, promotions marked."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

COLOURS = {"static": "#636efa", "online": "#ef553b", "scratch": "#00cc96"}


def _band(figure: Any, x: list[int], bounds: list[Any], colour: str, row: int) -> None:
    points = [(xi, b) for xi, b in zip(x, bounds, strict=True) if b is not None]
    if not points:
        return
    xs = [p[0] for p in points]
    figure.add_scatter(
        x=xs + xs[::-1],
        y=[p[1][1] for p in points] + [p[1][0] for p in points][::-1],
        mode="lines",
        fill="toself",
        fillcolor=colour,
        opacity=0.15,
        line_width=0,
        hoverinfo="skip",
        showlegend=False,
        row=row,
        col=1,
    )


def plot(summary: dict[str, Any], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=(
            "served tau (n-gram lookup and draft, from the responses)",
            "draft-only tau (live draft, simulated on reserved prompts of the phase)",
        ),
    )
    for arm, data in summary["arms"].items():
        series = data["windows"]
        colour = COLOURS.get(arm, "#444")
        x = [w["requests"] for w in series]
        for row, key in ((1, "mean_acceptance_length"), (2, "draft_tau")):
            _band(
                figure,
                x,
                [w[f"{'served_tau' if row == 1 else 'draft_tau'}_ci95"] for w in series],
                colour,
                row,
            )
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=[w[key] for w in series],
                    mode="lines+markers",
                    name=arm,
                    line={"color": colour},
                    legendgroup=arm,
                    showlegend=row == 1,
                ),
                row=row,
                col=1,
            )
        promoted = [w for w in series if w["promoted"]]
        figure.add_trace(
            go.Scatter(
                x=[w["requests"] for w in promoted],
                y=[w["draft_tau"] for w in promoted],
                mode="markers",
                marker={"symbol": "star", "size": 11, "color": colour},
                name=f"{arm}: promotion",
                legendgroup=arm,
            ),
            row=2,
            col=1,
        )
    counts = summary.get("phase_requests") or [summary["requests_per_phase"]] * len(summary["phases"])
    bounds = [0, *itertools.accumulate(counts)]
    for index, phase in enumerate(summary["phases"]):
        labels = {"annotation_text": phase, "annotation_position": "top left"}
        for row in (1, 2):
            figure.add_vrect(
                x0=bounds[index],
                x1=bounds[index + 1],
                fillcolor="grey" if index % 2 else "white",
                opacity=0.12,
                line_width=0,
                row=row,
                col=1,
                **(labels if row == 1 else {}),
            )
    mode = summary["trainer_mode"]
    figure.update_layout(
        title=f"Acceptance through a domain shift (borealis bench shift, {mode} trainer)",
        template="plotly_white",
        width=1100,
        height=750,
    )
    figure.update_xaxes(title_text="requests served", row=2, col=1)
    figure.update_yaxes(title_text="tokens per target step")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_image(str(path))

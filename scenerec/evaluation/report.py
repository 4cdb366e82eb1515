"""An EvalReport as files: report.json (the model), report.md (tables), report.png (NDCG@10 with CIs)."""

from __future__ import annotations

import json
from pathlib import Path

from .harness import OVERALL, EvalReport, MethodResult

METRIC_LABELS = {
    "hr@1": "HR@1", "hr@5": "HR@5", "hr@10": "HR@10", "ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "mrr": "MRR",
}


def write_report(
    report: EvalReport, out_dir: Path | str, *, title: str = "scenerec evaluation"
) -> dict[str, Path]:
    """Write report.json, report.md and report.png into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "png": out / "report.png"}
    paths["json"].write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(report, title=title), encoding="utf-8")
    plot_report(report, paths["png"])
    return paths


def _cell(value: object, with_ci: bool) -> str:
    v = value  # a MetricValue
    if with_ci:
        return f"{v.mean:.4f} ({v.low:.4f}–{v.high:.4f})"  # type: ignore[attr-defined]
    return f"{v.mean:.4f}"  # type: ignore[attr-defined]


def _table(report: EvalReport, rows: list[MethodResult], with_ci: bool = True) -> list[str]:
    scenes = list(report.scenes)
    header = ["method"] + [f"{s} {METRIC_LABELS[m]}" for s in scenes for m in METRIC_LABELS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.method] + [_cell(r.scenes[s].metrics[m], with_ci) for s in scenes for m in METRIC_LABELS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _details(rows: list[MethodResult]) -> list[str]:
    header = ["method", "overall NDCG@10", "overall HR@10", "mean rank", "coverage@10", "candidates/case",
              "invalid (scene/dup/unknown/owned)", "short lists", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        o = r.scenes[OVERALL]
        i = o.invalid
        lines.append(
            f"| {r.method} | {_cell(o.metrics['ndcg@10'], True)} | {_cell(o.metrics['hr@10'], True)} | "
            f"{o.mean_rank:.1f} | {o.coverage:.4f} | {o.mean_candidates:.0f} | "
            f"{i.out_of_scene}/{i.duplicates}/{i.unknown_ids}/{i.in_history} | {i.short_lists} | "
            f"{r.seconds:.1f} |"
        )
    return lines


def markdown_report(report: EvalReport, *, title: str = "scenerec evaluation") -> str:
    """One table per setting x protocol (rows: methods; columns: metrics per scene, with 95% CIs)."""
    lines = [f"# {title}", ""]
    scenes = ", ".join(f"{s} ({v.items} items, {v.cases} cases, {v.repeat_targets} repeat targets)"
                       for s, v in report.scenes.items())
    lines += [
        f"Split `{report.split}`: {report.n_cases} cases; scenes: {scenes}. Seed {report.seed}; "
        f"total {report.seconds:.0f} s.",
        "",
    ]
    if report.skipped:
        lines += ["Skipped: " + "; ".join(f"`{k}` ({v})" for k, v in report.skipped.items()), ""]
    for setting in report.settings:
        for protocol in report.protocols:
            rows = [r for r in report.results if r.setting == setting and r.protocol == protocol]
            if not rows:
                continue
            lines += [f"## setting `{setting}`, protocol `{protocol}`", ""]
            lines += _table(report, rows)
            lines += ["", *_details(rows), ""]
    if report.comparisons:
        lines += [
            "## Against the best baseline (NDCG@10)",
            "",
            (
                "Ratio of the method's mean to the best baseline's on the same cases; the interval "
                "resamples users for both methods at once (paired bootstrap)."
            ),
            "",
            "| setting | protocol | scene | method | best baseline | ratio (95% CI) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.setting} | {c.protocol} | {c.scene} | {c.method} | {c.baseline} | "
            f"{c.ratio:.2f} ({c.low:.2f}–{c.high:.2f}) |"
            for c in report.comparisons
        ]
        lines.append("")
    lines += ["## How these numbers are made", ""]
    lines += [f"- {note}" for note in report.notes]
    if report.fit_seconds:
        lines += ["- fit seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.fit_seconds.items())]
    return "\n".join(lines) + "\n"


def plot_report(report: EvalReport, path: Path | str, metric: str = "ndcg@10") -> Path:
    """Bars of `metric` per scene and method, one panel per setting x protocol, 95% CIs as error bars."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(s, p) for s in report.settings for p in report.protocols]
    scenes = [*report.scenes, OVERALL]
    methods = report.methods or ["(none)"]
    fig = Figure(figsize=(5.5 * len(report.protocols), 3.6 * len(report.settings)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(report.settings), len(report.protocols), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    colors = [f"C{i % 10}" for i in range(len(methods))]
    for (setting, protocol), ax in zip(panels, axes.flat):
        for m, method in enumerate(methods):
            try:
                result = report.result(method, setting, protocol)
            except KeyError:
                continue
            values = [result.scenes[s].metrics[metric] for s in scenes]
            means = np.array([v.mean for v in values])
            err = np.array([[v.mean - v.low for v in values], [v.high - v.mean for v in values]])
            x = np.arange(len(scenes)) + (m - (len(methods) - 1) / 2) * width
            ax.bar(x, means, width, yerr=err, capsize=2, label=method, color=colors[m])
        ax.set_xticks(np.arange(len(scenes)), scenes)
        ax.set_title(f"{setting} history, {protocol} ranking", fontsize=10)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9, frameon=False)
    label = METRIC_LABELS.get(metric, metric)
    fig.suptitle(f"{label} on split '{report.split}' ({report.n_cases} cases, 95% CI)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(str(path), format="png", metadata={"Software": None})
    return Path(path)

"""Scores, significance and the report of ``sieve eval``: report.md, report.json, chart.png, runs/.

Measures come from ``ir-measures`` (trec_eval through ``pytrec-eval-terrier``): nDCG@10 (trec_eval's linear
gain: a document of grade g adds g / log2(rank + 1)), R@50, R@100 and MRR@10 (``RR@10``). A run is ranked
ids; each is given the score ``n - rank`` so that trec_eval keeps exactly our order (it would break score
ties by document id). A query whose run is empty gets one placeholder id that no qrels judge, so it counts as
0 instead of being left out of the means.

Significance: a two-sided paired t-test (``scipy.stats.ttest_rel``) of per-query nDCG@10 of each configuration
against the first one; ``p`` is None where the two agree on every query.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MEASURE_NAMES = ("nDCG@10", "R@50", "R@100", "MRR@10")
NO_HIT = "__sieve_no_hit__"


def _measures() -> dict[str, Any]:
    from ir_measures import RR, R, nDCG

    return {"nDCG@10": nDCG @ 10, "R@50": R @ 50, "R@100": R @ 100, "MRR@10": RR @ 10}


def score_run(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean of each measure over the queries of ``qrels``, per-measure per-query values)."""
    import ir_measures

    measures = _measures()
    run = {
        qid: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)} if docs else {NO_HIT: 0.0}
        for qid in qrels
        for docs in [list(dict.fromkeys(rankings.get(qid, ())))]
    }
    judged = {qid: dict(grades) for qid, grades in qrels.items()}
    names = {str(measure): name for name, measure in measures.items()}
    per_query: dict[str, dict[str, float]] = {name: {qid: 0.0 for qid in qrels} for name in measures}
    for metric in ir_measures.iter_calc(list(measures.values()), judged, run):
        per_query[names[str(metric.measure)]][metric.query_id] = float(metric.value)
    aggregate = ir_measures.calc_aggregate(list(measures.values()), judged, run)
    means = {name: float(aggregate[measure]) for name, measure in measures.items()}
    return means, per_query


def paired_p(values: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value; None when there is nothing to test (identical or too few)."""
    from scipy.stats import ttest_rel

    if len(values) < 2 or all(a == b for a, b in zip(values, baseline, strict=True)):
        return None
    p = float(ttest_rel(values, baseline).pvalue)
    return None if math.isnan(p) else p


def timing_summary(samples: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per stage: mean, p50 and p95 in ms over queries."""
    summary = {}
    for stage, values in samples.items():
        if values:
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
            summary[stage] = {"mean": statistics.fmean(values), "p50": statistics.median(values), "p95": p95}
    return summary


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(report: Mapping[str, Any]) -> str:
    configs = report["configurations"]
    first = configs[0]["name"]
    lines = [
        f"# Retrieval evaluation: {report['dataset']['name']}",
        "",
        f"{report['dataset']['queries']} queries (qrels `{report['dataset']['qrels']}`, split "
        f"`{report['dataset']['split']}`), {report['dataset']['documents']} documents in "
        f"{report['index']['chunks']} chunks; embedder `{report['embedder']}`, "
        f"reranker `{report['reranker']}`.",
        "",
        f"| configuration | {' | '.join(MEASURE_NAMES)} | p (nDCG@10 vs {first}) |",
        f"| --- | {' | '.join('---:' for _ in MEASURE_NAMES)} | ---: |",
    ]
    for config in configs:
        cells = [_fmt(config["metrics"][name]) for name in MEASURE_NAMES]
        p = "" if config["name"] == first else _fmt(config["p_ndcg10_vs_first"], 3)
        lines.append(f"| {config['name']} | {' | '.join(cells)} | {p} |")
    stages = ("embed", "stage1", "rerank", "fusion", "total")
    lines += [
        "",
        "Per-query time, ms (mean / p95):",
        "",
        f"| configuration | {' | '.join(stages)} |",
        f"| --- | {' | '.join('---:' for _ in stages)} |",
    ]
    for config in configs:
        timings = config["timings_ms"]
        cells = [
            f"{timings[s]['mean']:.1f} / {timings[s]['p95']:.1f}" if s in timings else "" for s in stages
        ]
        lines.append(f"| {config['name']} | {' | '.join(cells)} |")
    index = report["index"]
    lines += [
        "",
        f"Index: chunking {index['chunk_s']:.1f} s, embedding {index['embed_s']:.1f} s, "
        f"writing {index['upsert_s']:.1f} s ({report['store']}).",
    ]
    if report.get("gate"):
        from api.gate_decision import GateDecision

        lines += ["", GateDecision.model_validate(report["gate"]).markdown()]
    lines += ["", *(f"Note: {note}" for note in report["notes"])] if report["notes"] else []
    lines += ["", f"Command: `{report['command']}`" if report.get("command") else ""]
    return "\n".join(lines).rstrip() + "\n"


def chart(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = report["configurations"]
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(MEASURE_NAMES) + 0.4 * len(configs)), 4.0))
    for i, config in enumerate(configs):
        xs = [m + (i - (len(configs) - 1) / 2) * width for m in range(len(MEASURE_NAMES))]
        ax.bar(xs, [config["metrics"][name] for name in MEASURE_NAMES], width, label=config["name"])
    ax.set_xticks(range(len(MEASURE_NAMES)), MEASURE_NAMES)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['dataset']['name']}: {report['dataset']['queries']} queries")
    ax.legend(fontsize="small", ncols=min(3, len(configs)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "json": out / "report.json", "chart": out / "chart.png"}
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    chart(report, paths["chart"])
    return paths


def write_runs(rankings: Mapping[str, Mapping[str, Sequence[str]]], out: Path) -> Path:
    """Each configuration's full ranking as a TREC run file, ``runs/<configuration>.trec``."""
    folder = out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, ranking in rankings.items():
        lines = [
            f"{qid} Q0 {doc} {rank} {len(docs) - rank + 1} {name}"
            for qid, docs in ranking.items()
            for rank, doc in enumerate(docs, start=1)
        ]
        (folder / f"{name}.trec").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder

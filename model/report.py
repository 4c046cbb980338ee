"""report.md, metrics.json and the figures of an evaluation (tables laid out like the paper's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.evaluate import EvalResult

# Methods of the paper this project does not implement (deep time-series encoders and foundation
# models); the report lists them so a reader sees what the comparison lacks.
MISSING_BASELINES = (
    "TS2Vec",
    "CoST",
    "SoftCLT",
    "TNC",
    "PatchTST",
    "TimesNet",
    "iTransformer",
    "SimStock",
    "Chronos",
    "MOMENT",
    "MOMENT fine-tuned",
)
PAPER_ABLATIONS = (
    "hard InfoNCE targets",
    "observation-aligned targets",
    "return regression",
    "projection head",
    "CLS pooling",
    "close-only input",
)
PAPER_FRC = {  # v2, test year 2024 (docs/FASCL_SPEC.md): for orientation, not a target on other data
    "FASCL": (0.4427, 0.4226, 0.4083, 0.3896),
    "Pearson": (0.3981, 0.3737, 0.3626, 0.3506),
    "Random": (0.1408, 0.1429, 0.1431, 0.1433),
    "Oracle": (0.6905, 0.6489, 0.6244, 0.5963),
}


def _num(x, fmt=".4f") -> str:
    return "–" if x is None else format(x, fmt)


def _ci(stat: dict | None, fmt=".4f", scale=1.0) -> str:
    if stat is None or stat.get("mean") is None:
        return "–"
    s = format(stat["mean"] * scale, fmt)
    if stat.get("lo") is not None and stat.get("hi") is not None:
        s += f" [{stat['lo'] * scale:{fmt}}, {stat['hi'] * scale:{fmt}}]"
    return s


def _slashes(values, fmt=".4f") -> str:
    return " / ".join(_num(v, fmt) for v in values)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def frc_rows(summary: dict, fmt: str = ".4f") -> list[list[str]]:
    """The main table: FRC@K with 95% intervals and the share of the Random-to-Oracle gap closed."""
    ks = [str(k) for k in summary["config"]["ks"]]
    rows = []
    for name, e in summary["methods"].items():
        gap = e.get("gap_closed", {})
        rows.append(
            [name]
            + [_ci(e["frc"][k], fmt) for k in ks]
            + [
                _slashes([(gap.get(k) or {}).get("mean") for k in ks], ".0%" if fmt == ".3f" else ".1%")
                if gap
                else "–"
            ]
        )
    return rows


def diff_cell(stat: dict | None, fmt=".4f") -> str:
    """A paired difference with its interval and the dates on which it is positive, e.g. "10/12 dates"."""
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{_ci(stat, fmt)} {stat.get('dates_positive', 0)}/{stat.get('dates', 0)} dates"


def difference_rows(summary: dict, key: str, fmt: str = ".4f") -> list[list[str]]:
    """Per method, the paired difference `key` (frc_minus_pearson, frc_minus_best_classical) at every K."""
    ks = [str(k) for k in summary["config"]["ks"]]
    return [
        [name] + [diff_cell(e.get(key, {}).get(k), fmt) for k in ks] for name, e in summary["methods"].items()
    ]


def per_date_rows(summary: dict, k: str, fmt: str = ".3f") -> list[list[str]]:
    """One row per query date: its queries and every method's mean FRC@k on that date."""
    methods = summary["methods"]
    return [
        [date, str(n)] + [_num(e["frc_per_date"][k][di], fmt) for e in methods.values()]
        for di, (date, n) in enumerate(zip(summary["dates"], summary["queries_per_date"], strict=True))
    ]


def render_markdown(summary: dict, info: dict) -> str:
    cfg = summary["config"]
    ks, hs = [str(k) for k in cfg["ks"]], [str(h) for h in cfg["horizons"]]
    kslash = "/".join(ks)
    methods = summary["methods"]
    out = [f"# FASCL evaluation: {info.get('data', '')}", ""]

    out += ["## Setup", ""]
    out.append(f"- Data: `{info.get('data_path', '')}` ({info.get('assets', '?')} assets)")
    out.append(
        f"- Test period: {info.get('test_start')} .. {info.get('test_end') or 'end of data'}; "
        f"query dates every {cfg['stride']} trading days: {', '.join(summary['dates'])}"
    )
    out.append(
        f"- Queries: {summary['queries']:,} (every asset with a complete {cfg['window']}-day window and a "
        f"complete {cfg['horizon']}-day future; per date {', '.join(map(str, summary['queries_per_date']))}). "
        "The query is never retrieved."
    )
    out.append(
        f"- Mean pairwise future correlation (what Random should score): "
        f"{_num(summary['mean_pairwise_future_corr'])}"
    )
    for label, path in info.get("models", {}).items():
        out.append(f"- Model `{label}`: `{path}`")
    for note in info.get("notes", []):
        out.append(f"- {note}")
    out.append(
        f"- Intervals: date-block bootstrap, {cfg['bootstrap']:,} resamples of the {len(summary['dates'])} query "
        "dates with replacement, all queries of a drawn date kept (queries of one date share its market and "
        "are not independent); the same draws for every method, so differences keep their pairing; 95% "
        "percentile intervals. The per-query bootstrap, which ignores within-date dependence, is shown "
        "only where labelled so."
    )
    out.append(f"- Elapsed: {info.get('elapsed_s', 0):.1f} s")
    out.append("")

    out += [f"## Future return correlation, FRC@K (K = {kslash})", ""]
    out.append(
        _table(
            ["method"] + [f"FRC@{k}" for k in ks] + [f"gap closed @{kslash}"],
            frc_rows(summary),
        )
    )
    out.append("")
    best = summary.get("best_classical")
    if best:
        out += [f"## Best classical retriever: {best}", ""]
        out.append(
            f"`{best}` has the highest FRC@{ks[0]} among the classical (non-learned, non-oracle, non-random) "
            "retrievers. Paired differences, query by query, with date-block 95% intervals and the number of "
            "query dates on which the date's mean difference is positive:"
        )
        out.append("")
        out.append(
            _table(
                ["method"] + [f"FRC@{k} − {best}" for k in ks],
                difference_rows(summary, "frc_minus_best_classical"),
            )
        )
        out.append("")
    learned = {name: e for name, e in methods.items() if "frc_minus_start" in e}
    if learned:
        out += ["## What training added", ""]
        out.append(
            "Each learned model against the classical retriever its history path reproduces at step 0, on the "
            "same queries: paired differences with date-block 95% intervals and the dates on which they are "
            "positive."
        )
        out.append("")
        rows = [
            [name, f"`{e['start']}`"] + [diff_cell(e["frc_minus_start"].get(k)) for k in ks]
            for name, e in learned.items()
        ]
        out.append(_table(["method", "start"] + [f"FRC@{k} − start" for k in ks], rows))
        out.append("")
    if any("frc_minus_pearson" in e for e in methods.values()):
        out += ["## Difference to Pearson (the paper's baseline)", ""]
        out.append(
            _table(
                ["method"] + [f"FRC@{k} − Pearson" for k in ks], difference_rows(summary, "frc_minus_pearson")
            )
        )
        out.append("")

    out += ["## Date-block against per-query intervals", ""]
    out.append(
        f"FRC@{ks[0]} and its differences with both intervals: the per-query bootstrap (ignores within-date "
        "dependence) treats every query as independent and is too narrow."
    )
    out.append("")

    def both(stat):
        if not stat or stat.get("mean") is None:
            return ["–", "–"]
        per_query = {"mean": stat["mean"], "lo": stat.get("lo_per_query"), "hi": stat.get("hi_per_query")}
        return [_ci(stat), _ci(per_query)]

    rows = []
    for name, e in methods.items():
        row = [name] + both(e["frc"][ks[0]])
        for key in ("frc_minus_best_classical", "frc_minus_pearson"):
            row += both(e.get(key, {}).get(ks[0]))
        rows.append(row)
    header = ["method", f"FRC@{ks[0]} date-block", f"FRC@{ks[0]} per-query bootstrap"]
    header += [
        f"− {best or 'best classical'} date-block",
        f"− {best or 'best classical'} per-query bootstrap",
    ]
    header += ["− Pearson date-block", "− Pearson per-query bootstrap"]
    out.append(_table(header, rows))
    out.append("")

    out += ["## Gap closed", ""]
    out.append(
        "Gap closed = (FRC - FRC_Random) / (FRC_Oracle - FRC_Random) on the same queries, with date-block "
        "intervals:"
    )
    out.append("")
    rows = [
        [name] + [_ci((e.get("gap_closed") or {}).get(k), ".1f", 100) for k in ks]
        for name, e in methods.items()
    ]
    out.append(_table(["method"] + [f"gap closed @{k} (%)" for k in ks], rows))
    out.append("")

    out += [f"## FRC@K per query date (K = {kslash})", ""]
    out.append("Mean FRC@K over each date's queries; the date-block bootstrap resamples these dates.")
    out.append("")
    for k in ks:
        out += [f"FRC@{k}:", ""]
        out.append(_table(["date", "queries"] + list(methods), per_date_rows(summary, k)))
        out.append("")

    out += [f"## Sector precision, SP@K (%), K = {kslash}", ""]
    out.append(
        _table(
            ["method", f"SP@{kslash}", "queries with a known sector"],
            [
                [n, _slashes([e["sp_pct"][k] for k in ks], ".1f"), f"{e['sp_queries']:,}"]
                for n, e in methods.items()
            ],
        )
    )
    out.append("")

    out += [f"## Trend consistency, TC@K (%), K = {kslash}", ""]
    out.append(
        _table(
            ["method"] + [f"h = {h}" for h in hs],
            [
                [n] + [_slashes([e["tc_pct"][k][h] for k in ks], ".1f") for h in hs]
                for n, e in methods.items()
            ],
        )
    )
    out.append("")
    out += [f"## Information coefficient, IC@K (Spearman across queries, mean over dates), K = {kslash}", ""]
    out.append(
        _table(
            ["method"] + [f"h = {h}" for h in hs],
            [[n] + [_slashes([e["ic"][k][h] for k in ks], ".3f") for h in hs] for n, e in methods.items()],
        )
    )
    out.append("")

    pcs = [str(p) for p in cfg["percentiles"]]
    out += ["## Precision@1 (%): the top peer's future correlation above the query's percentile", ""]
    out.append(
        _table(
            ["method"] + [f"> p{p}" for p in pcs],
            [[n] + [_num(e["precision_at_1_pct"][p], ".1f") for p in pcs] for n, e in methods.items()],
        )
    )
    out.append("")

    out += [f"## Tracking error (median per-query std of the daily spread), K = {kslash}", ""]
    out.append(
        _table(
            ["method", f"TE@{kslash} (%/day)"],
            [
                [
                    n,
                    _slashes(
                        [100 * v if v is not None else None for v in e["tracking_error"].values()], ".3f"
                    ),
                ]
                for n, e in methods.items()
            ],
        )
    )
    out.append("")

    costs = [f"net_sharpe_{c:g}bp" for c in cfg["costs_bp"]]
    out += [f"## Spread trading (signal quality, not profit), K = {kslash}", ""]
    out.append(
        "Daily spread s = r_q − mean(r_peers) (returns clipped at ±50%); position on day d+1 = −sign(cumulative "
        "spread through d), flat on the first day and closed at the end of the window; P&L averaged over the "
        "queries trading each day; Sharpe × √252. Turnover: dollars traded per day (both legs) per dollar "
        "per leg; break-even: the cost per dollar traded (bp) at which the mean net return is zero."
    )
    out.append("")
    rows = []
    for n, e in methods.items():
        sp = [e["spread"][k] for k in ks]
        rows.append(
            [
                n,
                _slashes([s["gross_sharpe"] for s in sp], ".2f"),
                _slashes([s["turnover"] for s in sp], ".3f"),
            ]
            + [_slashes([s["break_even_bp"] for s in sp], ".1f")]
            + [_slashes([s[c] for s in sp], ".2f") for c in costs]
        )
    out.append(
        _table(
            ["method", "gross Sharpe", "turnover", "break-even (bp)"]
            + [f"net Sharpe @{c:g} bp" for c in cfg["costs_bp"]],
            rows,
        )
    )
    out.append("")

    ex = summary.get("example") or {}
    if ex:
        out += ["## Worked example", ""]
        out.append(
            f"Query {ex['query']} on {ex['date']} ({ex['method']}, the median query of that date by FRC@5): "
            f"top peers {', '.join(ex['peers'])}, future correlations "
            f"{', '.join(f'{c:.2f}' for c in ex['peer_future_corr'])} (mean {ex['frc']:.3f})."
        )
        out.append("")

    out += ["## Figures", ""]
    for name, caption in info.get("figures", {}).items():
        out.append(f"![{caption}]({name})")
    out.append("")

    out += ["## Reference (paper v2, test year 2024, a different universe; for orientation only)", ""]
    out.append(_table(["method", f"FRC@{kslash}"], [[n, _slashes(v)] for n, v in PAPER_FRC.items()]))
    out.append("")
    out += ["## Not evaluated here", ""]
    out.append(
        "- Paper baselines without an implementation in this project: " + ", ".join(MISSING_BASELINES) + "."
    )
    out.append(
        "- Paper ablations appear only when their checkpoints are passed with `--model LABEL=PATH` ("
        + ", ".join(PAPER_ABLATIONS)
        + ")."
    )
    timings = ", ".join(
        f"{n} {e['score_seconds']:.1f} s ({e['seconds']:.1f} s)"
        for n, e in methods.items()
        if e.get("seconds") is not None and e.get("score_seconds") is not None
    )
    out += ["", f"Scoring time per method (with the metrics in parentheses): {timings}.", ""]
    return "\n".join(out)


# ------------------------------------------------------------------- figures
def write_figures(summary: dict, result: EvalResult, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [str(k) for k in summary["config"]["ks"]]
    names = list(summary["methods"])
    figures = {}
    width = 0.8 / max(1, len(names))
    x = np.arange(len(ks))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, n in enumerate(names):
        frc = summary["methods"][n]["frc"]
        mean = np.array([frc[k]["mean"] if frc[k]["mean"] is not None else np.nan for k in ks])
        lo = np.array([frc[k]["lo"] if frc[k]["lo"] is not None else np.nan for k in ks])
        hi = np.array([frc[k]["hi"] if frc[k]["hi"] is not None else np.nan for k in ks])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, mean, width, label=n)
        ax.errorbar(
            x + (i - (len(names) - 1) / 2) * width,
            mean,
            yerr=np.nan_to_num(np.vstack([mean - lo, hi - mean])),
            fmt="none",
            ecolor="black",
            capsize=2,
            lw=0.8,
        )
    ax.set_xticks(x, [f"K = {k}" for k in ks])
    ax.set_ylabel("FRC@K (mean future return correlation)")
    ax.set_title("FRC@K with date-block bootstrap 95% intervals")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "frc.png", dpi=120)
    plt.close(fig)
    figures["frc.png"] = "FRC@K by method"

    gap_names = [
        n for n in names if summary["methods"][n].get("gap_closed") and n not in ("random", "oracle")
    ]
    if gap_names:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        w = 0.8 / len(gap_names)
        for i, n in enumerate(gap_names):
            gap = summary["methods"][n]["gap_closed"]
            mean = np.array([gap[k]["mean"] if gap[k]["mean"] is not None else np.nan for k in ks]) * 100
            lo = np.array([gap[k]["lo"] if gap[k]["lo"] is not None else np.nan for k in ks]) * 100
            hi = np.array([gap[k]["hi"] if gap[k]["hi"] is not None else np.nan for k in ks]) * 100
            pos = x + (i - (len(gap_names) - 1) / 2) * w
            ax.bar(pos, mean, w, label=n)
            ax.errorbar(
                pos,
                mean,
                yerr=np.nan_to_num(np.vstack([mean - lo, hi - mean])),
                fmt="none",
                ecolor="black",
                capsize=2,
                lw=0.8,
            )
        ax.set_xticks(x, [f"K = {k}" for k in ks])
        ax.set_ylabel("share of the Random-to-Oracle gap closed (%)")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / "gap_closed.png", dpi=120)
        plt.close(fig)
        figures["gap_closed.png"] = "Share of the Random-to-Oracle gap closed"

    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.8), sharey=True, squeeze=False)
    days = result.pnl_days.astype("datetime64[D]")
    for ki, k in enumerate(ks):
        ax = axes[0, ki]
        for mi, n in enumerate(result.methods):
            pnl = result.pnl[mi, ki]
            live = np.isfinite(pnl)
            ax.plot(days[live], np.cumsum(pnl[live]) * 100, label=n, lw=1)
        ax.set_title(f"K = {k}")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes[0, 0].set_ylabel("cumulative spread P&L (%)")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("Spread trading, gross, averaged over queries")
    fig.tight_layout()
    fig.savefig(out_dir / "spread_pnl.png", dpi=120)
    plt.close(fig)
    figures["spread_pnl.png"] = "Cumulative spread-trading P&L per method"

    ex = result.example
    if ex:
        past, future = np.array(ex["past"]), np.array(ex["future"])
        w, h = past.shape[1], future.shape[1]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        steps = np.arange(-w + 1, h + 1)
        for i in range(len(past)):
            path = np.concatenate([past[i], future[i]])
            label = (
                f"query {ex['query']}"
                if i == 0
                else f"{ex['peers'][i - 1]} (ρ {ex['peer_future_corr'][i - 1]:.2f})"
            )
            ax.plot(steps, path, lw=2.2 if i == 0 else 1, color="black" if i == 0 else None, label=label)
        ax.axvline(0, color="red", ls="--", lw=1)
        ax.set_xlabel(f"trading days from the query date {ex['date']}")
        ax.set_ylabel("price / price at the query date")
        ax.set_title(f"{ex['method']}: top {len(past) - 1} peers of {ex['query']} (window | future)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "example.png", dpi=120)
        plt.close(fig)
        figures["example.png"] = "Worked example: query and top peers, window and future"
    return figures


def write_report(summary: dict, result: EvalResult, out_dir: str | Path, info: dict) -> dict[str, Path]:
    """Write metrics.json, report.md and the PNG figures into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(summary, result, out_dir)
    info = {**info, "figures": figures}
    payload = {**summary, "info": {k: v for k, v in info.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    (out_dir / "report.md").write_text(render_markdown(summary, info))
    return {"metrics": out_dir / "metrics.json", "report": out_dir / "report.md"} | {
        name: out_dir / name for name in figures
    }

"""The report of a transfer study (``training/study.py``): results.csv, results.md, results.png.

- ``results.csv``: ``task,init,labeled_subjects,seed,metric,value`` (docs/conventions.md, 'Results CSV'); ``init``
  is ``<protocol>/<init>`` (each fine-tuning protocol is its own grid), ``labeled_subjects`` the number of
  labelled subjects the run trained on (``all``: the pool's size). Beside the task's own metrics, seg runs give
  ``dice basal|mid|apical`` (thirds of each test stack, ``training.seg_metrics.region_dice``) and
  ``dice pathology <GROUP>`` (mean Dice of the test subjects of that group); ACL runs on graded exams give
  ``auc grade partial|complete`` (the test exams with a tear of that grade against every intact one).
- ``results.md``: first the label-efficiency matrix (per protocol, init × labelled count, mean ± std over
  seeds); then per protocol and labelled count, per initialisation: the headline metric's mean ± std over
  seeds, the **paired gain over scratch** (same protocol, same seeds: the same labelled subjects, as
  ``data.splits.choose_labeled_subjects`` draws them from the seed alone) with a percentile bootstrap
  interval (:func:`paired_bootstrap_ci`: the per-seed differences resampled with replacement; the test
  subjects stay fixed, so the interval covers the spread over labelled subsets and training randomness,
  not over patients), and the mean Dice by third and by pathology (ACL: the AUC by tear grade); then every
  per-seed gain, how many seeds it is positive on, and the paired Student-t interval of the mean gain
  (:func:`paired_t_ci`), a check on the bootstrap: with five seeds the percentile bootstrap interval is
  narrower than its nominal level (it resamples only the five differences seen), the t interval is not; then,
  per labelled count, the best pretrained (protocol, init) against the best scratch protocol
  (:func:`best_against_best`), chosen on the runs' validation scores (the task's ``validation`` metric; the
  study's answer) and, for comparison, on the test numbers themselves; the runs that never found a structure
  (:func:`collapsed_structures`); the pretext errors of the pretrained networks; and what the study cost
  (:func:`compute_summary`).
- ``results.png``: label-efficiency curves (headline metric vs labelled subjects, log2 axis), one panel
  per protocol, one line per initialisation with a ± std band.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["paired_bootstrap_ci", "paired_t_ci", "paired_differences", "paired_gains", "run_key", "study_table",
           "best_against_best",
           "collapsed_structures", "compute_summary", "write_study_report"]

RESULT_COLUMNS = ("task", "init", "labeled_subjects", "seed", "metric", "value")
REGION_METRICS = ("dice basal", "dice mid", "dice apical")
PATHOLOGY_PREFIX = "dice pathology "
#: subgroup metrics, as metric prefix -> column family: a seg run's Dice per pathology group, an ACL run's AUC
#: per tear grade (``training.finetune_acl.metrics_by_grade``)
SUBGROUP_PREFIXES = {PATHOLOGY_PREFIX: "pathology", "auc grade ": "grade"}


def _finite_and_mean(differences: Sequence[float]) -> tuple[np.ndarray, float]:
    """The finite differences and their mean (nan when there are none)."""
    d = np.asarray([x for x in differences if math.isfinite(x)], dtype=np.float64)
    return d, float(d.mean()) if len(d) else math.nan


def paired_bootstrap_ci(differences: Sequence[float], confidence: float = 0.95, resamples: int = 10000,
                        seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of paired differences: the mean, and the percentile bootstrap interval of the mean
    (``resamples`` draws of ``len(differences)`` differences with replacement, numpy generator seeded by
    ``seed``; percentiles ``(1 ± confidence) / 2``). One difference: ``(d, nan, nan)``; none: all nan."""
    d, mean = _finite_and_mean(differences)
    if len(d) < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng([seed, 0xB007])
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def paired_t_ci(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of paired differences and its Student-t interval (``n - 1`` degrees of
    freedom, standard error ``sd / sqrt(n)``). Fewer than two differences: the interval is nan."""
    from scipy import stats

    d, mean = _finite_and_mean(differences)
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def _values(rows: list[dict[str, Any]], metric: str) -> dict[tuple[str, str, int], dict[int, float]]:
    """``{(protocol, init, labelled): {seed: value}}`` of one metric."""
    out: dict[tuple[str, str, int], dict[int, float]] = {}
    for r in rows:
        if r["metric"] == metric:
            v = float(r["value"]) if r["value"] is not None else math.nan
            out.setdefault((r.get("protocol", ""), r["init"], int(r["labeled_subjects"])), {})[int(r["seed"])] = v
    return out


def paired_differences(by_seed: dict[int, float], reference: dict[int, float]) -> dict[int, float]:
    """``{seed: by_seed - reference}`` on the seeds both have (finite differences only), in seed order."""
    diffs = {s: by_seed[s] - reference[s] for s in sorted(set(by_seed) & set(reference))}
    return {s: d for s, d in diffs.items() if math.isfinite(d)}


def paired_gains(by_seed: dict[int, float], reference: dict[int, float], confidence: float = 0.95,
                 resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """The paired gain of ``by_seed`` over ``reference`` on the seeds both have: ``gain`` (mean) with its
    bootstrap (``low``, ``high``) and Student-t (``t_low``, ``t_high``) intervals, ``per_seed`` differences,
    ``pairs`` and ``better_on`` (seeds with a positive gain)."""
    per_seed = paired_differences(by_seed, reference)
    diffs = list(per_seed.values())
    gain, low, high = paired_bootstrap_ci(diffs, confidence, resamples, seed)
    _, t_low, t_high = paired_t_ci(diffs, confidence)
    return {"gain": gain, "low": low, "high": high, "t_low": t_low, "t_high": t_high, "per_seed": per_seed,
            "pairs": len(diffs), "better_on": sum(1 for d in diffs if d > 0)}


def run_key(row: dict[str, Any]) -> tuple[str, str, str, Any]:
    """The fine-tuning run a results row belongs to: ``(protocol, init, labelled setting, seed)`` (the setting
    as the grid names it: a count or ``all``)."""
    return (row.get("protocol", ""), row["init"], str(row.get("labeled_setting", row["labeled_subjects"])),
            row["seed"])


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return mean, std, len(v)


def study_table(rows: list[dict[str, Any]], metric: str, inits: list[str], protocols: list[str], scratch: str | None,
                confidence: float = 0.95, resamples: int = 10000, seed: int = 0) -> list[dict[str, Any]]:
    """One entry per (protocol, labelled count, init): mean/std/n of ``metric``, the paired gain over
    ``scratch`` with its interval, and the mean by region and subgroup (:data:`SUBGROUP_PREFIXES`)."""
    head = _values(rows, metric)
    regions = {m: _values(rows, m) for m in REGION_METRICS}
    # column name ("pathology DCM", "grade partial") -> the values of its metric ("dice pathology DCM", ...)
    by_group = {f"{family} {r['metric'][len(prefix):]}": r["metric"] for r in rows
                for prefix, family in SUBGROUP_PREFIXES.items() if r["metric"].startswith(prefix)}
    by_group = {column: _values(rows, by_group[column]) for column in sorted(by_group)}
    settings = {int(r["labeled_subjects"]): r.get("labeled_setting", r["labeled_subjects"]) for r in rows}
    out = []
    for protocol in protocols:
        for n in sorted(settings):
            ref = head.get((protocol, scratch, n), {}) if scratch else {}
            for init in inits:
                values = head.get((protocol, init, n))
                if not values:
                    continue
                mean, std, count = _mean_std(list(values.values()))
                entry: dict[str, Any] = {"protocol": protocol, "labeled_subjects": n, "setting": settings[n],
                                         "init": init, "mean": mean, "std": std, "n": count}
                if scratch and init != scratch and ref:
                    entry |= paired_gains(values, ref, confidence, resamples, seed)
                for m in REGION_METRICS:
                    entry[m.split()[1]] = _mean_std(list(regions[m].get((protocol, init, n), {}).values()))[0]
                for column, values_of in by_group.items():
                    entry[column] = _mean_std(list(values_of.get((protocol, init, n), {}).values()))[0]
                out.append(entry)
    return out


def best_against_best(rows: list[dict[str, Any]], metric: str, protocols: list[str], scratch: str | None,
                      confidence: float = 0.95, resamples: int = 10000, seed: int = 0,
                      choose_by: str | None = None) -> list[dict[str, Any]]:
    """Per labelled count: the best pretrained (protocol, init) against the best scratch protocol, with the paired
    gain in ``metric`` and its bootstrap and t intervals. Best = highest mean over seeds of ``choose_by`` (a
    validation score: an honest choice) or, without it, of ``metric`` itself (chosen on the numbers it reports,
    so optimistic). A count where no cell has a finite ``choose_by`` is left out."""
    head = _values(rows, metric)
    chooser = _values(rows, choose_by) if choose_by else head
    out = []
    for n in sorted({k[2] for k in head}):
        cells = {(p, i): v for (p, i, m), v in head.items() if m == n and p in protocols}

        def score(cell: tuple[str, str], n: int = n) -> float:
            m = _mean_std(list(chooser.get((*cell, n), {}).values()))[0]
            return m if math.isfinite(m) else -math.inf

        pre = [k for k in cells if k[1] != scratch]
        ref = [k for k in cells if k[1] == scratch]
        if not pre or not ref:
            continue
        best = max(pre, key=score)
        base = max(ref, key=score)
        if score(best) == -math.inf or score(base) == -math.inf:
            continue
        out.append({"labeled_subjects": n, "best": "/".join(best), "scratch": "/".join(base),
                    **paired_gains(cells[best], cells[base], confidence, resamples, seed),
                    **({"chosen_by": choose_by, "best_score": score(best), "scratch_score": score(base)}
                       if choose_by else {})})
    return out


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _markdown(table: list[dict[str, Any]], metric: str, description: str, scratch: str | None, confidence: float,
              resamples: int, best: list[dict[str, Any]], chosen: list[dict[str, Any]]) -> str:
    families = tuple(f"{family} " for family in SUBGROUP_PREFIXES.values())
    groups = sorted({k for e in table for k in e if k.startswith(families)})
    thirds = any(math.isfinite(e.get(r, math.nan)) for e in table for r in ("basal", "mid", "apical"))
    pct = f"{confidence * 100:g} %"
    about = []
    if thirds:
        about.append("Thirds: basal / mid / apical third of each test SAX stack (structures absent from both "
                     "prediction and reference skipped).")
    if any(g.startswith("pathology ") for g in groups):
        about.append("Pathology columns: mean Dice of the test subjects of that group.")
    if any(g.startswith("grade ") for g in groups):
        about.append("Grade columns: AUC of the test exams with a tear of that grade against every intact test "
                     "exam, mean over seeds (a partial tear is the harder call).")
    lines = [f"# Transfer study: `{metric}` ({description})", "",
             " ".join([f"Mean ± std over seeds; gain = paired difference from `{scratch}` (same protocol, same seed, "
                       f"so the same labelled subjects), mean and {pct} percentile bootstrap interval of the mean "
                       f"({resamples} resamples of the per-seed differences with replacement; the test subjects are "
                       "fixed, so the interval reflects labelled-subset and training randomness, not patient "
                       "sampling).", *about]), ""]
    lines += _efficiency_markdown(table, metric)
    cols = ["init", "mean ± std (seeds)", f"gain over {scratch} [{pct} CI]", *(["basal", "mid", "apical"] if thirds
                                                                              else []),
            *[g.split(" ", 1)[1] + (" (AUC)" if g.startswith("grade ") else "") for g in groups]]
    current = None
    for e in table:
        key = (e["protocol"], e["labeled_subjects"])
        if key != current:
            current = key
            setting = e["setting"]
            count = f"all ({e['labeled_subjects']})" if setting == "all" else str(e["labeled_subjects"])
            lines += ["", f"## Protocol `{e['protocol']}`, {count} labelled subject(s)", "",
                      "| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
        gain = "–"
        if "gain" in e:
            gain = f"{e['gain']:+.3f} [{_fmt(e['low'])}, {_fmt(e['high'])}] (n={e['pairs']})"
        cells = [e["init"], f"{_fmt(e['mean'])} ± {_fmt(e['std'])} (n={e['n']})", gain,
                 *([_fmt(e["basal"]), _fmt(e["mid"]), _fmt(e["apical"])] if thirds else []),
                 *[_fmt(e.get(g, math.nan)) for g in groups]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _per_seed_markdown(table, scratch, pct, metric)
    if best:
        lines += _best_markdown(best, chosen, pct)
    return "\n".join(lines) + "\n"


def _best_markdown(best: list[dict[str, Any]], chosen: list[dict[str, Any]], pct: str) -> list[str]:
    """The study's answer per labelled count: the best pretrained against the best scratch protocol, chosen on
    validation (``chosen``; the honest choice) and on the test numbers themselves (``best``; optimistic)."""
    head = f"| labelled subjects | best pretrained | best scratch | gain [{pct} bootstrap CI] | paired t {pct} CI | " \
           "better on |"

    def row(b: dict[str, Any]) -> str:
        text = (f"| {b['labeled_subjects']} | {b['best']} | {b['scratch']} | {b['gain']:+.3f} "
                f"[{_fmt(b['low'])}, {_fmt(b['high'])}] | [{_fmt(b['t_low'])}, {_fmt(b['t_high'])}] | "
                f"{b['better_on']} of {b['pairs']} |")
        return text + (f" {_fmt(b['best_score'])} / {_fmt(b['scratch_score'])} |" if "chosen_by" in b else "")

    lines = ["", "## Best pretrained against best scratch", ""]
    if chosen:
        metric = chosen[0]["chosen_by"]
        lines += [f"Per labelled count, the pretrained (protocol/init) and the scratch protocol with the highest mean "
                  f"validation score (`{metric}`: the validation subjects' score at the epoch each run kept, never "
                  "the test subjects'), then their paired gain on the test subjects, so the choice does not flatter "
                  "the gain (last column: the two validation means it chose on):", "",
                  head + " validation: pretrained / scratch |", "|---:|---|---|---:|---:|---:|---:|", *map(row, chosen),
                  "", "The same chosen on the test numbers themselves (the highest test mean; optimistic):", ""]
    else:
        lines += ["Per labelled count, the pretrained (protocol/init) and the scratch protocol with the highest mean, "
                  "paired by seed; chosen on these same test numbers, so the gain is optimistic.", ""]
    return lines + [head, "|---:|---|---|---:|---:|---:|", *map(row, best)]


def _efficiency_markdown(table: list[dict[str, Any]], metric: str) -> list[str]:
    """The label-efficiency curves in numbers: per protocol, one row per initialisation, one column per
    labelled count, the mean ± std over seeds (and how many seeds where fewer than the most of any cell)."""
    lines = ["", f"## Label efficiency: `{metric}`, mean ± std over seeds"]
    most = max((e["n"] for e in table), default=0)
    for protocol in dict.fromkeys(e["protocol"] for e in table):
        entries = [e for e in table if e["protocol"] == protocol]
        counts = sorted({e["labeled_subjects"] for e in entries})
        settings = {e["labeled_subjects"]: e["setting"] for e in entries}
        heads = [f"all ({n})" if settings[n] == "all" else str(n) for n in counts]
        cell = {(e["init"], e["labeled_subjects"]): e for e in entries}
        lines += ["", f"**`{protocol}`**", "", "| init \\ labelled subjects | " + " | ".join(heads) + " |",
                  "|---|" + "---:|" * len(counts)]
        for init in dict.fromkeys(e["init"] for e in entries):
            cells = []
            for n in counts:
                e = cell.get((init, n))
                text = "–" if e is None else f"{_fmt(e['mean'])} ± {_fmt(e['std'])}"
                cells.append(text + (f" (n={e['n']})" if e is not None and e["n"] < most else ""))
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return lines


def _per_seed_markdown(table: list[dict[str, Any]], scratch: str | None, pct: str, metric: str) -> list[str]:
    """Every paired gain seed by seed, the seeds it is positive on and the paired t interval of its mean."""
    gains = [e for e in table if e.get("per_seed")]
    if not gains:
        return []
    lines = ["", f"## Gains over {scratch} seed by seed", "",
             f"Per protocol and labelled count, each initialisation's {_metric_noun(metric)} minus {scratch}'s on "
             "the same seed; "
             f"'better on' counts the seeds with a positive gain; the last column is the paired Student-t {pct} "
             "interval of the mean gain (n − 1 degrees of freedom), wider than the bootstrap interval above when "
             "there are few seeds: the bootstrap resamples only the differences seen, which makes its interval "
             "too narrow for five.", ""]
    current = None
    for e in gains:
        key = (e["protocol"], e["labeled_subjects"])
        if key != current:
            current = key
            seeds = sorted({s for g in gains if (g["protocol"], g["labeled_subjects"]) == key for s in g["per_seed"]})
            count = f"all ({e['labeled_subjects']})" if e["setting"] == "all" else str(e["labeled_subjects"])
            lines += ["", f"**`{e['protocol']}`, {count} labelled**", "",
                      "| init | " + " | ".join(f"seed {s}" for s in seeds) + f" | better on | t {pct} CI |",
                      "|---|" + "---:|" * (len(seeds) + 2)]
        diffs = e["per_seed"]
        cells = [e["init"], *[f"{diffs[s]:+.3f}" if s in diffs else "–" for s in seeds],
                 f"{e['better_on']} of {e['pairs']}",
                 f"[{_fmt(e['t_low'])}, {_fmt(e['t_high'])}]"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _metric_noun(metric: str) -> str:
    """How the text names a headline metric: Dice for the seg task's, else the metric's own name."""
    return "Dice" if metric.startswith("dice") else f"`{metric}`"


def _plot(table: list[dict[str, Any]], protocols: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4.2), squeeze=False, sharey=True)
    try:
        counts = sorted({e["labeled_subjects"] for e in table})
        for ax, protocol in zip(axes[0], protocols, strict=True):
            entries = [e for e in table if e["protocol"] == protocol and e["n"] > 0]
            for init in dict.fromkeys(e["init"] for e in entries):
                pts = sorted((e["labeled_subjects"], e["mean"], e["std"]) for e in entries if e["init"] == init)
                xs, means, stds = (np.array(v) for v in zip(*pts, strict=True))
                line = ax.plot(xs, means, marker="o", label=init)[0]
                ax.fill_between(xs, means - stds, means + stds, color=line.get_color(), alpha=0.15)
            ax.set_xscale("log", base=2)
            ax.set_xticks(counts)
            ax.set_xticklabels([str(c) for c in counts])
            ax.set_xlabel("labelled subjects")
            ax.set_title(f"protocol {protocol}")
            ax.grid(True, alpha=0.3)
            if entries:  # a protocol with no finished run yet (a partial report) has nothing to label
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no run finished yet", transform=ax.transAxes, ha="center", color="grey")
        axes[0][0].set_ylabel(f"{metric} (mean ± std over seeds)")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def _pretext_markdown(pretext: dict[str, dict[str, Any]]) -> str:
    lines = ["", "## Pretext tasks on held-out subjects", "",
             "Each pretrained network on the held-out subjects of the pretraining cohort (its validation split: "
             "subjects it never trained on); as `planessl evaluate-pretext`. Line errors over every predicted "
             "intersection line (a missed line counts 90°).", "",
             "| pretraining | images | median line angle (°) | median line distance (mm) | location MAE | "
             "mirror confusion | location MAE, mirror confusion by view |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, report in pretext.items():
        o = report.get("overall", {})
        by_view = "; ".join(f"{view} {_fmt(_num(v.get('mae')))}, {_percent(v.get('mirror_confusion'))}"
                            for view, v in (report.get("location_by_view") or {}).items())
        lines.append(f"| {name} | {o.get('n_images', '–')} | {_fmt(_num(o.get('median_angle_deg')), 1)} | "
                     f"{_fmt(_num(o.get('median_distance_mm')), 1)} | {_fmt(_num(o.get('location_mae')))} | "
                     f"{_percent(o.get('mirror_confusion'))} | {by_view or '–'} |")
    lines += ["", "Mirror confusion: among slices with |t − 0.5| > 0.2, the share whose predicted location lies "
              "nearer 1 − t than t (50 % is chance)."]
    return "\n".join(lines) + "\n"


def _percent(value: Any) -> str:
    x = _num(value)
    return "–" if not math.isfinite(x) else f"{100 * x:.1f} %"


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def compute_summary(rows: list[dict[str, Any]], protocols: list[str],
                    pretraining: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """What the study cost this machine: per protocol the finished runs' wall times (``wall_s`` of each run's
    results_rows.json; a run resumed after a stop counts from its resumption), and per pretraining its epochs
    and the sum of its epochs' training time (``pretraining``: name -> ``{epochs, train_s}``)."""
    out: dict[str, Any] = {"protocols": {}, "pretraining": dict(pretraining or {})}
    for protocol in protocols:
        runs = {run_key(r): _num(r.get("wall_s")) for r in rows if r.get("protocol", "") == protocol}
        walls = sorted(w for w in runs.values() if math.isfinite(w))
        if walls:
            out["protocols"][protocol] = {"runs": len(runs), "timed": len(walls), "median_s": float(np.median(walls)),
                                          "min_s": walls[0], "max_s": walls[-1], "sum_s": float(sum(walls))}
    return out


def collapsed_structures(rows: list[dict[str, Any]], protocols: list[str]) -> list[dict[str, Any]]:
    """Segmentation runs whose test Dice of a structure is 0 over every test volume (``dice all <S>``): the
    network never found it, a failure of the run rather than a low score (a class left out of the prediction,
    e.g. a fine-tuning that never leaves a start where another class wins every pixel). Each with the number
    of test volumes in which it predicted none of that structure (``n_empty_pred all <S>``)."""
    out = []
    values = {(*run_key(r), r["metric"]): _num(r.get("value")) for r in rows}
    for (protocol, init, setting, seed, metric), value in sorted(values.items(), key=lambda kv: str(kv[0])):
        if protocol not in protocols or not metric.startswith("dice all ") or value != 0.0:
            continue
        structure = metric[len("dice all "):]
        empty = values.get((protocol, init, setting, seed, f"n_empty_pred all {structure}"), math.nan)
        out.append({"protocol": protocol, "init": init, "labeled": setting, "seed": seed, "structure": structure,
                    "empty_volumes": empty})
    return out


def _collapsed_markdown(collapsed: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    if not collapsed:
        return ""
    runs: dict[tuple[str, str], set[tuple[str, str, str, Any]]] = {}
    for r in rows:
        key = run_key(r)
        runs.setdefault(key[:2], set()).add(key)
    failed: dict[tuple[str, str], set[tuple[str, Any]]] = {}
    for c in collapsed:  # a run that lost two structures counts once
        failed.setdefault((c["protocol"], c["init"]), set()).add((c["labeled"], c["seed"]))
    lines = ["", "## Runs that never found a structure", "",
             "Test Dice 0 for a structure over every test volume: the fine-tuned network leaves that class out "
             "(its means above include these runs). Per protocol and initialisation, the runs affected of those "
             "finished:", "",
             "| protocol / init | runs | which: structure (test volumes with none of it predicted) |",
             "|---|---:|---|"]
    for key in sorted(failed):
        which = "; ".join(f"{c['labeled']} labelled, seed {c['seed']}: {c['structure']} "
                          f"({_fmt(c['empty_volumes'], 0)})" for c in collapsed if (c["protocol"], c["init"]) == key)
        lines.append(f"| {key[0]} / {key[1]} | {len(failed[key])} of {len(runs.get(key, ()))} | {which} |")
    return "\n".join(lines) + "\n"


def _compute_markdown(compute: dict[str, Any]) -> str:
    if not compute["protocols"] and not compute["pretraining"]:
        return ""
    lines = ["", "## Compute", "",
             "Wall time on the machine that ran the study (`settings/software.json` names its CPU count and "
             "threads). A run resumed after a stop counts from its resumption; runs that ran side by side "
             "(`--jobs N`) each count their own time, so the grid's clock time is about the sum divided by N.", ""]
    if compute["protocols"]:
        lines += ["| protocol | runs | wall time per run: median (range) | sum of run wall times |",
                  "|---|---:|---:|---:|"]
        for protocol, c in compute["protocols"].items():
            lines.append(f"| {protocol} | {c['timed']} | {c['median_s']:.0f} s ({c['min_s']:.0f}–{c['max_s']:.0f} s) "
                         f"| {c['sum_s'] / 3600:.2f} h |")
    if compute["pretraining"]:
        lines += ["", "| pretraining | epochs | training time (sum over epochs, without validation) |",
                  "|---|---:|---:|"]
        for name, p in compute["pretraining"].items():
            lines.append(f"| {name} | {int(p['epochs'])} | {p['train_s'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _progress_markdown(progress: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in progress["seeds_done"])
    done = f"seeds {seeds} complete" if seeds else "no seed complete yet"
    text = (f"**Partial report: {progress['runs_done']} of {progress['runs_total']} fine-tuning runs finished "
            f"({done}).** The study is still running (or was stopped); rerunning its command resumes it and "
            "rewrites this report.\n\n")
    per_count = progress.get("per_count")
    if per_count:  # (protocol, labelled count) -> runs finished (of every init x seed)
        cells = [f"{p} {n} labelled {k}/{progress['per_count_total']}" for (p, n), k in per_count.items()]
        text += f"Runs finished per protocol and labelled count: {'; '.join(cells)}.\n\n"
    return text


def write_study_report(rows: list[dict[str, Any]], out: Path, config: Any, protocols: list[str],
                       pretext: dict[str, dict[str, Any]] | None = None,
                       progress: dict[str, Any] | None = None,
                       pretraining_time: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """results.csv, results.md, results.png of a study (module docstring); returns a summary dict. ``pretext``:
    pretraining name -> its held-out pretext report (a section of results.md); ``progress``: ``{runs_done,
    runs_total, seeds_done}`` of a study still running (said at the top of results.md); ``pretraining_time``:
    name -> ``{epochs, train_s}`` (the compute section, with the runs' wall times)."""
    from .experiment import HEADLINE_METRICS, init_spec
    from .tasks import FINETUNE_KINDS

    metric, description = HEADLINE_METRICS[config.task]
    inits = list(config.inits)
    scratch = next((name for name, v in config.inits.items() if init_spec(v)[0] == "scratch"), None)
    rep = config.report or {}
    confidence, resamples, seed = float(rep.get("confidence", 0.95)), int(rep.get("bootstrap", 10000)), \
        int(rep.get("seed", 0))
    table = study_table(rows, metric, inits, protocols, scratch, confidence, resamples, seed)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        value = r.get("value")
        writer.writerow({**{k: r.get(k) for k in RESULT_COLUMNS}, "init": f"{r.get('protocol', '')}/{r['init']}",
                         "value": "nan" if value is None else value})
    atomic_write_bytes(out / "results.csv", buffer.getvalue().encode("utf-8"))
    best = best_against_best(rows, metric, protocols, scratch, confidence, resamples, seed)
    chosen = best_against_best(rows, metric, protocols, scratch, confidence, resamples, seed,
                               choose_by=FINETUNE_KINDS[config.task].validation)
    markdown = _markdown(table, metric, description, scratch, confidence, resamples, best, chosen)
    if progress:
        head, rest = markdown.split("\n", 1)
        markdown = f"{head}\n\n{_progress_markdown(progress)}{rest.lstrip()}"
    collapsed = collapsed_structures(rows, protocols)
    markdown += _collapsed_markdown(collapsed, rows)
    if pretext:
        markdown += _pretext_markdown(pretext)
    compute = compute_summary(rows, protocols, pretraining_time)
    markdown += _compute_markdown(compute)
    atomic_write_text(out / "results.md", markdown)
    _plot(table, protocols, metric, out / "results.png")
    return {"output": str(out), "task": config.task, "metric": metric, "metric_description": description,
            "runs": len({(r.get("protocol"), r["init"], r["labeled_subjects"], r["seed"]) for r in rows}),
            "results_csv": str(out / "results.csv"), "results_md": str(out / "results.md"),
            "results_png": str(out / "results.png"), "table": table, "markdown": markdown, "compute": compute,
            "collapsed": collapsed, "best": best, "best_on_validation": chosen}

"""Tables, statistics and plots of an evaluation, in the paper's layout (Tables 1-2, Fig. 1).

Rows are one (model, case, seed, clicks) each. A case's value at t clicks is the mean over its
seeds ("each interaction and sample outcome is averaged on three repetitions"); a table cell is
the mean ± sd (ddof 1) of those case values; "1 to N Avg." first averages each case over
t = 1..N. Changed voxels are reported per interaction event (mean ± sd over all events, as the
paper's Table 3). Model comparisons: two-sided Wilcoxon signed-rank tests on the per-case
values, Benjamini-Hochberg corrected over all tests of a metric.
"""
from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("dice", "hd95_mm", "assd_mm", "surface_dice_1mm")
METRIC_TITLES = {"dice": "DSC", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)",
                 "surface_dice_1mm": "Surface DSC (1 mm)"}
#: The one-click floor beside the model, per case (``simulation.one_click_baseline``): Dice of
#: the 40 % and 50 % SUVmax regions from the tumour's innermost voxel, of the model after that
#: same click as its first, positive click, and of the session's 40 % threshold click.
BASELINE_FIELDS = {"threshold40_dice": "40 % SUVmax region", "threshold50_dice": "50 % SUVmax region",
                   "model_one_click_dice": "model, 1 click there", "threshold_click_dice": "threshold click"}
#: The calibration of the uncertainty (``evaluate --uncertainty N``), at 0 clicks and after the
#: last: expected calibration error (15 bins) and the entropy's error-detection ROC AUC.
UNCERTAINTY_FIELDS = {"ece": "ECE", "error_auc": "error AUC"}
ROW_FIELDS = ("model", "case_id", "seed", "clicks", *METRICS, "changed_voxels", "seconds", *BASELINE_FIELDS,
              *UNCERTAINTY_FIELDS)


#: The per-class metrics of multi-class models (``<metric>_<class>`` row fields), and the
#: per-case sums of HECKTOR 2022's aggregated Dice (in mL): DSCagg = sum overlap2 / sum volume_sum.
CLASS_METRICS = METRICS
DSC_AGG_FIELDS = ("overlap2_ml", "volume_sum_ml")


def class_fields(rows: list[dict]) -> list[str]:
    """The per-class row fields present in ``rows`` (in the order first seen); none for
    single-class models."""
    known = set(ROW_FIELDS)
    prefixes = tuple(f"{m}_" for m in CLASS_METRICS + DSC_AGG_FIELDS + tuple(UNCERTAINTY_FIELDS))
    fields: dict = {}
    for row in rows:
        for key in row:
            if key not in known and key.startswith(prefixes):
                fields[key] = None
    return list(fields)


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        fields = ROW_FIELDS + tuple(class_fields(rows))
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _number(value) -> float:
    return math.nan if value is None or value == "" else float(value)


def case_values(rows: list[dict], metric: str) -> dict:
    """``{model: {case_id: np.array over clicks 0..N}}``: the seed-averaged metric."""
    grouped = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        grouped[row["model"]][row["case_id"]][int(row["clicks"])].append(_number(row[metric]))
    out = {}
    for model, cases in grouped.items():
        out[model] = {}
        for case_id, by_click in cases.items():
            n = max(by_click) + 1
            out[model][case_id] = np.array([_nanmean(by_click[t]) for t in range(n)], dtype=float)
    return out


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return math.nan if np.all(np.isnan(values)) else float(np.nanmean(values))


def columns_for(n_clicks: int) -> list:
    """The paper's columns: 0, 1, 5 and 10 clicks and the 1-to-N average (clipped to N)."""
    picks = sorted({t for t in (0, 1, 5, 10) if t <= n_clicks} | {n_clicks})
    return picks + (["avg"] if n_clicks >= 1 else [])


def column_values(per_case: dict, column) -> dict:
    """``{case_id: value}`` of one column."""
    if column == "avg":
        return {c: _nanmean(v[1:]) for c, v in per_case.items()}
    return {c: float(v[column]) for c, v in per_case.items()}


def _mean_sd(values) -> tuple[float, float, int]:
    values = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if values.size == 0:
        return math.nan, math.nan, 0
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), sd, int(values.size)


def summary_table(rows: list[dict], n_clicks: int) -> list[dict]:
    """Long table: model, metric, column, mean, sd, n (cases)."""
    table = []
    for metric in METRICS:
        for model, per_case in case_values(rows, metric).items():
            for column in columns_for(n_clicks):
                mean, sd, n = _mean_sd(column_values(per_case, column).values())
                table.append(_entry(model, metric, column, mean, sd, n))
    for model in dict.fromkeys(r["model"] for r in rows):
        events = [_number(r["changed_voxels"]) for r in rows if r["model"] == model and int(r["clicks"]) > 0]
        table.append(_entry(model, "changed_voxels", "per_click", *_mean_sd(events)))
    return table


def _entry(model, metric, column, mean, sd, n) -> dict:
    return {"model": model, "metric": metric, "column": str(column), "mean": mean, "sd": sd, "n": n}


def _label(column, n_clicks: int) -> str:
    if column == "avg":
        return f"1 to {n_clicks} Avg."
    return f"{column} Click" + ("" if str(column) == "1" else "s")


def markdown(table: list[dict], n_clicks: int, header: str = "") -> str:
    lines = [header] if header else []
    models = list(dict.fromkeys(r["model"] for r in table))
    cols = [str(c) for c in columns_for(n_clicks)]
    cell = {(r["model"], r["metric"], r["column"]): r for r in table}
    for metric in METRICS:
        lines += ["", f"### {METRIC_TITLES[metric]}", "",
                  "| Model | " + " | ".join(_label(c, n_clicks) for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for model in models:
            values = [cell.get((model, metric, c)) for c in cols]
            lines.append(f"| {model} | " + " | ".join(_fmt(v) for v in values) + " |")
    lines += ["", "### Changed voxels per click (mean ± sd over interaction events)", "",
              "| Model | Changed voxels |", "|---|---|"]
    lines += [f"| {m} | {_fmt(cell.get((m, 'changed_voxels', 'per_click')), 0)} |" for m in models]
    return "\n".join(lines) + "\n"


def baseline_markdown(rows: list[dict]) -> str:
    """Per model and case, the one-click floor (:data:`BASELINE_FIELDS`) beside the model's Dice
    at 0 and 1 simulated clicks; the mean over cases last. Empty without baseline values."""
    if not any(_number(r.get("threshold40_dice")) == _number(r.get("threshold40_dice")) for r in rows):
        return ""
    fields = ["dice@0", "dice@1", *BASELINE_FIELDS]
    lines = ["", "### One click at the tumour's innermost voxel: the PET threshold floor", "",
             "| Model | Case | DSC 0 clicks | DSC 1 click | " + " | ".join(BASELINE_FIELDS.values()) + " |",
             "|---" * (len(fields) + 2) + "|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        per_case = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["model"] == model and int(r["clicks"]) <= 1:
                per_case[r["case_id"]][f"dice@{int(r['clicks'])}"].append(_number(r["dice"]))
                if int(r["clicks"]) == 0:
                    for field in BASELINE_FIELDS:
                        per_case[r["case_id"]][field].append(_number(r.get(field)))
        means = {c: [_nanmean(v[f]) for f in fields] for c, v in per_case.items()}
        means["mean"] = [_nanmean([m[i] for m in means.values()]) for i in range(len(fields))]
        for case_id, values in means.items():
            lines.append(f"| {model} | {case_id} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def uncertainty_per_case(rows: list[dict]) -> dict:
    """``{model: {case_id: {clicks: {"ece": ..., "error_auc": ...}}}}`` (clicks "0" and the last,
    means over seeds, None where undefined) from the rows that hold a calibration; empty without."""
    grouped = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for row in rows:
        if row.get("ece") not in (None, ""):
            for field in UNCERTAINTY_FIELDS:
                grouped[row["model"]][row["case_id"]][str(int(row["clicks"]))][field].append(_number(row[field]))

    def mean(values):
        value = _nanmean(values)
        return None if math.isnan(value) else round(value, 4)

    return {model: {case_id: {t: {f: mean(v[f]) for f in UNCERTAINTY_FIELDS} for t, v in by_click.items()}
                    for case_id, by_click in cases.items()} for model, cases in grouped.items()}


def uncertainty_markdown(rows: list[dict], n_clicks: int) -> str:
    """Per model and case, the uncertainty's calibration at 0 clicks and after the last click
    (:func:`uncertainty_per_case`); empty without it."""
    per_case = uncertainty_per_case(rows)
    if not per_case:
        return ""
    columns = [(str(t), f) for t in dict.fromkeys(["0", str(n_clicks)]) for f in UNCERTAINTY_FIELDS]
    lines = ["", "### Calibration of the uncertainty (ECE: 15 bins of the mean probability; error AUC: "
             "the entropy's ROC AUC for the misclassified voxels)", "",
             "| Model | Case | " + " | ".join(f"{UNCERTAINTY_FIELDS[f]} {t} clicks" for t, f in columns)
             + " |",
             "|---" * (len(columns) + 2) + "|"]
    for model, cases in per_case.items():
        for case_id, by_click in cases.items():
            cells = [by_click.get(t, {}).get(f) for t, f in columns]
            lines.append(f"| {model} | {case_id} | "
                         + " | ".join("n/a" if v is None else f"{v:.4f}" for v in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(entry, digits: int = 3) -> str:
    if entry is None or math.isnan(entry["mean"]):
        return "n/a"
    return f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f}"


def write_table_csv(table: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("model", "metric", "column", "mean", "sd", "n"))
        writer.writeheader()
        writer.writerows(table)


def wilcoxon_tests(rows: list[dict], n_clicks: int, metric: str = "dice") -> list[dict]:
    """Two-sided Wilcoxon signed-rank tests between every pair of models at every column,
    Benjamini-Hochberg corrected over all of them (``p_bh``)."""
    from scipy import stats

    per_model = case_values(rows, metric)
    tests = []
    for a, b in itertools.combinations(per_model, 2):
        for column in list(range(n_clicks + 1)) + ["avg"]:
            va, vb = column_values(per_model[a], column), column_values(per_model[b], column)
            cases = [c for c in va if c in vb and not (math.isnan(va[c]) or math.isnan(vb[c]))]
            x, y = np.array([va[c] for c in cases]), np.array([vb[c] for c in cases])
            if len(cases) == 0:
                continue
            if np.all(x == y):
                statistic, p = 0.0, 1.0
            else:
                result = stats.wilcoxon(x, y, alternative="two-sided")
                statistic, p = float(result.statistic), float(result.pvalue)
            tests.append({"metric": metric, "model_a": a, "model_b": b, "column": str(column),
                          "n": len(cases), "median_difference": float(np.median(x - y)),
                          "statistic": statistic, "p": p})
    if tests:
        adjusted = stats.false_discovery_control([t["p"] for t in tests], method="bh")
        for test, p_bh in zip(tests, adjusted):
            test["p_bh"] = float(p_bh)
            test["significant"] = bool(p_bh < 0.05)
    return tests


def write_tests_csv(tests: list[dict], path: Path) -> None:
    fields = ("metric", "model_a", "model_b", "column", "n", "median_difference", "statistic", "p", "p_bh",
              "significant")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(tests)


def plot_dice_curves(rows: list[dict], n_clicks: int, path: Path) -> None:
    """Mean Dice (± sd over cases) after 0..N clicks, one line per model (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    clicks = np.arange(n_clicks + 1)
    for model, per_case in case_values(rows, "dice").items():
        values = np.array([v[: n_clicks + 1] for v in per_case.values()])
        mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        axis.plot(clicks, mean, marker="o", markersize=3, label=model)
        axis.fill_between(clicks, mean - sd, mean + sd, alpha=0.15)
    axis.set_xlabel("clicks")
    axis.set_ylabel("DSC (mean ± sd over cases)")
    axis.set_xticks(clicks)
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------ per class (multi-class)
def _class_names(classes: dict, model) -> list[str]:
    return [entry["name"] for entry in classes.get(model, [])]


def dsc_agg_values(rows: list[dict], model: str, name: str, n_clicks: int) -> list:
    """HECKTOR 2022's aggregated Dice of class ``name`` after 0..N clicks: the per-case sums
    (``overlap2_ml_<name>``, ``volume_sum_ml_<name>``) pooled over every case and seed of
    ``model``; None where nothing was segmented or predicted."""
    from .seg_metrics import dsc_agg

    sums = defaultdict(list)
    for row in rows:
        if row["model"] == model and row.get(f"volume_sum_ml_{name}") not in (None, ""):
            sums[int(row["clicks"])].append((_number(row[f"overlap2_ml_{name}"]),
                                              _number(row[f"volume_sum_ml_{name}"])))
    return [dsc_agg(sums[t]) if sums[t] else None for t in range(n_clicks + 1)]


def _dsc_agg_columns(values: list, n_clicks: int) -> dict:
    out = {}
    for column in columns_for(n_clicks):
        if column == "avg":
            picked = [v for v in values[1:] if v is not None]
            out["avg"] = float(np.mean(picked)) if picked else None
        else:
            out[str(column)] = values[column]
    return out


def class_summary(rows: list[dict], n_clicks: int, classes: dict) -> dict:
    """``{model: {class: {"dice": {column: mean}, "hd95_mm": {...}, "dsc_agg": {column: value}}}}``
    for the multi-class models (``classes``: ``{model: [{"name", "label"}]}``); empty without."""
    out: dict = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        names = _class_names(classes, model)
        if len(names) < 2:
            continue
        model_rows = [r for r in rows if r["model"] == model]
        out[model] = {}
        for name in names:
            entry: dict = {}
            for metric in ("dice", "hd95_mm"):
                key = f"{metric}_{name}"
                if not any(r.get(key) not in (None, "") for r in model_rows):
                    continue
                per_case = case_values(model_rows, key).get(model, {})
                entry[metric] = {}
                for column in columns_for(n_clicks):
                    mean, _, n = _mean_sd(column_values(per_case, column).values())
                    entry[metric][str(column)] = None if math.isnan(mean) else round(mean, 4)
            entry["dsc_agg"] = {k: None if v is None else round(v, 4)
                                for k, v in _dsc_agg_columns(dsc_agg_values(rows, model, name, n_clicks),
                                                             n_clicks).items()}
            out[model][name] = entry
    return out


def class_markdown(rows: list[dict], n_clicks: int, classes: dict) -> str:
    """Per class of the multi-class models: DSC and HD95 (mean ± sd over cases; a case without
    the class counts only if something was predicted there: Dice 0) and DSCagg (pooled over
    cases and seeds); empty for single-class models."""
    cols = [str(c) for c in columns_for(n_clicks)]
    models = [m for m in dict.fromkeys(r["model"] for r in rows) if len(_class_names(classes, m)) > 1]
    if not models:
        return ""
    lines = ["", "## Per class (label map: mask == label; DSCagg: HECKTOR 2022's aggregated Dice, "
             "sum 2|P∩T| / sum (|P|+|T|) over cases and seeds)"]
    header = "| Model | Class | " + " | ".join(_label(c, n_clicks) for c in cols) + " |"
    rule = "|---" * (len(cols) + 2) + "|"
    for metric, title in (("dice", "DSC"), ("hd95_mm", "HD95 (mm)")):
        lines += ["", f"### {title} per class", "", header, rule]
        for model in models:
            model_rows = [r for r in rows if r["model"] == model]
            for name in _class_names(classes, model):
                key = f"{metric}_{name}"
                per_case = case_values(model_rows, key).get(model, {}) if any(
                    r.get(key) not in (None, "") for r in model_rows) else {}
                cells = []
                for column in cols:
                    column = "avg" if column == "avg" else int(column)
                    mean, sd, n = _mean_sd(column_values(per_case, column).values()) if per_case else (
                        math.nan, math.nan, 0)
                    cells.append(_fmt({"mean": mean, "sd": sd}))
                lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "### DSCagg per class", "", header, rule]
    for model in models:
        for name in _class_names(classes, model):
            values = _dsc_agg_columns(dsc_agg_values(rows, model, name, n_clicks), n_clicks)
            cells = ["n/a" if values[c] is None else f"{values[c]:.3f}" for c in cols]
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

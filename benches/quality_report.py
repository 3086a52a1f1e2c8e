"""Report of benches/quality.sh: docs/quality.md (table) and docs/quality.png (LDS bars).

Usage: quality_report.py DATA_DIR TRAIN_OPTIONS OUT.md OUT.png
Exits non-zero when a method's LDS is missing or not finite.

LDS is the mean over held-out targets of a per-target Spearman correlation, so its 95%
interval comes from a bootstrap over targets (10,000 resamples, fixed seed); a difference
between two methods gets a paired bootstrap over the same resampled targets.
"""
import math
import random
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE_SUM = "MiniLM-L6 base (sum)"
CONTROL = "Step 0: base + random projector (attention)"
START = "Step 0 of the default recipe: depth, centring and unit length chosen (attention)"
TRAINED_SUM = "AirRep trained (sum)"
TRAINED_ATTENTION = "AirRep trained (attention)"
TFIDF = "TF-IDF cosine (sum)"
# airrep-quality's row for the labels' test-retest LDS (absent for label sets without one)
CEILING = "Noise ceiling"
METHODS = [
    BASE_SUM,
    "MiniLM-L6 base (attention)",
    CONTROL,
    START,
    TRAINED_SUM,
    TRAINED_ATTENTION,
    "AirRep trained, unit length off (attention)",
    TFIDF,
]
RESAMPLES = 10_000


def read_tables(data):
    """(rows by method, per-target Spearman by method and target, selection notes)."""
    rows, per_target, notes = {}, {}, {}
    for path, header in ((f"{data}/baselines.tsv", True), (f"{data}/airrep.tsv", False)):
        lines = open(path).read().splitlines()
        for line in lines[1:] if header else lines:
            fields = line.split("\t")
            if fields[0] == "per_target":
                per_target.setdefault(fields[1], {})[int(fields[2])] = float(fields[3])
            elif fields[0] == "selection":
                notes[fields[1]] = fields[2]
            elif len(fields) == 5:
                method, lds, encode_ms, nbytes, train_s = fields
                number = lambda x: float(x) if x else math.nan  # noqa: E731
                rows[method] = dict(lds=float(lds), encode_ms=number(encode_ms), bytes=number(nbytes), train_s=number(train_s))
    for line in open(f"{data}/baselines_per_target.tsv").read().splitlines()[1:]:
        method, target, rho = line.split("\t")
        per_target.setdefault(method, {})[int(target)] = float(rho)
    return rows, per_target, notes


def selection_table(data):
    """The data-selection experiment (selection.tsv from `airrep-quality --select-from`)."""
    rows = [line.split("\t") for line in open(f"{data}/selection.tsv").read().splitlines()[1:]]
    if not rows or any(not math.isfinite(float(r[3])) for r in rows):
        sys.exit("quality: the selection experiment gave no or non-finite losses")
    random_loss = float(rows[0][3])
    lines = [
        "",
        "## Data selection: fine-tuning on 10% of the pool",
        "",
        f"For the held-out targets, each scorer picks {rows[0][2]} pool rows with each strategy of "
        "`airrep.select_data` (AirRep's encoders through the extension; the baselines with the same "
        "rules over their own scores). The LM is fine-tuned on each selection with the labels' "
        "recipe (four seeds, averaged) and scored on the held-out targets. \"better than random\" is "
        "the share of held-out targets whose loss is below their mean loss over eight random "
        "selections of the same size.",
        "",
        "| scorer | strategy | mean target loss | vs random | better than random |",
        "|---|---|---:|---:|---:|",
        f"| random | uniform | {random_loss:.4f} | | |",
    ]
    for method, strategy, _, loss, better in rows[1:]:
        lines.append(f"| {method} | {strategy} | {float(loss):.4f} | {float(loss) - random_loss:+.4f} | "
                     f"{100 * float(better):.0f}% |")
    return lines


def bootstrap(per_target, methods):
    """95% interval of each method's mean over targets, and of paired differences."""
    targets = sorted(per_target[methods[0]])
    rng = random.Random(20251130)
    draws = {m: [] for m in methods}
    for _ in range(RESAMPLES):
        sample = [rng.choice(targets) for _ in targets]
        for m in methods:
            draws[m].append(sum(per_target[m][t] for t in sample) / len(sample))

    def interval(values):
        values = sorted(values)
        return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]

    intervals = {m: interval(draws[m]) for m in methods}

    def paired(a, b):
        return interval([x - y for x, y in zip(draws[a], draws[b])])

    return intervals, paired


def main(data, options, md_path, png_path):
    rows, per_target, notes = read_tables(data)
    gradients = sorted((m for m in rows if m.startswith("TracIn gradient")), key=lambda m: int(m.split()[3]), reverse=True)
    ceiling = [m for m in rows if m.startswith(CEILING)]
    methods = METHODS + gradients + ceiling
    bad = [m for m in methods if m not in rows or not math.isfinite(rows[m]["lds"]) or m not in per_target]
    if bad or not gradients:
        sys.exit(f"quality: missing or non-finite LDS for {', '.join(bad) or 'the gradient baseline'}")
    setup = open(f"{data}/setup.txt").read().strip()
    intervals, paired = bootstrap(per_target, methods)
    pct = lambda x: 100 * x  # noqa: E731
    lds = {m: pct(rows[m]["lds"]) for m in methods}

    lines = [
        "# Attribution quality (LDS on held-out subsets and targets)",
        "",
        "Generated by `benches/quality.sh`; the figures are what that run measured.",
        "",
        f"Setup: {setup}. AirRep training options: `{options}` over the defaults "
        "(training subsets and targets only; the trainer holds out a share of the training "
        "subsets for its own model selection).",
        "",
        "| method | LDS x100 | 95% interval | share of the noise ceiling | encode ms / example | bytes / example | training s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    cell = lambda x, f: "" if math.isnan(x) else format(x, f)  # noqa: E731
    for m in methods:
        r, (lo, hi) = rows[m], intervals[m]
        share = f"{lds[m] / lds[ceiling[0]]:.0%}" if ceiling and lds[ceiling[0]] > 0 else ""
        lines.append(f"| {m} | {lds[m]:.2f} | {pct(lo):.2f} to {pct(hi):.2f} | {share} | {cell(r['encode_ms'], '.3f')} | "
                     f"{cell(r['bytes'], '.0f')} | {cell(r['train_s'], '.1f')} |")
    ordered = lds[BASE_SUM] < lds[TRAINED_SUM] < lds[TRAINED_ATTENTION]
    lines += [
        "",
        "Encode time: MiniLM rows are `CALL airrep.embed` over the pool (every AirRep encoder "
        "has MiniLM's shape); TF-IDF is fitting plus transforming the pool; the gradient baselines "
        "are one backward pass of the LM per example (its response loss at the pretrained weights "
        "every fine-tuning starts from) plus the projection. Bytes: "
        "`pg_column_size` of an `airrep_vector(384)`; TF-IDF stored sparse (4-byte index + 4-byte "
        "value per non-zero); gradients 4 bytes per projected dimension. Training time is "
        "`airrep.train` wall time, caching the frozen encoder included. The noise ceiling is the "
        "LDS of the labels of the retested evaluation subsets, fine-tuned a second time with another "
        "data order, as the scores of the first labels: what the labels' own noise allows (a method "
        "that knew each subset's noise-free effect could score about its square root).",
        "",
        f"Paper's ablation order (base sum {lds[BASE_SUM]:.2f} < trained sum {lds[TRAINED_SUM]:.2f} "
        f"< trained attention {lds[TRAINED_ATTENTION]:.2f}): "
        + ("**holds** in this run." if ordered else "**does not hold** in this run."),
        "",
        "Trained attention against each baseline, paired bootstrap over the same targets "
        "(LDS x100 difference and its 95% interval):",
        "",
    ]
    a_lo, a_hi = intervals[TRAINED_ATTENTION]
    for baseline in [TFIDF] + gradients:
        d_lo, d_hi = paired(TRAINED_ATTENTION, baseline)
        b_lo, b_hi = intervals[baseline]
        where = "wholly above" if a_lo > b_hi else "wholly below" if a_hi < b_lo else "overlapping"
        lines.append(
            f"- {baseline}: {lds[TRAINED_ATTENTION] - lds[baseline]:+.2f} ({pct(d_lo):+.2f} to {pct(d_hi):+.2f}); "
            f"trained attention's interval is {where} the baseline's."
        )
    lines += selection_table(data)
    if notes:
        lines += ["", "Model selection (from each trained model's config):", ""]
        lines += [f"- `{name}`: {note}" for name, note in sorted(notes.items())]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    shown = methods[::-1]
    errors = [[lds[m] - pct(intervals[m][0]) for m in shown], [pct(intervals[m][1]) - lds[m] for m in shown]]
    ax.barh(shown, [lds[m] for m in shown], xerr=errors, capsize=3, color="#4c72b0")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("LDS x100 (held-out subsets and targets), 95% bootstrap interval")
    ax.set_title("Attribution quality")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:5])

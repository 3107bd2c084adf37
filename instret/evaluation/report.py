"""Turn evaluation records into the per-method table, summary files and charts.

Costs in the summary: mean tokens are over every row, a row served from DSPy's cache counting
what its answer cost when it was produced (never 0); mean latency is over the rows produced in
this run only (`timed`), since a cached row's latency is the cache's, not the model's. `cached`
says how many rows came from the cache. Teacher tokens per question and the teacher's share of
all tokens show what a two-model method paid the teacher.

The teacher's tokens are also split three ways, written, read and computed, read from the
server's prompt cache (`instret.evaluation.cost`), and priced; each method is placed against the
Pareto frontier of accuracy over its student's methods, on written tokens and on price
(`instret.evaluation.frontier`). A table, and the cost chart, read one of those two cost axes.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from instret.data.files import atomic_write_text
from instret.evaluation.cost import LOCAL_PRICE, student_cache_columns, teacher_columns
from instret.evaluation.frontier import COST_AXES, mark_frontier
from instret.evaluation.stats import mcnemar, wilson_interval

BASELINES = ("zero_shot", "cot")
#: Every method is also compared, paired, with these where they ran: the two baselines, and the
#: teacher alone (the ceiling a teacher-intervention method is read against).
PAIRED_WITH = BASELINES + ("teacher_cot",)


def summarize(records: list[dict], failures: dict[str, int] | None = None, setup: dict | None = None,
              price=None) -> list[dict]:
    """One row per (method, student): accuracy ± 95% CI, paired tests against the baselines.

    `setup`: method -> `SetupCost`, teacher tokens the method spent once (a corpus's guides, SG
    data); spread over the row's n questions, they are part of its teacher tokens per question
    and teacher share, and `teacher_setup_tokens` says how many there were. `price`: a
    `cost.Price` for the teacher's tokens (default: `cost.LOCAL_PRICE`, a ratio)."""
    by_run: dict[tuple[str, str], dict[str, dict]] = {}
    for record in records:
        by_run.setdefault((record["method"], record["student"]), {})[record["question_id"]] = record
    rows = []
    for (method, student), answers in sorted(by_run.items()):
        n = len(answers)
        correct = sum(r["correct"] for r in answers.values())
        low, high = wilson_interval(correct, n)
        recoveries = Counter(r["recovery"] for r in answers.values())
        rows_ = list(answers.values())
        timed = [r["latency_s"] for r in rows_ if not r.get("cached")]
        student_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows_)
        teacher_tokens = sum(r.get("teacher_prompt_tokens", 0) + r.get("teacher_completion_tokens", 0) for r in rows_)
        one_off = (setup or {}).get(method)
        teacher_tokens += one_off.tokens if one_off else 0
        row = {"method": method, "student": student, "n": n, "correct": correct, "accuracy": correct / n,
               "ci_low": low, "ci_high": high,
               "parse_failures": sum(r["parse_failed"] for r in rows_),
               "truncated": recoveries.get("truncated", 0),
               "hit_max_tokens": sum(bool(r.get("truncated")) for r in rows_),
               "cached": sum(bool(r.get("cached")) for r in rows_),
               "mean_prompt_tokens": sum(r["prompt_tokens"] for r in rows_) / n,
               "mean_completion_tokens": sum(r["completion_tokens"] for r in rows_) / n,
               "teacher_tokens_per_question": teacher_tokens / n,
               "teacher_share": teacher_tokens / (teacher_tokens + student_tokens) if teacher_tokens else 0.0,
               **({"teacher_setup_tokens": one_off.tokens, "teacher_setup": one_off.what} if one_off else {}),
               "timed": len(timed), "mean_latency_s": sum(timed) / len(timed) if timed else None,
               **{f"recovered_{path}": count for path, count in sorted(recoveries.items())},
               **student_cache_columns(rows_), **teacher_columns(rows_, one_off, price or LOCAL_PRICE)}
        row["parse_failure_rate"] = row["parse_failures"] / n
        for baseline in PAIRED_WITH:
            other = by_run.get((baseline, student))
            if other is None or baseline == method:
                continue
            shared = sorted(set(answers) & set(other))
            test = mcnemar([answers[q]["correct"] for q in shared], [other[q]["correct"] for q in shared])
            row[f"vs_{baseline}_diff"] = test.difference
            row[f"vs_{baseline}_p"] = test.p_value
        rows.append(row)
    mark_frontier(rows)
    if failures:
        rows.append({"method": "(failed items)", "student": "", **{f"failed_{k}": v for k, v in failures.items()}})
    return rows


#: What each cost axis is called on a chart and in the table's notes.
AXIS_LABELS = {"tokens": "teacher tokens per question (read + written)", "written": "teacher tokens written per question",
               "price": "teacher price per 1,000 questions"}
TEACHER_COLUMNS = f"{'teacher tok/q':>15}{'written':>9}{'computed':>10}{'cached':>14}{'price/1k q':>12}{'frontier':>12}"


def format_table(rows: list[dict], cost_axis: str = "price") -> str:
    """The table `instret eval` prints: one line per method and student. With a teacher, its tokens
    per question in all, written, read and computed, read from the prompt cache, their price, and
    each method's place against the Pareto frontier on `cost_axis` ("price" or "written")."""
    if cost_axis not in COST_AXES:
        raise ValueError(f"cost axis {cost_axis!r}: choose from {', '.join(COST_AXES)}")
    with_teacher = any(row.get("teacher_tokens_per_question") for row in rows)
    header = (f"{'method':<22}{'student':<24}{'n':>5}  {'accuracy [95% CI]':<24}{'vs zero-shot':>18}{'vs CoT':>18}"
              f"{'parse fail':>11}{'tokens in/out':>15}{'latency':>9}" + (TEACHER_COLUMNS if with_teacher else ""))
    lines = [header]
    for row in rows:
        if "accuracy" not in row:
            lines.append("failed items (asked again on the next run): " + ", ".join(
                f"{key.removeprefix('failed_')} {value}" for key, value in row.items() if key.startswith("failed_")))
            continue
        versus = [f"{row[f'vs_{b}_diff']:+.1%} p={row[f'vs_{b}_p']:.3f}" if f"vs_{b}_diff" in row else "—"
                  for b in BASELINES]
        accuracy = f"{row['accuracy']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
        tokens = f"{row['mean_prompt_tokens']:.0f}/{row['mean_completion_tokens']:.0f}"
        latency = f"{row['mean_latency_s']:>8.2f}s" if row.get("mean_latency_s") is not None else f"{'cached':>9}"
        teacher = (f"{row.get('teacher_tokens_per_question', 0):>8.0f} ({row.get('teacher_share', 0):.0%})"
                   if with_teacher else "")
        lines.append(f"{row['method'][:21]:<22}{row['student'][:23]:<24}{row['n']:>5}  {accuracy:<24}"
                     f"{versus[0]:>18}{versus[1]:>18}{row['parse_failure_rate']:>11.1%}{tokens:>15}"
                     f"{latency}" + (f"{teacher:>15}" + _teacher_cells(row, cost_axis) if with_teacher else ""))
    lines.extend(_recovery_lines(rows))
    lines.extend(_cache_lines(rows))
    lines.extend(_setup_lines(rows))
    if with_teacher:
        lines.extend(cost_notes(rows, cost_axis))
    lines.extend(prompt_cache_lines(rows))
    return "\n".join(lines)


def tokens_or_unknown(value: float | None) -> str:
    return "not reported" if value is None else f"{value:,.0f}"


def frontier_cell(row: dict, cost_axis: str) -> str:
    """"on" the frontier, or how many points of accuracy below it; "" where it was not computed."""
    if f"on_frontier_{cost_axis}" not in row:
        return ""
    return "on" if row[f"on_frontier_{cost_axis}"] else f"-{row[f'below_frontier_{cost_axis}'] * 100:.1f} pts"


def _teacher_cells(row: dict, cost_axis: str) -> str:
    written, computed = row.get("teacher_written_per_question"), row.get("teacher_computed_per_question")
    price = row.get("teacher_price_per_question")
    return (f"{written or 0:>9,.0f}{'—' if computed is None else f'{computed:,.0f}':>10}"
            f"{tokens_or_unknown(row.get('teacher_cached_per_question')):>14}"
            f"{'' if price is None else f'{price * 1000:.3g}':>12}{frontier_cell(row, cost_axis):>12}")


def cost_notes(rows: list[dict], cost_axis: str) -> list[str]:
    """What the teacher's columns mean: the price and its source, unreported caches, the frontier."""
    answered = [row for row in rows if "accuracy" in row]
    prices = sorted({row["price"] for row in answered if row.get("price")})
    unknown = [f"{row['method']} ({row['student']})" for row in answered if row.get("teacher_cache_reported") is False]
    notes = [f"teacher price: {price}; the column is per 1,000 questions" for price in prices]
    with_teacher = [row for row in answered if row.get("teacher_tokens_per_question")]
    if unknown and len(unknown) == len(with_teacher) > 1:
        unknown = ["every method that used the teacher"]
    if unknown:
        notes.append(f"cached: the teacher's server reported no prompt-cache count for {', '.join(unknown)}: their "
                     f"computed and cached tokens are unknown, and their price counts every prompt token as "
                     f"computed (an upper bound)")
    notes.append(f"frontier: accuracy against {AXIS_LABELS[cost_axis]}, per student. 'on': no other method is "
                 f"as accurate for less or more accurate for as much; else the points of accuracy below the line "
                 f"joining the frontier's methods, at that method's cost (flat beyond the costliest)")
    return notes


def prompt_cache_lines(rows: list[dict]) -> list[str]:
    """Issue 24's measurement for a prompt cache: per method, prompt tokens per question the servers
    computed against those they read from their prompt cache, the student's and the teacher's."""
    answered = [row for row in rows if "accuracy" in row]
    if not answered:
        return []

    def part(read: float, cached: float | None) -> str:
        if cached is None:
            return f"{read:,.0f} read, cache not reported"
        return f"{read - cached:,.0f} computed / {cached:,.0f} from cache ({cached / read:.0%})" if read else "no prompt"

    lines = ["prompt tokens per question, computed by the server against read from its prompt cache:"]
    for row in answered:
        teacher = (f"; teacher {part(row['teacher_read_per_question'], row.get('teacher_cached_per_question'))}"
                   if row.get("teacher_read_per_question") else "")
        lines.append(f"  {row['method']} ({row['student']}): student "
                     f"{part(row['mean_prompt_tokens'], row.get('mean_prompt_cached_tokens'))}{teacher}")
    return lines


def _setup_lines(rows: list[dict]) -> list[str]:
    return [f"{row['method']} ({row['student']}): teacher tok/q includes {row['teacher_setup']}, "
            f"{row['teacher_setup_tokens']:,} teacher tokens spent once, amortised over its {row['n']} questions "
            f"({row['teacher_setup_tokens'] / row['n']:,.0f} per question)"
            for row in rows if row.get("teacher_setup_tokens")]


def _cache_lines(rows: list[dict]) -> list[str]:
    answered = [row for row in rows if "accuracy" in row]
    cached, total = sum(row.get("cached", 0) for row in answered), sum(row["n"] for row in answered)
    if not cached:
        return []
    return [f"{cached} of {total} answers came from DSPy's cache: their tokens are what they cost when produced; "
            f"latency is the mean over the {total - cached} produced in this run"]


def _recovery_lines(rows: list[dict]) -> list[str]:
    """Per student: how often each output-recovery path was needed, over all methods."""
    by_student: dict[str, Counter] = {}
    for row in rows:
        counts = by_student.setdefault(row.get("student", ""), Counter())
        counts.update({k.removeprefix("recovered_"): v for k, v in row.items() if k.startswith("recovered_")})
    capped: Counter = Counter()
    for row in rows:
        capped[row.get("student", "")] += row.get("hit_max_tokens", 0)
    return [f"output recovery for {student}: " + ", ".join(f"{path} {n}" for path, n in counts.most_common())
            + (f"; {_count(capped[student], 'answer')} reached max_tokens" if capped[student] else "")
            for student, counts in by_student.items() if counts]


def write_outputs(rows: list[dict], out_dir: Path, cost_axis: str = "price") -> None:
    """summary.json, summary.csv, accuracy.png and (when a method used the teacher) teacher_cost.png
    on `cost_axis` ("price" or "written"), each replaced atomically."""
    atomic_write_text(out_dir / "summary.json", json.dumps(rows, indent=2) + "\n")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "summary.csv", buffer.getvalue())
    answered = [r for r in rows if "accuracy" in r]
    _bar_chart(answered, out_dir / "accuracy.png")
    if any(r.get("teacher_tokens_per_question") for r in answered):
        _save(teacher_cost_figure(answered, cost_axis), out_dir / "teacher_cost.png")


def _bar_chart(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['method']}\n{r['student'][:20]}" for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    errors = [[a - r["ci_low"] for a, r in zip(accuracy, rows)], [r["ci_high"] - a for a, r in zip(accuracy, rows)]]
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    axes.bar(range(len(rows)), accuracy, yerr=errors, capsize=4, color="#4c72b0")
    axes.set_xticks(range(len(rows)), labels, fontsize=8)
    axes.set_ylabel("accuracy (95% CI)")
    axes.set_ylim(0, 1)
    figure.tight_layout()
    _save(figure, path)


def _save(figure, path: Path) -> None:
    """Write the chart beside its final name, then rename: a crash leaves the old chart whole."""
    import matplotlib.pyplot as plt

    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")  # "tight" keeps a legend outside the axes
    plt.close(figure)
    temporary.replace(path)


def cost_of(row: dict, cost: str) -> float:
    """A row's place on a cost axis: "tokens" (the teacher's, read + written, per question),
    "written" (the teacher's written per question) or "price" (per 1,000 questions)."""
    if cost == "price":
        return row.get("teacher_price_per_question", 0.0) * 1000
    return row.get("teacher_written_per_question" if cost == "written" else "teacher_tokens_per_question", 0.0)


def teacher_cost_figure(rows: list[dict], cost: str = "tokens"):
    """Accuracy against the teacher's cost, `cost` one of `AXIS_LABELS` (the axis says which, and
    the price's unit): one point per method (and student), named in a legend (labels beside the
    points overlap where methods cost alike). A method's variants (first_step@k,
    on_uncertainty@τ) share a colour and are joined by a line: its cost curve."""
    if cost not in AXIS_LABELS:
        raise ValueError(f"cost axis {cost!r}: choose from {', '.join(AXIS_LABELS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len({r["student"] for r in rows}) > 1
    families: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        families.setdefault((row["method"].split("@")[0], row["student"]), []).append(row)
    colours, markers = plt.get_cmap("tab10").colors, "osD^vP"
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for i, ((_, student), members) in enumerate(families.items()):
        members.sort(key=lambda r: cost_of(r, cost))
        xs = [cost_of(r, cost) for r in members]
        ys = [r["accuracy"] for r in members]
        colour = colours[i % len(colours)]
        if len(members) > 1:
            axes.plot(xs, ys, color=colour, linewidth=1, alpha=0.6)
        for j, (row, x, y) in enumerate(zip(members, xs, ys)):
            label = f"{row['method']} ({student[:16]})" if several else row["method"]
            axes.errorbar(x, y, yerr=[[y - row["ci_low"]], [row["ci_high"] - y]], fmt=markers[j % len(markers)],
                          capsize=3, color=colour, label=label)
    prices = sorted({r["price"] for r in rows if r.get("price")}) if cost == "price" else []
    if prices and any(r.get("teacher_cache_reported") is False for r in rows):
        prices.append("where the server did not report its prompt cache, every prompt token priced as computed "
                      "(an upper bound)")
    axes.set_xlabel(AXIS_LABELS[cost] + "".join(f"\n{price}" for price in prices), fontsize=9)
    axes.set_ylabel("accuracy (95% CI)")
    axes.set_ylim(0, 1)
    axes.set_xlim(left=0)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    return figure


def _count(n: int, noun: str) -> str:
    """'1 answer', '3 answers': a summary line reads as a sentence."""
    return f"{n} {noun}{'' if n == 1 else 's'}"

"""The comparison report: `report.md`, a self-contained `report.html` (plots and sample grids embedded as
PNG data URIs, no network needed) and `plots/*.png`, from the tables of `gdm.compare.tables`.

Each plot is one metric against training step, images seen and wall-clock seconds, one line per
configuration (the mean over its seeds at each evaluation) with its Student-t band over seeds; seeds are
aligned by evaluation number, and on the wall-clock axis each point sits at the seeds' mean wall time.

Quality against compute (`gdm.compare.cost`): each sample metric against NFE and sampling time, at the top of
the report when the runs differ in model family (the question a GAN beside a diffusion model asks first),
after the tables when one family was evaluated at several budgets, absent otherwise.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from gdm.compare import cost
from gdm.compare.runs import Run, SamplingSpread
from gdm.compare.stats import CONFIDENCE, interval
from gdm.compare.tables import MetricTable, fmt, labels
from gdm.evaluation.context import describe, differences, how_produced, measurement_id

BETTER = {"min": "Lower is better.", "max": "Higher is better.", None: "No direction is better."}
AXES = (("step", "training step (batches)"), ("images_seen", "images seen"), ("wall_seconds", "wall-clock seconds"))


def curves(runs: list[Run], metric: str, x_key: str, confidence: float):
    """(x, mean, low, high) per evaluation of one configuration's runs, over the evaluations all seeds have;
    only evaluations measured with the protocol of the run's final value."""
    series = []
    for run in runs:
        protocol_id = run.protocols[metric].get("id")
        points = [(h[x_key], h["metrics"][metric]) for h in run.history
                  if metric in h.get("metrics", {}) and h.get("protocols", {}).get(metric) == protocol_id]
        if points:
            series.append(points)
    if not series:
        return None
    length = min(map(len, series))
    x = np.array([[p[i][0] for p in series] for i in range(length)], float).mean(axis=1)
    stats = [interval([p[i][1] for p in series], confidence) for i in range(length)]
    mean = np.array([s.mean for s in stats])
    low = np.array([s.low if not math.isnan(s.low) else s.mean for s in stats])
    high = np.array([s.high if not math.isnan(s.high) else s.mean for s in stats])
    return x, mean, low, high


def plot(table: MetricTable, runs: list[Run], path: Path, confidence: float) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    drawn = False
    for row in table.rows:
        members = row.runs
        for ax, (key, label) in zip(axes, AXES):
            found = curves(members, table.metric, key, confidence)
            if found is None:
                continue
            x, mean, low, high = found
            line, = ax.plot(x, mean, marker="o", markersize=3, label=f"{row.label} (n={len(members)})")
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
            if len(x) == 1:  # one evaluation: no band to fill
                ax.errorbar(x, mean, yerr=[mean - low, high - mean], color=line.get_color(), capsize=4)
            ax.set_xlabel(label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_ylabel(table.metric)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{table.metric}: mean over seeds, {confidence:.0%} Student-t band", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def mean_ci(row) -> str:
    s = row.stats
    return f"{fmt(s.mean)} ± {fmt(s.half_width)}" if not math.isnan(s.half_width) else f"{fmt(s.mean)} (one seed)"


class Report:
    def __init__(self, runs: list[Run], tables: list[MetricTable], mismatches: list[str],
                 spreads: list[SamplingSpread], confidence: float = CONFIDENCE, repeats: list[str] = (),
                 budgets: list[cost.Budget] = ()):
        """`repeats`: sentences on the runs left out as not independent (gdm.compare.runs.independent_runs);
        `budgets`: the evaluations to draw against sampling compute (gdm.compare.cost.read_budgets)."""
        self.runs, self.tables, self.mismatches, self.spreads = runs, tables, mismatches, spreads
        self.repeats = list(repeats)
        self.confidence = confidence
        self.short, self.common = labels([r for r in runs if r.finished])
        self.budgets = list(budgets)
        self.families = cost.families(self.budgets, runs)

    def label(self, configuration: str | None) -> str:
        return self.short.get(configuration, configuration or "?")

    def write(self, out_dir: Path) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.plots = {}
        for i, t in enumerate(self.tables):
            if t.metric.startswith("best "):
                continue
            made = plot(t, self.runs, out_dir / "plots" / f"{i:02d}_{slug(t.metric)}.png", self.confidence)
            if made:
                self.plots[i] = made
        self.cost = self.cost_plots(out_dir)
        self.grids = {self.label(c): next((r.grid for r in self.runs if r.finished and r.configuration == c
                                           and r.grid), None) for c in self.short}
        md, page = out_dir / "report.md", out_dir / "report.html"
        md.write_text(self.markdown(out_dir))
        page.write_text(self.html())
        return {"markdown": md, "html": page, **{f"plot{i}": p for i, p in self.plots.items()},
                **{f"cost{i}": drawn[3] for i, drawn in enumerate(self.cost)}}

    def cost_plots(self, out_dir: Path) -> list[tuple[str, dict, list[cost.Line], Path]]:
        """(metric, protocol, lines, PNG) of each sample metric against compute, FID first; none when the runs
        are of one family and no configuration was evaluated at several budgets."""
        found = [(metric, protocol, drawn) for metric in cost.metrics_drawn(self.budgets)
                 for protocol, drawn in cost.lines(self.budgets, metric, self.confidence)]
        several = any(len(line.points) > 1 for _, _, drawn in found for line in drawn)
        if not (self.cost_first or several):
            return []
        timed_on = cost.devices(self.budgets)
        return [(metric, protocol, drawn, cost.plot(metric, drawn, protocol, out_dir / "plots" /
                                                    f"cost_{i:02d}_{slug(metric)}.png", self.confidence, timed_on))
                for i, (metric, protocol, drawn) in enumerate(found)]

    @property
    def cost_first(self) -> bool:
        """The runs differ in model family: quality against compute opens the report."""
        return len(self.families) > 1

    def cost_intro(self) -> str:
        devices = cost.devices(self.budgets)
        timed = (f"timed on {devices[0]}" if len(devices) == 1 else
                 f"timed on several devices ({'; '.join(devices)}): the time axis compares machines as well as "
                 "models" if devices else "no sampling time recorded")
        return (f"Each sample metric against the sampling budget (NFE: the net's forward passes per sample) and "
                f"against the sampling time (seconds per 1,000 samples of the model's generate calls alone, "
                f"{timed}); one line per configuration (family: {', '.join(self.families) or 'unknown'}), a "
                f"family drawn in one forward pass a single point at NFE 1; mean over training seeds with the "
                f"{self.confidence:.0%} Student-t band where a configuration has several.")

    def cost_markdown(self, out_dir: Path) -> list[str]:
        if not self.cost:
            return []
        metric, protocol, drawn, _ = self.cost[0]
        lines = ["## Quality against compute", "", self.cost_intro(), "",
                 f"Protocol: {cost.measurement(protocol)}.", "", *cost.table_lines(metric, drawn), ""]
        for metric, _, _, path in self.cost:
            lines += [f"![{metric} against compute]({path.relative_to(out_dir)})", ""]
        return lines

    def cost_html(self) -> list[str]:
        if not self.cost:
            return []
        e = html.escape
        metric, protocol, drawn, _ = self.cost[0]
        rows = cost.table_lines(metric, drawn)
        head = "".join(f"<th>{e(c.strip())}</th>" for c in rows[0].strip("|").split("|"))
        body = "".join("<tr>" + "".join(f"<td>{e(c.strip())}</td>" for c in row.strip("|").split("|")) + "</tr>"
                       for row in rows[2:])
        parts = ["<h2 id='quality-against-compute'>Quality against compute</h2>", f"<p>{e(self.cost_intro())}</p>",
                 f"<p class='protocol'>Protocol: {e(cost.measurement(protocol))}.</p>",
                 f"<table class='cost' data-metric='{e(metric)}'><tr>{head}</tr>{body}</table>"]
        parts += [f"<img class='plot cost' alt='{e(m)} against compute' src='{data_uri(path)}'>"
                  for m, _, _, path in self.cost]
        return parts

    # ---- markdown ------------------------------------------------------------------------------------

    def markdown(self, out_dir: Path) -> str:
        c = f"{self.confidence:.0%}"
        lines = ["# Comparison", "",
                 f"Values of each run's final evaluation (and `best <metric>`: its best value); mean over training "
                 f"seeds ± the half-width of the {c} Student-t confidence interval; std with ddof = 1.", ""]
        if self.cost_first:
            lines += self.cost_markdown(out_dir)
        lines += self.runs_markdown()
        if self.mismatches:
            lines += ["## Protocol mismatches", "", *[f"- {m}" for m in self.mismatches], ""]
        for i, t in enumerate(self.tables):
            lines += [f"## {t.metric}", "", f"Protocol: {self.shared_protocol(t)}. "
                      f"{BETTER[t.direction]}", "",
                      f"| configuration | n seeds | mean ± {c} CI | std | best seed |", "|---|---|---|---|---|"]
            best = t.best_row()
            for row in t.rows:
                name = f"**{row.label}**" if row is best and len(t.rows) > 1 else row.label
                lines.append(f"| {name} | {row.stats.n} | {mean_ci(row)} | {fmt(row.stats.std)} | {fmt(row.best)} |")
            lines += ["", *[f"- {cmp.sentence}" for cmp in t.comparisons], *self.sampling_lines(t)]
            lines += self.spread_lines(t)
            if i in self.plots:
                lines += ["", f"![{t.metric}]({self.plots[i].relative_to(out_dir)})"]
            lines.append("")
        if not self.cost_first:
            lines += self.cost_markdown(out_dir)
        lines += ["## Last sample grids", ""]
        for name, grid in self.grids.items():
            lines.append(f"- {name}: {grid if grid else 'no grid saved'}")
        return "\n".join(lines) + "\n"

    def runs_markdown(self) -> list[str]:
        lines = [f"Overrides common to all finished runs: `{self.common}`." if self.common else "", "",
                 "## Runs", "", "| configuration | seed | status | directory |", "|---|---|---|---|"]
        for r in self.runs:
            lines.append(f"| {self.label(r.configuration)} | {r.seed} | {r.status} | {r.dir} |")
        unfinished = [r for r in self.runs if not r.finished]
        if unfinished:
            lines += ["", f"{len(unfinished)} run(s) did not finish and are left out of every statistic: "
                      + ", ".join(f"{r.dir} ({r.status})" for r in unfinished) + "."]
        if self.repeats:
            lines += ["", "Runs told apart or counted once:", "", *[f"- {note}" for note in self.repeats]]
        return [*lines, ""]

    @staticmethod
    def shared_protocol(t: MetricTable) -> str:
        """What a table's rows share: its protocol, less the fields in which the configurations differ (how each
        produced its values: a sampler, a likelihood's estimator; `sampling_lines` names them), with the id of
        the measurement then (`measurement_id`), which every row shares."""
        if not t.sampling:
            return describe(t.protocol)
        shared = {k: v for k, v in t.protocol.items() if k not in t.sampling}
        return describe({**shared, "id": f"measurement {measurement_id(t.protocol)}"}) + \
            f"; {', '.join(t.sampling)}: per configuration"

    @staticmethod
    def sampling_lines(t: MetricTable) -> list[str]:
        if not t.sampling:
            return []
        return [f"- the configurations' protocols differ in {', '.join(t.sampling)}: how each model produces what "
                "is measured (e.g. a conditional model's labels, a sampler's steps, a likelihood's estimator), not how "
                "it is measured, so they share this table."]

    def spread_lines(self, t: MetricTable) -> list[str]:
        lines = []
        for s in self.spreads:
            st = s.stats.get(t.metric)
            if not st:
                continue
            other = [d for d in differences(t.protocol, s.protocols.get(t.metric, {}))
                     if not how_produced(d) and d.split(".")[0] not in ("sample_seed", "versions")]
            caveat = f" (measured with another protocol than this table: {', '.join(other)})" if other else ""
            lines.append(f"- sampling spread of one checkpoint of {self.label(s.configuration)} ({s.checkpoint}): "
                         f"std {fmt(st['std'])} over {st['n']} sample seeds (mean {fmt(st['mean'])}), beside the "
                         f"training-seed std above{caveat}.")
        return lines

    # ---- html ----------------------------------------------------------------------------------------

    def html(self) -> str:
        e = html.escape
        c = f"{self.confidence:.0%}"
        parts = [f"<h1>Comparison</h1><p>Values of each run's final evaluation (and <code>best &lt;metric&gt;</code>:"
                 f" its best value); mean over training seeds ± the half-width of the {c} Student-t confidence "
                 "interval; std with ddof = 1.</p>"]
        if self.cost_first:
            parts += self.cost_html()
        if self.common:
            parts.append(f"<p>Overrides common to all finished runs: <code>{e(self.common)}</code></p>")
        parts.append("<h2>Runs</h2><table id='runs'><tr><th>configuration</th><th>seed</th><th>status</th>"
                     "<th>directory</th></tr>")
        for r in self.runs:
            cls = "" if r.finished else " class='unfinished'"
            parts.append(f"<tr{cls}><td>{e(self.label(r.configuration))}</td><td>{r.seed}</td><td>{e(r.status)}</td>"
                         f"<td>{e(str(r.dir))}</td></tr>")
        parts.append("</table>")
        if self.repeats:
            parts.append("<p>Runs told apart or counted once:</p><ul>" + "".join(f"<li class='repeat'>{e(note)}</li>"
                                                                   for note in self.repeats) + "</ul>")
        if self.mismatches:
            parts.append("<h2>Protocol mismatches</h2><ul>" + "".join(f"<li class='mismatch'>{e(m)}</li>"
                                                                      for m in self.mismatches) + "</ul>")
        for i, t in enumerate(self.tables):
            best = t.best_row()
            parts.append(f"<h2>{e(t.metric)}</h2><p class='protocol'>Protocol: {e(self.shared_protocol(t))}. "
                         f"{BETTER[t.direction]}</p>")
            parts.append(f"<table class='metric' data-metric='{e(t.metric)}'><tr><th>configuration</th>"
                         f"<th>n seeds</th><th>mean ± {c} CI</th><th>std</th><th>best seed</th></tr>")
            for row in t.rows:
                cls = " class='best'" if row is best and len(t.rows) > 1 else ""
                parts.append(f"<tr{cls} data-configuration='{e(row.configuration)}'><td>{e(row.label)}</td>"
                             f"<td>{row.stats.n}</td><td class='mean' data-mean='{row.stats.mean!r}'>"
                             f"{e(mean_ci(row))}</td><td>{fmt(row.stats.std)}</td><td>{fmt(row.best)}</td></tr>")
            parts.append("</table><ul>" + "".join(f"<li>{e(cmp.sentence)}</li>" for cmp in t.comparisons)
                         + "".join(f"<li>{e(s[2:])}</li>" for s in self.sampling_lines(t))
                         + "".join(f"<li>{e(s[2:])}</li>" for s in self.spread_lines(t)) + "</ul>")
            if i in self.plots:
                parts.append(f"<img class='plot' alt='{e(t.metric)}' src='{data_uri(self.plots[i])}'>")
        if not self.cost_first:
            parts += self.cost_html()
        parts.append("<h2>Last sample grids</h2><div class='grids'>")
        for name, grid in self.grids.items():
            body = f"<img class='grid' alt='{e(name)}' src='{data_uri(grid)}'>" if grid else "<p>no grid saved</p>"
            parts.append(f"<figure>{body}<figcaption>{e(name)}</figcaption></figure>")
        parts.append("</div>")
        # Lets a headless browser (and a reader) check that every embedded image decoded.
        script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
                  "document.body.dataset.images=im.length;"
                  "document.body.dataset.loaded=im.filter(i=>i.complete&&i.naturalWidth>0).length;});</script>")
        style = ("<style>body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;"
                 "margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}"
                 "tr.best td{font-weight:bold;background:#e8f5e9}tr.unfinished td{color:#a00}"
                 ".grids{display:flex;gap:1.5em;flex-wrap:wrap}"
                 "img.plot{max-width:100%}img.grid{width:260px;image-rendering:pixelated}.protocol{color:#555;"
                 "font-size:90%}</style>")
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>gdm comparison</title>" + style + script
                + "</head><body>" + "\n".join(parts) + "</body></html>\n")

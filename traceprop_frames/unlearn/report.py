"""A self-contained HTML report (no external files): text, tables and matplotlib plots as base64 PNG.

``Report`` is a tiny builder; ``plot_dag``, ``plot_influence`` and ``plot_before_after`` draw the three
figures the erasure report needs. matplotlib runs headless (the Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#1f2933;line-height:1.45;padding:0 1em}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #d9e2ec;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #d9e2ec;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f0f4f8}code,pre{background:#f5f7fa;font-size:.88em}
pre{padding:.6em;overflow-x:auto}.muted{color:#627d98}.ok{color:#1b7a3d;font-weight:600}
.bad{color:#b42318;font-weight:600}img{max-width:100%}
"""


def _fig_to_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Report:
    """Collects HTML parts; ``save(path)`` writes one self-contained file."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="muted">{html.escape(subtitle)}</p>')

    def heading(self, text: str) -> Report:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str, cls: str = "") -> Report:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(text)}</p>")
        return self

    def code(self, text: str) -> Report:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def details(self, summary: str, text: str) -> Report:
        self.parts.append(
            f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>"
        )
        return self

    def table(self, rows, header=None) -> Report:
        """``rows``: a DataFrame, or a list of tuples (with ``header``)."""
        if hasattr(rows, "to_html"):
            self.parts.append(rows.to_html(index=False, border=0, float_format=lambda x: f"{x:.4g}"))
            return self
        out = ["<table>"]
        if header:
            out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for r in rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
        out.append("</table>")
        self.parts.append("".join(out))
        return self

    def figure(self, fig, caption: str = "") -> Report:
        uri = _fig_to_data_uri(fig)
        cap = f"<figcaption class='muted'>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f"<figure><img alt='{html.escape(caption)}' src='{uri}'/>{cap}</figure>")
        return self

    def to_html(self) -> str:
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
        )

    def save(self, path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_html(), encoding="utf-8")
        return p


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_dag(dag, title: str = "Lineage of the training rows"):
    """Draw a :class:`~traceprop_frames.lineage.LineageDAG` left to right, one column per depth."""
    plt = _plt()
    nodes = list(dag)
    depth: dict[int, int] = {}
    for n in nodes:  # sources first
        depth[n.id] = 1 + max((depth[p.id] for p in n.parents), default=-1)
    cols: dict[int, list] = {}
    for n in nodes:
        cols.setdefault(depth[n.id], []).append(n)
    pos = {}
    for d, members in cols.items():
        for j, n in enumerate(members):
            pos[n.id] = (d, -(j - (len(members) - 1) / 2))
    width = max(6.0, 1.9 * (max(cols) + 1))
    height = max(2.5, 0.9 * max(len(m) for m in cols.values()) + 1)
    fig, ax = plt.subplots(figsize=(width, height))
    for n in nodes:
        for p in n.parents:
            (x0, y0), (x1, y1) = pos[p.id], pos[n.id]
            ax.annotate("", xy=(x1 - 0.32, y1), xytext=(x0 + 0.32, y0),
                        arrowprops={"arrowstyle": "->", "color": "#627d98"})  # fmt: skip
    for n in nodes:
        x, y = pos[n.id]
        label = n.op
        path = n.params.get("path") if isinstance(n.params, dict) else None
        if path:
            label += "\n" + Path(str(path)).name
        color = "#fde2e1" if n.op == "erase" else ("#e3f8ff" if not n.parents else "#f0f4f8")
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.35", "fc": color, "ec": "#486581"})  # fmt: skip
    ax.set_xlim(-0.6, max(cols) + 0.6)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.8, max(y for _, y in pos.values()) + 0.8)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return fig


def plot_influence(labels, scores, title: str = "Most influential training rows (source rows behind them)"):
    """Horizontal bars: one per training row, labelled with its source rows."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(scores) + 1.2))
    ys = list(range(len(scores)))[::-1]
    colors = ["#d64545" if s > 0 else "#3e7cb1" for s in scores]
    ax.barh(ys, scores, color=colors)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_xlabel("influence on the applicant's logit (positive: raises the predicted default risk)")
    ax.set_title(title, fontsize=10)
    return fig


def plot_before_after(metrics: dict[str, tuple[float, float]], title: str = "Before and after erasure"):
    """One small bar pair per metric: ``{name: (before, after)}``."""
    plt = _plt()
    k = len(metrics)
    fig, axes = plt.subplots(1, k, figsize=(3.0 * k, 2.8), squeeze=False)
    for ax, (name, (b, a)) in zip(axes[0], metrics.items()):
        ax.bar(["before", "after"], [b, a], color=["#9fb3c8", "#2680c2"])
        ax.set_title(name, fontsize=9)
        for i, v in enumerate((b, a)):
            ax.text(i, v, f"{v:.4g}", ha="center", va="bottom", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_delta_hist(deltas, title: str = "Change of predicted default probability on held-out applicants"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.hist(deltas, bins=40, color="#2680c2")
    ax.set_xlabel("p(after) − p(before)")
    ax.set_ylabel("applicants")
    ax.set_title(title, fontsize=10)
    return fig

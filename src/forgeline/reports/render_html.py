"""The self-contained HTML report: inline CSS, plots as base64 data URIs, no JS."""

from __future__ import annotations

import base64

from jinja2 import Environment, StrictUndefined

from forgeline.reports.document import ReportDocument
from forgeline.reports.formatting import bytes_with_exact, human_bytes

_TEMPLATE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>forgeline run {{ doc.run_id }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; color: #1f2937; max-width: 1000px;
       margin: 2rem auto; padding: 0 1rem; background: #f9fafb; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { border-bottom: 1px solid #e5e7eb; padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1.1rem; margin-bottom: .3rem; }
h4 { font-size: 1rem; margin-bottom: .3rem; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
th, td { text-align: left; padding: .25rem .8rem .25rem 0; border-bottom: 1px solid #f3f4f6;
         vertical-align: top; }
th { color: #4b5563; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta, .note { color: #6b7280; }
.fact { font-size: 1.05rem; font-weight: 600; }
code { font-size: .9em; word-break: break-all; }
pre { background: #f3f4f6; padding: .6rem; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
        padding: .8rem 1.1rem; margin: 1rem 0; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.card h3 { margin: 0 0 .2rem; font-size: .85rem; text-transform: uppercase;
           letter-spacing: .05em; color: #6b7280; }
.card .headline { font-size: 1.15rem; font-weight: 600; margin: 0 0 .5rem; }
.card table { width: 100%; margin-bottom: .4rem; }
.card th { width: 11rem; }
.card ul { margin: .2rem 0 .2rem 1.2rem; padding: 0; color: #374151; }
.grid th { width: auto; }
details { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px;
          padding: .4rem 1rem; margin: .6rem 0; }
summary { cursor: pointer; font-weight: 600; }
</style>
</head>
<body>
<h1>forgeline run <code>{{ doc.run_id }}</code></h1>
<p class="meta">Root <code>{{ doc.root }}</code> · generated {{ doc.generated_at }}
 · stages: {{ doc.stages | join(", ") if doc.stages else "none recorded" }}</p>
{% macro section(sec, level=3) %}
{% for fact in sec.facts %}<p class="fact">{{ fact }}</p>
{% endfor %}
{% for table in sec.tables %}
<h{{ level }}>{{ table.title }}</h{{ level }}>
<table>
{% for label, value in table.rows %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}
</table>
{% endfor %}
{% for title, text in sec.code %}<h{{ level }}>{{ title }}</h{{ level }}>
<pre>{{ text }}</pre>
{% endfor %}
{% for img in sec.images %}<img alt="{{ img.alt }}" src="{{ data_uri(img.png) }}">
{% endfor %}
{% endmacro %}

<h2>What each stage did</h2>
{% if not doc.cards %}<p class="note">No stage results recorded yet.</p>{% endif %}
{% for card in doc.cards %}
<section class="card" id="card-{{ card.stage }}">
<h3>{{ card.title }}</h3>
<p class="headline">{{ card.headline }}</p>
<table>
{% for label, value in card.rows %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}
</table>
{% if card.grid %}<table class="grid">
<tr>{% for h in card.grid.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in card.grid.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</table>{% endif %}
{% if card.notes %}<ul>{% for note in card.notes %}<li>{{ note }}</li>{% endfor %}</ul>{% endif %}
{% if card.plot and plot_uri %}<img alt="Training loss vs step" src="{{ plot_uri }}">{% endif %}
{% if card.plot and doc.curve.note %}<p class="note">{{ doc.curve.note }}</p>{% endif %}
</section>
{% endfor %}

<h2>Details</h2>
<details><summary>Dataset</summary>
{% if doc.dataset %}{{ section(doc.dataset, 4) }}{% else %}
<p class="note">No prepare stage recorded.</p>{% endif %}
</details>
<details><summary>Training</summary>
{% if doc.training %}{{ section(doc.training, 4) }}{% else %}
<p class="note">No train stage recorded.</p>{% endif %}
{% if plot_uri %}<img alt="Training loss vs step" src="{{ plot_uri }}">{% endif %}
{% if doc.curve.note %}<p class="note">{{ doc.curve.note }}</p>{% endif %}
</details>
{% for sec in doc.others %}<details><summary>Stage <code>{{ sec.stage }}</code></summary>
{{ section(sec, 4) }}</details>
{% endfor %}
<details><summary>Artifacts ({{ doc.artifacts | length }} files)</summary>
{% if doc.artifacts %}
<table>
<tr><th>path</th><th>size</th><th>bytes</th></tr>
{% for a in doc.artifacts %}<tr><td><code>{{ a.path }}</code></td><td class="num">{{
 human(a.size_bytes) }}</td><td class="num">{{ "{:,}".format(a.size_bytes) }}</td></tr>
{% endfor %}
</table>
<p class="meta">{{ doc.artifacts | length }} files, {{ exact(doc.artifacts_total_bytes) }},
 under <code>{{ doc.run_url }}</code></p>
{% else %}<p class="note">No files under <code>{{ doc.run_url }}</code>.</p>{% endif %}
</details>
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def png_data_uri(png: bytes) -> str:
    """Embed PNG bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(doc: ReportDocument, loss_png: bytes | None) -> str:
    """Render ``doc`` to one HTML page; every value is HTML-escaped."""
    template = _ENV.from_string(_TEMPLATE)
    return template.render(
        doc=doc,
        plot_uri=png_data_uri(loss_png) if loss_png else "",
        human=human_bytes,
        data_uri=png_data_uri,
        exact=bytes_with_exact,
    )

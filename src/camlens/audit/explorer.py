"""The explorer: ``index.html`` beside its data (``data.js``), its script (``explorer.js``) and pictures.

It opens from disk (``file://``) with no server and makes no request outside
its folder: the data is a script (``window.CAMLENS_AUDIT = {...}``), since a
browser refuses ``fetch`` of a local JSON file; the item pictures are files
under ``items/``, loaded only when they scroll into view (``loading="lazy"``)
and only for the page of the grid shown, so a 100,000-item audit opens as
fast as a small one. The page's skeleton is rendered by :mod:`camlens.viz.html`
(every value escaped); the script fills it with ``textContent`` and DOM nodes,
never with HTML built from data; the data is JSON with ``<``, ``>`` and ``&``
escaped (:func:`camlens.audit.report.dumps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from camlens._util.files import atomic_write_text
from camlens.audit.collect import Collected
from camlens.audit.report import dumps
from camlens.viz.html import Markup, element, page, paragraph, section

__all__ = ["INDEX", "write_explorer"]

INDEX = "index.html"

_STYLE = (
    "body{font-family:sans-serif;margin:1em 2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
    "tr.flagged{background:#fde2e1}tr.pick{cursor:pointer}tr.pick:hover{background:#eef}"
    "#filters label{margin-right:1em;white-space:nowrap}#grid{display:flex;flex-wrap:wrap;gap:6px}"
    ".card{width:120px;font-size:11px;cursor:pointer;border:1px solid #ddd;padding:2px}"
    ".protos img{width:112px;height:112px;image-rendering:pixelated;display:block}"
    ".panel{width:112px;height:112px;overflow:hidden}.panel img{max-width:none;image-rendering:pixelated;display:block}"
    ".card.wrong{border-color:#d33}.pics,.protos{display:flex;flex-wrap:wrap;gap:8px}"
    ".pics figure,.protos figure{margin:0;font-size:11px;width:170px}"
    "#item{border:2px solid #447;padding:.5em;margin:1em 0}"
    ".why{font-size:12px;text-align:left;max-width:40em}"
)


def _columns(c: Collected, per_item: dict[str, Tensor], paths: list[str | None] | None) -> dict[str, Any]:
    """The items as columns of plain numbers (rounded: the page shows 3 digits)."""

    def col(t: Tensor, digits: int = 3) -> list[Any]:
        return [None if v != v else round(v, digits) for v in t.float().tolist()]

    stats = {k: col(v) for k, v in per_item.items() if k not in ("cluster", "atypical")}
    return {
        "id": c.ids.tolist(), "label": c.labels.tolist(), "pred": c.preds.tolist(), "target": c.targets.tolist(),
        "confidence": col(c.probs), "cluster": per_item["cluster"].tolist(),
        "atypical": [int(v) for v in per_item["atypical"].tolist()], "stats": stats,
        "path": paths,
    }  # fmt: skip


def _skeleton(report: dict[str, Any]) -> str:
    a = report["audited"]
    return page(
        "camlens audit",
        paragraph(
            f"Audited map: {a['map']} (chosen by: {a['chosen_by']}); {report['n_items']} items; images: "
            f"{report['images']}."
        ),
        element("p", "This page needs JavaScript: it reads data.js beside it.", id="status"),
        section("Classes", element("div", id="overview")),
        section("Class", element("div", id="classview")),
        section("Items", element("div", id="filters"), element("div", id="pager"), element("div", id="grid")),
        element("div", id="item", hidden="hidden"),
        element("script", src="data.js"),
        element("script", src="explorer.js"),
        style=_STYLE,
    )


def write_explorer(out: Path, report: dict[str, Any], c: Collected, per_item: dict[str, Tensor],
                   map_keys: list[str], has_images: bool, paths: list[str | None] | None = None) -> Path:  # fmt: skip
    """Write ``index.html``, ``data.js`` and ``explorer.js`` into ``out`` (pictures: :mod:`camlens.audit.pictures`)."""
    classes = [
        {k: v for k, v in cl.items() if k != "clusters"}
        | {"clusters": [{k: v for k, v in k_.items() if k != "members"} for k_ in cl["clusters"]]}
        for cl in report["classes"]
    ]
    data = {
        "audited": report["audited"], "maps": map_keys, "audited_index": map_keys.index(report["audited"]["map"]),
        "has_images": has_images, "classes": classes, "items": _columns(c, per_item, paths),
        "stat_names": sorted(k for k in per_item if k not in ("cluster", "atypical")),
    }  # fmt: skip
    atomic_write_text(out / "data.js", "window.CAMLENS_AUDIT = " + dumps(data) + ";\n")
    atomic_write_text(out / "explorer.js", SCRIPT)
    atomic_write_text(out / INDEX, _skeleton(report))
    return out / INDEX


#: the explorer's script (no value is interpolated into it; it reads window.CAMLENS_AUDIT).
SCRIPT = Markup(r"""'use strict';
(function () {
  const D = window.CAMLENS_AUDIT;
  const $ = (id) => document.getElementById(id);
  const PAGE = 120;
  const it = D.items;
  const N = it.id.length;
  const names = {};
  D.classes.forEach((c) => { names[c.class] = c.name; });
  const state = {cls: 'all', correct: 'all', cluster: 'all', atypical: false, sort: 'id', desc: false,
                 minconf: 0, maxconf: 1, page: 0};
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'on') { for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f); }
      else if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }
  const fmt = (v) => (v === null || v === undefined) ? '-' : (typeof v === 'number' ? v.toFixed(3) : String(v));
  const groupOf = (i) => (it.label[i] >= 0 ? it.label[i] : it.target[i]);
  const PANELS = D.maps.length + (D.has_images ? 1 : 0);
  function pic(id, k, alt, lazy) {
    // one strip per item (the image, then one overlay per map): show panel k of it, 112 pixels wide
    const p = k === null ? 0 : k + (D.has_images ? 1 : 0);
    const img = el('img', {src: 'items/' + Math.floor(id / 1000) + '/' + id + '.png', alt: alt,
      loading: lazy ? 'lazy' : null, width: 112 * PANELS, height: 112, style: 'margin-left:-' + (112 * p) + 'px'});
    return el('div', {class: 'panel'}, img);
  }
  function overview() {
    const heads = ['class', 'name', 'items', 'accuracy', 'confidence', 'flagged', 'region', 'clusters', 'why'];
    const head = el('tr', {}, ...heads.map((h) => el('th', {}, h)));
    const rows = D.classes.map((c) => el('tr', {class: 'pick' + (c.flagged ? ' flagged' : ''), 'data-class': c.class,
      on: {click: () => { setFilter('cls', String(c.class)); showClass(c); }}},
      el('td', {}, c.class), el('td', {}, c.name), el('td', {}, c.n), el('td', {}, fmt(c.accuracy)),
      el('td', {}, fmt(c.mean_confidence)), el('td', {}, c.flagged ? 'FLAGGED' : 'no'),
      el('td', {}, c.region ? '[' + c.region.join(', ') + ']' : '-'), el('td', {}, c.clusters.length),
      el('td', {class: 'why'}, c.why)));
    $('overview').replaceChildren(el('table', {id: 'classes'}, el('thead', {}, head), el('tbody', {}, ...rows)));
  }
  function showClass(c) {
    const protos = c.clusters.map((k) => el('figure', {class: 'proto', 'data-cluster': k.cluster,
      on: {click: () => setFilter('cluster', String(k.cluster))}},
      el('img', {src: k.prototype, alt: 'cluster ' + k.cluster + ' prototype'}),
      el('figcaption', {}, 'cluster ' + k.cluster + ': ' + k.size + ' items, accuracy ' + fmt(k.accuracy) +
        ', confidence ' + fmt(k.mean_confidence) + ', overlap with the rest ' + fmt(k.overlap_with_rest) +
        (k.differs ? ' (differs)' : ''))));
    $('classview').replaceChildren(
      el('p', {}, 'Class ' + c.class + ' (' + c.name + '): ' + c.why),
      el('div', {class: 'protos'}, el('figure', {}, el('img', {src: c.figure, alt: 'mean map of class ' + c.class}),
        el('figcaption', {}, 'mean map' + (c.region ? ', flagged region outlined' : ''))), ...protos),
      el('p', {}, 'Spread of the mass: ' + Object.entries(c.spread).map(([k, v]) => k + ' ' + fmt(v)).join(', ')));
  }
  function control(label, node) { return el('label', {}, label + ' ', node); }
  function select(id, options, key) {
    const s = el('select', {id: id, on: {change: (e) => setFilter(key, e.target.value)}},
      ...options.map(([v, t]) => el('option', {value: v}, t)));
    return s;
  }
  function filters() {
    const cls = [['all', 'all']].concat(D.classes.map((c) => [String(c.class), c.class + ' ' + c.name]));
    const maxk = it.cluster.reduce((m, k) => (k > m ? k : m), 0);  // no spread: 100,000 arguments overflow
    const clus = [['all', 'all']].concat([...Array(maxk + 1).keys()].map((k) => [String(k), String(k)]));
    const sorts = [['id', 'id'], ['confidence', 'confidence']].concat(D.stat_names.map((s) => [s, s]));
    const num = (id, key, v) => el('input', {id: id, type: 'number', step: '0.05', min: 0, max: 1, value: v,
      on: {change: (e) => setFilter(key, parseFloat(e.target.value))}});
    $('filters').replaceChildren(
      control('class', select('f-class', cls, 'cls')),
      control('correct', select('f-correct', [['all', 'all'], ['yes', 'correct'], ['no', 'wrong']], 'correct')),
      control('cluster', select('f-cluster', clus, 'cluster')),
      control('confidence from', num('f-minconf', 'minconf', 0)), control('to', num('f-maxconf', 'maxconf', 1)),
      control('atypical only', el('input', {id: 'f-atypical', type: 'checkbox',
        on: {change: (e) => setFilter('atypical', e.target.checked)}})),
      control('sort by', select('f-sort', sorts, 'sort')),
      control('descending', el('input', {id: 'f-desc', type: 'checkbox',
        on: {change: (e) => setFilter('desc', e.target.checked)}})));
  }
  function setFilter(key, value) {
    state[key] = value;
    state.page = key === 'page' ? value : 0;
    const sel = {cls: 'f-class', cluster: 'f-cluster', correct: 'f-correct', sort: 'f-sort'}[key];
    if (sel && $(sel).value !== String(value)) $(sel).value = String(value);
    grid();
  }
  function value(i) {
    if (state.sort === 'id') return it.id[i];
    if (state.sort === 'confidence') return it.confidence[i];
    return it.stats[state.sort][i];
  }
  function selected() {
    const out = [];
    for (let i = 0; i < N; i++) {
      if (state.cls !== 'all' && String(groupOf(i)) !== state.cls) continue;
      const right = it.label[i] === it.pred[i];
      if (state.correct === 'yes' && !right) continue;
      if (state.correct === 'no' && (right || it.label[i] < 0)) continue;
      if (state.cluster !== 'all' && String(it.cluster[i]) !== state.cluster) continue;
      if (state.atypical && !it.atypical[i]) continue;
      const c = it.confidence[i];
      if (c < state.minconf || c > state.maxconf) continue;
      out.push(i);
    }
    out.sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === null) return 1;
      if (vb === null) return -1;
      return state.desc ? vb - va : va - vb;
    });
    return out;
  }
  function grid() {
    const rows = selected();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const shown = rows.slice(state.page * PAGE, (state.page + 1) * PAGE);
    const wrong = (i) => it.label[i] >= 0 && it.label[i] !== it.pred[i];
    const cards = shown.map((i) => el('div', {class: 'card' + (wrong(i) ? ' wrong' : ''), 'data-id': it.id[i],
      on: {click: () => itemView(i)}},
      pic(it.id[i], D.audited_index, 'item ' + it.id[i], true),
      el('div', {}, '#' + it.id[i] + ' ' + (it.label[i] >= 0 ? (names[it.label[i]] || it.label[i]) : '?') + ' → ' +
        (names[it.pred[i]] || it.pred[i])),
      el('div', {}, 'conf ' + fmt(it.confidence[i]) + (state.sort !== 'id' && state.sort !== 'confidence' ?
        ', ' + state.sort + ' ' + fmt(value(i)) : ''))));
    $('grid').replaceChildren(...cards);
    const nav = (label, p, id) => el('button', {id: id, on: {click: () => setFilter('page', p)}}, label);
    const count = rows.length + ' items; page ' + (state.page + 1) + ' of ' + pages + ' ';
    $('pager').replaceChildren(el('span', {id: 'count'}, count),
      ...(state.page > 0 ? [nav('previous', state.page - 1, 'prev')] : []),
      ...(state.page < pages - 1 ? [nav('next', state.page + 1, 'next')] : []));
  }
  function itemView(i) {
    const id = it.id[i];
    const figs = [];
    if (D.has_images) figs.push(el('figure', {}, pic(id, null, 'image ' + id, false), el('figcaption', {}, 'image')));
    D.maps.forEach((m, k) => figs.push(el('figure', {}, pic(id, k, m + ' of item ' + id, false),
      el('figcaption', {}, m + (k === D.audited_index ? ' (audited)' : '')))));
    const stats = D.stat_names.map((s) => el('tr', {}, el('td', {}, s), el('td', {}, fmt(it.stats[s][i]))));
    const box = $('item');
    box.replaceChildren(
      el('h3', {}, 'Item ' + id),
      el('p', {}, 'label ' + (it.label[i] >= 0 ? it.label[i] + ' ' + (names[it.label[i]] || '') : 'none') +
        '; predicted ' + it.pred[i] + ' ' + (names[it.pred[i]] || '') + '; explained class ' + it.target[i] +
        ' with confidence ' + fmt(it.confidence[i]) + '; cluster ' + it.cluster[i] +
        (it.atypical[i] ? '; atypical' : '')),
      ...(it.path && it.path[i] ? [el('p', {class: 'path'}, 'file: ' + it.path[i])] : []),
      el('div', {class: 'pics'}, ...figs),
      el('table', {}, el('tbody', {}, ...stats)),
      el('button', {id: 'close', on: {click: () => { box.hidden = true; }}}, 'close'));
    box.hidden = false;
    box.scrollIntoView();
  }
  overview();
  filters();
  grid();
  $('status').textContent = N + ' items, ' + D.classes.filter((c) => c.flagged).length + ' class(es) flagged.';
})();
""")

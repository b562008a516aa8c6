/* ner-quality console: the report's linked views.
 *
 * Reads the JSON payload in <script id="nerq-data"> (analysis/review/report/payload.py) and
 * draws every chart with Plotly (plotly.min.js, inlined before this file) from the span columns
 * of the tasks that pass the filters; clicking a class, a confusion cell, a misclassified pair,
 * a high-DEP word, a DEP bin, an alert, an annotator or a duplicate group, the DEP slider, the
 * error-kind and split filters and a box/lasso selection on the embedding map all narrow one
 * shared filter state.  The rules are those of analysis/metrics.py: a gold span of kind
 * "correct" is an exact match (a true positive), every aligned (gold, predicted) pair is one
 * confusion count, a "missed" gold span counts against "none" and a "ghost" prediction from it.
 * window.nerq exposes the state and the shown task ids (used by the browser tests).
 */
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('nerq-data').textContent);
  var KINDS = D.kinds, KW = D.kind_words;
  var S = D.spans, L = S.labels, NONE = L.length, LN = L.concat(['none']);
  var T = D.tasks, n = T.key.length;
  var G = S.gold, P = S.pred, PR = S.pairs;
  var COLOURS = D.colours, KCOL = D.kind_colours;
  var PAGE = 25;
  var CFG = {displaylogo: false, responsive: true,
             modeBarButtonsToRemove: ['toImage', 'sendDataToCloud']};

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }
  function f3(v) { return v === null || v === undefined ? '–' : (+v).toFixed(3); }
  function bucket(col, size) {
    var out = new Array(size);
    for (var i = 0; i < size; i++) out[i] = [];
    for (var j = 0; j < col.length; j++) out[col[j]].push(j);
    return out;
  }

  // ------------------------------------------------------------------ derived once
  var gByT = bucket(G.t, n), pByT = bucket(P.t, n);
  var pairOfGold = {}, pairsByT = new Array(n);
  for (var i = 0; i < n; i++) pairsByT[i] = [];
  for (i = 0; i < PR.g.length; i++) {
    if (!(PR.g[i] in pairOfGold)) pairOfGold[PR.g[i]] = PR.p[i];
    pairsByT[G.t[PR.g[i]]].push(i);
  }
  var terr = new Array(n);  // per task: gold spans of each kind + ghost predictions
  for (i = 0; i < n; i++) terr[i] = [0, 0, 0, 0, 0];
  for (i = 0; i < G.t.length; i++) if (G.k[i] >= 0) terr[G.t[i]][G.k[i]]++;
  for (i = 0; i < P.t.length; i++) if (P.k[i] === 4) terr[P.t[i]][4]++;
  var rowOfKey = {};
  for (i = 0; i < n; i++) rowOfKey[T.key[i]] = i;
  var alertRows = D.alerts.map(function (a) {
    var s = new Set();
    a.task_ids.forEach(function (k) { if (k in rowOfKey) s.add(rowOfKey[k]); });
    return s;
  });
  var alertsOfRow = {};
  alertRows.forEach(function (s, ai) {
    s.forEach(function (r) { (alertsOfRow[r] = alertsOfRow[r] || []).push(D.alerts[ai].name); });
  });
  var W = S.words, wordRows = {}, hiWordsOfGold = {};
  for (i = 0; i < W.rows.length; i++) {
    hiWordsOfGold[W.rows[i]] = W.ids[i];
    W.ids[i].forEach(function (w) {
      (wordRows[w] = wordRows[w] || new Set()).add(G.t[W.rows[i]]);
    });
  }
  // surface form -> label counts over every gold span (the "labelled differently" look-up)
  var forms = {};
  function form(gi) { return T.text[G.t[gi]].slice(G.s[gi], G.e[gi]).toLowerCase(); }
  for (i = 0; i < G.t.length; i++) {
    var f = form(i), c = forms[f] || (forms[f] = {});
    c[G.l[i]] = (c[G.l[i]] || 0) + 1;
  }

  // ------------------------------------------------------------------ filter state
  var state = {cls: null, pair: null, word: null, alert: null, annotator: null, dep: [0, 1],
               kinds: [], split: null, flagged: false, q: '', sel: null, group: null, page: 0};

  function hasLabel(r, l) {
    var g = gByT[r], p = pByT[r], j;
    for (j = 0; j < g.length; j++) if (G.l[g[j]] === l) return true;
    for (j = 0; j < p.length; j++) if (P.l[p[j]] === l) return true;
    return false;
  }
  function hasPair(r, gl, pl) {
    var j;
    if (gl === NONE) {
      for (j = 0; j < pByT[r].length; j++) {
        var q = pByT[r][j]; if (P.k[q] === 4 && P.l[q] === pl) return true;
      }
      return false;
    }
    if (pl === NONE) {
      for (j = 0; j < gByT[r].length; j++) {
        var g = gByT[r][j]; if (G.k[g] === 3 && G.l[g] === gl) return true;
      }
      return false;
    }
    var ps = pairsByT[r];
    for (j = 0; j < ps.length; j++) {
      if (G.l[PR.g[ps[j]]] === gl && P.l[PR.p[ps[j]]] === pl) return true;
    }
    return false;
  }
  function depActive() { return state.dep[0] > 0 || state.dep[1] < 1; }
  function passes(r) {
    if (state.cls !== null && !hasLabel(r, state.cls)) return false;
    if (state.pair !== null && !hasPair(r, state.pair[0], state.pair[1])) return false;
    if (state.word !== null && !(wordRows[state.word] && wordRows[state.word].has(r))) return false;
    if (state.alert !== null && !alertRows[state.alert].has(r)) return false;
    if (state.annotator !== null && T.ann[r] !== state.annotator) return false;
    if (state.split !== null && T.split[r] !== state.split) return false;
    if (depActive()) {
      var d = T.dep[r];
      if (d === null || d < state.dep[0] - 1e-9 || d > state.dep[1] + 1e-9) return false;
    }
    if (state.kinds.length) {
      var any = false;
      for (var j = 0; j < state.kinds.length; j++) if (terr[r][state.kinds[j]] > 0) any = true;
      if (!any) return false;
    }
    if (state.flagged && !alertsOfRow[r]) return false;
    if (state.sel !== null && !state.sel.rows.has(r)) return false;
    if (state.group !== null && !state.group.rows.has(r)) return false;
    if (state.q && T.text[r].toLowerCase().indexOf(state.q) < 0) return false;
    return true;
  }
  function filtered() {
    var rows = [];
    for (var r = 0; r < n; r++) if (passes(r)) rows.push(r);
    return rows;
  }
  function byDep(a, b) {
    var x = T.dep[a], y = T.dep[b];
    if (x === null && y === null) return a - b;
    if (x === null) return 1;
    if (y === null) return -1;
    return y - x || a - b;
  }

  // ------------------------------------------------------------------ aggregates
  function aggregate(mask) {
    var nl = L.length, a = {
      support: new Array(nl).fill(0), tp: new Array(nl).fill(0), npred: new Array(nl).fill(0),
      spans: new Array(nl).fill(0), kinds: [], conf: [], words: {}
    };
    var i, j;
    for (i = 0; i < nl; i++) a.kinds.push([0, 0, 0, 0, 0]);
    for (i = 0; i <= nl; i++) a.conf.push(new Array(nl + 1).fill(0));
    for (i = 0; i < G.t.length; i++) {
      if (!mask[G.t[i]]) continue;
      a.spans[G.l[i]]++;
      var k = G.k[i];
      if (k < 0) continue;
      a.support[G.l[i]]++;
      a.kinds[G.l[i]][k]++;
      if (k === 0) a.tp[G.l[i]]++;
      if (k === 3) a.conf[G.l[i]][NONE]++;
      var ws = hiWordsOfGold[i];
      if (ws) for (j = 0; j < ws.length; j++) a.words[ws[j]] = (a.words[ws[j]] || 0) + 1;
    }
    for (i = 0; i < P.t.length; i++) {
      if (!mask[P.t[i]]) continue;
      a.npred[P.l[i]]++;
      if (P.k[i] === 4) { a.kinds[P.l[i]][4]++; a.conf[NONE][P.l[i]]++; }
    }
    for (i = 0; i < PR.g.length; i++) {
      if (mask[G.t[PR.g[i]]]) a.conf[G.l[PR.g[i]]][P.l[PR.p[i]]]++;
    }
    a.prf = L.map(function (lab, l) {
      var p = a.npred[l] ? a.tp[l] / a.npred[l] : 0, r = a.support[l] ? a.tp[l] / a.support[l] : 0;
      return {label: lab, precision: p, recall: r, f1: p + r ? 2 * p * r / (p + r) : 0,
              support: a.support[l]};
    });
    return a;
  }

  // ------------------------------------------------------------------ charts
  // automargin on the category (y) axes only: measuring every tick label of every axis is
  // ~0.3 s of the page's load at 14k tasks; x axes are numbers with a fixed margin
  var AX = {automargin: true, gridcolor: '#eee', zeroline: false};
  var XAX = {automargin: false, gridcolor: '#eee', zeroline: false};
  function layout(extra) {
    var l = {margin: {l: 10, r: 20, t: 10, b: 48}, height: 300, font: {size: 12},
             paper_bgcolor: '#fff', plot_bgcolor: '#fff', hovermode: 'closest',
             xaxis: Object.assign({}, XAX), yaxis: Object.assign({}, AX)};
    Object.keys(extra || {}).forEach(function (k) {
      l[k] = typeof extra[k] === 'object' && !Array.isArray(extra[k]) && l[k]
        ? Object.assign(l[k], extra[k]) : extra[k];
    });
    return l;
  }
  var CFG_STATIC = Object.assign({}, CFG, {displayModeBar: false});
  function draw(id, traces, lay) {
    var el = document.getElementById(id);
    if (!el) return null;
    // the charts are filters (a click filters); only the map keeps Plotly's zoom/lasso bar
    Plotly.react(el, traces, lay, id === 'ch-map' ? CFG : CFG_STATIC);
    return el;
  }
  function once(el, ev, fn) {
    if (el && !el['_nerq_' + ev]) { el.on(ev, fn); el['_nerq_' + ev] = true; }
  }
  function classHeight(k) { return Math.max(180, 60 + 26 * k); }

  function chartF1(a) {
    var y = L.slice().reverse(), x = y.map(function (lab) { return a.prf[L.indexOf(lab)].f1; });
    var el = draw('ch-f1', [{type: 'bar', orientation: 'h', x: x, y: y, marker: {color: COLOURS[0]},
      text: x.map(f3), textposition: 'auto', customdata: y,
      hovertemplate: '%{y}: F1 %{x:.3f}<br>click: filter by this class<extra></extra>'}],
      layout({height: classHeight(L.length), xaxis: {range: [0, 1], title: {text: 'span F1 (exact match)'}},
              yaxis: {title: {text: 'class'}}}));
    once(el, 'plotly_click', function (e) { setFilter('cls', L.indexOf(e.points[0].customdata)); });
  }
  function chartCount(a) {
    var y = L.slice().reverse(), x = y.map(function (lab) { return a.spans[L.indexOf(lab)]; });
    var el = draw('ch-count', [{type: 'bar', orientation: 'h', x: x, y: y, customdata: y,
      marker: {color: COLOURS[4]}, text: x, textposition: 'auto',
      hovertemplate: '%{y}: %{x} spans<extra></extra>'}],
      layout({height: classHeight(L.length), xaxis: {title: {text: 'annotated spans'}},
              yaxis: {title: {text: 'class'}}}));
    once(el, 'plotly_click', function (e) { setFilter('cls', L.indexOf(e.points[0].customdata)); });
  }
  function chartErrors(a) {
    var y = L.slice().reverse();
    var traces = KINDS.map(function (k, ki) {
      return {type: 'bar', orientation: 'h', name: KW[k], y: y, customdata: y,
              x: y.map(function (lab) { return a.kinds[L.indexOf(lab)][ki]; }),
              marker: {color: KCOL[k]}, visible: k === 'correct' ? 'legendonly' : true,
              hovertemplate: '%{y}: %{x} ' + KW[k] + '<extra></extra>'};
    });
    var el = draw('ch-errors', traces, layout({barmode: 'stack', height: classHeight(L.length) + 30,
      legend: {orientation: 'h', y: 1.02, yanchor: 'bottom', traceorder: 'normal'},
      xaxis: {title: {text: 'spans (click “correct” in the legend to show it)'}},
      yaxis: {title: {text: 'class'}}, margin: {t: 40}}));
    once(el, 'plotly_click', function (e) { setFilter('cls', L.indexOf(e.points[0].customdata)); });
  }
  function offDiagonal(a) {
    var cells = [];
    for (var g = 0; g <= NONE; g++) for (var p = 0; p <= NONE; p++) {
      if (g !== p && a.conf[g][p] > 0) cells.push([g, p, a.conf[g][p]]);
    }
    cells.sort(function (x, y) { return y[2] - x[2] || x[0] - y[0] || x[1] - y[1]; });
    return cells;
  }
  function chartPairs(a) {
    var cells = offDiagonal(a).slice(0, 15).reverse();
    var el = draw('ch-pairs', [{type: 'bar', orientation: 'h',
      y: cells.map(function (c) { return LN[c[0]] + ' → ' + LN[c[1]]; }),
      x: cells.map(function (c) { return c[2]; }), customdata: cells.map(function (c) { return [c[0], c[1]]; }),
      marker: {color: COLOURS[2]}, text: cells.map(function (c) { return c[2]; }), textposition: 'auto',
      hovertemplate: 'annotated %{y}: %{x} spans<br>click: filter<extra></extra>'}],
      layout({height: Math.max(180, 60 + 24 * cells.length), xaxis: {title: {text: 'spans'}},
              yaxis: {title: {text: 'annotated → predicted'}}}));
    once(el, 'plotly_click', function (e) {
      var c = e.points[0].customdata; setFilter('pair', [c[0], c[1]]);
    });
  }
  function chartConfusion(a) {
    var zeroDiag = document.getElementById('conf-diag') && document.getElementById('conf-diag').checked;
    var z = [], text = [];
    for (var g = 0; g <= NONE; g++) {
      var row = a.conf[g].slice();
      if (zeroDiag) row[g] = 0;
      var tot = row.reduce(function (s, v) { return s + v; }, 0);
      z.push(row.map(function (v) { return tot ? v / tot : 0; }));
      text.push(a.conf[g].map(function (v, p) { return v === 0 || (zeroDiag && p === g) ? '' : String(v); }));
    }
    var el = draw('ch-confusion', [{type: 'heatmap', x: LN, y: LN, z: z, text: text,
      texttemplate: '%{text}', colorscale: [[0, '#f7fbff'], [0.5, '#6baed6'], [1, '#08306b']], zmin: 0, zmax: 1,
      colorbar: {title: {text: 'share of row'}, thickness: 12},
      hovertemplate: 'annotated %{y} → predicted %{x}: %{z:.1%} of the row' +
                     '<br>click: filter<extra></extra>'}],
      layout({height: Math.max(300, 120 + 34 * LN.length),
              xaxis: {title: {text: 'predicted (model)'}, side: 'bottom', type: 'category', automargin: true},
              yaxis: {title: {text: 'annotated (gold)'}, autorange: 'reversed', type: 'category'}}));
    once(el, 'plotly_click', function (e) {
      var p = e.points[0]; setFilter('pair', [LN.indexOf(p.y), LN.indexOf(p.x)]);
    });
  }
  function chartDep(mask) {
    var nb = 20, counts = new Array(nb).fill(0), x = [], cd = [];
    for (var r = 0; r < n; r++) {
      if (!mask[r] || T.dep[r] === null) continue;
      counts[Math.min(nb - 1, Math.floor(T.dep[r] * nb))]++;
    }
    for (var b = 0; b < nb; b++) { x.push((b + 0.5) / nb); cd.push([b / nb, (b + 1) / nb]); }
    var th = D.dep_threshold, shapes = [], ann = [];
    if (th !== null && th !== undefined) {
      shapes.push({type: 'line', x0: th, x1: th, y0: 0, y1: 1, yref: 'paper',
                   line: {color: '#e15759', dash: 'dash', width: 2}});
      ann.push({x: th, y: 1, yref: 'paper', text: 'likely-mislabeled threshold ' + th.toFixed(2),
                showarrow: false, xanchor: 'left', yanchor: 'top', font: {color: '#b31d28'}});
    }
    var top = Math.max.apply(null, counts);
    var el = draw('ch-dep', [{type: 'bar', x: x, y: counts, width: 1 / nb * 0.95, customdata: cd,
      marker: {color: COLOURS[0]}, hovertemplate: 'DEP %{customdata[0]:.2f}–%{customdata[1]:.2f}: ' +
      '%{y} tasks<br>click: filter to this range<extra></extra>'}],
      layout({shapes: shapes, annotations: ann, xaxis: {range: [0, 1], title: {text: 'task DEP'}},
              yaxis: {title: {text: 'tasks' + (top > 50 ? ' (log)' : '')}, type: top > 50 ? 'log' : 'linear'}}));
    once(el, 'plotly_click', function (e) {
      var c = e.points[0].customdata; setDep(c[0], c[1]);
    });
  }
  function chartWords(a) {
    var ids = Object.keys(a.words).map(Number);
    ids.sort(function (x, y) { return a.words[y] - a.words[x] || x - y; });
    ids = ids.slice(0, 20).reverse();
    var el = draw('ch-words', [{type: 'bar', orientation: 'h', y: ids.map(function (w) { return W.vocab[w]; }),
      x: ids.map(function (w) { return a.words[w]; }), customdata: ids, marker: {color: COLOURS[1]},
      hovertemplate: '“%{y}” in %{x} high-DEP spans<br>click: filter<extra></extra>'}],
      layout({height: Math.max(180, 60 + 22 * ids.length), xaxis: {title: {text: 'high-DEP spans'}},
              yaxis: {title: {text: 'word'}, type: 'category'}}));
    once(el, 'plotly_click', function (e) { setFilter('word', e.points[0].customdata); });
  }
  function chartLoss() {
    var lb = D.loss_by_label;
    if (!lb) return;
    var y = Object.keys(lb).reverse();
    draw('ch-loss', [{type: 'bar', orientation: 'h', y: y, x: y.map(function (k) { return lb[k].mean; }),
      marker: {color: COLOURS[6]}, hovertemplate: '%{y}: mean token loss %{x:.3f}<extra></extra>'}],
      layout({height: classHeight(y.length), xaxis: {title: {text: 'mean token loss (nats), whole dataset'}},
              yaxis: {title: {text: 'gold label'}}}));
  }
  function chartAgreement() {
    var per = D.agreement || [];
    if (!per.length || !document.getElementById('ch-agreement')) return;
    var y = per.map(function (a) { return a.annotator; }).reverse();
    var x = per.map(function (a) { return a.f1 === null ? 0 : a.f1; }).reverse();
    draw('ch-agreement', [{type: 'bar', orientation: 'h', x: x, y: y, marker: {color: COLOURS[3]},
      hovertemplate: '%{y}: span F1 %{x:.3f} against the other annotators<extra></extra>'}],
      layout({height: classHeight(y.length), xaxis: {range: [0, 1], title: {text: 'span F1 vs the other annotators'}},
              yaxis: {title: {text: 'annotator'}, type: 'category'}}));
  }
  function chartMap(mask) {
    var M = D.map;
    if (!M) return;
    var by = document.getElementById('map-colour').value, traces = [], i;
    var rows = {inF: [], out: []};
    for (i = 0; i < M.x.length; i++) (mask[G.t[M.g[i]]] ? rows.inF : rows.out).push(i);
    function hover(ix) {
      return ix.map(function (j) {
        var g = M.g[j], k = G.k[g], p = pairOfGold[g];
        return '“' + esc(T.text[G.t[g]].slice(G.s[g], G.e[g])) + '” annotated ' + L[G.l[g]] +
          (p !== undefined ? ', model ' + L[P.l[p]] : (k === 3 ? ', model: none' : '')) +
          (k >= 0 ? ' · ' + KW[KINDS[k]] : '') + '<br>DEP ' + f3(G.dep[g]) + ' · task ' + T.key[G.t[g]];
      });
    }
    function trace(ix, name, marker) {
      return {type: 'scatter', mode: 'markers', name: name, x: ix.map(function (j) { return M.x[j]; }),
              y: ix.map(function (j) { return M.y[j]; }), customdata: ix.map(function (j) { return M.g[j]; }),
              text: hover(ix), hovertemplate: '%{text}<extra></extra>', marker: marker};
    }
    if (rows.out.length) traces.push(trace(rows.out, 'not in the filter', {color: '#ddd', size: 4}));
    if (by === 'dep') {
      traces.push(trace(rows.inF, 'spans', {size: 6, cmin: 0, cmax: 1,
        colorscale: [[0, '#4575b4'], [0.5, '#fee090'], [1, '#d73027']],
        color: rows.inF.map(function (j) { var d = G.dep[M.g[j]]; return d === null ? 0 : d; }),
        colorbar: {title: {text: 'span DEP'}, thickness: 12}}));
    } else {
      var groups = by === 'label' ? L : KINDS, key = by === 'label' ? G.l : G.k;
      groups.forEach(function (name, gi) {
        var ix = rows.inF.filter(function (j) { return key[M.g[j]] === gi; });
        if (ix.length) traces.push(trace(ix, by === 'label' ? name : KW[name],
          {size: 6, color: by === 'label' ? COLOURS[gi % COLOURS.length] : KCOL[name]}));
      });
    }
    var el = draw('ch-map', traces, layout({height: 520, dragmode: 'lasso', legend: {orientation: 'h', y: -0.12},
      xaxis: {title: {text: M.method + ' 1'}, range: M.xr}, yaxis: {title: {text: M.method + ' 2'}, range: M.yr}}));
    once(el, 'plotly_selected', function (e) {
      if (!e || !e.points || !e.points.length) return;
      var s = new Set();
      e.points.forEach(function (p) { if (p.customdata !== undefined) s.add(G.t[p.customdata]); });
      state.sel = {rows: s, n: e.points.length};
      rerender();
    });
  }

  // ------------------------------------------------------------------ tasks as a person reads them
  function link(r) {
    var k = T.key[r];
    if (!D.ls_url || D.project === null) return String(k);
    return '<a href="' + esc(D.ls_url + '/projects/' + D.project + '/data?task=' + k) +
      '" target="_blank" rel="noopener">' + esc(k) + '</a>';
  }
  var CUT = 600;
  function marked(text, spans, who) {
    var shown = text.slice(0, CUT), out = [], pos = 0;
    spans.sort(function (a, b) { return a[0] - b[0]; });
    spans.forEach(function (sp) {
      var s = sp[0], e = sp[1], lab = sp[2], kind = sp[3], dep = sp[4];
      if (s >= shown.length || s < pos) return;
      var words = kind && kind !== 'correct' ? ' — ' + KW[kind] : '';
      var tip = who + ': ' + lab + ' [' + s + ', ' + e + ')' + words + (dep !== null && dep !== undefined ? ' · DEP ' + f3(dep) : '');
      out.push(esc(shown.slice(pos, s)));
      out.push('<mark class="sp k-' + (kind || 'none') + '" data-start="' + s + '" data-end="' + e +
        '" data-label="' + esc(lab) + '" title="' + esc(tip) + '">' + esc(shown.slice(s, Math.min(e, shown.length))) +
        '<sub>' + esc(lab) + (dep !== null && dep !== undefined ? '·' + (+dep).toFixed(2) : '') + '</sub></mark>');
      pos = Math.min(e, shown.length);
    });
    out.push(esc(shown.slice(pos)));
    return out.join('') + (text.length > CUT ? '<span class="cut">…</span>' : '');
  }
  function goldSpans(r) {
    return gByT[r].map(function (g) {
      return [G.s[g], G.e[g], L[G.l[g]], G.k[g] >= 0 ? KINDS[G.k[g]] : null, G.dep[g], g];
    });
  }
  function predSpans(r) {
    return pByT[r].map(function (p) { return [P.s[p], P.e[p], L[P.l[p]], KINDS[P.k[p]], null, p]; });
  }
  function fixes(r) {
    var text = T.text[r], out = [];
    gByT[r].forEach(function (g) {
      var k = G.k[g], span = text.slice(G.s[g], G.e[g]), p = pairOfGold[g];
      if (k === 1 && p !== undefined) out.push('wrong type: “' + span + '” ' + L[G.l[g]] + ' → ' + L[P.l[p]]);
      else if (k === 2 && p !== undefined) out.push('boundary: “' + span + '” → “' + text.slice(P.s[p], P.e[p]) + '” (' + L[P.l[p]] + ')');
      else if (k === 3) out.push('extra entity? “' + span + '” (' + L[G.l[g]] + '): the model finds none');
    });
    pByT[r].forEach(function (p) {
      if (P.k[p] === 4) out.push('entity missing: “' + text.slice(P.s[p], P.e[p]) + '” (' + L[P.l[p]] + ')');
    });
    return out;
  }
  function similar(r) {
    var out = [];
    gByT[r].forEach(function (g) {
      var c = forms[form(g)], other = [];
      Object.keys(c).forEach(function (l) { if (+l !== G.l[g]) other.push([+l, c[l]]); });
      if (!other.length) return;
      other.sort(function (a, b) { return b[1] - a[1]; });
      out.push('“' + T.text[r].slice(G.s[g], G.e[g]) + '” (' + L[G.l[g]] + ' here, ×' + c[G.l[g]] + ' in all) is also annotated ' +
        other.slice(0, 3).map(function (o) { return L[o[0]] + ' ×' + o[1]; }).join(', '));
    });
    return out.slice(0, 4);
  }
  function spansCell(r) {
    var fx = fixes(r), sim = similar(r), hasPred = S.has_pred;
    return '<td class="spans"><div class="line ann"><span class="who">annotation</span> ' +
      marked(T.text[r], goldSpans(r), 'annotated') + '</div>' +
      (hasPred ? '<div class="line mod"><span class="who">model</span> ' + marked(T.text[r], predSpans(r), 'model') + '</div>' : '') +
      (fx.length ? '<ul class="fixes">' + fx.map(function (x) { return '<li>' + esc(x) + '</li>'; }).join('') + '</ul>' : '') +
      (sim.length ? '<ul class="similar">' + sim.map(function (x) { return '<li>' + esc(x) + '</li>'; }).join('') + '</ul>' : '') +
      '</td>';
  }
  function kindsCell(r) {
    var e = terr[r], parts = [];
    for (var k = 1; k < 5; k++) if (e[k]) parts.push('<span class="kind k-' + KINDS[k] + '">' + esc(KW[KINDS[k]]) + ' ' + e[k] + '</span>');
    return parts.join(' ');
  }
  function nErr(r) { return terr[r][1] + terr[r][2] + terr[r][3] + terr[r][4]; }
  function rowHtml(r, extra) {
    return '<tr data-key="' + esc(T.key[r]) + '"><td>' + link(r) + '</td><td>' + f3(T.dep[r]) + '</td>' +
      (extra || '') + '<td>' + nErr(r) + '</td><td>' + kindsCell(r) + '</td><td>' +
      esc((alertsOfRow[r] || []).join(', ')) + '</td><td>' + esc(T.ann[r] === null ? '' : D.annotators[T.ann[r]]) +
      '</td>' + spansCell(r) + '</tr>';
  }
  var HEAD = '<th>task</th><th>DEP</th><th>errors</th><th>kinds</th><th>alerts</th><th>annotator</th><th>annotation and model</th>';
  var shown = [];
  function table(rows) {
    rows.sort(byDep);
    shown = rows;
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var a = state.page * PAGE, b = Math.min(rows.length, a + PAGE);
    document.getElementById('tasks-body').innerHTML = rows.slice(a, b).map(function (r) { return rowHtml(r); }).join('');
    document.getElementById('tasks-count').textContent = rows.length + ' of ' + n + ' tasks' +
      (rows.length ? ' · rows ' + (a + 1) + '–' + b : '');
    document.getElementById('page-label').textContent = 'page ' + (state.page + 1) + ' of ' + pages;
    document.getElementById('push-cmd').textContent = pushCommand(rows);
  }
  function pushCommand(rows) {
    var name = (chipTexts().join(', ') || 'all tasks').replace(/"/g, "'");
    return 'ner-quality push --project ' + (D.project === null ? '<ID>' : D.project) +
      ' --view "Console: ' + name + '" --view-tasks filtered_tasks.csv';
  }
  function csv() {
    var q = function (s) { s = String(s); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    var lines = [['task_id', 'dep', 'n_errors', 'wrong_tag', 'span_shift', 'missed', 'ghost', 'alerts', 'annotator', 'link', 'text'].join(',')];
    shown.forEach(function (r) {
      var url = D.ls_url && D.project !== null ? D.ls_url + '/projects/' + D.project + '/data?task=' + T.key[r] : '';
      lines.push([T.key[r], T.dep[r] === null ? '' : T.dep[r].toFixed(4), nErr(r), terr[r][1], terr[r][2], terr[r][3], terr[r][4],
                  (alertsOfRow[r] || []).join('; '), T.ann[r] === null ? '' : D.annotators[T.ann[r]], url, T.text[r]].map(q).join(','));
    });
    return lines.join('\n') + '\n';
  }

  // ------------------------------------------------------------------ filters bar
  var BLANK = {cls: null, pair: null, word: null, alert: null, annotator: null, split: null, dep: [0, 1],
               kinds: [], flagged: false, q: '', sel: null, group: null};
  var CHIP_KEYS = Object.keys(BLANK);
  function active(key) {
    if (key === 'dep') return depActive();
    if (key === 'kinds') return state.kinds.length > 0;
    if (key === 'flagged') return state.flagged;
    if (key === 'q') return !!state.q;
    return state[key] !== null;
  }
  function chipText(key) {
    switch (key) {
      case 'cls': return 'class ' + L[state.cls];
      case 'pair': return LN[state.pair[0]] + ' → ' + LN[state.pair[1]];
      case 'word': return 'word “' + W.vocab[state.word] + '”';
      case 'alert': return 'alert ' + D.alerts[state.alert].name;
      case 'annotator': return 'annotator ' + D.annotators[state.annotator];
      case 'split': return 'split ' + D.splits[state.split];
      case 'dep': return 'DEP ' + state.dep[0].toFixed(2) + '–' + state.dep[1].toFixed(2);
      case 'kinds': return state.kinds.map(function (k) { return KW[KINDS[k]]; }).join(' or ');
      case 'flagged': return 'flagged';
      case 'sel': return 'map selection (' + state.sel.rows.size + ' tasks)';
      case 'group': return state.group.name;
      case 'q': return 'text “' + state.q + '”';
    }
    return key;
  }
  function chipTexts() { return CHIP_KEYS.filter(active).map(chipText); }
  function chips() {
    var out = CHIP_KEYS.filter(active).map(function (key) {
      return '<span class="chip" data-filter="' + key + '">' + esc(chipText(key)) +
        ' <button class="chip-x" data-filter="' + key + '" title="remove this filter">×</button></span>';
    });
    document.getElementById('chips').innerHTML = out.length ? out.join(' ')
      : '<span class="none">none — click a bar, a cell, a word, an alert, an annotator…</span>';
  }
  function clearFilter(key) {
    state[key] = BLANK[key];
    if (key === 'dep') syncSlider();
    if (key === 'kinds') document.querySelectorAll('input.kind-filter').forEach(function (c) { c.checked = false; });
    if (key === 'split') document.getElementById('split-filter').value = '';
    if (key === 'flagged') document.getElementById('flagged-only').checked = false;
    if (key === 'q') document.getElementById('text-filter').value = '';
    state.page = 0;
    rerender();
  }
  function setFilter(key, value) {
    state[key] = value;
    state.page = 0;
    rerender();
  }
  function setDep(lo, hi) {
    state.dep = [Math.max(0, Math.min(lo, hi)), Math.min(1, Math.max(lo, hi))];
    syncSlider();
    state.page = 0;
    rerender();
  }
  function syncSlider() {
    document.getElementById('dep-min').value = state.dep[0];
    document.getElementById('dep-max').value = state.dep[1];
    document.getElementById('dep-label').textContent = state.dep[0].toFixed(2) + ' – ' + state.dep[1].toFixed(2);
  }
  function reset() {
    CHIP_KEYS.forEach(function (k) { state[k] = BLANK[k]; });
    document.querySelectorAll('input.kind-filter').forEach(function (c) { c.checked = false; });
    document.getElementById('split-filter').value = '';
    document.getElementById('flagged-only').checked = false;
    document.getElementById('text-filter').value = '';
    syncSlider();
    state.page = 0;
    rerender();
  }

  // ------------------------------------------------------------------ the annotators, samples, inspect, activations
  function annotators() {
    var el = document.getElementById('annotators-body');
    if (!el) return;
    var per = D.annotators.map(function (name) { return {name: name, tasks: 0, spans: 0, errors: 0}; });
    for (var r = 0; r < n; r++) {
      if (T.ann[r] === null) continue;
      var a = per[T.ann[r]];
      a.tasks++; a.spans += gByT[r].length; a.errors += nErr(r);
    }
    var z = D.annotator_z || {};
    el.innerHTML = per.map(function (a, i) {
      var zz = z[a.name];
      return '<tr data-annotator="' + i + '" class="' + (zz && zz.flagged ? 'flagged' : '') + '"><td>' + esc(a.name) +
        (zz && zz.flagged ? ' ⚑' : '') + '</td><td>' + a.tasks + '</td><td>' + a.spans + '</td><td>' + a.errors +
        '</td><td>' + f3(a.spans ? a.errors / a.spans : null) + '</td><td>' + (zz ? f3(zz.z) : '–') +
        '</td><td><button class="filter-annotator" data-annotator="' + i + '">show tasks</button></td></tr>';
    }).join('');
  }
  function samples() {
    var sm = D.samples || {};
    var loss = sm.loss || {};
    function rows(list, withLoss) {
      return (list || []).map(function (r) {
        return rowHtml(r, withLoss ? '<td>' + f3(loss[r]) + '</td>' : '');
      }).join('');
    }
    var a = document.getElementById('samples-loss-body'), b = document.getElementById('samples-random-body');
    if (a) a.innerHTML = rows(sm.by_loss, true);
    if (b) b.innerHTML = rows(sm.random, false);
  }
  function inspect(key) {
    var out = document.getElementById('inspect-out'), r = rowOfKey[key];
    if (r === undefined) { out.innerHTML = '<p class="empty">no task with id ' + esc(key) + '</p>'; return; }
    var sp = goldSpans(r).map(function (g) {
      return '<tr><td>annotation</td><td>' + g[0] + '</td><td>' + g[1] + '</td><td>' + esc(T.text[r].slice(g[0], g[1])) +
        '</td><td>' + esc(g[2]) + '</td><td>' + esc(g[3] ? KW[g[3]] : '–') + '</td><td>' + f3(g[4]) + '</td></tr>';
    }).concat(predSpans(r).map(function (p) {
      return '<tr><td>model</td><td>' + p[0] + '</td><td>' + p[1] + '</td><td>' + esc(T.text[r].slice(p[0], p[1])) +
        '</td><td>' + esc(p[2]) + '</td><td>' + esc(KW[p[3]]) + '</td><td>–</td></tr>';
    })).join('');
    var mv = D.model_view && D.model_view[r], raw;
    if (mv) {
      raw = '<p>As the model sees it: ' + mv.subwords.length + ' subword tokens in ' + mv.windows.length +
        ' window(s) ' + esc(JSON.stringify(mv.windows)) + '</p><table class="subwords"><tr><th>subword</th>' +
        mv.subwords.map(function (s) { return '<td>' + esc(s) + '</td>'; }).join('') + '</tr><tr><th>word</th>' +
        mv.word_ids.map(function (w) { return '<td>' + (w === null ? '·' : w) + '</td>'; }).join('') + '</tr></table>';
    } else {
      raw = '<p class="empty">' + esc(D.model_view_note || 'subword view not stored for this task') + '</p>';
    }
    out.innerHTML = '<table id="inspect-task"><thead><tr>' + HEAD + '</tr></thead><tbody>' + rowHtml(r) + '</tbody></table>' +
      '<table class="inspect-spans"><thead><tr><th>side</th><th>start</th><th>end</th><th>text</th><th>label</th><th>kind</th><th>DEP</th></tr></thead><tbody>' +
      sp + '</tbody></table>' + raw;
  }
  function activations() {
    var A = D.activations, el = document.getElementById('activations-out');
    if (!el || !A) return;
    var comps = A.components;
    el.innerHTML = '<p>Layer ' + A.layer + ' of ' + A.n_layers + ', ' + A.n_words + ' words, ' + comps.length +
      ' NMF components of the FFN activations. Top words per component:</p><table class="components"><thead><tr><th>component</th><th>top words (weight)</th></tr></thead><tbody>' +
      comps.map(function (c, i) {
        return '<tr><td>' + i + '</td><td>' + c.top_words.map(function (w) { return esc(w[0]) + ' <span class="w">' + (+w[1]).toFixed(2) + '</span>'; }).join(', ') + '</td></tr>';
      }).join('') + '</tbody></table>';
    var keys = Object.keys(A.tasks || {});
    if (!keys.length) return;
    var r = +keys[0], ws = A.tasks[keys[0]], words = A.words && A.words[keys[0]];
    draw('ch-activations', [{type: 'heatmap', z: ws[0].map(function (_, c) { return ws.map(function (w) { return w[c]; }); }),
      x: words || ws.map(function (_, i) { return i; }), y: comps.map(function (_, i) { return 'c' + i; }),
      colorscale: 'Viridis', hovertemplate: '%{x} · component %{y}: %{z:.2f}<extra></extra>'}],
      layout({height: 60 + 26 * comps.length, xaxis: {title: {text: 'words of task ' + T.key[r]}, type: 'category', automargin: true},
              yaxis: {title: {text: 'component'}}}));
  }

  // ------------------------------------------------------------------ render + wiring
  var lastKeys = [];
  function rerender() {
    var rows = filtered(), mask = new Uint8Array(n);
    rows.forEach(function (r) { mask[r] = 1; });
    var a = aggregate(mask);
    api.last = a;
    api.mask = mask;
    chartF1(a); chartCount(a); chartErrors(a); chartPairs(a); chartConfusion(a); chartDep(mask); chartWords(a);
    chartMap(mask);
    table(rows);
    chips();
    lastKeys = shown.map(function (r) { return T.key[r]; });
    document.body.setAttribute('data-filter-version', String(++api.version));
  }
  var api = {state: state, version: 0, last: null, mask: null, reset: reset, setFilter: setFilter, setDep: setDep, csv: csv,
             shownKeys: function () { return lastKeys.slice(); }, inspect: inspect,
             aggregate: function () { var m = new Uint8Array(n).fill(1); return aggregate(m); }};
  window.nerq = api;

  function wire() {
    document.getElementById('reset').addEventListener('click', reset);
    document.getElementById('chips').addEventListener('click', function (e) {
      var k = e.target.getAttribute && e.target.getAttribute('data-filter');
      if (k && e.target.classList.contains('chip-x')) clearFilter(k);
    });
    ['dep-min', 'dep-max'].forEach(function (id) {
      document.getElementById(id).addEventListener('input', function () {
        setDep(+document.getElementById('dep-min').value, +document.getElementById('dep-max').value);
      });
    });
    document.querySelectorAll('input.kind-filter').forEach(function (c) {
      c.addEventListener('change', function () {
        state.kinds = Array.prototype.slice.call(document.querySelectorAll('input.kind-filter'))
          .filter(function (x) { return x.checked; }).map(function (x) { return +x.value; });
        state.page = 0; rerender();
      });
    });
    document.getElementById('split-filter').addEventListener('change', function (e) {
      setFilter('split', e.target.value === '' ? null : +e.target.value);
    });
    document.getElementById('flagged-only').addEventListener('change', function (e) { setFilter('flagged', e.target.checked); });
    var tq;
    document.getElementById('text-filter').addEventListener('input', function (e) {
      clearTimeout(tq); tq = setTimeout(function () { setFilter('q', e.target.value.toLowerCase()); }, 200);
    });
    document.getElementById('prev').addEventListener('click', function () { if (state.page > 0) { state.page--; table(shown); } });
    document.getElementById('next').addEventListener('click', function () {
      if ((state.page + 1) * PAGE < shown.length) { state.page++; table(shown); }
    });
    document.getElementById('csv').addEventListener('click', function () {
      var blob = new Blob([csv()], {type: 'text/csv'}), a = document.createElement('a');
      a.href = URL.createObjectURL(blob); a.download = 'filtered_tasks.csv';
      document.body.appendChild(a); a.click(); a.remove();
    });
    document.querySelectorAll('[data-alert]').forEach(function (el) {
      el.addEventListener('click', function (e) {
        if (e.target.tagName === 'A') return;
        setFilter('alert', +el.getAttribute('data-alert'));
        document.getElementById('tasks').scrollIntoView();
      });
    });
    document.addEventListener('click', function (e) {
      var t = e.target;
      if (t.classList && t.classList.contains('filter-annotator')) setFilter('annotator', +t.getAttribute('data-annotator'));
      if (t.classList && t.classList.contains('filter-group')) {
        var g = +t.getAttribute('data-group'), s = new Set();
        D.duplicates.groups[g].forEach(function (k) { if (k in rowOfKey) s.add(rowOfKey[k]); });
        setFilter('group', {name: 'duplicate group ' + (g + 1), rows: s});
      }
    });
    var mc = document.getElementById('map-colour');
    // these change one chart, not the filter: redraw that chart only
    if (mc) mc.addEventListener('change', function () { chartMap(api.mask); });
    var cd = document.getElementById('conf-diag');
    if (cd) cd.addEventListener('change', function () { chartConfusion(api.last); });
    var ii = document.getElementById('inspect-id');
    document.getElementById('inspect-go').addEventListener('click', function () { inspect(ii.value.trim()); });
    ii.addEventListener('keydown', function (e) { if (e.key === 'Enter') inspect(ii.value.trim()); });
  }

  wire();
  syncSlider();
  chartLoss();
  chartAgreement();
  annotators();
  samples();
  activations();
  rerender();
  document.body.setAttribute('data-report-ready', '1');
})();

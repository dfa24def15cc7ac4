// The run as a graph: one row per model call, its tool calls to the right of it, an approval
// after the tool it guarded, and an edge down to the next model call. The graph is layered by
// construction (a model call fans out to its tools, which lead to the next call), so a fixed
// row-and-column layout places it exactly; a general layout library would add weight for nothing.
import { svg } from './dom.js';

const W = 150, H = 44, GAP_X = 46, GAP_Y = 34, PAD = 16;

function label(item) {
  if (item.kind === 'model') return [`model #${item.step}`, item.tool_calls ? `${item.tool_calls.length} tool call(s)` : item.state];
  if (item.kind === 'tool') return [item.tool, item.state];
  if (item.kind === 'approval') return ['approval', item.state];
  if (item.kind === 'start') return ['start', ''];
  if (item.kind === 'end') return [item.status, ''];
  return [item.kind, ''];
}

// Rows: [start], then per model call [model, tool, approval?, tool, ...], then [end].
function rowsOf(trace) {
  const rows = [];
  let row = null;
  for (const it of trace.items) {
    if (it.kind === 'start' || it.kind === 'end') {
      rows.push([it]);
      row = null;
    } else if (it.kind === 'model') {
      row = [it];
      rows.push(row);
    } else if (it.kind === 'tool' || it.kind === 'approval') {
      if (!row) {
        row = [];
        rows.push(row);
      }
      row.push(it);
    }
  }
  return rows;
}

export function graphView(trace, onPick) {
  const rows = rowsOf(trace);
  const cols = Math.max(1, ...rows.map((r) => r.length));
  const width = PAD * 2 + cols * W + (cols - 1) * GAP_X;
  const height = PAD * 2 + rows.length * H + Math.max(0, rows.length - 1) * GAP_Y;
  const root = svg('svg', { class: 'graph', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'run graph' });
  root.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))));
  const pos = new Map();
  rows.forEach((r, y) => r.forEach((it, x) => pos.set(it, { x: PAD + x * (W + GAP_X), y: PAD + y * (H + GAP_Y) })));
  const edge = (a, b, down) => {
    const p = pos.get(a), q = pos.get(b);
    const d = down ? `M ${p.x + W / 2} ${p.y + H} L ${q.x + W / 2} ${q.y}` : `M ${p.x + W} ${p.y + H / 2} L ${q.x} ${q.y + H / 2}`;
    root.append(svg('path', { d, class: 'edge', 'marker-end': 'url(#arrow)' }));
  };
  rows.forEach((r, y) => {
    for (let i = 1; i < r.length; i++) edge(r[i - 1], r[i], false);
    if (y + 1 < rows.length && r.length && rows[y + 1].length) edge(r[0], rows[y + 1][0], true);
  });
  for (const [it, p] of pos) {
    const [title, sub] = label(it);
    const current = it === trace.current || (it.kind === 'approval' && it.state === 'waiting');
    const g = svg('g', { class: `node node-${it.kind} state-${it.state || it.status || ''}${current ? ' current' : ''}`,
                         transform: `translate(${p.x},${p.y})`, tabindex: 0, 'data-seq': it.seq, onclick: () => onPick?.(it) });
    g.append(it.kind === 'approval'
      ? svg('rect', { width: W, height: H, rx: 22 })
      : svg('rect', { width: W, height: H, rx: 6 }));
    g.append(svg('text', { x: W / 2, y: 18, 'text-anchor': 'middle', class: 'title', text: title.length > 20 ? `${title.slice(0, 19)}…` : title }));
    g.append(svg('text', { x: W / 2, y: 34, 'text-anchor': 'middle', class: 'sub', text: sub || '' }));
    root.append(g);
  }
  return root;
}

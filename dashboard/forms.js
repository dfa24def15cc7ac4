// The approval form as the terminal shows it: the command with its directory and environment, a
// path outside the workspace, a file's content, an edit as a coloured diff.
import { h, pre, shown } from './dom.js';

function row(label, value, cls = '') {
  return h('div', { class: 'form-row' }, h('span', { class: 'label', text: label }), h('span', { class: `value ${cls}`, text: shown(value) }));
}

export function diffView(diff) {
  const lines = String(diff ?? '').split('\n');
  return h('pre', { class: 'block diff' }, lines.map((line) => {
    let cls = 'ctx';
    if (line.startsWith('+++') || line.startsWith('---')) cls = 'file';
    else if (line.startsWith('@@')) cls = 'hunk';
    else if (line.startsWith('+')) cls = 'add';
    else if (line.startsWith('-')) cls = 'del';
    return h('span', { class: `line ${cls}`, text: `${shown(line)}\n` });
  }));
}

export function envView(env) {
  if (!env || typeof env !== 'object' || !Object.keys(env).length) return null;
  return h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Environment' }),
    pre(Object.entries(env).map(([k, v]) => `${shown(k)}=${shown(typeof v === 'string' ? v : JSON.stringify(v))}`).join('\n')));
}

// What the form asks, as a heading and its fields.
export function formView(form) {
  const f = form || {};
  const c = f.context || {};
  const tool = f.tool || '?';
  if (f.kind === 'tool') {  // a tool worker's tool (docs/PROTOCOL.md, tool workers)
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: f.title || `Run ${tool}?` }),
      h('p', { text: `The agent wants to use "${tool}", a tool of queue ${shown(f.queue || '?')}.` }),
      f.description ? row('Tool', f.description) : null,
      h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Arguments' }), pre(shown(JSON.stringify(f.arguments ?? {}, null, 2), 20000, true))),
      f.details !== undefined ? h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'The tool asks because' }),
                                  pre(shown(JSON.stringify(f.details, null, 2), 20000, true))) : null);
  }
  if (c.server !== undefined && c.mcp_tool !== undefined) {  // an MCP server's tool (docs/TOOLS.md)
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: 'MCP tool approval required' }),
      h('p', { text: `The agent wants to call "${shown(c.mcp_tool)}" of MCP server ${shown(c.server)}.` }),
      h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Arguments' }), pre(shown(JSON.stringify(c.arguments ?? {}, null, 2), 20000, true))));
  }
  if (c.argv !== undefined && c.command !== undefined) {  // a command tool (docs/TOOLS.md)
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: 'Command tool approval required' }),
      h('p', { text: `The agent wants to run the command tool "${shown(tool)}".` }),
      h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Command' }), pre(shown(c.command), 'command')),
      row('Directory', c.cwd_display || c.cwd, 'mono'));
  }
  if (f.reason === 'outside the workspace') {
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: 'Path access approval required' }),
      h('p', { text: `The agent wants to use "${tool}" outside its workspace.` }),
      row('Path', c.path, 'mono'), row('Workspace', c.workspace, 'mono'),
      c.command !== undefined ? row('Command', c.command, 'mono') : null, envView(c.env));
  }
  if (tool === 'exec') {
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: 'Command approval required' }),
      h('p', { text: 'The agent wants to run a command on this machine.' }),
      h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Command' }), pre(shown(c.command), 'command')),
      row('Directory', c.cwd_display || c.cwd, 'mono'), envView(c.env), row('Why asked', f.reason));
  }
  if (tool === 'edit') {
    return h('div', { class: 'form' },
      h('h3', { class: 'form-title', text: 'Edit approval required' }),
      row('Path', c.path, 'mono'), h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Change' }), diffView(c.diff)));
  }
  return h('div', { class: 'form' },
    h('h3', { class: 'form-title', text: `${tool.charAt(0).toUpperCase()}${tool.slice(1)} approval required` }),
    h('p', { text: `The agent wants to use the "${tool}" tool.` }),
    row('Path', c.path, 'mono'),
    c.exists !== undefined ? row('File', c.exists ? 'exists: it will be replaced' : 'new file') : null,
    c.bytes !== undefined ? row('Size', `${c.bytes} bytes, ${c.lines ?? 0} lines`) : null,
    c.content !== undefined ? h('div', { class: 'form-row' }, h('span', { class: 'label', text: 'Content' }), pre(String(c.content).split('\n').map((line) => shown(line)).join('\n'))) : null,
    f.reason && f.reason !== 'outside the workspace' ? row('Why asked', f.reason) : null);
}

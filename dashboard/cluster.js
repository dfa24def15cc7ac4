// The agents and nodes pages, from the orchestrators' answers and the nodes' heartbeats.
import { api } from './api.js';
import { h, clear, duration, message } from './dom.js';

function poll(main, title, draw) {
  const body = h('div');
  clear(main).append(h('h1', { text: title }), body);
  let stopped = false, timer = null;
  const load = async () => {
    try {
      await draw(body);
    } catch (e) {
      clear(body).append(message(e.message, 'error'));
    }
    if (!stopped) timer = setTimeout(load, 3000);
  };
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

export function renderAgents(main) {
  return poll(main, 'Agents', async (body) => {
    const { agents } = await api('/agents');
    const rows = agents.map((a) => h('tr', { 'data-agent': a.id },
      h('td', { class: 'mono', text: a.id }), h('td', { text: a.provider }), h('td', { text: a.model || '-' }),
      h('td', { text: (a.tools || []).join(', ') }),
      h('td', { text: `${a.sandbox?.env || '-'} · ${a.sandbox?.exec_security || '-'}${a.sandbox?.network ? ' · network' : ''}` }),
      h('td', { class: 'mono', text: a.sandbox?.workspace || '-' }),
      h('td', { text: a.workers?.length ? `${a.workers.length} (${a.workers.join(', ')})` : 'none' }),
      h('td', { class: 'num', text: `${a.slots_busy ?? 0}/${a.slots ?? 0}` })));
    clear(body).append(agents.length
      ? h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Agent', 'Provider', 'Model', 'Tools', 'Sandbox', 'Workspace', 'Workers', 'Slots busy'].map((c) => h('th', { text: c })))), h('tbody', {}, rows))
      : message('No orchestrator knows any agent.'));
  });
}

export function renderNodes(main) {
  return poll(main, 'Nodes', async (body) => {
    const { nodes } = await api('/nodes');
    const now = Date.now();
    const rows = nodes.map((n) => h('tr', { 'data-node': n.node_id },
      h('td', { class: 'mono', text: n.node_id }), h('td', { text: (n.roles || []).join(', ') }),
      h('td', { text: (n.agents || []).join(', ') || '-' }), h('td', { text: `${n.host || ''} (pid ${n.pid || '?'})` }),
      h('td', { text: duration(now - (n.started_ms || now)) }),
      h('td', { class: 'num', text: n.slots ? `${n.slots_busy}/${n.slots}` : '-' }),
      h('td', { class: 'num', text: n.roles?.includes('orchestrator') ? String(n.runs_in_memory ?? 0) : '-' }),
      h('td', { text: n.state || 'up' })));
    clear(body).append(nodes.length
      ? h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Node', 'Roles', 'Agents', 'Host', 'Up', 'Slots busy', 'Runs in memory', 'State'].map((c) => h('th', { text: c })))), h('tbody', {}, rows))
      : message('No live node answered.'));
  });
}

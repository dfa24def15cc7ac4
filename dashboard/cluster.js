// The agents and nodes pages, from the orchestrators' answers and the nodes' heartbeats.
import { api } from './api.js';
import { h, clear, duration, message, time } from './dom.js';

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
    const [{ agents }, declared, costs] = await Promise.all([api('/agents'), api('/tools').catch(() => ({ queues: [] })),
      api('/costs').catch(() => ({ agents: [] }))]);
    // The last 24 hours' runs, cost (by the configured prices) and tokens, per agent.
    const costOf = new Map((costs.agents || []).map((c) => [c.agent, c]));
    const spent = (id) => {
      const c = costOf.get(id);
      if (!c) return '-';
      const dollars = c.cost_usd ? `$${Number(c.cost_usd).toFixed(c.cost_usd < 0.01 ? 6 : 2)}` : '$0';
      return `${dollars} · ${c.runs} run${c.runs === 1 ? '' : 's'} · ${(c.input_tokens || 0) + (c.output_tokens || 0)} tokens`;
    };
    // Every tool an agent may call: built-in and tool workers' (as listed), command tools, MCP
    // servers (their tools are known once a worker lists them) and sub-agents.
    const toolsOf = (a) => [...(a.tools || []), ...(a.commands || []).map((c) => `${c.name} (command)`),
      ...(a.mcp || []).map((m) => `${m.name}__* (MCP ${m.transport})`), ...(a.sub_agents || []).map((id) => `agent__${id}`)].join(', ');
    const rows = agents.map((a) => h('tr', { 'data-agent': a.id },
      h('td', { class: 'mono', text: a.id }), h('td', { text: a.provider }), h('td', { text: a.model || '-' }),
      h('td', { text: toolsOf(a) }),
      h('td', { text: `${a.sandbox?.env || '-'} · ${a.sandbox?.exec_security || '-'}${a.sandbox?.network ? ' · network' : ''}` }),
      h('td', { class: 'mono', text: a.sandbox?.workspace || '-' }),
      h('td', { text: a.workers?.length ? `${a.workers.length} (${a.workers.join(', ')})` : 'none' }),
      h('td', { class: 'num', text: `${a.slots_busy ?? 0}/${a.slots ?? 0}` }),
      h('td', { class: 'num cost', text: spent(a.id) })));
    const queues = declared.queues || [];
    const toolRows = queues.flatMap((q) => (q.tools || []).map((t) => h('tr', { 'data-tool': `${q.queue}.${t.name}` },
      h('td', { class: 'mono', text: `${q.queue}.${t.name}` }), h('td', { text: t.description || '' }),
      h('td', { text: t.approval || '' }), h('td', { text: q.by || '' }))));
    clear(body).append(agents.length
      ? h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Agent', 'Provider', 'Model', 'Tools', 'Sandbox', 'Workspace', 'Workers', 'Slots busy', 'Last 24 h'].map((c) => h('th', { text: c })))), h('tbody', {}, rows))
      : message('No orchestrator knows any agent.'),
      h('h2', { text: 'Tools declared by tool workers' }),
      toolRows.length
        ? h('table', { class: 'runs tools' }, h('thead', {}, h('tr', {}, ['Tool', 'Description', 'Approval', 'Declared by'].map((c) => h('th', { text: c })))), h('tbody', {}, toolRows))
        : message('No tool worker has declared tools.'));
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

// Schedules (docs/WORKFLOWS.md): last and next tick, paused or not, with pause and resume.
export function renderSchedules(main) {
  return poll(main, 'Schedules', async (body) => {
    let schedules;
    try {
      ({ schedules } = await api('/schedules'));
    } catch (e) {
      if (e.status !== 503) throw e;
      clear(body).append(message('No orchestrator drives a schedule ([schedules.<name>] in its config).'));
      return;
    }
    const act = (s, verb) => h('button', { class: 'small', text: verb === 'pause' ? 'Pause' : 'Resume', onclick: async () => {
      try { await api(`/schedules/${encodeURIComponent(s.name)}/${verb}`, { method: 'POST', body: {} }); } catch (e) { alert(e.message); }
    } });
    // A schedule made through the API can be removed from here (the config's are changed there).
    const remove = (s) => h('button', { class: 'danger small', text: 'Remove', onclick: async () => {
      if (!confirm(`Remove schedule ${s.name}? No tick starts after this.`)) return;
      try { await api(`/schedules/${encodeURIComponent(s.name)}`, { method: 'DELETE', body: {} }); } catch (e) { alert(e.message); }
    } });
    const rows = schedules.map((s) => h('tr', { 'data-schedule': s.name },
      h('td', { class: 'mono', text: s.name }), h('td', { text: s.agent }), h('td', { class: 'mono', text: s.cron }),
      h('td', { text: s.timezone }), h('td', { text: s.last_tick_ms ? time(s.last_tick_ms) : '-' }),
      h('td', { text: s.paused ? '(paused)' : s.next_ms ? time(s.next_ms) : '-' }), h('td', { text: s.missed }),
      h('td', { text: s.paused ? `paused by ${s.paused_by || '?'}` : (s.problem ? `active (${s.problem})` : 'active') }),
      h('td', { text: s.source || 'config' }),
      h('td', {}, act(s, s.paused ? 'resume' : 'pause'), s.source === 'api' ? remove(s) : null)));
    clear(body).append(schedules.length
      ? h('table', { class: 'runs' }, h('thead', {}, h('tr', {}, ['Schedule', 'Agent', 'Cron', 'Zone', 'Last tick', 'Next tick', 'Missed ticks', 'State', 'From', ''].map((c) => h('th', { text: c })))), h('tbody', {}, rows))
      : message('No schedule.'));
  });
}

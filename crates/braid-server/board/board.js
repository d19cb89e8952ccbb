// braid board: reads the JSON API, follows /ws, and keeps the page in step.
// No framework and no build step. Every piece of data reaches the DOM through
// textContent or setAttribute, never as markup.
'use strict';

(() => {
  // ---------------------------------------------------------------- constants

  const STATES = ['open', 'in_progress', 'review', 'done', 'failed', 'deferred', 'cancelled'];
  const STATE_LABEL = {
    open: 'Open', in_progress: 'In progress', review: 'Review', done: 'Done',
    failed: 'Failed', deferred: 'Deferred', cancelled: 'Cancelled',
  };
  // The server's state machine (braid-core State::allowed_next), used only to
  // grey out buttons; the server still decides.
  const ALLOWED_NEXT = {
    open: ['in_progress', 'done', 'cancelled', 'deferred'],
    in_progress: ['open', 'review', 'done', 'failed', 'cancelled'],
    review: ['in_progress', 'open', 'done', 'failed', 'cancelled'],
    done: ['open'],
    failed: ['open', 'cancelled'],
    cancelled: ['open'],
    deferred: ['open', 'cancelled'],
  };
  const ACTIONS = [
    { action: 'done', label: 'Done', to: 'done' },
    { action: 'reopen', label: 'Reopen', to: 'open' },
    { action: 'defer', label: 'Defer', to: 'deferred' },
    { action: 'cancel', label: 'Cancel', to: 'cancelled' },
    { action: 'fail', label: 'Fail…', to: 'failed' },
  ];
  const FINISHED = new Set(['done', 'cancelled']);
  const ACTIVE = new Set(['open', 'in_progress', 'review']);
  // Events that may change other tasks' readiness (dependents, subtree).
  const GRAPH_KINDS = new Set(['state_changed', 'dep_added', 'dep_removed', 'updated', 'imported', 'restored', 'created']);
  // Events that concern running agents.
  const RUN_KINDS = new Set(['state_changed', 'claimed', 'dispatched', 'agent_finished', 'gate_finished',
    'cooldown', 'retrying', 'rescued', 'released']);
  const LOG_KINDS = new Set(['dispatched', 'agent_finished', 'gate_finished', 'retrying', 'rescued', 'released']);
  // Events that may change what waits for a person (an `updated` event only
  // when it changed labels).
  const NEEDS_KINDS = new Set(['attention', 'answered', 'imported', 'restored']);
  // Events after which the cost ledger may say something new.
  const COST_KINDS = new Set(['agent_finished', 'imported', 'restored']);
  // Events that end what a running agent was last seen doing.
  const ACTIVITY_ENDS = new Set(['agent_finished', 'dispatched', 'released', 'rescued']);

  const MAX_CARDS_PER_COLUMN = 300;
  const COALESCE_MS = 100;
  // More affected tasks than this in one flush: reload the list instead,
  // at most once per FULL_RELOAD_GAP ms (keeps a burst off the rate limit).
  const PER_TASK_MAX = 8;
  const FULL_RELOAD_GAP = 1000;
  const BACKOFF_MIN = 250;
  const BACKOFF_MAX = 5000;
  // Browsers keep at most six HTTP/1.1 connections per host; each live log
  // tail holds one. The detail panel holds one, the runs panel at most this.
  const RUN_TAILS_LIVE = 3;
  const RUN_TAIL_LINES = 5;
  const DETAIL_LOG_MAX = 256 * 1024;
  // /api/cost sums the whole ledger: asked at most once per COST_GAP ms.
  const COST_GAP = 2000;
  const ACTIVITY_MAX = 300;
  // How many waiting tasks /api/needs lists at most.
  const NEEDS_LISTED = 200;

  // -------------------------------------------------------------------- token

  const TOKEN = (() => {
    const url = new URL(location.href);
    const fromUrl = url.searchParams.get('token');
    if (fromUrl) {
      try { sessionStorage.setItem('braid.token', fromUrl); } catch (_) { /* storage off */ }
      url.searchParams.delete('token');
      history.replaceState(null, '', url.pathname + url.search + url.hash);
      return fromUrl;
    }
    try { return sessionStorage.getItem('braid.token') || ''; } catch (_) { return ''; }
  })();

  function withToken(path) {
    if (!TOKEN) return path;
    return path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN);
  }

  // ---------------------------------------------------------------------- DOM

  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    appendAll(el, children);
    return el;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    appendAll(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      // Through the CSSOM: the page's CSP refuses inline style attributes.
      else if (k === 'style') {
        for (const decl of String(v).split(';')) {
          const i = decl.indexOf(':');
          if (i > 0) el.style.setProperty(decl.slice(0, i).trim(), decl.slice(i + 1).trim());
        }
      }
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  // replaceChildren that skips null and false (conditional children).
  function put(el, ...children) {
    el.replaceChildren();
    appendAll(el, children);
  }

  function appendAll(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const now = Date.now();
    const diff = (now - d.getTime()) / 1000;
    if (diff >= 0 && diff < 60) return 'just now';
    if (diff >= 0 && diff < 3600) return Math.floor(diff / 60) + ' min ago';
    if (diff >= 0 && diff < 86400) return Math.floor(diff / 3600) + ' h ago';
    return d.toLocaleString();
  }

  // Dollars: four places under $1 (one attempt often costs cents), two above.
  function usd(v) {
    const x = Number(v) || 0;
    return '$' + (x !== 0 && Math.abs(x) < 1 ? x.toFixed(4) : x.toFixed(2));
  }

  function clip(text, n) {
    const t = String(text);
    return t.length > n ? t.slice(0, n - 1) + '…' : t;
  }

  // ------------------------------------------------------------------- toasts

  const recentToasts = new Map();
  function toast(message, kind = 'error') {
    const now = Date.now();
    const seen = recentToasts.get(message);
    if (seen && now - seen < 10000) return;
    recentToasts.set(message, now);
    if (recentToasts.size > 50) recentToasts.clear();
    const box = $('.toasts');
    const el = h('div', { class: 'toast toast-' + kind, role: kind === 'error' ? 'alert' : 'status', 'data-testid': 'toast' },
      h('span', { class: 'toast-text', text: message }),
      h('button', { class: 'toast-x', type: 'button', 'aria-label': 'Dismiss', text: '×', onclick: () => el.remove() }));
    box.append(el);
    while (box.children.length > 5) box.firstElementChild.remove();
    setTimeout(() => el.remove(), kind === 'error' ? 9000 : 3500);
  }

  // ---------------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // `what` names the operation in the toast; `quiet` leaves reporting to the
  // caller (which must show the error itself); `background` stays quiet only
  // about an unreachable server (the work is redone after reconnecting).
  async function api(method, path, body, opts = {}) {
    const headers = { Accept: 'application/json' };
    if (TOKEN) headers.Authorization = 'Bearer ' + TOKEN;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      const err = new ApiError(0, 'network', 'could not reach the server');
      // Background refreshes are redone after reconnecting; the connection
      // indicator already says the server is away.
      if (!opts.quiet && !opts.background) toast((opts.what ? opts.what + ': ' : '') + err.message);
      throw err;
    }
    const text = await res.text().catch(() => '');
    if (!res.ok) {
      let code = 'http_' + res.status;
      let message = res.statusText || ('HTTP ' + res.status);
      try {
        const j = JSON.parse(text);
        if (j && j.error) {
          code = j.error.code || code;
          message = j.error.message || message;
        }
      } catch (_) {
        if (text) message = clip(text, 300);
      }
      const err = new ApiError(res.status, code, message);
      if (!opts.quiet) toast((opts.what ? opts.what + ': ' : '') + message);
      throw err;
    }
    if (opts.text) return text;
    if (!text) return null;
    return JSON.parse(text);
  }

  const enc = encodeURIComponent;

  // Runs async jobs with at most `n` in flight (keeps connections free).
  async function pool(items, n, fn) {
    const out = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    }
    await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
    return out;
  }

  // -------------------------------------------------------------------- state

  const tasks = new Map(); // id -> Task
  const cards = new Map(); // id -> { key, el }
  let health = null;
  let cost = null; // the last CostSummaryView
  let lastSeq = 0;
  let filterText = '';
  let selectedId = null;
  let tasksLoaded = false; // the first task list has come

  function isBlocked(t) {
    return t.state === 'open' && t.type !== 'epic' && !t.ready;
  }

  function unfinishedBlockers(t) {
    const out = [];
    for (const d of t.deps || []) {
      if (d.kind !== 'blocks') continue;
      const o = tasks.get(d.id);
      if (!o || !FINISHED.has(o.state)) out.push(d.id);
    }
    return out;
  }

  function putTask(t) {
    const old = tasks.get(t.id);
    tasks.set(t.id, t);
    markDirty(t.state);
    if (old && old.state !== t.state) markDirty(old.state);
  }

  function dropTask(id) {
    const old = tasks.get(id);
    if (!old) return;
    tasks.delete(id);
    cards.delete(id);
    markDirty(old.state);
  }

  // -------------------------------------------------------------------- board

  const dirtyCols = new Set();
  let renderQueued = false;

  function markDirty(state) {
    dirtyCols.add(state);
    if (!renderQueued) {
      renderQueued = true;
      requestAnimationFrame(renderDirty);
    }
  }

  function markAllDirty() {
    for (const st of STATES) markDirty(st);
  }

  function renderDirty() {
    renderQueued = false;
    const cols = [...dirtyCols];
    dirtyCols.clear();
    for (const st of cols) renderColumn(st);
    if (cols.length) fitColumns();
    renderEpicList();
    markFirstDraw();
  }

  // Marks for the page's first drawing of the task list (and of its first
  // card), for anyone measuring how soon the board shows its work.
  let firstDrawn = false;
  let firstCards = false;
  function markFirstDraw() {
    if (!tasksLoaded) return;
    if (!firstDrawn) { firstDrawn = true; performance.mark('braid:first-data'); }
    if (!firstCards && document.querySelector('.board .card')) { firstCards = true; performance.mark('braid:first-cards'); }
  }

  // ------------------------------------------------------------------ columns

  // A column folds to a strip showing its name and count. An empty finished
  // column is folded from the start; when the board has no room for every
  // column at --col-min px, empty columns fold next, then full ones, the
  // most settled state first, so the board never scrolls sideways. A click
  // on a strip opens it (another folds in its place if room is short); a
  // click on an open column's header folds it.
  const FOLD_ORDER = ['cancelled', 'deferred', 'done', 'failed', 'review', 'in_progress', 'open'];
  const colTotal = new Map(); // state -> its tasks, filter aside
  const colChoice = new Map(); // state -> { open, at }: what the reader chose
  let choiceClock = 0;
  const boardEl = $('[data-testid="board"]');

  function fitColumns() {
    // Hidden (the review page has the screen): measured when it shows again.
    if (!boardEl.clientWidth) return;
    const cs = getComputedStyle(boardEl);
    const min = parseFloat(cs.getPropertyValue('--col-min')) || 200;
    const strip = parseFloat(cs.getPropertyValue('--col-strip')) || 40;
    const gap = parseFloat(cs.columnGap) || 0;
    const room = boardEl.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) -
      gap * (STATES.length - 1);
    const folded = new Set();
    for (const st of STATES) {
      const c = colChoice.get(st);
      if (c ? !c.open : (!colTotal.get(st) && !ACTIVE.has(st))) folded.add(st);
    }
    const chosenOpen = [...colChoice].filter(([, c]) => c.open).sort((a, b) => a[1].at - b[1].at).map(([st]) => st);
    const order = [
      ...FOLD_ORDER.filter((st) => !colChoice.has(st) && !colTotal.get(st)),
      ...FOLD_ORDER.filter((st) => !colChoice.has(st) && colTotal.get(st)),
      ...chosenOpen,
    ];
    const need = () => (STATES.length - folded.size) * min + folded.size * strip;
    for (const st of order) {
      if (need() <= room || STATES.length - folded.size <= 1) break;
      folded.add(st);
    }
    for (const st of STATES) showFolded(st, folded.has(st));
  }

  function showFolded(state, folded) {
    const col = boardEl.querySelector(`[data-testid="col-${state}"]`);
    const head = col.querySelector('header');
    const n = colTotal.get(state) || 0;
    col.classList.toggle('is-folded', folded);
    col.dataset.count = String(n);
    head.setAttribute('aria-expanded', String(!folded));
    const what = n === 0 ? 'no tasks' : n === 1 ? '1 task' : `${n} tasks`;
    head.title = `${STATE_LABEL[state]}: ${what}. ${folded ? 'Click to open' : 'Click to fold'}`;
  }

  function toggleColumn(state) {
    const col = boardEl.querySelector(`[data-testid="col-${state}"]`);
    const open = col.classList.contains('is-folded');
    colChoice.set(state, { open, at: ++choiceClock });
    fitColumns();
  }

  new ResizeObserver(() => fitColumns()).observe(boardEl);

  function matchesFilter(t) {
    if (!filterText) return true;
    const q = filterText;
    return t.id.toLowerCase().includes(q) ||
      t.title.toLowerCase().includes(q) ||
      (t.labels || []).some((l) => l.toLowerCase().includes(q)) ||
      (t.assignee || '').toLowerCase().includes(q) ||
      t.type === q;
  }

  function compareFor(state) {
    if (ACTIVE.has(state)) {
      return (a, b) => (a.priority - b.priority) ||
        (Number(b.ready) - Number(a.ready)) ||
        (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0) ||
        (a.id < b.id ? -1 : 1);
    }
    return (a, b) => {
      const x = a.closed_at || a.updated_at;
      const y = b.closed_at || b.updated_at;
      return (x < y ? 1 : x > y ? -1 : 0) || (a.id < b.id ? -1 : 1);
    };
  }

  function renderColumn(state) {
    const col = document.querySelector(`[data-testid="col-${state}"]`);
    if (!col) return;
    const list = [];
    let total = 0;
    for (const t of tasks.values()) {
      if (t.state !== state) continue;
      total++;
      if (matchesFilter(t)) list.push(t);
    }
    list.sort(compareFor(state));
    const shown = list.slice(0, MAX_CARDS_PER_COLUMN);
    const els = shown.map(cardFor);
    if (list.length > shown.length) {
      els.push(h('div', { class: 'more', text: `+${list.length - shown.length} more — filter to narrow` }));
    }
    if (list.length === 0) {
      els.push(h('div', { class: 'col-empty', text: filterText && total ? 'No match' : 'Empty' }));
    }
    put(col.querySelector('.cards'), ...els);
    colTotal.set(state, total);
    col.querySelector('.count').textContent = filterText ? `${list.length}/${total}` : String(total);
  }

  function cardFor(t) {
    const blockers = isBlocked(t) ? unfinishedBlockers(t) : [];
    const key = JSON.stringify([t.title, t.type, t.priority, t.state, t.labels, t.ready, t.assignee,
      blockers, selectedId === t.id, t.lease ? t.lease.attempt : 0, costOf(t)]);
    const cached = cards.get(t.id);
    if (cached && cached.key === key) return cached.el;
    const el = buildCard(t, blockers);
    cards.set(t.id, { key, el });
    return el;
  }

  function priorityChip(p) {
    return h('span', { class: `prio prio-${p}`, title: `Priority ${p} (0 is highest)`, text: `P${p}` });
  }

  function typeChip(type) {
    return h('span', { class: `type type-${type}`, text: type });
  }

  function stateChip(state) {
    return h('span', { class: `state-chip st-${state}`, text: STATE_LABEL[state] || state });
  }

  function readyBadge(t, blockers) {
    if (t.ready) return h('span', { class: 'badge badge-ready', 'data-testid': 'badge-ready', text: 'ready' });
    if (isBlocked(t)) {
      const title = blockers.length ? 'Blocked by ' + blockers.join(', ') : 'Held by an ancestor';
      return h('span', { class: 'badge badge-blocked', 'data-testid': 'badge-blocked', title, text: 'blocked' });
    }
    return null;
  }

  // A task braid handed to a person (a conflict it will not retry, say).
  const NEEDS_HUMAN = 'needs-human';

  function needsHumanBadge(t) {
    if (!(t.labels || []).includes(NEEDS_HUMAN)) return null;
    return h('span', { class: 'badge badge-needs-human', 'data-testid': 'badge-needs-human',
      title: 'braid will not retry this by itself: a person must look (see its comments)', text: 'needs you' });
  }

  // What a card shows as its cost: a task's own attempts; an epic's, the sum
  // over everything under it (and its own, should it have any). Null: none.
  function costOf(t) {
    if (!cost) return null;
    const own = cost.tasks[t.id] || 0;
    const v = t.type === 'epic' ? (cost.epics[t.id] || 0) + own : own;
    return v > 0 ? v : null;
  }

  function costChip(t) {
    const v = costOf(t);
    if (v === null) return null;
    const epic = t.type === 'epic';
    return h('span', {
      class: 'cost-chip' + (epic ? ' cost-epic' : ''), 'data-testid': 'card-cost',
      title: epic ? 'What the agents on this epic\'s tasks cost, together' : 'What the agents on this task cost',
      text: usd(v),
    });
  }

  function buildCard(t, blockers) {
    const labels = (t.labels || []).slice(0, 4).map((l) => h('span', { class: 'label', text: l }));
    if ((t.labels || []).length > 4) labels.push(h('span', { class: 'label label-more', text: `+${t.labels.length - 4}` }));
    const el = h('article', {
      class: 'card' + (selectedId === t.id ? ' selected' : '') + (isBlocked(t) ? ' is-blocked' : ''),
      'data-testid': `card-${t.id}`,
      'data-id': t.id,
      tabindex: '0',
      role: 'button',
      'aria-label': `${t.id}: ${t.title}`,
    },
    h('div', { class: 'card-top' },
      h('span', { class: 'card-id', text: t.id }),
      typeChip(t.type),
      h('span', { class: 'grow' }),
      needsHumanBadge(t),
      priorityChip(t.priority)),
    h('div', { class: 'card-title', text: t.title }),
    h('div', { class: 'card-foot' },
      labels,
      h('span', { class: 'grow' }),
      t.assignee ? h('span', { class: 'assignee', title: 'Assignee', text: t.assignee }) : null,
      costChip(t),
      blockers.length ? h('span', { class: 'blockers', title: 'Blocked by ' + blockers.join(', '), text: '⊘ ' + blockers.length }) : null,
      readyBadge(t, blockers)));
    return el;
  }

  function renderEpicList() {
    const dl = $('#epic-ids');
    const epics = [...tasks.values()].filter((t) => t.type === 'epic' && !FINISHED.has(t.state));
    if (dl.children.length === epics.length && epics.every((t, i) => dl.children[i].value === t.id)) return;
    put(dl, ...epics.map((t) => h('option', { value: t.id, text: t.title })));
  }

  // ------------------------------------------------------- header and panels

  let lastInReview = null;
  function renderHealth() {
    if (!health) return;
    const set = (k, v) => {
      const el = document.querySelector(`[data-stat="${k}"] b`);
      if (el) el.textContent = String(v ?? 0);
    };
    set('total', health.total);
    set('ready', health.ready);
    set('blocked', health.blocked);
    set('epics', health.epics);
    set('in_progress', (health.by_state || {}).in_progress || 0);
    const inReview = (health.by_state || {}).review || 0;
    set('review', inReview);
    // Work moved into or out of review: the badge counts again.
    if (inReview !== lastInReview) { lastInReview = inReview; scheduleReviewBadge(); }
    document.querySelector('[data-stat="blocked"]').classList.toggle('hot', (health.blocked || 0) > 0);
  }

  function renderSeq() {
    $('[data-testid="seq"]').textContent = 'seq ' + lastSeq;
  }

  function renderReady(list) {
    const panel = $('[data-testid="ready"]');
    panel.querySelector('.count').textContent = String(list.length);
    panel.querySelector('.empty').hidden = list.length > 0;
    put(panel.querySelector('.ready-list'), ...list.map((t) =>
      h('li', { class: 'ready-item', 'data-testid': `ready-${t.id}`, 'data-id': t.id, tabindex: '0', role: 'button' },
        priorityChip(t.priority),
        h('span', { class: 'ready-id', text: t.id }),
        h('span', { class: 'ready-title', title: t.title, text: t.title }))));
  }

  // The project's spend and each budget against its limit.
  const BUDGET_TITLE = {
    task_usd: 'What one task may cost in all; the figure is the costliest task\'s',
    run_usd: 'What one run may spend; the figure is the running run\'s',
    day_usd: 'What every run together may spend in a UTC day; the figure is today\'s',
  };

  function renderCost() {
    const box = $('[data-testid="cost"]');
    if (!cost) { box.hidden = true; return; }
    box.hidden = cost.attempts === 0 && cost.budgets.length === 0;
    const total = $('[data-testid="cost-total"]');
    total.querySelector('b').textContent = usd(cost.total_usd);
    total.title = `What ${cost.attempts} agent attempt${cost.attempts === 1 ? '' : 's'} cost, as the agents reported it`;
    put($('[data-testid="budgets"]'), ...cost.budgets.map(budgetMeter));
  }

  function budgetMeter(b) {
    const frac = b.limit_usd > 0 ? b.spent_usd / b.limit_usd : 1;
    const fill = h('span', { class: 'bar-fill' });
    fill.style.width = `${(Math.min(1, Math.max(0, frac)) * 100).toFixed(1)}%`;
    const text = `${b.budget} ${usd(b.spent_usd)} / ${usd(b.limit_usd)}`;
    let title = BUDGET_TITLE[b.budget] || b.budget;
    if (b.task) title += ` (${b.task})`;
    if (frac >= 1) title += '. Spent: no attempt starts until it is raised in .braid/config.toml.';
    return h('span', {
      class: 'budget ' + (frac >= 1 ? 'budget-spent' : frac >= 0.8 ? 'budget-near' : 'budget-ok'),
      'data-testid': `budget-${b.budget}`, role: 'meter', 'aria-label': text, title,
      'aria-valuemin': '0', 'aria-valuemax': String(b.limit_usd), 'aria-valuenow': String(Math.min(b.spent_usd, b.limit_usd)),
    },
    h('span', { class: 'bar', 'aria-hidden': 'true' }, fill),
    h('span', { class: 'budget-text', text }));
  }

  // Needs you: the tasks braid handed to a person (label needs-human, as the
  // card badge says), each with what was asked and a box to answer it. An
  // item is built once per question, so a refresh keeps what is being typed.
  const REASON_LABEL = {
    question: 'question', denied: 'permission denied', budget: 'budget spent', escalation: 'escalated',
  };
  let needsList = []; // AttentionView[], newest first
  const needItems = new Map(); // task id -> { key, el, input }
  let needsGen = 0;

  function renderNeeds(list) {
    needsList = list;
    const panel = $('[data-testid="needs"]');
    panel.querySelector('.count').textContent = String(list.length);
    panel.dataset.count = String(list.length);
    panel.querySelector('.empty').hidden = list.length > 0;
    const ol = panel.querySelector('.needs-list');
    const active = document.activeElement;
    const keep = new Set();
    const els = list.map((n) => {
      keep.add(n.id);
      const key = JSON.stringify([n.title, n.state, n.question, n.reason, n.agent, n.at]);
      const cur = needItems.get(n.id);
      if (cur && cur.key === key) return cur.el;
      const item = buildNeed(n);
      if (cur) {
        // A new question on the same task: keep the draft.
        item.input.value = cur.input.value;
        if (active === cur.input) queueMicrotask(() => item.input.focus());
      }
      needItems.set(n.id, { key, ...item });
      return item.el;
    });
    for (const id of [...needItems.keys()]) if (!keep.has(id)) needItems.delete(id);
    const same = ol.children.length === els.length && els.every((el, i) => ol.children[i] === el);
    if (same) return;
    const sel = active && ol.contains(active) && 'selectionStart' in active ? [active.selectionStart, active.selectionEnd] : null;
    put(ol, ...els);
    // Moving a focused box blurs it: give the focus back.
    if (active && ol.contains(active) && document.activeElement !== active) {
      active.focus();
      if (sel) active.setSelectionRange(sel[0], sel[1]);
    }
  }

  function buildNeed(n) {
    const input = h('textarea', {
      name: 'answer', rows: 2, maxlength: '20000', 'data-testid': `need-answer-${n.id}`,
      placeholder: 'Your answer… (Ctrl+Enter sends)', 'aria-label': `Answer to ${n.id}`,
    });
    const send = h('button', { type: 'submit', class: 'primary', 'data-testid': `need-send-${n.id}`, text: 'Answer' });
    const error = h('p', { class: 'need-error', 'data-testid': `need-error-${n.id}`, role: 'alert', hidden: true });
    const form = h('form', { class: 'need-form', autocomplete: 'off' }, input, send);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      sendAnswer(n.id, input, send, error);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    const el = h('li', { class: 'need', 'data-testid': `need-${n.id}`, 'data-reason': n.reason },
      h('div', { class: 'need-head' },
        idLink(n.id),
        h('span', { class: 'need-reason reason-' + n.reason, 'data-testid': 'need-reason', title: `reason: ${n.reason}`, text: REASON_LABEL[n.reason] || n.reason }),
        n.agent ? h('span', { class: 'need-agent', 'data-testid': 'need-agent', title: 'The agent that asked', text: n.agent }) : null,
        h('span', { class: 'grow' }),
        n.at ? h('time', { class: 'need-at', datetime: n.at, title: n.at, text: fmtTime(n.at) }) : null),
      h('div', { class: 'need-title', title: n.title, text: n.title }),
      h('div', { class: 'need-question', 'data-testid': 'need-question', text: n.question }),
      form,
      error);
    return { el, input };
  }

  async function sendAnswer(id, input, send, error) {
    send.disabled = true;
    error.hidden = true;
    try {
      // The server trims and judges the text (an empty answer is its 400).
      const t = await api('POST', `/api/tasks/${enc(id)}/answer`, { text: input.value }, { quiet: true });
      putTask(t);
      // A list asked for before the answer would bring the item back.
      needsGen++;
      renderNeeds(needsList.filter((n) => n.id !== id));
      pending.health = true;
      schedule();
      toast(`Answered ${id}: it is ${STATE_LABEL[t.state] || t.state} again`, 'ok');
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      send.disabled = false;
    }
  }

  // Running agents: one entry per in-progress task, its newest log tailed.
  const runTails = new Map(); // task id -> { name, es, text, pre, live }
  // What each running agent did last (`activity` events), by task; shown
  // under its run until the attempt ends.
  const activity = new Map(); // task id -> { action, agent, attempt, at }
  const activityEls = new Map(); // task id -> its line in the runs panel

  function showActivity(id) {
    const el = activityEls.get(id);
    if (!el) return;
    const a = activity.get(id);
    el.hidden = !a;
    el.textContent = a ? clip(a.action, ACTIVITY_MAX) : '';
    el.title = a ? `${a.action}\n${[a.agent, a.attempt ? `attempt ${a.attempt}` : null, fmtTime(a.at)].filter(Boolean).join(' · ')}` : '';
  }

  function onActivity(ev) {
    const p = ev.payload || {};
    if (!ev.task || typeof p.action !== 'string') return;
    activity.set(ev.task, { action: p.action, agent: p.agent || null, attempt: p.attempt ?? null, at: ev.at });
    showActivity(ev.task);
  }

  // Whether an agent works an in-progress task: a log of the lease's
  // attempt says so, and so does a `dispatched` (or `activity`) event for
  // that attempt, which comes before the log does. A claim made by hand
  // (`braid claim ID --as kim`) has neither: it is listed as a claim.
  const runAgents = new Map(); // task id -> { attempt, agent }
  const runAsking = new Set(); // task ids whose events are being read
  const AGENT_KINDS = new Set(['dispatched', 'activity']);
  let lastRuns = [];

  function attemptLogs(t, logs) {
    if (!t.lease) return logs;
    const prefix = `${t.lease.attempt}-`;
    return logs.filter((l) => l.name.startsWith(prefix));
  }

  // 'agent', 'claim', or null while the task's events are read.
  function runKind(t, logs) {
    if (attemptLogs(t, logs).length) return 'agent';
    if (!t.lease) return 'claim';
    const k = runAgents.get(t.id);
    if (k && k.attempt === t.lease.attempt) return k.agent ? 'agent' : 'claim';
    askAgent(t.id, t.lease.attempt);
    return null;
  }

  function noteAgent(ev) {
    const p = ev.payload || {};
    if (ev.task && AGENT_KINDS.has(ev.kind) && typeof p.attempt === 'number') {
      runAgents.set(ev.task, { attempt: p.attempt, agent: true });
    }
  }

  // Two reads at a time: many claims at once stay clear of the rate limit.
  const askQueue = [];
  let askActive = 0;

  function askAgent(id, attempt) {
    if (runAsking.has(id)) return;
    runAsking.add(id);
    askQueue.push({ id, attempt });
    pumpAsks();
  }

  function pumpAsks() {
    while (askActive < 2 && askQueue.length) {
      const { id, attempt } = askQueue.shift();
      askActive++;
      readAgent(id, attempt).finally(() => {
        askActive--;
        runAsking.delete(id);
        pumpAsks();
      });
    }
  }

  async function readAgent(id, attempt) {
    let evs;
    try {
      evs = await api('GET', `/api/tasks/${enc(id)}/events?limit=100`, undefined, { quiet: true });
    } catch (_) {
      return; // unknown: asked again at the next render (after reconnecting)
    }
    const agent = evs.some((e) => AGENT_KINDS.has(e.kind) && e.payload && e.payload.attempt === attempt);
    // An event seen meanwhile knows better than this read.
    const k = runAgents.get(id);
    if (!(k && k.attempt === attempt && k.agent)) runAgents.set(id, { attempt, agent });
    if (lastRuns.some((r) => r.task.id === id)) renderRuns(lastRuns);
  }

  function renderRuns(runs) {
    lastRuns = runs;
    const panel = $('[data-testid="runs"]');
    const kinds = new Map(runs.map((r) => [r.task.id, runKind(r.task, r.logs || [])]));
    // Agents first, then work whose kind is being found out, then claims.
    const rank = (r) => ({ agent: 0, claim: 2 })[kinds.get(r.task.id)] ?? 1;
    runs = [...runs].sort((a, b) => rank(a) - rank(b));
    const agents = runs.filter((r) => kinds.get(r.task.id) === 'agent').length;
    panel.querySelector('.count').textContent = String(agents);
    panel.querySelector('.empty').hidden = runs.length > 0;
    const keep = new Set();
    let live = 0;
    const items = runs.map((r) => {
      const t = r.task;
      const cur = tasks.get(t.id);
      if (!cur || cur.updated_at <= t.updated_at) putTask(t);
      const kind = kinds.get(t.id);
      if (kind === 'claim') return buildClaim(t);
      const own = attemptLogs(t, r.logs || []);
      const newest = own.length ? own[own.length - 1] : null;
      let tail = runTails.get(t.id);
      if (newest) {
        keep.add(t.id);
        const wantLive = live < RUN_TAILS_LIVE && connected;
        if (wantLive) live++;
        if (!tail || tail.name !== newest.name || (wantLive && !tail.es)) {
          if (tail && tail.es) tail.es.close();
          tail = { name: newest.name, es: null, text: tail && tail.name === newest.name ? tail.text : '', pre: h('pre', { class: 'run-tail', 'data-testid': `run-tail-${t.id}` }) };
          runTails.set(t.id, tail);
          if (wantLive) startRunTail(t.id, tail);
          else loadStaticTail(t.id, tail);
        } else if (!wantLive && tail.es) {
          tail.es.close();
          tail.es = null;
        }
        showRunTail(tail);
      }
      const meta = [t.agent, t.assignee, t.lease ? `attempt ${t.lease.attempt}` : null].filter(Boolean).join(' · ');
      const act = h('div', { class: 'run-activity', 'data-testid': `run-activity-${t.id}`, hidden: true });
      activityEls.set(t.id, act);
      showActivity(t.id);
      return h('div', { class: 'run', 'data-testid': `run-${t.id}` },
        h('div', { class: 'run-head', 'data-id': t.id, role: 'button', tabindex: '0' },
          h('span', { class: 'pulse', 'aria-hidden': 'true' }),
          h('span', { class: 'run-id', text: t.id }),
          h('span', { class: 'run-title', title: t.title, text: t.title })),
        h('div', { class: 'run-meta' },
          h('span', { text: meta || 'no agent recorded' }),
          newest ? h('span', { class: 'run-log', text: newest.name + (tail && tail.es ? ' · live' : '') }) : null),
        act,
        newest ? tail.pre : h('pre', { class: 'run-tail muted', text: kind === 'agent' ? 'no log yet' : '…' }));
    });
    for (const id of [...runAgents.keys()]) {
      const t = tasks.get(id);
      if (!kinds.has(id) && (!t || t.state !== 'in_progress')) runAgents.delete(id);
    }
    for (const [id, tail] of runTails) {
      if (!keep.has(id)) {
        if (tail.es) tail.es.close();
        runTails.delete(id);
      }
    }
    const running = new Set(runs.map((r) => r.task.id));
    for (const id of [...activityEls.keys()]) if (!running.has(id)) activityEls.delete(id);
    // An activity may arrive before the run list shows its task: forget only
    // what belongs to tasks known to have stopped.
    for (const id of [...activity.keys()]) {
      const t = tasks.get(id);
      if (!running.has(id) && (!t || t.state !== 'in_progress')) activity.delete(id);
    }
    put(panel.querySelector('.run-list'), ...items);
  }

  // In-progress work with no agent on it: who claimed it, and no log tail.
  function buildClaim(t) {
    const who = t.assignee || 'someone';
    return h('div', { class: 'run run-claim', 'data-testid': `run-${t.id}` },
      h('div', { class: 'run-head', 'data-id': t.id, role: 'button', tabindex: '0' },
        h('span', { class: 'claim-mark', 'aria-hidden': 'true' }),
        h('span', { class: 'run-id', text: t.id }),
        h('span', { class: 'run-title', title: t.title, text: t.title })),
      h('div', { class: 'run-meta' },
        h('span', { 'data-testid': `run-claim-${t.id}`, text: `claimed by ${who} (no agent)` }),
        t.lease ? h('span', { class: 'run-log', title: `Until ${new Date(t.lease.expires_at).toLocaleString()}`, text: `attempt ${t.lease.attempt}` }) : null));
  }

  function showRunTail(tail) {
    const lines = tail.text.replace(/\s+$/, '').split('\n');
    tail.pre.textContent = lines.slice(-RUN_TAIL_LINES).join('\n') || '(empty)';
  }

  function startRunTail(id, tail) {
    const es = new EventSource(withToken(`/api/tasks/${enc(id)}/logs/${enc(tail.name)}/follow`));
    tail.es = es;
    let fresh = true;
    es.addEventListener('open', () => { fresh = true; });
    es.addEventListener('chunk', (e) => {
      let text;
      try { text = JSON.parse(e.data); } catch (_) { return; }
      // Each (re)connection starts with the file's tail again.
      tail.text = fresh ? String(text) : (tail.text + text);
      fresh = false;
      if (tail.text.length > 16384) tail.text = tail.text.slice(-8192);
      showRunTail(tail);
    });
  }

  async function loadStaticTail(id, tail) {
    try {
      tail.text = await api('GET', `/api/tasks/${enc(id)}/logs/${enc(tail.name)}?bytes=2048`, undefined, { quiet: true, text: true });
    } catch (e) {
      tail.text = `(${e.message})`;
    }
    showRunTail(tail);
  }

  function closeRunTails() {
    for (const tail of runTails.values()) {
      if (tail.es) { tail.es.close(); tail.es = null; }
    }
  }

  // ------------------------------------------------------------------ loading

  const BG = { background: true };

  async function refreshHealth(opts = BG) {
    health = await api('GET', '/api/health', undefined, { what: 'Loading health', ...opts });
    renderHealth();
    return health;
  }

  async function refreshReady(opts = BG) {
    renderReady(await api('GET', '/api/ready?limit=50', undefined, { what: 'Loading the ready queue', ...opts }));
  }

  async function refreshRuns(opts = BG) {
    renderRuns(await api('GET', '/api/runs', undefined, { what: 'Loading running agents', ...opts }));
  }

  async function refreshNeeds(opts = BG) {
    const gen = ++needsGen;
    const list = await api('GET', '/api/needs', undefined, { what: 'Loading what needs you', ...opts });
    if (gen === needsGen) renderNeeds(list);
  }

  let costGen = 0;
  let costAt = -Infinity;
  let costTimer = null;

  async function refreshCost(opts = BG) {
    const gen = ++costGen;
    costAt = performance.now();
    const c = await api('GET', '/api/cost', undefined, { what: 'Loading costs', ...opts });
    if (gen !== costGen) return;
    const before = cost;
    cost = c;
    // Redraw only the columns holding a card whose figure changed.
    const ids = new Set([...Object.keys(c.tasks), ...Object.keys(c.epics)]);
    if (before) for (const id of [...Object.keys(before.tasks), ...Object.keys(before.epics)]) ids.add(id);
    for (const id of ids) {
      if (before && before.tasks[id] === c.tasks[id] && before.epics[id] === c.epics[id]) continue;
      const t = tasks.get(id);
      if (t) markDirty(t.state);
    }
    renderCost();
  }

  // After agent_finished events: one /api/cost at most every COST_GAP ms.
  function scheduleCost() {
    if (costTimer !== null || !connected) return;
    costTimer = setTimeout(() => {
      costTimer = null;
      // Unreachable: the reconnect's full load asks again.
      refreshCost().catch(() => {});
    }, Math.max(0, costAt + COST_GAP - performance.now()));
  }

  async function reloadTasks(opts = BG) {
    const list = await api('GET', '/api/tasks?limit=10000', undefined, { what: 'Loading tasks', ...opts });
    const seen = new Set();
    for (const t of list) {
      seen.add(t.id);
      tasks.set(t.id, t);
    }
    for (const id of [...tasks.keys()]) if (!seen.has(id)) { tasks.delete(id); cards.delete(id); }
    tasksLoaded = true;
    markAllDirty();
    // Drawn now rather than at the next frame: the whole list is new, and
    // the first one is what a reader waits for.
    renderDirty();
  }

  // A full load in an order that cannot miss an event: the seq first, then
  // the data (events after that seq are replayed by the stream). The data
  // is loadData's, which may run while the stream opens.
  async function loadSeq() {
    return (await refreshHealth()).last_seq;
  }

  let loads = 0;
  async function loadData() {
    await Promise.all([reloadTasks(), refreshReady(), refreshRuns(), refreshNeeds(), refreshCost()]);
    // How many full loads this page has made (reconnect diagnostics).
    document.body.dataset.loads = String(++loads);
    if (selectedId) refreshDetail({ task: true, why: true, events: true, logs: true, graph: true, background: true });
    refreshReviewBadge();
    if (R) refreshReview();
  }

  // ------------------------------------------------------------ live updates

  const pending = { ids: new Set(), expand: new Set(), health: false, runs: false, needs: false, logsFor: new Set() };
  let flushTimer = null;
  let flushing = false;
  let lastFlushAt = -Infinity;
  let lastFullReload = -Infinity;

  function schedule() {
    // Nothing to fetch from a server that is away; the hello schedules.
    // Nor before a full load has landed: a task fetched for an event could
    // be overwritten by the older list. The load schedules when it ends.
    if (flushTimer !== null || flushing || !connected || loading) return;
    const wait = Math.max(0, lastFlushAt + COALESCE_MS - performance.now());
    flushTimer = setTimeout(flush, wait);
  }

  function hasPending() {
    return pending.ids.size > 0 || pending.health || pending.runs || pending.needs || pending.logsFor.size > 0;
  }

  function onEvent(ev) {
    if (typeof ev.seq === 'number' && ev.seq > lastSeq) lastSeq = ev.seq;
    renderSeq();
    // Progress reports, many per attempt: shown as they come, nothing to
    // fetch (unless they show an agent at work on what looked like a claim).
    if (ev.kind === 'activity') {
      const known = runAgents.get(ev.task);
      noteAgent(ev);
      onActivity(ev);
      if (known && !known.agent && lastRuns.some((r) => r.task.id === ev.task)) renderRuns(lastRuns);
      return;
    }
    if (ev.kind === 'sync_rejected') showSyncRejected(ev);
    if (ev.task && ACTIVITY_ENDS.has(ev.kind) && activity.delete(ev.task)) showActivity(ev.task);
    noteAgent(ev);
    const changed = ev.kind === 'updated' && ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    if (NEEDS_KINDS.has(ev.kind) || (ev.task && needItems.has(ev.task)) || changed.labels) pending.needs = true;
    // A task moved to another epic moves its cost with it.
    if (COST_KINDS.has(ev.kind) || changed.parent) scheduleCost();
    if (ev.task) {
      pending.ids.add(ev.task);
      if (GRAPH_KINDS.has(ev.kind)) pending.expand.add(ev.task);
      if (LOG_KINDS.has(ev.kind)) pending.logsFor.add(ev.task);
    }
    if (RUN_KINDS.has(ev.kind)) pending.runs = true;
    pending.health = true;
    reviewOnEvent(ev);
    schedule();
  }

  // Tasks whose readiness may follow from a change to `roots`: dependents and
  // descendants, found with an explicit queue (the graph may be deep).
  function expandAffected(roots) {
    if (roots.size === 0) return new Set();
    const dependents = new Map();
    const children = new Map();
    for (const t of tasks.values()) {
      for (const d of t.deps || []) {
        if (d.kind !== 'blocks') continue;
        if (!dependents.has(d.id)) dependents.set(d.id, []);
        dependents.get(d.id).push(t.id);
      }
      if (t.parent) {
        if (!children.has(t.parent)) children.set(t.parent, []);
        children.get(t.parent).push(t.id);
      }
    }
    const out = new Set();
    const queue = [];
    for (const r of roots) {
      for (const d of dependents.get(r) || []) queue.push(d);
      for (const c of children.get(r) || []) queue.push(c);
    }
    while (queue.length) {
      const id = queue.pop();
      if (out.has(id) || roots.has(id)) continue;
      out.add(id);
      // Holding passes down the hierarchy only.
      for (const c of children.get(id) || []) queue.push(c);
      if (out.size > 5000) break;
    }
    return out;
  }

  // Whether `root` is a strict ancestor of `id` (a loop up the parents,
  // bounded against a cycle).
  function underTask(id, root) {
    let cur = tasks.get(id);
    for (let i = 0; cur && cur.parent && i < 10000; i++) {
      if (cur.parent === root) return true;
      cur = tasks.get(cur.parent);
    }
    return false;
  }

  async function fetchTask(id) {
    try {
      const t = await api('GET', `/api/tasks/${enc(id)}`, undefined, { quiet: true });
      putTask(t);
      return t;
    } catch (e) {
      if (e.status === 404) { dropTask(id); return null; }
      if (e.status === 0) { pending.ids.add(id); return null; } // after reconnecting
      toast(`Loading task ${id}: ${e.message}`);
      return null;
    }
  }

  async function flush() {
    flushTimer = null;
    const now = performance.now();
    const direct = new Set(pending.ids);
    const extra = expandAffected(pending.expand);
    const all = new Set([...direct, ...extra]);
    const full = all.size > PER_TASK_MAX;
    if (full && now - lastFullReload < FULL_RELOAD_GAP) {
      // A burst: one reload of the list at most every FULL_RELOAD_GAP ms
      // instead of a request per task.
      for (const id of extra) pending.ids.add(id);
      pending.expand.clear();
      flushTimer = setTimeout(flush, FULL_RELOAD_GAP - (now - lastFullReload));
      return;
    }
    flushing = true;
    lastFlushAt = now;
    const wantHealth = pending.health;
    const logsFor = new Set(pending.logsFor);
    let wantRuns = pending.runs;
    const wantNeeds = pending.needs;
    pending.ids.clear();
    pending.expand.clear();
    pending.logsFor.clear();
    pending.health = false;
    pending.runs = false;
    pending.needs = false;
    try {
      const before = new Map();
      for (const id of direct) before.set(id, tasks.get(id));
      const jobs = [];
      // A failure to reach the server puts the work back for after the
      // reconnect; other errors were shown as toasts.
      const retry = (f) => (e) => { if (e && e.status === 0) f(); };
      if (full) {
        lastFullReload = now;
        jobs.push(reloadTasks().catch(retry(() => { for (const id of all) pending.ids.add(id); })));
      } else if (all.size) {
        jobs.push(pool([...all], 4, fetchTask));
      }
      if (wantHealth) {
        jobs.push(refreshHealth().catch(retry(() => { pending.health = true; })));
        jobs.push(refreshReady().catch(retry(() => { pending.health = true; })));
      }
      if (wantNeeds) jobs.push(refreshNeeds().catch(retry(() => { pending.needs = true; })));
      await Promise.all(jobs);
      // The list and the cards' needs-you badges both follow the label: a
      // task fetched with it but not listed (or listed without it) means
      // the list is behind (unless the list is full).
      const behind = needsList.length < NEEDS_LISTED && [...all].some((id) => {
        const t = tasks.get(id);
        return Boolean(t && (t.labels || []).includes(NEEDS_HUMAN)) !== needItems.has(id);
      });
      if (behind) await refreshNeeds().catch(retry(() => { pending.needs = true; }));
      for (const id of direct) {
        const was = before.get(id);
        const is = tasks.get(id);
        if ((was && was.state === 'in_progress') || (is && is.state === 'in_progress')) wantRuns = true;
      }
      if (wantRuns) await refreshRuns().catch(retry(() => { pending.runs = true; }));
      if (selectedId) {
        const d = tasks.get(selectedId);
        const touched = all.has(selectedId) ||
          (d && (d.deps || []).some((x) => all.has(x.id))) ||
          (d && d.parent && all.has(d.parent));
        const graphTouched = d && d.type === 'epic' &&
          [...all].some((id) => graphIds.has(id) || underTask(id, selectedId));
        if (touched || graphTouched || logsFor.has(selectedId)) {
          refreshDetail({
            task: false, why: touched, events: all.has(selectedId),
            logs: logsFor.has(selectedId), graph: graphTouched || all.has(selectedId), background: true,
          });
        }
      }
    } finally {
      flushing = false;
      if (hasPending()) schedule();
    }
  }

  // The error without its leading "FILE: " (the file is shown beside it).
  function noticeText(p) {
    const err = String(p.error || 'could not be applied');
    const prefix = (p.file || '') + ': ';
    return p.file && err.startsWith(prefix) ? err.slice(prefix.length) : err;
  }

  // Sync rejections: a task file that could not be applied. Kept visible
  // until dismissed.
  function showSyncRejected(ev) {
    const p = ev.payload || {};
    const box = $('.notices');
    const key = `${p.file || ''}\u0000${p.error || ''}`;
    for (const n of box.children) if (n.dataset.key === key) n.remove();
    const el = h('div', { class: 'notice', 'data-testid': 'notice', role: 'alert' },
      h('strong', { text: 'Task file rejected' }),
      h('code', { text: p.file || '(unknown file)' }),
      h('span', { class: 'notice-msg', text: noticeText(p) }),
      h('span', { class: 'notice-at', text: fmtTime(ev.at) }),
      h('button', { type: 'button', class: 'notice-x', 'aria-label': 'Dismiss', text: '×', onclick: () => el.remove() }));
    el.dataset.key = key;
    box.prepend(el);
    while (box.children.length > 5) box.lastElementChild.remove();
  }

  // ---------------------------------------------------------------- WebSocket

  let ws = null;
  let connected = false;
  // Until a connection has been live or an attempt has failed, the page is
  // connecting, not reconnecting.
  let firstAttemptOver = false;
  let backoff = BACKOFF_MIN;
  let reconnectTimer = null;
  let needReload = true;
  let loading = null; // the full load under way, if any

  function setConn(up) {
    connected = up;
    if (up) firstAttemptOver = true; // from now on, a drop is a reconnect
    const el = $('[data-testid="conn"]');
    const state = up ? 'up' : firstAttemptOver ? 'down' : 'connecting';
    el.textContent = { up: 'live', down: 'reconnecting', connecting: 'connecting' }[state];
    el.dataset.state = state;
  }

  function scheduleReconnect() {
    if (!firstAttemptOver) { firstAttemptOver = true; setConn(false); }
    if (reconnectTimer !== null) return;
    const wait = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    reconnectTimer = setTimeout(() => { reconnectTimer = null; connect(); }, wait);
  }

  // The data of a full load, fetched while the stream opens; events the
  // stream brings meanwhile wait in `pending` until the load has landed.
  function startLoad(sock) {
    const load = loadData();
    loading = load;
    load.then(() => {
      if (loading !== load) return;
      loading = null;
      needReload = false;
      schedule();
    }, () => {
      if (loading !== load) return;
      loading = null;
      // Could not load: start over through a fresh connection (a socket
      // that is gone has asked for one already).
      needReload = true;
      if (sock && ws === sock) sock.close();
    });
  }

  async function connect() {
    let reload = false;
    if (needReload) {
      try {
        lastSeq = await loadSeq();
        renderSeq();
        reload = true;
      } catch (_) {
        scheduleReconnect();
        return;
      }
    } else {
      // A browser hides why a WebSocket handshake failed; ask over HTTP
      // first, so a refusal (a missing token, say) is shown, and a server
      // that is still away costs no failed handshake.
      try {
        await refreshHealth();
      } catch (_) {
        scheduleReconnect();
        return;
      }
    }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = withToken(`${proto}//${location.host}/ws?after=${lastSeq}&rooms=project`);
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      toast('Could not open the live connection: ' + e.message);
      if (reload) startLoad(null);
      scheduleReconnect();
      return;
    }
    ws = sock;
    if (reload) startLoad(sock);
    sock.addEventListener('message', (m) => {
      if (ws !== sock) return;
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { return; }
      if (msg.type === 'hello') {
        setConn(true);
        backoff = BACKOFF_MIN;
        if (!msg.recovered) {
          // History does not reach back far enough: start over (the stream
          // already follows from this seq).
          lastSeq = msg.last_seq;
          renderSeq();
          pending.health = true;
          startLoad(sock);
        } else {
          pending.health = true;
          pending.runs = true;
          pending.needs = true;
          scheduleCost();
          if (selectedId) refreshDetail({ task: true, why: true, events: true, logs: true, graph: true, background: true });
          refreshReviewBadge();
          if (R) refreshReview();
          schedule();
        }
      } else if (msg.type === 'event') {
        onEvent(msg);
      } else if (msg.type === 'error') {
        toast('Live connection: ' + (msg.message || 'error'));
      }
    });
    sock.addEventListener('close', (e) => {
      if (ws !== sock) return;
      ws = null;
      setConn(false);
      document.body.dataset.closeCode = String(e.code); // diagnostics
      // Live log tails hold connections the server would wait for.
      closeRunTails();
      closeDetailLog();
      if (e.code === 4008) {
        // Fell behind: reload everything, then resume from the new seq.
        needReload = true;
        backoff = BACKOFF_MIN;
        connect();
        return;
      }
      scheduleReconnect();
    });
  }

  // ------------------------------------------------------------------- detail

  const detailEl = $('[data-testid="detail"]');
  let detailParts = null; // the panel's sections, built once per opened task
  let detailLog = null; // { name, es }
  let graphIds = new Set();
  let detailGen = 0;

  function closeDetailLog() {
    if (detailLog && detailLog.es) detailLog.es.close();
    if (detailLog) detailLog.es = null;
  }

  // The panel opens below the toolbar, so the create form stays usable.
  function placeDrawer() {
    const bottom = $('.toolbar').getBoundingClientRect().bottom;
    document.documentElement.style.setProperty('--drawer-top', `${Math.round(bottom)}px`);
  }
  window.addEventListener('resize', () => { if (selectedId) placeDrawer(); });

  function closeDetail() {
    hideDetail();
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  }

  // Closes the panel and leaves the address as it is.
  function hideDetail() {
    closeDetailLog();
    detailLog = null;
    const was = selectedId;
    selectedId = null;
    detailParts = null;
    graphIds = new Set();
    detailEl.hidden = true;
    document.body.classList.remove('has-detail');
    detailEl.replaceChildren();
    if (was && tasks.has(was)) markDirty(tasks.get(was).state);
  }

  function openDetail(id) {
    if (!id) return;
    const prev = selectedId;
    closeDetailLog();
    detailLog = null;
    graphIds = new Set();
    selectedId = id;
    detailGen++;
    if (prev && tasks.has(prev)) markDirty(tasks.get(prev).state);
    if (tasks.has(id)) markDirty(tasks.get(id).state);
    if (location.hash !== '#' + id) history.replaceState(null, '', '#' + id);
    buildDetail(id);
    placeDrawer();
    detailEl.hidden = false;
    document.body.classList.add('has-detail');
    refreshDetail({ task: true, why: true, events: true, logs: true, graph: true });
  }

  function section(title, testid, ...body) {
    return h('section', { class: 'd-section', 'data-testid': testid }, h('h3', { text: title }), ...body);
  }

  function buildDetail(id) {
    const head = h('div', { class: 'd-head' });
    const title = h('h2', { class: 'd-title' });
    const actions = h('div', { class: 'd-actions' });
    const failForm = h('form', { class: 'fail-form', hidden: true },
      h('input', { type: 'text', name: 'reason', 'data-testid': 'fail-reason', placeholder: 'Why did it fail?', required: true, maxlength: '2000' }),
      h('button', { type: 'submit', class: 'danger', 'data-testid': 'fail-confirm', text: 'Mark failed' }),
      h('button', { type: 'button', 'data-testid': 'fail-cancel', text: 'Keep', onclick: () => { failForm.hidden = true; } }));
    failForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const reason = failForm.elements.reason.value.trim();
      if (!reason) { toast('Fail needs a reason.'); return; }
      doAction(id, 'fail', reason).then((ok) => { if (ok) { failForm.hidden = true; failForm.reset(); } });
    });
    for (const a of ACTIONS) {
      actions.append(h('button', {
        type: 'button', class: a.action === 'fail' ? 'danger-outline' : (a.action === 'done' ? 'primary' : ''),
        'data-testid': `action-${a.action}`, 'data-to': a.to, text: a.label,
        onclick: () => {
          if (a.action === 'fail') {
            failForm.hidden = false;
            failForm.elements.reason.focus();
          } else {
            doAction(id, a.action);
          }
        },
      }));
    }
    actions.append(h('button', { type: 'button', 'data-testid': 'action-claim', 'data-to': 'in_progress', text: 'Claim', title: 'Take this task (starts it)', onclick: () => doClaim(id) }));
    // Shown for work in review, or once the task is known to have a branch.
    const reviewLink = h('a', {
      class: 'button-link', href: `#review/${id}`, 'data-testid': 'action-review', hidden: true,
      title: 'Read the branch\'s changes and approve them or ask for changes', text: 'Review',
    });
    actions.prepend(reviewLink);

    const why = h('div', { class: 'why', 'data-testid': 'why' });
    const fields = h('dl', { class: 'fields' });
    const desc = h('div', { class: 'desc' });
    const deps = h('ul', { class: 'deps', 'data-testid': 'deps' });
    const depForm = h('form', { class: 'dep-form', autocomplete: 'off' },
      h('input', { type: 'text', name: 'dep', 'data-testid': 'dep-input', placeholder: 'Depends on… (task id)', list: 'task-ids-' + detailGen, required: true }),
      h('select', { name: 'kind', 'data-testid': 'dep-kind', 'aria-label': 'Dependency kind' },
        h('option', { value: 'blocks', text: 'blocks' }),
        h('option', { value: 'related', text: 'related' }),
        h('option', { value: 'discovered-from', text: 'discovered-from' })),
      h('button', { type: 'submit', 'data-testid': 'dep-add', text: 'Add dependency' }));
    const idList = h('datalist', { id: 'task-ids-' + detailGen });
    depForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const other = depForm.elements.dep.value.trim();
      if (!other) return;
      addDep(id, other, depForm.elements.kind.value).then((ok) => { if (ok) depForm.elements.dep.value = ''; });
    });
    depForm.elements.dep.addEventListener('focus', () => {
      const opts = [...tasks.values()].filter((t) => t.id !== id && !FINISHED.has(t.state)).slice(0, 500)
        .map((t) => h('option', { value: t.id, text: t.title }));
      put(idList, ...opts);
    });
    const graph = h('div', { class: 'graph', 'data-testid': 'graph' });
    const graphSec = section('Dependency graph', 'graph-section', graph);
    graphSec.hidden = true;
    const logTabs = h('div', { class: 'log-tabs' });
    const logPre = h('pre', { class: 'log', 'data-testid': 'log' });
    const logNote = h('p', { class: 'muted small' });
    const events = h('ol', { class: 'events', 'data-testid': 'events' });
    const comments = h('ol', { class: 'comments', 'data-testid': 'comments' });
    const commentForm = h('form', { class: 'comment-form', autocomplete: 'off' },
      h('textarea', { name: 'text', rows: 2, 'data-testid': 'comment-input', placeholder: 'Add a comment…', required: true }),
      h('button', { type: 'submit', 'data-testid': 'comment-add', text: 'Comment' }));
    commentForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = commentForm.elements.text.value.trim();
      if (!text) return;
      addComment(id, text).then((ok) => { if (ok) commentForm.elements.text.value = ''; });
    });

    const body = h('div', { class: 'd-body' },
      title, actions, failForm, why,
      section('Fields', 'fields', fields),
      section('Description', 'description', desc),
      section('Dependencies', 'deps-section', deps, depForm, idList),
      graphSec,
      section('Comments', 'comments-section', comments, commentForm),
      section('Logs', 'logs', logTabs, logNote, logPre),
      section('Recent events', 'events-section', events));
    put(detailEl,
      h('div', { class: 'd-bar' }, head,
        h('button', { type: 'button', class: 'd-close', 'data-testid': 'detail-close', 'aria-label': 'Close', title: 'Close (Esc)', text: '×', onclick: closeDetail })),
      body);
    detailParts = { id, head, title, actions, reviewLink, hasBranch: false, why, fields, desc, deps, graph, graphSec, logTabs, logPre, logNote, events, comments, gen: detailGen };
    const t = tasks.get(id);
    if (t) renderDetailTask(t);
  }

  function idLink(id, extra) {
    const t = tasks.get(id);
    return h('button', {
      type: 'button', class: 'id-link' + (extra ? ' ' + extra : ''), 'data-id': id,
      title: t ? t.title : id, text: id,
    });
  }

  function renderDetailTask(t) {
    const p = detailParts;
    if (!p || p.id !== t.id) return;
    const badge = readyBadge(t, isBlocked(t) ? unfinishedBlockers(t) : []);
    put(p.head,
      h('span', { class: 'd-id', text: t.id }),
      typeChip(t.type), priorityChip(t.priority), stateChip(t.state),
      ...(badge ? [badge] : []));
    p.title.textContent = t.title;
    p.reviewLink.hidden = !(t.state === 'review' || t.branch || p.hasBranch);
    p.reviewLink.classList.toggle('primary', t.state === 'review');
    renderActions(t);
    const row = (k, v) => (v === null || v === undefined || v === '' || (Array.isArray(v) && !v.length)) ? [] :
      [h('dt', { text: k }), h('dd', {}, v)];
    const chips = (xs) => h('span', { class: 'chips' }, xs.map((x) => h('span', { class: 'label', text: x })));
    put(p.fields,
      ...row('State', STATE_LABEL[t.state] || t.state),
      ...row('Type', t.type),
      ...row('Priority', `P${t.priority}`),
      ...row('Parent', t.parent ? h('span', {}, idLink(t.parent), ' ', h('span', { class: 'muted', text: tasks.get(t.parent)?.title || '' })) : null),
      ...row('Labels', (t.labels || []).length ? chips(t.labels) : null),
      ...row('Assignee', t.assignee),
      ...row('Agent', t.agent),
      ...row('Branch', t.branch ? h('code', { text: t.branch }) : null),
      ...row('Gates', (t.gates || []).length ? chips(t.gates) : null),
      ...row('Lease', t.lease ? `attempt ${t.lease.attempt}, until ${new Date(t.lease.expires_at).toLocaleString()}` : null),
      ...row('Acceptance', t.acceptance ? h('span', { class: 'pre', text: t.acceptance }) : null),
      ...row('Created', h('time', { datetime: t.created_at, title: t.created_at, text: fmtTime(t.created_at) })),
      ...row('Updated', h('time', { datetime: t.updated_at, title: t.updated_at, text: fmtTime(t.updated_at) })),
      ...row('Closed', t.closed_at ? h('time', { datetime: t.closed_at, title: t.closed_at, text: fmtTime(t.closed_at) }) : null),
      ...row('Reason', t.close_reason));
    put(p.desc, t.description ? h('div', { class: 'pre', text: t.description }) : h('span', { class: 'muted', text: 'No description.' }));
    put(p.deps, ...(t.deps || []).map((d) => {
      const o = tasks.get(d.id);
      return h('li', { class: 'dep', 'data-testid': `dep-${d.id}` },
        idLink(d.id),
        h('span', { class: 'dep-kind', text: d.kind }),
        h('span', { class: 'dep-title', text: o ? o.title : '' }),
        o ? stateChip(o.state) : null,
        h('button', {
          type: 'button', class: 'icon-btn', 'data-testid': `dep-remove-${d.id}`, title: 'Remove this dependency', text: '×',
          onclick: () => removeDep(t.id, d.id),
        }));
    }));
    if (!(t.deps || []).length) p.deps.append(h('li', { class: 'muted', text: 'No dependencies.' }));
    p.graphSec.hidden = t.type !== 'epic';
  }

  // What a state change may do from here; Done and Claim also wait for a
  // blocked task's blockers (the server would finish it regardless, and
  // refuse the claim), with the reason on hover.
  function renderActions(t) {
    const p = detailParts;
    const allowed = ALLOWED_NEXT[t.state] || [];
    const blocked = blockedReason(t);
    for (const b of p.actions.querySelectorAll('button')) {
      const claim = b.dataset.testid === 'action-claim';
      let why = '';
      if (!allowed.includes(b.dataset.to) || (claim && t.type === 'epic')) why = `Not possible from ${STATE_LABEL[t.state] || t.state}`;
      else if (blocked && (claim || b.dataset.to === 'done')) why = blocked;
      b.disabled = why !== '';
      b.title = why;
      if (claim && !why) b.title = 'Take this task (starts it)';
    }
  }

  // Why a blocked task cannot be done yet, in words: its unfinished blockers
  // and their states, else the server's reasons (an ancestor that holds
  // it). Null when nothing blocks it.
  function blockedReason(t) {
    if (!isBlocked(t)) return null;
    const by = unfinishedBlockers(t);
    if (by.length) {
      return 'Blocked by ' + by.map((id) => {
        const o = tasks.get(id);
        return o ? `${id} (${o.state.replace(/_/g, ' ')})` : id;
      }).join(', ');
    }
    const w = detailParts && detailParts.id === t.id ? detailParts.whyView : null;
    if (w && !w.ready && (w.reasons || []).length) return 'Blocked: ' + w.reasons.join('; ');
    return 'Blocked: held by an ancestor';
  }

  function renderWhy(w) {
    const p = detailParts;
    if (!p || p.id !== w.id) return;
    p.whyView = w;
    const t = tasks.get(w.id);
    if (t) renderActions(t);
    if (w.ready) {
      p.why.className = 'why why-ready';
      put(p.why, h('strong', { text: 'Ready' }), h('span', { text: ' — nothing blocks it; it can be picked up.' }));
      return;
    }
    const reasons = w.reasons || [];
    const by = w.blocked_by || [];
    if (t && t.state !== 'open' && !by.length) {
      p.why.className = 'why why-info';
      put(p.why, h('span', { text: `Not in the ready queue: it is ${STATE_LABEL[t.state] || t.state}.` }));
      return;
    }
    if (t && t.type === 'epic' && !by.length && !reasons.length) {
      p.why.className = 'why why-info';
      put(p.why, h('span', { text: 'An epic is never picked up itself; its tasks are.' }));
      return;
    }
    p.why.className = 'why why-blocked';
    put(p.why,
      h('strong', { text: 'Not ready' }),
      reasons.length ? h('ul', { class: 'reasons' }, reasons.map((r) => h('li', { text: r }))) : null,
      by.length ? h('div', { class: 'blocked-by', 'data-testid': 'blocked-by' },
        h('span', { class: 'muted', text: 'Blocked by ' }),
        by.map((b) => h('span', { class: 'blocker', 'data-testid': `blocker-${b}` },
          idLink(b),
          tasks.get(b) ? h('span', { class: 'blocker-title', text: tasks.get(b).title }) : null,
          tasks.get(b) ? stateChip(tasks.get(b).state) : null))) : null);
  }

  function renderEvents(list) {
    const p = detailParts;
    if (!p) return;
    const items = [...list].reverse().map((e) => h('li', { class: 'ev' },
      h('span', { class: 'ev-kind', text: e.kind.replace(/_/g, ' ') }),
      h('span', { class: 'ev-payload', text: summarise(e.payload) }),
      h('span', { class: 'ev-meta', title: `#${e.seq} at ${e.at}`, text: `${e.actor} · ${fmtTime(e.at)}` })));
    put(p.events, ...items);
    if (!items.length) p.events.append(h('li', { class: 'muted', text: 'No events.' }));
  }

  function renderComments(list) {
    const p = detailParts;
    if (!p) return;
    const items = list.map((c) => h('li', { class: 'comment' },
      h('div', { class: 'comment-meta' },
        h('strong', { text: c.author }),
        h('span', { class: 'muted', title: `#${c.seq} at ${c.at}`, text: ' · ' + fmtTime(c.at) })),
      h('div', { class: 'comment-text', text: c.text })));
    put(p.comments, ...items);
    if (!items.length) p.comments.append(h('li', { class: 'muted', text: 'No comments.' }));
  }

  async function addComment(id, text) {
    try {
      await api('POST', `/api/tasks/${enc(id)}/comments`, { text }, { what: `Comment on ${id}` });
      if (selectedId === id) refreshDetail({ task: false, why: false, events: true, logs: false, graph: false });
      return true;
    } catch (_) {
      return false;
    }
  }

  function summarise(payload) {
    if (payload === null || payload === undefined) return '';
    if (typeof payload !== 'object') return clip(String(payload), 200);
    const parts = [];
    for (const [k, v] of Object.entries(payload)) {
      if (v === null || v === undefined) continue;
      // Millisecond timestamps (lease_expires and the like) read as times.
      const val = typeof v === 'object' ? JSON.stringify(v)
        : (typeof v === 'number' && v > 1e12 && v < 1e14) ? new Date(v).toLocaleString() : String(v);
      parts.push(`${k}: ${val}`);
    }
    return clip(parts.join(', '), 240);
  }

  function renderLogs(logs, err) {
    const p = detailParts;
    if (!p) return;
    if (err) {
      p.logTabs.replaceChildren();
      p.logNote.textContent = err;
      p.logPre.hidden = true;
      closeDetailLog();
      return;
    }
    if (!logs.length) {
      p.logTabs.replaceChildren();
      p.logNote.textContent = 'No logs yet.';
      p.logPre.hidden = true;
      closeDetailLog();
      return;
    }
    p.logNote.textContent = '';
    p.logPre.hidden = false;
    const names = logs.map((l) => l.name);
    let current = detailLog && names.includes(detailLog.name) ? detailLog.name : names[names.length - 1];
    put(p.logTabs, ...logs.map((l) => h('button', {
      type: 'button', class: 'log-tab' + (l.name === current ? ' on' : ''), 'data-name': l.name,
      title: `${l.size} bytes`, text: l.name,
      onclick: () => { followLog(p.id, l.name); for (const b of p.logTabs.children) b.classList.toggle('on', b.dataset.name === l.name); },
    })));
    if (!detailLog || detailLog.name !== current || !detailLog.es) followLog(p.id, current);
  }

  function followLog(id, name) {
    closeDetailLog();
    const p = detailParts;
    if (!p || p.id !== id) return;
    p.logPre.textContent = '';
    if (!connected) { detailLog = { name, es: null }; return; }
    const es = new EventSource(withToken(`/api/tasks/${enc(id)}/logs/${enc(name)}/follow`));
    detailLog = { name, es };
    let fresh = true;
    es.addEventListener('open', () => { fresh = true; });
    es.addEventListener('chunk', (e) => {
      if (!detailParts || detailParts.id !== id || !detailLog || detailLog.es !== es) return;
      let text;
      try { text = JSON.parse(e.data); } catch (_) { return; }
      const pre = detailParts.logPre;
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      let all = fresh ? String(text) : pre.textContent + text;
      fresh = false;
      if (all.length > DETAIL_LOG_MAX) all = all.slice(-DETAIL_LOG_MAX / 2);
      pre.textContent = all;
      if (stick) pre.scrollTop = pre.scrollHeight;
    });
  }

  async function refreshDetail(what) {
    const p = detailParts;
    if (!p) return;
    const id = p.id;
    const gen = p.gen;
    const alive = () => detailParts && detailParts.gen === gen;
    const bg = what.background ? BG : {};
    const jobs = [];
    if (what.task) {
      jobs.push(api('GET', `/api/tasks/${enc(id)}`, undefined, { what: `Loading ${id}`, ...bg })
        .then((t) => { putTask(t); if (alive()) renderDetailTask(t); })
        .catch((e) => { if (e.status === 404 && alive()) closeDetail(); }));
    } else if (tasks.has(id)) {
      renderDetailTask(tasks.get(id));
    }
    if (what.why) {
      jobs.push(api('GET', `/api/tasks/${enc(id)}/why`, undefined, { what: `Why ${id}`, ...bg })
        .then((w) => { if (alive()) renderWhy(w); }).catch(() => {}));
    }
    if (what.events) {
      jobs.push(api('GET', `/api/tasks/${enc(id)}/events?limit=30`, undefined, { what: `Events of ${id}`, ...bg })
        .then((l) => { if (alive()) renderEvents(l); }).catch(() => {}));
      jobs.push(api('GET', `/api/tasks/${enc(id)}/comments?limit=100`, undefined, { what: `Comments of ${id}`, ...bg })
        .then((l) => { if (alive()) renderComments(l); }).catch(() => {}));
    }
    if (what.logs) {
      jobs.push(api('GET', `/api/tasks/${enc(id)}/logs`, undefined, { quiet: true })
        .then((l) => { if (alive()) renderLogs(l); })
        .catch((e) => { if (alive()) renderLogs([], e.status === 404 ? e.message : `Could not list logs: ${e.message}`); }));
    }
    await Promise.all(jobs);
    const t = tasks.get(id);
    // Work that went through an agent may have a branch to review: ask.
    if (what.task && alive() && t && t.state !== 'review' && !t.branch && !p.hasBranch && !reviewUnavailable &&
        (t.assignee || t.agent) && t.type !== 'epic') {
      api('GET', `/api/tasks/${enc(id)}/diff?stat=true`, undefined, { quiet: true })
        .then(() => { if (alive()) { p.hasBranch = true; renderDetailTask(tasks.get(id) || t); } })
        .catch(() => {});
    }
    if (what.graph && alive() && t && t.type === 'epic') {
      try {
        const g = await api('GET', `/api/tasks/${enc(id)}/graph`, undefined, { what: `Graph of ${id}`, ...bg });
        if (alive()) renderGraph(g);
      } catch (_) { /* shown */ }
    }
  }

  // ----------------------------------------------------------------- actions

  async function doAction(id, action, reason) {
    const body = reason ? { reason } : {};
    try {
      const t = await api('POST', `/api/tasks/${enc(id)}/${action}`, body, { what: `${action} ${id}` });
      putTask(t);
      if (selectedId === id) refreshDetail({ task: false, why: true, events: true, logs: false, graph: false });
      return true;
    } catch (_) {
      return false;
    }
  }

  async function doClaim(id) {
    try {
      const t = await api('POST', `/api/tasks/${enc(id)}/claim`, {}, { what: `Claim ${id}` });
      putTask(t);
      toast(`Claimed ${id}`, 'ok');
    } catch (_) { /* shown */ }
  }

  async function addDep(id, other, kind) {
    try {
      const t = await api('POST', `/api/tasks/${enc(id)}/deps`, { id: other, kind }, { what: 'Adding the dependency' });
      putTask(t);
      if (selectedId === id) {
        renderDetailTask(t);
        refreshDetail({ task: false, why: true, events: true, logs: false, graph: t.type === 'epic' });
      }
      return true;
    } catch (_) {
      return false;
    }
  }

  async function removeDep(id, other) {
    try {
      const t = await api('DELETE', `/api/tasks/${enc(id)}/deps?on=${enc(other)}`, undefined, { what: 'Removing the dependency' });
      putTask(t);
      if (selectedId === id) {
        renderDetailTask(t);
        refreshDetail({ task: false, why: true, events: true, logs: false, graph: t.type === 'epic' });
      }
    } catch (_) { /* shown */ }
  }

  // ------------------------------------------------------------------- graph

  const NODE_W = 150;
  const NODE_H = 30;
  const GAP_X = 36;
  const GAP_Y = 10;
  const PER_COLUMN = 30;

  // Levels by `blocks` edges (a task sits right of everything it waits on),
  // computed with Kahn's algorithm: no recursion, any size. Nodes left over
  // by a cycle go to one last level.
  function layoutGraph(g) {
    const nodes = new Map();
    for (const n of g.nodes) nodes.set(n.id, { ...n, external: false });
    const edges = [];
    for (const e of g.edges) {
      for (const end of [e.to, e.from]) {
        if (!nodes.has(end)) {
          const t = tasks.get(end);
          nodes.set(end, {
            id: end, title: t ? t.title : '(outside this epic)', type: t ? t.type : 'task',
            state: t ? t.state : 'open', parent: t ? t.parent : null, ready: t ? t.ready : false, external: true,
          });
        }
      }
      edges.push(e);
    }
    // The epic itself is the frame, not a node, unless an edge touches it.
    if (nodes.has(g.root) && !edges.some((e) => e.from === g.root || e.to === g.root) && nodes.size > 1) {
      nodes.delete(g.root);
    }
    const indeg = new Map();
    const out = new Map();
    for (const id of nodes.keys()) { indeg.set(id, 0); out.set(id, []); }
    for (const e of edges) {
      if (e.kind !== 'blocks' || !nodes.has(e.from) || !nodes.has(e.to) || e.from === e.to) continue;
      indeg.set(e.from, indeg.get(e.from) + 1);
      out.get(e.to).push(e.from);
    }
    const level = new Map();
    const queue = [];
    for (const [id, d] of indeg) if (d === 0) { queue.push(id); level.set(id, 0); }
    for (let qi = 0; qi < queue.length; qi++) {
      const id = queue[qi];
      const l = level.get(id);
      for (const f of out.get(id)) {
        if ((level.get(f) ?? -1) < l + 1) level.set(f, l + 1);
        const d = indeg.get(f) - 1;
        indeg.set(f, d);
        if (d === 0) queue.push(f);
      }
    }
    let maxLevel = 0;
    for (const l of level.values()) maxLevel = Math.max(maxLevel, l);
    let cyclic = 0;
    for (const id of nodes.keys()) {
      if (indeg.get(id) > 0) { level.set(id, maxLevel + 1); cyclic++; }
    }
    if (cyclic) maxLevel++;
    const byLevel = Array.from({ length: maxLevel + 1 }, () => []);
    for (const [id, l] of level) byLevel[l].push(nodes.get(id));
    // Order within a level: by the mean row of what each node waits on
    // (fewer crossings), then by state and id.
    const row = new Map();
    const depsOf = new Map();
    for (const e of edges) {
      if (e.kind !== 'blocks') continue;
      if (!depsOf.has(e.from)) depsOf.set(e.from, []);
      depsOf.get(e.from).push(e.to);
    }
    const stateRank = (st) => STATES.indexOf(st);
    byLevel.forEach((list, l) => {
      const bary = new Map();
      for (const n of list) {
        const ds = (depsOf.get(n.id) || []).filter((d) => row.has(d));
        bary.set(n.id, ds.length ? ds.reduce((a, d) => a + row.get(d), 0) / ds.length : (l === 0 ? 0 : Infinity));
      }
      list.sort((a, b) => (bary.get(a.id) - bary.get(b.id)) || (Number(a.external) - Number(b.external)) * -1 ||
        (stateRank(a.state) - stateRank(b.state)) || (a.id < b.id ? -1 : 1));
      list.forEach((n, i) => row.set(n.id, i));
    });
    // Coordinates: levels are columns; a long level wraps into sub-columns.
    const pos = new Map();
    let x = 0;
    let height = 0;
    for (const list of byLevel) {
      const cols = Math.max(1, Math.ceil(list.length / PER_COLUMN));
      const perCol = Math.ceil(list.length / cols) || 1;
      list.forEach((n, i) => {
        const c = Math.floor(i / perCol);
        const r = i % perCol;
        pos.set(n.id, { x: x + c * (NODE_W + 14), y: r * (NODE_H + GAP_Y) });
        height = Math.max(height, (r + 1) * (NODE_H + GAP_Y));
      });
      x += cols * (NODE_W + 14) - 14 + GAP_X;
    }
    return { nodes, edges, pos, width: Math.max(x - GAP_X, NODE_W), height: Math.max(height - GAP_Y, NODE_H), levels: byLevel.length };
  }

  const STATE_COLOR = {
    open: 'var(--st-open)', in_progress: 'var(--st-in_progress)', review: 'var(--st-review)', done: 'var(--st-done)',
    failed: 'var(--st-failed)', deferred: 'var(--st-deferred)', cancelled: 'var(--st-cancelled)',
  };

  function renderGraph(g) {
    const p = detailParts;
    if (!p) return;
    const L = layoutGraph(g);
    graphIds = new Set(L.nodes.keys());
    if (L.nodes.size === 0) {
      put(p.graph, h('p', { class: 'muted', text: 'This epic has no tasks yet.' }));
      return;
    }
    const padX = 28; // the left margin holds arcs between nodes of one level
    const pad = 12;
    const W = L.width + padX + pad;
    const H = L.height + pad * 2;
    const svg = s('svg', {
      class: 'graph-svg', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
      'aria-label': `Dependency graph: ${L.nodes.size} tasks in ${L.levels} levels`,
    });
    svg.append(s('defs', {},
      s('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: '7', refY: '4', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrow-head' }))));
    const edgeLayer = s('g', { class: 'edges' });
    const nodeLayer = s('g', { class: 'nodes' });
    for (const e of L.edges) {
      const a = L.pos.get(e.to);
      const b = L.pos.get(e.from);
      if (!a || !b) continue;
      const x1 = a.x + padX + NODE_W;
      const y1 = a.y + pad + NODE_H / 2;
      const x2 = b.x + padX;
      const y2 = b.y + pad + NODE_H / 2;
      let d;
      if (x2 > x1) {
        const dx = Math.max(20, (x2 - x1) / 2);
        d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      } else {
        // Same level (related edges) or a cycle: an arc in the left margin.
        const ax = a.x + padX;
        const bend = Math.min(padX - 4, 16 + Math.abs(y2 - y1) / 12);
        d = `M${ax},${y1} C${ax - bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
      }
      edgeLayer.append(s('path', { d, class: `edge edge-${e.kind}`, 'marker-end': 'url(#arrow)' },
        s('title', { text: `${e.from} depends on ${e.to} (${e.kind})` })));
    }
    for (const n of L.nodes.values()) {
      const q = L.pos.get(n.id);
      if (!q) continue;
      const color = STATE_COLOR[n.state] || 'var(--muted)';
      const blocked = n.state === 'open' && n.type !== 'epic' && !n.ready;
      const gNode = s('g', {
        class: 'node' + (n.external ? ' external' : '') + (blocked ? ' blocked' : ''), 'data-id': n.id,
        'data-testid': `gnode-${n.id}`, transform: `translate(${q.x + padX},${q.y + pad})`, tabindex: '0', role: 'button',
      },
      s('title', { text: `${n.id} · ${STATE_LABEL[n.state] || n.state}${n.ready ? ' · ready' : blocked ? ' · blocked' : ''}${n.external ? ' · outside this epic' : ''}\n${n.title}` }),
      s('rect', { class: 'node-box', width: NODE_W, height: NODE_H, rx: '5', style: `--c:${color}` }),
      s('rect', { class: 'node-stripe', width: '4', height: NODE_H, rx: '2', style: `fill:${color}` }),
      s('text', { class: 'node-id', x: '10', y: '12', text: n.id + (n.ready ? ' · ready' : '') }),
      s('text', { class: 'node-title', x: '10', y: '24', text: clip(n.title, 22) }));
      nodeLayer.append(gNode);
    }
    svg.append(edgeLayer, nodeLayer);
    const legend = h('div', { class: 'legend' },
      STATES.map((st) => h('span', { class: 'legend-item' }, h('i', { style: `background:${STATE_COLOR[st]}` }), STATE_LABEL[st])),
      g.truncated ? h('span', { class: 'warn', text: 'Truncated: the epic has more tasks than shown.' }) : null);
    put(p.graph, legend, h('div', { class: 'graph-scroll' }, svg));
  }

  // ------------------------------------------------------------------ review

  // The review page (#review/ID): a branch's diff, drawn by diff2html (loaded
  // on first use) a page at a time as the reader scrolls; line comments
  // gathered in a pending list and sent with "Request changes"; beside it the
  // decisions, every line comment, the gates, the attempts and the merge
  // plan. The diff's text is escaped by diff2html; everything else the API
  // says reaches the page through textContent.

  const VIEW_KEY = 'braid.review.view';
  const PENDING_KEY = 'braid.review.pending.';
  const VIEWS = { unified: 'line-by-line', split: 'side-by-side' };
  // Events after which the open review reads its task again.
  const REVIEW_OWN_KINDS = new Set(['approved', 'changes_requested', 'state_changed', 'commented', 'updated',
    'dispatched', 'agent_finished', 'gate_finished', 'imported', 'restored']);
  // Another task's state change can change the merge plan (its batch, its
  // conflicts): read again, at most once per REVIEW_OTHERS_GAP ms.
  const REVIEW_OTHERS_GAP = 1500;
  // Start the next page when the end of the diff is this close (px).
  const MORE_MARGIN = 1600;
  // Yield to the browser after drawing this many diff lines in one go.
  const DRAW_SLICE = 2000;
  const GATE_LOG_BYTES = 64 * 1024;

  let R = null; // the open review, or null
  let reviewGen = 0;
  // Each reading of a diff from its first page: what an older one was
  // still doing (a page, a large file) is dropped when it comes back.
  let diffSeq = 0;

  let vendorReady = null;
  // diff2html's script and styles: asked for once, when a review first opens.
  function loadVendor() {
    if (vendorReady) return vendorReady;
    const load = (el, what) => new Promise((res, rej) => {
      el.addEventListener('load', res, { once: true });
      el.addEventListener('error', () => rej(new Error(`could not load ${what}`)), { once: true });
      document.head.append(el);
    });
    vendorReady = Promise.all([
      load(h('link', { rel: 'stylesheet', href: '/vendor/diff2html.css' }), 'the diff styles'),
      load(h('link', { rel: 'stylesheet', href: '/vendor/highlight.css' }), 'the highlighting styles'),
      load(h('script', { src: '/vendor/diff2html.js' }), 'the diff renderer'),
    ]).then(() => {
      if (typeof window.Diff2HtmlUI !== 'function') throw new Error('the diff renderer did not start');
    }).catch((e) => { vendorReady = null; throw e; });
    return vendorReady;
  }

  const reviewEl = $('[data-testid="review"]');

  function short(sha) {
    return sha ? String(sha).slice(0, 10) : '';
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : (many || one + 's')}`;
  }

  function fmtMs(ms) {
    const v = Number(ms) || 0;
    if (v < 1000) return `${v} ms`;
    if (v < 60000) return `${(v / 1000).toFixed(1)} s`;
    return `${Math.floor(v / 60000)} min ${Math.round((v % 60000) / 1000)} s`;
  }

  function loadPending(id) {
    try {
      const v = JSON.parse(sessionStorage.getItem(PENDING_KEY + id) || '[]');
      return Array.isArray(v) ? v.filter((c) => c && typeof c.file === 'string' && c.line > 0 && typeof c.text === 'string') : [];
    } catch (_) { return []; }
  }

  function savePending() {
    if (!R) return;
    try {
      if (R.pending.length) sessionStorage.setItem(PENDING_KEY + R.id, JSON.stringify(R.pending));
      else sessionStorage.removeItem(PENDING_KEY + R.id);
    } catch (_) { /* storage off: the list lives as long as the page */ }
  }

  function savedView() {
    try { return localStorage.getItem(VIEW_KEY) === 'split' ? 'split' : 'unified'; } catch (_) { return 'unified'; }
  }

  function openReview(id) {
    if (R && R.id === id) return;
    closeReview(true);
    const gen = ++reviewGen;
    R = {
      id, gen, t0: performance.now(),
      view: savedView(),
      data: null, // the last ReviewView
      head: null, // the commit the drawn diff shows
      files: [], // DiffFileView[] of the drawn diff
      blocks: new Map(), // file index -> block
      loadedTo: 0, // files [0, loadedTo) have their blocks
      next: null, // the next page's first file, or null: all asked for
      loading: null, // the page request in flight
      diffState: 'loading',
      diffGen: 0,
      comments: [],
      pending: loadPending(id),
      form: null, // { file, line, draft }
      io: null,
      ro: null,
      spacers: new WeakMap(),
      refreshing: false,
      again: false,
      othersTimer: null,
      othersAt: -Infinity,
      logName: null,
    };
    delete reviewEl.dataset.renderMs;
    document.body.classList.add('reviewing');
    closeReviewList();
    buildReview();
    reviewEl.hidden = false;
    const t = tasks.get(id);
    if (t) renderReviewTask(t);
    refreshReview();
    startDiff();
  }

  // `quiet`: another review takes its place at once (the page stays a
  // review page).
  function closeReview(quiet) {
    if (!R) return;
    if (R.io) R.io.disconnect();
    if (R.ro) R.ro.disconnect();
    clearTimeout(R.othersTimer);
    R = null;
    reviewGen++;
    reviewEl.replaceChildren();
    if (quiet) return;
    reviewEl.hidden = true;
    document.body.classList.remove('reviewing');
  }

  function reviewAlive(gen) {
    return R !== null && R.gen === gen;
  }

  function diffAlive(dg) {
    return R !== null && R.diffGen === dg;
  }

  function rsec(title, testid, ...body) {
    return h('section', { class: 'rv-sec', 'data-testid': testid }, h('h3', { text: title }), ...body);
  }

  function buildReview() {
    const E = {};
    E.id = h('span', { class: 'd-id', 'data-testid': 'review-id', text: R.id });
    E.state = h('span', { class: 'state-chip', 'data-testid': 'review-state' });
    E.title = h('h1', { class: 'rv-title', 'data-testid': 'review-title', text: '' });
    E.approved = h('span', { class: 'rv-approved', 'data-testid': 'review-approved', hidden: true, text: 'Approved' });
    E.summary = h('div', { class: 'rv-summary', 'data-testid': 'review-summary' });
    E.notice = h('p', { class: 'rv-notice', role: 'status', hidden: true });
    E.unified = h('button', { type: 'button', 'data-testid': 'review-view-unified', text: 'Unified', onclick: () => setView('unified') });
    E.split = h('button', { type: 'button', 'data-testid': 'review-view-split', text: 'Side by side', onclick: () => setView('split') });
    E.fileCount = h('span', { class: 'muted small', 'data-testid': 'review-file-count' });
    E.files = h('ol', { class: 'rv-files', 'data-testid': 'review-files' });
    E.diff = h('div', { class: 'rv-diff', 'data-testid': 'review-diff', 'data-state': 'loading' });
    E.more = h('div', { class: 'rv-more', 'data-testid': 'review-more', text: 'Loading the diff…' });
    E.main = h('section', { class: 'rv-main', 'aria-label': 'Changes' },
      E.summary, E.notice,
      h('div', { class: 'rv-tools' },
        h('div', { class: 'seg', role: 'group', 'aria-label': 'Diff layout' }, E.unified, E.split),
        h('span', { class: 'grow' }), E.fileCount),
      E.files, E.diff, E.more);

    // The decision.
    E.pendingList = h('ol', { class: 'rv-pending', 'data-testid': 'review-pending' });
    E.pendingHint = h('p', { class: 'muted small', text: 'Click a line number on the new side of the diff to comment on that line.' });
    E.message = h('textarea', {
      rows: 3, maxlength: '20000', 'data-testid': 'review-message', 'aria-label': 'Message to the agent',
      placeholder: 'What to change (needed to request changes; optional with an approval)',
    });
    E.approve = h('button', { type: 'button', class: 'ok', 'data-testid': 'review-approve', text: 'Approve', onclick: () => decide('approve') });
    E.reject = h('button', { type: 'button', class: 'danger', 'data-testid': 'review-reject', text: 'Request changes', onclick: () => decide('reject') });
    E.error = h('p', { class: 'rv-error', 'data-testid': 'review-error', role: 'alert', hidden: true });
    // An old refusal goes once the reader changes what was refused.
    E.message.addEventListener('input', () => showReviewError(''));
    E.decideNote = h('p', { class: 'rv-decide-note muted small', 'data-testid': 'review-decide-note' });
    E.decisions = h('ol', { class: 'rv-decisions', 'data-testid': 'review-decisions' });
    E.comments = h('ol', { class: 'rv-comments', 'data-testid': 'review-comments' });
    E.gates = h('ol', { class: 'rv-gates', 'data-testid': 'review-gates' });
    E.logTitle = h('div', { class: 'rv-log-title muted small', hidden: true });
    E.log = h('pre', { class: 'log rv-log', 'data-testid': 'review-log', hidden: true });
    E.attempts = h('ol', { class: 'rv-attempts', 'data-testid': 'review-attempts' });
    E.merge = h('div', { class: 'rv-merge', 'data-testid': 'review-merge' });
    E.commentsTitle = h('h3', { text: 'Line comments' });
    E.side = h('aside', { class: 'rv-side', 'aria-label': 'Decision and history' },
      h('section', { class: 'rv-sec rv-decide', 'data-testid': 'review-decide' },
        h('h3', { text: 'Your review' }),
        E.pendingList, E.pendingHint, E.message,
        h('div', { class: 'rv-buttons' }, E.reject, E.approve),
        E.error, E.decideNote),
      rsec('Decisions', 'review-decisions-section', E.decisions),
      h('section', { class: 'rv-sec', 'data-testid': 'review-comments-section' }, E.commentsTitle, E.comments),
      rsec('Gates', 'review-gates-section', E.gates, E.logTitle, E.log),
      rsec('Attempts', 'review-attempts-section', E.attempts),
      rsec('Merge plan', 'review-merge-section', E.merge));

    put(reviewEl,
      h('div', { class: 'rv-bar' },
        h('a', { class: 'rv-back', href: '#', 'data-testid': 'review-back', title: 'Back to the board (Esc)', text: '← Board' }),
        E.id, E.state, E.title, h('span', { class: 'grow' }), E.approved),
      h('div', { class: 'rv-cols' }, E.main, E.side));
    R.els = E;
    R.ro = new ResizeObserver((entries) => {
      for (const en of entries) {
        const spacer = R && R.spacers.get(en.target);
        if (spacer) spacer.firstElementChild.style.height = `${en.target.getBoundingClientRect().height}px`;
      }
    });
    E.diff.addEventListener('click', onDiffClick);
    renderView();
    renderPending();
  }

  // ---- the task, the decision and the history

  async function refreshReview() {
    if (!R) return;
    if (R.refreshing) { R.again = true; return; }
    const { id, gen } = R;
    R.refreshing = true;
    try {
      const v = await api('GET', `/api/tasks/${enc(id)}/review`, undefined, { quiet: true });
      if (!reviewAlive(gen)) return;
      R.data = v;
      putTask(v.task);
      renderReviewTask(v.task);
      renderReviewData(v);
      R.comments = v.comments || [];
      // The branch moved on: what is drawn is out of date.
      if (R.head && v.diff && v.diff.head !== R.head && R.diffState !== 'loading') {
        noticeReview(`The branch moved on to ${short(v.diff.head)}: the diff was read again.`);
        startDiff();
      } else {
        for (const b of R.blocks.values()) if (b.drawn) placeNotes(b);
      }
    } catch (e) {
      if (!reviewAlive(gen)) return;
      if (e.status === 404) {
        // No branch (or no task): say so; show the task if there is one.
        noticeReview(e.message);
        R.els.decideNote.textContent = 'Nothing to decide: there is no branch to review.';
        R.els.approve.disabled = true;
        R.els.reject.disabled = true;
        const t = await fetchTask(id);
        if (t && reviewAlive(gen)) renderReviewTask(t);
      } else if (e.status !== 0) {
        noticeReview(`Could not read the review: ${e.message}`);
      }
    } finally {
      if (reviewAlive(gen)) {
        R.refreshing = false;
        if (R.again) { R.again = false; refreshReview(); }
      }
    }
  }

  function noticeReview(text) {
    if (!R) return;
    R.els.notice.textContent = text;
    R.els.notice.hidden = !text;
  }

  function renderReviewTask(t) {
    if (!R || t.id !== R.id) return;
    const E = R.els;
    E.state.className = `state-chip st-${t.state}`;
    E.state.textContent = STATE_LABEL[t.state] || t.state;
    E.title.textContent = t.title;
    document.title = `Review ${t.id} · braid`;
  }

  function renderReviewData(v) {
    const E = R.els;
    const inReview = v.task.state === 'review';
    const d = v.diff;
    E.approved.hidden = !v.approved;
    E.approved.title = v.approved ? `Approved as the branch stands (${short(d.head)})` : '';
    put(E.summary,
      h('code', { class: 'rv-branch', title: 'The task\'s branch', text: d.branch }),
      h('span', { class: 'muted', title: `${d.base} → ${d.head}`, text: ` ${short(d.base)} → ${short(d.head)}` }),
      h('span', { class: 'rv-sum-files', text: ` · ${plural(d.files.length, 'file')} changed ` }),
      h('span', { class: 'add', text: `+${d.added}` }), ' ',
      h('span', { class: 'del', text: `−${d.removed}` }),
      v.require_approval ? h('span', { class: 'rv-req', title: '[merge] require_approval: nothing lands without an approval', text: 'approval required to land' }) : null);
    // The decision box.
    E.approve.disabled = !inReview;
    E.reject.disabled = !inReview;
    const why = inReview ? null : `Not in review (it is ${STATE_LABEL[v.task.state] || v.task.state}): decisions are made on finished work waiting to land.`;
    E.approve.title = why || 'Approve the branch as it stands';
    E.reject.title = why || 'Send the work back with your message and the pending line comments';
    E.decideNote.textContent = why || (v.approved ? `You approved it at ${short(d.head)}; it lands with the next merge run.` : '');
    // Decisions, newest first.
    const decisions = [...(v.decisions || [])].reverse();
    put(E.decisions, decisions.map((x) => h('li', { class: 'rv-decision', 'data-kind': x.kind },
      h('div', { class: 'rv-meta' },
        h('span', { class: 'rv-kind', text: x.kind === 'approved' ? 'Approved' : x.kind === 'changes_requested' ? 'Changes requested' : x.kind }),
        h('span', { class: 'muted', text: ` by ${x.by}` }),
        h('span', { class: 'grow' }),
        h('time', { class: 'muted', datetime: x.at, title: `#${x.seq} at ${x.at}`, text: fmtTime(x.at) })),
      x.message ? h('div', { class: 'pre rv-text', text: x.message }) : null,
      h('div', { class: 'muted small' },
        h('span', { title: x.head, text: `on ${short(x.head)}` }),
        x.head !== d.head ? h('span', { class: 'rv-older', text: ' (an earlier commit)' }) : null,
        x.comments ? h('span', { text: ` · ${plural(x.comments, 'line comment')}` }) : null))));
    if (!decisions.length) E.decisions.append(h('li', { class: 'muted', text: 'No decision yet.' }));
    renderReviewComments(v.comments || []);
    renderGates(v.gates || []);
    renderAttempts(v.attempts || []);
    renderMerge(v.merge);
  }

  function renderReviewComments(list) {
    const E = R.els;
    const outdated = list.filter((c) => c.outdated).length;
    E.commentsTitle.textContent = `Line comments${list.length ? ` (${list.length}${outdated ? `, ${outdated} outdated` : ''})` : ''}`;
    put(E.comments, [...list].reverse().map((c) => {
      const lines = String(c.snippet || '').split('\n');
      const snippet = h('pre', { class: 'rv-snippet' }, lines.map((text, i) => {
        const n = Number(c.start) + i;
        return h('span', { class: 'rv-sline' + (n === Number(c.line) ? ' rv-sline-on' : '') },
          h('span', { class: 'rv-sno', text: String(n) }), h('span', { text }));
      }));
      return h('li', { class: 'rv-comment' + (c.outdated ? ' is-outdated' : ''), 'data-file': c.file, 'data-line': String(c.line) },
        h('div', { class: 'rv-meta' },
          h('button', {
            type: 'button', class: 'rv-loc', title: c.outdated ? 'The line reads differently now' : 'Show the line in the diff',
            text: `${c.file}:${c.line}`, onclick: () => goToLine(c.file, c.line),
          }),
          c.outdated ? h('span', { class: 'rv-outdated', 'data-testid': 'review-outdated', title: 'The branch changed this line (or removed it) since the comment', text: 'outdated' }) : null,
          h('span', { class: 'grow' }),
          h('time', { class: 'muted', datetime: c.at, title: `#${c.seq} at ${c.at}, on ${c.commit}`, text: `${c.author} · ${fmtTime(c.at)}` })),
        h('div', { class: 'pre rv-text', text: c.text }),
        c.snippet ? snippet : null);
    }));
    if (!list.length) E.comments.append(h('li', { class: 'muted', text: 'No line comments.' }));
  }

  function renderGates(gates) {
    const E = R.els;
    put(E.gates, gates.map((g) => h('li', { class: 'rv-gate ' + (g.passed ? 'is-pass' : 'is-fail') },
      h('span', { class: 'rv-mark', 'aria-hidden': 'true', text: g.passed ? '✓' : '✗' }),
      h('span', { class: 'rv-gate-name', text: g.gate }),
      h('span', { class: 'muted small', text: [
        g.attempt !== null && g.attempt !== undefined ? `attempt ${g.attempt}` : null,
        g.passed ? 'passed' : 'failed',
        g.cached ? 'cached' : fmtMs(g.duration_ms),
        !g.passed && g.exit ? g.exit : null,
      ].filter(Boolean).join(' · ') }),
      h('span', { class: 'grow' }),
      g.log ? h('button', {
        type: 'button', class: 'rv-small', 'data-testid': 'review-gate-log', 'data-name': g.log, text: 'Log',
        title: `Open ${g.log}`, onclick: () => showGateLog(g.log),
      }) : h('span', { class: 'muted small', text: 'no log' }))));
    if (!gates.length) E.gates.append(h('li', { class: 'muted', text: 'No gate has run.' }));
    if (R.logName && !gates.some((g) => g.log === R.logName)) hideGateLog();
  }

  function hideGateLog() {
    R.logName = null;
    R.els.log.hidden = true;
    R.els.logTitle.hidden = true;
  }

  async function showGateLog(name) {
    if (!R) return;
    const { id, gen, els: E } = R;
    if (R.logName === name && !E.log.hidden) { hideGateLog(); return; }
    R.logName = name;
    E.logTitle.hidden = false;
    E.logTitle.textContent = name;
    E.log.hidden = false;
    E.log.textContent = 'Loading…';
    try {
      const text = await api('GET', `/api/tasks/${enc(id)}/logs/${enc(name)}?bytes=${GATE_LOG_BYTES}`, undefined, { quiet: true, text: true });
      if (reviewAlive(gen) && R.logName === name) E.log.textContent = text || '(empty)';
    } catch (e) {
      if (reviewAlive(gen) && R.logName === name) E.log.textContent = `Could not read ${name}: ${e.message}`;
    }
  }

  function renderAttempts(list) {
    const E = R.els;
    let total = 0;
    put(E.attempts, list.map((a) => {
      total += Number(a.cost_usd) || 0;
      return h('li', { class: 'rv-attempt' },
        h('div', { class: 'rv-meta' },
          h('strong', { text: a.attempt !== null && a.attempt !== undefined ? `#${a.attempt}` : '#?' }),
          h('span', { text: ` ${a.agent}` }),
          a.model ? h('span', { class: 'muted', text: ` · ${a.model}` }) : null,
          h('span', { class: 'grow' }),
          h('span', { class: 'rv-outcome', 'data-outcome': a.outcome, text: a.outcome })),
        h('div', { class: 'muted small' }, [
          a.cost_usd === null || a.cost_usd === undefined ? 'cost not reported' : usd(a.cost_usd),
          fmtMs(a.duration_ms),
          `${a.input_tokens} in / ${a.output_tokens} out tokens`,
          a.turns ? plural(a.turns, 'turn') : null,
          fmtTime(a.at),
        ].filter(Boolean).join(' · ')));
    }));
    if (!list.length) E.attempts.append(h('li', { class: 'muted', text: 'No attempt reported its usage.' }));
    else E.attempts.append(h('li', { class: 'rv-total muted small', text: `${plural(list.length, 'attempt')}, ${usd(total)} in all` }));
  }

  function renderMerge(m) {
    const E = R.els;
    const t = R.data ? R.data.task : null;
    // Landed (or closed otherwise): the plan has nothing more to say.
    if (t && (t.state === 'done' || t.state === 'cancelled')) {
      put(E.merge, h('p', { class: 'rv-plan' + (t.state === 'done' ? ' is-planned' : ''), 'data-testid': 'review-merge-status',
        text: t.close_reason ? `${STATE_LABEL[t.state]}: ${t.close_reason}.` : `${STATE_LABEL[t.state]}.` }));
      return;
    }
    if (!m) { put(E.merge, h('p', { class: 'muted', text: 'No merge plan.' })); return; }
    const branch = R.data ? R.data.diff.branch : '';
    put(E.merge,
      m.error ? h('p', { class: 'rv-error', text: m.error }) : null,
      h('p', { class: 'rv-plan ' + (m.planned ? 'is-planned' : 'is-waiting'), 'data-testid': 'review-merge-status',
        text: m.planned ? `Lands with the next merge run${m.level !== null && m.level !== undefined ? `, at level ${m.level}` : ''}.` : 'Not in the next merge run.' }),
      m.batch && m.batch.length ? h('div', { class: 'rv-kv' },
        h('span', { class: 'muted', text: 'Tested with' }),
        h('span', { class: 'chips' }, m.batch.map((b) => h('code', { class: 'label' + (b === branch ? ' is-self' : ''), text: b })))) : null,
      m.conflicts && m.conflicts.length ? h('div', { class: 'rv-kv' },
        h('span', { class: 'muted', text: 'Conflicts' }),
        h('ul', { class: 'rv-conflicts' }, m.conflicts.map((c) => h('li', {},
          h('code', { text: c.with }), h('span', { class: 'muted', text: ' in ' }),
          h('span', { text: (c.files || []).join(', ') || 'files git did not name' }))))) : null,
      m.waits && m.waits.length ? h('div', { class: 'rv-kv' },
        h('span', { class: 'muted', text: 'Waits for' }),
        h('ul', { class: 'rv-waits' }, m.waits.map((w) => h('li', { text: w })))) : null);
  }

  // ---- the pending comments and the decision

  function renderPending() {
    const E = R.els;
    put(E.pendingList, R.pending.map((p, i) => h('li', { class: 'rv-pend', 'data-testid': 'review-pending-item' },
      h('button', { type: 'button', class: 'rv-loc', text: `${p.file}:${p.line}`, onclick: () => goToLine(p.file, p.line) }),
      h('span', { class: 'pre rv-text', text: p.text }),
      h('button', {
        type: 'button', class: 'icon-btn', title: 'Remove this comment', 'aria-label': 'Remove this comment', text: '×',
        onclick: () => removePending(i),
      }))));
    E.pendingList.hidden = R.pending.length === 0;
    E.reject.textContent = R.pending.length ? `Request changes (${R.pending.length})` : 'Request changes';
  }

  function removePending(i) {
    const [p] = R.pending.splice(i, 1);
    savePending();
    renderPending();
    if (p) redrawNotesFor(p.file);
  }

  function redrawNotesFor(file) {
    for (const b of R.blocks.values()) if (b.drawn && b.file.path === file) placeNotes(b);
  }

  function showReviewError(text) {
    R.els.error.textContent = text;
    R.els.error.hidden = !text;
  }

  async function decide(kind) {
    if (!R) return;
    const { id, gen, els: E } = R;
    const message = E.message.value.trim();
    showReviewError('');
    if (kind === 'approve' && R.pending.length) {
      showReviewError(`${plural(R.pending.length, 'line comment is', 'line comments are')} pending: send them with Request changes, or remove them before approving.`);
      return;
    }
    const body = kind === 'approve'
      ? (message ? { message } : {})
      : { message, comments: R.pending.map((p) => ({ file: p.file, line: p.line, text: p.text })) };
    E.approve.disabled = true;
    E.reject.disabled = true;
    try {
      const out = await api('POST', `/api/tasks/${enc(id)}/${kind}`, body, { quiet: true });
      if (!reviewAlive(gen)) return;
      E.message.value = '';
      if (kind === 'reject') {
        R.pending = [];
        savePending();
        renderPending();
        putTask(out);
        toast(`Sent ${id} back: it is ${STATE_LABEL[out.state] || out.state} again`, 'ok');
      } else {
        toast(`Approved ${id} at ${short(out.head)}`, 'ok');
      }
      refreshReviewBadge();
    } catch (e) {
      if (reviewAlive(gen)) showReviewError(e.status === 0 ? 'Could not reach the server: nothing was sent.' : e.message);
    } finally {
      if (reviewAlive(gen)) refreshReview();
    }
  }

  // ---- the diff

  function setView(view) {
    if (!R || R.view === view) return;
    R.view = view;
    try { localStorage.setItem(VIEW_KEY, view); } catch (_) { /* storage off */ }
    renderView();
    redrawAll();
  }

  function renderView() {
    const E = R.els;
    E.unified.classList.toggle('on', R.view === 'unified');
    E.split.classList.toggle('on', R.view === 'split');
    E.unified.setAttribute('aria-pressed', String(R.view === 'unified'));
    E.split.setAttribute('aria-pressed', String(R.view === 'split'));
    E.diff.dataset.view = R.view;
  }

  async function redrawAll() {
    const dg = R.diffGen;
    let since = 0;
    for (const b of [...R.blocks.values()]) {
      if (!diffAlive(dg)) return;
      if (!b.drawn) continue;
      drawBlock(b);
      since += b.file.added + b.file.removed;
      if (since >= DRAW_SLICE) { since = 0; await nextTask(); }
    }
  }

  // A macrotask later: lets the browser paint and take input between files.
  function nextTask() {
    return new Promise((res) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => res();
      ch.port2.postMessage(null);
    });
  }

  function diffUrl(id, q) {
    return `/api/tasks/${enc(id)}/diff?${q}`;
  }

  // (Re)reads the diff from its first page.
  async function startDiff() {
    if (!R) return;
    const dg = ++diffSeq;
    R.diffGen = dg;
    const E = R.els;
    R.diffState = 'loading';
    R.head = null;
    R.blocks = new Map();
    R.loadedTo = 0;
    R.next = null;
    R.loading = null;
    if (R.io) { R.io.disconnect(); R.io = null; }
    E.diff.dataset.state = 'loading';
    E.diff.replaceChildren();
    E.more.textContent = 'Loading the diff…';
    let page;
    try {
      [page] = await Promise.all([api('GET', diffUrl(R.id, 'offset=0'), undefined, { quiet: true }), loadVendor()]);
    } catch (e) {
      if (!diffAlive(dg)) return;
      R.diffState = 'error';
      E.diff.dataset.state = 'error';
      put(E.more, h('span', { text: e.status === 404 ? e.message : `Could not load the diff: ${e.message}` }), ' ',
        h('button', { type: 'button', class: 'rv-small', text: 'Try again', onclick: () => startDiff() }));
      return;
    }
    if (!diffAlive(dg)) return;
    R.head = page.head;
    R.files = page.files;
    renderFileList();
    await drawPage(page, dg);
    if (!diffAlive(dg)) return;
    R.diffState = 'ready';
    E.diff.dataset.state = 'ready';
    reviewEl.dataset.renderMs = String(Math.round(performance.now() - R.t0));
    R.io = new IntersectionObserver((entries) => {
      if (entries.some((x) => x.isIntersecting)) loadMore();
    }, { root: E.main, rootMargin: `0px 0px ${MORE_MARGIN}px 0px` });
    R.io.observe(E.more);
  }

  function renderFileList() {
    const E = R.els;
    const max = R.files.reduce((m, f) => Math.max(m, f.added + f.removed), 0) || 1;
    E.fileCount.textContent = R.files.length ? plural(R.files.length, 'file') : '';
    put(E.files, R.files.map((f, i) => {
      const bar = h('span', { class: 'rv-bar-fill' });
      const share = (f.added + f.removed) / max;
      bar.style.width = `${Math.max(f.added + f.removed ? 4 : 0, Math.round(share * 100))}%`;
      const addShare = f.added + f.removed ? f.added / (f.added + f.removed) : 0;
      bar.style.setProperty('--add', `${Math.round(addShare * 100)}%`);
      return h('li', { class: 'rv-frow', 'data-path': f.path, 'data-index': String(i) },
        h('span', { class: `rv-status st-file-${f.status.replace(/\s+/g, '-')}`, title: f.status, text: statusLetter(f.status) }),
        h('button', {
          type: 'button', class: 'rv-fname', title: f.old_path ? `${f.old_path} → ${f.path}` : f.path,
          onclick: () => goToFile(i),
        }, f.old_path ? h('span', { class: 'muted', text: `${f.old_path} → ` }) : null, f.path),
        f.binary ? h('span', { class: 'rv-ftag', text: 'binary' }) : null,
        f.large ? h('span', { class: 'rv-ftag', title: 'Too many changed lines to show at once', text: 'large' }) : null,
        h('span', { class: 'grow' }),
        f.binary ? null : h('span', { class: 'rv-fstat' }, h('span', { class: 'add', text: `+${f.added}` }), ' ', h('span', { class: 'del', text: `−${f.removed}` })),
        h('span', { class: 'rv-sizebar', 'aria-hidden': 'true' }, bar));
    }));
    if (!R.files.length) E.files.append(h('li', { class: 'muted', text: 'The branch changes no file.' }));
  }

  function statusLetter(s) {
    return { added: 'A', modified: 'M', deleted: 'D', renamed: 'R', copied: 'C', 'type changed': 'T' }[s] || '?';
  }

  // Each file's part of a patch, in order: each starts with "diff --git ".
  function splitPatch(patch) {
    const starts = [];
    const re = /^diff --git /gm;
    for (let m = re.exec(patch); m; m = re.exec(patch)) starts.push(m.index);
    return starts.map((s, i) => patch.slice(s, i + 1 < starts.length ? starts[i + 1] : patch.length));
  }

  function headerOf(f) {
    return `diff --git a/${f.old_path || f.path} b/${f.path}`;
  }

  // Pairs a page's files with their parts of the patch. git writes them in
  // the order it listed them; a path git had to quote is matched by order.
  function pairParts(files, parts) {
    const out = new Map();
    let j = 0;
    for (const part of parts) {
      const nl = part.indexOf('\n');
      const head = nl < 0 ? part : part.slice(0, nl);
      let k = j;
      while (k < files.length && headerOf(files[k]) !== head) k++;
      if (k === files.length) k = j; // a quoted path: by order
      if (k >= files.length) break;
      out.set(files[k], part);
      j = k + 1;
    }
    return out;
  }

  async function drawPage(page, dg) {
    const end = page.next === null || page.next === undefined ? R.files.length : page.next;
    const want = [];
    for (let i = page.offset; i < end; i++) if (!R.files[i].large) want.push(R.files[i]);
    const parts = pairParts(want, splitPatch(page.patch || ''));
    let since = 0;
    for (let i = page.offset; i < end; i++) {
      const f = R.files[i];
      const b = fileBlock(f, i);
      R.blocks.set(i, b);
      R.els.diff.append(b.el);
      if (f.binary) {
        summary(b, 'Binary file: not shown.');
      } else if (f.large) {
        summary(b, `${plural(f.added + f.removed, 'line')} changed`,
          h('button', { type: 'button', class: 'rv-small', 'data-testid': 'review-show-large', text: 'Show', onclick: () => showLarge(b) }));
      } else if (parts.has(f)) {
        b.part = parts.get(f);
        drawBlock(b);
        since += f.added + f.removed;
        if (since >= DRAW_SLICE && i + 1 < end) {
          since = 0;
          await nextTask();
          if (!diffAlive(dg)) return;
        }
      } else {
        summary(b, f.status === 'renamed' || f.status === 'copied' ? 'Same content under the new name.' : 'No change to the text.');
      }
    }
    R.loadedTo = end;
    R.next = page.next === null || page.next === undefined ? null : page.next;
    renderMore();
  }

  function renderMore() {
    const E = R.els;
    if (R.next === null) {
      const shown = R.files.length;
      E.more.textContent = shown ? `End of the changes: ${plural(shown, 'file')}.` : '';
    } else {
      E.more.textContent = `${R.loadedTo} of ${R.files.length} files shown; more load as you scroll…`;
    }
    E.more.dataset.done = String(R.next === null);
  }

  // The next page, once at a time; resolves whether it was drawn.
  function loadMore() {
    if (!R || R.next === null || R.diffState !== 'ready') return Promise.resolve(false);
    if (R.loading) return R.loading;
    const { id } = R;
    const dg = R.diffGen;
    const offset = R.next;
    R.els.more.textContent = `Loading files ${offset + 1}–…`;
    R.loading = (async () => {
      let drawn = false;
      try {
        const page = await api('GET', diffUrl(id, `offset=${offset}`), undefined, { quiet: true });
        if (!diffAlive(dg)) return false;
        if (page.head !== R.head) {
          noticeReview(`The branch moved on to ${short(page.head)}: the diff was read again.`);
          startDiff();
          return false;
        }
        await drawPage(page, dg);
        drawn = diffAlive(dg);
      } catch (e) {
        if (!diffAlive(dg)) return false;
        put(R.els.more, h('span', { text: `Could not load more of the diff: ${e.message}` }), ' ',
          h('button', { type: 'button', class: 'rv-small', text: 'Try again', onclick: () => loadMore() }));
      } finally {
        if (diffAlive(dg)) R.loading = null;
      }
      // Still near the end (a short page): the observer will not fire again.
      if (drawn && R.next !== null) {
        const mainBox = R.els.main.getBoundingClientRect();
        if (R.els.more.getBoundingClientRect().top < mainBox.bottom + MORE_MARGIN) loadMore();
      }
      return drawn;
    })();
    return R.loading;
  }

  function fileBlock(f, i) {
    const el = h('section', { class: 'rv-file', 'data-path': f.path, 'data-index': String(i) });
    return { file: f, index: i, el, part: null, drawn: false, rows: null };
  }

  function summary(b, text, ...extra) {
    const f = b.file;
    put(b.el,
      h('div', { class: 'rv-fhead' },
        h('span', { class: `rv-status st-file-${f.status.replace(/\s+/g, '-')}`, title: f.status, text: statusLetter(f.status) }),
        h('span', { class: 'rv-fhead-name' }, f.old_path ? h('span', { class: 'muted', text: `${f.old_path} → ` }) : null, f.path),
        h('span', { class: 'grow' }),
        f.binary ? null : h('span', { class: 'rv-fstat' }, h('span', { class: 'add', text: `+${f.added}` }), ' ', h('span', { class: 'del', text: `−${f.removed}` }))),
      h('div', { class: 'rv-fbody', 'data-testid': 'review-file-summary' }, h('span', { text }), ...extra));
    b.drawn = false;
  }

  async function showLarge(b) {
    const { id } = R;
    const dg = R.diffGen;
    const btn = b.el.querySelector('[data-testid="review-show-large"]');
    if (btn) { btn.disabled = true; btn.textContent = 'Loading…'; }
    try {
      const page = await api('GET', diffUrl(id, `file=${enc(b.file.path)}`), undefined, { quiet: true });
      if (!diffAlive(dg)) return;
      const parts = splitPatch(page.patch || '');
      b.part = pairParts([b.file], parts).get(b.file) || parts[0] || '';
      drawBlock(b);
    } catch (e) {
      if (!diffAlive(dg)) return;
      if (btn) { btn.disabled = false; btn.textContent = 'Show'; }
      toast(`Loading ${b.file.path}: ${e.message}`);
    }
  }

  // Files highlight.js would only call plain text: highlighting them costs
  // about half of drawing them and changes nothing.
  const PLAIN_EXT = new Set(['txt', 'text', 'log', 'csv', 'tsv']);
  function worthHighlighting(path) {
    const name = path.slice(path.lastIndexOf('/') + 1);
    const dot = name.lastIndexOf('.');
    return dot > 0 && !PLAIN_EXT.has(name.slice(dot + 1).toLowerCase());
  }

  function drawBlock(b) {
    const body = h('div', { class: 'rv-d2h' });
    const ui = new window.Diff2HtmlUI(body, b.part, {
      outputFormat: VIEWS[R.view],
      drawFileList: false,
      fileListToggle: false,
      highlight: worthHighlighting(b.file.path),
      matching: 'none',
      colorScheme: 'auto',
      fileContentToggle: true,
      stickyFileHeaders: true,
      synchronisedScroll: true,
    });
    ui.draw();
    // Each file's counts beside its name (diff2html shows none).
    const name = body.querySelector('.d2h-file-name-wrapper');
    if (name) {
      name.append(h('span', { class: 'rv-fstat' },
        h('span', { class: 'add', text: `+${b.file.added}` }), ' ', h('span', { class: 'del', text: `−${b.file.removed}` })));
    }
    put(b.el, body);
    // Its height before it is first laid out: about a row per line.
    const lines = body.querySelectorAll('tbody > tr').length;
    b.el.style.setProperty('contain-intrinsic-size', `auto ${Math.round(lines * 20 / (R.view === 'split' ? 2 : 1) + 60)}px`);
    b.drawn = true;
    b.rows = null;
    placeNotes(b);
  }

  // New line number -> its row (and, side by side, the row beside it).
  function rowIndex(b) {
    if (b.rows) return b.rows;
    const map = new Map();
    const sides = b.el.querySelectorAll('.d2h-file-side-diff');
    if (sides.length === 2) {
      const left = [...sides[0].querySelectorAll('tbody > tr')].filter((r) => !r.classList.contains('rv-note-row'));
      const right = [...sides[1].querySelectorAll('tbody > tr')].filter((r) => !r.classList.contains('rv-note-row'));
      right.forEach((tr, i) => {
        const td = tr.firstElementChild;
        if (!td || !td.classList.contains('d2h-code-side-linenumber')) return;
        const n = parseInt(td.textContent, 10);
        if (n > 0) map.set(n, { row: tr, left: left[i] || null });
      });
    } else {
      for (const tr of b.el.querySelectorAll('tbody > tr')) {
        const n2 = tr.querySelector(':scope > td.d2h-code-linenumber > .line-num2');
        const n = n2 ? parseInt(n2.textContent, 10) : NaN;
        if (n > 0) map.set(n, { row: tr, left: null });
      }
    }
    b.rows = map;
    return map;
  }

  // Comments (not outdated), pending comments and the open form, each under
  // its line where the diff shows that line.
  function placeNotes(b) {
    for (const el of b.el.querySelectorAll('tr.rv-note-row')) {
      if (R.ro) R.ro.unobserve(el);
      el.remove();
    }
    const path = b.file.path;
    const byLine = new Map();
    const add = (line, note) => {
      if (!byLine.has(line)) byLine.set(line, []);
      byLine.get(line).push(note);
    };
    for (const c of R.comments) if (!c.outdated && c.file === path) add(Number(c.line), noteComment(c));
    R.pending.forEach((p, i) => { if (p.file === path) add(p.line, notePending(p, i)); });
    if (R.form && R.form.file === path) add(R.form.line, noteForm(R.form));
    if (!byLine.size) return;
    const idx = rowIndex(b);
    for (const [line, notes] of byLine) {
      const at = idx.get(line);
      if (!at) continue; // outside the hunks git shows
      const row = h('tr', { class: 'rv-note-row', 'data-line': String(line) },
        h('td', { class: 'rv-note-cell', colspan: '2' }, h('div', { class: 'rv-notes' }, notes)));
      at.row.after(row);
      if (at.left) {
        // Side by side: a row as tall on the left keeps the sides in step.
        const spacer = h('tr', { class: 'rv-note-row rv-note-spacer' }, h('td', { colspan: '2' }));
        at.left.after(spacer);
        R.spacers.set(row, spacer);
        R.ro.observe(row);
      }
    }
    const input = b.el.querySelector('[data-testid="review-comment-input"]');
    if (input && R.form && R.form.focus) { R.form.focus = false; input.focus(); }
  }

  function noteComment(c) {
    return h('div', { class: 'rv-note rv-note-comment', 'data-kind': 'comment', 'data-testid': 'review-inline-comment' },
      h('div', { class: 'rv-meta' },
        h('strong', { text: c.author }),
        h('span', { class: 'muted', title: `#${c.seq} at ${c.at}`, text: ` · ${fmtTime(c.at)}` })),
      h('div', { class: 'pre rv-text', text: c.text }));
  }

  function notePending(p, i) {
    return h('div', { class: 'rv-note rv-note-pending', 'data-kind': 'pending', 'data-testid': 'review-inline-pending' },
      h('div', { class: 'rv-meta' },
        h('span', { class: 'rv-pending-tag', text: 'pending' }),
        h('span', { class: 'muted', text: ' sent with Request changes' }),
        h('span', { class: 'grow' }),
        h('button', { type: 'button', class: 'rv-small', text: 'Remove', onclick: () => removePending(i) })),
      h('div', { class: 'pre rv-text', text: p.text }));
  }

  function noteForm(form) {
    const input = h('textarea', {
      rows: 3, maxlength: '20000', 'data-testid': 'review-comment-input', 'aria-label': `Comment on ${form.file}:${form.line}`,
      placeholder: `Comment on ${form.file}:${form.line}… (Ctrl+Enter adds it)`,
    });
    input.value = form.draft || '';
    input.addEventListener('input', () => { form.draft = input.value; });
    const el = h('form', { class: 'rv-note rv-note-form', autocomplete: 'off' },
      input,
      h('div', { class: 'rv-buttons' },
        h('button', { type: 'button', 'data-testid': 'review-comment-cancel', text: 'Cancel', onclick: () => closeForm() }),
        h('button', { type: 'submit', class: 'primary', 'data-testid': 'review-comment-add', text: 'Add comment' })));
    el.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) { input.focus(); return; }
      R.pending.push({ file: form.file, line: form.line, text });
      savePending();
      showReviewError('');
      R.form = null;
      renderPending();
      redrawNotesFor(form.file);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); el.requestSubmit(); }
      else if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); closeForm(); }
    });
    return el;
  }

  function closeForm() {
    if (!R || !R.form) return;
    const file = R.form.file;
    R.form = null;
    redrawNotesFor(file);
  }

  function onDiffClick(e) {
    const t = e.target instanceof Element ? e.target : null;
    if (!t || !R) return;
    const fileEl = t.closest('.rv-file');
    if (!fileEl) return;
    let line = NaN;
    const unified = t.closest('td.d2h-code-linenumber');
    if (unified) {
      const n2 = unified.querySelector('.line-num2');
      line = n2 ? parseInt(n2.textContent, 10) : NaN;
      if (!(line > 0) && unified.querySelector('.line-num1')?.textContent.trim()) {
        toast('A removed line is not on the branch: comment on a line of the new side.', 'info');
        return;
      }
    }
    const side = t.closest('td.d2h-code-side-linenumber');
    if (side) {
      const sides = [...fileEl.querySelectorAll('.d2h-file-side-diff')];
      if (sides.indexOf(side.closest('.d2h-file-side-diff')) !== 1) {
        if (side.textContent.trim()) toast('The left side is the old version: comment on a line of the right side.', 'info');
        return;
      }
      line = parseInt(side.textContent, 10);
    }
    if (!(line > 0)) return;
    const file = fileEl.dataset.path;
    const prev = R.form;
    R.form = { file, line, draft: prev && prev.file === file && prev.line === line ? prev.draft : '', focus: true };
    if (prev && prev.file !== file) redrawNotesFor(prev.file);
    redrawNotesFor(file);
  }

  async function goToFile(i) {
    if (!R) return;
    const dg = R.diffGen;
    while (diffAlive(dg) && i >= R.loadedTo && R.next !== null) {
      if (!await loadMore()) return; // the page says why
    }
    if (!diffAlive(dg)) return;
    const b = R.blocks.get(i);
    if (b) b.el.scrollIntoView({ block: 'start' });
  }

  async function goToLine(file, line) {
    if (!R) return;
    const i = R.files.findIndex((f) => f.path === file);
    if (i < 0) return;
    await goToFile(i);
    if (!R) return;
    const b = R.blocks.get(i);
    const at = b && b.drawn ? rowIndex(b).get(Number(line)) : null;
    if (at) {
      at.row.scrollIntoView({ block: 'center' });
      at.row.classList.add('rv-flash');
      setTimeout(() => at.row.classList.remove('rv-flash'), 1600);
    }
  }

  // ---- live

  function reviewOnEvent(ev) {
    if (REVIEW_BADGE_KINDS.has(ev.kind)) scheduleReviewBadge();
    if (!R) return;
    if (ev.task === R.id) {
      if (REVIEW_OWN_KINDS.has(ev.kind)) refreshReview();
    } else if (ev.kind === 'state_changed' || ev.kind === 'approved' || ev.kind === 'changes_requested') {
      if (R.othersTimer) return;
      const wait = Math.max(0, R.othersAt + REVIEW_OTHERS_GAP - performance.now());
      const gen = R.gen;
      R.othersTimer = setTimeout(() => {
        if (!reviewAlive(gen)) return;
        R.othersTimer = null;
        R.othersAt = performance.now();
        refreshReview();
      }, wait);
    }
  }

  // ---- the header badge: what waits for a decision

  const REVIEW_BADGE_KINDS = new Set(['approved', 'changes_requested', 'commented', 'imported', 'restored']);
  const reviewBadge = $('[data-testid="review-badge"]');
  const reviewPop = $('[data-testid="review-list"]');
  let reviewItems = null; // the last /api/review answer
  let reviewUnavailable = false; // the project is not in git: no badge
  let badgeBusy = false;
  let badgeAgain = false;
  let badgeTimer = null;

  function scheduleReviewBadge() {
    if (badgeTimer !== null || reviewUnavailable) return;
    badgeTimer = setTimeout(() => { badgeTimer = null; refreshReviewBadge(); }, COALESCE_MS);
  }

  async function refreshReviewBadge() {
    if (reviewUnavailable) return;
    if (badgeBusy) { badgeAgain = true; return; }
    badgeBusy = true;
    try {
      reviewItems = await api('GET', '/api/review', undefined, { quiet: true });
      renderReviewBadge();
    } catch (e) {
      // Outside git there is nothing to review (and nothing will be).
      if (e.status === 404) { reviewUnavailable = true; reviewBadge.hidden = true; }
    } finally {
      badgeBusy = false;
      if (badgeAgain) { badgeAgain = false; scheduleReviewBadge(); }
    }
  }

  function renderReviewBadge() {
    const list = reviewItems || [];
    const waiting = list.filter((x) => !x.approved).length;
    const approved = list.length - waiting;
    reviewBadge.hidden = false;
    reviewBadge.dataset.count = String(waiting);
    reviewBadge.querySelector('b').textContent = String(waiting);
    reviewBadge.title = `${plural(waiting, 'task waits', 'tasks wait')} for a review` +
      (approved ? `; ${plural(approved, 'approved task waits', 'approved tasks wait')} to be merged` : '');
    if (!reviewPop.hidden) renderReviewList();
  }

  function renderReviewList() {
    const list = reviewItems || [];
    put(reviewPop,
      h('div', { class: 'rp-head' }, h('strong', { text: 'In review' }), h('span', { class: 'muted small', text: ` ${list.length}` })),
      list.length ? h('ol', { class: 'rp-list' }, list.map((x) => h('li', {},
        h('a', { class: 'rp-item', href: `#review/${x.id}`, 'data-testid': `review-item-${x.id}` },
          h('span', { class: 'rp-top' },
            h('span', { class: 'card-id', text: x.id }),
            x.approved ? h('span', { class: 'rv-approved small', text: 'approved' }) : null,
            h('span', { class: 'grow' }),
            h('span', { class: 'rv-fstat' }, h('span', { class: 'add', text: `+${x.added}` }), ' ', h('span', { class: 'del', text: `−${x.removed}` }))),
          h('span', { class: 'rp-title', text: x.title }),
          h('span', { class: 'muted small', text: [plural(x.files, 'file'), x.comments ? plural(x.comments, 'comment') : null, fmtTime(x.updated_at)].filter(Boolean).join(' · ') })))))
        : h('p', { class: 'muted', text: 'Nothing waits for review.' }));
  }

  function openReviewList() {
    renderReviewList();
    const r = reviewBadge.getBoundingClientRect();
    reviewPop.style.left = `${Math.round(Math.max(8, Math.min(r.left, window.innerWidth - 380)))}px`;
    reviewPop.style.top = `${Math.round(r.bottom + 6)}px`;
    reviewPop.hidden = false;
    reviewBadge.setAttribute('aria-expanded', 'true');
    refreshReviewBadge();
  }

  function closeReviewList() {
    reviewPop.hidden = true;
    reviewBadge.setAttribute('aria-expanded', 'false');
  }

  reviewBadge.addEventListener('click', (e) => {
    e.stopPropagation();
    if (reviewPop.hidden) openReviewList(); else closeReviewList();
  });
  document.addEventListener('click', (e) => {
    if (reviewPop.hidden) return;
    const t = e.target instanceof Element ? e.target : null;
    if (t && (t.closest('.rp-item') || !reviewPop.contains(t))) closeReviewList();
  });

  // ------------------------------------------------------------------ routes

  // #ID opens a task's detail; #review/ID its review page.
  function route() {
    const raw = decodeURIComponent(location.hash.slice(1));
    if (raw.startsWith('review/')) {
      const id = raw.slice('review/'.length);
      if (!id) return;
      if (selectedId) hideDetail();
      openReview(id);
      return;
    }
    if (R) {
      closeReview();
      document.title = 'braid';
    }
    if (raw && raw !== selectedId) openDetail(raw);
  }

  // ------------------------------------------------------------------ wiring

  document.addEventListener('click', (e) => {
    const target = e.target instanceof Element ? e.target : null;
    if (!target) return;
    const link = target.closest('.id-link, .card, .ready-item, .run-head, g.node');
    if (link && link.dataset.id) {
      e.preventDefault();
      openDetail(link.dataset.id);
      return;
    }
    // A column's header, or anywhere on a folded column's strip.
    const col = target.closest('.col > header, .col.is-folded');
    if (col) toggleColumn(col.closest('.col').dataset.state);
  });

  document.addEventListener('keydown', (e) => {
    const t = e.target instanceof Element ? e.target : null;
    const typing = t && t.closest('input, textarea, select');
    if (e.key === 'Escape') {
      if (typing) { t.blur(); return; }
      if (!reviewPop.hidden) { closeReviewList(); return; }
      if (R) { location.hash = ''; return; }
      if (selectedId) closeDetail();
      return;
    }
    if (typing || R) return;
    if ((e.key === 'Enter' || e.key === ' ') && t && t.matches('.card, .ready-item, .run-head, g.node') && t.dataset.id) {
      e.preventDefault();
      openDetail(t.dataset.id);
    } else if ((e.key === 'Enter' || e.key === ' ') && t && t.matches('.col > header')) {
      e.preventDefault();
      toggleColumn(t.closest('.col').dataset.state);
    } else if (e.key === '/') {
      e.preventDefault();
      $('[data-testid="filter"]').focus();
    } else if (e.key === 'c' && !e.metaKey && !e.ctrlKey && !e.altKey) {
      e.preventDefault();
      $('[data-testid="new-title"]').focus();
    }
  });

  const createForm = $('[data-testid="new-form"]');
  createForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = createForm.elements;
    const title = f.title.value.trim();
    if (!title) { toast('A task needs a title.'); return; }
    const body = { title, type: f.type.value, priority: Number(f.priority.value) };
    const parent = f.parent.value.trim();
    if (parent) body.parent = parent;
    const labels = f.labels.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (labels.length) body.labels = labels;
    const btn = $('[data-testid="new-submit"]');
    btn.disabled = true;
    try {
      const t = await api('POST', '/api/tasks', body, { what: 'Creating the task' });
      putTask(t);
      f.title.value = '';
      f.labels.value = '';
      f.title.focus();
      toast(`Created ${t.id}`, 'ok');
    } catch (_) { /* shown */ } finally {
      btn.disabled = false;
    }
  });

  let filterTimer = null;
  $('[data-testid="filter"]').addEventListener('input', (e) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      filterText = e.target.value.trim().toLowerCase();
      markAllDirty();
    }, 80);
  });

  window.addEventListener('hashchange', route);

  window.addEventListener('pagehide', () => {
    closeRunTails();
    closeDetailLog();
    if (ws) ws.close(1000, 'page closed');
  });

  // ------------------------------------------------------------------- start

  setConn(false);
  renderSeq();
  route();
  connect();
})();

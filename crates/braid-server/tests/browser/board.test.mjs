// The board in a real browser: headless Chromium (Debian's) driven by
// playwright-core against a real `braid serve` in a temporary project.
//
//   BRAID_BIN=target/debug/braid node board.test.mjs
//   ONLY=review BRAID_BIN=target/debug/braid node board.test.mjs   (steps 10*)
//   ONLY=first BRAID_BIN=target/debug/braid node board.test.mjs    (steps 11*)
//
// Prints one line per step, screenshots under ./screenshots, and a closing
// "N passed, N failed" line; exits non-zero when any assertion fails.

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync, appendFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const BRAID = resolve(process.env.BRAID_BIN || join(repo, 'target/debug/braid'));
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SHOTS = join(here, 'screenshots');
const KEEP = process.env.KEEP_TMP === '1';

const ONLY = process.env.ONLY || '';

const work = mkdtempSync(join(tmpdir(), 'braid-board-'));
const project = join(work, 'project');
// Steps 10*: a git repository whose agents leave work in review.
const rproject = join(work, 'review-project');
// Steps 11*: a small project as a new user first sees it, at 1400 px.
const fproject = join(work, 'first-project');
const profile = join(work, 'chromium-profile');
mkdirSync(project);
mkdirSync(rproject);
mkdirSync(fproject);
mkdirSync(SHOTS, { recursive: true });
for (const f of readdirSync(SHOTS)) if (f.endsWith('.png')) rmSync(join(SHOTS, f)); // this run's only

let server = null; // { proc, port, base, exited, stderr }
let rserver = null; // the same, serving rproject
let fserver = null; // the same, serving fproject
let context = null;
let page = null;
const pageErrors = [];
const consoleErrors = [];
const toasts = [];
let passed = 0;
let failed = 0;

// ------------------------------------------------------------------ helpers

class Failure extends Error {}

function check(cond, message) {
  if (!cond) throw new Failure(message);
}

function sh(args, opts = {}) {
  return new Promise((res, rej) => {
    execFile(BRAID, args, { cwd: project, timeout: 20_000, env: { ...process.env, NO_COLOR: '1' }, ...opts },
      (err, stdout, stderr) => {
        if (err) rej(new Failure(`braid ${args.join(' ')} failed (${err.code ?? err.signal}): ${stderr || stdout}`));
        else res(stdout);
      });
  });
}

async function cliJson(args, opts = {}) {
  const out = await sh([...args, '--json'], opts);
  try {
    return JSON.parse(out);
  } catch (_) {
    throw new Failure(`braid ${args.join(' ')} --json printed no JSON: ${out.slice(0, 300)}`);
  }
}

// Appends an event to the project's log as braid's own write path does:
// one row in `events` (a trigger fills the cost ledger from an
// agent_finished row), then a bump of the change marker, which is how a
// committed write tells the server to read the log.
const APPEND_EVENT = `
import sqlite3, sys
db, kind, task, payload, at = sys.argv[1:6]
c = sqlite3.connect(db, timeout=10)
with c:
    cur = c.execute("INSERT INTO events (at, actor, kind, task, payload) VALUES (?, 'braid', ?, ?, ?)",
                    (int(at), kind, task, payload))
print(cur.lastrowid)
c.close()
`;

function appendEvent(kind, task, payload, dir = project) {
  const db = join(dir, '.braid', 'braid.db');
  return new Promise((res, rej) => {
    execFile('python3', ['-c', APPEND_EVENT, db, kind, task, JSON.stringify(payload), String(Date.now())], { timeout: 20_000 },
      (err, stdout, stderr) => {
        if (err) { rej(new Failure(`appending a ${kind} event failed: ${stderr || err.message}`)); return; }
        const now = new Date();
        utimesSync(`${db}.lock`, now, now);
        res(Number(stdout.trim()));
      });
  });
}

// An agent attempt's end as the engine records it, with what it cost.
function finished(agent, costUsd, session) {
  return {
    agent, attempt: 1, duration_ms: 61_250, exit: 'exit 0',
    usage: {
      model: 'claude-sonnet-4-5', session, input_tokens: 12_400, output_tokens: 930,
      cache_read_tokens: 48_000, cache_write_tokens: 2_100, cost_usd: costUsd, turns: 7,
    },
  };
}

// Dollars as the board writes them.
function usd(v) {
  return '$' + (v !== 0 && Math.abs(v) < 1 ? v.toFixed(4) : v.toFixed(2));
}

async function waitText(selector, want, ms, what) {
  await page.waitForFunction(([sel, w]) => document.querySelector(sel)?.textContent === w, [selector, want], { timeout: ms, polling: 50 })
    .catch(async () => {
      const got = await page.evaluate((sel) => document.querySelector(sel)?.textContent ?? null, selector);
      throw new Failure(`${what} did not read ${JSON.stringify(want)} within ${ms} ms (it reads ${JSON.stringify(got)})`);
    });
}

async function api(method, path, body, base = server.base) {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Failure(`${method} ${path} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

function startServer(port, extra = [], cwd = project) {
  return new Promise((res, rej) => {
    const proc = spawn(BRAID, ['serve', '--bind', `127.0.0.1:${port}`, ...extra], {
      cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' },
    });
    const s = { proc, port: null, base: null, stderr: '', stdout: '' };
    s.exited = new Promise((done) => proc.on('exit', (code, signal) => done({ code, signal })));
    let settled = false;
    const fail = (msg) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      rej(new Failure(`${msg}\n--- server stderr ---\n${s.stderr}\n--- server stdout ---\n${s.stdout}`));
    };
    const timer = setTimeout(() => fail('braid serve printed no "Serving braid on" line within 20 s'), 20_000);
    proc.stderr.on('data', (d) => { s.stderr += d; });
    proc.stdout.on('data', (d) => {
      s.stdout += d;
      const m = /Serving braid on http:\/\/127\.0\.0\.1:(\d+)/.exec(s.stdout);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        s.port = Number(m[1]);
        s.base = `http://127.0.0.1:${s.port}`;
        res(s);
      }
    });
    proc.on('error', (e) => fail(`could not start ${BRAID}: ${e.message}`));
    s.exited.then(({ code, signal }) => fail(`braid serve exited (code ${code}, signal ${signal}) before serving`));
  });
}

async function startServerRetrying(port, ms, extra = []) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await startServer(port, extra);
    } catch (e) {
      if (Date.now() > until || !/address|in use|bind/i.test(e.message)) throw e;
      await sleep(200);
    }
  }
}

async function stopServer(s, ms = 30_000) {
  s.proc.kill('SIGTERM');
  const out = await Promise.race([s.exited, sleep(ms).then(() => null)]);
  if (!out) {
    s.proc.kill('SIGKILL');
    throw new Failure(`braid serve did not exit within ${ms / 1000} s of SIGTERM\n${s.stderr}`);
  }
  return out;
}

function conn() {
  return page.locator('[data-testid="conn"]');
}

async function waitConn(text, ms) {
  await page.waitForFunction((want) => document.querySelector('[data-testid="conn"]')?.textContent === want,
    text, { timeout: ms, polling: 20 })
    .catch(async () => { throw new Failure(`connection indicator did not read "${text}" within ${ms} ms (it reads "${await conn().textContent()}")`); });
}

function card(state, id) {
  return page.locator(`[data-testid="col-${state}"] [data-testid="card-${id}"]`);
}

async function waitVisible(locator, ms, what) {
  await locator.waitFor({ state: 'visible', timeout: ms })
    .catch(() => { throw new Failure(`${what} did not appear within ${ms} ms`); });
}

async function shot(name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`    screenshot: ${path}`);
  return path;
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e instanceof Failure ? e.message : e.stack || e}`);
    if (page) await shot(`failure-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`).catch(() => {});
    throw e;
  }
}

async function cleanup() {
  if (context) await context.close().catch(() => {});
  context = null;
  for (const s of [server, rserver, fserver]) {
    if (s && s.proc.exitCode === null && s.proc.signalCode === null) {
      s.proc.kill('SIGTERM');
      const out = await Promise.race([s.exited, sleep(5000).then(() => null)]);
      if (!out) s.proc.kill('SIGKILL');
    }
  }
  if (!KEEP) rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}

process.on('exit', () => {
  for (const s of [server, rserver, fserver]) {
    if (s && s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup().finally(() => process.exit(130));
  });
}

// Headless Chromium with one page, watched for script errors, toasts and
// anything the Content-Security-Policy stops.
async function openBrowser() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // A name that resolves to this machine, as DNS rebinding makes one.
      '--host-resolver-rules=MAP evil.example 127.0.0.1'],
    viewport: { width: 1440, height: 900 },
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack || e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.exposeFunction('__braidToast', (text) => toasts.push(text));
  await page.addInitScript(() => {
    new MutationObserver((ms) => {
      for (const m of ms) for (const n of m.addedNodes) {
        if (n.nodeType === 1 && n.matches('[data-testid="toast"]')) window.__braidToast(n.className + ': ' + n.querySelector('.toast-text').textContent);
      }
    }).observe(document, { childList: true, subtree: true });
    // Anything the board's Content-Security-Policy stops is counted.
    document.addEventListener('securitypolicyviolation', (e) => {
      document.documentElement.dataset.cspViolations = `${document.documentElement.dataset.cspViolations || ''}${e.violatedDirective} ${e.blockedURI};`;
    });
  });
}

// -------------------------------------------------------------------- steps

async function main() {
  console.log(`braid:    ${BRAID}`);
  console.log(`chromium: ${CHROMIUM}`);
  console.log(`project:  ${project}`);
  await sh(['init']);
  // An agent that only asks a question (step 4e parks a task with it: what
  // braid does when an agent writes to $BRAID_QUESTION and exits), and a
  // daily budget for the header to show (step 4f). Before [server]: later
  // steps append to that table.
  appendFileSync(join(project, '.braid', 'config.toml'), `
[[agent]]
name = "asker"
command = ["sh", "-c", 'printf "Which database should I use?\\nPostgreSQL or SQLite?\\n" > "$BRAID_QUESTION"']

[budget]
day_usd = 10.0
`);
  // A short resume window, so step 5c can make the server answer a resume
  // with recovered:false.
  appendFileSync(join(project, '.braid', 'config.toml'), '\n[server]\nresume_window = 3\n');

  let first;
  let A;
  let B;

  await step('1 serve, open the board, connection goes live', async () => {
    server = await startServer(0);
    console.log(`    serving on ${server.base}`);
    await openBrowser();
    const res = await page.goto(server.base + '/', { waitUntil: 'domcontentloaded' });
    check(res && res.ok(), `GET / answered ${res && res.status()}`);
    await waitConn('live', 10_000);
    for (const st of ['open', 'in_progress', 'review', 'done', 'failed', 'deferred', 'cancelled']) {
      check(await page.locator(`[data-testid="col-${st}"]`).count() === 1, `column col-${st} is missing`);
    }
    for (const id of ['ready', 'runs', 'health', 'new-title', 'new-submit']) {
      check(await page.locator(`[data-testid="${id}"]`).count() === 1, `${id} is missing`);
    }
    await shot('1-live');
  });

  await step('2 a task made through the API appears in Open within 1 s', async () => {
    const t0 = Date.now();
    first = await api('POST', '/api/tasks', {
      title: 'Wire the payment webhook', description: 'Receives events from the processor.', priority: 1, labels: ['api', 'payments'],
    });
    const posted = Date.now();
    check(first.state === 'open', `new task state is ${first.state}`);
    await waitVisible(card('open', first.id), 1000, `card ${first.id} in col-open`);
    const seen = Date.now();
    console.log(`    card ${first.id} visible ${seen - posted} ms after the POST returned (${seen - t0} ms after it was sent)`);
    check(seen - posted <= 1000, `card took ${seen - posted} ms`);
    const text = await card('open', first.id).textContent();
    check(text.includes('P1') && text.includes('api') && text.includes('ready'), `card text lacks priority, label or ready badge: ${text}`);

    // Titles are text, never markup.
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b> & done';
    const x = await api('POST', '/api/tasks', { title: evil, type: 'bug', priority: 0 });
    await waitVisible(card('open', x.id), 1000, `card ${x.id} in col-open`);
    const title = await card('open', x.id).locator('.card-title').textContent();
    check(title === evil, `card title is ${JSON.stringify(title)}, want the literal text`);
    check(await card('open', x.id).locator('img, b').count() === 0, 'a title was parsed as HTML');
    check(await page.evaluate(() => window.__pwned === undefined), 'a title ran script');
    // The health counters and the ready queue follow.
    await page.waitForFunction(() => document.querySelector('[data-stat="total"] b')?.textContent === '2', null, { timeout: 2000 })
      .catch(() => { throw new Failure('health counter "tasks" did not reach 2'); });
    await waitVisible(page.locator(`[data-testid="ready"] [data-testid="ready-${first.id}"]`), 2000, 'the task in the ready queue');

    // The create form.
    await page.locator('[data-testid="new-title"]').fill('Checkout button misaligned on mobile');
    await page.locator('[data-testid="new-type"]').selectOption('bug');
    await page.locator('[data-testid="new-priority"]').selectOption('1');
    await page.locator('[data-testid="new-labels"]').fill('web, mobile');
    await page.locator('[data-testid="new-submit"]').click();
    const made = page.locator('[data-testid="col-open"] .card', { hasText: 'Checkout button misaligned on mobile' });
    await waitVisible(made, 2000, 'the card made with the form');
    const madeId = await made.getAttribute('data-id');
    const m = await api('GET', `/api/tasks/${madeId}`);
    check(m.type === 'bug' && m.priority === 1 && [...m.labels].sort().join(',') === 'mobile,web',
      `the form made ${JSON.stringify({ type: m.type, priority: m.priority, labels: m.labels })}`);
    check(await page.locator('[data-testid="new-title"]').inputValue() === '', 'the title field was not cleared');
    await shot('2-created');
  });

  await step('3 Done from the detail panel reaches the store', async () => {
    await card('open', first.id).click();
    const detail = page.locator('[data-testid="detail"]');
    await waitVisible(detail, 2000, 'the detail panel');
    await page.waitForFunction((id) => document.querySelector('[data-testid="detail"] .d-id')?.textContent === id,
      first.id, { timeout: 2000 }).catch(() => { throw new Failure('the detail panel does not show the clicked task'); });
    check((await detail.textContent()).includes('Receives events from the processor.'), 'the description is not shown');
    await detail.locator('[data-testid="action-done"]').click();
    let state = null;
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      state = (await cliJson(['show', first.id])).state;
      if (state === 'done') break;
      await sleep(100);
    }
    check(state === 'done', `braid show ${first.id} reports state ${state}, want done`);
    await waitVisible(card('done', first.id), 2000, `card ${first.id} in col-done`);
    check(await card('open', first.id).count() === 0, 'the card is still in col-open');
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="events"] .ev-kind')].some((e) => e.textContent === 'state changed'),
      null, { timeout: 2000 }).catch(() => { throw new Failure('the detail panel does not list the state change'); });
    await shot('3-done');
  });

  await step('4 a dependency added from the page blocks the task', async () => {
    A = await api('POST', '/api/tasks', { title: 'Ship the billing page', priority: 2, labels: ['web'] });
    B = await api('POST', '/api/tasks', { title: 'Design the billing schema', priority: 2, labels: ['db'] });
    await waitVisible(card('open', A.id), 2000, `card ${A.id}`);
    await page.keyboard.press('Escape');
    await card('open', A.id).click();
    await page.waitForFunction((id) => document.querySelector('[data-testid="detail"] .d-id')?.textContent === id,
      A.id, { timeout: 2000 }).catch(() => { throw new Failure(`the detail panel does not show ${A.id}`); });
    await page.locator('[data-testid="dep-input"]').fill(B.id);
    await page.locator('[data-testid="dep-add"]').click();
    const blocker = page.locator(`[data-testid="detail"] [data-testid="blocked-by"] [data-testid="blocker-${B.id}"]`);
    await waitVisible(blocker, 3000, `"blocked by ${B.id}" in the detail panel`);
    const why = await page.locator('[data-testid="why"]').textContent();
    check(why.includes(B.id), `the why box does not name ${B.id}: ${why}`);
    await waitVisible(card('open', A.id).locator('[data-testid="badge-blocked"]'), 2000, `the blocked badge on ${A.id}`);
    const w = await api('GET', `/api/tasks/${A.id}/why`);
    check(!w.ready && w.blocked_by.includes(B.id), `the server does not say ${A.id} is blocked by ${B.id}: ${JSON.stringify(w)}`);
    // The blocker is a link to its task.
    await blocker.locator('.id-link').click();
    await page.waitForFunction((id) => document.querySelector('[data-testid="detail"] .d-id')?.textContent === id,
      B.id, { timeout: 2000 }).catch(() => { throw new Failure(`clicking the blocker did not open ${B.id}`); });
    await card('open', A.id).click();
    await waitVisible(page.locator(`[data-testid="blocker-${B.id}"]`), 2000, `"blocked by ${B.id}" again`);
    await shot('4-blocked');
    // Work braid hands to a person carries a badge, live, and loses it when
    // the label goes.
    check(await card('open', B.id).locator('[data-testid="badge-needs-human"]').count() === 0, 'a needs-you badge before the label');
    await api('PATCH', `/api/tasks/${B.id}`, { add_labels: ['needs-human'] });
    await waitVisible(card('open', B.id).locator('[data-testid="badge-needs-human"]'), 2000, `the needs-you badge on ${B.id}`);
    await api('PATCH', `/api/tasks/${B.id}`, { remove_labels: ['needs-human'] });
    await page.waitForFunction((id) => !document.querySelector(`[data-testid="card-${id}"] [data-testid="badge-needs-human"]`),
      B.id, { timeout: 2000 }).catch(() => { throw new Failure(`the needs-you badge stayed on ${B.id}`); });
  });

  await step('4a comments: made on the page, shown by braid show; made by the CLI, shown live', async () => {
    await card('open', A.id).click();
    await page.waitForFunction((id) => document.querySelector('[data-testid="detail"] .d-id')?.textContent === id,
      A.id, { timeout: 2000 }).catch(() => { throw new Failure(`the detail panel does not show ${A.id}`); });
    await page.locator('[data-testid="comment-input"]').fill('Schema first, then the page.');
    await page.locator('[data-testid="comment-add"]').click();
    let shown = null;
    for (let i = 0; i < 50; i++) {
      shown = await cliJson(['show', A.id]);
      if ((shown.comments || []).length) break;
      await sleep(100);
    }
    check((shown.comments || []).some((c) => c.text === 'Schema first, then the page.'),
      `braid show ${A.id} does not list the comment: ${JSON.stringify(shown.comments)}`);
    await cliJson(['comment', A.id, 'Agreed <b>not bold</b>', '--as', 'cli-user']);
    const fromCli = page.locator('[data-testid="comments"] .comment-text', { hasText: 'Agreed <b>not bold</b>' });
    await waitVisible(fromCli, 3000, 'the comment made by the CLI in the detail panel');
    check(await page.locator('[data-testid="comments"] b').count() === 0, 'comment text was rendered as HTML');
  });

  await step('4b an epic shows its dependency graph in levels', async () => {
    const epic = await api('POST', '/api/tasks', { title: 'Billing v2', type: 'epic', priority: 1 });
    const c1 = await api('POST', '/api/tasks', { title: 'Schema migration', parent: epic.id });
    const c2 = await api('POST', '/api/tasks', { title: 'Invoice service', parent: epic.id, deps: [{ id: c1.id }] });
    const c3 = await api('POST', '/api/tasks', { title: 'Invoice UI', parent: epic.id, deps: [{ id: c2.id }, { id: B.id }] });
    const c4 = await api('POST', '/api/tasks', { title: 'Docs', parent: epic.id, deps: [{ id: c1.id, kind: 'related' }] });
    await waitVisible(card('open', epic.id), 2000, `card ${epic.id}`);
    await card('open', epic.id).click();
    const node = (id) => page.locator(`[data-testid="graph"] [data-testid="gnode-${id}"]`);
    for (const c of [c1, c2, c3, c4]) await waitVisible(node(c.id), 3000, `graph node ${c.id}`);
    await waitVisible(node(B.id), 1000, `graph node ${B.id} (outside the epic)`);
    // A child made with the form, its parent typed in, joins the open graph.
    await page.locator('[data-testid="new-title"]').fill('Release notes');
    await page.locator('[data-testid="new-type"]').selectOption('chore');
    await page.locator('[data-testid="new-parent"]').fill(epic.id);
    await page.locator('[data-testid="new-submit"]').click();
    const child = page.locator('[data-testid="graph"] g.node', { hasText: 'Release notes' });
    await waitVisible(child, 3000, 'the new child in the open epic\'s graph');
    await page.locator('[data-testid="new-parent"]').fill('');
    await page.locator('[data-testid="new-type"]').selectOption('task');
    const x = async (id) => Number(/translate\(([\d.]+)/.exec(await node(id).getAttribute('transform'))[1]);
    const [x1, x2, x3] = [await x(c1.id), await x(c2.id), await x(c3.id)];
    check(x1 < x2 && x2 < x3, `levels are not left to right along blocks edges: ${x1}, ${x2}, ${x3}`);
    check(await page.locator('[data-testid="graph"] path.edge').count() === 4, 'the graph does not draw its 4 edges');
    await page.locator('[data-testid="graph-section"]').scrollIntoViewIfNeeded();
    await shot('4b-epic-graph');
  });

  await step('4b1 needs you: an agent\'s question is listed and answered from the board', async () => {
    // The detail panel would cover the side panels.
    if (await page.locator('[data-testid="detail"]').isVisible()) await page.locator('[data-testid="detail-close"]').click();
    const W = await api('POST', '/api/tasks', { title: 'Pick the database for invoices', priority: 1, labels: ['db'] });
    await waitVisible(card('open', W.id), 2000, `card ${W.id}`);
    // A real run: the agent writes its question and exits; braid parks the
    // task. (Before step 4c claims a task: a run waits for other runners'
    // leases to end.)
    const out = await sh(['run', '--only', W.id]);
    console.log(`    braid run: ${out.trim().split('\n').pop()}`);
    const parked = await cliJson(['show', W.id]);
    check(parked.state === 'deferred' && parked.labels.includes('needs-human'),
      `the run left ${W.id} ${parked.state} with labels ${JSON.stringify(parked.labels)}, want deferred with needs-human`);
    const item = page.locator(`[data-testid="needs"] [data-testid="need-${W.id}"]`);
    await waitVisible(item, 3000, `${W.id} under Needs you`);
    const question = await item.locator('[data-testid="need-question"]').evaluate((el) =>
      ({ text: el.textContent, shown: el.innerText, ws: getComputedStyle(el).whiteSpace }));
    check(question.text === 'Which database should I use?\nPostgreSQL or SQLite?', `the question reads ${JSON.stringify(question.text)}`);
    check(question.shown.includes('\n') && question.ws === 'pre-wrap', `the question's lines are not kept apart (white-space ${question.ws})`);
    check(await item.locator('[data-testid="need-reason"]').textContent() === 'question', 'the reason is not shown as question');
    check(await item.locator('[data-testid="need-agent"]').textContent() === 'asker', 'the agent is not shown');
    const count = Number(await page.locator('[data-testid="needs"] h2 .count').textContent());
    check(count === await page.locator('[data-testid="needs"] .need').count() && count >= 1, `the Needs you count reads ${count}`);
    // The card says the same as the list.
    await waitVisible(card('deferred', W.id).locator('[data-testid="badge-needs-human"]'), 2000, `the needs-you badge on ${W.id}`);
    await shot('4b1-needs-you');
    // An empty answer: the server's refusal is shown beside the box.
    await item.locator(`[data-testid="need-send-${W.id}"]`).click();
    const error = item.locator(`[data-testid="need-error-${W.id}"]`);
    await waitVisible(error, 2000, 'the error beside the answer box');
    const message = await error.textContent();
    check(/answer needs some text/.test(message), `the error reads ${JSON.stringify(message)}`);
    console.log(`    empty answer refused: ${message}`);
    await item.locator(`[data-testid="need-answer-${W.id}"]`).fill('PostgreSQL.\nBilling already runs on it.');
    await item.locator(`[data-testid="need-send-${W.id}"]`).click();
    await item.waitFor({ state: 'detached', timeout: 3000 })
      .catch(() => { throw new Failure(`${W.id} stayed under Needs you after the answer`); });
    const shown = await cliJson(['show', W.id]);
    check(shown.state === 'open', `braid show ${W.id} reports state ${shown.state}, want open`);
    check(!shown.labels.includes('needs-human'), `braid show ${W.id} still has the needs-human label: ${JSON.stringify(shown.labels)}`);
    check((shown.comments || []).some((c) => c.text === 'PostgreSQL.\nBilling already runs on it.'),
      `the answer is not among the comments: ${JSON.stringify(shown.comments)}`);
    await waitVisible(card('open', W.id), 2000, `card ${W.id} back in col-open`);
    check(await card('open', W.id).locator('[data-testid="badge-needs-human"]').count() === 0, 'the needs-you badge stayed');
    // Also when the question is answered elsewhere: the list follows the events.
    const V = await api('POST', '/api/tasks', { title: 'Name the invoice queue', priority: 2 });
    await sh(['run', '--only', V.id]);
    const other = page.locator(`[data-testid="needs"] [data-testid="need-${V.id}"]`);
    await waitVisible(other, 3000, `${V.id} under Needs you`);
    await cliJson(['answer', V.id, 'invoices-out']);
    await other.waitFor({ state: 'detached', timeout: 3000 })
      .catch(() => { throw new Failure(`${V.id}, answered by the CLI, stayed under Needs you`); });
    await waitVisible(page.locator('[data-testid="needs"] .empty'), 2000, 'the empty Needs you panel');
  });

  let R;
  await step('4c running agents and live log tails', async () => {
    R = await api('POST', '/api/tasks', { title: 'Agent at work', priority: 1, agent: 'demo' });
    const dir = join(project, '.braid', 'logs', R.id);
    mkdirSync(dir, { recursive: true });
    const log = join(dir, '1-agent.log');
    writeFileSync(log, 'starting\nreading the task\n');
    await api('POST', `/api/tasks/${R.id}/claim`, { assignee: 'demo-agent' });
    await waitVisible(card('in_progress', R.id), 2000, `card ${R.id} in col-in_progress`);
    const runTail = page.locator(`[data-testid="runs"] [data-testid="run-tail-${R.id}"]`);
    await waitVisible(runTail, 3000, `the run of ${R.id} in the runs panel`);
    await page.waitForFunction((id) => document.querySelector(`[data-testid="run-tail-${id}"]`)?.textContent.includes('reading the task'),
      R.id, { timeout: 3000 }).catch(() => { throw new Failure('the runs panel does not show the log'); });
    await card('in_progress', R.id).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="log"]')?.textContent.includes('reading the task'),
      null, { timeout: 3000 }).catch(() => { throw new Failure('the detail panel does not show the log'); });
    const t0 = Date.now();
    appendFileSync(log, 'wrote src/billing.rs\ntests pass\n');
    await page.waitForFunction((id) => document.querySelector(`[data-testid="run-tail-${id}"]`)?.textContent.includes('tests pass') &&
      document.querySelector('[data-testid="detail"] [data-testid="log"]')?.textContent.includes('tests pass'),
    R.id, { timeout: 5000 }).catch(() => { throw new Failure('an appended log line did not reach the page within 5 s'); });
    console.log(`    appended log line shown ${Date.now() - t0} ms after the write`);
    await shot('4c-running-detail');
    await page.keyboard.press('Escape');
    await page.locator('[data-testid="detail"]').waitFor({ state: 'hidden', timeout: 2000 })
      .catch(() => { throw new Failure('Escape did not close the detail panel'); });
    await shot('4c-running');
    // Leave the task open: its live tail must survive the restart below.
    await card('in_progress', R.id).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="log"]')?.textContent.includes('tests pass'),
      null, { timeout: 3000 }).catch(() => { throw new Failure('reopening the task did not show its log'); });
  });

  await step('4d a rejected task file shows a notice', async () => {
    writeFileSync(join(project, '.braid', 'tasks', 'not-a-task.md'), 'this is {{ not a task file\n');
    const notice = page.locator('[data-testid="notices"] [data-testid="notice"]');
    await waitVisible(notice.first(), 5000, 'a sync_rejected notice');
    const text = await notice.first().innerText();
    check(text.includes('not-a-task.md'), `the notice does not name the file: ${text}`);
    console.log(`    notice: ${text.replace(/\s+/g, ' ').slice(0, 200)}`);
    await shot('4d-sync-notice');
    check(await notice.count() === 1, `${await notice.count()} notices for one file`);
    // Informational: how often the server records the rejection of one
    // unchanged file (once is expected).
    const h1 = await api('GET', '/api/health');
    await sleep(1000);
    const h2 = await api('GET', '/api/health');
    console.log(`    sync_rejected events for the unchanged file in one second: ${h2.last_seq - h1.last_seq}`);
    rmSync(join(project, '.braid', 'tasks', 'not-a-task.md'));
  });

  await step('4e costs: each card, each epic\'s sum, the total and the day budget', async () => {
    // The detail panel would cover the header's right end and the side panels
    // (step 4f opens it again).
    if (await page.locator('[data-testid="detail"]').isVisible()) await page.locator('[data-testid="detail-close"]').click();
    const epic = await api('POST', '/api/tasks', { title: 'Invoices v1', type: 'epic', priority: 1 });
    const c1 = await api('POST', '/api/tasks', { title: 'Invoice table', parent: epic.id });
    const c2 = await api('POST', '/api/tasks', { title: 'Invoice PDF', parent: epic.id });
    await waitVisible(card('open', c2.id), 2000, `card ${c2.id}`);
    const before = await api('GET', '/api/cost');
    check(before.total_usd === 0, `the ledger is not empty before the step: ${JSON.stringify(before)}`);
    await appendEvent('agent_finished', c1.id, finished('asker', 0.0123, 'sess-c1'));
    await appendEvent('agent_finished', c2.id, finished('asker', 0.025, 'sess-c2'));
    const sum = 0.0123 + 0.025;
    const cost = (id) => `[data-testid="card-${id}"] [data-testid="card-cost"]`;
    await waitText(cost(c1.id), usd(0.0123), 5000, `the cost on ${c1.id}`);
    await waitText(cost(c2.id), usd(0.025), 2000, `the cost on ${c2.id}`);
    await waitText(cost(epic.id), usd(sum), 2000, `the cost on epic ${epic.id}`);
    const server = await api('GET', '/api/cost');
    check(Math.abs(server.total_usd - sum) < 1e-9, `/api/cost says ${server.total_usd}, want ${sum}`);
    await waitText('[data-testid="cost-total"] b', usd(sum), 2000, 'the header total');
    await waitText('[data-testid="budget-day_usd"] .budget-text', `day_usd ${usd(sum)} / $10.00`, 2000, 'the day budget');
    const width = await page.locator('[data-testid="budget-day_usd"] .bar-fill').evaluate((el) => el.style.width);
    check(width === `${(sum / 10 * 100).toFixed(1)}%`, `the budget bar is ${width} wide`);
    console.log(`    cards ${usd(0.0123)} + ${usd(0.025)}, epic ${usd(sum)}, header total ${usd(sum)}, day_usd ${usd(sum)} / $10.00 (bar ${width})`);
    await shot('4e-costs');
  });

  await step('4f the running agent\'s latest action, until its attempt ends', async () => {
    const line = `[data-testid="runs"] [data-testid="run-activity-${R.id}"]`;
    await appendEvent('activity', R.id, { agent: 'demo', attempt: 1, action: 'Write /work/src/billing/hello.txt' });
    await waitText(line, 'Write /work/src/billing/hello.txt', 3000, `the activity of ${R.id}`);
    await appendEvent('activity', R.id, { agent: 'demo', attempt: 1, action: '$ cargo test -p billing' });
    await waitText(line, '$ cargo test -p billing', 3000, `the latest activity of ${R.id}`);
    await shot('4f-activity');
    // The attempt ends (with what it cost): the line goes, the cost comes.
    await appendEvent('agent_finished', R.id, finished('demo', 0.5, 'sess-r'));
    await page.waitForFunction((sel) => document.querySelector(sel)?.hidden === true, line, { timeout: 3000 })
      .catch(() => { throw new Failure(`the activity of ${R.id} stayed after agent_finished`); });
    const total = 0.0123 + 0.025 + 0.5;
    await waitText(`[data-testid="card-${R.id}"] [data-testid="card-cost"]`, usd(0.5), 5000, `the cost on ${R.id}`);
    await waitText('[data-testid="cost-total"] b', usd(total), 2000, 'the header total');
    await waitText('[data-testid="budget-day_usd"] .budget-text', `day_usd ${usd(total)} / $10.00`, 2000, 'the day budget');
    // Step 5 follows this task's log in the detail panel.
    await card('in_progress', R.id).click();
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="log"]')?.textContent.includes('tests pass'),
      null, { timeout: 3000 }).catch(() => { throw new Failure('reopening the task did not show its log'); });
  });

  await step('5 the page rides out a server restart and catches up', async () => {
    const port = server.port;
    const t0 = Date.now();
    const out = await stopServer(server);
    console.log(`    SIGTERM: exited with code ${out.code}, signal ${out.signal}, after ${Date.now() - t0} ms`);
    check(out.code === 0, `braid serve exited with code ${out.code} (signal ${out.signal}) on SIGTERM\n${server.stderr}`);
    await waitConn('reconnecting', 5000);
    const down = await cliJson(['add', 'Added while the server was down']);
    check(down.id, `braid add --json printed no id: ${JSON.stringify(down)}`);
    const t1 = Date.now();
    server = await startServerRetrying(port, 5000);
    check(server.port === port, `restarted on port ${server.port}, want ${port}`);
    await waitConn('live', 10_000);
    const live = Date.now();
    await waitVisible(card('open', down.id), Math.max(100, 10_000 - (Date.now() - t1)), `card ${down.id} (added while down)`);
    console.log(`    live again ${live - t1} ms after the restart; card ${down.id} shown ${Date.now() - t1} ms after it`);
    check(Date.now() - t1 <= 10_000, 'catching up took longer than 10 s');
    // It keeps working after the restart.
    const after = await api('POST', '/api/tasks', { title: 'After the restart', priority: 3 });
    await waitVisible(card('open', after.id), 1000, `card ${after.id} after the restart`);
    await page.waitForFunction((id) => document.querySelector(`[data-testid="run-tail-${id}"]`)?.textContent.includes('tests pass'),
      R.id, { timeout: 3000 }).catch(() => { throw new Failure('the runs panel lost its log tail after the restart'); });
    appendFileSync(join(project, '.braid', 'logs', R.id, '1-agent.log'), 'after the restart\n');
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="log"]')?.textContent.includes('after the restart'),
      null, { timeout: 5000 }).catch(() => { throw new Failure('the detail log tail did not resume after the restart'); });
    await shot('5-restarted');
  });

  await step('5b Fail asks for a reason and moves the card', async () => {
    await page.locator('[data-testid="action-fail"]').click();
    const reason = page.locator('[data-testid="fail-reason"]');
    await waitVisible(reason, 1000, 'the fail reason field');
    await reason.fill('tests time out on CI');
    await page.locator('[data-testid="fail-confirm"]').click();
    await waitVisible(card('failed', R.id), 2000, `card ${R.id} in col-failed`);
    const t = await api('GET', `/api/tasks/${R.id}`);
    check(t.state === 'failed' && t.close_reason === 'tests time out on CI', `the server has ${t.state} / ${t.close_reason}`);
    await waitVisible(page.locator('[data-testid="runs"] .empty'), 2000, 'the empty runs panel');
  });

  await step('5c a resume beyond the server\'s window reloads everything', async () => {
    const loads = Number(await page.evaluate(() => document.body.dataset.loads || '0'));
    const port = server.port;
    const out = await stopServer(server);
    check(out.code === 0, `braid serve exited with code ${out.code} on SIGTERM`);
    await waitConn('reconnecting', 5000);
    const made = [];
    for (let i = 1; i <= 5; i++) made.push((await cliJson(['add', `Offline task ${i}`])).id);
    const t1 = Date.now();
    server = await startServerRetrying(port, 5000);
    await waitConn('live', 10_000);
    for (const id of made) await waitVisible(card('open', id), Math.max(100, 10_000 - (Date.now() - t1)), `card ${id}`);
    const after = Number(await page.evaluate(() => document.body.dataset.loads || '0'));
    check(after > loads, `the page did not reload (loads ${loads} -> ${after}) after recovered:false`);
    console.log(`    5 cards made offline shown ${Date.now() - t1} ms after the restart (full loads ${loads} -> ${after})`);
  });

}

async function bigGraph() {
  await step('6 an epic of 300 tasks draws its graph', async () => {
    const epic = await api('POST', '/api/tasks', { title: 'Large migration', type: 'epic', priority: 2 });
    const ids = [];
    const t0 = Date.now();
    for (let i = 0; i < 300; i++) {
      const deps = [];
      if (i > 0 && i < 120) deps.push({ id: ids[i - 1] }); // a chain of 120
      else if (i >= 120) {
        deps.push({ id: ids[(i * 7) % 120] });
        const other = ids[(i * 13) % i];
        if (other !== deps[0].id) deps.push({ id: other });
      }
      ids.push((await api('POST', '/api/tasks', { title: `Step ${i}`, parent: epic.id, deps })).id);
      if (i % 20 === 19) await sleep(50); // stay well under the rate limit
    }
    console.log(`    made 300 tasks in ${Date.now() - t0} ms`);
    await waitVisible(card('open', epic.id), 5000, `card ${epic.id}`);
    await page.keyboard.press('Escape');
    await card('open', epic.id).click();
    const t1 = Date.now();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="graph"] g.node').length >= n, 300,
      { timeout: 10_000 }).catch(() => { throw new Failure('the graph did not draw 300 nodes within 10 s'); });
    console.log(`    graph of 300 nodes drawn ${Date.now() - t1} ms after the click`);
    const x = async (id) => Number(/translate\(([\d.]+)/.exec(await page.locator(`[data-testid="gnode-${id}"]`).getAttribute('transform'))[1]);
    const [first, last] = [await x(ids[0]), await x(ids[119])];
    check(last > first, `the end of the chain (${last}) is not right of its start (${first})`);
    await page.locator('[data-testid="graph-section"]').scrollIntoViewIfNeeded();
    await shot('6-big-graph');
  });
}

async function noErrors() {
  await step('7 no script errors, no error toasts, nothing the CSP had to stop', async () => {
    check(pageErrors.length === 0, `the page threw:\n${pageErrors.join('\n')}`);
    const bad = toasts.filter((t) => t.includes('toast-error'));
    check(bad.length === 0, `error toasts were shown:\n${bad.join('\n')}`);
    const res = await fetch(server.base + '/');
    const csp = res.headers.get('content-security-policy') || '';
    check(csp.includes("default-src 'self'") && csp.includes("frame-ancestors 'none'"), `the board's CSP is ${csp}`);
    const violations = await page.evaluate(() => document.documentElement.dataset.cspViolations || '');
    check(violations === '', `the board broke its own CSP: ${violations}`);
  });
}

async function attacker() {
  await step('7a a page on another origin, and one rebound to this machine, get nothing', async () => {
    const base = server.base;
    const wsBase = base.replace('http://', 'ws://');
    // The attacker's page, served from a second local origin.
    const html = `<!doctype html><title>evil</title><iframe id="f" src="${base}/"></iframe><script>
      (async () => {
        const r = {};
        try { const res = await fetch('${base}/api/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: 'planted by a page' }) }); r.fetch = 'status ' + res.status; } catch (e) { r.fetch = 'refused'; }
        try { await fetch('${base}/api/tasks', { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ title: 'planted without cors' }) }); r.nocors = 'sent'; } catch (e) { r.nocors = 'refused'; }
        r.ws = await new Promise((res) => { const ws = new WebSocket('${wsBase}/ws'); ws.onopen = () => res('open'); ws.onerror = () => res('refused'); setTimeout(() => res('timeout'), 5000); });
        r.sse = await new Promise((res) => { const es = new EventSource('${base}/events'); es.onopen = () => res('open'); es.onerror = () => { es.close(); res('refused'); }; setTimeout(() => res('timeout'), 5000); });
        window.__results = r;
      })();
    </script>`;
    const http = await import('node:http');
    const evil = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html' }); res.end(html); });
    await new Promise((res) => evil.listen(0, '127.0.0.1', res));
    const evilBase = `http://127.0.0.1:${evil.address().port}`;
    const tab = await context.newPage();
    try {
      await tab.goto(evilBase + '/');
      const r = await tab.waitForFunction(() => window.__results, null, { timeout: 15_000 }).then((h) => h.jsonValue())
        .catch(() => { throw new Failure('the attacker page did not finish'); });
      console.log(`    from ${evilBase}: ${JSON.stringify(r)}`);
      check(r.fetch === 'refused', `a cross-site fetch POST got through: ${r.fetch}`);
      check(r.ws === 'refused', `a cross-site WebSocket was ${r.ws}`);
      check(r.sse === 'refused', `a cross-site EventSource was ${r.sse}`);
      // The framed board: refused by frame-ancestors, so no board inside.
      let framed = 0;
      for (const f of tab.frames()) {
        if (f === tab.mainFrame()) continue;
        framed += await f.locator('[data-testid="col-open"]').count().catch(() => 0);
      }
      check(framed === 0, 'the board rendered inside another site\'s frame');
      // DNS rebinding: the same server under the attacker's name.
      const rebound = `http://evil.example:${server.port}`;
      const res = await tab.goto(rebound + '/');
      check(res && res.status() === 403, `GET / as evil.example answered ${res && res.status()}`);
      const post = await tab.evaluate(() => fetch('/api/tasks', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'planted by rebinding' }) }).then((x) => x.status));
      check(post === 403, `a rebound POST answered ${post}`);
      const ws = await tab.evaluate((u) => new Promise((res) => { const w = new WebSocket(u); w.onopen = () => res('open'); w.onerror = () => res('refused'); }),
        `ws://evil.example:${server.port}/ws`);
      check(ws === 'refused', `a rebound WebSocket was ${ws}`);
    } finally {
      await tab.close();
      evil.close();
    }
    const all = await api('GET', '/api/tasks?limit=1000');
    const planted = all.filter((t) => t.title.startsWith('planted'));
    check(planted.length === 0, `tasks were planted: ${planted.map((t) => t.title).join(', ')}`);
    // The board itself still works under its policy.
    const t = await api('POST', '/api/tasks', { title: 'Still live after the attack' });
    await waitVisible(card('open', t.id), 2000, `card ${t.id} after the attack`);
  });
}

async function tokens() {
  await step('8 with a token: the page takes ?token= and shows refusals', async () => {
    const token = 'board-test-token-0123456789abcdef';
    const port = server.port;
    const out = await stopServer(server);
    check(out.code === 0, `braid serve exited with code ${out.code} on SIGTERM`);
    server = await startServerRetrying(port, 5000, ['--token', token]);
    // Without a token: the API's refusal is shown, the page stays offline.
    const bare = await context.newPage();
    const seen = [];
    bare.on('console', () => {});
    await bare.exposeFunction('__braidToast2', (t) => seen.push(t));
    await bare.addInitScript(() => {
      new MutationObserver((ms) => {
        for (const m of ms) for (const n of m.addedNodes) {
          if (n.nodeType === 1 && n.matches('[data-testid="toast"]')) window.__braidToast2(n.querySelector('.toast-text').textContent);
        }
      }).observe(document, { childList: true, subtree: true });
    });
    await bare.goto(server.base + '/');
    await bare.locator('[data-testid="toast"]').first().waitFor({ timeout: 5000 })
      .catch(() => { throw new Failure('no toast when the server refused the page for want of a token'); });
    check(await bare.locator('[data-testid="conn"]').textContent() === 'reconnecting', 'the page without a token claims to be live');
    console.log(`    without a token: ${seen[0]}`);
    await bare.close();
    // With ?token=: it is used for fetch, the WebSocket and EventSource,
    // kept for the tab, and taken out of the address bar.
    const authed = await context.newPage();
    await authed.goto(server.base + '/?token=' + token);
    await authed.waitForFunction(() => document.querySelector('[data-testid="conn"]')?.textContent === 'live', null, { timeout: 10_000 })
      .catch(() => { throw new Failure('the page with ?token= did not go live'); });
    check(!authed.url().includes('token='), `the token is still in the address bar: ${authed.url()}`);
    const res = await fetch(server.base + '/api/tasks', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ title: 'Made with a token' }),
    });
    check(res.status === 201, `POST with the token answered ${res.status}`);
    const t = await res.json();
    await authed.locator(`[data-testid="col-open"] [data-testid="card-${t.id}"]`).waitFor({ timeout: 2000 })
      .catch(() => { throw new Failure('a task made with the token did not reach the page'); });
    await authed.reload();
    await authed.waitForFunction(() => document.querySelector('[data-testid="conn"]')?.textContent === 'live', null, { timeout: 10_000 })
      .catch(() => { throw new Failure('after a reload (token from sessionStorage) the page did not go live'); });
    await authed.close();
  });
}

async function resync() {
  await step('9 a burst past a tiny send queue: the page resyncs and shows everything', async () => {
    const port = server.port;
    const out = await stopServer(server);
    check(out.code === 0, `braid serve exited with code ${out.code} on SIGTERM`);
    appendFileSync(join(project, '.braid', 'config.toml'), 'send_queue = 2\n');
    server = await startServerRetrying(port, 5000);
    await waitConn('live', 10_000);
    const loads = Number(await page.evaluate(() => document.body.dataset.loads || '0'));
    const made = await Promise.all(Array.from({ length: 40 }, (_, i) =>
      // P0: the Open column draws its first 300 cards, highest priority first.
      api('POST', '/api/tasks', { title: `Burst ${i}`, priority: 0 })));
    const t0 = Date.now();
    for (const t of made) await waitVisible(card('open', t.id), Math.max(100, 10_000 - (Date.now() - t0)), `card ${t.id} of the burst`);
    await waitConn('live', 10_000);
    const after = Number(await page.evaluate(() => document.body.dataset.loads || '0'));
    const closeCode = await page.evaluate(() => document.body.dataset.closeCode || '');
    console.log(`    40 cards shown ${Date.now() - t0} ms after the burst; full loads ${loads} -> ${after}; last close code ${closeCode}`);
  });
}

// ------------------------------------------------------------ review steps

function git(args) {
  return new Promise((res, rej) => {
    execFile('git', args, { cwd: rproject, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) rej(new Failure(`git ${args.join(' ')} failed: ${stderr || err.message}`));
      else res(stdout);
    });
  });
}

const rsh = (args, opts = {}) => sh(args, { cwd: rproject, ...opts });
const rjson = (args) => cliJson(args, { cwd: rproject });

// Polls the CLI until `braid show ID` reports `state` (bounded).
async function waitState(id, state, ms) {
  const until = Date.now() + ms;
  let got = null;
  while (Date.now() < until) {
    got = (await rjson(['show', id])).state;
    if (got === state) return;
    await sleep(100);
  }
  throw new Failure(`braid show ${id} reports ${got} after ${ms} ms, want ${state}`);
}

// Rows of the drawn diff (one per line shown, either layout), in a block.
function diffRows(path) {
  return page.evaluate((p) => {
    const root = p ? document.querySelector(`.rv-file[data-path="${p}"]`) : document.querySelector('[data-testid="review-diff"]');
    if (!root) return 0;
    return root.querySelectorAll('td.d2h-code-linenumber:not(.d2h-info), .d2h-file-side-diff + .d2h-file-side-diff td.d2h-code-side-linenumber:not(.d2h-info)').length;
  }, path || null);
}

async function waitDiffReady(ms, what) {
  await page.waitForFunction(() => document.querySelector('[data-testid="review-diff"]')?.dataset.state === 'ready',
    null, { timeout: ms, polling: 20 })
    .catch(async () => {
      const more = await page.locator('[data-testid="review-more"]').textContent().catch(() => null);
      throw new Failure(`${what}: the diff was not drawn within ${ms} ms (it says ${JSON.stringify(more)})`);
    });
}

async function openReviewByHash(id) {
  await page.evaluate((h) => { location.hash = h; }, `#review/${id}`);
  await page.waitForFunction((x) => document.querySelector('[data-testid="review-id"]')?.textContent === x,
    id, { timeout: 5000 }).catch(() => { throw new Failure(`#review/${id} did not open its review page`); });
}

// The new side's line number `line` of `path`, in the layout shown.
function newLineNumber(path, line) {
  const file = page.locator(`[data-testid="review-diff"] .rv-file[data-path="${path}"]`);
  return file.locator('td.d2h-code-linenumber', { has: page.locator('.line-num2', { hasText: new RegExp(`^\\s*${line}\\s*$`) }) })
    .or(file.locator('.d2h-file-side-diff + .d2h-file-side-diff td.d2h-code-side-linenumber', { hasText: new RegExp(`^\\s*${line}\\s*$`) }));
}

async function review() {
  let X;
  let Y;
  let K;
  let M;
  const comment = 'Number from zero: this should read 4 <i>not</i> 5.';
  // What earlier steps showed (step 8's refusal toast, say) is theirs.
  const errorsBefore = pageErrors.length;
  const toastsBefore = toasts.length;

  await step('10 a git project whose agents leave four branches in review', async () => {
    await git(['init', '-q', '-b', 'main']);
    await git(['config', 'user.email', 'review@example.com']);
    await git(['config', 'user.name', 'Reviewer']);
    mkdirSync(join(rproject, 'src'));
    writeFileSync(join(rproject, 'src', 'main.rs'), 'fn main() {\n    let a = 1;\n    println!("{}", a);\n}\n');
    writeFileSync(join(rproject, 'README'), 'hi\n');
    await git(['add', '-A']);
    await git(['commit', '-qm', 'start']);
    await rsh(['init']);
    // braid init ends the file with [merge] into = "main": the first line
    // joins that table. The writer's second attempt changes line 5 (step
    // 10c makes a comment on it outdated).
    appendFileSync(join(rproject, '.braid', 'config.toml'), String.raw`require_approval = true

[[agent]]
name = "writer"
command = ["sh", "-c", 'if [ -f work-$BRAID_TASK.txt ]; then sed -i "5s/$/ (fixed)/" work-$BRAID_TASK.txt; else seq 1 30 | sed "s/^/line $BRAID_TASK /" > work-$BRAID_TASK.txt; fi; printf "fn main() {\n    let a = 2;\n    let b = \"<b>x</b>\";\n    println!(\"{} {}\", a, b);\n}\n" > src/main.rs; git add -A; git commit -qm work']

[[agent]]
name = "bulk"
command = ["sh", "-c", 'for i in 1 2 3 4 5 6 7 8 9 10; do seq 1 500 | sed "s/^/bulk $i line /" > bulk-$i.txt; done; git add -A; git commit -qm bulk']

[[agent]]
name = "mixed"
command = ["sh", "-c", 'for i in 1 2 3 4 5 6 7 8; do seq 1 800 | sed "s/^/part $i row /" > part-$i.txt; done; seq 1 3000 > big.txt; printf "PK\000\001\002" > blob.bin; printf "a\nb\n" > README; git add -A; git commit -qm mixed']

[[gate]]
name = "check"
command = ["sh", "-c", "echo checking the branch; ls"]
`);
    X = (await rjson(['add', 'Number the work lines <em>now</em>'])).id;
    Y = (await rjson(['add', 'Second piece of work'])).id;
    K = (await rjson(['add', 'Bulk: 5,000 new lines', '--agent', 'bulk'])).id;
    M = (await rjson(['add', 'Mixed: pages, a large file, a binary', '--agent', 'mixed'])).id;
    const out = await rsh(['run'], { timeout: 120_000 });
    console.log(`    braid run: ${out.trim().split('\n').pop()}`);
    for (const id of [X, Y, K, M]) {
      const t = await rjson(['show', id]);
      check(t.state === 'review', `braid run left ${id} ${t.state}, want review`);
    }
    rserver = await startServer(0, [], rproject);
    console.log(`    serving ${rproject} on ${rserver.base}`);
    if (!page) await openBrowser();
    const res = await page.goto(rserver.base + '/', { waitUntil: 'domcontentloaded' });
    check(res && res.ok(), `GET / answered ${res && res.status()}`);
    await waitConn('live', 10_000);
    await waitText('[data-testid="review-badge"] b', '4', 5000, 'the header\'s review badge');
    // Marks this document: a reload would lose it.
    await page.evaluate(() => { window.__sameDocument = true; });
  });

  await step('10a the review page from the task: the diff, highlighted, unified and side by side', async () => {
    await card('review', X).click();
    const link = page.locator('[data-testid="detail"] [data-testid="action-review"]');
    await waitVisible(link, 2000, 'the Review button in the detail panel');
    await link.click();
    await page.waitForFunction((id) => location.hash === `#review/${id}`, X, { timeout: 2000 })
      .catch(() => { throw new Failure(`the address is ${page.url()}, want #review/${X}`); });
    await waitDiffReady(10_000, `the review of ${X}`);
    check(await page.locator('[data-testid="detail"]').isHidden(), 'the detail panel stayed over the review page');
    check(await page.locator('[data-testid="board"]').isHidden(), 'the board stayed beside the review page');
    const title = await page.locator('[data-testid="review-title"]').textContent();
    check(title === 'Number the work lines <em>now</em>', `the title reads ${JSON.stringify(title)}`);
    check(await page.locator('[data-testid="review"] em').count() === 0, 'the title was parsed as HTML');
    await waitText('[data-testid="review-state"]', 'Review', 2000, 'the state chip');
    const files = await page.locator('[data-testid="review-files"] .rv-frow').evaluateAll((els) => els.map((e) => e.dataset.path));
    check(JSON.stringify(files) === JSON.stringify(['src/main.rs', `work-${X}.txt`]), `the file list is ${JSON.stringify(files)}`);
    const counts = await page.locator(`[data-testid="review-files"] .rv-frow[data-path="work-${X}.txt"] .rv-fstat`).textContent();
    check(counts.replace(/\s+/g, ' ') === '+30 −0', `work-${X}.txt counts read ${JSON.stringify(counts)}`);
    const line5 = page.locator(`[data-testid="review-diff"] .rv-file[data-path="work-${X}.txt"] .d2h-code-line-ctn`, { hasText: new RegExp(`^line ${X} 5$`) });
    await waitVisible(line5, 2000, `"line ${X} 5" in the diff`);
    check(await diffRows(`work-${X}.txt`) === 30, `work-${X}.txt shows ${await diffRows(`work-${X}.txt`)} rows, want 30`);
    // Rust is highlighted; the file's text stays text.
    check(await page.locator('.rv-file[data-path="src/main.rs"] .hljs-keyword').count() > 0, 'src/main.rs is not highlighted');
    const code = await page.locator('.rv-file[data-path="src/main.rs"]').textContent();
    check(code.includes('"<b>x</b>"'), 'the line with markup in it is not shown as text');
    check(await page.locator('[data-testid="review-diff"] b').count() === 0, 'the diff\'s text was parsed as HTML');
    // The gate, its log, the merge plan's view.
    await waitVisible(page.locator('[data-testid="review-gates"] .rv-gate.is-pass', { hasText: 'check' }), 2000, 'the passed gate');
    await page.locator('[data-testid="review-gate-log"]').first().click();
    await page.waitForFunction(() => document.querySelector('[data-testid="review-log"]')?.textContent.includes('checking the branch'),
      null, { timeout: 3000 }).catch(() => { throw new Failure('the gate\'s log did not open'); });
    const merge = await page.locator('[data-testid="review-merge"]').textContent();
    check(/approv/i.test(merge), `the merge plan does not say it waits for an approval: ${merge}`);
    // An attempt with its cost: the ledger learns it live.
    await appendEvent('agent_finished', X, finished('writer', 0.0421, 'sess-x'), rproject);
    await page.waitForFunction(() => document.querySelector('[data-testid="review-attempts"]')?.textContent.includes('$0.0421'),
      null, { timeout: 5000 }).catch(() => { throw new Failure('the attempt and its cost did not appear'); });
    await shot('10a-review-unified');
    await page.locator('[data-testid="review-view-split"]').click();
    await page.waitForFunction((p) => document.querySelectorAll(`.rv-file[data-path="${p}"] .d2h-file-side-diff`).length === 2,
      `work-${X}.txt`, { timeout: 3000 }).catch(() => { throw new Failure('Side by side did not draw two sides'); });
    await waitVisible(line5, 2000, `"line ${X} 5" side by side`);
    check(await diffRows(`work-${X}.txt`) === 30, `side by side, work-${X}.txt shows ${await diffRows(`work-${X}.txt`)} rows`);
    await shot('10a-review-split');
  });

  await step('10b a line comment and Request changes reach the agent\'s prompt', async () => {
    // The server's refusal, in its words: a request for changes needs a message.
    await page.locator('[data-testid="review-reject"]').click();
    const error = page.locator('[data-testid="review-error"]');
    await waitVisible(error, 3000, 'the refusal of a request without a message');
    const refusal = await error.textContent();
    check(/say what to change/.test(refusal), `the refusal reads ${JSON.stringify(refusal)}`);
    console.log(`    no message: ${refusal}`);
    // A comment on line 5, side by side (the new side).
    await newLineNumber(`work-${X}.txt`, 5).click();
    const input = page.locator('[data-testid="review-comment-input"]');
    await waitVisible(input, 2000, 'the comment box under line 5');
    await input.fill(comment);
    await page.locator('[data-testid="review-comment-add"]').click();
    const pendingItem = page.locator('[data-testid="review-pending-item"]');
    await waitVisible(pendingItem, 2000, 'the pending comment beside the diff');
    check((await pendingItem.textContent()).includes(`work-${X}.txt:5`), `the pending comment is not on work-${X}.txt:5`);
    const inline = page.locator(`.rv-file[data-path="work-${X}.txt"] [data-testid="review-inline-pending"]`);
    await waitVisible(inline, 2000, 'the pending comment under its line');
    // Side by side, the left side keeps a row of the same height beside it.
    const heights = await inline.evaluate((el) => {
      const row = el.closest('tr');
      const sides = [...el.closest('.rv-file').querySelectorAll('.d2h-file-side-diff')];
      const i = [...sides[1].querySelectorAll('tbody > tr')].indexOf(row);
      const left = sides[0].querySelectorAll('tbody > tr')[i];
      return [row.getBoundingClientRect().height, left ? left.getBoundingClientRect().height : -1, left ? left.className : ''];
    });
    check(heights[2].includes('rv-note-spacer') && Math.abs(heights[0] - heights[1]) < 1,
      `the two sides are out of step beside the comment: ${JSON.stringify(heights)}`);
    await shot('10b-review-comment-split');
    // Back to one column: the pending comment follows, under line 5.
    await page.locator('[data-testid="review-view-unified"]').click();
    await waitVisible(inline, 3000, 'the pending comment in the unified layout');
    const under = await inline.evaluate((el) => {
      const row = el.closest('tr').previousElementSibling;
      return row && row.querySelector('.line-num2')?.textContent.trim();
    });
    check(under === '5', `the pending comment sits under line ${under}, want 5`);
    check(await page.locator('[data-testid="review-diff"] i').count() === 0, 'comment text was parsed as HTML');
    await page.locator('[data-testid="review-message"]').fill('Start counting at zero, please.');
    await shot('10b-review-comment');
    await page.locator('[data-testid="review-reject"]').click();
    await waitState(X, 'open', 5000);
    await waitText('[data-testid="review-state"]', 'Open', 3000, 'the state chip after Request changes');
    const context = await rsh(['context', X]);
    check(context.includes(comment), `braid context ${X} lacks the comment:\n${context}`);
    check(context.includes(`line ${X} 5`), `braid context ${X} lacks the code of line 5:\n${context}`);
    check(context.includes('Start counting at zero, please.'), `braid context ${X} lacks the message`);
    // The page: the decision, the comment in the list and under its line.
    await waitVisible(page.locator('[data-testid="review-decisions"] .rv-decision[data-kind="changes_requested"]'), 3000, 'the request for changes');
    await waitVisible(page.locator(`.rv-file[data-path="work-${X}.txt"] [data-testid="review-inline-comment"]`), 3000, 'the sent comment under its line');
    check(await page.locator('[data-testid="review-pending-item"]').count() === 0, 'the pending list was not emptied');
    check(await page.locator('[data-testid="review-comments"] [data-testid="review-outdated"]').count() === 0, 'a fresh comment is marked outdated');
    check(await page.locator('[data-testid="review-approve"]').isDisabled(), 'Approve is offered for a task that is not in review');
    await waitText('[data-testid="review-badge"] b', '3', 3000, 'the review badge after Request changes');
    await shot('10b-review-sent');
  });

  await step('10c the next attempt changes the line: its comment is outdated, live', async () => {
    const out = await rsh(['run', '--only', X], { timeout: 60_000 });
    console.log(`    braid run --only ${X}: ${out.trim().split('\n').pop()}`);
    await waitState(X, 'review', 5000);
    await waitText('[data-testid="review-state"]', 'Review', 5000, 'the state chip after the new attempt');
    await waitVisible(page.locator('[data-testid="review-comments"] [data-testid="review-outdated"]'), 5000, 'the outdated mark');
    await waitVisible(page.locator(`.rv-file[data-path="work-${X}.txt"] .d2h-code-line-ctn`, { hasText: `line ${X} 5 (fixed)` }), 5000, 'the changed line');
    check(await page.locator('[data-testid="review-inline-comment"]').count() === 0, 'an outdated comment is still shown under a line');
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await waitText('[data-testid="review-badge"] b', '4', 3000, 'the review badge after the new attempt');
    await shot('10c-review-outdated');
  });

  await step('10d Approve from the page; braid merge run lands it; page and board follow', async () => {
    await page.locator('[data-testid="review-badge"]').click();
    const item = page.locator(`[data-testid="review-list"] [data-testid="review-item-${Y}"]`);
    await waitVisible(item, 3000, `${Y} in the review list`);
    await item.click();
    await page.waitForFunction((id) => document.querySelector('[data-testid="review-id"]')?.textContent === id,
      Y, { timeout: 3000 }).catch(() => { throw new Failure(`the review list did not open ${Y}`); });
    await waitDiffReady(10_000, `the review of ${Y}`);
    await page.locator('[data-testid="review-approve"]').click();
    await waitVisible(page.locator('[data-testid="review-approved"]'), 3000, 'the Approved mark');
    await waitVisible(page.locator('[data-testid="review-decisions"] .rv-decision[data-kind="approved"]'), 3000, 'the approval among the decisions');
    await waitText('[data-testid="review-badge"] b', '3', 3000, 'the review badge after the approval');
    await page.waitForFunction(() => /Lands with the next merge run/.test(document.querySelector('[data-testid="review-merge-status"]')?.textContent || ''),
      null, { timeout: 3000 }).catch(() => { throw new Failure('the merge plan does not take the approved branch'); });
    await shot('10d-review-approved');
    const out = await rsh(['merge', 'run'], { timeout: 60_000 });
    console.log(`    braid merge run: ${out.trim().split('\n').pop()}`);
    await waitState(Y, 'done', 5000);
    const others = await Promise.all([X, K, M].map((id) => rjson(['show', id])));
    check(others.every((t) => t.state === 'review'), `unapproved work landed: ${others.map((t) => `${t.id} ${t.state}`).join(', ')}`);
    await waitText('[data-testid="review-state"]', 'Done', 5000, 'the state chip after the merge');
    const landed = await page.locator('[data-testid="review-merge-status"]').textContent();
    check(/merged into main/.test(landed), `the merge section reads ${JSON.stringify(landed)} after the merge`);
    check(await page.locator('[data-testid="review-approve"]').isDisabled(), 'Approve is offered for merged work');
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await shot('10d-review-merged');
    await page.locator('[data-testid="review-back"]').click();
    await waitVisible(card('done', Y), 3000, `card ${Y} in col-done`);
    check(await page.locator('[data-testid="review"]').isHidden(), 'the review page stayed open');
  });

  await step('10e a diff of 5,000 changed lines is drawn whole', async () => {
    const t0 = Date.now();
    await openReviewByHash(K);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="review-diff"] td.d2h-code-linenumber:not(.d2h-info)').length >= 5000,
      null, { timeout: 30_000, polling: 20 }).catch(async () => {
      throw new Failure(`5,000 rows were not drawn within 30 s (${await diffRows()} were)`);
    });
    const wall = Date.now() - t0;
    await waitDiffReady(5000, `the review of ${K}`);
    const own = await page.evaluate(() => document.querySelector('[data-testid="review"]').dataset.renderMs);
    console.log(`    review render 5000 lines: ${wall} ms (the page's own count, open to drawn: ${own} ms)`);
    const rows = await diffRows();
    check(rows === 5000, `the diff shows ${rows} rows, want 5000`);
    check(await page.locator('[data-testid="review-diff"] .rv-file').count() === 10, 'the diff does not show its 10 files');
    check(await page.locator('[data-testid="review-more"]').getAttribute('data-done') === 'true', 'the diff says more is to come');
    await shot('10e-review-5000-lines');
  });

  await step('10f a branch past one page: more as the reader scrolls, a large file on asking, a binary named', async () => {
    await openReviewByHash(M);
    await waitDiffReady(10_000, `the review of ${M}`);
    // Page one: files up to 5,000 changed lines (big.txt is left out).
    check(await page.locator('.rv-file[data-path="part-8.txt"]').count() === 0, 'the second page came before any scrolling');
    check(await page.locator('[data-testid="review-files"] .rv-frow').count() === 11, 'the file list does not name all 11 files');
    check((await page.locator('.rv-file[data-path="blob.bin"]').textContent()).includes('Binary file'), 'the binary file is not summarised');
    const big = page.locator('.rv-file[data-path="big.txt"]');
    check((await big.textContent()).includes('3000 lines changed'), `big.txt is not summarised: ${await big.textContent()}`);
    check(await diffRows('big.txt') === 0, 'big.txt was drawn without asking');
    await page.locator('.rv-main').evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await page.waitForFunction(() => document.querySelectorAll('.rv-file[data-path="part-8.txt"] td.d2h-code-linenumber:not(.d2h-info)').length === 800,
      null, { timeout: 10_000 }).catch(() => { throw new Failure('scrolling to the end did not bring the second page'); });
    check(await page.locator('[data-testid="review-more"]').getAttribute('data-done') === 'true', 'the diff says more is to come');
    await big.locator('[data-testid="review-show-large"]').click();
    await page.waitForFunction(() => document.querySelectorAll('.rv-file[data-path="big.txt"] td.d2h-code-linenumber:not(.d2h-info)').length === 3000,
      null, { timeout: 10_000 }).catch(() => { throw new Failure('Show did not draw big.txt\'s 3000 lines'); });
    const rows = await diffRows();
    check(rows === 3 + 3000 + 8 * 800, `the whole branch shows ${rows} rows, want ${3 + 3000 + 8 * 800}`);
    await page.locator('[data-testid="review-files"] .rv-fname', { hasText: 'README' }).click();
    await shot('10f-review-paged');
  });

  await step('10g no script errors, no error toasts, nothing the CSP had to stop', async () => {
    const thrown = pageErrors.slice(errorsBefore);
    check(thrown.length === 0, `the page threw:\n${thrown.join('\n')}`);
    const bad = toasts.slice(toastsBefore).filter((t) => t.includes('toast-error'));
    check(bad.length === 0, `error toasts were shown:\n${bad.join('\n')}`);
    const violations = await page.evaluate(() => document.documentElement.dataset.cspViolations || '');
    check(violations === '', `the board broke its own CSP: ${violations}`);
    const res = await fetch(rserver.base + '/vendor/diff2html.js');
    check(res.ok, `/vendor/diff2html.js answered ${res.status}`);
  });
}

// ------------------------------------------------------- first-look steps

const fsh = (args, opts = {}) => sh(args, { cwd: fproject, ...opts });
const fjson = (args) => cliJson(args, { cwd: fproject });
const fapi = (method, path, body) => api(method, path, body, fserver.base);

async function firstLook() {
  // What each column holds after the setup, by state.
  const want = { open: [], in_progress: [], review: [], done: [], failed: [], deferred: [], cancelled: [] };
  let P;
  let Q;

  await step('11 a new project at 1400 px: the first load shows its tasks at once, never "reconnecting"', async () => {
    await fsh(['init']);
    const add = async (title, ...more) => (await fjson(['add', title, ...more])).id;
    // A task in every state: open (one blocked by another), in progress (a
    // claim by hand), review (imported: only an agent's run leaves work
    // there), done, failed, deferred, cancelled.
    P = await add('Pick the invoice number format', '--priority', '1');
    Q = await add('Print invoices as PDF', '--priority', '1');
    await fsh(['dep', 'add', Q, P]);
    want.open.push(P, Q, await add('Write the onboarding guide'));
    const ip = await add('Tidy the settings page');
    await fsh(['claim', ip, '--as', 'sam']);
    want.in_progress.push(ip);
    const done = await add('Set up the repository');
    await fsh(['done', done]);
    want.done.push(done);
    const failedId = await add('Migrate the old invoices');
    await fsh(['claim', failedId, '--as', 'sam']);
    await fsh(['fail', failedId, '--reason', 'the old export is unreadable']);
    want.failed.push(failedId);
    const deferred = await add('Dark mode');
    await fsh(['defer', deferred]);
    want.deferred.push(deferred);
    const cancelled = await add('Fax support');
    await fsh(['cancel', cancelled]);
    want.cancelled.push(cancelled);
    const now = new Date().toISOString();
    const file = join(work, 'first-review.jsonl');
    writeFileSync(file, [
      { record: 'braid-export', version: 1 },
      { record: 'task', id: 'br-rv01', title: 'Invoice totals', type: 'task', priority: 2, state: 'review', labels: [], created_at: now, updated_at: now, deps: [] },
    ].map((x) => JSON.stringify(x)).join('\n') + '\n');
    await fsh(['import', file]);
    want.review.push('br-rv01');
    fserver = await startServer(0, [], fproject);
    console.log(`    serving ${fproject} on ${fserver.base}`);
    if (!page) await openBrowser();
    await page.setViewportSize({ width: 1400, height: 900 });
    // Every text the connection indicator shows, from the moment the parser
    // makes it (the screenshot below may come after the page went live).
    await page.addInitScript(() => {
      const said = window.__connSaid = [];
      new MutationObserver(() => {
        const text = document.querySelector('[data-testid="conn"]')?.textContent;
        if (text !== undefined && said[said.length - 1]?.text !== text) said.push({ text, at: Math.round(performance.now()) });
      }).observe(document, { childList: true, subtree: true, characterData: true });
    });
    // No wait between the load and the screenshot: what it shows is what a
    // reader sees as the page finishes loading.
    const res = await page.goto(fserver.base + '/', { waitUntil: 'load' });
    await shot('11-first-load');
    const seen = await page.evaluate((ids) => {
      const nav = performance.getEntriesByType('navigation')[0];
      const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? null;
      return {
        shown: ids.filter((id) => document.querySelector(`[data-testid="card-${id}"]`)?.checkVisibility() === true),
        conn: document.querySelector('[data-testid="conn"]').textContent,
        said: window.__connSaid || [],
        reconnecting: document.body.innerText.toLowerCase().includes('reconnecting'),
        dcl: nav.domContentLoadedEventStart,
        load: nav.loadEventStart,
        firstCards: mark('braid:first-cards'),
        now: performance.now(),
      };
    }, want.open);
    check(res && res.ok(), `GET / answered ${res && res.status()}`);
    const ms = (v) => (v === null ? 'none' : `${Math.round(v)} ms`);
    const said = seen.said.map((x) => `"${x.text}" at ${x.at} ms`).join(', then ');
    console.log(`    first card drawn ${ms(seen.firstCards)} after navigation start (DOMContentLoaded ${ms(seen.dcl)}, load ${ms(seen.load)}, checked at ${ms(seen.now)})`);
    console.log(`    the indicator said ${said}`);
    check(!seen.reconnecting, `the page says "reconnecting" after loading (indicator "${seen.conn}")`);
    check(seen.said.length > 0 && seen.said.every((x) => x.text !== 'reconnecting'), `the indicator said "reconnecting" before any attempt failed: ${said}`);
    check(seen.shown.length === want.open.length, `right after the load the page shows ${seen.shown.length} of the ${want.open.length} open cards`);
    await waitConn('live', 10_000);
  });

  await step('11a at 1400 px every column is in view and none scrolls sideways; a folded one opens', async () => {
    for (const [st, ids] of Object.entries(want)) {
      await waitText(`[data-testid="col-${st}"] .count`, String(ids.length), 5000, `the count of col-${st}`);
    }
    const measure = () => page.evaluate(() => {
      const board = document.querySelector('[data-testid="board"]');
      const de = document.documentElement;
      return {
        board: [board.scrollWidth, board.clientWidth],
        doc: [de.scrollWidth, de.clientWidth],
        view: [innerWidth, innerHeight],
        cols: [...board.querySelectorAll('.col')].map((c) => {
          const r = c.querySelector('header').getBoundingClientRect();
          return { state: c.dataset.state, left: r.left, right: r.right, top: r.top, bottom: r.bottom, folded: c.classList.contains('is-folded'), text: c.querySelector('header').textContent };
        }),
      };
    });
    const fits = (g, when) => {
      check(g.board[0] <= g.board[1], `${when}: the board scrolls sideways (scrollWidth ${g.board[0]} > clientWidth ${g.board[1]})`);
      check(g.doc[0] <= g.doc[1], `${when}: the page scrolls sideways (scrollWidth ${g.doc[0]} > clientWidth ${g.doc[1]})`);
      check(g.cols.length === 7, `${when}: ${g.cols.length} columns, want 7`);
      for (const c of g.cols) {
        check(c.left >= 0 && c.right <= g.view[0] && c.top >= 0 && c.bottom <= g.view[1] && c.right > c.left,
          `${when}: the header of col-${c.state} is not within the ${g.view[0]}x${g.view[1]} viewport: ${JSON.stringify(c)}`);
        // A folded column still says what it is and what it holds.
        check(c.text.includes(c.state === 'in_progress' ? 'In progress' : c.state[0].toUpperCase() + c.state.slice(1)) &&
          c.text.includes(String(want[c.state].length)), `${when}: col-${c.state}'s header reads ${JSON.stringify(c.text)}`);
      }
    };
    const g = await measure();
    fits(g, 'at first');
    const folded = g.cols.filter((c) => c.folded).map((c) => c.state);
    console.log(`    board ${g.board[0]}/${g.board[1]} px, page ${g.doc[0]}/${g.doc[1]} px; folded: ${folded.join(', ') || 'none'}`);
    for (const id of want.open) await waitVisible(card('open', id), 1000, `card ${id} in col-open`);
    await shot('11a-columns-1400');
    // Every column holds a task here, so some fold: a click opens one, and
    // another folds in its place.
    check(folded.length > 0, 'seven full columns fit at 1400 px without folding any: the test shows nothing');
    const st = folded[folded.length - 1];
    await page.locator(`[data-testid="col-${st}"] > header`).click();
    await waitVisible(card(st, want[st][0]), 2000, `card ${want[st][0]} in the opened col-${st}`);
    const g2 = await measure();
    fits(g2, `after opening col-${st}`);
    console.log(`    opened col-${st}; folded now: ${g2.cols.filter((c) => c.folded).map((c) => c.state).join(', ')}`);
    await shot('11a-column-opened');
    // And a click on its header folds it again.
    await page.locator(`[data-testid="col-${st}"] > header`).click();
    await card(st, want[st][0]).waitFor({ state: 'hidden', timeout: 2000 })
      .catch(() => { throw new Failure(`col-${st} did not fold again`); });
    fits(await measure(), `after folding col-${st} again`);
  });

  await step('11b a blocked task\'s Done is disabled and says what blocks it', async () => {
    const t = await fapi('GET', `/api/tasks/${Q}`);
    check(t.ready === false && t.deps.some((d) => d.id === P), `${Q} is not blocked by ${P}: ${JSON.stringify({ ready: t.ready, deps: t.deps })}`);
    await card('open', Q).click();
    await page.waitForFunction((id) => document.querySelector('[data-testid="detail"] .d-id')?.textContent === id,
      Q, { timeout: 2000 }).catch(() => { throw new Failure(`the detail panel does not show ${Q}`); });
    const done = page.locator('[data-testid="detail"] [data-testid="action-done"]');
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="action-done"]')?.disabled === true,
      null, { timeout: 3000 }).catch(() => { throw new Failure(`Done is offered for ${Q}, which ${P} blocks`); });
    const title = await done.getAttribute('title');
    check(title && title.includes(`${P} (open)`), `Done's title does not name the blocker: ${JSON.stringify(title)}`);
    console.log(`    Done on ${Q}: disabled, title ${JSON.stringify(title)}`);
    const claim = page.locator('[data-testid="detail"] [data-testid="action-claim"]');
    check(await claim.isDisabled() && (await claim.getAttribute('title')).includes(P), 'Claim is offered for a blocked task');
    // What the server says agrees.
    const why = await fapi('GET', `/api/tasks/${Q}/why`);
    check(!why.ready && why.blocked_by.includes(P), `the server does not say ${P} blocks ${Q}: ${JSON.stringify(why)}`);
    await done.hover();
    await shot('11b-blocked-done');
    // The blocker finishes (from the CLI): Done is offered again, live.
    await fsh(['done', P]);
    want.open.splice(want.open.indexOf(P), 1);
    want.done.push(P);
    await page.waitForFunction(() => document.querySelector('[data-testid="detail"] [data-testid="action-done"]')?.disabled === false,
      null, { timeout: 5000 }).catch(() => { throw new Failure(`Done stayed disabled on ${Q} after ${P} was done`); });
    check(!(await done.getAttribute('title')), `Done still has a reason on it: ${await done.getAttribute('title')}`);
    await page.keyboard.press('Escape');
  });

  await step('11c a claim made by hand shows as a claim, not as a running agent', async () => {
    const K = (await fjson(['add', 'Update the changelog'])).id;
    await fsh(['claim', K, '--as', 'kim']);
    const run = (id) => `[data-testid="runs"] [data-testid="run-${id}"]`;
    await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.includes('claimed by kim (no agent)'),
      run(K), { timeout: 5000 }).catch(async () => {
      throw new Failure(`the runs panel does not say "claimed by kim (no agent)" for ${K}: ${JSON.stringify(await page.locator(run(K)).textContent().catch(() => null))}`);
    });
    const text = await page.locator(run(K)).textContent();
    check(!text.includes('no log yet'), `${K}, claimed by hand, is shown waiting for a log: ${JSON.stringify(text)}`);
    await waitVisible(card('in_progress', K), 2000, `card ${K} in col-in_progress`);
    // Beside it, an attempt braid dispatched to an agent (its log yet to
    // come) is an agent at work.
    const G = (await fjson(['add', 'Generate the API client'])).id;
    const claimed = await fjson(['claim', G, '--as', 'demo-agent']);
    await appendEvent('dispatched', G, { agent: 'demo', attempt: claimed.lease.attempt, workspace: fproject, log: join(fproject, '.braid', 'logs', G, `${claimed.lease.attempt}-demo.log`) }, fproject);
    await page.waitForFunction((sel) => {
      const t = document.querySelector(sel)?.textContent || '';
      return t.includes('no log yet') && !t.includes('no agent');
    }, run(G), { timeout: 5000 }).catch(async () => {
      throw new Failure(`the dispatched ${G} is not shown as an agent at work: ${JSON.stringify(await page.locator(run(G)).textContent().catch(() => null))}`);
    });
    const count = await page.locator('[data-testid="runs"] h2 .count').textContent();
    check(count === '1', `the Running agents count reads ${count}, want 1 (two claims by hand, one agent)`);
    check((await page.locator(run(want.in_progress[0])).textContent()).includes('claimed by sam (no agent)'), 'the claim made before the page opened is not shown as one');
    await shot('11c-claim-and-agent');
    await page.setViewportSize({ width: 1440, height: 900 });
  });
}

if (ONLY && !['review', 'first'].includes(ONLY)) {
  console.log(`ONLY=${ONLY}: the groups are review (steps 10*) and first (steps 11*)`);
  process.exit(2);
}

let code = 0;
try {
  if (!ONLY) {
    await main();
    await bigGraph();
    await noErrors();
    await attacker();
    await tokens();
    await resync();
  }
  if (!ONLY || ONLY === 'review') await review();
  if (!ONLY || ONLY === 'first') await firstLook();
} catch (_) {
  code = 1;
} finally {
  if (consoleErrors.length) console.log(`browser console errors (informational):\n  ${consoleErrors.join('\n  ')}`);
  if (toasts.length) console.log(`toasts shown:\n  ${toasts.join('\n  ')}`);
  if (code !== 0 && server) console.log(`--- server stderr ---\n${server.stderr}`);
  if (code !== 0 && rserver) console.log(`--- review server stderr ---\n${rserver.stderr}`);
  if (code !== 0 && fserver) console.log(`--- first-look server stderr ---\n${fserver.stderr}`);
  await cleanup();
}
console.log(`board: ${passed} passed, ${failed} failed`);
process.exit(code || (failed ? 1 : 0));

// Opens the review page of one task in headless Chromium `runs` times and
// prints how long each took to draw its diff (see bench/review.sh).
//
//   node bench/review.bench.mjs BRAID PROJECT TASK RUNS

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '../crates/braid-server/tests/browser/package.json'));
const { chromium } = require('playwright-core');

const [braid, project, task, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 3);
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const WANT = 5000;

function serve() {
  return new Promise((res, rej) => {
    const proc = spawn(braid, ['serve', '--bind', '127.0.0.1:0'], { cwd: project, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); rej(new Error(`braid serve did not start:\n${out}`)); }, 20_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /Serving braid on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) { clearTimeout(timer); res({ proc, base: m[1] }); }
    });
    proc.stderr.on('data', (d) => { out += d; });
    proc.on('exit', (code) => { clearTimeout(timer); rej(new Error(`braid serve exited (${code}):\n${out}`)); });
  });
}

const server = await serve();
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
const walls = [];
try {
  for (let i = 1; i <= runs; i++) {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const t0 = Date.now();
    await page.goto(`${server.base}/#review/${task}`, { waitUntil: 'commit' });
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="review-diff"] td.d2h-code-linenumber:not(.d2h-info)').length >= n,
      WANT, { timeout: 60_000, polling: 10 });
    const wall = Date.now() - t0;
    const own = await page.evaluate(() => new Promise((res) => {
      const read = () => document.querySelector('[data-testid="review"]').dataset.renderMs;
      if (read()) res(read()); else new MutationObserver((_, o) => { if (read()) { o.disconnect(); res(read()); } })
        .observe(document.querySelector('[data-testid="review"]'), { attributes: true });
    }));
    const rows = await page.evaluate(() => document.querySelectorAll('[data-testid="review-diff"] td.d2h-code-linenumber:not(.d2h-info)').length);
    if (rows !== WANT) throw new Error(`run ${i}: ${rows} rows, want ${WANT}`);
    walls.push(wall);
    // Back to the board and into the review again, as a click does: the
    // page and the diff renderer are loaded already.
    await page.evaluate(() => { location.hash = ''; });
    await page.waitForFunction(() => document.querySelector('[data-testid="review"]').hidden, null, { timeout: 10_000 });
    const t1 = Date.now();
    await page.evaluate((id) => { location.hash = `#review/${id}`; }, task);
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="review-diff"] td.d2h-code-linenumber:not(.d2h-info)').length >= n,
      WANT, { timeout: 60_000, polling: 10 });
    const again = Date.now() - t1;
    console.log(`run ${i}: review render ${WANT} lines: ${wall} ms (page load to every row in the page; from the review's opening to drawn: ${own} ms); opened again from the board: ${again} ms`);
    await context.close();
  }
  const sorted = [...walls].sort((a, b) => a - b);
  console.log(`median ${sorted[Math.floor(sorted.length / 2)]} ms over ${runs} runs`);
} finally {
  await browser.close();
  server.proc.removeAllListeners('exit');
  server.proc.kill('SIGTERM');
}

// The peers of bench/postgres.sh, on the same server in the same run:
// pg-boss and graphile-worker drain N no-op jobs (bulk-enqueued, batched
// workers), then time insert -> start of single jobs.
//
//   node peers.js postgres://root@127.0.0.1:5432/test 20000
const PgBoss = require('pg-boss');
const { run, makeWorkerUtils, Logger } = require('graphile-worker');
const { Client } = require('pg');

const url = process.argv[2];
const n = Number(process.argv[3] || 20000);
const probes = 200;
const quiet = new Logger(() => () => {});
const pct = (v, p) => { const s = [...v].sort((a, b) => a - b); return s[Math.round((s.length - 1) * p)]; };
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function sql(q) {
  const c = new Client({ connectionString: url });
  await c.connect();
  try { await c.query(q); } finally { await c.end(); }
}

async function pgboss() {
  const schema = `pgboss_bench_${process.pid}`;
  const boss = new PgBoss({ connectionString: url, schema, max: 10 });
  boss.on('error', e => console.error('pg-boss:', e.message));
  await boss.start();
  await boss.createQueue('noop');
  for (let i = 0; i < n; i += 5000) {
    await boss.insert(Array.from({ length: Math.min(5000, n - i) }, () => ({ name: 'noop', data: {} })));
  }
  for (const batch of [1000, 100]) {
    let done = 0;
    const t0 = Date.now();
    await new Promise(async resolve => {
      await boss.work('noop', { batchSize: batch, pollingIntervalSeconds: 0.5 }, async jobs => {
        done += jobs.length;
        if (done >= n) resolve();
      });
    });
    const secs = (Date.now() - t0) / 1000;
    console.log(`pg-boss 10.4.2: drained ${n} jobs at ${(n / secs).toFixed(0)} jobs/s (batches of ${batch})`);
    await boss.offWork('noop');
    if (batch === 1000) {
      for (let i = 0; i < n; i += 5000) {
        await boss.insert(Array.from({ length: Math.min(5000, n - i) }, () => ({ name: 'noop', data: {} })));
      }
    }
  }
  const lat = [];
  await boss.createQueue('probe');
  await boss.work('probe', { batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
    lat.push(Date.now() - job.data.t);
  });
  for (let i = 0; i < 50; i++) {
    await boss.send('probe', { t: Date.now() });
    await sleep(10);
  }
  while (lat.length < 50) await sleep(50);
  console.log(`pg-boss 10.4.2: insert -> start over 50 jobs: p50 ${pct(lat, 0.5)} ms, p95 ${pct(lat, 0.95)} ms (polling every 0.5 s)`);
  await boss.stop({ graceful: false, wait: true });
  await sql(`DROP SCHEMA ${schema} CASCADE`);
}

async function graphile() {
  const schema = `gw_bench_${process.pid}`;
  const utils = await makeWorkerUtils({ connectionString: url, schema, logger: quiet });
  await utils.migrate();
  for (let i = 0; i < n; i += 5000) {
    await utils.addJobs(Array.from({ length: Math.min(5000, n - i) }, () => ({ identifier: 'noop', payload: {} })));
  }
  let done = 0;
  let finished;
  const all = new Promise(r => { finished = r; });
  const lat = [];
  const t0 = Date.now();
  const runner = await run({
    connectionString: url, schema, concurrency: 10, noHandleSignals: true, pollInterval: 1000, logger: quiet,
    taskList: {
      noop: async () => { done += 1; if (done === n) finished(); },
      probe: async p => { lat.push(Date.now() - p.t); },
    },
  });
  await all;
  const secs = (Date.now() - t0) / 1000;
  console.log(`graphile-worker 0.17.3: drained ${n} jobs at ${(n / secs).toFixed(0)} jobs/s (concurrency 10)`);
  for (let i = 0; i < probes; i++) {
    await utils.addJob('probe', { t: Date.now() });
    await sleep(10);
  }
  while (lat.length < probes) await sleep(20);
  console.log(`graphile-worker 0.17.3: insert -> start over ${probes} jobs: p50 ${pct(lat, 0.5)} ms, p95 ${pct(lat, 0.95)} ms`);
  await runner.stop();
  await utils.release();
  await sql(`DROP SCHEMA ${schema} CASCADE`);
}

(async () => {
  await pgboss();
  await graphile();
})().catch(e => { console.error(e); process.exit(1); });

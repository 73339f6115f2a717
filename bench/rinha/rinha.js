// The Rinha de Backend 2025 load, written from the challenge's description for
// bench/rinha (run through `python -m bench.rinha run`, which sets the variables).
//
// Three scenarios run side by side:
//   payments  virtual users ramp from 1 to MAX_VUS over DURATION; each posts one
//             payment (a new correlationId, 19.90) and sleeps 1 s, so the offered
//             rate follows the VU count.
//   schedule  every PHASE seconds, both processors get the next delay and failure
//             of the final run's schedule (through their admin API).
//   probe     GET /readyz through the same front, 20 a second: the noise floor of
//             the machine, nginx and the server loop, to read payment latency against.
//   checks    every 10 s, the backend's summary against both processors' admin
//             summaries over the same window; the difference in totalRequests is
//             counted as inconsistencies. The window ends SETTLE_MS before now,
//             so payments still on their way (sent, not yet answered) are not in it.
//
// Metrics for the report: payment_latency (ms, 2xx answers only), probe_latency,
// payments_ok, payments_failed, inconsistencies, checks_done.

import http from "k6/http";
import { sleep } from "k6";
import { Counter, Trend } from "k6/metrics";

const BACKEND = __ENV.BACKEND || "http://127.0.0.1:9999";
const DEFAULT_PP = __ENV.DEFAULT_PP || "http://127.0.0.1:8001";
const FALLBACK_PP = __ENV.FALLBACK_PP || "http://127.0.0.1:8002";
const TOKEN = __ENV.TOKEN || "123";
const MAX_VUS = parseInt(__ENV.MAX_VUS || "300");
const DURATION = parseInt(__ENV.DURATION || "300");
const PHASE = parseInt(__ENV.PHASE || "30");
const SETTLE_MS = parseInt(__ENV.SETTLE_MS || "3000");
const AMOUNT = __ENV.AMOUNT || "19.90";

// The final run's schedule: [delay ms, failing] per phase, then it repeats.
const SCHEDULE = {
  default: [
    [0, false], [1000, false], [500, false], [2000, true], [5000, true],
    [0, false], [100, false], [50, false], [103, false], [2000, false],
  ],
  fallback: [
    [0, false], [0, false], [0, false], [1000, false], [5, false],
    [5, true], [5, false], [0, false], [10, false], [0, false],
  ],
};

const paymentLatency = new Trend("payment_latency", true);
const probeLatency = new Trend("probe_latency", true);
const paymentsOk = new Counter("payments_ok");
const paymentsFailed = new Counter("payments_failed");
const inconsistencies = new Counter("inconsistencies");
const checksDone = new Counter("checks_done");

export const options = {
  summaryTrendStats: ["p(50)", "p(90)", "p(99)", "max", "count"],
  scenarios: {
    payments: {
      executor: "ramping-vus",
      exec: "pay",
      startVUs: 1,
      stages: [{ duration: `${DURATION}s`, target: MAX_VUS }],
      gracefulRampDown: "2s",
      gracefulStop: "3s",
    },
    schedule: {
      executor: "per-vu-iterations",
      exec: "switchPhases",
      vus: 1,
      iterations: 1,
      maxDuration: `${DURATION + 5}s`,
    },
    probe: {
      executor: "constant-arrival-rate",
      exec: "probe",
      rate: 20,
      timeUnit: "1s",
      duration: `${DURATION}s`,
      preAllocatedVUs: 2,
      maxVUs: 10,
    },
    checks: {
      executor: "constant-arrival-rate",
      exec: "check",
      rate: 1,
      timeUnit: "10s",
      duration: `${DURATION}s`,
      startTime: "10s",
      preAllocatedVUs: 1,
      maxVUs: 2,
    },
  },
};

const ADMIN = { headers: { "X-Rinha-Token": TOKEN, "Content-Type": "application/json" } };
const JSON_HEADERS = { headers: { "Content-Type": "application/json" }, timeout: "1500ms" };

function configure(url, delay, failing) {
  http.put(`${url}/admin/configurations/delay`, JSON.stringify({ delay }), ADMIN);
  http.put(`${url}/admin/configurations/failure`, JSON.stringify({ failure: failing }), ADMIN);
}

export function setup() {
  for (const url of [DEFAULT_PP, FALLBACK_PP]) {
    http.post(`${url}/admin/purge-payments`, null, ADMIN);
    configure(url, 0, false);
  }
  http.post(`${BACKEND}/purge-payments`);
  return { start: new Date().toISOString() };
}

export function pay() {
  const body = JSON.stringify({ correlationId: crypto.randomUUID(), amount: parseFloat(AMOUNT) });
  const res = http.post(`${BACKEND}/payments`, body, JSON_HEADERS);
  if (res.status >= 200 && res.status < 300) {
    paymentsOk.add(1);
    paymentLatency.add(res.timings.duration);
  } else {
    paymentsFailed.add(1);
  }
  sleep(1);
}

export function probe() {
  const res = http.get(`${BACKEND}/readyz`);
  if (res.status === 200) probeLatency.add(res.timings.duration);
}

export function switchPhases() {
  const started = Date.now();
  for (let i = 0; ; i++) {
    const at = started + i * PHASE * 1000;
    if (at - started >= DURATION * 1000) break;
    const wait = (at - Date.now()) / 1000;
    if (wait > 0) sleep(wait);
    const phase = i % SCHEDULE.default.length;
    configure(DEFAULT_PP, ...SCHEDULE.default[phase]);
    configure(FALLBACK_PP, ...SCHEDULE.fallback[phase]);
    console.log(`phase ${phase}: default ${SCHEDULE.default[phase]} fallback ${SCHEDULE.fallback[phase]}`);
  }
}

function summaryOf(url, params) {
  const res = http.get(url, params);
  return res.status === 200 ? res.json() : null;
}

export function check() {
  const to = new Date(Date.now() - SETTLE_MS);
  const from = new Date(to.getTime() - 10000);
  const query = `?from=${from.toISOString()}&to=${to.toISOString()}`;
  const ours = summaryOf(`${BACKEND}/payments-summary${query}`);
  const def = summaryOf(`${DEFAULT_PP}/admin/payments-summary${query}`, ADMIN);
  const fb = summaryOf(`${FALLBACK_PP}/admin/payments-summary${query}`, ADMIN);
  if (!ours || !def || !fb) return;
  const diff =
    Math.abs(ours.default.totalRequests - def.totalRequests) +
    Math.abs(ours.fallback.totalRequests - fb.totalRequests);
  checksDone.add(1);
  inconsistencies.add(diff);
  if (diff) console.warn(`inconsistent over ${query}: ${diff}`);
}

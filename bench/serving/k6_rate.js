// k6 script for the serving bench's constant-rate loads. Requests are started
// on a fixed schedule (constant-arrival-rate) whatever the server's latency, so
// a stall shows up as latency or as dropped iterations instead of quietly
// lowering the offered load the way a closed loop does (coordinated omission).
// Everything comes from the environment:
//   BENCH_URL, BENCH_METHOD, BENCH_BODY, BENCH_RATE (req/s),
//   BENCH_DURATION (s), BENCH_VUS, BENCH_PERCENTILES (comma-separated).
import http from 'k6/http';

const url = __ENV.BENCH_URL;
const method = __ENV.BENCH_METHOD || 'GET';
const body = __ENV.BENCH_BODY || null;
const params = body ? { headers: { 'Content-Type': 'application/json' } } : {};
const vus = Number(__ENV.BENCH_VUS);
const percentiles = (__ENV.BENCH_PERCENTILES || '50,90,99').split(',');

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['min', 'avg', 'max'].concat(percentiles.map((p) => `p(${p})`)),
  scenarios: {
    rate: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.BENCH_RATE),
      timeUnit: '1s',
      duration: `${__ENV.BENCH_DURATION}s`,
      preAllocatedVUs: vus,
      maxVUs: vus * 2,
      // The run must stay bounded even if the server hangs.
      gracefulStop: '2s',
    },
  },
};

export default function () {
  http.request(method, url, body, params);
}

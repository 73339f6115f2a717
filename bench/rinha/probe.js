// The noise floor beside the official test: GET /readyz (sprintd's fast path,
// a request that does nothing) through the same front, at a constant rate for
// as long as the official script runs. Run by `python -m bench.rinha official`.
import http from "k6/http";

const BACKEND = __ENV.BACKEND || "http://127.0.0.1:9999";

export const options = {
  summaryTrendStats: ["p(50)", "p(99)", "max", "count"],
  scenarios: {
    probe: {
      executor: "constant-arrival-rate",
      rate: 20,
      timeUnit: "1s",
      duration: __ENV.DURATION || "62s",
      preAllocatedVUs: 5,
    },
  },
};

export default function () {
  http.get(`${BACKEND}/readyz`);
}

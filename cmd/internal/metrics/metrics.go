// Package metrics holds flowd's Prometheus metrics and the engine hooks that
// feed them. Labels are bounded: providers come from the config file and
// reasons from the machine, never from request input.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/states"
)

// Metrics is one set of flowd metrics on its own registry, so tests and
// several engines in one process do not collide.
type Metrics struct {
	reg *prometheus.Registry

	started       *prometheus.CounterVec
	completed     *prometheus.CounterVec
	failed        *prometheus.CounterVec
	expired       *prometheus.CounterVec
	awaiting      *prometheus.HistogramVec
	strayCallback *prometheus.CounterVec
	appendLatency prometheus.Histogram
	appendErrors  prometheus.Counter
	requests      *prometheus.CounterVec
	unbound       *prometheus.CounterVec
	browser       *prometheus.CounterVec
}

// New registers flowd's metrics, plus the Go runtime and process
// collectors, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_flows_started_total", Help: "Flows started, by provider.",
		}, []string{"provider"}),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_flows_completed_total", Help: "Flows that ended with a stored token, by provider.",
		}, []string{"provider"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_flows_failed_total", Help: "Flows that ended in error, by provider and reason.",
		}, []string{"provider", "reason"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_flows_expired_total", Help: "Flows whose deadline passed, by provider and reason (expired, expired_while_down).",
		}, []string{"provider", "reason"}),
		awaiting: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flowd_callback_wait_seconds",
			Help:    "Time from a flow's start to the arrival of its callback, by provider.",
			Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
		}, []string{"provider"}),
		strayCallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_callbacks_stray_total",
			Help: "Callbacks that changed no flow: unknown state, flow finished, an exchange already under way, or a bound flow's callback without its browser binding.",
		}, []string{"kind"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flowd_log_append_seconds",
			Help:    "Latency of durable appends to the event log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1 ms .. 3.3 s
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowd_log_append_errors_total", Help: "Appends to the event log that failed.",
		}),
		unbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_callbacks_refused_unbound_total",
			Help: "Loopback callbacks of browser-bound flows refused for not coming from the flow's browser: binding_missing (no binding cookie) or binding_mismatch (another one). Another local user forging or injecting a callback shows here.",
		}, []string{"reason"}),
		browser: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_browser_requests_total",
			Help: "Requests on the loopback listener's launch and callback routes, by outcome (launched, launch_used, launch_unknown, connected, binding_missing, malformed, prefetch, ...).",
		}, []string{"outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowd_http_requests_total", Help: "HTTP requests, by route name and status code.",
		}, []string{"route", "code"}),
	}
	m.reg.MustRegister(m.started, m.completed, m.failed, m.expired, m.awaiting, m.strayCallback,
		m.appendLatency, m.appendErrors, m.requests, m.unbound, m.browser,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchLog exports a log's group-commit counters, read at each scrape:
// commits and the appends they carried, so an operator can see how many
// appends share each fsync.
func (m *Metrics) WatchLog(stats func() (commits, appends uint64)) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowd_log_commits_total", Help: "Group commits of the event log (one write transaction and its fsyncs each).",
		}, func() float64 { c, _ := stats(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flowd_log_appends_committed_total", Help: "Appends the event log's group commits carried; divided by flowd_log_commits_total, appends per fsync.",
		}, func() float64 { _, a := stats(); return float64(a) }),
	)
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Browser counts one request on the loopback listener's browser routes by
// its outcome, a kind from engine/redirect (a fixed set, never request input).
func (m *Metrics) Browser(outcome string) {
	m.browser.WithLabelValues(outcome).Inc()
}

// Request counts one HTTP request.
func (m *Metrics) Request(route string, code int) {
	m.requests.WithLabelValues(route, statusText(code)).Inc()
}

func statusText(code int) string {
	// Small fixed set of strings: cheaper than strconv on a hot path and bounded.
	switch {
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	}
	return "5xx"
}

// Hooks returns engine hooks that feed the metrics. next, if set, is
// called after each hook (to chain an embedder's own hooks).
func (m *Metrics) Hooks(next engine.Hooks) engine.Hooks {
	return engine.Hooks{
		Transition: func(rec states.Record, f states.Flow) {
			m.transition(rec, f)
			if next.Transition != nil {
				next.Transition(rec, f)
			}
		},
		UnknownCallback: func() {
			m.strayCallback.WithLabelValues("unknown_state").Inc()
			if next.UnknownCallback != nil {
				next.UnknownCallback()
			}
		},
		Append: func(d time.Duration, err error) {
			m.appendLatency.Observe(d.Seconds())
			if err != nil {
				m.appendErrors.Inc()
			}
			if next.Append != nil {
				next.Append(d, err)
			}
		},
	}
}

func (m *Metrics) transition(rec states.Record, f states.Flow) {
	p := f.Provider
	switch rec.Event {
	case states.Created:
		m.started.WithLabelValues(p).Inc()
	case states.ExchangeStarted:
		m.awaiting.WithLabelValues(p).Observe(rec.Time.Sub(f.Created).Seconds())
	case states.ExchangeSucceeded:
		m.completed.WithLabelValues(p).Inc()
	case states.Failed:
		m.failed.WithLabelValues(p, string(rec.Data.Reason)).Inc()
		// A denial or a malformed callback is a callback arriving too.
		if rec.Data.Reason == states.ProviderDenied || rec.Data.Reason == states.InvalidCallback {
			m.awaiting.WithLabelValues(p).Observe(rec.Time.Sub(f.Created).Seconds())
		}
	case states.DeadlinePassed:
		m.expired.WithLabelValues(p, string(rec.Data.Reason)).Inc()
	case states.CallbackIgnored:
		kind := string(rec.Data.Ignored)
		if kind == "" {
			kind = string(states.IgnoredFinished)
		}
		m.strayCallback.WithLabelValues(kind).Inc()
		if kind == string(states.IgnoredBindingMissing) || kind == string(states.IgnoredBindingMismatch) {
			m.unbound.WithLabelValues(kind).Inc()
		}
	}
}

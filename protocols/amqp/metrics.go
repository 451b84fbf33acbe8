package amqp

import "github.com/prometheus/client_golang/prometheus"

// metrics are the per endpoint and per ingress counters of CONTRACT 8.
type metrics struct {
	backlog, connected                *prometheus.GaugeVec
	delivered, retried, dropped, dead *prometheus.CounterVec
	condErrors                        *prometheus.CounterVec
	received, accepted, rejected      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	gauge := func(name, help string, label string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "twinmesh", Subsystem: "amqp", Name: name, Help: help}, []string{label})
	}
	counter := func(name, help string, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "twinmesh", Subsystem: "amqp", Name: name, Help: help}, []string{label})
	}
	m := &metrics{
		backlog:    gauge("endpoint_backlog", "Messages waiting in an endpoint's outbox.", "endpoint"),
		connected:  gauge("endpoint_connected", "1 while the endpoint's link is up.", "endpoint"),
		delivered:  counter("endpoint_delivered_total", "Messages the broker accepted.", "endpoint"),
		retried:    counter("endpoint_retried_total", "Messages the broker rejected that are tried again.", "endpoint"),
		dropped:    counter("endpoint_dropped_total", "Messages dropped past the outbox bounds.", "endpoint"),
		dead:       counter("endpoint_dead_lettered_total", "Messages moved to the dead letters.", "endpoint"),
		condErrors: counter("route_condition_errors_total", "Route conditions that failed to evaluate.", "route"),
		received:   counter("ingress_received_total", "Messages received on an ingress.", "ingress"),
		accepted:   counter("ingress_accepted_total", "Ingress messages stored and accepted.", "ingress"),
		rejected:   counter("ingress_rejected_total", "Ingress messages rejected.", "ingress"),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.backlog, m.connected, m.delivered, m.retried, m.dropped, m.dead,
			m.condErrors, m.received, m.accepted, m.rejected} {
			reg.MustRegister(c)
		}
	}
	return m
}

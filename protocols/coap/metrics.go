package coap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the adapter's Prometheus collectors.
type metrics struct {
	requests         *prometheus.CounterVec // by resource and response code
	messages         *prometheus.CounterVec // telemetry stored, by type (con, non)
	refused          *prometheus.CounterVec // by reason
	nonDropped       prometheus.Counter
	amplification    prometheus.Counter
	eventsDropped    prometheus.Counter
	registrations    prometheus.Counter
	observersRefused prometheus.Counter
	observersDropped *prometheus.CounterVec // by reason
	notifications    prometheus.Counter
	// notificationsSuperseded counts notifications a newer one replaced
	// before they were acknowledged.
	notificationsSuperseded prometheus.Counter
	sessionsOpened          prometheus.Counter
	handshakeFailures       prometheus.Counter
	gauges                  []prometheus.Collector
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinmesh_coap_requests_total",
			Help: "CoAP requests answered, by resource and response code."}, []string{"resource", "code"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinmesh_coap_messages_total",
			Help: "Telemetry messages stored, by CoAP type (con, non)."}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinmesh_coap_refused_total",
			Help: "Refused CoAP requests, handshakes and telemetry, by reason."}, []string{"reason"}),
		nonDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_non_dropped_total",
			Help: "Non-confirmable telemetry refused because its queue was full."}),
		amplification: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_amplification_limited_total",
			Help: "Error responses to unauthenticated requests whose diagnostic was shortened to stay within the request's size."}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_event_work_dropped_total",
			Help: "Notifications and session ends dropped because the event queue was full."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_observe_registrations_total",
			Help: "Observations registered."}),
		observersRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_observe_refused_total",
			Help: "Observe registrations answered without Observe because a cap was reached."}),
		observersDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twinmesh_coap_observers_dropped_total",
			Help: "Observations ended, by reason (no_ack, reset, deregistered, closed, disabled, …)."}, []string{"reason"}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_notifications_total",
			Help: "Confirmable notifications acknowledged."}),
		notificationsSuperseded: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_notifications_superseded_total",
			Help: "Confirmable notifications replaced by a newer representation before they were acknowledged (RFC 7641 section 4.5.2)."}),
		sessionsOpened: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_dtls_sessions_opened_total",
			Help: "DTLS sessions established."}),
		handshakeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "twinmesh_coap_dtls_handshake_failures_total",
			Help: "DTLS handshakes that failed (unknown identity, wrong key, timeout)."}),
	}
	m.gauges = []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "twinmesh_coap_observers",
			Help: "Observations held."}, func() float64 { return float64(s.obs.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "twinmesh_coap_dtls_sessions",
			Help: "Open DTLS sessions."}, func() float64 { return float64(s.sessionCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "twinmesh_coap_connected_devices",
			Help: "Devices shown as connected over CoAP by this node."}, func() float64 { return float64(s.pres.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "twinmesh_coap_non_queue",
			Help: "Non-confirmable telemetry waiting to be stored."}, func() float64 { return float64(len(s.non)) }),
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := []prometheus.Collector{m.requests, m.messages, m.refused, m.nonDropped, m.amplification, m.eventsDropped,
		m.registrations, m.observersRefused, m.observersDropped, m.notifications, m.notificationsSuperseded, m.sessionsOpened, m.handshakeFailures}
	var errs []error
	for _, c := range append(cs, m.gauges...) {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

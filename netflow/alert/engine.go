package alert

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/netflow/store"
)

// Options configure an Engine.
type Options struct {
	Rules     []Rule
	Webhooks  []Webhook        // SetNotifiers replaces them
	PagerDuty []PagerDuty      // likewise
	Email     []Email          // likewise
	Logger    *slog.Logger     // nil: discard
	Now       func() time.Time // nil: time.Now
	// Client sends webhooks; nil: a client with a 10-second timeout.
	Client *http.Client
	// Attempts is how often a notification is tried, 5; RetryDelay the
	// first wait between tries, doubled each time up to 30 s, 1 s.
	Attempts   int
	RetryDelay time.Duration
	// History is how many events History keeps, 1000.
	History int
	// Lag is how long after a second its flows are judged, in whole
	// seconds: exporters send a flow after it ends. 2 s.
	Lag time.Duration
	// OnEvent, if set, is called with each event as it is raised (the
	// owner's hook to emit it as a record); it must not block.
	OnEvent func(Event)
}

// window is one watched rate: a counter per second, indexed by Unix
// second modulo its length, which is the rule's duration plus Lag (so a
// flow that arrives late still lands in its seconds) plus slack.
type window struct {
	n       int64   // the rule's duration in seconds
	secs    []int64 // the Unix second each slot holds
	bytes   []uint64
	packets []uint64
	firing  *Event // the open alert, nil when quiet
}

func newWindow(d, lag time.Duration) *window {
	n := int64(d / time.Second)
	size := n + int64(lag/time.Second) + 1
	return &window{n: n, secs: make([]int64, size), bytes: make([]uint64, size), packets: make([]uint64, size)}
}

// add counts bytes and packets in second sec.
func (w *window) add(sec int64, bytes, packets uint64) {
	i := int(sec % int64(len(w.secs)))
	if w.secs[i] != sec {
		w.secs[i], w.bytes[i], w.packets[i] = sec, 0, 0
	}
	w.bytes[i] += bytes
	w.packets[i] += packets
}

// at returns the counts of second sec (zero if nothing was counted).
func (w *window) at(sec int64) (bytes, packets uint64) {
	i := int(sec % int64(len(w.secs)))
	if w.secs[i] != sec {
		return 0, 0
	}
	return w.bytes[i], w.packets[i]
}

// measure looks at the rule's duration ending with second end: the
// average rates, and whether every second of it reached a threshold.
func (w *window) measure(end int64, r *Rule) (bps, pps float64, sustained bool) {
	var b, p uint64
	sustained = true
	for s := end - w.n + 1; s <= end; s++ {
		sb, sp := w.at(s)
		b += sb
		p += sp
		if !over(r, float64(sb)*8, float64(sp)) {
			sustained = false
		}
	}
	return float64(b) * 8 / float64(w.n), float64(p) / float64(w.n), sustained
}

// over reports whether rates reach either of a rule's thresholds.
func over(r *Rule, bps, pps float64) bool {
	return (r.BitsPerSecond > 0 && bps >= float64(r.BitsPerSecond)) || (r.PacketsPerSecond > 0 && pps >= float64(r.PacketsPerSecond))
}

// watch is a rule with its windows: one per prefix, or one for a Sum rule.
type watch struct {
	rule    Rule
	windows []*window // parallel to rule.Prefixes, or one
}

// Stats are an Engine's counters.
type Stats struct {
	Flows         uint64 // flows observed
	Fired         uint64 // alerts fired
	Resolved      uint64 // alerts resolved
	Delivered     uint64 // notifications a webhook accepted
	Failed        uint64 // notifications given up after every attempt
	QueueDropped  uint64 // notifications dropped because the queue was full
	Firing        int    // alerts open now
	LateFlowBytes uint64 // bytes of flows that ended before any window (not counted)
}

// Engine evaluates rules on the flows it is given. Push and Observe are
// safe for concurrent use and never block on delivery; Run (one
// goroutine, the owner's) evaluates every second and delivers
// notifications.
type Engine struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	watches []*watch
	history []Event // a ring of opts.History
	next    int     // where the ring writes next
	st      Stats

	queue     chan Event // to the sender
	notifiers atomic.Pointer[[]notifier]
}

// New checks the rules and webhooks and returns an Engine; Run starts it.
func New(opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Attempts == 0 {
		opts.Attempts = 5
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	if opts.History == 0 {
		opts.History = 1000
	}
	if opts.Lag == 0 {
		opts.Lag = 2 * time.Second
	}
	if opts.Lag < 0 || opts.Lag%time.Second != 0 || opts.Lag > time.Minute {
		return nil, fmt.Errorf("flow alerts: lag %v: whole seconds up to a minute", opts.Lag)
	}
	e := &Engine{opts: opts, log: opts.Logger.With("component", "flow_alerts"), queue: make(chan Event, 256)}
	if err := e.SetNotifiers(opts.Webhooks, opts.PagerDuty, opts.Email); err != nil {
		return nil, err
	}
	if err := e.SetRules(opts.Rules); err != nil {
		return nil, err
	}
	return e, nil
}

// notifier is one place events go.
type notifier interface {
	// post sends ev once; retry says whether a failure may pass on a retry.
	post(ctx context.Context, c *http.Client, ev Event) (retry bool, err error)
	// String names it for logs, without secrets.
	String() string
}

// SetNotifiers replaces where notifications go, from the next one.
func (e *Engine) SetNotifiers(hs []Webhook, pds []PagerDuty, ms []Email) error {
	hs, pds, ms = slices.Clone(hs), slices.Clone(pds), slices.Clone(ms) // the notifiers point into them
	var ns []notifier
	for i := range hs {
		if err := hs[i].validate(); err != nil {
			return err
		}
		ns = append(ns, &hs[i])
	}
	for i := range pds {
		if err := pds[i].validate(); err != nil {
			return err
		}
		ns = append(ns, &pds[i])
	}
	for i := range ms {
		if err := ms[i].validate(); err != nil {
			return err
		}
		ns = append(ns, &ms[i])
	}
	e.notifiers.Store(&ns)
	return nil
}

// SetRules replaces the rules. A rule whose name, prefixes and duration
// are unchanged keeps its counters and open alerts; open alerts of rules
// that go away are resolved.
func (e *Engine) SetRules(rules []Rule) error {
	seen := map[string]bool{}
	for i := range rules {
		if err := rules[i].Validate(); err != nil {
			return err
		}
		if seen[rules[i].Name] {
			return fmt.Errorf("alert rule %q: the name is used twice", rules[i].Name)
		}
		seen[rules[i].Name] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := map[string]*watch{}
	for _, w := range e.watches {
		old[w.rule.Name] = w
	}
	var ws []*watch
	for _, r := range rules {
		if w := old[r.Name]; w != nil && w.rule.Duration == r.Duration && w.rule.Sum == r.Sum && samePrefixes(w.rule.Prefixes, r.Prefixes) {
			w.rule = r
			ws = append(ws, w)
			delete(old, r.Name)
			continue
		}
		w := &watch{rule: r}
		n := len(r.Prefixes)
		if r.Sum {
			n = 1
		}
		for range n {
			w.windows = append(w.windows, newWindow(r.Duration, e.opts.Lag))
		}
		ws = append(ws, w)
	}
	now := e.opts.Now()
	for _, w := range old {
		for i, win := range w.windows {
			if win.firing != nil {
				e.resolve(w, i, win, now, 0, 0)
			}
		}
	}
	e.watches = ws
	return nil
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Push observes a network_analytics_logs record (Engine is a
// logpush.Sink, to sit on the gateway's record stream).
func (e *Engine) Push(dataset string, r logpush.Record) {
	if dataset != "network_analytics_logs" {
		return
	}
	if f, ok := store.FromRecord(r); ok {
		e.Observe(f)
	}
}

// Observe counts a flow toward every rule watching its destination. A
// flow with a start time is spread evenly over the seconds from start to
// end, so that a flow an exporter reports after a minute counts as a
// minute's traffic, not one second's.
func (e *Engine) Observe(f store.Flow) {
	now := e.opts.Now().Unix()
	end := min(f.Time.Unix(), now)
	start := end
	if !f.Start.IsZero() && f.Start.Unix() < end {
		start = f.Start.Unix()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Flows++
	for _, w := range e.watches {
		for i, p := range w.rule.Prefixes {
			if !p.Contains(f.Dst) {
				continue
			}
			win := w.windows[0]
			if !w.rule.Sum {
				win = w.windows[i]
			}
			e.spread(win, start, end, now, f.Bytes, f.Packets)
			if w.rule.Sum {
				break // counted once however many of its prefixes match
			}
		}
	}
}

// spread adds bytes and packets evenly over the seconds [start, end],
// keeping only the part the window still holds. e.mu is held.
func (e *Engine) spread(w *window, start, end, now int64, bytes, packets uint64) {
	n := uint64(end - start + 1)
	lo := max(start, now-int64(len(w.secs))+1)
	if lo > end {
		e.st.LateFlowBytes += bytes
		return
	}
	for s := lo; s <= end; s++ {
		// Share the remainder to the first seconds so the sum is exact.
		k := uint64(s - start)
		b, p := bytes/n, packets/n
		if k < bytes%n {
			b++
		}
		if k < packets%n {
			p++
		}
		w.add(s, b, p)
	}
}

// Evaluate checks every rule at now and raises the events due; Run calls
// it every second. A rule fires when the traffic reached its threshold in
// every second of its duration (as MNM's rules do), and resolves when the
// average over the duration falls below it, so a one-second dip does not
// end an alert. The duration looked at ends Lag before now, when the
// exporters' flows for it have arrived.
func (e *Engine) Evaluate(now time.Time) []Event {
	sec := now.Unix() - int64(e.opts.Lag/time.Second)
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, w := range e.watches {
		for i, win := range w.windows {
			bps, pps, sustained := win.measure(sec, &w.rule)
			switch {
			case sustained && win.firing == nil:
				ev := Event{ID: newID(), Rule: w.rule.Name, Prefix: prefixLabel(w, i), State: Firing, Time: now,
					BitsPerSecond: bps, PacketsPerSecond: pps, ThresholdBitsPerSecond: w.rule.BitsPerSecond,
					ThresholdPacketsPerSecond: w.rule.PacketsPerSecond, DurationSeconds: w.rule.Duration.Seconds()}
				win.firing = &ev
				e.st.Fired++
				e.raise(ev)
				out = append(out, ev)
			case !over(&w.rule, bps, pps) && win.firing != nil:
				out = append(out, e.resolve(w, i, win, now, bps, pps))
			}
		}
	}
	return out
}

// resolve closes win's open alert. e.mu is held.
func (e *Engine) resolve(w *watch, i int, win *window, now time.Time, bps, pps float64) Event {
	ev := *win.firing
	ev.State, ev.Time, ev.BitsPerSecond, ev.PacketsPerSecond = Resolved, now, bps, pps
	win.firing = nil
	e.st.Resolved++
	e.raise(ev)
	return ev
}

// raise records an event and queues its notifications. e.mu is held.
func (e *Engine) raise(ev Event) {
	if len(e.history) < e.opts.History {
		e.history = append(e.history, ev)
	} else {
		e.history[e.next] = ev
	}
	e.next = (e.next + 1) % e.opts.History
	e.log.Warn("flow alert", "rule", ev.Rule, "prefix", ev.Prefix, "state", ev.State, "bits_per_second", ev.BitsPerSecond, "packets_per_second", ev.PacketsPerSecond)
	if e.opts.OnEvent != nil {
		e.opts.OnEvent(ev)
	}
	if len(*e.notifiers.Load()) == 0 {
		return
	}
	select {
	case e.queue <- ev:
	default:
		e.st.QueueDropped++
	}
}

func prefixLabel(w *watch, i int) string {
	if !w.rule.Sum {
		return w.rule.Prefixes[i].String()
	}
	ss := make([]string, len(w.rule.Prefixes))
	for j, p := range w.rule.Prefixes {
		ss[j] = p.String()
	}
	return strings.Join(ss, ",")
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// History returns the kept events, oldest first.
func (e *Engine) History() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.history) < e.opts.History {
		return append([]Event(nil), e.history...)
	}
	return append(append([]Event(nil), e.history[e.next:]...), e.history[:e.next]...)
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.st
	for _, w := range e.watches {
		for _, win := range w.windows {
			if win.firing != nil {
				st.Firing++
			}
		}
	}
	return st
}

// Run evaluates the rules every second and delivers notifications until
// ctx ends. It owns one sender goroutine, which it waits for.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the sender: owned by Run, stops with ctx
		defer wg.Done()
		e.send(ctx)
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
			e.Evaluate(e.opts.Now())
		}
	}
}

// send delivers queued events, one at a time, to every notifier at once:
// an event waits for its slowest notifier (a mail server retried), not
// for the sum of them. The delivery goroutines are send's, waited for
// before the next event.
func (e *Engine) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-e.queue:
			var wg sync.WaitGroup
			for _, n := range *e.notifiers.Load() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := e.deliver(ctx, n, ev)
					e.mu.Lock()
					if err != nil {
						e.st.Failed++
					} else {
						e.st.Delivered++
					}
					e.mu.Unlock()
					if err != nil && ctx.Err() == nil {
						e.log.Error("flow alert notification failed", "to", n.String(), "rule", ev.Rule, "err", err)
					}
				}()
			}
			wg.Wait()
		}
	}
}

// deliver posts ev to n, retrying with exponential backoff on network
// errors, 429 and 5xx answers.
func (e *Engine) deliver(ctx context.Context, n notifier, ev Event) error {
	delay := e.opts.RetryDelay
	var err error
	for attempt := 1; ; attempt++ {
		var retry bool
		if retry, err = n.post(ctx, e.opts.Client, ev); err == nil || !retry || attempt >= e.opts.Attempts {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}

package ipsec

import (
	"context"
	"errors"
	"fmt"

	"github.com/strongswan/govici/vici"
)

// saLister lists charon's SAs over a VICI session of its own.
//
// It does not use govici's CallStreaming: that call takes each reply from
// whichever of its two queues (streamed events, command responses) Go's
// select picks, so when both the last list-sa event and the final
// response are waiting, as happens whenever the caller is slower than
// charon (a loaded machine, an emulated one), the response may be taken
// first and the SA silently lost; the tunnel then looked down for a
// moment and routes failed over. Here the session subscribes to list-sa
// events like to any other, and list-sas is an ordinary call: govici's
// reader hands each event to the channel before it reads the response
// that ends the call, so once Call returns every SA is in the channel.
type saLister struct {
	sess   *vici.Session
	events chan vici.Event
}

// listBuffer is the most IKE SAs one listing can return; a fuller
// listing is refused rather than read incomplete (govici drops events
// that do not fit).
const listBuffer = 4096

func newSALister(socket string) (*saLister, error) {
	s, err := vici.NewSession(vici.WithSocketPath(socket))
	if err != nil {
		return nil, fmt.Errorf("connect to charon at %s: %w", socket, err)
	}
	if err := s.Subscribe("list-sa"); err != nil {
		s.Close()
		return nil, fmt.Errorf("subscribe to list-sa: %w", err)
	}
	l := &saLister{sess: s, events: make(chan vici.Event, listBuffer)}
	s.NotifyEvents(l.events)
	return l, nil
}

func (l *saLister) close() { l.sess.Close() }

// list returns charon's IKE SAs by connection name. Calls must not
// overlap (they share the channel): the engine calls it from its own
// goroutine only.
func (l *saLister) list(ctx context.Context) (map[string][]ikeSAMsg, error) {
	l.drain() // events of an earlier call that timed out
	if _, err := l.sess.Call(ctx, "list-sas", vici.NewMessage()); err != nil {
		return nil, fmt.Errorf("list-sas: %w", err)
	}
	if len(l.events) == cap(l.events) {
		l.drain()
		return nil, errors.New("list-sas: more SAs than one listing holds; some were dropped")
	}
	sas := map[string][]ikeSAMsg{}
	for _, ev := range l.drain() {
		if ev.Name != "list-sa" || ev.Message == nil {
			continue
		}
		for _, name := range ev.Message.Keys() {
			sub, ok := ev.Message.Get(name).(*vici.Message)
			if !ok {
				continue
			}
			var sa ikeSAMsg
			if err := vici.UnmarshalMessage(sub, &sa); err != nil {
				return nil, fmt.Errorf("decode SA %q: %w", name, err)
			}
			sas[name] = append(sas[name], sa)
		}
	}
	return sas, nil
}

// drain takes what is in the channel without waiting.
func (l *saLister) drain() []vici.Event {
	var out []vici.Event
	for {
		select {
		case ev, ok := <-l.events:
			if !ok {
				return out
			}
			out = append(out, ev)
		default:
			return out
		}
	}
}

// Package firewall owns edgegw's nftables table, `inet edgegw`. Everything
// edgegw does in netfilter (masquerade on the WAN now; Magic-Firewall rules,
// MSS clamping and flow sampling as they land) is compiled into one Program
// value first and then applied in a single netlink batch that replaces the
// whole table, so the kernel never sees a half-applied ruleset.
package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of the one nftables table edgegw owns (family inet).
// Nothing else may write to it; a start after a crash deletes it.
const TableName = "edgegw"

// Spec is the desired state of the table.
type Spec struct {
	// WAN is the uplink; forwarded traffic leaving through it is
	// masqueraded to the uplink's address. Empty: no NAT.
	WAN string
}

// Chain is one base chain of the compiled program.
type Chain struct {
	Name     string
	Type     nftables.ChainType
	Hook     *nftables.ChainHook
	Priority *nftables.ChainPriority
	Rules    [][]expr.Any
}

// Program is a compiled Spec: the complete contents of the table.
type Program struct {
	Chains []Chain
}

// Compile turns a Spec into a Program. It is pure, so tests check it without
// a kernel.
func Compile(s Spec) *Program {
	p := &Program{}
	post := Chain{
		Name:     "postrouting",
		Type:     nftables.ChainTypeNAT,
		Hook:     nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
	if s.WAN != "" {
		// oifname "wan" masquerade
		post.Rules = append(post.Rules, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.WAN)},
			&expr.Counter{},
			&expr.Masq{},
		})
	}
	p.Chains = append(p.Chains, post)
	return p
}

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// Table applies Programs to the kernel. It is safe for use by one owner at a
// time (the gateway's reload loop).
type Table struct {
	log *slog.Logger

	mu      sync.Mutex
	applied bool
	closed  bool
}

// New returns a Table that has not touched the kernel yet.
func New(log *slog.Logger) *Table {
	return &Table{log: log.With("component", "firewall")}
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Apply replaces the whole table with p in one netlink transaction: the
// table is added (a no-op if present), deleted and created afresh in the
// same batch, so there is no moment with a partial ruleset and a failure
// leaves the previous table in place.
func (t *Table) Apply(p *Program) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("firewall: table is closed")
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	tb := table()
	c.AddTable(tb)
	c.DelTable(tb)
	c.AddTable(tb)
	for _, ch := range p.Chains {
		chain := c.AddChain(&nftables.Chain{
			Name: ch.Name, Table: tb, Type: ch.Type, Hooknum: ch.Hook, Priority: ch.Priority,
		})
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: tb, Chain: chain, Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: apply table inet %s: %w", TableName, err)
	}
	t.applied = true
	return nil
}

// Close deletes the table. It is idempotent.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if !t.applied {
		return nil
	}
	return RemoveTable()
}

// RemoveTable deletes edgegw's table if it exists: at shutdown, and at start
// to clear what a crashed edgegw left behind.
func RemoveTable() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("firewall: netlink: %w", err)
	}
	tb := table()
	// Add-then-delete in one batch deletes the table whether or not it
	// exists, without a racy list first.
	c.AddTable(tb)
	c.DelTable(tb)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("firewall: delete table inet %s: %w", TableName, err)
	}
	return nil
}

package wireguard

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// flooder makes handshake initiations as an attacker who knows only the
// gateway's public key would: a real Noise_IKpsk2 first message (the
// whitepaper, 5.4.2) from a fresh random static key each, so every one has
// a valid mac1 and decrypts to a key, and costs the gateway its full
// lookup. With a cookie it also sets mac2, as wireguard-go does.
type flooder struct {
	gw      Key // the gateway's public key
	hash0   [blake2s.Size]byte
	cookies device.CookieGenerator // mac1, and mac2 once a cookie reply was consumed
}

func newFlooder(gw Key) *flooder {
	f := &flooder{gw: gw}
	f.hash0 = blake2s.Sum256(append(initialHash[:], gw[:]...))
	f.cookies.Init(device.NoisePublicKey(gw))
	return f
}

// initiation returns a 148-byte initiation from a new random static key.
func (f *flooder) initiation(t testing.TB) []byte {
	t.Helper()
	x := ecdh.X25519()
	static, err := x.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	eph, err := x.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := x.NewPublicKey(f.gw[:])
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, sizeInitiation)
	binary.LittleEndian.PutUint32(msg, msgInitiation)
	rand.Read(msg[4:8]) // sender index
	e := eph.PublicKey().Bytes()
	copy(msg[offEphemeral:], e)
	h := blake2s.Sum256(append(f.hash0[:], e...))
	var ck, key [blake2s.Size]byte
	kdf(initialChainKey[:], e, &ck)
	es, _ := eph.ECDH(gw)
	kdf(ck[:], es, &ck, &key)
	seal := func(dst, plain []byte) {
		aead, _ := chacha20poly1305.New(key[:])
		var nonce [chacha20poly1305.NonceSize]byte
		aead.Seal(dst[:0], nonce[:], plain, h[:])
		h = blake2s.Sum256(append(h[:], dst[:len(plain)+16]...))
	}
	seal(msg[offStatic:offStatic+48], static.PublicKey().Bytes())
	ss, _ := static.ECDH(gw)
	kdf(ck[:], ss, &ck, &key)
	var ts [12]byte // TAI64N; any value does for a key nobody holds
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().Unix())+0x400000000000000a)
	seal(msg[offStatic+48:offMAC1], ts[:])
	f.cookies.AddMacs(msg)
	return msg
}

// consume reads cookie reply b, as wireguard-go's initiator does; it
// reports whether the cookie decrypted for the last initiation made.
func (f *flooder) consume(b []byte) bool {
	if len(b) != sizeCookieReply || b[0] != msgCookieReply {
		return false
	}
	var r device.MessageCookieReply
	r.Type = binary.LittleEndian.Uint32(b)
	r.Receiver = binary.LittleEndian.Uint32(b[4:])
	copy(r.Nonce[:], b[8:])
	copy(r.Cookie[:], b[8+len(r.Nonce):])
	return f.cookies.ConsumeReply(&r)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) add(d time.Duration) { c.t.Add(int64(d)) }

func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func ep(s string) conn.Endpoint { return &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort(s)} }

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	now := int64(1e18)
	for i := range 20 {
		if !b.take(now, 10, 20) {
			t.Fatalf("take %d of a full bucket of 20 refused", i)
		}
	}
	if b.take(now, 10, 20) {
		t.Fatal("21st take allowed")
	}
	if b.take(now+int64(90*time.Millisecond), 10, 20) {
		t.Error("a token after 90 ms at 10/s")
	}
	if !b.take(now+int64(110*time.Millisecond), 10, 20) {
		t.Error("no token after 110 ms at 10/s")
	}
	// Idle for an hour: full again, never more than the burst.
	later := now + int64(time.Hour)
	n := 0
	for b.take(later, 10, 20) {
		n++
	}
	if n != 20 {
		t.Errorf("%d tokens after an hour, want the burst of 20", n)
	}
}

// TestLookupBudget walks the budget with a fake clock: a source's own
// budget, others unaffected, the global budget, IPv6 /64s sharing one
// budget, load from many sources and its end, and the table's bound.
func TestLookupBudget(t *testing.T) {
	c := newFakeClock()
	b := newLookupBudget(c.now)
	admitN := func(src netip.Addr, n int) map[budgetVerdict]int {
		got := map[budgetVerdict]int{}
		for range n {
			got[b.admit(src, b.underLoad(), false)]++
		}
		return got
	}
	if got := admitN(addr("198.51.100.7"), 100); got[lookUp] != sourceBurst || got[limitedSource] != 100-sourceBurst {
		t.Fatalf("one source, 100 at once: %v", got)
	}
	if got := admitN(addr("203.0.113.9"), 5); got[lookUp] != 5 {
		t.Errorf("another source after the first used its budget: %v", got)
	}
	c.add(time.Second)
	if got := admitN(addr("198.51.100.7"), 100); got[lookUp] != sourceRate {
		t.Errorf("one second later: %v, want %d lookups", got, sourceRate)
	}
	// An IPv6 /64 is one source; the next /64 another.
	if got := admitN(addr("2001:db8:1:2::1"), sourceBurst); got[lookUp] != sourceBurst {
		t.Errorf("IPv6: %v", got)
	}
	if got := admitN(addr("2001:db8:1:2:ffff::9"), 1); got[limitedSource] != 1 {
		t.Errorf("same /64: %v", got)
	}
	if got := admitN(addr("2001:db8:1:3::1"), 1); got[lookUp] != 1 {
		t.Errorf("next /64: %v", got)
	}
	if sourceOf(addr("::ffff:192.0.2.1")) != addr("192.0.2.1") {
		t.Error("an IPv4-mapped address is not its IPv4 source")
	}
	if b.underLoad() {
		t.Fatal("under load after a few dozen lookups")
	}

	// Many sources (spoofed, say): load at loadThreshold wanted in a
	// second; from then on no lookup without mac2, with it the budgets.
	c.add(time.Second)
	var v budgetVerdict
	i := 0
	for ; !b.underLoad() && i < 2*loadThreshold; i++ {
		v = b.admit(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), false, false)
	}
	if i != loadThreshold || v != lookUp {
		t.Fatalf("under load after %d sources (last %v), want %d", i, v, loadThreshold)
	}
	if got := b.admit(addr("10.2.0.1"), true, false); got != needCookie {
		t.Errorf("under load without mac2: %v", got)
	}
	if got := b.admit(addr("10.2.0.1"), true, true); got != lookUp {
		t.Errorf("under load with mac2: %v", got)
	}
	// The flood goes on: load lasts; it stops: load ends underLoadFor
	// after the last second that reached the threshold.
	for step := range 3 {
		c.add(900 * time.Millisecond)
		for i := range loadThreshold {
			b.admit(netip.AddrFrom4([4]byte{10, 3, byte(step), byte(i)}), b.underLoad(), false)
		}
		if !b.underLoad() {
			t.Fatal("load ended while the flood goes on")
		}
	}
	c.add(underLoadFor + time.Millisecond)
	if b.underLoad() {
		t.Error("still under load after the flood stopped")
	}

	// The global budget: a thousand sources in one second (off load).
	c2 := newFakeClock()
	g := newLookupBudget(c2.now)
	got := map[budgetVerdict]int{}
	for i := range 3 * globalBurst {
		got[g.admit(netip.AddrFrom4([4]byte{10, 4, byte(i >> 8), byte(i)}), false, true)]++
	}
	if got[lookUp] != globalBurst || got[limitedGlobal] != 2*globalBurst {
		t.Errorf("global budget: %v", got)
	}

	// The table stays bounded whatever the number of sources.
	c3 := newFakeClock()
	h := newLookupBudget(c3.now)
	for i := range 10 * maxSources {
		h.admit(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), false, false)
		if i%1000 == 0 {
			c3.add(10 * time.Millisecond)
		}
	}
	if n := h.sources(); n > 2*maxSources {
		t.Errorf("%d sources remembered, bound %d", n, 2*maxSources)
	}
	// A source seen in the last period keeps its (empty) bucket across a
	// rotation; one idle for two periods starts full.
	k := newLookupBudget(c3.now)
	admitK := func(n int) int {
		ok := 0
		for range n {
			if k.admit(addr("192.0.2.77"), false, false) == lookUp {
				ok++
			}
		}
		return ok
	}
	admitK(sourceBurst)
	c3.add(sourcePeriod - 50*time.Millisecond)
	k.admit(addr("192.0.2.78"), false, false) // rotates once the period is up
	c3.add(100 * time.Millisecond)
	if n := admitK(sourceBurst); n != sourceBurst {
		// 10 s at 10/s refilled it: the bucket is full either way.
		t.Errorf("after one period: %d lookups", n)
	}
	if n := admitK(1); n != 0 {
		t.Errorf("bucket not remembered across a rotation: %d", n)
	}
}

// countingSource is a PeerSource that counts its lookups and knows
// nobody.
type countingSource struct{ n atomic.Int64 }

func (s *countingSource) OnDemandPeer(Key) (Peer, bool) { s.n.Add(1); return Peer{}, false }

// TestSpoofedFloodGetsCookies feeds divert a flood of real initiations
// (valid mac1, random static keys) each from another source address, as
// spoofed ones would be. Until the load threshold each is looked up; from
// then on each gets a cookie reply sent to its claimed source, and no
// lookup. A sender that does receive there (a real device) reads the
// cookie, and its next initiation, with mac2, is looked up.
func TestSpoofedFloodGetsCookies(t *testing.T) {
	gw := genKey(t)
	c := newFakeClock()
	o := newOnDemand(nil)
	o.budget = newLookupBudget(c.now)
	var mu sync.Mutex
	replies := map[string][]byte{}
	o.send = func(b []byte, e conn.Endpoint) error {
		mu.Lock()
		defer mu.Unlock()
		replies[e.DstToString()] = b
		return nil
	}
	if err := o.setKeys(gw, &Config{}); err != nil {
		t.Fatal(err)
	}
	src := &countingSource{}
	o.src.Store(&sourceBox{src})

	fl := newFlooder(gw.PublicKey())
	const flood = 3 * loadThreshold
	msgs := make([][]byte, flood)
	for i := range msgs {
		msgs[i] = fl.initiation(t)
	}
	for i, m := range msgs {
		from := ep(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 40000).String())
		if o.divert(m, from) {
			if i < loadThreshold {
				t.Fatalf("initiation %d taken before the load threshold", i)
			}
		} else if i >= loadThreshold {
			t.Fatalf("initiation %d passed on under load", i)
		}
	}
	st := o.stats()
	if !st.UnderLoad || st.LookedUp != loadThreshold || src.n.Load() != loadThreshold || st.Unknown != loadThreshold {
		t.Errorf("stats %v, source lookups %d; want %d lookups, then load", st, src.n.Load(), loadThreshold)
	}
	if st.Cookies != flood-loadThreshold || len(replies) != flood-loadThreshold || st.CookieErrors != 0 {
		t.Errorf("%d cookie replies to %d sources, want %d", st.Cookies, len(replies), flood-loadThreshold)
	}
	for to, b := range replies {
		if len(b) != sizeCookieReply || !wellFormed(b) || b[0] != msgCookieReply {
			t.Fatalf("reply to %s is no cookie reply: % x", to, b)
		}
		break
	}

	// A real device at another source: its first initiation gets a cookie
	// and no lookup, its next (with mac2) a lookup.
	dev := newFlooder(gw.PublicKey())
	m := dev.initiation(t)
	at := ep("192.0.2.2:51820")
	before := src.n.Load()
	if !o.divert(m, at) || src.n.Load() != before {
		t.Fatal("first initiation under load: looked up or passed on")
	}
	if !dev.consume(replies["192.0.2.2:51820"]) {
		t.Fatal("the device could not read its cookie reply")
	}
	m = dev.initiation(t)
	o.divert(m, at)
	if src.n.Load() != before+1 {
		t.Errorf("initiation with mac2 not looked up: %v", o.stats())
	}
	// The same initiation from another address: its mac2 does not hold
	// there, so a cookie again.
	cookies := o.stats().Cookies
	if !o.divert(m, ep("192.0.2.3:51820")) || o.stats().Cookies != cookies+1 || src.n.Load() != before+1 {
		t.Errorf("mac2 accepted from another source: %v", o.stats())
	}
	// Junk without a valid mac1 is dropped here under load, not queued.
	junk := append([]byte(nil), m...)
	junk[offMAC1] ^= 1
	if !o.divert(junk, at) || o.stats().InvalidMAC1 != 1 {
		t.Errorf("invalid mac1 under load: %v", o.stats())
	}
	// Load ends after the flood: initiations are looked up without mac2.
	c.add(2 * underLoadFor)
	if o.divert(fl.initiation(t), ep("198.18.200.1:1")) || o.stats().UnderLoad {
		t.Errorf("after the flood: %v", o.stats())
	}
}

// BenchmarkInitiatorBudget is BenchmarkInitiator with the budget in front,
// as divert runs it: compare the two for what the budget costs the lookup
// path. Sources vary, so the table is exercised, not one hot entry.
func BenchmarkInitiatorBudget(b *testing.B) {
	gw, client := genKey(b), genKey(b)
	msg := initiationFrom(b, client, gw.PublicKey())
	r, _ := newResponder(gw)
	bud := newLookupBudget(nil)
	i := 0
	for b.Loop() {
		if !r.validMAC1(msg) {
			b.Fatal("mac1")
		}
		i++
		src := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		bud.admit(src, bud.underLoad(), false)
		if _, ok := r.initiator(msg); !ok {
			b.Fatal("no initiator")
		}
	}
}

// BenchmarkInitiatorBudgetOnly is the budget alone, per initiation.
func BenchmarkInitiatorBudgetOnly(b *testing.B) {
	bud := newLookupBudget(nil)
	i := 0
	for b.Loop() {
		i++
		bud.admit(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), bud.underLoad(), false)
	}
}

package logpush

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// crashChildEnv carries a crashChild as JSON to the re-executed test
// binary.
const crashChildEnv = "LOGPUSH_CRASH_CHILD"

// crashChild configures the exporter process that TestCrashWindow kills.
type crashChild struct {
	Destination, TokenFile string
	StateDir               string
	Rate                   int // records per second
}

// job is the exporter's job: batches of 40,000 records (two seconds at
// 20,000 a second: max_upload_bytes and max_upload_interval are larger),
// so that the open batch holds what was pushed since the last cut.
func (c crashChild) job() Job {
	return Job{Name: "crash", Dataset: "network_analytics_logs", Destination: c.Destination, TokenFile: c.TokenFile,
		TimestampFormat: TimestampUnixNano, MaxUploadRecords: 40_000, MaxUploadBytes: 100_000_000, MaxUploadInterval: 30 * time.Second}
}

// crashOpts are the exporter's options, in the child and after the
// restart: a request may take long on a loaded machine, and one that
// times out after the receiver stored it is sent again (a duplicate).
func crashOpts(t *testing.T, stateDir string) Options {
	opts := testOpts(t)
	opts.StateDir = stateDir
	opts.RequestTimeout = 2 * time.Minute
	return opts
}

// TestCrashChild is the exporter process of TestCrashWindow: it runs a
// Manager and one producer pushing Rate records a second, and reports on
// stdout, after each Push returned, "P <records pushed>". On SIGTERM it
// stops producing, prints "F <records pushed>" and shuts the Manager down
// gracefully.
func TestCrashChild(t *testing.T) {
	env := os.Getenv(crashChildEnv)
	if env == "" {
		t.Skip("the exporter process of TestCrashWindow")
	}
	var cfg crashChild
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		t.Fatal(err)
	}
	term, stop := signal.NotifyContext(t.Context(), syscall.SIGTERM)
	defer stop()
	opts := crashOpts(t, cfg.StateDir)
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := New([]Job{cfg.job()}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()

	out := bufio.NewWriter(os.Stdout)
	const step = 10 * time.Millisecond
	per := max(cfg.Rate*int(step)/int(time.Second), 1)
	tick := time.NewTicker(step)
	defer tick.Stop()
	seq := 0
	for term.Err() == nil {
		select {
		case <-term.Done():
		case <-tick.C:
			for range per {
				m.Push("network_analytics_logs", benchRecord(seq))
				seq++
			}
			fmt.Fprintf(out, "P %d\n", seq)
			out.Flush()
		}
	}
	fmt.Fprintf(out, "F %d\n", seq)
	out.Flush()
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

// progress is the child's reports as the parent received them.
type progress struct {
	mu    sync.Mutex
	at    []time.Time
	n     []int
	final int // -1 until "F"
}

func (p *progress) last() (int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.n) == 0 {
		return 0, time.Time{}
	}
	return p.n[len(p.n)-1], p.at[0]
}

// before returns the most records reported pushed at or before t.
func (p *progress) before(t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for i, at := range p.at {
		if !at.After(t) {
			n = p.n[i]
		}
	}
	return n
}

// pushedBy returns when the parent learnt that record seq was pushed (it
// was pushed then or earlier).
func (p *progress) pushedBy(seq int) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.n {
		if n > seq {
			return p.at[i]
		}
	}
	return time.Time{}
}

// TestCrashWindow kills an exporter process under load (20,000 records a
// second, batches of 40,000 records) and restarts
// the job from its state directory. After kill -9, every record pushed
// more than a second before the kill is delivered; after SIGTERM, every
// record pushed. Duplicates stay within one batch (at least once).
func TestCrashWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"kill -9", syscall.SIGKILL},
		{"SIGTERM", syscall.SIGTERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
			defer srv.Close()
			stateDir := t.TempDir()
			child := crashChild{Destination: hecJob(t, srv, "crash", nil).Destination, TokenFile: writeToken(t, testToken),
				StateDir: stateDir, Rate: 20_000}
			j := child.job()
			cfg, _ := json.Marshal(child)

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashChildEnv+"="+string(cfg))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if t.Failed() {
					t.Logf("exporter's log:\n%s", stderr.String())
				}
			}()
			p := &progress{final: -1}
			read := make(chan struct{})
			go func() {
				defer close(read)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if os.Getenv("LOGPUSH_TEST_LOG") != "" {
						t.Log(sc.Text())
					}
					kind, num, _ := strings.Cut(sc.Text(), " ")
					n, err := strconv.Atoi(num)
					if err != nil {
						continue
					}
					p.mu.Lock()
					switch kind {
					case "P":
						p.at, p.n = append(p.at, time.Now()), append(p.n, n)
					case "F":
						p.final = n
					}
					p.mu.Unlock()
				}
			}()
			// Run until 70,000 records and at least 3 s: one batch cut by
			// count and sent, the next one open with more than a second of
			// records.
			waitFor(t, 90*time.Second, "the exporter producing", func() bool {
				n, since := p.last()
				return n >= 70_000 && time.Since(since) >= 3*time.Second
			})
			killed := time.Now()
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			<-read
			werr := cmd.Wait()
			produced, _ := p.last()
			safe := p.before(killed.Add(-time.Second))
			if tc.sig == syscall.SIGTERM {
				if werr != nil || p.final < 0 {
					t.Fatalf("exporter did not stop cleanly: %v, final report %d", werr, p.final)
				}
				produced, safe = p.final, p.final
			}
			left, _ := filepath.Glob(filepath.Join(stateDir, "logpush", "crash", walPrefix+"*"))
			t.Logf("stopped with %v after %d records; %d pushed more than 1 s before; segments left: %d", tc.sig, produced, safe, len(left))

			// Restart from the state directory.
			m := newManager(t, []Job{j}, crashOpts(t, stateDir))
			run(t, m)
			waitFor(t, 60*time.Second, "the spool delivered", func() bool { return statusOf(m, "crash").SpooledBatches == 0 })
			st := statusOf(m, "crash")
			got := seqs(t, srv.Events())
			lost, dups, late := 0, 0, 0
			oldest := time.Duration(0) // age at the kill of the oldest lost record
			for seq := range int64(produced) {
				switch n := got[seq]; {
				case n == 0 && seq < int64(safe):
					t.Fatalf("record %d, pushed more than a second before the %v, is lost", seq, tc.sig)
				case n == 0:
					if lost == 0 {
						oldest = killed.Sub(p.pushedBy(int(seq)))
					}
					lost++
				case n > 1:
					dups += n - 1
				}
			}
			for seq := range got {
				if seq >= int64(produced) {
					late++ // pushed after the last report before the kill
				}
			}
			t.Logf("%d of %d records lost (the oldest reported pushed %v before the kill), %d duplicates, %d more than the last report; %d recovered at restart",
				lost, produced, oldest.Round(time.Millisecond), dups, late, st.Recovered)
			if tc.sig == syscall.SIGTERM && (lost != 0 || st.Recovered != 0) {
				t.Errorf("a graceful stop lost %d records, left %d to recover", lost, st.Recovered)
			}
			if dups > j.MaxUploadRecords {
				t.Errorf("%d duplicates, more than one batch", dups)
			}
		})
	}
}

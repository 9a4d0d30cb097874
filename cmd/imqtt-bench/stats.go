package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Latency summarises durations in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// summarize sorts ds in place and returns its percentiles (nearest rank).
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Latency{
		N:   len(ds),
		P50: ms(percentile(ds, 50)),
		P90: ms(percentile(ds, 90)),
		P99: ms(percentile(ds, 99)),
		Max: ms(ds[len(ds)-1]),
	}
}

// percentile returns the nearest-rank p-th percentile of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every
// architecture Go runs on.
const clockTicks = 100

// procSample is what /proc says about a process at one moment.
type procSample struct {
	CPU    time.Duration // user + system
	RSSKiB int64
	HWMKiB int64
	// AnonKiB and FileKiB split RSS: anonymous pages (heap, stacks) and
	// file-backed ones, which for the broker are mostly the store file
	// bbolt maps and so grow with stored history.
	AnonKiB int64
	FileKiB int64
}

// readProc reads /proc/<pid>/stat and /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return procSample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	s := procSample{CPU: cpu}
	s.RSSKiB = statusKiB(status, "VmRSS:")
	s.HWMKiB = statusKiB(status, "VmHWM:")
	s.AnonKiB = statusKiB(status, "RssAnon:")
	s.FileKiB = statusKiB(status, "RssFile:")
	return s, nil
}

// parseStatCPU returns utime+stime from a /proc/<pid>/stat line. The command
// name is in parentheses and may hold spaces, so fields count from the last
// ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat has %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// statusKiB returns the kB value of key in a /proc/<pid>/status text, or 0.
func statusKiB(b []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Proc reports a process's resource use over a run.
type Proc struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is of one core: 200 is both cores of a 2-core machine.
	CPUPercent   float64 `json:"cpu_percent"`
	RSSStartKiB  int64   `json:"rss_start_kib"`
	RSSEndKiB    int64   `json:"rss_end_kib"`
	RSSPeakKiB   int64   `json:"rss_peak_kib"` // highest VmRSS sampled during the run
	VmHWMKiB     int64   `json:"vm_hwm_kib"`   // the process's lifetime peak
	SampleErrors int     `json:"sample_errors,omitempty"`
}

// monitor samples a process's /proc entries while a run goes on.
type monitor struct {
	pid   int
	start procSample
	t0    time.Time
	mu    sync.Mutex
	peak  int64
	errs  int
	stop  chan struct{}
	done  chan struct{}
}

// watch starts sampling pid every 100 ms; nil when pid is 0.
func watch(pid int) (*monitor, error) {
	if pid <= 0 {
		return nil, nil
	}
	s, err := readProc(pid)
	if err != nil {
		return nil, fmt.Errorf("--pid %d: %w", pid, err)
	}
	m := &monitor{pid: pid, start: s, t0: time.Now(), peak: s.RSSKiB, stop: make(chan struct{}), done: make(chan struct{})}
	go m.loop()
	return m, nil
}

func (m *monitor) loop() {
	defer close(m.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sample()
		}
	}
}

func (m *monitor) sample() (procSample, bool) {
	s, err := readProc(m.pid)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		return s, false
	}
	m.peak = max(m.peak, s.RSSKiB)
	return s, true
}

// rss returns the current VmRSS in KiB.
func (m *monitor) rss() int64 {
	s, _ := m.sample()
	return s.RSSKiB
}

// finish stops sampling and reports the run; nil for a nil monitor.
func (m *monitor) finish() *Proc {
	if m == nil {
		return nil
	}
	close(m.stop)
	<-m.done
	end, ok := m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &Proc{PID: m.pid, RSSStartKiB: m.start.RSSKiB, RSSPeakKiB: m.peak, SampleErrors: m.errs}
	if ok {
		wall := time.Since(m.t0)
		cpu := end.CPU - m.start.CPU
		p.CPUSeconds = round(cpu.Seconds(), 2)
		p.CPUPercent = round(100*cpu.Seconds()/wall.Seconds(), 1)
		p.RSSEndKiB = end.RSSKiB
		p.VmHWMKiB = end.HWMKiB
	}
	return p
}

func round(f float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if f < 0 {
		return -float64(int64(-f*p+0.5)) / p
	}
	return float64(int64(f*p+0.5)) / p
}

// Command loadgen keeps a fixed number of HTTP/1.1 keep-alive connections busy, one request
// in flight on each, and prints throughput, latency percentiles, the status codes seen and
// every transport error. It speaks to TCP addresses and to Unix sockets alike, so the same
// client measures nginx and the app behind it (bench/stack.py runs it on the sandbox host).
//
//	loadgen -target http://127.0.0.1:8080 -c 1000 -d 20s -path /api/items/1
//	loadgen -target unix:/run/webstack/app.sock -method POST -body '{"name":"x"}' \
//	        -header 'Content-Type: application/json' -path /api/items -json
//
// It is a closed loop, like wrk: a connection sends its next request when the previous
// answer has been read, so the throughput is what the server sustains at that concurrency.
// Requests completed during -warmup are not measured; errors are counted over the whole run,
// warm-up included, because a "0 errors" claim must hold for all of it.
//
// A plain HTTP/1.1 client rather than net/http: net/http silently retries an idempotent
// request on a connection the server closed, which would hide exactly the failures a
// benchmark of a reverse proxy has to show.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is one run's settings, parsed from the command line.
type config struct {
	network     string // "tcp" or "unix"
	address     string // host:port or socket path
	connections int
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	bind        string   // source address for TCP, empty for any
	requests    [][]byte // serialised requests; connection i starts at i % len
	head        bool     // HEAD answers carry no body, whatever Content-Length says
}

// tally is what one connection saw; the run merges them at the end.
type tally struct {
	latencies []time.Duration  // of answers completed inside the measured window
	statuses  map[int]int64    // status codes inside the measured window
	allNon2xx int64            // answers other than 2xx over the whole run
	errors    map[string]int64 // transport errors over the whole run, by kind
	reconnect int64            // connections the server closed politely (Connection: close)
}

// Report is the JSON printed with -json; latencies are milliseconds.
type Report struct {
	Target      string           `json:"target"`
	Connections int              `json:"connections"`
	Seconds     float64          `json:"seconds"`
	Requests    int64            `json:"requests"`
	RPS         float64          `json:"rps"`
	P50         float64          `json:"p50_ms"`
	P90         float64          `json:"p90_ms"`
	P99         float64          `json:"p99_ms"`
	Max         float64          `json:"max_ms"`
	Statuses    map[string]int64 `json:"statuses"`
	Non2xxTotal int64            `json:"non_2xx_total"`
	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal int64            `json:"errors_total"`
	Reconnects  int64            `json:"reconnects"`
	// Answers per connection in the measured window, fewest and most: a server that starves
	// some connections shows a low minimum however good its median latency looks.
	ConnMin      int64   `json:"per_connection_min"`
	ConnMax      int64   `json:"per_connection_max"`
	CPUSeconds   float64 `json:"loadgen_cpu_seconds"`
	WarmupSecond float64 `json:"warmup_seconds"`
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	cfg, target, asJSON, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	raiseFileLimit()
	report := run(cfg)
	report.Target = target
	if asJSON {
		out, _ := json.Marshal(report)
		fmt.Println(string(out))
	} else {
		fmt.Println(report.String())
	}
}

func parseFlags(args []string) (config, string, bool, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var (
		cfg     config
		paths   stringList
		headers stringList
	)
	target := fs.String("target", "http://127.0.0.1:8080", "http://HOST:PORT or unix:/path/to.sock")
	fs.IntVar(&cfg.connections, "c", 100, "connections, each with one request in flight")
	fs.DurationVar(&cfg.duration, "d", 10*time.Second, "measured duration")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warm-up before it")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.StringVar(&cfg.bind, "bind", "", "source IP address for TCP targets")
	method := fs.String("method", "GET", "request method")
	body := fs.String("body", "", "request body")
	host := fs.String("host", "localhost", "Host header")
	fs.Var(&paths, "path", "request path (repeat to rotate through several)")
	fs.Var(&headers, "header", "extra header 'Name: value' (repeatable)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return cfg, "", false, err
	}
	if fs.NArg() > 0 {
		return cfg, "", false, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case strings.HasPrefix(*target, "unix:"):
		cfg.network, cfg.address = "unix", strings.TrimPrefix(*target, "unix:")
		if cfg.bind != "" {
			return cfg, "", false, errors.New("-bind applies to TCP targets only")
		}
	case strings.HasPrefix(*target, "http://"):
		cfg.network, cfg.address = "tcp", strings.TrimSuffix(strings.TrimPrefix(*target, "http://"), "/")
		if _, _, err := net.SplitHostPort(cfg.address); err != nil {
			return cfg, "", false, fmt.Errorf("-target %q: want http://HOST:PORT", *target)
		}
	default:
		return cfg, "", false, fmt.Errorf("-target %q: want http://HOST:PORT or unix:/path", *target)
	}
	if cfg.connections < 1 || cfg.duration <= 0 || cfg.warmup < 0 || cfg.timeout <= 0 {
		return cfg, "", false, errors.New("-c must be at least 1, -d and -timeout above 0, -warmup not negative")
	}
	if cfg.bind != "" && net.ParseIP(cfg.bind) == nil {
		return cfg, "", false, fmt.Errorf("-bind %q is not an IP address", cfg.bind)
	}
	if len(paths) == 0 {
		paths = stringList{"/"}
	}
	for _, h := range headers {
		if !strings.Contains(h, ":") {
			return cfg, "", false, fmt.Errorf("-header %q: want 'Name: value'", h)
		}
	}
	cfg.head = strings.EqualFold(*method, "HEAD")
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return cfg, "", false, fmt.Errorf("-path %q must start with /", p)
		}
		cfg.requests = append(cfg.requests, buildRequest(*method, p, *host, headers, *body))
	}
	return cfg, *target, *asJSON, nil
}

func buildRequest(method, path, host string, headers []string, body string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, host)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == "POST" || method == "PUT" || method == "PATCH" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.Bytes()
}

// raiseFileLimit lifts the soft open-files limit to the hard one: a thousand connections do
// not fit the usual soft 1024.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func run(cfg config) Report {
	start := time.Now()
	measureFrom := start.Add(cfg.warmup)
	end := measureFrom.Add(cfg.duration)
	tallies := make([]*tally, cfg.connections)
	var wg sync.WaitGroup
	for i := range tallies {
		tallies[i] = &tally{statuses: map[int]int64{}, errors: map[string]int64{}}
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			connection(cfg, id, measureFrom, end, tallies[id])
		}(i)
	}
	wg.Wait()
	return summarise(cfg, tallies)
}

// connection drives one connection until the run ends, reconnecting when the server closes.
func connection(cfg config, id int, measureFrom, end time.Time, t *tally) {
	dialer := net.Dialer{Timeout: cfg.timeout}
	if cfg.bind != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.bind)}
	}
	next := id % len(cfg.requests)
	var (
		conn net.Conn
		in   *bufio.Reader
	)
	closeConn := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	for time.Now().Before(end) {
		if conn == nil {
			c, err := dialer.Dial(cfg.network, cfg.address)
			if err != nil {
				t.errors["connect"]++
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn, in = c, bufio.NewReaderSize(c, 16<<10)
		}
		request := cfg.requests[next]
		next = (next + 1) % len(cfg.requests)
		sent := time.Now()
		_ = conn.SetDeadline(sent.Add(cfg.timeout))
		if _, err := conn.Write(request); err != nil {
			t.errors[errorKind(err, "write")]++
			closeConn()
			continue
		}
		status, keepAlive, err := readResponse(in, cfg.head)
		done := time.Now()
		if err != nil {
			t.errors[errorKind(err, "read")]++
			closeConn()
			continue
		}
		if status < 200 || status > 299 {
			t.allNon2xx++
		}
		if !done.Before(measureFrom) && !done.After(end) {
			t.latencies = append(t.latencies, done.Sub(sent))
			t.statuses[status]++
		}
		if !keepAlive {
			t.reconnect++
			closeConn()
		}
	}
}

// errorKind names a transport error for the report.
func errorKind(err error, fallback string) string {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return fallback
}

var errMalformed = errors.New("malformed response")

// readResponse reads one final response (skipping interim 1xx ones) and discards its body.
// It returns the status and whether the connection may carry another request.
func readResponse(in *bufio.Reader, head bool) (int, bool, error) {
	for {
		status, keepAlive, err := readOne(in, head)
		if err != nil || status >= 200 || status == 101 {
			return status, keepAlive, err
		}
	}
}

func readOne(in *bufio.Reader, head bool) (int, bool, error) {
	line, err := in.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	fields := bytes.Fields(line)
	if len(fields) < 2 || !bytes.HasPrefix(fields[0], []byte("HTTP/1.")) {
		return 0, false, errMalformed
	}
	status, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, false, errMalformed
	}
	keepAlive := bytes.Equal(fields[0], []byte("HTTP/1.1"))
	length, chunked := -1, false
	for {
		header, err := in.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		header = bytes.TrimRight(header, "\r\n")
		if len(header) == 0 {
			break
		}
		name, value, ok := bytes.Cut(header, []byte(":"))
		if !ok {
			return 0, false, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			for _, token := range strings.Split(strings.ToLower(string(value)), ",") {
				switch strings.TrimSpace(token) {
				case "close":
					keepAlive = false
				case "keep-alive":
					keepAlive = true
				}
			}
		}
	}
	switch {
	case head || status == 204 || status == 304 || status < 200:
		// no body
	case chunked:
		if err := discardChunked(in); err != nil {
			return 0, false, err
		}
	case length >= 0:
		if _, err := in.Discard(length); err != nil {
			return 0, false, err
		}
	default: // the body runs to the end of the connection
		if _, err := io.Copy(io.Discard, in); err != nil {
			return 0, false, err
		}
		keepAlive = false
	}
	return status, keepAlive, nil
}

func discardChunked(in *bufio.Reader) error {
	for {
		line, err := in.ReadSlice('\n')
		if err != nil {
			return err
		}
		sizeField, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeField)), 16, 64)
		if err != nil || size < 0 {
			return errMalformed
		}
		if size == 0 { // trailers, then an empty line
			for {
				trailer, err := in.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(trailer, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := in.Discard(int(size) + 2); err != nil { // data and its CRLF
			return err
		}
	}
}

func summarise(cfg config, tallies []*tally) Report {
	r := Report{
		Connections:  cfg.connections,
		Seconds:      cfg.duration.Seconds(),
		WarmupSecond: cfg.warmup.Seconds(),
		Statuses:     map[string]int64{},
		Errors:       map[string]int64{},
	}
	var latencies []time.Duration
	r.ConnMin = math.MaxInt64
	for _, t := range tallies {
		latencies = append(latencies, t.latencies...)
		r.ConnMin = min(r.ConnMin, int64(len(t.latencies)))
		r.ConnMax = max(r.ConnMax, int64(len(t.latencies)))
		for status, n := range t.statuses {
			r.Statuses[strconv.Itoa(status)] += n
		}
		for kind, n := range t.errors {
			r.Errors[kind] += n
			r.ErrorsTotal += n
		}
		r.Non2xxTotal += t.allNon2xx
		r.Reconnects += t.reconnect
	}
	r.Requests = int64(len(latencies))
	r.RPS = float64(r.Requests) / cfg.duration.Seconds()
	slices.Sort(latencies)
	r.P50 = percentile(latencies, 0.50)
	r.P90 = percentile(latencies, 0.90)
	r.P99 = percentile(latencies, 0.99)
	if len(latencies) > 0 {
		r.Max = ms(latencies[len(latencies)-1])
	}
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) == nil {
		r.CPUSeconds = tv(usage.Utime) + tv(usage.Stime)
	}
	return r
}

// percentile is the nearest-rank percentile of sorted latencies, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	return ms(sorted[max(rank, 0)])
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func (r Report) String() string {
	return fmt.Sprintf("%s c=%d: %.0f req/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; "+
		"answers per connection %d..%d; statuses %v, non-2xx (whole run) %d, errors %v (total %d), "+
		"loadgen CPU %.1f s",
		r.Target, r.Connections, r.RPS, r.P50, r.P90, r.P99, r.Max, r.ConnMin, r.ConnMax, r.Statuses,
		r.Non2xxTotal, r.Errors, r.ErrorsTotal, r.CPUSeconds)
}

// Command loadgen sends HTTP/1.1 requests over a fixed number of connections and reports
// throughput, latency percentiles, the status codes seen and every transport error. It is
// the project's one load client: the benchmarks (bench/) and the molecule drills that count
// failed requests across deploys, upgrades and outages all run it.
//
//	loadgen -target http://127.0.0.1:8080 -c 1000 -d 20s -path /api/items/1
//	loadgen -target unix:/run/webstack/app.sock -method POST -body '{"name":"x"}' \
//	        -header 'Content-Type: application/json' -path /api/items -json
//	loadgen -target http://127.0.0.1:8080 -c 4 -rate 20 -d 0 -warmup 0s -idempotency-key \
//	        -resend-unanswered -request 'POST /api/items {"name":"drill"}' \
//	        -request 'GET /api/items/{id}' -request 'GET /health' -out /var/tmp/load.json
//	loadgen -target http://127.0.0.1:8080 -target https://127.0.0.1:443 -insecure -close \
//	        -c 6 -rate 100 -d 0 -warmup 0s -bind 127.0.0.2 -out /var/tmp/connect.json
//
// By default it is a closed loop, like wrk: a connection sends its next request when the
// previous answer has been read, so the throughput is what the server sustains at that
// concurrency. With -rate the connections together start that many requests a second,
// evenly spaced (a late one starts at once, with no burst to catch up): steady traffic that
// leaves the machine to whatever it watches. With -d 0 it runs until SIGTERM or SIGINT,
// finishing the requests in flight, and then reports.
//
// Requests completed during -warmup are not measured; errors and non-2xx answers are counted
// over the whole run, warm-up included, because a "0 errors" claim must hold for all of it.
//
// A plain HTTP/1.1 client rather than net/http: net/http silently retries an idempotent
// request on a connection the server closed, which would hide exactly the failures a test
// of a reverse proxy has to show. The one resend it knows is explicit (-resend-unanswered)
// and counted apart: see connection.send.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// target is one server to send to: TCP (optionally TLS) or a Unix socket.
type target struct {
	label   string // as given on the command line
	network string // "tcp" or "unix"
	address string // host:port or socket path
	tls     bool
}

// request is one entry of the rotation every connection walks through.
type request struct {
	label  string // "GET /api/items/{id}", for the report
	method string
	path   string // may hold {id}: the id of the last item this connection created
	body   string
	static []byte // the serialised request, when nothing in it changes from send to send
}

// config is one run's settings, parsed from the command line.
type config struct {
	targets     []target // a connection takes the next one each time it connects
	connections int
	duration    time.Duration // 0: until SIGTERM or SIGINT
	warmup      time.Duration
	timeout     time.Duration
	rate        float64 // requests a second, all connections together; 0: closed loop
	bind        string  // source address for TCP, empty for any
	host        string
	headers     []string
	requests    []request // connection i starts at i % len
	idempotency bool      // a fresh Idempotency-Key on every POST
	closeEach   bool      // a new connection for every request
	resend      bool      // see connection.send
	insecure    bool      // TLS without verifying the server's certificate
	out         string    // where to write the JSON report, besides stdout
}

// event is one failure or resend, for the report's first few.
type event struct {
	At      float64 `json:"at"` // Unix time, seconds
	Target  string  `json:"target"`
	Request string  `json:"request"`
	What    string  `json:"what"` // an error kind or a status code
}

const firstEvents = 20

// tally is what one connection saw; the run merges them at the end.
type tally struct {
	latencies []time.Duration // of answers completed inside the measured window
	statuses  map[int]int64   // status codes inside the measured window
	answers   int64           // answers over the whole run
	non2xx    int64           // answers other than 2xx over the whole run
	status5xx int64           // 5xx answers over the whole run
	errors    map[string]int64
	byTarget  map[string]map[string]int64 // whole run: status codes and error kinds
	reconnect int64                       // connections the server closed politely
	resent    int64
	failures  []event // the first transport errors and non-2xx answers
	resends   []event
}

// Report is the JSON printed with -json and written to -out; latencies are milliseconds.
type Report struct {
	Target      string           `json:"target"`
	Connections int              `json:"connections"`
	Started     float64          `json:"started"`  // Unix time
	Finished    float64          `json:"finished"` // Unix time
	Seconds     float64          `json:"seconds"`  // measured
	Rate        float64          `json:"rate,omitempty"`
	Requests    int64            `json:"requests"` // answers inside the measured window
	RPS         float64          `json:"rps"`
	P50         float64          `json:"p50_ms"`
	P90         float64          `json:"p90_ms"`
	P99         float64          `json:"p99_ms"`
	Max         float64          `json:"max_ms"`
	Statuses    map[string]int64 `json:"statuses"`
	Answers     int64            `json:"answers_total"`
	Non2xxTotal int64            `json:"non_2xx_total"`
	Status5xx   int64            `json:"status_5xx_total"`
	Errors      map[string]int64 `json:"errors"`
	ErrorsTotal int64            `json:"errors_total"`
	// Failures: transport errors and 5xx answers, over the whole run.
	Failures      int64                       `json:"failures"`
	FirstFailures []event                     `json:"first_failures"`
	Resent        int64                       `json:"resent"`
	FirstResent   []event                     `json:"first_resent"`
	ByTarget      map[string]map[string]int64 `json:"by_target"`
	Reconnects    int64                       `json:"reconnects"` // server-closed; -close's own not counted
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
	cfg, asJSON, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	raiseFileLimit()
	stop := make(chan struct{})
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		close(stop)
	}()
	report := runUntil(cfg, stop)
	out, _ := json.Marshal(report)
	if cfg.out != "" {
		if err := writeAtomically(cfg.out, out); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	}
	if asJSON {
		fmt.Println(string(out))
	} else {
		fmt.Println(report.String())
	}
}

// writeAtomically writes the report whole or not at all: whoever waits for the file must
// never read half of it.
func writeAtomically(path string, data []byte) error {
	temporary := path + ".tmp"
	if err := os.WriteFile(temporary, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(temporary, path)
}

func parseFlags(args []string) (config, bool, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var (
		cfg                              config
		targets, paths, headers, entries stringList
	)
	fs.Var(&targets, "target", "http://HOST:PORT, https://HOST:PORT or unix:/path/to.sock "+
		"(repeat: each new connection takes the next; default http://127.0.0.1:8080)")
	fs.IntVar(&cfg.connections, "c", 100, "connections, each with one request in flight")
	fs.DurationVar(&cfg.duration, "d", 10*time.Second, "measured duration (0: until SIGTERM or SIGINT)")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warm-up before it")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.Float64Var(&cfg.rate, "rate", 0, "requests a second, all connections together (0: closed loop)")
	fs.StringVar(&cfg.bind, "bind", "", "source IP address for TCP targets")
	method := fs.String("method", "GET", "request method (with -path)")
	body := fs.String("body", "", "request body (with -path)")
	fs.StringVar(&cfg.host, "host", "localhost", "Host header")
	fs.Var(&paths, "path", "request path (repeat to rotate through several)")
	fs.Var(&entries, "request", "'METHOD PATH [JSON BODY]' (repeat to rotate; instead of -path); "+
		"{id} in PATH is the id of the last item the connection created (201)")
	fs.Var(&headers, "header", "extra header 'Name: value' (repeatable)")
	fs.BoolVar(&cfg.idempotency, "idempotency-key", false, "a fresh Idempotency-Key header on every POST")
	fs.BoolVar(&cfg.closeEach, "close", false, "a new connection for every request (Connection: close)")
	fs.BoolVar(&cfg.resend, "resend-unanswered", false,
		"send a request again, once, when a kept-alive connection closed before any byte of its answer")
	fs.BoolVar(&cfg.insecure, "insecure", false, "do not verify https targets' certificates")
	fs.StringVar(&cfg.out, "out", "", "also write the JSON report to this file")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if len(targets) == 0 {
		targets = stringList{"http://127.0.0.1:8080"}
	}
	for _, t := range targets {
		parsed, err := parseTarget(t)
		if err != nil {
			return cfg, false, err
		}
		if parsed.network == "unix" && cfg.bind != "" {
			return cfg, false, errors.New("-bind applies to TCP targets only")
		}
		cfg.targets = append(cfg.targets, parsed)
	}
	if cfg.connections < 1 || cfg.duration < 0 || cfg.warmup < 0 || cfg.timeout <= 0 || cfg.rate < 0 {
		return cfg, false, errors.New("-c must be at least 1, -timeout above 0, -d, -warmup and -rate not negative")
	}
	if cfg.bind != "" && net.ParseIP(cfg.bind) == nil {
		return cfg, false, fmt.Errorf("-bind %q is not an IP address", cfg.bind)
	}
	for _, h := range headers {
		if !strings.Contains(h, ":") {
			return cfg, false, fmt.Errorf("-header %q: want 'Name: value'", h)
		}
	}
	cfg.headers = headers
	if len(entries) > 0 && (len(paths) > 0 || *body != "" || *method != "GET") {
		return cfg, false, errors.New("-request replaces -path, -method and -body: use one or the other")
	}
	if len(entries) == 0 {
		if len(paths) == 0 {
			paths = stringList{"/"}
		}
		for _, p := range paths {
			entries = append(entries, strings.TrimSpace(*method+" "+p+" "+*body))
		}
	}
	for _, entry := range entries {
		r, err := parseRequest(entry)
		if err != nil {
			return cfg, false, err
		}
		if !r.dynamic(cfg) {
			r.static = cfg.serialise(r, "", "")
		}
		cfg.requests = append(cfg.requests, r)
	}
	if !slices.ContainsFunc(cfg.requests, func(r request) bool { return !strings.Contains(r.path, "{id}") }) {
		return cfg, false, errors.New("every request needs {id}: add one that creates an item")
	}
	return cfg, *asJSON, nil
}

func parseTarget(t string) (target, error) {
	parsed := target{label: t, network: "tcp"}
	switch {
	case strings.HasPrefix(t, "unix:"):
		parsed.network, parsed.address = "unix", strings.TrimPrefix(t, "unix:")
		return parsed, nil
	case strings.HasPrefix(t, "http://"):
		parsed.address = strings.TrimPrefix(t, "http://")
	case strings.HasPrefix(t, "https://"):
		parsed.address, parsed.tls = strings.TrimPrefix(t, "https://"), true
	default:
		return parsed, fmt.Errorf("-target %q: want http://HOST:PORT, https://HOST:PORT or unix:/path", t)
	}
	parsed.address = strings.TrimSuffix(parsed.address, "/")
	if _, _, err := net.SplitHostPort(parsed.address); err != nil {
		return parsed, fmt.Errorf("-target %q: want a port after the host", t)
	}
	return parsed, nil
}

// parseRequest reads 'METHOD PATH [BODY]'.
func parseRequest(entry string) (request, error) {
	fields := strings.SplitN(strings.TrimSpace(entry), " ", 3)
	fields[0] = strings.ToUpper(fields[0])
	if len(fields) < 2 || fields[0] == "" {
		return request{}, fmt.Errorf("request %q: want 'METHOD PATH [BODY]'", entry)
	}
	if !strings.HasPrefix(fields[1], "/") {
		return request{}, fmt.Errorf("request %q: the path must start with /", entry)
	}
	r := request{label: fields[0] + " " + fields[1], method: fields[0], path: fields[1]}
	if len(fields) == 3 {
		r.body = fields[2]
	}
	return r, nil
}

func (r request) dynamic(cfg config) bool {
	return strings.Contains(r.path, "{id}") || (cfg.idempotency && r.method == "POST")
}

// serialise builds one request's bytes: its path with the connection's item id, and the
// idempotency key it carries (the same on a resend).
func (cfg config) serialise(r request, itemID, key string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.method, strings.ReplaceAll(r.path, "{id}", itemID), cfg.host)
	for _, h := range cfg.headers {
		b.WriteString(h + "\r\n")
	}
	if key != "" {
		b.WriteString("Idempotency-Key: " + key + "\r\n")
	}
	if cfg.closeEach {
		b.WriteString("Connection: close\r\n")
	}
	if r.body != "" || r.method == "POST" || r.method == "PUT" || r.method == "PATCH" {
		if r.body != "" && !slices.ContainsFunc(cfg.headers, isContentType) {
			b.WriteString("Content-Type: application/json\r\n")
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
	}
	b.WriteString("\r\n")
	b.WriteString(r.body)
	return b.Bytes()
}

func isContentType(header string) bool {
	name, _, _ := strings.Cut(header, ":")
	return strings.EqualFold(strings.TrimSpace(name), "Content-Type")
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

// window is when the run measures and when it stops.
type window struct {
	measureFrom time.Time
	end         time.Time // zero: until stop
	stop        <-chan struct{}
}

func (w window) open() bool {
	select {
	case <-w.stop:
		return false
	default:
		return w.end.IsZero() || time.Now().Before(w.end)
	}
}

func (w window) measures(at time.Time) bool {
	return !at.Before(w.measureFrom) && (w.end.IsZero() || !at.After(w.end))
}

// pacer is the connections' shared schedule under -rate: one start every interval.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

// wait blocks until this connection's next slot; false when the run stopped meanwhile.
func (p *pacer) wait(stop <-chan struct{}) bool {
	if p == nil {
		return true
	}
	p.mu.Lock()
	now := time.Now()
	// Behind by more than one interval (a slow answer): start from now, no burst.
	p.next = later(p.next.Add(p.interval), now)
	slot := p.next
	p.mu.Unlock()
	if !slot.After(now) {
		return true
	}
	timer := time.NewTimer(slot.Sub(now))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stop:
		return false
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func run(cfg config) Report { return runUntil(cfg, make(chan struct{})) }

// runUntil runs until the duration is over or stop is closed, whichever comes first.
func runUntil(cfg config, stop <-chan struct{}) Report {
	started := time.Now()
	w := window{measureFrom: started.Add(cfg.warmup), stop: stop}
	if cfg.duration > 0 {
		w.end = w.measureFrom.Add(cfg.duration)
	}
	var p *pacer
	if cfg.rate > 0 {
		p = &pacer{interval: time.Duration(float64(time.Second) / cfg.rate), next: started}
	}
	stopped := make(chan time.Time, 1)
	go func() {
		<-stop
		stopped <- time.Now()
	}()
	tallies := make([]*tally, cfg.connections)
	var wg sync.WaitGroup
	for i := range tallies {
		tallies[i] = &tally{
			statuses: map[int]int64{}, errors: map[string]int64{}, byTarget: map[string]map[string]int64{},
		}
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			c := connection{cfg: cfg, id: id, window: w, pacer: p, tally: tallies[id]}
			c.loop()
		}(i)
	}
	wg.Wait()
	measuredUntil := time.Now()
	if !w.end.IsZero() && measuredUntil.After(w.end) {
		measuredUntil = w.end
	}
	select {
	case at := <-stopped:
		if at.Before(measuredUntil) {
			measuredUntil = at
		}
	default:
	}
	r := summarise(cfg, tallies, max(measuredUntil.Sub(w.measureFrom), time.Millisecond))
	r.Started, r.Finished = unix(started), unix(time.Now())
	return r
}

// connection is one client: one connection at a time, one request in flight.
type connection struct {
	cfg    config
	id     int
	window window
	pacer  *pacer
	tally  *tally

	conn       net.Conn
	in         *bufio.Reader
	target     *target
	answered   int // answers on the current connection
	nextTarget int
	itemID     string // of the last item this client created
}

func (c *connection) loop() {
	defer c.close()
	c.nextTarget = c.id % len(c.cfg.targets)
	next := c.id % len(c.cfg.requests)
	for c.window.open() {
		if !c.pacer.wait(c.window.stop) || !c.window.open() {
			return
		}
		r := c.cfg.requests[next]
		next = (next + 1) % len(c.cfg.requests)
		for c.itemID == "" && strings.Contains(r.path, "{id}") { // nothing created yet
			r = c.cfg.requests[next]
			next = (next + 1) % len(c.cfg.requests)
		}
		payload := r.static
		if payload == nil {
			key := ""
			if c.cfg.idempotency && r.method == "POST" {
				key = randomKey()
			}
			payload = c.cfg.serialise(r, c.itemID, key)
		}
		c.send(r, payload)
	}
}

// send sends one request and reads its answer. With -resend-unanswered it sends it again,
// once, on a new connection when a kept-alive connection was closed before any byte of the
// answer came back, as any HTTP/1.1 client may (RFC 9112, 9.3.1): a server may close an
// idle connection (nginx does on every reload) just as the next request leaves, and such a
// request was never read. Those are counted as resent, not hidden; a POST carries the same
// Idempotency-Key the second time.
func (c *connection) send(r request, payload []byte) {
	for attempt := 1; ; attempt++ {
		if c.conn == nil {
			if err := c.dial(); err != nil {
				c.fail(r, errorKind(err, "connect"))
				if c.pacer == nil {
					time.Sleep(50 * time.Millisecond) // not a tight loop against a closed port
				}
				return
			}
		}
		sent := time.Now()
		_ = c.conn.SetDeadline(sent.Add(c.cfg.timeout))
		status, keepAlive, body, err := c.exchange(r, payload)
		done := time.Now()
		if err != nil {
			reused := c.answered > 0
			c.close()
			if c.cfg.resend && attempt == 1 && reused && errors.Is(err, errUnanswered) {
				c.tally.resent++
				c.note(&c.tally.resends, r, errorKind(err, "read"))
				continue
			}
			c.fail(r, errorKind(err, "read"))
			return
		}
		c.answered++
		c.count(r, status)
		if c.window.measures(done) {
			c.tally.latencies = append(c.tally.latencies, done.Sub(sent))
			c.tally.statuses[status]++
		}
		if status == 201 && body != nil {
			if id := createdID(body); id != "" {
				c.itemID = id
			}
		}
		if c.cfg.closeEach {
			// Let the server close first, as it does after "Connection: close": the
			// TIME_WAIT stays on its side, not on this source address's ports. A server
			// that keeps it open gets a second, then this side closes.
			_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, c.in)
			c.close()
		} else if !keepAlive {
			c.tally.reconnect++
			c.close()
		}
		return
	}
}

func (c *connection) exchange(r request, payload []byte) (int, bool, []byte, error) {
	if _, err := c.conn.Write(payload); err != nil {
		if errorKind(err, "") == "closed" { // the server had closed it: nothing was read
			return 0, false, nil, fmt.Errorf("%w: %w", errUnanswered, err)
		}
		return 0, false, nil, err
	}
	return readResponse(c.in, r.method == "HEAD", r.method == "POST")
}

func (c *connection) dial() error {
	t := &c.cfg.targets[c.nextTarget]
	c.nextTarget = (c.nextTarget + 1) % len(c.cfg.targets)
	c.target = t
	dialer := net.Dialer{Timeout: c.cfg.timeout}
	if c.cfg.bind != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.cfg.bind)}
	}
	conn, err := dialer.Dial(t.network, t.address)
	if err != nil {
		return err
	}
	if t.tls {
		name, _, err := net.SplitHostPort(c.cfg.host)
		if err != nil { // no port in the Host header
			name = c.cfg.host
		}
		secure := tls.Client(conn, &tls.Config{ServerName: name, InsecureSkipVerify: c.cfg.insecure})
		_ = secure.SetDeadline(time.Now().Add(c.cfg.timeout))
		if err := secure.Handshake(); err != nil {
			conn.Close()
			return fmt.Errorf("%w: %w", errTLS, err)
		}
		conn = secure
	}
	c.conn, c.in, c.answered = conn, bufio.NewReaderSize(conn, 16<<10), 0
	return nil
}

func (c *connection) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func (c *connection) count(r request, status int) {
	c.tally.answers++
	c.targetCounts()[strconv.Itoa(status)]++
	if status < 200 || status > 299 {
		c.tally.non2xx++
	}
	if status >= 500 {
		c.tally.status5xx++
		c.note(&c.tally.failures, r, strconv.Itoa(status))
	}
}

func (c *connection) fail(r request, kind string) {
	c.tally.errors[kind]++
	c.targetCounts()[kind]++
	c.note(&c.tally.failures, r, kind)
}

func (c *connection) targetCounts() map[string]int64 {
	counts := c.tally.byTarget[c.target.label]
	if counts == nil {
		counts = map[string]int64{}
		c.tally.byTarget[c.target.label] = counts
	}
	return counts
}

func (c *connection) note(events *[]event, r request, what string) {
	if len(*events) < firstEvents {
		*events = append(*events, event{At: unix(time.Now()), Target: c.target.label, Request: r.label, What: what})
	}
}

// createdID is the "id" of a created item's JSON answer, or "".
func createdID(body []byte) string {
	var created struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(body, &created) != nil || len(created.ID) == 0 {
		return ""
	}
	return strings.Trim(string(created.ID), `"`)
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func unix(t time.Time) float64 { return math.Round(float64(t.UnixMilli())) / 1000 }

var (
	errMalformed  = errors.New("malformed response")
	errUnanswered = errors.New("closed before any byte of the answer")
	errTLS        = errors.New("TLS handshake")
)

// errorKind names a transport error for the report.
func errorKind(err error, fallback string) string {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, errTLS):
		return "tls"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return fallback
}

// readResponse reads one final response (skipping interim 1xx ones). It returns the status,
// whether the connection may carry another request, and the body of a 201 answer when keep
// is set (other bodies are discarded).
func readResponse(in *bufio.Reader, head, keep bool) (int, bool, []byte, error) {
	for first := true; ; first = false {
		status, keepAlive, body, err := readOne(in, head, keep)
		if err != nil && first && errors.Is(err, errNothingRead) {
			return 0, false, nil, fmt.Errorf("%w: %w", errUnanswered, err)
		}
		if err != nil || status >= 200 || status == 101 {
			return status, keepAlive, body, err
		}
	}
}

// errNothingRead marks a connection that ended (EOF, reset) before the first byte.
var errNothingRead = errors.New("no byte read")

func readOne(in *bufio.Reader, head, keep bool) (int, bool, []byte, error) {
	line, err := in.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && errorKind(err, "") == "closed" {
			return 0, false, nil, fmt.Errorf("%w: %w", errNothingRead, err)
		}
		return 0, false, nil, err
	}
	// "HTTP/1.1 200 OK"
	fields := bytes.Fields(line)
	if len(fields) < 2 || !bytes.HasPrefix(fields[0], []byte("HTTP/1.")) {
		return 0, false, nil, errMalformed
	}
	status, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, false, nil, errMalformed
	}
	keepAlive := bytes.Equal(fields[0], []byte("HTTP/1.1"))
	length, chunked := -1, false
	for {
		header, err := in.ReadSlice('\n')
		if err != nil {
			return 0, false, nil, err
		}
		header = bytes.TrimRight(header, "\r\n")
		if len(header) == 0 {
			break
		}
		name, value, ok := bytes.Cut(header, []byte(":"))
		if !ok {
			return 0, false, nil, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, nil, errMalformed
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
	var sink io.Writer = io.Discard
	var body *bytes.Buffer
	if keep && status == 201 {
		body = &bytes.Buffer{}
		sink = body
	}
	switch {
	case head || status == 204 || status == 304 || status < 200:
		// no body
	case chunked:
		if err := copyChunked(sink, in); err != nil {
			return 0, false, nil, err
		}
	case length >= 0:
		if _, err := io.CopyN(sink, in, int64(length)); err != nil {
			return 0, false, nil, err
		}
	default: // the body runs to the end of the connection
		if _, err := io.Copy(sink, in); err != nil {
			return 0, false, nil, err
		}
		keepAlive = false
	}
	if body != nil {
		return status, keepAlive, body.Bytes(), nil
	}
	return status, keepAlive, nil, nil
}

func copyChunked(sink io.Writer, in *bufio.Reader) error {
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
		if _, err := io.CopyN(sink, in, size); err != nil {
			return err
		}
		if _, err := in.Discard(2); err != nil { // the chunk's CRLF
			return err
		}
	}
}

func summarise(cfg config, tallies []*tally, measured time.Duration) Report {
	targets := make([]string, len(cfg.targets))
	for i, t := range cfg.targets {
		targets[i] = t.label
	}
	r := Report{
		Target:       strings.Join(targets, ","),
		Connections:  cfg.connections,
		Seconds:      math.Round(measured.Seconds()*1000) / 1000,
		Rate:         cfg.rate,
		WarmupSecond: cfg.warmup.Seconds(),
		Statuses:     map[string]int64{},
		Errors:       map[string]int64{},
		ByTarget:     map[string]map[string]int64{},
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
		for label, counts := range t.byTarget {
			if r.ByTarget[label] == nil {
				r.ByTarget[label] = map[string]int64{}
			}
			for what, n := range counts {
				r.ByTarget[label][what] += n
			}
		}
		r.Answers += t.answers
		r.Non2xxTotal += t.non2xx
		r.Status5xx += t.status5xx
		r.Reconnects += t.reconnect
		r.Resent += t.resent
		r.FirstFailures = append(r.FirstFailures, t.failures...)
		r.FirstResent = append(r.FirstResent, t.resends...)
	}
	r.Failures = r.ErrorsTotal + r.Status5xx
	r.FirstFailures = earliest(r.FirstFailures)
	r.FirstResent = earliest(r.FirstResent)
	r.Requests = int64(len(latencies))
	r.RPS = float64(r.Requests) / measured.Seconds()
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

// earliest keeps the first few events by time (never null in the JSON).
func earliest(events []event) []event {
	slices.SortFunc(events, func(a, b event) int { return cmp.Compare(a.At, b.At) })
	return append([]event{}, events[:min(len(events), firstEvents)]...)
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
		"answers per connection %d..%d; statuses %v, answers (whole run) %d, non-2xx %d, "+
		"errors %v (total %d), resent %d, loadgen CPU %.1f s",
		r.Target, r.Connections, r.RPS, r.P50, r.P90, r.P99, r.Max, r.ConnMin, r.ConnMax, r.Statuses,
		r.Answers, r.Non2xxTotal, r.Errors, r.ErrorsTotal, r.Resent, r.CPUSeconds)
}

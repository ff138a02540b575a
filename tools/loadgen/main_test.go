package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustParse(t *testing.T, args ...string) config {
	t.Helper()
	cfg, _, err := parseFlags(args)
	if err != nil {
		t.Fatalf("parseFlags(%v): %v", args, err)
	}
	return cfg
}

func tcpTarget(server *httptest.Server) string {
	return "http://" + server.Listener.Addr().String()
}

func TestCountsStatusesAndRotatesPaths(t *testing.T) {
	var hits [2]atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			hits[0].Add(1)
			w.Write([]byte("ok"))
		case "/b":
			hits[1].Add(1)
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer server.Close()

	report := run(mustParse(t, "-target", tcpTarget(server), "-c", "4", "-d", "300ms", "-warmup", "0s",
		"-path", "/a", "-path", "/b"))

	if report.Requests == 0 || report.Statuses["200"] == 0 || report.Statuses["429"] == 0 {
		t.Fatalf("want both statuses counted, got %+v", report)
	}
	if report.Non2xxTotal < report.Statuses["429"] {
		t.Fatalf("non-2xx over the run (%d) below the measured 429s (%d)", report.Non2xxTotal, report.Statuses["429"])
	}
	if report.ErrorsTotal != 0 {
		t.Fatalf("unexpected transport errors: %v", report.Errors)
	}
	if hits[0].Load() == 0 || hits[1].Load() == 0 {
		t.Fatalf("paths not rotated: %d /a, %d /b", hits[0].Load(), hits[1].Load())
	}
	if report.P50 <= 0 || report.P99 < report.P50 || report.Max < report.P99 {
		t.Fatalf("percentiles out of order: %+v", report)
	}
}

func TestPostBodyChunkedAnswersAndUnixSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "app.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var badBodies atomic.Int64
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(body) != `{"name":"x"}` ||
			r.Header.Get("Content-Type") != "application/json" {
			badBodies.Add(1)
		}
		w.(http.Flusher).Flush() // no Content-Length: the answer is chunked
		w.Write([]byte(strings.Repeat("z", 5000)))
	}))
	server.Listener = listener
	server.Start()
	defer server.Close()

	report := run(mustParse(t, "-target", "unix:"+socket, "-c", "3", "-d", "300ms", "-warmup", "0s",
		"-method", "POST", "-path", "/api/items", "-body", `{"name":"x"}`,
		"-header", "Content-Type: application/json"))

	if report.Statuses["200"] == 0 || report.ErrorsTotal != 0 || badBodies.Load() != 0 {
		t.Fatalf("want clean POSTs over the socket, got %+v (bad bodies %d)", report, badBodies.Load())
	}
	if report.Reconnects != 0 {
		t.Fatalf("chunked answers kept alive should not reconnect, got %d", report.Reconnects)
	}
}

func TestConnectionCloseReconnectsWithoutError(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte("bye"))
	}))
	defer server.Close()

	report := run(mustParse(t, "-target", tcpTarget(server), "-c", "2", "-d", "200ms", "-warmup", "0s"))

	if report.Requests == 0 || report.ErrorsTotal != 0 || report.Reconnects == 0 {
		t.Fatalf("want polite closes to reconnect without errors, got %+v", report)
	}
}

// rawServer accepts TCP connections and gives each to handle; it returns the target URL.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go handle(conn)
		}
	}()
	return "http://" + listener.Addr().String()
}

// A server that reads a request and closes without answering: every request is an error.
func TestDroppedRequestsAreErrors(t *testing.T) {
	target := rawServer(t, func(conn net.Conn) {
		bufio.NewReader(conn).ReadString('\n')
		conn.Close()
	})

	report := run(mustParse(t, "-target", target, "-c", "2", "-d", "200ms", "-warmup", "0s"))

	if report.Requests != 0 || report.Errors["closed"] == 0 {
		t.Fatalf("want only 'closed' errors, got %+v", report)
	}
}

func TestUnansweredRequestTimesOut(t *testing.T) {
	var (
		mu   sync.Mutex
		held []net.Conn // open, never answered, closed at the end
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range held {
			conn.Close()
		}
	})
	target := rawServer(t, func(conn net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, conn)
	})

	started := time.Now()
	report := run(mustParse(t, "-target", target, "-c", "1", "-d", "100ms", "-warmup", "0s",
		"-timeout", "150ms"))

	if report.Errors["timeout"] != 1 || time.Since(started) > 2*time.Second {
		t.Fatalf("want one timeout, got %+v", report)
	}
}

func TestHeadAnswersAndInterimResponses(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints) // a 103 before the real answer
		}
		w.Header().Set("Content-Length", "4") // for HEAD too, with no body after it
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write([]byte("body"))
		}
	}))
	defer server.Close()

	for _, method := range []string{"HEAD", "GET"} {
		report := run(mustParse(t, "-target", tcpTarget(server), "-method", method, "-c", "2",
			"-d", "200ms", "-warmup", "0s", "-timeout", "1s"))
		if report.Requests == 0 || report.ErrorsTotal != 0 || report.Statuses["200"] != report.Requests {
			t.Fatalf("%s: want only 200s and no errors, got %+v", method, report)
		}
	}
}

func TestBadFlagsAreRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-target", "127.0.0.1:8080"},
		{"-target", "http://localhost"},
		{"-target", "unix:/x.sock", "-bind", "127.0.0.2"},
		{"-bind", "nowhere"},
		{"-c", "0"},
		{"-path", "api/items"},
		{"-header", "no colon"},
		{"-target", "https://localhost"},
		{"-rate", "-1"},
		{"-d", "-1s"},
		{"-request", "GET api/items"},
		{"-request", "/api/items"},
		{"-request", "GET /a", "-path", "/b"},
		{"-request", "GET /items/{id}"},
		{"stray"},
	} {
		if _, _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%v) accepted bad input", args)
		}
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	sorted := []time.Duration{}
	for i := 1; i <= 100; i++ {
		sorted = append(sorted, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(sorted, 0.5); got != 50 {
		t.Errorf("p50 = %v, want 50", got)
	}
	if got := percentile(sorted, 0.99); got != 99 {
		t.Errorf("p99 = %v, want 99", got)
	}
	if got := percentile(nil, 0.99); got != 0 {
		t.Errorf("empty p99 = %v, want 0", got)
	}
}

// okServer answers every request with 200 and counts them.
func okServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(server.Close)
	return server, &hits
}

func TestRatePacesAllConnectionsTogether(t *testing.T) {
	server, hits := okServer(t)

	report := run(mustParse(t, "-target", tcpTarget(server), "-c", "4", "-rate", "40", "-d", "1s",
		"-warmup", "0s"))

	// 40 a second for a second, whatever the number of connections; unpaced it would be
	// thousands.
	if n := hits.Load(); n < 25 || n > 50 || report.ErrorsTotal != 0 {
		t.Fatalf("want about 40 requests, got %d (%+v)", n, report)
	}
}

func TestRunsUntilStoppedAndReportsTheTimeItRan(t *testing.T) {
	server, _ := okServer(t)
	stop := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })

	report := runUntil(mustParse(t, "-target", tcpTarget(server), "-c", "2", "-rate", "100", "-d", "0",
		"-warmup", "0s"), stop)

	if report.Seconds < 0.2 || report.Seconds > 1 || report.Finished-report.Started < 0.2 {
		t.Fatalf("want a run of about 0.3 s, got %+v", report)
	}
	if report.Requests == 0 || report.Requests != report.Answers || report.Failures != 0 {
		t.Fatalf("want every answer measured and none failed, got %+v", report)
	}
}

func TestCloseOpensAConnectionPerRequestAndCountsRefusalsByTarget(t *testing.T) {
	var hits, connections atomic.Int64
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("ok"))
	}))
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			connections.Add(1)
		}
	}
	server.Start()
	defer server.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := "http://" + closed.Addr().String()
	closed.Close() // nothing listens there any more: connections are refused

	report := run(mustParse(t, "-target", tcpTarget(server), "-target", refusing, "-close",
		"-c", "2", "-rate", "200", "-d", "300ms", "-warmup", "0s"))

	live := report.ByTarget[tcpTarget(server)]
	if live["200"] == 0 || live["200"] != hits.Load() || connections.Load() != hits.Load() {
		t.Fatalf("want one connection per answered request, got %+v (hits %d, connections %d)",
			report, hits.Load(), connections.Load())
	}
	if report.Errors["refused"] == 0 || report.ByTarget[refusing]["refused"] != report.Errors["refused"] {
		t.Fatalf("want the refused connections counted against their target, got %+v", report)
	}
	if len(report.FirstFailures) == 0 || report.FirstFailures[0].What != "refused" {
		t.Fatalf("want the refusals among the first failures, got %+v", report.FirstFailures)
	}
	if report.Failures != report.ErrorsTotal {
		t.Fatalf("failures %d, want the %d errors", report.Failures, report.ErrorsTotal)
	}
}

// A server that answers one request on each connection, keeps it open, then closes it
// without reading the next: what nginx does to an idle connection on a reload.
func closesAfterOneAnswer(conn net.Conn) {
	defer conn.Close()
	in := bufio.NewReader(conn)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	conn.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	time.Sleep(20 * time.Millisecond) // the client's next request is on its way
}

func TestResendOnlyWhatAClosedKeptAliveConnectionNeverAnswered(t *testing.T) {
	target := rawServer(t, closesAfterOneAnswer)

	plain := run(mustParse(t, "-target", target, "-c", "2", "-d", "300ms", "-warmup", "0s"))
	if plain.Errors["closed"] == 0 || plain.Resent != 0 {
		t.Fatalf("without -resend-unanswered every such request is an error, got %+v", plain)
	}

	resending := run(mustParse(t, "-target", target, "-c", "2", "-d", "300ms", "-warmup", "0s",
		"-resend-unanswered"))
	if resending.ErrorsTotal != 0 || resending.Resent == 0 || resending.Answers == 0 {
		t.Fatalf("want the unanswered requests resent and counted apart, got %+v", resending)
	}
	if len(resending.FirstResent) == 0 || resending.FirstResent[0].Request != "GET /" {
		t.Fatalf("want the resent requests listed, got %+v", resending.FirstResent)
	}
}

func TestPostsCarryFreshKeysAndGetsUseTheCreatedID(t *testing.T) {
	var (
		mu      sync.Mutex
		keys    = map[string]bool{}
		created = map[string]bool{}
		unknown int
		lastID  int
	)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost:
			key := r.Header.Get("Idempotency-Key")
			if key == "" || keys[key] || r.Header.Get("Content-Type") != "application/json" {
				unknown++
			}
			keys[key] = true
			lastID++
			id := strconv.Itoa(lastID)
			created[id] = true
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"id": ` + id + `, "name": "x"}`))
		case strings.HasPrefix(r.URL.Path, "/items/"):
			if !created[strings.TrimPrefix(r.URL.Path, "/items/")] {
				unknown++
			}
		}
	}))
	defer server.Close()

	report := run(mustParse(t, "-target", tcpTarget(server), "-c", "3", "-d", "300ms", "-warmup", "0s",
		"-idempotency-key", "-request", "GET /items/{id}", "-request", `POST /items {"name":"x"}`,
		"-request", "GET /health"))

	mu.Lock()
	defer mu.Unlock()
	if report.Failures != 0 || report.Non2xxTotal != 0 || len(keys) < 3 || unknown != 0 {
		t.Fatalf("want distinct keys and only created ids, got %d keys, %d bad requests, %+v",
			len(keys), unknown, report)
	}
}

func TestHTTPSTargetsAndTheReportFile(t *testing.T) {
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("secure"))
	}))
	defer server.Close()
	target := "https://" + server.Listener.Addr().String()
	out := filepath.Join(t.TempDir(), "report.json")

	unverified := run(mustParse(t, "-target", target, "-c", "1", "-d", "100ms", "-warmup", "0s"))
	if unverified.Errors["tls"] == 0 || unverified.Answers != 0 {
		t.Fatalf("a test certificate must fail verification without -insecure, got %+v", unverified)
	}

	cfg := mustParse(t, "-target", target, "-insecure", "-c", "2", "-d", "200ms", "-warmup", "0s",
		"-out", out)
	report := run(cfg)
	if report.Answers == 0 || report.ErrorsTotal != 0 {
		t.Fatalf("want clean answers over TLS, got %+v", report)
	}
	data, _ := json.Marshal(report)
	if err := writeAtomically(cfg.out, data); err != nil {
		t.Fatal(err)
	}
	var written Report
	raw, err := os.ReadFile(out)
	if err != nil || json.Unmarshal(raw, &written) != nil || written.Answers != report.Answers {
		t.Fatalf("report file %s unreadable or different: %v %s", out, err, raw)
	}
}

package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustParse(t *testing.T, args ...string) config {
	t.Helper()
	cfg, _, _, err := parseFlags(args)
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
		{"stray"},
	} {
		if _, _, _, err := parseFlags(args); err == nil {
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

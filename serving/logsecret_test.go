package serving

import (
	"bufio"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// Malformed header lines that carry the admin token (no colon, obs-folded)
// reach fasthttp's error log; the token must not (issue 20, item 6).
func TestTokenNeverReachesTheLogs(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(mustParse(t, testPolicies), Options{AdminToken: testAdminToken, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv.http.Logger.(*fasthttpLogger).every = time.Nanosecond // every line, for this test
	ts := serveOn(t, srv)
	addr := strings.TrimPrefix(ts.URL, "http://")
	for _, req := range []string{
		"GET /v1/keys/k/explain HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + testAdminToken + "\r\n\r\n",
		"GET /v1/keys/k/explain HTTP/1.1\r\nHost: x\r\n Authorization: Bearer " + testAdminToken + "\r\n\r\n",
		"GET /v1/keys/k/explain HTTP/1.1\r\nAuthorization: Bearer " + testAdminToken + "\r\nBad Header\x01: " + testAdminToken + "\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte(req))
		_, _ = bufio.NewReader(c).ReadString('\n')
		c.Close()
	}
	// Each connection's error line is written when fasthttp gives up on it.
	waitUntil(t, 5*time.Second, "fasthttp's three error lines", func() bool {
		return strings.Count(logs.String(), "component=http") >= 3
	})
	ts.stop(t)
	out := logs.String()
	if strings.Contains(out, testAdminToken) {
		t.Fatalf("the admin token reached the logs:\n%s", out)
	}
	if strings.Count(out, "component=http") < 3 {
		t.Fatalf("fasthttp logged none of the malformed requests, so this test shows nothing:\n%s", out)
	}
	t.Logf("logs:\n%s", out)
}

func TestRedact(t *testing.T) {
	l := &fasthttpLogger{secret: "s3cret-token-value"}
	for in, want := range map[string]string{
		`header "Authorization Bearer abc.def"`:  `header "Authorization [redacted]"`,
		`contents: " Authorization: Bearer xyz"`: `contents: " Authorization: [redacted]"`,
		`invalid port ": Bearer xyz" after host`: `invalid port ": Bearer [redacted]" after host`,
		`cookie: session=42; x-api-key: k_live`:  `cookie: [redacted] x-api-key: [redacted]`,
		`token s3cret-token-value in the middle`: `token [redacted] in the middle`,
		`nothing secret here`:                    `nothing secret here`,
	} {
		if got := l.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devflow/flowguard/internal/config"
	"github.com/devflow/flowguard/serving"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// TestDocSamples runs the commands of every ```console block in README.md
// and docs/*.md, in order, and compares what they print with the sample
// output under each, so that the samples cannot go stale. `bin/flowguard …`
// runs in-process (make build writes bin/flowguard: checked below), `curl`
// goes to an in-process service on the embedded default — what `make run`
// starts — fresh for each file. Commands run in a scratch directory that
// links to the repository's files, so what they write (out/, the audit
// log) stays out of the checkout.
//
// In a sample, a line "…" stands for any number of lines, and the parts
// that change from run to run (decision ids, Content-Length, timestamps)
// are masked on both sides.
func TestDocSamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(repoRoot, "README.md")}, files...)
	dir := scratchCheckout(t)
	t.Chdir(dir)
	samples := 0
	for _, file := range files {
		rel, _ := filepath.Rel(repoRoot, file)
		cmds := readConsoleBlocks(t, filepath.Join(dir, rel))
		if len(cmds) == 0 {
			continue
		}
		t.Run(rel, func(t *testing.T) {
			sh := &docShell{t: t}
			defer sh.close()
			for _, c := range cmds {
				samples++
				got := sh.exec(c)
				if err := matchSample(c.want, got); err != nil {
					t.Errorf("%s:%d: $ %s\n%v\n--- the command printed:\n%s", rel, c.line, c.cmd, err, got)
				}
			}
		})
	}
	if samples < 10 {
		t.Fatalf("only %d sample commands found in README.md and docs/: has the ```console convention changed?", samples)
	}
	makefile, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^build:.*\n\t.*-o bin/flowguard ./cmd/flowguard`).Match(makefile) {
		t.Error("the docs run bin/flowguard after make build, but the Makefile's build target does not write bin/flowguard")
	}
}

// scratchCheckout returns a temporary directory with a symbolic link to
// every top-level entry of the repository but bin/ and out/.
func scratchCheckout(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, e := range entries {
		switch e.Name() {
		case "bin", "out", ".git":
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sample is one command of a console block and the output shown under it.
type sample struct {
	cmd  string
	want string
	line int
}

// readConsoleBlocks returns the commands ("$ …", with "\" continuation
// lines) of every ```console block in path, with their sample output.
func readConsoleBlocks(t *testing.T, path string) []sample {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []sample
	in := false
	var cur *sample
	var want []string
	flush := func() {
		if cur != nil {
			cur.want = strings.Join(want, "\n")
			out = append(out, *cur)
		}
		cur, want = nil, nil
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case !in && strings.TrimSpace(line) == "```console":
			in = true
		case in && strings.TrimSpace(line) == "```":
			flush()
			in = false
		case in && strings.HasPrefix(line, "$ "):
			flush()
			cmd := strings.TrimPrefix(line, "$ ")
			start := i + 1
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, "\\") + " " + strings.TrimSpace(lines[i])
			}
			cur = &sample{cmd: cmd, line: start}
		case in && cur != nil:
			want = append(want, line)
		case in:
			t.Errorf("%s:%d: a console block must start with a $ command", path, i+1)
		}
	}
	return out
}

// docShell runs sample commands: the few a sample may use.
type docShell struct {
	t        *testing.T
	lastCode int
	addr     string // the service, once a curl has started it
	stop     func()
}

func (sh *docShell) exec(c sample) string {
	args, err := shellWords(c.cmd)
	if err != nil || len(args) == 0 {
		sh.t.Fatalf("line %d: %q: %v", c.line, c.cmd, err)
	}
	var out bytes.Buffer
	switch args[0] {
	case "bin/flowguard":
		var stderr bytes.Buffer
		sh.lastCode = run(args[1:], &out, &stderr)
		out.Write(stderr.Bytes()) // what a terminal shows: these commands write stderr last
	case "curl":
		sh.lastCode = 0
		out.WriteString(sh.curl(args[1:]))
	case "echo":
		if len(args) != 2 || args[1] != "$?" {
			sh.t.Fatalf("line %d: only echo $? is supported", c.line)
		}
		fmt.Fprintln(&out, sh.lastCode)
	case "mkdir":
		if err := os.MkdirAll(args[len(args)-1], 0o755); err != nil {
			sh.t.Fatal(err)
		}
	case "head":
		n, err := strconv.Atoi(strings.TrimPrefix(args[1], "-"))
		data, err2 := os.ReadFile(args[2])
		if err != nil || err2 != nil {
			sh.t.Fatalf("line %d: %q: %v %v", c.line, c.cmd, err, err2)
		}
		lines := strings.SplitAfter(string(data), "\n")
		out.WriteString(strings.Join(lines[:min(n, len(lines))], ""))
	default:
		sh.t.Fatalf("line %d: %q: a console sample may run bin/flowguard, curl, echo $?, mkdir and head; show other commands in a sh block", c.line, args[0])
	}
	return out.String()
}

// curl does what curl [-s] [-i] [-d DATA] [-H HEADER]… URL does, against
// the in-process service, and returns what curl prints: the body, and with
// -i the status line and headers as the server sent them.
func (sh *docShell) curl(args []string) string {
	var url, body string
	var headers []string
	include, post := false, false
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-s":
		case a == "-i" || a == "-si" || a == "-is":
			include = true
		case a == "-d":
			i++
			body, post = args[i], true
		case a == "-H":
			i++
			headers = append(headers, args[i])
		case strings.HasPrefix(a, "-"):
			sh.t.Fatalf("curl: flag %s is not supported in samples", a)
		default:
			url = a
		}
	}
	hostPath := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "localhost:8080")
	if hostPath == url || !strings.HasPrefix(hostPath, "/") {
		sh.t.Fatalf("curl %s: samples call the service on localhost:8080", url)
	}
	addr := sh.service()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		sh.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	method := "GET"
	if post {
		method = "POST"
	}
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n", method, hostPath)
	for _, h := range headers {
		fmt.Fprintf(&req, "%s\r\n", h)
	}
	if post {
		fmt.Fprintf(&req, "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		sh.t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	var head strings.Builder
	length := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			sh.t.Fatalf("curl %s: reading the response: %v", url, err)
		}
		head.WriteString(strings.TrimRight(line, "\r\n") + "\n")
		if strings.TrimSpace(line) == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if length < 0 {
		sh.t.Fatalf("curl %s: no Content-Length in %q", url, head.String())
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(r, b); err != nil {
		sh.t.Fatal(err)
	}
	if include {
		return head.String() + string(b)
	}
	return string(b)
}

// service starts the service on the embedded default, as make run does,
// once per file.
func (sh *docShell) service() string {
	if sh.addr != "" {
		return sh.addr
	}
	cfg, err := config.Default()
	if err != nil {
		sh.t.Fatal(err)
	}
	srv, err := serving.New(cfg, serving.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		sh.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		sh.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	sh.addr = ln.Addr().String()
	sh.stop = func() {
		cancel()
		if err := <-done; err != nil {
			sh.t.Errorf("the service: %v", err)
		}
		srv.Close()
	}
	return sh.addr
}

func (sh *docShell) close() {
	if sh.stop != nil {
		sh.stop()
	}
}

// masks hide what changes from run to run, in samples and output alike.
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"decision_id":"[^"]*"`), `"decision_id":"…"`},
	{regexp.MustCompile(`(?m)^Content-Length: \d+$`), `Content-Length: …`},
	{regexp.MustCompile(`"(time|loaded_at)":"[^"]*"`), `"$1":"…"`},
}

func mask(s string) string {
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.with)
	}
	return s
}

// matchSample compares output with a sample: line by line after masking,
// with trailing blanks ignored, and a sample line "…" matching any number
// of lines.
func matchSample(want, got string) error {
	wl := splitLines(mask(want))
	gl := splitLines(mask(got))
	chunks := [][]string{{}}
	for _, l := range wl {
		if l == "…" {
			chunks = append(chunks, []string{})
			continue
		}
		chunks[len(chunks)-1] = append(chunks[len(chunks)-1], l)
	}
	first, last := chunks[0], chunks[len(chunks)-1]
	if len(chunks) == 1 {
		return sameLines(first, gl)
	}
	if len(gl) < len(first)+len(last) {
		return fmt.Errorf("the output has %d lines, the sample shows %d", len(gl), len(first)+len(last))
	}
	if err := sameLines(first, gl[:len(first)]); err != nil {
		return err
	}
	end := len(gl) - len(last)
	if err := sameLines(last, gl[end:]); err != nil {
		return fmt.Errorf("at the end: %v", err)
	}
	pos := len(first)
	for _, c := range chunks[1 : len(chunks)-1] {
		found := -1
		for p := pos; p+len(c) <= end; p++ {
			if sameLines(c, gl[p:p+len(c)]) == nil {
				found = p
				break
			}
		}
		if found < 0 {
			return fmt.Errorf("the sample's lines %q are not in the output, in this order", c)
		}
		pos = found + len(c)
	}
	return nil
}

// sameLines reports the first line where got differs from want.
func sameLines(want, got []string) error {
	for i := range min(len(want), len(got)) {
		if want[i] != got[i] {
			col := 0
			for col < min(len(want[i]), len(got[i])) && want[i][col] == got[i][col] {
				col++
			}
			return fmt.Errorf("line %d, from byte %d: the sample shows\n\t%s\nthe command printed\n\t%s", i+1, col+1, want[i], got[i])
		}
	}
	if len(want) != len(got) {
		return fmt.Errorf("the sample shows %d lines, the command printed %d", len(want), len(got))
	}
	return nil
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, " \n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \r")
	}
	return lines
}

// shellWords splits a command line as sh does for the quoting samples use:
// single quotes, double quotes, backslash escapes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed '")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unclosed \"")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			i = len(s) // a comment
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

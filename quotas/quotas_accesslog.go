package quotas

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// AccessLogOptions say how an access log becomes usage.
type AccessLogOptions struct {
	// BotsMalicious flags a user-day as malicious when one of its requests
	// has a user agent containing "bot", "crawler" or "spider" (any case),
	// so that crawlers do not set the quota of people. Default: false, every
	// user-day is non-malicious (an access log carries no abuse labels).
	BotsMalicious bool
}

// AccessLogStats describe what was read from an access log.
type AccessLogStats struct {
	// Requests is the lines turned into usage.
	Requests int
	// Skipped is the lines whose request has no path (such as "-" or
	// "OPTIONS *"): they belong to no endpoint.
	Skipped int
}

// ReadAccessLog derives usage from an access log in Apache/NGINX common or
// combined format (gzipped or not): one request of the client address
// (the user) on the first segment of the path (the endpoint:
// "/presentations/logstash/x.png" → "/presentations", "/" → "/") on the
// UTC day of its timestamp. A line that is not in that format is an error
// naming path:line; blank lines are ignored.
func ReadAccessLog(path string, opts AccessLogOptions) (*UsageTable, AccessLogStats, error) {
	f, err := openMaybeGzip(path)
	if err != nil {
		return nil, AccessLogStats{}, err
	}
	defer f.Close()
	return ParseAccessLog(path, f, opts)
}

// ParseAccessLog is ReadAccessLog on a reader, naming it name in errors.
func ParseAccessLog(name string, r io.Reader, opts AccessLogOptions) (*UsageTable, AccessLogStats, error) {
	var stats AccessLogStats
	b := newUsageBuilder(0)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		e, err := ParseAccessLogLine(text)
		if err != nil {
			return nil, stats, fmt.Errorf("%s:%d: %v", name, line, err)
		}
		if e.Endpoint == "" {
			stats.Skipped++
			continue
		}
		stats.Requests++
		row := UsageRow{Endpoint: e.Endpoint, User: e.Client, Day: DayOf(e.Time.UTC()), Requests: 1}
		row.Malicious = opts.BotsMalicious && IsBot(e.UserAgent)
		if err := b.add(row); err != nil {
			return nil, stats, fmt.Errorf("%s:%d: %v", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = errors.New("a line is longer than 1 MiB")
		}
		return nil, stats, fmt.Errorf("%s: %w", name, err)
	}
	return b.table(), stats, nil
}

// AccessLogEntry is what usage needs from one access-log line.
type AccessLogEntry struct {
	Client    string
	Time      time.Time
	Method    string
	Target    string // as requested, with its query
	Endpoint  string // the first path segment; "" when Target has no path
	UserAgent string // "" in the common format
}

const accessLogTime = "02/Jan/2006:15:04:05 -0700"

// ParseAccessLogLine parses one line of the common or combined format:
//
//	host ident user [02/Jan/2006:15:04:05 -0700] "METHOD /target PROTO" status bytes "referer" "user agent"
//
// The referer and user agent are optional, and a user agent cut off before
// its closing quote is taken to the end of the line.
func ParseAccessLogLine(line string) (AccessLogEntry, error) {
	var e AccessLogEntry
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return e, errors.New("no client address")
	}
	e.Client = line[:sp]
	open := strings.Index(line, " [")
	if open < 0 {
		return e, errors.New("no [timestamp]")
	}
	end := strings.IndexByte(line[open:], ']')
	if end < 0 {
		return e, errors.New("no [timestamp]")
	}
	end += open
	t, err := time.Parse(accessLogTime, line[open+2:end])
	if err != nil {
		return e, fmt.Errorf("timestamp %q, want like [17/May/2015:10:05:03 +0000]", line[open+2:end])
	}
	e.Time = t
	rest := line[end+1:]
	if !strings.HasPrefix(rest, ` "`) {
		return e, errors.New(`no "request" after the timestamp`)
	}
	request, rest, ok := quoted(rest[1:])
	if !ok {
		return e, errors.New("request has no closing quote")
	}
	if f := strings.Fields(request); len(f) >= 2 {
		e.Method, e.Target = f[0], f[1]
		e.Endpoint = firstSegment(f[1])
	}
	// status and bytes, then optionally "referer" "user agent".
	fields := 0
	for fields < 2 {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			i = len(rest)
		}
		if i == 0 {
			return e, errors.New("no status and size after the request")
		}
		rest = rest[i:]
		fields++
	}
	if rest = strings.TrimLeft(rest, " "); rest == "" {
		return e, nil // common format
	}
	if rest[0] != '"' {
		return e, errors.New(`no "referer" after the size`)
	}
	_, rest, ok = quoted(rest)
	if !ok {
		return e, errors.New("referer has no closing quote")
	}
	if rest = strings.TrimLeft(rest, " "); rest == "" {
		return e, nil
	}
	if rest[0] != '"' {
		return e, errors.New(`no "user agent" after the referer`)
	}
	e.UserAgent, _, _ = quoted(rest) // unterminated: to the end of the line
	return e, nil
}

// quoted reads the double-quoted string s starts with (backslash escapes a
// quote). It returns the text between the quotes, what follows the closing
// one and whether there was one; with none, the text runs to the end.
func quoted(s string) (text, rest string, ok bool) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return s[1:i], s[i+1:], true
		}
	}
	return s[min(1, len(s)):], "", false
}

// firstSegment returns the endpoint of a request target: "/" and the first
// path segment of an origin-form or absolute-form target, or "" for a
// target with no path, such as "*".
func firstSegment(target string) string {
	if i := strings.Index(target, "://"); i > 0 && !strings.ContainsAny(target[:i], "/?#") {
		target = target[i+3:]
		j := strings.IndexByte(target, '/')
		if j < 0 {
			return "/"
		}
		target = target[j:]
	}
	if !strings.HasPrefix(target, "/") {
		return ""
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	seg := target[1:]
	if i := strings.IndexByte(seg, '/'); i >= 0 {
		seg = seg[:i]
	}
	return "/" + seg
}

// IsBot reports whether a user agent says it is a bot, crawler or spider.
func IsBot(userAgent string) bool {
	ua := strings.ToLower(userAgent)
	return strings.Contains(ua, "bot") || strings.Contains(ua, "crawler") || strings.Contains(ua, "spider")
}

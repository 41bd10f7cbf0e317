package experiments

import (
	"errors"
	"strings"
	"testing"

	"github.com/devflow/flowguard/rewards"
)

const goodDecision = `{"type":"decision","id":"d1","key":"k","at":"2026-11-20T00:00:00Z","experiment":"exp","variant":"control","policy":"static","arm":2,"multiplier":1,"propensity":1,"context":[0.5],"base":10}`

func TestReadLog(t *testing.T) {
	cases := map[string]struct {
		in   string
		n    int
		want string // error; "" for none
	}{
		"two records":     {goodDecision + "\n" + `{"type":"outcome","id":"d1","key":"k","at":"2026-11-20T00:01:00Z","served":3}` + "\n", 2, ""},
		"blank lines":     {"\n" + goodDecision + "\n\n", 1, ""},
		"crlf, no final":  {goodDecision + "\r\n" + goodDecision, 2, ""},
		"unknown field":   {goodDecision + "\n" + `{"type":"outcome","id":"d1","key":"k","at":"2026-11-20T00:01:00Z","sevred":3}`, 1, `log.jsonl:2: bad decision record: json: unknown field "sevred"`},
		"bad policy":      {strings.Replace(goodDecision, `"static"`, `"control"`, 1), 0, `log.jsonl:1: bad decision record: policy "control", want bandit, shadow or static`},
		"not json":        {"hello\n", 0, "log.jsonl:1: bad decision record: invalid character 'h' looking for beginning of value"},
		"line too long":   {strings.Repeat(" ", MaxLogLine+2) + "\n", 0, "log.jsonl:1: line longer than 1048576 bytes"},
		"two on one line": {goodDecision + goodDecision, 0, "log.jsonl:1: bad decision record: data after the record"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			n := 0
			err := ReadLog("log.jsonl", strings.NewReader(c.in), func(rewards.Record) error { n++; return nil })
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != c.want || n != c.n {
				t.Fatalf("got %d records, error %q; want %d, %q", n, got, c.n, c.want)
			}
		})
	}
	stop := errors.New("stop")
	if err := ReadLog("x", strings.NewReader(goodDecision), func(rewards.Record) error { return stop }); !errors.Is(err, stop) && err.Error() != "x:1: stop" {
		t.Errorf("callback error: %v", err)
	}
}

func TestReadLabels(t *testing.T) {
	in := `{"label_id":"l1","key":"k","abusive":false,"from":"2026-11-20T00:00:00Z","to":"2026-11-21T00:00:00Z","source":"complaint"}` + "\n" +
		`{"label_id":"l2","key":"k","abusive":true,"from":"2026-11-21T00:00:00Z","to":"2026-11-20T00:00:00Z"}` + "\n"
	labels, err := ReadLabels("labels.jsonl", strings.NewReader(in))
	if err == nil || !strings.HasPrefix(err.Error(), "labels.jsonl:2: bad label") {
		t.Fatalf("labels %v, err %v", labels, err)
	}
}

// FuzzReadLog: any bytes give records or an error naming a line, never a
// panic.
func FuzzReadLog(f *testing.F) {
	f.Add([]byte(goodDecision + "\n"))
	f.Add([]byte(`{"type":"outcome","id":"d1","key":"k","at":"2026-11-20T00:01:00Z","served":3}`))
	f.Add([]byte("\r\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		n := 0
		err := ReadLog("f", strings.NewReader(string(data)), func(r rewards.Record) error {
			if err := r.Validate(); err != nil {
				t.Fatalf("ReadLog passed an invalid record: %v", err)
			}
			n++
			return nil
		})
		if err != nil && !strings.HasPrefix(err.Error(), "f:") {
			t.Fatalf("error does not name the input: %v", err)
		}
		_, _ = ReadLabels("f", strings.NewReader(string(data)))
	})
}

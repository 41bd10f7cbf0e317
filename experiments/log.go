package experiments

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/devflow/flowguard/rewards"
)

// MaxLogLine is the longest line ReadLog and ReadLabels accept, in bytes.
const MaxLogLine = 1 << 20

// ReadLog reads a decision-log export: one rewards.Record per line, as
// serving writes them to the flowguard.decisions topic, each parsed
// strictly (rewards.ParseRecord). Empty lines are skipped. fn is called
// for each record in order; an error from it stops the read and is
// returned. Errors read "name:line: problem". It never panics.
func ReadLog(name string, r io.Reader, fn func(rewards.Record) error) error {
	return readLines(name, r, func(line []byte) error {
		rec, err := rewards.ParseRecord(line)
		if err != nil {
			return err
		}
		return fn(rec)
	})
}

// ReadLabels reads a labels export: one label per line in the schema of
// the flowguard.labels topic (rewards.ParseLabel). Empty lines are
// skipped; errors read "name:line: problem".
func ReadLabels(name string, r io.Reader) ([]rewards.Label, error) {
	var labels []rewards.Label
	err := readLines(name, r, func(line []byte) error {
		l, err := rewards.ParseLabel(line)
		if err != nil {
			return err
		}
		labels = append(labels, l)
		return nil
	})
	return labels, err
}

func readLines(name string, r io.Reader, fn func([]byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		if len(bytes.TrimSpace(line)) > 0 {
			if ferr := fn(line); ferr != nil {
				return fmt.Errorf("%s:%d: %s", name, n, strings.TrimPrefix(ferr.Error(), "json: "))
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
}

// errLongLine is returned for a line longer than MaxLogLine.
var errLongLine = fmt.Errorf("line longer than %d bytes", MaxLogLine)

// readLine returns the next line without its newline (and a trailing
// '\r'); io.EOF with the last line.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLogLine+1 {
			return nil, errLongLine
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if err == nil {
			return line, nil
		}
		return line, err
	}
}

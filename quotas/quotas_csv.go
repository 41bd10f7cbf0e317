package quotas

import (
	"bufio"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// UsageCSVHeader is the header a usage CSV file must start with, exactly;
// or UsageCSVTierHeader, whose last column is the user's tier, for quotas
// per tier × endpoint.
const (
	UsageCSVHeader     = "endpoint_url,user_id,daily_requests,date,malicious"
	UsageCSVTierHeader = UsageCSVHeader + ",tier"
)

var usageColumns = strings.Split(UsageCSVTierHeader, ",")

// ReadUsageCSV reads a usage CSV file (gzipped or not) into a UsageTable;
// see ParseUsageCSV.
func ReadUsageCSV(path string) (*UsageTable, error) {
	f, err := openMaybeGzip(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseUsageCSV(path, f)
}

// ParseUsageCSV parses usage in CSV (RFC 4180) with the header
// UsageCSVHeader, naming the input name in errors. It is strict: a bad
// header, a wrong number of fields, an empty endpoint_url or user_id, a
// daily_requests that is not a non-negative whole number, a date that is
// not YYYY-MM-DD or a malicious that is not a boolean (true/false, t/f,
// 1/0) is an error "name:line: column N (name): problem". Rows of the same
// (endpoint_url, user_id, date) are parts of one user-day and are summed;
// see NewUsageTable.
func ParseUsageCSV(name string, r io.Reader) (*UsageTable, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // the header says how many; checked per record
	cr.ReuseRecord = true
	columns := len(usageColumns) - 1
	b := newUsageBuilder(0)
	// Endpoints and users are interned: each appears on many rows.
	interned := make(map[string]string)
	intern := func(s string) string {
		if v, ok := interned[s]; ok {
			return v
		}
		v := strings.Clone(s)
		interned[v] = v
		return v
	}
	header := true
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			switch {
			case errors.As(err, &pe):
				return nil, fmt.Errorf("%s:%d:%d: %v", name, pe.Line, pe.Column, pe.Err) // line:byte
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		if header {
			header = false
			switch got := strings.TrimPrefix(strings.Join(rec, ","), "\ufeff"); got {
			case UsageCSVHeader:
			case UsageCSVTierHeader:
				columns++
			default:
				return nil, fmt.Errorf("%s:%d: header is %q, want %q or %q", name, line, got, UsageCSVHeader, UsageCSVTierHeader)
			}
			continue
		}
		if len(rec) != columns {
			return nil, fmt.Errorf("%s:%d: %d fields, want %d (%s)", name, line, len(rec), columns,
				strings.Join(usageColumns[:columns], ","))
		}
		row, col, err := parseUsageRecord(rec)
		row.Endpoint, row.User, row.Tier = intern(row.Endpoint), intern(row.User), intern(row.Tier)
		if err == nil {
			err = b.add(row)
			col = -1
		}
		if err != nil {
			if col < 0 {
				return nil, fmt.Errorf("%s:%d: %v", name, line, err)
			}
			line, _ = cr.FieldPos(col) // a quoted field may span lines
			return nil, fmt.Errorf("%s:%d: column %d (%s): %v", name, line, col+1, usageColumns[col], err)
		}
	}
	if header {
		return nil, fmt.Errorf("%s: empty, want the header %q", name, UsageCSVHeader)
	}
	return b.table(), nil
}

// parseUsageRecord parses one data record; on error it returns the index
// of the bad column.
func parseUsageRecord(rec []string) (UsageRow, int, error) {
	var r UsageRow
	if rec[0] == "" {
		return r, 0, errors.New("empty")
	}
	if rec[1] == "" {
		return r, 1, errors.New("empty")
	}
	// rec is reused by the next Read: the caller copies the strings.
	r.Endpoint, r.User = rec[0], rec[1]
	n, err := parseRequests(rec[2])
	if err != nil {
		return r, 2, err
	}
	r.Requests = n
	if r.Day, err = ParseDay(rec[3]); err != nil {
		return r, 3, err
	}
	if r.Malicious, err = strconv.ParseBool(rec[4]); err != nil {
		return r, 4, fmt.Errorf("%q is not a boolean (want true or false)", rec[4])
	}
	if len(rec) > 5 {
		if rec[5] == "" {
			return r, 5, errors.New("empty")
		}
		r.Tier = rec[5]
	}
	return r, 0, nil
}

// WriteUsageCSV writes rows as a usage CSV file that ParseUsageCSV reads
// back: with the tier column when any row has a tier.
func WriteUsageCSV(w io.Writer, rows []UsageRow) error {
	tiers := false
	for i := range rows {
		if rows[i].Tier != "" {
			tiers = true
			break
		}
	}
	cw := csv.NewWriter(w)
	header := usageColumns[:len(usageColumns)-1]
	if tiers {
		header = usageColumns
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	rec := make([]string, len(header))
	for _, r := range rows {
		rec[0], rec[1], rec[2], rec[3], rec[4] = r.Endpoint, r.User, strconv.FormatInt(r.Requests, 10), r.Day.String(),
			strconv.FormatBool(r.Malicious)
		if tiers {
			if r.Tier == "" {
				return fmt.Errorf("quotas: user %s on %s has no tier while other rows do", r.User, r.Day)
			}
			rec[5] = r.Tier
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func parseRequests(s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s is out of range", s)
	case n < 0:
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}

// openMaybeGzip opens path, decompressing it when it starts with the gzip
// magic bytes, whatever its name.
func openMaybeGzip(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said once, first
		}
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	magic, _ := br.Peek(2)
	if len(magic) < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		return readCloser{br, f}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	return readCloser{zr, f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

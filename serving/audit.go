package serving

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// AuditRecord is one line of the audit log: a block, or a throttle for a
// tenant with audit: true. Seq counts from 1 and Prev is the Hash of the
// line before (64 zeros for the first), so editing, inserting or deleting a
// line breaks the chain at that line.
type AuditRecord struct {
	Seq           uint64  `json:"seq"`
	Time          string  `json:"time"` // RFC 3339, UTC, microseconds
	Key           string  `json:"key"`
	Tenant        string  `json:"tenant"`
	Endpoint      string  `json:"endpoint"`
	Decision      string  `json:"decision"`
	Reason        string  `json:"reason"`
	DecisionID    string  `json:"decision_id"`
	PolicyVersion string  `json:"policy_version"`
	ModelVersion  string  `json:"model_version"`
	Arm           string  `json:"arm"`
	Multiplier    float64 `json:"multiplier"`
	Propensity    float64 `json:"propensity"`
	Risk          float64 `json:"risk"`
	FeaturesHash  string  `json:"features_hash"`
	Prev          string  `json:"prev"`
	Hash          string  `json:"hash"`
}

var genesisHash = string(bytes.Repeat([]byte("0"), 64))

// chainHash returns the hash of r: SHA-256 over its JSON encoding with the
// Hash field empty. Prev is inside the hashed bytes, which chains the lines.
func chainHash(r AuditRecord) (string, error) {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// AuditSummary is what VerifyAudit found in an intact log.
type AuditSummary struct {
	Records uint64
	Head    string // the last record's hash: keep it elsewhere to detect a cut-off tail
}

// VerifyAudit reads an audit log and checks every line: it parses, its
// sequence number is one more than the line before, its prev is the hash of
// the line before and its hash matches its content. The first problem is
// reported with its line number. A log cut off after a complete line is
// intact as far as the chain can tell; compare Head with a head recorded
// elsewhere (the service logs it at shutdown) to detect that.
func VerifyAudit(r io.Reader) (AuditSummary, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	prev := genesisHash
	var n uint64
	for line := 1; sc.Scan(); line++ {
		raw := sc.Bytes()
		var rec AuditRecord
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rec); err != nil {
			return AuditSummary{}, fmt.Errorf("line %d: not an audit record: %v", line, err)
		}
		if rec.Seq != n+1 {
			return AuditSummary{}, fmt.Errorf("line %d: sequence %d after %d: a line was inserted or deleted", line, rec.Seq, n)
		}
		if rec.Prev != prev {
			return AuditSummary{}, fmt.Errorf("line %d: prev %.16s… is not the hash of line %d (%.16s…): the chain is broken", line, rec.Prev, line-1, prev)
		}
		want, err := chainHash(rec)
		if err != nil {
			return AuditSummary{}, fmt.Errorf("line %d: %v", line, err)
		}
		if rec.Hash != want {
			return AuditSummary{}, fmt.Errorf("line %d: hash does not match the content: the line was edited", line)
		}
		prev, n = rec.Hash, rec.Seq
	}
	if err := sc.Err(); err != nil {
		return AuditSummary{}, fmt.Errorf("line %d: %v", n+1, err)
	}
	return AuditSummary{Records: n, Head: prev}, nil
}

// VerifyAuditFile verifies the audit log in the named file.
func VerifyAuditFile(path string) (AuditSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return AuditSummary{}, err
	}
	defer f.Close()
	s, err := VerifyAudit(f)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// auditLog appends chained records to a file from one goroutine. Record
// never blocks a decision: when the queue is full the record is dropped and
// counted.
type auditLog struct {
	f       *os.File
	w       *bufio.Writer
	queue   chan AuditRecord
	done    chan struct{}
	seq     uint64
	prev    string
	dropped func()
	failed  func(error)
	// mirror, when set, receives each line as chained (key, JSON): the
	// copy to Kafka's audit topic. Set before the first Record.
	mirror func(key string, line []byte)

	mu     sync.RWMutex // Record holds it shared; Close exclusively
	closed bool
}

const auditQueue = 8192

// openAuditLog opens path for appending and continues its chain. A last
// line cut short by a crash is removed, since it was never complete; any
// other damage is an error, so the service does not extend a chain it
// cannot vouch for.
func openAuditLog(path string, dropped func(), failed func(error)) (*auditLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	seq, prev, err := auditTail(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	l := &auditLog{f: f, w: bufio.NewWriterSize(f, 64<<10), queue: make(chan AuditRecord, auditQueue),
		done: make(chan struct{}), seq: seq, prev: prev, dropped: dropped, failed: failed}
	go l.run()
	return l, nil
}

// auditTail finds the last complete record of f, truncates anything after
// it, and leaves the offset at the end.
func auditTail(f *os.File) (uint64, string, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, "", err
	}
	end := bytes.LastIndexByte(data, '\n') + 1
	if end < len(data) {
		if err := f.Truncate(int64(end)); err != nil {
			return 0, "", err
		}
	}
	if _, err := f.Seek(int64(end), io.SeekStart); err != nil {
		return 0, "", err
	}
	if end == 0 {
		return 0, genesisHash, nil
	}
	last := data[bytes.LastIndexByte(data[:end-1], '\n')+1 : end-1]
	var rec AuditRecord
	if err := json.Unmarshal(last, &rec); err != nil {
		return 0, "", fmt.Errorf("last line is not an audit record: %v", err)
	}
	if h, _ := chainHash(rec); h != rec.Hash {
		return 0, "", errors.New("last line's hash does not match its content; run flowguard audit verify")
	}
	return rec.Seq, rec.Hash, nil
}

// Record queues r; the writer numbers and chains it.
func (l *auditLog) Record(r AuditRecord) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.dropped()
		return
	}
	select {
	case l.queue <- r:
	default:
		l.dropped()
	}
}

func (l *auditLog) run() {
	defer close(l.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r, ok := <-l.queue:
			if !ok {
				l.flush()
				return
			}
			l.write(r)
		case <-tick.C:
			l.flush()
		}
	}
}

func (l *auditLog) write(r AuditRecord) {
	r.Seq, r.Prev = l.seq+1, l.prev
	h, err := chainHash(r)
	if err != nil {
		l.failed(err)
		return
	}
	r.Hash = h
	b, err := json.Marshal(r)
	if err != nil {
		l.failed(err)
		return
	}
	if _, err := l.w.Write(append(b, '\n')); err != nil {
		l.failed(err)
		return
	}
	l.seq, l.prev = r.Seq, r.Hash
	if l.mirror != nil {
		l.mirror(r.Key, b)
	}
}

// flush writes buffered lines and syncs them to disk.
func (l *auditLog) flush() {
	if l.w.Buffered() == 0 {
		return
	}
	if err := l.w.Flush(); err != nil {
		l.failed(err)
		return
	}
	if err := l.f.Sync(); err != nil {
		l.failed(err)
	}
}

// Close writes what is queued and closes the file; it returns the head.
func (l *auditLog) Close() (AuditSummary, error) {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
	return AuditSummary{Records: l.seq, Head: l.prev}, l.f.Close()
}

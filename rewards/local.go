package rewards

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/devflow/flowguard/internal/atomicfile"
)

// Local is the learner of the embedded default: one partition fed by a
// Queue in this process, publishing its model to a callback. It runs the
// same Partition code as the Kafka learner.
type Local struct {
	q       *Queue
	every   time.Duration
	now     func() time.Time
	publish func(Model) error
	file    string // checkpoint file; "" = none

	mu   sync.Mutex // guards part
	part *Partition
}

// LocalOptions configures NewLocal.
type LocalOptions struct {
	// PublishEvery is how often the model is published. Default: 10s.
	PublishEvery time.Duration
	// Now is the clock that stamps snapshots. Default: time.Now.
	Now func() time.Time
	// CheckpointFile, when set, keeps the learner's state across restarts:
	// it is restored at start and written after every publish and at
	// shutdown (atomically, by rename).
	CheckpointFile string
}

// NewLocal returns the in-process learner, restored from the checkpoint
// file when one exists. A checkpoint that does not decode is an error, not
// silently discarded state.
func NewLocal(cfg Config, q *Queue, publish func(Model) error, o LocalOptions) (*Local, error) {
	if o.PublishEvery <= 0 {
		o.PublishEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Local{q: q, every: o.PublishEvery, now: o.Now, publish: publish, file: o.CheckpointFile}
	var err error
	if data, rerr := os.ReadFile(o.CheckpointFile); o.CheckpointFile != "" && rerr == nil {
		if l.part, err = RestorePartition(cfg, data); err != nil {
			return nil, fmt.Errorf("rewards: checkpoint %s: %w", o.CheckpointFile, err)
		}
	} else if o.CheckpointFile != "" && !errors.Is(rerr, os.ErrNotExist) {
		return nil, fmt.Errorf("rewards: checkpoint: %w", rerr)
	} else if l.part, err = NewPartition(cfg); err != nil {
		return nil, err
	}
	return l, l.Publish()
}

// Publish publishes the current model now.
func (l *Local) Publish() error {
	l.mu.Lock()
	part, err := l.part.Part(0, l.now())
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.publish(Model{Bandit: part.Bandit, Variants: part.Variants, Risk: part.Risk})
}

// SetVariants makes vs the variant models (Partition.SetVariants) and
// publishes the result.
func (l *Local) SetVariants(vs []VariantModel) (ModelChanges, error) {
	l.mu.Lock()
	ch, err := l.part.SetVariants(vs)
	l.mu.Unlock()
	if err != nil || ch.Empty() {
		return ch, err
	}
	return ch, l.Publish()
}

// Stats returns the partition's counters.
func (l *Local) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.part.Stats()
}

// Run applies queued events until ctx is cancelled, publishing every
// PublishEvery; at the end it publishes and checkpoints once more. onErr
// receives input the partition refused (it is skipped) and I/O errors.
func (l *Local) Run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(l.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.drain(onErr)
			l.tick(onErr)
			return
		case ev := <-l.q.Events():
			l.apply(ev, onErr)
		case <-t.C:
			l.tick(onErr)
		}
	}
}

func (l *Local) drain(onErr func(error)) {
	for {
		select {
		case ev := <-l.q.Events():
			l.apply(ev, onErr)
		default:
			return
		}
	}
}

func (l *Local) apply(ev Event, onErr func(error)) {
	l.mu.Lock()
	var err error
	if ev.Record != nil {
		err = l.part.Record(*ev.Record)
	} else if ev.Label != nil {
		err = l.part.Label(*ev.Label, ev.At)
	}
	l.mu.Unlock()
	if err != nil {
		onErr(err)
	}
}

func (l *Local) tick(onErr func(error)) {
	if err := l.Publish(); err != nil {
		onErr(fmt.Errorf("publishing the model: %w", err))
	}
	if l.file == "" {
		return
	}
	l.mu.Lock()
	data, err := l.part.Checkpoint(l.now())
	l.mu.Unlock()
	if err == nil {
		err = atomicfile.Write(l.file, func(w io.Writer) error { _, err := w.Write(data); return err })
	}
	if err != nil {
		onErr(fmt.Errorf("checkpoint: %w", err))
	}
}

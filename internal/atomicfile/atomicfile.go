// Package atomicfile writes a file so that a crash leaves either the old
// file or the new one, never a part: the learner's checkpoint and the
// quota refit's state file use it.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write calls write on a temporary file beside path, syncs it and renames
// it over path. On any error the temporary file is removed and path is
// left as it was.
func Write(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Package testenv holds the tests' rules for what they need from the
// machine. Under CI=true nothing is skipped: a missing dependency is a
// failure, and a test that skips itself under -short runs anyway.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CI reports whether the tests run in CI (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// Need returns the path of the program bin. Without it the test is
// skipped, or fails under CI=true; pkg names the Debian package that
// provides it.
func Need(t testing.TB, bin, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		if CI() {
			t.Fatalf("%s is not installed, and CI=true forbids skipping: %v", bin, err)
		}
		t.Skipf("%s not installed (apt-get install %s): %v", bin, pkg, err)
	}
	return path
}

// SkipShort skips a slow test under -short, except under CI=true, where
// every test runs.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() && !CI() {
		t.Skip(why)
	}
}

// BadFiles checks the bad-file rule of a strict YAML format: every file
// the glob matches has a case, and loading each (load, with the file's
// path) fails with exactly the case's message, file and line included.
// load may check more of the error with the subtest's t.
func BadFiles(t *testing.T, glob string, cases map[string]string, load func(t *testing.T, path string) error) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Errorf("%d files match %s but there are %d cases: every file needs its expected message", len(files), glob, len(cases))
	}
	dir := filepath.Dir(glob)
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			err := load(t, filepath.Join(dir, name))
			if err == nil {
				t.Fatal("loaded without error")
			}
			if got := err.Error(); got != want {
				t.Fatalf("error\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

package docscheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../.."

// TestDocLinksAndPaths checks README.md and docs/*.md: every relative link
// resolves to a file in the repository (and its #anchor to a heading of
// that file), and every repository path they name, in backticks or in a
// code block, exists. Nothing may point outside the repository: a fresh
// clone has only the repository.
func TestDocLinksAndPaths(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{filepath.Join(root, "README.md")}, docs...)
	top := topLevel(t, root)
	checked := 0
	for _, doc := range docs {
		rel, _ := filepath.Rel(root, doc)
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for i, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "../") {
				t.Errorf("%s:%d: %q points outside the document's tree; name repository paths from the root", rel, i+1, strings.TrimSpace(line))
			}
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			dest := doc
			if file != "" {
				dest = filepath.Join(filepath.Dir(doc), file)
			}
			if r, err := filepath.Rel(root, dest); err != nil || strings.HasPrefix(r, "..") {
				t.Errorf("%s: link %q leaves the repository", rel, target)
				continue
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %q: %v", rel, target, err)
				continue
			}
			if anchor != "" && !hasAnchor(t, dest, anchor) {
				t.Errorf("%s: link %q: no heading with that anchor", rel, target)
			}
		}
		for _, p := range repoPaths(text, top) {
			checked++
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s: names %s, which is not in the repository", rel, p)
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d links and paths checked: has the way the docs name files changed?", checked)
	}
}

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	codeSpan  = regexp.MustCompile("`([^`\n]+)`")
	fence     = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```")
	pathToken = regexp.MustCompile(`^[a-z][a-z0-9_.-]*(/[A-Za-z0-9_.-]+)+/?$`)
)

// topLevel returns the repository's top-level entries a doc may name,
// without bin/ and out/, which builds and examples write.
func topLevel(t *testing.T, root string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	top := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() && e.Name() != "bin" && e.Name() != "out" && !strings.HasPrefix(e.Name(), ".") {
			top[e.Name()] = true
		}
	}
	return top
}

// repoPaths returns the words of code spans and code blocks that are paths
// into one of the top-level directories.
func repoPaths(text string, top map[string]bool) []string {
	var words []string
	for _, m := range codeSpan.FindAllStringSubmatch(text, -1) {
		words = append(words, m[1])
	}
	for _, m := range fence.FindAllStringSubmatch(text, -1) {
		words = append(words, strings.FieldsFunc(m[1], func(r rune) bool {
			return r == ' ' || r == '\n' || r == '\t' || r == '"' || r == '\'' || r == '(' || r == ')' || r == ',' || r == '`' || r == '[' || r == ']'
		})...)
	}
	var paths []string
	for _, w := range words {
		w = strings.TrimRight(w, ".:;")
		if !pathToken.MatchString(w) {
			continue
		}
		if dir, _, _ := strings.Cut(w, "/"); top[dir] {
			paths = append(paths, w)
		}
	}
	return paths
}

// hasAnchor reports whether a heading of the markdown file path has the
// anchor GitHub gives it.
func hasAnchor(t *testing.T, path, anchor string) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok && slug(strings.TrimLeft(h, "#")) == anchor {
			return true
		}
	}
	return false
}

// slug is GitHub's anchor for a heading: lower case, spaces to hyphens,
// other punctuation dropped.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestHelpListsEverySubcommand checks that `flowguard --help` names every
// command run dispatches on, and every form each command's own usage text
// shows (`sim --scenario`, `sim --trace`, `experiments report`, …), so a new
// subcommand cannot be left out of the overview.
func TestHelpListsEverySubcommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d: %s", code, errOut.String())
	}
	help := out.String()
	commands := dispatchedCommands(t)
	if len(commands) < 5 {
		t.Fatalf("found only %v in run's switch: has main.go changed shape?", commands)
	}
	for _, cmd := range commands {
		if !strings.Contains(help, "flowguard "+cmd+" ") {
			t.Errorf("--help does not list %q", "flowguard "+cmd)
		}
		var sub bytes.Buffer
		run([]string{cmd, "--help"}, &sub, &sub)
		for _, form := range usageForms(cmd, sub.String()) {
			if !strings.Contains(help, "flowguard "+form+" ") {
				t.Errorf("%s --help shows %q, --help does not list it", cmd, "flowguard "+form)
			}
		}
	}
	for _, want := range []string{"flowguard sim --scenario", "flowguard sim --trace", "flowguard experiments report", "flowguard version"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// dispatchedCommands returns the commands of the switch in main.go's run,
// except the help and version spellings.
func dispatchedCommands(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "run" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			cc, ok := n.(*ast.CaseClause)
			if !ok {
				return true
			}
			for _, e := range cc.List {
				lit, ok := e.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				s, _ := strconv.Unquote(lit.Value)
				if s != "" && !strings.HasPrefix(s, "-") && s != "help" {
					cmds = append(cmds, s)
				}
			}
			return true
		})
		return false
	})
	return cmds
}

// usageLine is one form of a command in a usage text: "flowguard CMD" and
// what follows.
var usageLine = regexp.MustCompile(`(?m)^\s*(?:usage:\s+)?flowguard (\S+)(?:\s+(\S+))?`)

// verb is a usage line's second word when it selects a form of the
// command: a word (fit, report) or a flag standing alone (--scenario), not
// an optional or grouped argument.
var verb = regexp.MustCompile(`^(?:[a-z]+|--[a-z-]+)$`)

// usageForms returns "CMD" or "CMD VERB" for each usage line of cmd in text.
func usageForms(cmd, text string) []string {
	var forms []string
	for _, m := range usageLine.FindAllStringSubmatch(text, -1) {
		if m[1] != cmd {
			continue
		}
		form := cmd
		if verb.MatchString(m[2]) {
			form += " " + m[2]
		}
		forms = append(forms, form)
	}
	return forms
}

func TestVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	cases := map[string]struct {
		linked string // the link-time version
		want   string
	}{
		"link-time version": {"v1.4.2", "flowguard v1.4.2\n"},
		// A test binary carries no module version: "dev".
		"none": {"", "flowguard dev\n"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			version = c.linked
			for _, arg := range []string{"version", "--version"} {
				var out, errOut bytes.Buffer
				if code := run([]string{arg}, &out, &errOut); code != 0 || out.String() != c.want || errOut.Len() > 0 {
					t.Errorf("flowguard %s: exit %d, stdout %q, stderr %q; want 0, %q", arg, code, out.String(), errOut.String(), c.want)
				}
			}
		})
	}
}

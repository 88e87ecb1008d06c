package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = "../../.."

// renderText builds the pages into a temporary directory and formats page
// as `man -l` shows it in an 80-column terminal; with hyphenate false,
// hyphenation is off, so that every word can be searched for. What man and
// groff say on stderr with every warning on is returned too.
func renderText(t *testing.T, page string, hyphenate bool) (text, warnings, roff string) {
	t.Helper()
	man, err := exec.LookPath("man")
	if err != nil {
		t.Fatal("man not found: apt-get install man-db (.ci/deps installs it)")
	}
	dir := t.TempDir()
	if err := build(repoRoot, dir, meta{Version: "test", Date: "2025-01-01"}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(man, "--warnings", "-l", filepath.Join(dir, page))
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LANG=C.UTF-8", "MANROFFOPT=")
	if !hyphenate {
		// groff's an.tmac: hyphenation mode 0. Long words then stick
		// out of the line, which groff warns about: only the
		// hyphenated rendering is checked for warnings.
		cmd.Env = append(cmd.Env, "MANROFFOPT=-rHY=0")
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("man -l %s: %v\n%s", page, err, stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(dir, page))
	if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), string(raw)
}

// TestManPagesRenderCleanly: both pages format without a single warning
// from man, tbl or groff (man --warnings turns them all on), and have the
// sections every man page has.
func TestManPagesRenderCleanly(t *testing.T) {
	for _, page := range pages() {
		t.Run(page, func(t *testing.T) {
			text, warnings, _ := renderText(t, page, true)
			if warnings != "" {
				t.Errorf("man --warnings -l %s warns:\n%s", page, warnings)
			}
			for _, h := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"} {
				if !regexp.MustCompile(`(?m)^` + h + `$`).MatchString(text) {
					t.Errorf("%s has no %s section:\n%s", page, h, head(text))
				}
			}
		})
	}
}

// TestManPagesHaveEverySection: every section of policy/REFERENCE.md is
// a section of vhqos-qos.toml(5), with its text; every part of README.md
// vhqos(8)'s layout takes is in vhqos(8), and the subsections it leaves
// out are not.
func TestManPagesHaveEverySection(t *testing.T) {
	t.Run("vhqos-qos.toml.5", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(repoRoot, "policy/REFERENCE.md"))
		if err != nil {
			t.Fatal(err)
		}
		text, _, _ := renderText(t, "vhqos-qos.toml.5", false)
		d := parse("policy/REFERENCE.md", string(raw))
		if len(d.sections) < 5 {
			t.Fatalf("only %d sections found: %q", len(d.sections), d.titles())
		}
		flat := words(text)
		for _, s := range d.sections {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.ToUpper(s.title)) + `$`).MatchString(text) {
				t.Errorf("no section %q", strings.ToUpper(s.title))
				continue
			}
			// The section's last sentence, as a reader sees it.
			if last := lastWords(s.text(), 6); !strings.Contains(flat, last) {
				t.Errorf("section %q lacks its last words %q", s.title, last)
			}
		}
	})
	t.Run("vhqos.8", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		layout, err := os.ReadFile(filepath.Join(repoRoot, "docs/man/vhqos.8.md"))
		if err != nil {
			t.Fatal(err)
		}
		readme := parse("README.md", string(raw))
		text, _, _ := renderText(t, "vhqos.8", false)
		flat := words(text)
		// Each piece's last words, or their absence.
		check := func(what, md string, want bool) {
			t.Helper()
			last := lastWords(md, 6)
			if strings.Contains(flat, last) != want {
				t.Errorf("%s: its last words %q in vhqos(8): %v, want %v", what, last, !want, want)
			}
		}
		taken := regexp.MustCompile(`\{\{section "README.md" "([^"]+)"((?: "[^"]+")*)\}\}`).FindAllStringSubmatch(string(layout), -1)
		if len(taken) < 4 {
			t.Fatalf("the layout takes %d README sections; the test no longer reads it", len(taken))
		}
		for _, m := range taken {
			s, err := readme.section(m[1])
			if err != nil {
				t.Fatal(err)
			}
			except := regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(m[2], -1)
			lead, subs := s.subsections()
			check(m[1], trimBlank(lead), true)
			for _, sub := range subs {
				left := slices.ContainsFunc(except, func(e []string) bool { return e[1] == sub.title })
				check(m[1]+" / "+sub.title, trimBlank(sub.lines), !left)
			}
		}
		for _, m := range regexp.MustCompile(`\{\{subsection "README.md" "([^"]+)" "([^"]+)"\}\}`).FindAllStringSubmatch(string(layout), -1) {
			s, err := readme.section(m[1])
			if err != nil {
				t.Fatal(err)
			}
			sub, err := s.subsection("README.md", m[2])
			if err != nil {
				t.Fatal(err)
			}
			check(m[1]+" / "+m[2], sub, true)
		}
	})
}

// TestManPagesNameInstalledFiles: the pages are read on a system with the
// package, not the repository: they name what the package installs and
// no file, directory or make target of the repository.
func TestManPagesNameInstalledFiles(t *testing.T) {
	for _, tc := range []struct {
		page string
		want []string
	}{
		{"vhqos.8", []string{"vhqos-qos.toml(5)", "/usr/share/doc/vhqos/README.md.gz", "/usr/share/vhqos/prometheus/vhqos-rules.yml", "/usr/share/vhqos/grafana/vhqos-dashboard.json", "/usr/share/doc/vhqos/design-notes.md.gz"}},
		{"vhqos-qos.toml.5", []string{"/usr/share/doc/vhqos/examples/example.toml", "/usr/share/doc/vhqos/examples/demo.toml", "/usr/share/doc/vhqos/benchmarks.md.gz"}},
	} {
		t.Run(tc.page, func(t *testing.T) {
			text, _, _ := renderText(t, tc.page, false)
			flat := words(text)
			for _, repo := range []string{"policy/", "dist/", "docs/", "demo/", "itest/", "cmd/", "REFERENCE.md", "make deb", "make man", "make test", "make demo", "build/", " ./cgroup"} {
				if i := strings.Index(flat, repo); i >= 0 {
					t.Errorf("%s names the repository's %q: ...%s...", tc.page, repo, flat[max(0, i-60):min(len(flat), i+60)])
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("%s does not name %s", tc.page, w)
				}
			}
		})
	}
}

// TestInstalledArePackaged: every file mkman writes in place of one of
// the repository's is one the Debian package installs.
func TestInstalledArePackaged(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(repoRoot, "dist/deb/nfpm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, m := range regexp.MustCompile(`(?m)^\s*dst:\s*(\S+)`).FindAllStringSubmatch(string(cfg), -1) {
		dsts = append(dsts, m[1])
	}
	for from, to := range installed() {
		if _, err := os.Stat(filepath.Join(repoRoot, from)); err != nil {
			t.Errorf("%s, mapped to %s, is not in the repository", from, to)
		}
		if path := strings.Trim(to, "`"); strings.HasPrefix(path, "/") && !slices.Contains(dsts, path) {
			t.Errorf("%s stands for %s in the pages, but dist/deb/nfpm.yaml installs no %s", path, from, path)
		}
	}
}

// TestRepoNames: what names the repository is found; what only looks like
// it is not; the installed names stand in for the repository's files.
func TestRepoNames(t *testing.T) {
	repo := t.TempDir()
	for _, d := range []string{"itest", "cgroup", "docs/man"} {
		os.MkdirAll(filepath.Join(repo, d), 0o755)
	}
	os.WriteFile(filepath.Join(repo, "README.md"), nil, 0o644)
	os.WriteFile(filepath.Join(repo, "Makefile"), []byte(".PHONY: all deb test-vm\n"), 0o644)
	for _, tc := range []struct {
		md   string
		want []string
	}{
		{"see `itest/limits_test.go` and itest/", []string{"itest/limits_test.go", "itest/"}},
		{"(go test -bench X ./cgroup)", []string{"./cgroup"}},
		{"built by `make deb`; make test-vm boots it", []string{"make deb", "make test-vm"}},
		{"this README.md says", []string{"README.md"}},
		{"/sys/fs/cgroup/memory and /usr/share/doc/vhqos/README.md.gz, to make room, a cgroup", nil},
	} {
		got, err := repoNames(repo, []byte(tc.md))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("repoNames(%q) = %q, want %q", tc.md, got, tc.want)
		}
	}
	if got := string(toInstalled([]byte("see `policy/REFERENCE.md`, policy/REFERENCE.md, README.md; docs/benchmarks.md."))); got != "see **vhqos-qos.toml**(5), **vhqos-qos.toml**(5), `/usr/share/doc/vhqos/README.md.gz`; `/usr/share/doc/vhqos/benchmarks.md.gz`." {
		t.Errorf("toInstalled: %q", got)
	}
	// A page that names the repository is not built.
	os.WriteFile(filepath.Join(repo, "docs/man/x.1.md"), []byte("# x 1\n\nsee itest/x_test.go\n"), 0o644)
	if _, err := render(repo, "x.1", meta{}); err == nil || !strings.Contains(err.Error(), "x.1 names what only the repository has, not the package: itest/x_test.go") {
		t.Errorf("render: %v, want an error naming itest/x_test.go", err)
	}
}

// TestManPageHasEveryKey: every key of REFERENCE.md's table of keys is a
// term of vhqos-qos.toml(5)'s KEYS section.
func TestManPageHasEveryKey(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "policy", "REFERENCE.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := referenceKeys(t, string(raw))
	// The extraction itself: a table that no longer parses would make
	// this test pass vacuously.
	for _, k := range []string{"cgroup_parent", "cpu_weight", "io_write_iops", "memory_max", "dscp", "retry_after"} {
		if !slices.Contains(keys, k) {
			t.Fatalf("key %s not found in REFERENCE.md's table of keys (found %q)", k, keys)
		}
	}
	text, _, roff := renderText(t, "vhqos-qos.toml.5", false)
	section := regexp.MustCompile(`(?ms)^\.SH KEYS$(.*?)^\.SH `).FindStringSubmatch(roff)
	if section == nil {
		t.Fatalf("vhqos-qos.toml(5) has no KEYS section:\n%s", head(roff))
	}
	// A term is the line after .TP (man(7)); the page shows it at the
	// left, its description indented under it.
	terms := map[string]bool{}
	unroff := strings.NewReplacer(`\fB`, "", `\fR`, "", `\fP`, "", `\&`, "")
	for _, m := range regexp.MustCompile(`(?m)^\.TP\n(.*)$`).FindAllStringSubmatch(section[1], -1) {
		for _, k := range strings.Split(unroff.Replace(m[1]), ", ") {
			terms[k] = true
			if !regexp.MustCompile(`(?m)^ {7}`+regexp.QuoteMeta(k)+`\b`).MatchString(text) && !strings.Contains(text, ", "+k) {
				t.Errorf("term %s is not at the start of a line in the formatted page", k)
			}
		}
	}
	for _, k := range keys {
		if !terms[k] {
			t.Errorf("key %s of REFERENCE.md is not a term of vhqos-qos.toml(5)'s KEYS", k)
		}
	}
}

// referenceKeys returns the keys of REFERENCE.md's "Keys" table: the
// backquoted names in each row's first cell.
func referenceKeys(t *testing.T, reference string) []string {
	t.Helper()
	s, err := parse("REFERENCE.md", reference).section("Keys")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, line := range s.lines {
		if !isRow(line) || isDelimiterRow(line) {
			continue
		}
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cells(line)[0], -1) {
			keys = append(keys, m[1])
		}
	}
	return keys
}

func TestTablesToLists(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{
			name: "a table",
			in:   "text\n\n| key | where | value |\n|---|:---:|---|\n| `a` | here | 1 |\n| `b`, `c` | there | |\n\nafter\n",
			want: "text\n\n`a`\n:   *where*: here\n:   *value*: 1\n\n`b`, `c`\n:   *where*: there\n\n\nafter\n",
		},
		{
			name: "an escaped pipe stays in its cell",
			in:   "| k | v |\n|---|---|\n| `x` | a \\| b |\n",
			want: "`x`\n:   *v*: a \\| b\n\n",
		},
		{
			name: "no delimiter row: not a table",
			in:   "| k | v |\n| `x` | y |\n",
			want: "| k | v |\n| `x` | y |\n",
		},
		{
			name: "inside fenced code: left alone",
			in:   "```\n| k | v |\n|---|---|\n```\n",
			want: "```\n| k | v |\n|---|---|\n```\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tablesToLists([]byte(tc.in))); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	d := parse("x.md", "# Title\n\nintro\n\n## One\n\none\n### Sub\n\n```\n## not a heading\n```\n## Two\n\ntwo\n")
	if got := d.titles(); !slices.Equal(got, []string{"One", "Two"}) {
		t.Fatalf("sections %q, want One and Two", got)
	}
	if got := strings.Join(d.intro, "|"); got != "|intro|" {
		t.Errorf("intro %q", got)
	}
	one, _ := d.section("One")
	if want := "one\n### Sub\n\n```\n## not a heading\n```"; one.text() != want {
		t.Errorf("section One is %q, want %q", one.text(), want)
	}
}

// TestLayoutErrors: a layout that names what its source does not have is
// an error naming it, not a shorter page.
func TestLayoutErrors(t *testing.T) {
	for _, tc := range []struct{ name, layout, want string }{
		{"missing section", `{{section "src.md" "Nope"}}`, `src.md has no section "Nope" (it has: Usage; More)`},
		{"missing section left out", `{{sections "src.md" "Nope"}}`, `leaving out a section: src.md has no section "Nope"`},
		{"no code block", `{{code "src.md" "More"}}`, `section "More" has no code block`},
		{"no such intro", `{{intro "src.md" "vhqos gives"}}`, `no line before its first section starts with "vhqos gives"`},
		{"no such file", `{{intro "gone.md" ""}}`, `reading gone.md`},
		{"a section neither taken nor left out", `{{section "src.md" "Usage"}}`, `src.md has sections the layout neither takes nor leaves out: "More"`},
		{"left out, but not there", `{{leftOut "src.md" "Nope"}}`, `leaving out a section: src.md has no section "Nope"`},
		{"no such subsection", `{{section "src.md" "Usage" "Sub"}}{{leftOut "src.md" "More"}}`, `src.md has no subsection "Sub" in "Usage"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := t.TempDir()
			os.MkdirAll(filepath.Join(repo, "docs", "man"), 0o755)
			os.WriteFile(filepath.Join(repo, "src.md"), []byte("# Src\n\nhello\n\n## Usage\n\n    vhqos run\n\n## More\n\ntext\n"), 0o644)
			os.WriteFile(filepath.Join(repo, "docs", "man", "x.1.md"), []byte(tc.layout), 0o644)
			_, err := assemble(repo, "x.1", meta{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
	t.Run("code block", func(t *testing.T) {
		repo := t.TempDir()
		os.MkdirAll(filepath.Join(repo, "docs", "man"), 0o755)
		os.WriteFile(filepath.Join(repo, "src.md"), []byte("## Usage\n\ntext\n\n    vhqos run\n    vhqos check\n\nmore\n"), 0o644)
		os.WriteFile(filepath.Join(repo, "docs", "man", "x.1.md"), []byte(`{{code "src.md" "Usage"}}{{leftOut "src.md" "Usage"}}`), 0o644)
		md, err := assemble(repo, "x.1", meta{})
		if err != nil || string(md) != "    vhqos run\n    vhqos check" {
			t.Errorf("got %q, %v", md, err)
		}
	})
}

// words collapses all white space to single spaces.
func words(s string) string { return strings.Join(strings.Fields(s), " ") }

// lastWords is the last n words of a section's Markdown as the page shows
// them: without the Markdown's own marks.
func lastWords(md string, n int) string {
	w := strings.Fields(strings.NewReplacer("`", "", "**", "", "*", "").Replace(md))
	if len(w) > n {
		w = w[len(w)-n:]
	}
	return strings.Join(w, " ")
}

func head(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

func TestSubsections(t *testing.T) {
	d := parse("x.md", "## One\n\nlead\n\n### A\n\na\n\n```\n### not a heading\n```\n### B\n\nb\n")
	one, _ := d.section("One")
	for _, tc := range []struct {
		except []string
		want   string
	}{
		{nil, "lead\n\n\n### A\n\na\n\n```\n### not a heading\n```\n\n### B\n\nb"},
		{[]string{"A"}, "lead\n\n\n### B\n\nb"},
		{[]string{"A", "B"}, "lead"},
	} {
		if got, err := one.without("x.md", tc.except); err != nil || got != tc.want {
			t.Errorf("without %q: %q, %v; want %q", tc.except, got, err, tc.want)
		}
	}
	if got, err := one.subsection("x.md", "B"); err != nil || got != "b" {
		t.Errorf("subsection B: %q, %v", got, err)
	}
}

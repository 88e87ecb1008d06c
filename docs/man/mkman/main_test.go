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

// TestManPagesHaveEverySection: every section of README.md (but
// Development) is a section of vhqos(8), and every section of
// policy/REFERENCE.md one of vhqos-qos.toml(5), each with its text.
func TestManPagesHaveEverySection(t *testing.T) {
	for _, tc := range []struct {
		page, source string
		except       []string
	}{
		{"vhqos.8", "README.md", []string{"Development"}},
		{"vhqos-qos.toml.5", "policy/REFERENCE.md", nil},
	} {
		t.Run(tc.page, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(repoRoot, tc.source))
			if err != nil {
				t.Fatal(err)
			}
			text, _, _ := renderText(t, tc.page, false)
			d := parse(tc.source, string(raw))
			if len(d.sections) < 5 {
				t.Fatalf("%s: only %d sections found: %q", tc.source, len(d.sections), d.titles())
			}
			flat := words(text)
			for _, s := range d.sections {
				if slices.Contains(tc.except, s.title) {
					continue
				}
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.ToUpper(s.title)) + `$`).MatchString(text) {
					t.Errorf("%s: no section %q (from %s)", tc.page, strings.ToUpper(s.title), tc.source)
					continue
				}
				// The section's last sentence, as a reader sees it.
				last := lastWords(s.text(), 6)
				if !strings.Contains(flat, last) {
					t.Errorf("%s: section %q lacks its last words %q", tc.page, s.title, last)
				}
			}
		})
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
		os.WriteFile(filepath.Join(repo, "docs", "man", "x.1.md"), []byte(`{{code "src.md" "Usage"}}`), 0o644)
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
